import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Service } from '../src/app/service.js';
import { type Simulator, startSimulator } from '../src/simulator/simulator.js';
import type { EnvoyDouble } from './support/envoy/envoy-double.js';
import { chatBody, JSON_HEADERS, LLAMA, QWEN, startBehindEnvoy } from './support/harness.js';
import { FakeKubeApiServer } from './support/kube-api-server.js';
import { DECODE, pod, slice } from './support/kube-fixtures.js';
import { until } from './support/wait.js';

const NAMESPACE = 'llm';
const HOSTS = ['127.0.0.51', '127.0.0.52', '127.0.0.53'];

/**
 * The real llm-extproc with --service-discovery=k8s against a fake API server, simulated pods on
 * their own loopback addresses (the pod IPs), and the Envoy double in front.
 */
describe('Kubernetes discovery under live traffic, through Envoy', () => {
  let api: FakeKubeApiServer;
  let sims: Simulator[];
  let service: Service;
  let envoy: EnvoyDouble;

  /** The pod object of simulator `i`: its IP, its port named http, Ready unless told otherwise. */
  const podOf = (i: number, ready = true) =>
    pod(`decode-${i}`, {
      ip: sims[i]!.host,
      ready,
      labels: { ...DECODE, 'llm-d.ai/engine-type': 'vllm' },
      ports: [{ name: 'http', containerPort: sims[i]!.port }],
    });
  /** Service llama-decode's EndpointSlice, listing simulator `i` only. */
  const llamaSlice = (i: number) => slice('llama-decode-abc', 'llama-decode', [{ ip: sims[i]!.host }], { ports: [{ name: 'http', port: sims[i]!.port }] });
  const chat = (body = chatBody({ model: QWEN })) => envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body });
  const known = () =>
    service.endpoints
      .all()
      .map((endpoint) => endpoint.address)
      .sort();
  const ready = async () => (await fetch(`http://127.0.0.1:${service.adminPort}/ready`)).json() as Promise<{ status: string; discovery?: string }>;

  before(async () => {
    api = await FakeKubeApiServer.start();
    sims = [];
    for (const host of HOSTS) sims.push(await startSimulator({ engine: 'vllm', models: [QWEN, LLAMA], host, port: 0, timeToFirstTokenMs: 1, interTokenMs: 1 }));
    api.put('pods', podOf(0), NAMESPACE);
    api.put('pods', podOf(1), NAMESPACE);
    api.put('endpointslices', llamaSlice(1), NAMESPACE);
    const dir = await mkdtemp(join(tmpdir(), 'k8s-e2e-'));
    await writeFile(join(dir, 'routes.json'), JSON.stringify({ mappings: [{ model: LLAMA, owned_by: 'vllm', service_name: 'llama-decode' }] }));
    ({ service, envoy } = await startBehindEnvoy(
      ['--service-discovery=k8s', `--k8s-namespace=${NAMESPACE}`, '--k8s-port-name=http', `--route-config=${join(dir, 'routes.json')}`],
      { kubernetes: { kubeConfig: api.kubeConfig(), backoff: { initialMs: 20, maxMs: 100 } } },
    ));
  });
  after(async () => {
    await envoy.close();
    await service.stop();
    await api.stop();
    await Promise.all(sims.map((sim) => sim.close()));
  });

  it('the ready pods of the namespace are the backends, found by the label selector and named port', async () => {
    assert.deepEqual(known(), [sims[0]!.address, sims[1]!.address].sort());
    const served = new Set<string>();
    for (let i = 0; i < 12; i++) served.add((await chat()).upstream!);
    assert.deepEqual([...served].sort(), known());
  });

  it('a new pod joins, is probed at once and takes traffic; NotReady takes it out before any probe', async () => {
    api.put('pods', podOf(2), NAMESPACE);
    await until('the new pod is usable', () => service.endpoints.get(sims[2]!.address)?.usable, Boolean);
    const served = new Set<string>();
    for (let i = 0; i < 24 && !served.has(sims[2]!.address); i++) served.add((await chat()).upstream!);
    assert.ok(served.has(sims[2]!.address), 'the new pod served');

    api.put('pods', podOf(2, false), NAMESPACE);
    await until('the NotReady pod has left', known, (addresses) => !addresses.includes(sims[2]!.address));
    for (let i = 0; i < 12; i++) assert.notEqual((await chat()).upstream, sims[2]!.address);
  });

  it('in-flight counts stay exact when a pod with a request running flaps NotReady → Ready', async () => {
    api.put('pods', podOf(2), NAMESPACE);
    await until('pod 2 back and usable', () => service.endpoints.get(sims[2]!.address)?.usable, Boolean);
    // Pin the long request to pod 2: the others are NotReady for a moment.
    api.put('pods', podOf(0, false), NAMESPACE);
    api.put('pods', podOf(1, false), NAMESPACE);
    await until('only pod 2 left', known, (addresses) => addresses.length === 1);
    const long = await envoy.open({
      method: 'POST',
      path: '/v1/chat/completions',
      headers: JSON_HEADERS,
      body: JSON.stringify({ model: QWEN, stream: true, max_tokens: 30_000, messages: [{ role: 'user', content: 'long' }] }),
    });
    const forwarded = long.forward();
    const endpoint = service.endpoints.get(sims[2]!.address)!;
    await until(
      'the long request running on pod 2',
      () => sims[2]!.stats().running,
      (n) => n === 1,
    );
    assert.equal(endpoint.inFlight, 1);

    api.put('pods', podOf(2, false), NAMESPACE);
    await until('pod 2 gone', known, (addresses) => addresses.length === 0);
    assert.equal(service.endpoints.departedCount, 1, 'parked while its request runs');
    api.put('pods', podOf(2), NAMESPACE);
    await until('pod 2 back', known, (addresses) => addresses.length === 1);
    assert.equal(service.endpoints.get(sims[2]!.address), endpoint, 'the same Endpoint object came back');
    assert.equal(endpoint.inFlight, 1, 'still counting the request that never stopped');

    await long.abort();
    await forwarded.catch(() => undefined);
    await until(
      'the request released',
      () => endpoint.inFlight,
      (n) => n === 0,
    );
    api.put('pods', podOf(0), NAMESPACE);
    api.put('pods', podOf(1), NAMESPACE);
    await until('all three pods back', known, (addresses) => addresses.length === 3);
    assert.equal(service.endpoints.departedCount, 0);
    // Control: with the registry handing out a new object on return, this test fails (checked).
  });

  it('a model mapped to a Service goes only to the pods in its EndpointSlices, and follows them', async () => {
    for (const sim of sims) await until(`${sim.address} usable`, () => service.endpoints.get(sim.address)?.usable, Boolean);
    const llama = () => chat(chatBody({ model: LLAMA, owned_by: 'vllm' }));
    for (let i = 0; i < 8; i++) assert.equal((await llama()).upstream, sims[1]!.address);
    const qwen = new Set<string>();
    for (let i = 0; i < 24 && qwen.size < 3; i++) qwen.add((await chat()).upstream!);
    assert.equal(qwen.size, 3, 'an unmapped model uses every pod');

    api.put('endpointslices', llamaSlice(0), NAMESPACE);
    await until(
      'the slice change is seen',
      async () => (await llama()).upstream,
      (upstream) => upstream === sims[0]!.address,
    );
    for (let i = 0; i < 8; i++) assert.equal((await llama()).upstream, sims[0]!.address);
  });

  it('the API server going away keeps the last backends serving; /ready notes it; it recovers', async () => {
    await api.stop();
    await until('discovery reported stale', ready, (body) => body.discovery !== undefined);
    const body = await ready();
    assert.equal(body.status, 'ready');
    assert.match(body.discovery!, /^stale since \d{4}-\d\d-\d\dT/);
    const metrics = await (await fetch(`http://127.0.0.1:${service.adminPort}/metrics`)).text();
    assert.match(metrics, /^llm_extproc_discovery_stale_seconds [0-9.e-]+$/m);
    assert.doesNotMatch(metrics, /^llm_extproc_discovery_stale_seconds 0$/m);
    for (let i = 0; i < 6; i++) assert.equal((await chat()).status, 200);
    await api.restart();
    await until('discovery current again', ready, (again) => again.discovery === undefined, { timeoutMs: 10_000 });
    assert.equal(known().length, 3);
  });
});
