import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it, type TestContext } from 'node:test';
import { getRequestListener } from '@hono/node-server';
import { type Browser, chromium, type Page } from 'playwright-core';
import { DecisionLog, statusApp } from '../src/admin/status/app.js';
import { MODEL_LABEL } from '../src/discovery/endpoint.js';
import { EndpointRegistry } from '../src/discovery/registry.js';
import { createLogger } from '../src/log.js';
import { type Cluster, chatBody, JSON_HEADERS, LLAMA, type PodSpec, QWEN, withCluster } from './support/harness.js';

/** Debian's chromium package; Playwright's own browser download does not work here. */
const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'];
const SKIPPED = `${CHROMIUM} is missing, so the status page was NOT tested in a browser: install Debian's chromium package (.ci/run does)`;
/** Generous: a loaded 2-core machine is slow but not wrong. The page itself updates within about a second. */
const WAIT = { timeout: 15_000 };

const HOSTILE = '<img src=x onerror="window.xssRan=1">';

const PODS: PodSpec[] = [
  { engine: 'vllm', models: [QWEN, LLAMA], host: '127.0.0.61' },
  { engine: 'sglang', models: [QWEN], host: '127.0.0.62' },
];

describe('status page in Chromium', () => {
  let browser: Browser | undefined;

  before(async () => {
    if (existsSync(CHROMIUM)) browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, timeout: 60_000 });
  });

  after(async () => {
    await browser?.close();
  });

  /** Runs `fn` on a page of the cluster's admin port, then fails on any script error or CSP violation the page reported. */
  async function withStatusPage(cluster: Cluster, fn: (page: Page) => Promise<void>): Promise<void> {
    const page = await browser!.newPage();
    const problems: string[] = [];
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(`console error: ${message.text()}`);
    });
    try {
      await page.goto(`http://127.0.0.1:${cluster.service.adminPort}/`);
      await page.locator('body[data-mode="live"]').waitFor(WAIT);
      await fn(page);
    } finally {
      // Closed while the service still runs: its stop would break the event stream, which the page reports.
      await page.close();
    }
    assert.deepEqual(problems, [], 'the page ran without errors (a CSP violation shows up here)');
  }

  const row = (page: Page, address: string) => page.locator(`#endpoints tr[data-address="${address}"]`);

  it('shows real endpoints, a routed request and a refusal live, and an endpoint failing its probes without a reload', async (t) => {
    if (!browser) return skip(t);
    await withCluster({ pods: PODS, flags: ['--unhealthy-threshold=1', '--passive-ejection=0'] }, async (cluster) => {
      await cluster.service.scraper.scrapeAll();
      const [vllm, sglang] = cluster.pods;
      await withStatusPage(cluster, async (page) => {
        for (const [pod, models] of [
          [vllm!, [QWEN, LLAMA]],
          [sglang!, [QWEN]],
        ] as const) {
          const cells = row(page, pod.address);
          await cells.locator('td.engine', { hasText: pod.engine }).waitFor(WAIT);
          for (const model of models) await cells.locator('td.models', { hasText: model }).waitFor(WAIT);
          await cells.locator('td.health .badge', { hasText: /^healthy$/ }).waitFor(WAIT);
          await cells.locator('td.in-flight', { hasText: /^0$/ }).waitFor(WAIT);
          await cells.locator('td.kv meter').waitFor(WAIT); // scraped load, as bars
          await cells.locator('td.queue', { hasText: '0 waiting' }).waitFor(WAIT);
        }

        // Held between the routing decision and the upstream call: in flight at the only Llama pod.
        const held = await cluster.envoy.open({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody({ model: LLAMA }) });
        assert.equal(held.upstream, vllm!.address);
        await row(page, vllm!.address).locator('td.in-flight', { hasText: /^1$/ }).waitFor(WAIT);
        const decision = page.locator('#decisions tr', { hasText: LLAMA });
        await decision.locator('td.endpoint', { hasText: vllm!.address }).waitFor(WAIT);
        await decision.locator('td.why', { hasText: 'least_outstanding_requests: 0 in flight there' }).waitFor(WAIT);
        assert.equal((await held.forward()).status, 200);
        await row(page, vllm!.address).locator('td.in-flight', { hasText: /^0$/ }).waitFor(WAIT);

        const refused = await cluster.envoy.request({
          method: 'POST',
          path: '/v1/chat/completions',
          headers: JSON_HEADERS,
          body: chatBody({ model: 'no-such-model' }),
        });
        assert.equal(refused.status, 404);
        const refusal = page.locator('#refusals tr', { hasText: 'no-such-model' });
        await refusal.locator('td.status', { hasText: '404' }).waitFor(WAIT);
        await refusal.locator('td.code', { hasText: 'model_not_found' }).waitFor(WAIT);

        await page.evaluate('window.sameDocument = true');
        sglang!.setHealthy(false);
        await cluster.service.prober.probeAll();
        const health = row(page, sglang!.address).locator('td.health');
        await health.locator('.badge', { hasText: /^unhealthy$/ }).waitFor(WAIT);
        await health.locator('.reason', { hasText: /failing probe: .*503/ }).waitFor(WAIT);
        assert.equal(await page.evaluate('window.sameDocument'), true, 'updated in place, not reloaded');

        mkdirSync('test-artifacts', { recursive: true });
        await page.screenshot({ path: 'test-artifacts/status-page.png', fullPage: true });
      });
    });
  });

  it('renders model names from backends and clients as text, never as HTML', async (t) => {
    if (!browser) return skip(t);
    const pods: PodSpec[] = [{ engine: 'vllm', models: [HOSTILE], host: '127.0.0.63' }];
    await withCluster({ pods }, async (cluster) => {
      const routed = await cluster.envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody({ model: HOSTILE }) });
      assert.equal(routed.status, 200);
      const clientSide = `${HOSTILE}<b>bold</b>`;
      const refused = await cluster.envoy.request({
        method: 'POST',
        path: '/v1/chat/completions',
        headers: JSON_HEADERS,
        body: chatBody({ model: clientSide }),
      });
      assert.equal(refused.status, 404);

      await withStatusPage(cluster, async (page) => {
        await page.locator('#endpoints td.models', { hasText: HOSTILE }).waitFor(WAIT);
        await page.locator('#decisions td.model', { hasText: HOSTILE }).waitFor(WAIT);
        await page.locator('#refusals td.model', { hasText: clientSide }).waitFor(WAIT);
        // An injected element would exist even where the CSP stops its handler from running.
        assert.equal(await page.locator('img, b').count(), 0, 'no element was made from a model name');
        assert.equal(await page.evaluate('typeof window.xssRan'), 'undefined');
      });
    });
  });

  it('falls back to polling the JSON snapshot when the event stream is refused', async (t) => {
    if (!browser) return skip(t);
    const registry = new EndpointRegistry();
    registry.upsert({ address: '127.0.0.64:8000', name: 'pod-a', namespace: 'ns', labels: { [MODEL_LABEL]: QWEN } });
    // No room for any event stream: every page gets the 503 and must poll.
    const app = statusApp({ endpoints: registry, decisions: new DecisionLog(), mappings: () => [], log: createLogger('silent') }, { maxClients: 0 });
    const server = createServer(getRequestListener(app.fetch, { overrideGlobalObjects: false }));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const page = await browser.newPage();
    try {
      await page.goto(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
      await page.locator('body[data-mode="polling"]').waitFor(WAIT);
      await row(page, '127.0.0.64:8000')
        .locator('td.health .badge', { hasText: /^pending$/ })
        .waitFor(WAIT);
      registry.remove('127.0.0.64:8000');
      await page.locator('#endpoints td', { hasText: 'no endpoints discovered' }).waitFor(WAIT);
    } finally {
      await page.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

function skip(t: TestContext): void {
  console.error(`status-page.browser.test: SKIPPED: ${SKIPPED}`);
  t.skip(SKIPPED);
}
