import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { ENGINE_LABEL } from '../src/discovery/endpoint.js';
import { LoadScraper, type LoadScraperOptions, MAX_METRICS_ANSWER_BYTES } from '../src/discovery/load/scraper.js';
import { EndpointRegistry } from '../src/discovery/registry.js';
import { createLogger } from '../src/log.js';
import { type Simulator, startSimulator } from '../src/simulator/simulator.js';
import { upsertAll } from './support/endpoints.js';
import { captureLogs } from './support/harness.js';
import { metricBy } from './support/metrics.js';
import { type Deferred, defer, until } from './support/wait.js';

/** Fixture files live in the source tree (tests run from dist/test). */
function fixture(name: string): string {
  return readFileSync(new URL(`../../test/fixtures/metrics/${name}`, import.meta.url), 'utf8');
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** A backend on its own loopback address; `answer` may be swapped between scrapes. */
interface Pod {
  address: string;
  answer: Handler;
  /** `/metrics` requests received. */
  scrapes: number;
  /** TCP connections accepted. */
  connections: number;
}

const servers: Server[] = [];
const sims: Simulator[] = [];
const scrapers: LoadScraper[] = [];
/** Answers held back by tests, let go at the end so no server waits forever. */
const held: Deferred<void>[] = [];

after(async () => {
  await Promise.all(scrapers.map((scraper) => scraper.stop()));
  for (const gate of held) gate.resolve();
  for (const server of servers) server.closeAllConnections();
  await Promise.all([...servers.map((server) => new Promise((resolve) => server.close(resolve))), ...sims.map((sim) => sim.close())]);
});

async function pod(host: string, answer: Handler): Promise<Pod> {
  const state = { address: '', answer, scrapes: 0, connections: 0 };
  const server = createServer((req, res) => {
    if (req.url === '/metrics') state.scrapes++;
    state.answer(req, res);
  });
  server.on('connection', () => state.connections++);
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  servers.push(server);
  state.address = `${host}:${(server.address() as AddressInfo).port}`;
  return state;
}

function vllmText(running: number, waiting: number, usage: number): string {
  return [
    '# TYPE vllm:num_requests_running gauge',
    `vllm:num_requests_running{engine="0",model_name="m"} ${running}`,
    '# TYPE vllm:num_requests_waiting gauge',
    `vllm:num_requests_waiting{engine="0",model_name="m"} ${waiting}`,
    '# TYPE vllm:kv_cache_usage_perc gauge',
    `vllm:kv_cache_usage_perc{engine="0",model_name="m"} ${usage}`,
    '',
  ].join('\n');
}

const text =
  (body: string, status = 200): Handler =>
  (_req, res) => {
    res.writeHead(status, { 'content-type': 'text/plain; version=0.0.4' });
    res.end(body);
  };

/** Answers only once the test lets it: `asked` resolves when the request has arrived. */
function heldAnswer(body: string): { handler: Handler; asked: Deferred<void>; release: Deferred<void> } {
  const asked = defer();
  const release = defer();
  held.push(release);
  return {
    asked,
    release,
    handler: (req, res) => {
      asked.resolve();
      void release.promise.then(() => text(body)(req, res));
    },
  };
}

const hang: Handler = () => undefined;

interface Setup {
  registry: EndpointRegistry;
  scraper: LoadScraper;
  metrics: Registry;
  logs: ReturnType<typeof captureLogs>;
}

/** A scraper over `addresses`; its timer is off (interval one minute) unless the test starts it with a short one. */
function setup(addresses: string[], options: Partial<LoadScraperOptions> = {}, labels: Record<string, string> = {}): Setup {
  const registry = new EndpointRegistry();
  upsertAll(
    registry,
    addresses.map((address) => ({ address, name: `pod-${address}`, namespace: 'test', labels })),
  );
  const metrics = new Registry();
  const logs = captureLogs();
  const scraper = new LoadScraper(
    registry,
    { intervalMs: 60_000, timeoutMs: 5_000, stalenessMs: 60_000, ...options },
    metrics,
    createLogger('debug', logs.stream),
  );
  scrapers.push(scraper);
  return { registry, scraper, metrics, logs };
}

/** `llm_extproc_engine_scrapes_total` by result (zero results left out). */
const results = (metrics: Registry) => metricBy(metrics, 'llm_extproc_engine_scrapes_total', 'result', { dropZero: true });

/** Per-endpoint gauge values by endpoint address. */
const gauge = (metrics: Registry, name: string) => metricBy(metrics, name, 'endpoint');

function loadOf(setup: Setup, address: string) {
  return setup.registry.get(address)!.load;
}

describe('engine load scraper', () => {
  it("fills Endpoint.load from our simulators' /metrics (vLLM and SGLang)", async () => {
    const vllm = await startSimulator({ engine: 'vllm', host: '127.0.0.102', models: ['m'] });
    const sglang = await startSimulator({ engine: 'sglang', host: '127.0.0.103', models: ['m'] });
    sims.push(vllm, sglang);
    const s = setup([vllm.address, sglang.address], { stalenessMs: 5_000 });
    const before = { wall: Date.now(), mono: performance.now() };
    await s.scraper.scrapeAll();
    const afterwards = { wall: Date.now(), mono: performance.now() };
    for (const address of [vllm.address, sglang.address]) {
      const load = loadOf(s, address);
      assert.ok(load, `${address} has load`);
      assert.deepEqual(load.metrics, {
        active_models: {},
        waiting_models: {},
        max_active_models: 0,
        running_queue_size: 0,
        waiting_queue_size: 0,
        kv_cache_usage_percent: 0,
        kv_cache_max_token_capacity: 65536,
      });
      assert.ok(load.updateTime.getTime() >= before.wall && load.updateTime.getTime() <= afterwards.wall);
      assert.ok(load.freshUntil >= before.mono + 5_000 && load.freshUntil <= afterwards.mono + 5_000);
      assert.equal(load.inFlightAtScrape, 0);
    }
    assert.deepEqual(await results(s.metrics), { success: 2 });
    assert.deepEqual(await gauge(s.metrics, 'llm_extproc_endpoint_engine_running_requests'), { [vllm.address]: 0, [sglang.address]: 0 });
  });

  it('the figures follow a change in the simulator within two scrape rounds', async () => {
    const sim = await startSimulator({ engine: 'vllm', host: '127.0.0.117', models: ['m'], maxRunning: 1, timeToFirstTokenMs: 60_000 });
    sims.push(sim);
    const s = setup([sim.address], { intervalMs: 50, timeoutMs: 2_000 });
    await s.scraper.start(); // the timer scrapes too, so a round may already be under way at the change
    assert.equal(loadOf(s, sim.address)?.metrics.running_queue_size, 0);
    const requests = Array.from({ length: 3 }, () => new AbortController());
    for (const controller of requests) {
      fetch(`${sim.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'm', prompt: 'hello', max_tokens: 1 }),
        signal: controller.signal,
      }).catch(() => undefined);
    }
    await until(
      'the simulator to hold the requests',
      () => sim.stats(),
      (stats) => stats.running === 1 && stats.waiting === 2,
    );
    // A round that began before the change may report the old figures; the next one cannot.
    await s.scraper.scrapeAll();
    await s.scraper.scrapeAll();
    assert.deepEqual([loadOf(s, sim.address)?.metrics.running_queue_size, loadOf(s, sim.address)?.metrics.waiting_queue_size], [1, 2]);
    for (const controller of requests) controller.abort();
    await until(
      'the simulator to drop the requests',
      () => sim.stats(),
      (stats) => stats.running === 0 && stats.waiting === 0,
    );
    await s.scraper.scrapeAll();
    await s.scraper.scrapeAll();
    assert.deepEqual([loadOf(s, sim.address)?.metrics.running_queue_size, loadOf(s, sim.address)?.metrics.waiting_queue_size], [0, 0]);
  });

  it('records our in-flight count when the answer arrives, not when the GET was sent', async () => {
    const answer = heldAnswer(vllmText(4, 0, 0.1));
    const p = await pod('127.0.0.104', answer.handler);
    const s = setup([p.address]);
    const endpoint = s.registry.get(p.address)!;
    endpoint.inFlight = 3;
    const round = s.scraper.scrapeAll();
    await answer.asked.promise;
    endpoint.inFlight = 7; // requests routed while the engine was answering
    answer.release.resolve();
    await round;
    assert.equal(endpoint.load?.inFlightAtScrape, 7);
    assert.equal(endpoint.load?.metrics.running_queue_size, 4);
  });

  it('a failed or garbage scrape after a good one clears Endpoint.load', async () => {
    const p = await pod('127.0.0.105', text(vllmText(2, 1, 0.5)));
    const s = setup([p.address]);
    const good = p.answer;
    const failures: [string, Handler, string][] = [
      ['500', text('Internal Server Error', 500), 'http_error'],
      ['HTML', text(fixture('login.html')), 'garbage'],
      ['no engine gauges', text('# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 3.5\n'), 'garbage'],
      ['NaN', text(vllmText(2, 1, Number.NaN)), 'garbage'],
      ['an endless label set', text('vllm:num_requests_running{model_name="m"'), 'garbage'],
    ];
    for (const [what, failing, result] of failures) {
      p.answer = good;
      await s.scraper.scrapeAll();
      assert.equal(loadOf(s, p.address)?.metrics.running_queue_size, 2, `good before ${what}`);
      const counted = (await results(s.metrics))[result] ?? 0;
      p.answer = failing;
      await s.scraper.scrapeAll();
      assert.equal(loadOf(s, p.address), undefined, `${what} clears the load`);
      assert.equal((await results(s.metrics))[result], counted + 1, `${what} counted as ${result}`);
    }
  });

  it('says why each scrape failed, and counts it by result', async () => {
    const closed = await pod('127.0.0.106', hang);
    const closedServer = servers.pop()!;
    await new Promise((resolve) => closedServer.close(resolve));
    const status = await pod('127.0.0.107', text('oops', 503));
    const html = await pod('127.0.0.108', text(fixture('login.html')));
    const hanging = await pod('127.0.0.109', hang);
    const huge = await pod('127.0.0.110', (_req, res) => {
      res.writeHead(200, { 'content-length': String(MAX_METRICS_ANSWER_BYTES + 1) });
      res.write('vllm:num_requests_running 1\n');
    });
    const s = setup([closed.address, status.address, html.address, hanging.address, huge.address], { timeoutMs: 300 });
    await s.scraper.scrapeAll();
    for (const address of [closed.address, status.address, html.address, hanging.address, huge.address]) assert.equal(loadOf(s, address), undefined, address);
    assert.deepEqual(await results(s.metrics), { refused: 1, http_error: 1, garbage: 1, timeout: 1, too_large: 1 });
    const reasons = Object.fromEntries(s.logs.lines.filter((line) => line.level === 40).map((line) => [line.endpoint, line.reason]));
    assert.deepEqual(reasons, {
      [closed.address]: 'GET /metrics: connection refused (ECONNREFUSED)',
      [status.address]: 'GET /metrics: answered 503',
      [html.address]: 'GET /metrics: not Prometheus text: line 1: expected a metric name or a comment, found "<!DOCTYPE html>"',
      [hanging.address]: 'GET /metrics: no answer within 300 ms',
      [huge.address]: `GET /metrics: the answer is ${MAX_METRICS_ANSWER_BYTES + 1} bytes, over the limit of ${MAX_METRICS_ANSWER_BYTES}`,
    });
  });

  it('a hanging endpoint does not hold up the others; it fails at the timeout', async () => {
    const hanging = await pod('127.0.0.111', hang);
    const good = await pod('127.0.0.112', text(vllmText(1, 0, 0.1)));
    const s = setup([hanging.address, good.address], { timeoutMs: 1_500 });
    let roundEnded = false;
    const round = s.scraper.scrapeAll().then(() => {
      roundEnded = true;
    });
    await until('the good endpoint to have load', () => loadOf(s, good.address), Boolean);
    assert.equal(roundEnded, false, 'the hanging scrape is still under way');
    await round;
    assert.equal(loadOf(s, hanging.address), undefined);
    assert.deepEqual(await results(s.metrics), { success: 1, timeout: 1 });
  });

  it('on the timer, the others are scraped every interval while one hangs; the timeout is at most the interval', async () => {
    const hanging = await pod('127.0.0.113', hang);
    const good = await pod('127.0.0.114', text(vllmText(1, 0, 0.1)));
    const s = setup([hanging.address, good.address], { intervalMs: 100, timeoutMs: 60_000 });
    void s.scraper.start();
    await until(
      'five scrapes of the good endpoint',
      () => good.scrapes,
      (n) => n >= 5,
    );
    await s.scraper.stop();
    const warning = s.logs.lines.find((line) => line.endpoint === hanging.address);
    assert.equal(warning?.reason, 'GET /metrics: no answer within 100 ms');
    assert.ok(hanging.scrapes <= good.scrapes, 'no pile-up of scrapes on the hanging endpoint');
  });

  it('a removed endpoint is not scraped again and keeps nothing', async () => {
    const leaving = await pod('127.0.0.115', text(vllmText(1, 0, 0.1)));
    const staying = await pod('127.0.0.116', text(vllmText(1, 0, 0.1)));
    const s = setup([leaving.address, staying.address], { intervalMs: 50, timeoutMs: 1_000 });
    await s.scraper.start();
    const endpoint = s.registry.get(leaving.address)!;
    assert.ok(endpoint.load);
    await s.scraper.stop(); // no scrape of `leaving` under way when it goes
    s.registry.remove(leaving.address);
    assert.equal(endpoint.load, undefined);
    const scrapedBefore = leaving.scrapes;
    const stayingBefore = staying.scrapes;
    void s.scraper.start();
    await until(
      'three more timer scrapes of the endpoint that stays',
      () => staying.scrapes,
      (n) => n >= stayingBefore + 3,
    );
    await s.scraper.scrapeAll();
    assert.equal(leaving.scrapes, scrapedBefore);
    assert.equal(endpoint.load, undefined);
    assert.deepEqual(Object.keys(await gauge(s.metrics, 'llm_extproc_endpoint_engine_running_requests')), [staying.address]);
  });

  it('an endpoint removed while its scrape is under way keeps nothing from it', async () => {
    const answer = heldAnswer(vllmText(9, 9, 0.9));
    const p = await pod('127.0.0.118', answer.handler);
    const s = setup([p.address]);
    const endpoint = s.registry.get(p.address)!;
    const round = s.scraper.scrapeAll();
    await answer.asked.promise;
    s.registry.remove(p.address);
    answer.release.resolve();
    await round;
    assert.equal(endpoint.load, undefined);
    assert.equal(p.scrapes, 1);
  });

  it('a new endpoint is scraped at once, not at the next tick', async () => {
    const sim = await startSimulator({ engine: 'sglang', host: '127.0.0.119', models: ['m'] });
    sims.push(sim);
    const s = setup([], { intervalMs: 60_000 });
    await s.scraper.start();
    s.registry.upsert({ address: sim.address, name: 'new-pod', namespace: 'test', labels: {} });
    // The next tick is a minute away: only the scrape on arrival can fill this in time.
    const load = await until('the new endpoint to have load', () => s.registry.get(sim.address)?.load, Boolean);
    assert.equal(load?.metrics.kv_cache_max_token_capacity, 65536);
    assert.equal(sim.stats().byPath['/metrics'], 1);
  });

  it('exports per-endpoint figures while they are fresh, none once stale or failed', async () => {
    const good = await pod('127.0.0.120', text(vllmText(3, 2, 0.25)));
    const failing = await pod('127.0.0.121', text('no', 500));
    const s = setup([good.address, failing.address], { stalenessMs: 300 });
    await s.scraper.scrapeAll();
    assert.deepEqual(await gauge(s.metrics, 'llm_extproc_endpoint_engine_running_requests'), { [good.address]: 3 });
    assert.deepEqual(await gauge(s.metrics, 'llm_extproc_endpoint_engine_waiting_requests'), { [good.address]: 2 });
    assert.deepEqual(await gauge(s.metrics, 'llm_extproc_endpoint_engine_kv_cache_usage_ratio'), { [good.address]: 0.25 });
    const exposition = await s.metrics.metrics();
    assert.match(exposition, new RegExp(`llm_extproc_endpoint_engine_running_requests\\{endpoint="${good.address}",name="pod-${good.address}"\\} 3`));
    assert.match(exposition, /llm_extproc_engine_scrapes_total\{result="garbage"\} 0/, 'every result is exported from the start');
    const freshUntil = loadOf(s, good.address)!.freshUntil;
    await until(
      'the figures to go stale',
      () => performance.now(),
      (now) => now > freshUntil,
    );
    assert.deepEqual(await gauge(s.metrics, 'llm_extproc_endpoint_engine_running_requests'), {});
  });

  it('logs a failing endpoint once, and once when it recovers', async () => {
    const p = await pod('127.0.0.122', text('down', 500));
    const s = setup([p.address]);
    const logged = () => s.logs.lines.filter((line) => line.endpoint === p.address).map((line) => `${line.level} ${line.msg}`);
    for (let i = 0; i < 3; i++) await s.scraper.scrapeAll();
    assert.deepEqual(logged(), ['40 engine metrics scrape failing; its load figures are not used']);
    p.answer = text(vllmText(0, 0, 0));
    for (let i = 0; i < 3; i++) await s.scraper.scrapeAll();
    assert.deepEqual(logged(), ['40 engine metrics scrape failing; its load figures are not used', '30 engine metrics scrape recovered']);
    p.answer = text('<html>');
    await s.scraper.scrapeAll();
    assert.equal(logged().length, 3);
    assert.match(String(s.logs.lines.at(-1)?.reason), /not Prometheus text/);
  });

  it('keeps connections alive between scrapes', async () => {
    const p = await pod('127.0.0.123', text(vllmText(0, 0, 0)));
    // On the timer: rounds run back to back (awaiting scrapeAll() in a loop) can ask again before
    // fetch has put the socket back in its pool, and then open a second connection.
    const s = setup([p.address], { intervalMs: 50, timeoutMs: 1_000 });
    void s.scraper.start();
    await until(
      'six scrapes',
      () => p.scrapes,
      (n) => n >= 6,
    );
    await s.scraper.stop();
    assert.equal(p.connections, 1);
  });

  it('overlapping rounds share the scrapes under way', async () => {
    const answer = heldAnswer(vllmText(1, 0, 0));
    const p = await pod('127.0.0.124', answer.handler);
    const s = setup([p.address]);
    const first = s.scraper.scrapeAll();
    await answer.asked.promise;
    const second = s.scraper.scrapeAll();
    assert.equal(first, second);
    answer.release.resolve();
    await Promise.all([first, second]);
    assert.equal(p.scrapes, 1);
  });

  it('scrapes at most `concurrency` endpoints at once', async () => {
    let open = 0;
    let most = 0;
    const waiting: (() => void)[] = [];
    const handler: Handler = (req, res) => {
      open++;
      most = Math.max(most, open);
      res.on('finish', () => open--);
      const gate = defer();
      held.push(gate);
      waiting.push(gate.resolve);
      void gate.promise.then(() => text(vllmText(0, 0, 0))(req, res));
    };
    const pods = await Promise.all([125, 126, 127, 128, 129].map((n) => pod(`127.0.0.${n}`, handler)));
    const s = setup(
      pods.map((p) => p.address),
      { concurrency: 2 },
    );
    const round = s.scraper.scrapeAll();
    for (let released = 0; released < pods.length; released++) {
      await until(
        'a scrape to be waiting for its answer',
        () => waiting.length,
        (n) => n > released,
      );
      waiting[released]!();
    }
    await round;
    assert.equal(most, 2);
    assert.deepEqual(await results(s.metrics), { success: 5 });
  });

  it("uses the pod's engine label to read an answer that carries both engines' gauges", async () => {
    const both = `${vllmText(1, 0, 0.1)}sglang:num_running_reqs 6\nsglang:num_queue_reqs 0\nsglang:token_usage 0.5\n`;
    const p = await pod('127.0.0.130', text(both));
    const labelled = setup([p.address], {}, { [ENGINE_LABEL]: 'sglang' });
    await labelled.scraper.scrapeAll();
    assert.equal(loadOf(labelled, p.address)?.metrics.running_queue_size, 6);
    const unlabelled = setup([p.address]);
    await unlabelled.scraper.scrapeAll();
    assert.equal(loadOf(unlabelled, p.address), undefined);
  });

  it('refuses options that cannot work', () => {
    const registry = new EndpointRegistry();
    const log = createLogger('silent');
    assert.throws(
      () => new LoadScraper(registry, { intervalMs: 0, timeoutMs: 1, stalenessMs: 1 }, new Registry(), log),
      /intervalMs must be a positive number/,
    );
    assert.throws(
      () => new LoadScraper(registry, { intervalMs: 1, timeoutMs: 1, stalenessMs: 1, concurrency: 0 }, new Registry(), log),
      /concurrency must be a positive integer/,
    );
  });
});
