import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rename, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Cluster, captureLogs, chatBody, JSON_HEADERS, QWEN, startCluster } from './support/harness.js';
import { metricValue } from './support/metrics.js';
import { until } from './support/wait.js';

/**
 * A Kubernetes ConfigMap volume: `<dir>/<file>` → `..data/<file>`, `..data` → a timestamped
 * directory; an update writes a new directory and renames a new `..data` symlink over the old one.
 */
class ConfigMapVolume {
  private generation = 0;

  constructor(readonly dir: string) {}

  path(file: string): string {
    return join(this.dir, file);
  }

  async publish(files: Record<string, string>): Promise<void> {
    const generation = join(this.dir, `..${++this.generation}`);
    await mkdir(generation);
    for (const [name, text] of Object.entries(files)) await writeFile(join(generation, name), text);
    await symlink(generation, join(this.dir, '..data_tmp'));
    await rename(join(this.dir, '..data_tmp'), join(this.dir, '..data'));
    if (this.generation === 1) {
      for (const name of Object.keys(files)) await symlink(join('..data', name), join(this.dir, name));
    }
  }
}

const CUSTOM_PATH = '/v1/completions';
const ROUTES = JSON.stringify([{ name: 'default', path_prefix: '/v1/', owned_by: 'vllm' }]);
const ROUTES_WITH_CUSTOM = JSON.stringify([
  { name: 'default', path_prefix: '/v1/', owned_by: 'vllm' },
  { name: 'custom', path_prefix: CUSTOM_PATH, model: QWEN, owned_by: 'sglang' },
]);

describe('config reload under live traffic', () => {
  let cluster: Cluster;
  let volume: ConfigMapVolume;
  let routesFile: string;
  const logs = captureLogs();

  const reloads = (result: 'ok' | 'failed') => metricValue(cluster.service.metrics.registry, 'llm_extproc_config_reloads_total', { result });
  const configHash = async () => (await cluster.service.metrics.registry.getSingleMetric('llm_extproc_config_info')!.get()).values[0]!.labels.hash;
  /** A request without a model on the custom path: routed only while the custom route exists. */
  const custom = () =>
    cluster.envoy.request({ method: 'POST', path: CUSTOM_PATH, headers: JSON_HEADERS, body: JSON.stringify({ prompt: 'Hi', max_tokens: 2 }) });
  const logged = (message: string) => logs.lines.filter((line) => line.msg === message);

  before(async () => {
    const root = await mkdtemp(join(tmpdir(), 'llm-extproc-reload-'));
    volume = new ConfigMapVolume(join(root, 'configmap'));
    await mkdir(volume.dir);
    await volume.publish({ 'llm-extproc.yaml': 'log-level: info\nrouting-logic: least_outstanding_requests\n' });
    await mkdir(join(root, 'routes'));
    routesFile = join(root, 'routes', 'routes.json');
    await writeFile(routesFile, ROUTES);
    cluster = await startCluster({ flags: [`--config=${volume.path('llm-extproc.yaml')}`, `--route-config=${routesFile}`], logs: logs.stream });
  });
  after(async () => cluster.close());

  it('applies a valid change while streams stay open: in-flight counts survive, new requests see it', async () => {
    assert.equal((await custom()).status, 400, 'no custom route yet: no model');
    const held = [];
    for (let i = 0; i < 6; i++)
      held.push(await cluster.envoy.open({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody({ model: QWEN }) }));
    const inFlightBefore = cluster.inFlight();
    const hashBefore = await configHash();
    const okBefore = await reloads('ok');

    // The ConfigMap changes (a kubectl apply), and someone edits the route file in place.
    await volume.publish({ 'llm-extproc.yaml': 'log-level: debug\nrouting-logic: round_robin\n' });
    await writeFile(routesFile, ROUTES_WITH_CUSTOM);
    await until(
      'the watcher to reload',
      () => reloads('ok'),
      (n) => n > okBefore,
      { timeoutMs: 20_000 },
    );
    await cluster.service.reload(); // whatever the watcher has not applied yet

    const changed = new Set(logged('configuration reloaded').flatMap((line) => line.changed as string[]));
    for (const name of ['log-level', 'routing-logic', 'routes']) assert.ok(changed.has(name), `${name} reloaded: ${[...changed]}`);
    assert.notEqual(await configHash(), hashBefore);
    assert.deepEqual(cluster.inFlight(), inFlightBefore, 'the held requests still count where they were routed');
    const answer = await custom();
    assert.equal(answer.status, 200, 'the new route applies to new requests');
    assert.equal(cluster.podByAddress(answer.upstream)?.engine, 'sglang');
    // Every held stream completes normally afterwards, and the ledger returns to zero.
    const answers = await Promise.all(held.map((exchange) => exchange.forward()));
    assert.deepEqual(
      answers.map((response) => response.status),
      held.map(() => 200),
    );
    await cluster.settled();
  });

  it('rejects an invalid change whole and keeps the last good configuration', async () => {
    const failedBefore = await reloads('failed');
    const hashBefore = await configHash();
    await volume.publish({ 'llm-extproc.yaml': 'log-level: loud\nrouting-logic: least_outstanding_requests\n' });
    await until(
      'the rejection',
      () => reloads('failed'),
      (n) => n > failedBefore,
      { timeoutMs: 20_000 },
    );
    const rejection = logged('configuration change rejected: the last good configuration stays').at(-1)!;
    assert.equal(rejection.level, 50, 'logged as an error');
    assert.match(rejection.reason as string, /llm-extproc\.yaml: log-level: "loud" is not a choice/);
    assert.equal(await configHash(), hashBefore);
    assert.equal((await custom()).status, 200, 'the running routes are untouched');

    // Fixed, it applies.
    const okBefore = await reloads('ok');
    await volume.publish({ 'llm-extproc.yaml': 'log-level: info\nrouting-logic: least_outstanding_requests\n' });
    await until(
      'the fixed file to apply',
      () => reloads('ok'),
      (n) => n > okBefore,
      { timeoutMs: 20_000 },
    );
  });

  it('a change that needs a restart is logged, and the running value stays', async () => {
    const warnings = () => logged('max-body-size changed: it needs a restart, the running value stays');
    const okBefore = await reloads('ok');
    await volume.publish({ 'llm-extproc.yaml': 'log-level: info\nrouting-logic: least_outstanding_requests\nmax-body-size: 1KiB\n' });
    await until('the warning', warnings, (lines) => lines.length > 0, { timeoutMs: 20_000 });
    assert.deepEqual({ running: warnings()[0]!.running, configured: warnings()[0]!.configured }, { running: '32MiB', configured: '1KiB' });
    assert.equal(
      await reloads('ok'),
      okBefore,
      `nothing else changed: nothing applied (${JSON.stringify(logged('configuration reloaded').map((line) => line.changed))})`,
    );
    const large = await cluster.envoy.request({
      method: 'POST',
      path: '/v1/chat/completions',
      headers: JSON_HEADERS,
      body: chatBody({ model: QWEN, pad: 'x'.repeat(4096) }),
    });
    assert.equal(large.status, 200, 'the 32MiB limit still holds');
  });

  it('rate limits apply and lift on reload', async () => {
    const ask = () => cluster.envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody({ model: QWEN }) });
    const publishAndWait = async (extra: string) => {
      const okBefore = await reloads('ok');
      await volume.publish({ 'llm-extproc.yaml': `log-level: info\nrouting-logic: least_outstanding_requests\n${extra}` });
      await until(
        'the reload',
        () => reloads('ok'),
        (n) => n > okBefore,
        { timeoutMs: 20_000 },
      );
    };
    await publishAndWait('rate-limit-model: 0.001/1\n');
    assert.equal((await ask()).status, 200, 'the burst of one');
    const limited = await ask();
    assert.equal(limited.status, 429);
    assert.ok(Number(limited.headers['retry-after']) >= 1);
    await publishAndWait('');
    assert.equal((await ask()).status, 200, 'no limit any more');
  });

  it('control: a reload with nothing changed applies nothing', async () => {
    const okBefore = await reloads('ok');
    assert.equal(await cluster.service.reload(), 'unchanged');
    assert.equal(await reloads('ok'), okBefore);
  });
});

describe('config reload with an external filter in the chain', () => {
  it('a changed chain builds new external filters without registering their series twice', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'llm-extproc-reload-external-'));
    const file = join(dir, 'llm-extproc.yaml');
    const chain = (timeoutMs: number) =>
      `scheduling:\n  filters:\n    - {type: external-http, name: gate, parameters: {url: "http://127.0.0.9:9/x", timeout_ms: ${timeoutMs}, fail_open: true}}\n`;
    await writeFile(file, chain(50));
    const cluster = await startCluster({ flags: [`--config=${file}`] });
    try {
      await writeFile(file, chain(60));
      assert.ok(['applied', 'unchanged'].includes(await cluster.service.reload()), 'the watcher may have applied it first');
      assert.equal(await metricValue(cluster.service.metrics.registry, 'llm_extproc_config_reloads_total', { result: 'ok' }), 1);
      const answer = await cluster.envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody({ model: QWEN }) });
      assert.equal(answer.status, 200, 'the new (fail-open) filter runs');
    } finally {
      await cluster.close();
    }
  });
});
