import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it, type TestContext } from 'node:test';
import { promisify } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import type { KubernetesDiscoveryConfig } from '../src/config/config.js';
import { ConfigError } from '../src/config/errors.js';
import { type KubeEnvironment, loadKubeConnection, resolveNamespace } from '../src/discovery/sources/kube-client.js';
import { Backoff } from '../src/discovery/sources/kube-informer.js';
import { KubernetesPodSource, type KubernetesSourceOptions } from '../src/discovery/sources/kubernetes-pods.js';
import { createLogger } from '../src/log.js';
import { captureLogs } from './support/harness.js';
import { FakeKubeApiServer, type KubeObject, statusObject } from './support/kube-api-server.js';
import { DECODE, pod, RecordingSink } from './support/kube-fixtures.js';
import { metricValue } from './support/metrics.js';
import { until } from './support/wait.js';
import { REPO_ROOT } from './support/xds-protos.js';

const run = promisify(execFile);

/** Retries fast so that reconnect tests take milliseconds, not the production half second. */
const FAST: KubernetesSourceOptions = { backoff: { initialMs: 10, maxMs: 100 }, startupDeadlineMs: 3000 };
const CONFIG: KubernetesDiscoveryConfig = { namespace: 'default', labelSelector: 'llm-d.ai/role=decode', port: { number: 8000 } };

// Every test runs with this on: a callback throwing into an async library handler must never go unnoticed.
const unhandled: unknown[] = [];
process.on('unhandledRejection', (reason) => unhandled.push(reason));
after(() => assert.deepEqual(unhandled, [], 'no unhandled rejections'));

interface Setup {
  api: FakeKubeApiServer;
  source: KubernetesPodSource;
  sink: RecordingSink;
  logs: ReturnType<typeof captureLogs>;
  registry: Registry;
  /** Starts the source and waits for its first sync. */
  start(): Promise<void>;
}

async function setup(
  t: TestContext,
  { pods = [], config = {}, options = {} }: { pods?: KubeObject[]; config?: Partial<KubernetesDiscoveryConfig>; options?: KubernetesSourceOptions } = {},
): Promise<Setup> {
  const api = await FakeKubeApiServer.start();
  for (const p of pods) api.put('pods', p);
  const logs = captureLogs();
  const registry = new Registry();
  const source = new KubernetesPodSource({ ...CONFIG, ...config }, createLogger('info', logs.stream), registry, {
    kubeConfig: api.kubeConfig(),
    ...FAST,
    ...options,
  });
  const sink = new RecordingSink();
  t.after(async () => {
    await source.stop();
    await api.stop();
  });
  return {
    api,
    source,
    sink,
    logs,
    registry,
    async start() {
      source.start(sink);
      await source.synced;
    },
  };
}

function logged(logs: Setup['logs'], msg: string, fields: Record<string, unknown> = {}): Record<string, unknown>[] {
  return logs.lines.filter((line) => line.msg === msg && Object.entries(fields).every(([k, v]) => line[k] === v));
}

const has = (sink: RecordingSink, address: string) => () => sink.endpoints.has(address);
const yes = (value: boolean) => value;
const no = (value: boolean) => !value;

describe('Kubernetes pod discovery: which pods are endpoints', () => {
  it('the first list puts every ready, running, addressed, selected pod in the sink before synced resolves', async (t) => {
    const { api, source, sink, start } = await setup(t, {
      pods: [
        pod('ready', { ip: '10.0.0.1', labels: { ...DECODE, 'llm-d.ai/model': 'llama' } }),
        pod('not-ready', { ip: '10.0.0.2', ready: false }),
        pod('terminating', { ip: '10.0.0.3', terminating: true }),
        pod('no-ip', { ip: undefined }),
        pod('prefill', { ip: '10.0.0.5', labels: { 'llm-d.ai/role': 'prefill' } }),
      ],
    });
    api.put('pods', pod('elsewhere', { ip: '10.0.0.6' }), 'other');
    let seenAtSync: string[] | undefined;
    void source.synced.then(() => (seenAtSync = sink.addresses()));
    await start();
    assert.deepEqual(seenAtSync, ['10.0.0.1:8000']);
    assert.deepEqual(sink.endpoints.get('10.0.0.1:8000'), {
      address: '10.0.0.1:8000',
      name: 'ready',
      namespace: 'default',
      labels: { ...DECODE, 'llm-d.ai/model': 'llama' },
      group: 'ready', // no owner: the pod is its own group
    });
    const list = api.requests.find((r) => !r.watch && r.path === '/api/v1/namespaces/default/pods');
    assert.equal(list?.query.labelSelector, 'llm-d.ai/role=decode');
    const watch = api.requests.find((r) => r.watch);
    assert.equal(watch?.query.allowWatchBookmarks, 'true', 'bookmarks keep a quiet watch resumable');
    assert.equal(source.staleSince(), undefined);
  });

  it('pods coming and going: ready joins; not ready, terminating and deleted leave at once, each logged once with why', async (t) => {
    const { api, sink, logs, start } = await setup(t);
    await start();
    api.put('pods', pod('p', { ip: '10.0.0.7', ready: false }));
    api.put('pods', pod('q', { ip: '10.0.0.8' }));
    await until('q joins', has(sink, '10.0.0.8:8000'), yes);
    assert.equal(sink.endpoints.has('10.0.0.7:8000'), false, 'p is not ready');

    api.modify('pods', 'p', (p) => Object.assign(p, pod('p', { ip: '10.0.0.7' })));
    await until('p joins once ready', has(sink, '10.0.0.7:8000'), yes);
    api.modify('pods', 'p', (p) => Object.assign(p, pod('p', { ip: '10.0.0.7', ready: false })));
    await until('p leaves when not ready', has(sink, '10.0.0.7:8000'), no);
    api.modify('pods', 'q', (p) => Object.assign(p, pod('q', { ip: '10.0.0.8', terminating: true })));
    await until('q leaves when terminating', has(sink, '10.0.0.8:8000'), no);
    api.modify('pods', 'p', (p) => Object.assign(p, pod('p', { ip: '10.0.0.7' })));
    await until('p is back', has(sink, '10.0.0.7:8000'), yes);
    api.delete('pods', 'p');
    await until('p leaves when deleted', has(sink, '10.0.0.7:8000'), no);
    api.delete('pods', 'q');
    api.put('pods', pod('r', { ip: '10.0.0.9' }));
    await until('r joins (the events after the delete still apply)', has(sink, '10.0.0.9:8000'), yes);

    assert.deepEqual(sink.changes, [
      '+10.0.0.8:8000',
      '+10.0.0.7:8000',
      '-10.0.0.7:8000',
      '-10.0.0.8:8000',
      '+10.0.0.7:8000',
      '-10.0.0.7:8000',
      '+10.0.0.9:8000',
    ]);
    assert.deepEqual(
      logged(logs, 'endpoint left').map((l) => `${l.pod}: ${l.reason}`),
      ['p: pod not ready', 'q: pod terminating', 'p: pod deleted or no longer selected'],
      'q being deleted after it left says nothing more',
    );
    assert.equal(logged(logs, 'endpoint joined', { pod: 'p' }).length, 2);
  });

  it("a pod whose IP changes leaves at the old address before joining at the new one; a label change updates the endpoint's labels", async (t) => {
    const { api, sink, logs, start } = await setup(t, { pods: [pod('p', { ip: '10.0.1.1' })] });
    await start();
    api.modify('pods', 'p', (p) => Object.assign(p, pod('p', { ip: '10.0.1.2' })));
    await until('the new address', has(sink, '10.0.1.2:8000'), yes);
    assert.deepEqual(sink.changes, ['+10.0.1.1:8000', '-10.0.1.1:8000', '+10.0.1.2:8000']);
    assert.equal(logged(logs, 'endpoint left', { reason: 'pod address changed to 10.0.1.2:8000' }).length, 1);

    api.modify('pods', 'p', (p) => {
      p.metadata.labels = { ...DECODE, 'llm-d.ai/model': 'qwen' };
    });
    await until(
      'labels follow',
      () => sink.endpoints.get('10.0.1.2:8000')?.labels['llm-d.ai/model'],
      (m) => m === 'qwen',
    );
    assert.equal(sink.changes.length, 3, 'a label change is no membership change');
  });

  it('an IPv6 pod is [ip]:port', async (t) => {
    const { sink, start } = await setup(t, { pods: [pod('v6', { ip: 'fd00::17' })] });
    await start();
    assert.deepEqual(sink.addresses(), ['[fd00::17]:8000']);
  });

  it('--k8s-port-name: the named container port; a pod without it is skipped and logged once until it has it', async (t) => {
    const { api, sink, logs, start } = await setup(t, {
      config: { port: { name: 'http' } },
      pods: [
        pod('named', {
          ip: '10.0.2.1',
          ports: [
            { name: 'metrics', containerPort: 9090 },
            { name: 'http', containerPort: 8080 },
          ],
        }),
        pod('unnamed', { ip: '10.0.2.2', ports: [{ containerPort: 8080 }] }),
      ],
    });
    await start();
    assert.deepEqual(sink.addresses(), ['10.0.2.1:8080']);
    api.modify('pods', 'unnamed', (p) => {
      p.metadata.labels = { ...DECODE, touched: '1' };
    });
    api.modify('pods', 'unnamed', (p) => {
      p.metadata.labels = { ...DECODE, touched: '2' };
    });
    api.put('pods', pod('marker', { ip: '10.0.2.9', ports: [{ name: 'http', containerPort: 8080 }] }));
    await until('the events before the marker are applied', has(sink, '10.0.2.9:8080'), yes);
    const warnings = logs.lines.filter((l) => l.pod === 'unnamed' && String(l.msg).includes('no container port named "http"'));
    assert.equal(warnings.length, 1, 'three sightings, one warning');

    api.modify('pods', 'unnamed', (p) => Object.assign(p, pod('unnamed', { ip: '10.0.2.2', ports: [{ name: 'http', containerPort: 8081 }] })));
    await until('it joins once it has the port', has(sink, '10.0.2.2:8081'), yes);
  });

  it('the label selector is the server\'s to apply (k=v, k!=v, k, and ","); a pod that stops matching leaves', async (t) => {
    const { api, sink, start } = await setup(t, {
      config: { labelSelector: 'llm-d.ai/role=decode,tier!=canary,llm-d.ai/model' },
      pods: [
        pod('a', { ip: '10.0.3.1', labels: { ...DECODE, 'llm-d.ai/model': 'm' } }),
        pod('canary', { ip: '10.0.3.2', labels: { ...DECODE, 'llm-d.ai/model': 'm', tier: 'canary' } }),
        pod('no-model', { ip: '10.0.3.3', labels: DECODE }),
      ],
    });
    await start();
    assert.deepEqual(sink.addresses(), ['10.0.3.1:8000']);
    api.modify('pods', 'a', (p) => {
      p.metadata.labels = { ...DECODE, 'llm-d.ai/model': 'm', tier: 'canary' };
    });
    await until('a leaves once it no longer matches', has(sink, '10.0.3.1:8000'), no);
    api.modify('pods', 'no-model', (p) => {
      p.metadata.labels = { ...DECODE, 'llm-d.ai/model': 'm' };
    });
    await until('no-model joins once it matches', has(sink, '10.0.3.3:8000'), yes);
  });

  it('an address taken over by a new pod stays when the old pod that had it goes', async (t) => {
    const { api, sink, start } = await setup(t, { pods: [pod('old', { ip: '10.0.4.1' })] });
    await start();
    api.put('pods', pod('new', { ip: '10.0.4.1' }));
    api.delete('pods', 'old');
    api.put('pods', pod('marker', { ip: '10.0.4.9' }));
    await until('the marker', has(sink, '10.0.4.9:8000'), yes);
    assert.equal(sink.endpoints.get('10.0.4.1:8000')?.name, 'new');
  });

  it('the namespace is --k8s-namespace, else the service account\'s, else "default"', async (t) => {
    const root = mkdtempSync(path.join(tmpdir(), 'k8s-ns-'));
    t.after(() => rmSync(root, { recursive: true, force: true }));
    const environment: KubeEnvironment = { env: {}, home: undefined, root };
    assert.deepEqual(resolveNamespace(undefined, environment), { namespace: 'default', origin: 'default' });
    mkdirSync(path.join(root, 'var/run/secrets/kubernetes.io/serviceaccount'), { recursive: true });
    writeFileSync(path.join(root, 'var/run/secrets/kubernetes.io/serviceaccount/namespace'), 'llm-d\n');
    assert.deepEqual(resolveNamespace(undefined, environment), { namespace: 'llm-d', origin: 'service account' });
    assert.deepEqual(resolveNamespace('given', environment), { namespace: 'given', origin: 'flag' });

    const { api, sink, start } = await setup(t, { config: { namespace: undefined }, options: { environment } });
    api.put('pods', pod('there', { ip: '10.0.5.1' }), 'llm-d');
    await start();
    assert.deepEqual(sink.addresses(), ['10.0.5.1:8000']);
    assert.ok(api.requests.every((r) => r.path === '/api/v1/namespaces/llm-d/pods'));
  });

  it("stop() ends client-node's wait before a re-watch, so nothing keeps the process alive", async () => {
    // After repeated clean closes client-node waits (1 s, 2 s, ... 30 s) before watching again,
    // on a timer its stop() leaves running. In a child process: stop during a 2 s wait, and time
    // how long the process takes to exit (checked: with the wait not tied to stop(), about 2 s).
    const script = `
      import { Registry } from 'prom-client';
      import { KubernetesPodSource } from ${JSON.stringify(new URL('../src/discovery/sources/kubernetes-pods.js', import.meta.url).href)};
      import { FakeKubeApiServer } from ${JSON.stringify(new URL('./support/kube-api-server.js', import.meta.url).href)};
      import { createLogger } from ${JSON.stringify(new URL('../src/log.js', import.meta.url).href)};
      const api = await FakeKubeApiServer.start();
      const source = new KubernetesPodSource({ namespace: 'default', labelSelector: '', port: { number: 8000 } }, createLogger('silent'), new Registry(), { kubeConfig: api.kubeConfig() });
      source.start({ upsert() {}, remove() {} });
      await source.synced;
      for (let i = 0; i < 2; i++) { const next = api.nextWatch('pods'); api.dropWatches(); await next; }
      api.dropWatches();
      await new Promise((resolve) => setImmediate(resolve));
      const stopped = performance.now();
      process.on('exit', () => console.log(Math.round(performance.now() - stopped)));
      await source.stop();
      await api.stop();
    `;
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: REPO_ROOT, timeout: 20_000 });
    const exitAfterMs = Number(stdout.trim());
    assert.ok(exitAfterMs < 1000, `exited ${exitAfterMs} ms after stop()`);
  });

  it('stop() closes the watch; what was in the sink stays, later changes do not arrive', async (t) => {
    const { api, source, sink, start } = await setup(t, { pods: [pod('p', { ip: '10.0.6.1' })] });
    await start();
    await until(
      'the watch is open',
      () => api.openWatches('pods'),
      (n) => n === 1,
    );
    await source.stop();
    await until(
      'the watch is closed',
      () => api.openWatches('pods'),
      (n) => n === 0,
    );
    api.put('pods', pod('late', { ip: '10.0.6.2' }));
    api.delete('pods', 'p');
    assert.deepEqual(sink.addresses(), ['10.0.6.1:8000']);
  });
});

describe('Kubernetes pod discovery: the watch survives the API server', () => {
  it('a watch the server ends cleanly is resumed from its resourceVersion (no relist); one cut abruptly is restarted with backoff', async (t) => {
    const { api, sink, registry, start } = await setup(t, { pods: [pod('a', { ip: '10.1.0.1' })] });
    await start();
    assert.equal(api.listsAnswered('pods'), 1);

    let watched = api.nextWatch('pods');
    api.dropWatches();
    await watched;
    api.put('pods', pod('b', { ip: '10.1.0.2' }));
    await until('b, through the resumed watch', has(sink, '10.1.0.2:8000'), yes);

    // Without failed() restarting it, client-node stops here for good (checked: with the restart
    // in ResilientInformer.failed removed, this test times out waiting for the next watch).
    watched = api.nextWatch('pods');
    api.dropWatches({ abrupt: true });
    await watched;
    api.put('pods', pod('c', { ip: '10.1.0.3' }));
    await until('c, through the restarted watch', has(sink, '10.1.0.3:8000'), yes);

    assert.equal(api.listsAnswered('pods'), 1, 'both resumed from the resourceVersion they had');
    assert.deepEqual(sink.changes, ['+10.1.0.1:8000', '+10.1.0.2:8000', '+10.1.0.3:8000'], 'nothing blinked out');
    assert.equal(await metricValue(registry, 'llm_extproc_k8s_watch_restarts_total', { resource: 'pods', cause: 'closed' }), 1);
    assert.equal(await metricValue(registry, 'llm_extproc_k8s_watch_restarts_total', { resource: 'pods', cause: 'error' }), 1);
  });

  it('410 Gone on an open watch: relist, and reconcile (vanished pods leave, changed ones change, the rest do not blink)', async (t) => {
    const { api, sink, logs, registry, start } = await setup(t, {
      pods: [pod('stays', { ip: '10.2.0.1' }), pod('vanishes', { ip: '10.2.0.2' }), pod('moves', { ip: '10.2.0.3' })],
    });
    await start();
    // Events the client's watch never gets, then the server tells it its history is gone.
    api.freezeWatches();
    api.delete('pods', 'vanishes');
    api.modify('pods', 'moves', (p) => Object.assign(p, pod('moves', { ip: '10.2.0.4' })));
    api.put('pods', pod('arrives', { ip: '10.2.0.5' }));
    api.expireHistory();
    api.expireWatches();
    await until(
      'the relist is reconciled',
      () => sink.addresses().join(' '),
      (a) => a === '10.2.0.1:8000 10.2.0.4:8000 10.2.0.5:8000',
    );
    assert.equal(api.listsAnswered('pods'), 2);
    assert.ok(!sink.changes.includes('-10.2.0.1:8000'), 'the pod that stayed never left');
    assert.ok(sink.changes.indexOf('-10.2.0.3:8000') < sink.changes.indexOf('+10.2.0.4:8000'));
    assert.equal(logged(logs, 'endpoint left', { pod: 'vanishes', reason: 'pod gone (deleted while not watching)' }).length, 1);
    assert.equal(await metricValue(registry, 'llm_extproc_k8s_watch_restarts_total', { resource: 'pods', cause: 'expired' }), 1);

    api.put('pods', pod('after', { ip: '10.2.0.6' }));
    await until('the watch after the relist works', has(sink, '10.2.0.6:8000'), yes);
  });

  it('a watch answered 410 (not 200 + ERROR) relists too', async (t) => {
    const { api, sink, start } = await setup(t, { pods: [pod('a', { ip: '10.2.1.1' }), pod('b', { ip: '10.2.1.2' })] });
    await start();
    api.respond({ resource: 'pods', watch: true }, { status: 410, body: statusObject(410, 'Expired', 'too old resource version') }, 1);
    api.freezeWatches();
    api.delete('pods', 'b');
    api.dropWatches();
    await until('b is gone after the relist', has(sink, '10.2.1.2:8000'), no);
    assert.equal(api.listsAnswered('pods'), 2);
    assert.deepEqual(sink.changes, ['+10.2.1.1:8000', '+10.2.1.2:8000', '-10.2.1.2:8000']);
  });

  it('API server restart: stale meanwhile with the endpoints kept, then resumed from the resourceVersion and current again', async (t) => {
    const { api, source, sink, logs, start } = await setup(t, { pods: [pod('a', { ip: '10.3.0.1' }), pod('b', { ip: '10.3.0.2' })] });
    await start();
    const before = new Date();
    await api.stop();
    const lostAt = await until(
      'stale',
      () => source.staleSince(),
      (d) => d !== undefined,
    );
    assert.ok(lostAt! >= before);
    // Let it fail to reconnect a few times: the endpoints stay.
    await until(
      'retries failing',
      () => logs.lines.filter((l) => String(l.msg).includes('failed; keeping the last known state')).length,
      (n) => n >= 3,
    );
    assert.deepEqual(sink.addresses(), ['10.3.0.1:8000', '10.3.0.2:8000']);
    api.delete('pods', 'b');

    await api.restart();
    await until('b removed by the replayed DELETED', has(sink, '10.3.0.2:8000'), no);
    await until(
      'current again',
      () => source.staleSince(),
      (d) => d === undefined,
    );
    assert.equal(api.listsAnswered('pods'), 1, 'history was kept, so no relist was needed');
    assert.deepEqual(sink.changes, ['+10.3.0.1:8000', '+10.3.0.2:8000', '-10.3.0.2:8000']);
    assert.equal(logged(logs, 'pods: contact with the API server is back').length, 1);
  });

  it('API server restart that lost its history: the re-watch gets 410, relists and reconciles', async (t) => {
    const { api, source, sink, start } = await setup(t, { pods: [pod('a', { ip: '10.3.1.1' }), pod('b', { ip: '10.3.1.2' })] });
    await start();
    await api.stop();
    await until(
      'stale',
      () => source.staleSince(),
      (d) => d !== undefined,
    );
    api.delete('pods', 'b');
    api.put('pods', pod('c', { ip: '10.3.1.3' }));
    await api.restart({ forgetHistory: true });
    await until(
      'reconciled',
      () => sink.addresses().join(' '),
      (a) => a === '10.3.1.1:8000 10.3.1.3:8000',
    );
    await until(
      'current again',
      () => source.staleSince(),
      (d) => d === undefined,
    );
    assert.equal(api.listsAnswered('pods'), 2);
    assert.ok(!sink.changes.includes('-10.3.1.1:8000'));
  });

  it('garbage from the watch is logged, counted and dropped; the process survives and later events still apply', async (t) => {
    const { api, sink, logs, registry, start } = await setup(t, { pods: [pod('a', { ip: '10.4.0.1' })] });
    await start();
    // Passed on, each of the first four throws inside client-node's async event handler: an
    // unhandled rejection, which ends a Node process. Two guards stop that: admit() drops them,
    // and the handler's rejection is caught (checked: with both off, this file's unhandled-rejection
    // check fails; with admit() off alone the counts and logs below fail, and the object from
    // another namespace reaches the cache).
    api.injectWatchLine('pods', '{"type":"ADDED"}');
    api.injectWatchLine('pods', '{"type":"ADDED","object":{"kind":"Pod"}}');
    api.injectWatchLine('pods', '{"type":"ERROR"}');
    api.injectWatchLine('pods', '{"type":"BOOKMARK","object":{}}');
    api.injectWatchLine('pods', '{"type":"TELEPORTED","object":{"metadata":{"name":"x"}}}');
    api.injectWatchLine('pods', '{"type":"DELETED","object":{"kind":"Pod","metadata":{"name":"never-seen","namespace":"default"}}}');
    api.injectWatchLine('pods', '{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"x","namespace":"elsewhere"}}}');
    api.injectWatchLine('pods', 'this is not JSON {');
    api.put('pods', pod('b', { ip: '10.4.0.2' }));
    await until('b, after the garbage', has(sink, '10.4.0.2:8000'), yes);
    assert.deepEqual(sink.addresses(), ['10.4.0.1:8000', '10.4.0.2:8000']);
    assert.equal(api.watchesAccepted('pods'), 1, 'the same watch carried on');

    assert.equal(await metricValue(registry, 'llm_extproc_k8s_watch_anomalies_total', { resource: 'pods', reason: 'malformed' }), 6);
    assert.equal(await metricValue(registry, 'llm_extproc_k8s_watch_anomalies_total', { resource: 'pods', reason: 'unknown_object' }), 1);
    const ignored = logs.lines.filter((l) => String(l.msg).startsWith('ignored:')).map((l) => String(l.msg));
    assert.equal(ignored.length, 7);
    assert.ok(ignored.some((m) => m.includes('ADDED watch event without an object')));
    assert.ok(ignored.some((m) => m.includes('without metadata')));
    assert.ok(ignored.some((m) => m.includes('"TELEPORTED"')));
    assert.ok(ignored.some((m) => m.includes('"never-seen", which was never seen')));
    assert.ok(ignored.some((m) => m.includes('from another namespace (elsewhere)')));
    // The line that is not JSON never reaches us: client-node drops it silently (see kube-informer.ts).
  });

  it('a MODIFIED event for a pod never seen is taken as added (its full state is in the event), and counted', async (t) => {
    const { api, sink, registry, start } = await setup(t);
    await start();
    const stranger = {
      ...pod('stranger', { ip: '10.4.1.1' }),
      kind: 'Pod',
      metadata: { ...pod('stranger').metadata, namespace: 'default', resourceVersion: '999' },
    };
    api.injectWatchLine('pods', JSON.stringify({ type: 'MODIFIED', object: stranger }));
    await until('the stranger', has(sink, '10.4.1.1:8000'), yes);
    assert.equal(await metricValue(registry, 'llm_extproc_k8s_watch_anomalies_total', { resource: 'pods', reason: 'unknown_object' }), 1);
  });

  it('bookmarks are asked for, and move the resourceVersion a re-watch resumes from', async (t) => {
    const { api, start } = await setup(t, { pods: [pod('a', { ip: '10.5.0.1' })] });
    await start();
    const listed = api.requests.find((r) => r.watch)!.query.resourceVersion;
    // A change the selected watch never hears of moves the server's version on.
    api.put('pods', pod('unselected', { labels: { other: 'x' } }));
    const current = api.get('pods', 'unselected')!.metadata.resourceVersion;
    const watched = api.nextWatch('pods');
    // Same stream: the client reads the bookmark before the end of it (the server only sends
    // bookmarks to a watch that asked for them: without allowWatchBookmarks this resumes from `listed`).
    api.bookmark();
    api.dropWatches();
    await watched;
    const rewatch = api.requests.filter((r) => r.watch).at(-1)!;
    assert.notEqual(current, listed);
    assert.equal(rewatch.query.resourceVersion, current);
  });
});

describe('Kubernetes pod discovery: start-up errors are one actionable line', () => {
  async function rejection(source: KubernetesPodSource): Promise<ConfigError> {
    source.start(new RecordingSink());
    const err = await source.synced.then(
      () => assert.fail('synced resolved'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ConfigError, `a ConfigError, not ${String(err)}`);
    assert.ok(!err.line.includes('\n'), 'one line');
    assert.ok(!/\bat .+:\d+:\d+/.test(err.line), 'no stack');
    return err;
  }

  function quietSource(kubeConfig: KubeConfig | undefined, config: Partial<KubernetesDiscoveryConfig> = {}, options: KubernetesSourceOptions = {}) {
    return new KubernetesPodSource({ ...CONFIG, ...config }, createLogger('silent'), new Registry(), { kubeConfig, ...FAST, ...options });
  }

  it('no kube config at all: not in a pod, no KUBECONFIG, no ~/.kube/config', async (t) => {
    const home = mkdtempSync(path.join(tmpdir(), 'k8s-home-'));
    t.after(() => rmSync(home, { recursive: true, force: true }));
    const err = await rejection(quietSource(undefined, {}, { environment: { env: {}, home, root: home } }));
    assert.equal(err.flag, '--service-discovery');
    assert.match(err.line, /found no Kubernetes configuration/);
    assert.match(err.line, /KUBECONFIG/);
    assert.ok(err.line.includes(path.join(home, '.kube', 'config')));
  });

  it('a KUBECONFIG file is read (and a missing one named)', async (t) => {
    const dir = mkdtempSync(path.join(tmpdir(), 'k8s-kc-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const api = await FakeKubeApiServer.start();
    t.after(() => api.stop());
    api.put('pods', pod('a', { ip: '10.6.0.1' }));
    const file = path.join(dir, 'config');
    writeFileSync(
      file,
      [
        'apiVersion: v1',
        'kind: Config',
        `clusters: [{name: fake, cluster: {server: "${api.url}", insecure-skip-tls-verify: true}}]`,
        'users: [{name: me, user: {token: t0ken}}]',
        'contexts: [{name: dev, context: {cluster: fake, user: me}}]',
        'current-context: dev',
      ].join('\n'),
    );
    const environment: KubeEnvironment = { env: { KUBECONFIG: file }, home: undefined, root: dir };
    assert.equal(loadKubeConnection(undefined, environment).describe, `kube config ${file} (context dev, user me)`);
    const source = quietSource(undefined, {}, { environment });
    t.after(() => source.stop());
    const sink = new RecordingSink();
    source.start(sink);
    await source.synced;
    assert.deepEqual(sink.addresses(), ['10.6.0.1:8000']);
    assert.equal(api.requests[0]?.authorization, 'Bearer t0ken');

    const missing = await rejection(quietSource(undefined, {}, { environment: { ...environment, env: { KUBECONFIG: path.join(dir, 'nope') } } }));
    assert.equal(missing.flag, 'KUBECONFIG');
    assert.ok(missing.line.includes(path.join(dir, 'nope')));
  });

  it('in a pod: the service account and KUBERNETES_SERVICE_HOST/PORT', async (t) => {
    const root = mkdtempSync(path.join(tmpdir(), 'k8s-sa-'));
    t.after(() => rmSync(root, { recursive: true, force: true }));
    const dir = path.join(root, 'var/run/secrets/kubernetes.io/serviceaccount');
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'token'), 'sa-token');
    writeFileSync(path.join(dir, 'namespace'), 'llm-d');
    const env = { KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' };
    const connection = loadKubeConnection(undefined, { env, home: undefined, root });
    assert.equal(connection.origin, 'in-cluster');
    assert.equal(connection.server, 'https://[fd00::1]:443');
    assert.throws(
      () => loadKubeConnection(undefined, { env: {}, home: undefined, root }),
      (err: unknown) => err instanceof ConfigError && /KUBERNETES_SERVICE_HOST/.test(err.line),
    );
  });

  it('plain HTTP without insecure-skip-tls-verify is refused up front, saying why (client-node would only throw at the first request)', async () => {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'c', server: 'http://127.0.0.1:1', skipTLSVerify: false }],
      users: [{ name: 'u' }],
      contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
      currentContext: 'x',
    });
    const err = await rejection(quietSource(kc));
    assert.match(err.line, /plain HTTP/);
    assert.match(err.line, /insecure-skip-tls-verify/);
  });

  it('API server unreachable: retried a few times within the deadline, then named with its URL', async () => {
    const api = await FakeKubeApiServer.start();
    const kubeConfig = api.kubeConfig();
    await api.stop();
    const started = performance.now();
    const err = await rejection(quietSource(kubeConfig, {}, { backoff: { initialMs: 50, maxMs: 100 }, startupDeadlineMs: 600 }));
    assert.ok(performance.now() - started >= 600, 'it kept trying until the deadline');
    assert.equal(err.flag, '--service-discovery');
    assert.ok(err.line.includes(`the Kubernetes API server at ${api.url} cannot be reached`), err.line);
    assert.match(err.line, /ECONNREFUSED/);
    assert.match(err.line, /\d+ attempts/);
  });

  it('an API server that comes up within the deadline is waited for', async (t) => {
    const api = await FakeKubeApiServer.start();
    t.after(() => api.stop());
    api.put('pods', pod('a', { ip: '10.7.0.1' }));
    const kubeConfig = api.kubeConfig();
    await api.stop();
    const logs = captureLogs();
    const source = new KubernetesPodSource(CONFIG, createLogger('info', logs.stream), new Registry(), { kubeConfig, ...FAST, startupDeadlineMs: 10_000 });
    t.after(() => source.stop());
    const sink = new RecordingSink();
    source.start(sink);
    await until('a failed attempt', () => logs.lines.some((l) => String(l.msg).includes('failed at start-up; retrying')), yes);
    await api.restart();
    await source.synced;
    assert.deepEqual(sink.addresses(), ['10.7.0.1:8000']);
  });

  it('401: the credentials and where they came from', async (t) => {
    const api = await FakeKubeApiServer.start();
    t.after(() => api.stop());
    api.requiredToken = 'the-right-one';
    const err = await rejection(quietSource(api.kubeConfig({ token: 'a-wrong-one' })));
    assert.equal(err.flag, '--service-discovery');
    assert.ok(err.line.includes(`the Kubernetes API server at ${api.url} rejected the credentials of the given KubeConfig (401 Unauthorized`), err.line);
    assert.equal(api.requests.length, 1, 'not retried: a wrong token does not get better');
  });

  it("403 on the list: the verb, resource and namespace RBAC lacks, the server's words, and k8s/rbac.yaml", async (t) => {
    const api = await FakeKubeApiServer.start();
    t.after(() => api.stop());
    const denial = 'pods is forbidden: User "system:serviceaccount:llm-d:default" cannot list resource "pods" in API group "" in the namespace "llm-d"';
    api.respond({ resource: 'pods' }, { status: 403, body: statusObject(403, 'Forbidden', denial) });
    const err = await rejection(quietSource(api.kubeConfig(), { namespace: 'llm-d' }));
    assert.equal(err.flag, '--service-discovery');
    assert.match(err.line, /RBAC does not allow .* to list pods in namespace "llm-d"/);
    assert.ok(err.line.includes(denial), 'the server says who was refused');
    assert.match(err.line, /get, list and watch on pods in namespace "llm-d": kubectl apply -n llm-d -f k8s\/rbac\.yaml/);
  });

  it('403 on the watch only (list allowed, watch not): says watch', async (t) => {
    const api = await FakeKubeApiServer.start();
    t.after(() => api.stop());
    api.respond({ resource: 'pods', watch: true }, { status: 403, body: statusObject(403, 'Forbidden', 'no watching') });
    const err = await rejection(quietSource(api.kubeConfig()));
    assert.match(err.line, /to watch pods in namespace "default"/);
  });

  it('400 for an invalid label selector names --k8s-label-selector', async (t) => {
    const api = await FakeKubeApiServer.start();
    t.after(() => api.stop());
    const err = await rejection(quietSource(api.kubeConfig(), { labelSelector: 'llm-d.ai/role=de code' }));
    assert.equal(err.flag, '--k8s-label-selector');
    assert.match(err.line, /"llm-d.ai\/role=de code" is not a valid label selector \(400 Bad Request: unable to parse requirement/);
  });

  it('404 for the namespace names --k8s-namespace', async (t) => {
    const api = await FakeKubeApiServer.start();
    t.after(() => api.stop());
    api.respond({ namespace: 'nope' }, { status: 404, body: statusObject(404, 'NotFound', 'namespaces "nope" not found') });
    const err = await rejection(quietSource(api.kubeConfig(), { namespace: 'nope' }));
    assert.equal(err.flag, '--k8s-namespace');
    assert.match(err.line, /namespace "nope" was not found/);
  });

  it('something that is not the API server (garbage answers) is retried, then named', async (t) => {
    const api = await FakeKubeApiServer.start();
    t.after(() => api.stop());
    api.respond({ resource: 'pods' }, { status: 200, body: '<html>hello from a proxy</html>', contentType: 'text/html' });
    const err = await rejection(quietSource(api.kubeConfig(), {}, { backoff: { initialMs: 20, maxMs: 40 }, startupDeadlineMs: 200 }));
    assert.match(err.line, /answered the pods list with something that is not a Kubernetes list/);
    assert.ok(api.requests.length >= 2, 'retried first');
  });

  it('after a start-up failure the source has stopped (nothing keeps the process alive)', async () => {
    // In a child process: the first list is refused (403), synced rejects, and nothing is stopped by
    // hand. The process must then exit on its own; a source still retrying would hold it forever
    // (the child's timeout fails the test).
    const script = `
      import { Registry } from 'prom-client';
      import { KubernetesPodSource } from ${JSON.stringify(new URL('../src/discovery/sources/kubernetes-pods.js', import.meta.url).href)};
      import { FakeKubeApiServer, statusObject } from ${JSON.stringify(new URL('./support/kube-api-server.js', import.meta.url).href)};
      import { createLogger } from ${JSON.stringify(new URL('../src/log.js', import.meta.url).href)};
      const api = await FakeKubeApiServer.start();
      api.respond({ resource: 'pods' }, { status: 403, body: statusObject(403, 'Forbidden', 'no') });
      const source = new KubernetesPodSource({ namespace: 'default', labelSelector: '', port: { number: 8000 } }, createLogger('silent'), new Registry(), { kubeConfig: api.kubeConfig(), backoff: { initialMs: 10, maxMs: 100 } });
      source.start({ upsert() {}, remove() {} });
      await source.synced.catch(() => console.log('rejected'));
      await api.stop();
    `;
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: REPO_ROOT, timeout: 20_000 });
    assert.equal(stdout.trim(), 'rejected');
  });
});

describe('backoff', () => {
  it('doubles up to the cap, each delay jittered within [d/2, d], and starts over after reset', () => {
    const low = new Backoff({ initialMs: 100, maxMs: 1000 }, () => 0);
    assert.deepEqual(
      [1, 2, 3, 4, 5, 6].map(() => low.next()),
      [50, 100, 200, 400, 500, 500],
    );
    const high = new Backoff({ initialMs: 100, maxMs: 1000 }, () => 1);
    assert.deepEqual(
      [1, 2, 3, 4, 5].map(() => high.next()),
      [100, 200, 400, 800, 1000],
    );
    high.reset();
    assert.equal(high.next(), 100);
  });
});
