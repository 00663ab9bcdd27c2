import assert from 'node:assert/strict';
import { after, describe, it, type TestContext } from 'node:test';
import { Registry } from 'prom-client';
import type { KubernetesDiscoveryConfig } from '../src/config/config.js';
import { ConfigError } from '../src/config/errors.js';
import { createKubernetesDiscovery } from '../src/discovery/sources/kubernetes.js';
import type { KubernetesSourceOptions } from '../src/discovery/sources/kubernetes-pods.js';
import { ServiceEndpoints, serviceNameProblem } from '../src/discovery/sources/kubernetes-services.js';
import { createLogger } from '../src/log.js';
import { captureLogs } from './support/harness.js';
import { FakeKubeApiServer, type KubeObject, statusObject } from './support/kube-api-server.js';
import { pod, RecordingSink, slice } from './support/kube-fixtures.js';
import { until } from './support/wait.js';

const FAST: KubernetesSourceOptions = { backoff: { initialMs: 10, maxMs: 100 }, startupDeadlineMs: 3000 };
const CONFIG: KubernetesDiscoveryConfig = { namespace: 'default', labelSelector: 'llm-d.ai/role=decode', port: { number: 8000 } };

const unhandled: unknown[] = [];
process.on('unhandledRejection', (reason) => unhandled.push(reason));
after(() => assert.deepEqual(unhandled, [], 'no unhandled rejections'));

async function setup(t: TestContext, { slices = [], config = {} }: { slices?: KubeObject[]; config?: Partial<KubernetesDiscoveryConfig> } = {}) {
  const api = await FakeKubeApiServer.start();
  for (const s of slices) api.put('endpointslices', s);
  const logs = captureLogs();
  const services = new ServiceEndpoints({ ...CONFIG, ...config }, createLogger('info', logs.stream), new Registry(), { kubeConfig: api.kubeConfig(), ...FAST });
  t.after(async () => {
    await services.stop();
    await api.stop();
  });
  return { api, services, logs };
}

const sorted = (set: ReadonlySet<string> | undefined) => (set ? [...set].sort() : undefined);

describe('Service endpoints from EndpointSlices', () => {
  it('watches only the Services asked for, and answers their ready endpoints', async (t) => {
    const { api, services } = await setup(t, {
      slices: [slice('qwen-abc', 'qwen', [{ ip: '10.0.0.1' }, { ip: '10.0.0.2', ready: false }]), slice('llama-abc', 'llama', [{ ip: '10.0.1.1' }])],
    });
    services.watch('qwen');
    assert.deepEqual(services.lookup('qwen'), { kind: 'unknown', reason: 'the EndpointSlices of Service "qwen" have not been listed yet' });
    await services.synced('qwen');
    assert.deepEqual(sorted(services.addresses('qwen')), ['10.0.0.1:8000']);
    assert.equal(services.addresses('llama'), undefined);
    assert.deepEqual(services.lookup('llama'), { kind: 'unknown', reason: 'Service "llama" is not watched' });
    const asked = api.requests.filter((r) => r.path.endsWith('/endpointslices'));
    assert.ok(asked.length >= 2);
    assert.ok(
      asked.every(
        (r) => r.path === '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices' && r.query.labelSelector === 'kubernetes.io/service-name=qwen',
      ),
      'nothing but qwen',
    );
  });

  it('ready is conditions.ready !== false and not terminating; the answer is the union of the slices and follows their changes', async (t) => {
    const { api, services } = await setup(t, {
      slices: [
        slice('s-1', 'svc', [
          { ip: '10.1.0.1', ready: true },
          { ip: '10.1.0.2' },
          { ip: '10.1.0.3', ready: false },
          { ip: '10.1.0.4', ready: true, terminating: true },
        ]),
        slice('s-2', 'svc', [{ ip: '10.1.0.5' }]),
      ],
    });
    const changes: string[] = [];
    services.onChange((name) => changes.push(name));
    services.watch('svc');
    await services.synced('svc');
    assert.deepEqual(sorted(services.addresses('svc')), ['10.1.0.1:8000', '10.1.0.2:8000', '10.1.0.5:8000']);
    const before = services.addresses('svc');
    assert.equal(services.addresses('svc'), before, 'the same set object until something changes');

    api.put(
      'endpointslices',
      slice('s-1', 'svc', [
        { ip: '10.1.0.1', ready: false },
        { ip: '10.1.0.3', ready: true },
      ]),
    );
    await until(
      's-1 changed',
      () => sorted(services.addresses('svc'))?.join(' '),
      (a) => a === '10.1.0.3:8000 10.1.0.5:8000',
    );
    api.delete('endpointslices', 's-2');
    await until(
      's-2 gone',
      () => sorted(services.addresses('svc'))?.join(' '),
      (a) => a === '10.1.0.3:8000',
    );
    api.delete('endpointslices', 's-1');
    await until(
      'no slices left',
      () => services.addresses('svc')?.size,
      (n) => n === 0,
    );
    assert.deepEqual(services.lookup('svc'), { kind: 'known', addresses: new Set() }, 'known to be empty, not unknown');
    assert.ok(changes.filter((n) => n === 'svc').length >= 4);
  });

  it('the port: the slice port of the configured number or name, else its only port; none matching is logged once', async (t) => {
    const twoPorts = [
      { name: 'http', port: 8000 },
      { name: 'metrics', port: 9090 },
    ];
    const { api, services, logs } = await setup(t, {
      config: { port: { name: 'http' } },
      slices: [
        slice('by-name', 'a', [{ ip: '10.2.0.1' }], { ports: twoPorts }),
        slice('only', 'b', [{ ip: '10.2.0.2' }], { ports: [{ name: 'web', port: 8080 }] }),
        slice('none', 'c', [{ ip: '10.2.0.3' }], {
          ports: [
            { name: 'x', port: 1 },
            { name: 'y', port: 2 },
          ],
        }),
        slice('v6', 'd', [{ ip: 'fd00::5' }], { ports: twoPorts, addressType: 'IPv6' }),
      ],
    });
    for (const name of ['a', 'b', 'c', 'd']) services.watch(name);
    await Promise.all(['a', 'b', 'c', 'd'].map((name) => services.synced(name)));
    assert.deepEqual(sorted(services.addresses('a')), ['10.2.0.1:8000']);
    assert.deepEqual(sorted(services.addresses('b')), ['10.2.0.2:8080']);
    assert.deepEqual(sorted(services.addresses('c')), []);
    assert.deepEqual(sorted(services.addresses('d')), ['[fd00::5]:8000']);
    api.put(
      'endpointslices',
      slice('none', 'c', [{ ip: '10.2.0.4' }], {
        ports: [
          { name: 'x', port: 1 },
          { name: 'y', port: 2 },
        ],
      }),
    );
    api.put('endpointslices', slice('good', 'c', [{ ip: '10.2.0.5' }]));
    await until(
      'the second slice of c (so its first was seen again)',
      () => sorted(services.addresses('c'))?.join(),
      (a) => a === '10.2.0.5:8000',
    );
    const warnings = logs.lines.filter((l) => String(l.msg).includes('EndpointSlice "none" skipped: no port matches --k8s-port-name http (ports: x:1, y:2)'));
    assert.equal(warnings.length, 1);

    const numbered = await setup(t, { config: { port: { number: 9090 } }, slices: [slice('n', 'n', [{ ip: '10.2.1.1' }], { ports: twoPorts })] });
    numbered.services.watch('n');
    await numbered.services.synced('n');
    assert.deepEqual(sorted(numbered.services.addresses('n')), ['10.2.1.1:9090']);
  });

  it('unwatch is counted: the last one closes the watch and forgets the Service', async (t) => {
    const { api, services } = await setup(t, { slices: [slice('s', 'svc', [{ ip: '10.3.0.1' }])] });
    services.watch('svc');
    services.watch('svc');
    await services.synced('svc');
    await until(
      'watching',
      () => api.openWatches('endpointslices'),
      (n) => n === 1,
    );
    services.unwatch('svc');
    assert.deepEqual(sorted(services.addresses('svc')), ['10.3.0.1:8000'], 'still watched once');
    services.unwatch('svc');
    assert.equal(services.addresses('svc'), undefined);
    await until(
      'the watch is closed',
      () => api.openWatches('endpointslices'),
      (n) => n === 0,
    );
    assert.throws(() => services.watch('Not_A_Service'), /not a Service name/);
    assert.equal(serviceNameProblem('ms-llama-32-1b-llm-d-modelservice-decode'), undefined);
  });

  it('the watch survives an API server restart: stale meanwhile, addresses kept, then current', async (t) => {
    const { api, services } = await setup(t, { slices: [slice('s', 'svc', [{ ip: '10.4.0.1' }, { ip: '10.4.0.2' }])] });
    services.watch('svc');
    await services.synced('svc');
    await api.stop();
    await until(
      'stale',
      () => services.staleSince(),
      (d) => d !== undefined,
    );
    assert.deepEqual(sorted(services.addresses('svc')), ['10.4.0.1:8000', '10.4.0.2:8000']);
    api.put('endpointslices', slice('s', 'svc', [{ ip: '10.4.0.1' }]));
    await api.restart({ forgetHistory: true });
    await until(
      'reconciled',
      () => sorted(services.addresses('svc'))?.join(' '),
      (a) => a === '10.4.0.1:8000',
    );
    await until(
      'current',
      () => services.staleSince(),
      (d) => d === undefined,
    );
  });

  it('RBAC missing for endpointslices: synced rejects with the line, lookup says it, and it recovers once granted', async (t) => {
    const { api, services } = await setup(t, { slices: [slice('s', 'svc', [{ ip: '10.5.0.1' }])] });
    api.respond({ resource: 'endpointslices' }, { status: 403, body: statusObject(403, 'Forbidden', 'endpointslices.discovery.k8s.io is forbidden') });
    services.watch('svc');
    const err = await services.synced('svc').then(
      () => assert.fail('resolved'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ConfigError);
    assert.match(err.line, /to list endpointslices \(API group discovery\.k8s\.io\) in namespace "default"/);
    assert.match(err.line, /k8s\/rbac\.yaml/);
    const answer = services.lookup('svc');
    assert.equal(answer.kind, 'unknown');
    assert.equal(answer.kind === 'unknown' && answer.reason, err.line);
    api.clearResponses();
    await until(
      'known once allowed',
      () => sorted(services.addresses('svc'))?.join(),
      (a) => a === '10.5.0.1:8000',
      { timeoutMs: 10_000 },
    );
  });

  it('an API server before 1.21 (no discovery.k8s.io/v1): logged once, lookups say why, pod discovery unaffected', async (t) => {
    const api = await FakeKubeApiServer.start();
    t.after(() => api.stop());
    api.discoveryV1 = false;
    api.put('pods', pod('p', { ip: '10.6.0.1' }));
    const logs = captureLogs();
    const { pods, services } = createKubernetesDiscovery(CONFIG, createLogger('info', logs.stream), new Registry(), { kubeConfig: api.kubeConfig(), ...FAST });
    t.after(async () => {
      await pods.stop();
      await services.stop();
    });
    const sink = new RecordingSink();
    pods.start(sink);
    services.watch('a');
    services.watch('b');
    await Promise.all([pods.synced, services.synced('a'), services.synced('b')]);
    assert.deepEqual(sink.addresses(), ['10.6.0.1:8000']);
    for (const name of ['a', 'b']) {
      const answer = services.lookup(name);
      assert.equal(answer.kind, 'unknown');
      assert.match(answer.kind === 'unknown' ? answer.reason : '', /does not serve discovery\.k8s\.io\/v1 \(Kubernetes before 1\.21\)/);
    }
    assert.equal(logs.lines.filter((l) => String(l.msg).includes('does not serve discovery.k8s.io/v1')).length, 1);
    assert.equal(api.requests.filter((r) => r.path.endsWith('/endpointslices')).length, 0, 'no list was even tried');
    assert.equal(api.requests.filter((r) => r.path.startsWith('/apis/discovery.k8s.io/v1')).length, 1, 'asked once');
  });
});
