import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Service } from '../src/app/service.js';
import { type Simulator, startSimulator } from '../src/simulator/simulator.js';
import type { EnvoyDouble } from './support/envoy/envoy-double.js';
import { chatBody, JSON_HEADERS, QWEN, startBehindEnvoy } from './support/harness.js';
import { FakeKubeApiServer } from './support/kube-api-server.js';
import { DECODE, pod, slice } from './support/kube-fixtures.js';
import { until } from './support/wait.js';

const NAMESPACE = 'llm';
const routesFile = (serviceName?: string) =>
  JSON.stringify({ routes: [], mappings: serviceName ? [{ model: QWEN, owned_by: 'vllm', service_name: serviceName }] : [] });

/** With k8s discovery, a reload that changes a mapping's Service moves the EndpointSlice watch with it. */
describe("a reload applies the route file's mappings (Kubernetes Services)", () => {
  let api: FakeKubeApiServer;
  let sims: Simulator[];
  let service: Service;
  let envoy: EnvoyDouble;
  let file: string;

  const served = async (n = 8) => {
    const seen = new Set<number>();
    for (let i = 0; i < n; i++) {
      const response = await envoy.request({
        method: 'POST',
        path: '/v1/chat/completions',
        headers: JSON_HEADERS,
        body: chatBody({ model: QWEN, owned_by: 'vllm' }),
      });
      if (response.status !== 200) return response.status;
      seen.add(sims.findIndex((sim) => sim.address === response.upstream));
    }
    return [...seen].sort();
  };
  /** Reloads now; the file watcher may have applied the change already. */
  const reloaded = async () => assert.ok(['applied', 'unchanged'].includes(await service.reload()));

  before(async () => {
    api = await FakeKubeApiServer.start();
    sims = [];
    for (const host of ['127.0.0.96', '127.0.0.97'])
      sims.push(await startSimulator({ engine: 'vllm', models: [QWEN], host, port: 0, timeToFirstTokenMs: 1, interTokenMs: 1 }));
    for (const [index, sim] of sims.entries()) {
      api.put('pods', pod(`qwen-${index}`, { ip: sim.host, labels: DECODE, ports: [{ name: 'http', containerPort: sim.port }] }), NAMESPACE);
      api.put('endpointslices', slice(`svc-${index}-x1`, `svc-${index}`, [{ ip: sim.host }], { ports: [{ name: 'http', port: sim.port }] }), NAMESPACE);
    }
    file = join(await mkdtemp(join(tmpdir(), 'llm-extproc-k8s-mappings-')), 'routes.json');
    await writeFile(file, routesFile('svc-0'));
    ({ service, envoy } = await startBehindEnvoy(
      ['--service-discovery=k8s', `--k8s-namespace=${NAMESPACE}`, '--k8s-port-name=http', `--route-config=${file}`],
      {
        kubernetes: { kubeConfig: api.kubeConfig(), backoff: { initialMs: 20, maxMs: 100 } },
      },
    ));
  });
  after(async () => {
    await envoy.close();
    await service.stop();
    await api.stop();
    await Promise.all(sims.map((sim) => sim.close()));
  });

  it('control: the starting mapping pins to svc-0, whose slices are watched', async () => {
    assert.deepEqual(await served(), [0]);
    assert.equal(api.openWatches('endpointslices'), 1);
  });

  it('a mapping moved to svc-1 pins there; the watch follows', async () => {
    await writeFile(file, routesFile('svc-1'));
    await reloaded();
    assert.deepEqual(await served(), [1]);
    await until(
      'one EndpointSlice watch (svc-1 only)',
      () => api.openWatches('endpointslices'),
      (n) => n === 1,
    );
  });

  it('a Service that does not exist yet is accepted (logged); its requests answer 503 until it does', async () => {
    await writeFile(file, routesFile('svc-later'));
    await reloaded();
    assert.equal(await served(1), 503);
    api.put('endpointslices', slice('svc-later-x1', 'svc-later', [{ ip: sims[0]!.host }], { ports: [{ name: 'http', port: sims[0]!.port }] }), NAMESPACE);
    await until(
      'the new Service to serve',
      () => served(1),
      (result) => Array.isArray(result) && result[0] === 0,
    );
  });

  it('no mapping left: no watch, both pods serve', async () => {
    await writeFile(file, routesFile());
    await reloaded();
    await until(
      'no EndpointSlice watch',
      () => api.openWatches('endpointslices'),
      (n) => n === 0,
    );
    const held = [];
    for (let i = 0; i < 2; i++)
      held.push(await envoy.open({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody({ model: QWEN, owned_by: 'vllm' }) }));
    assert.deepEqual(held.map((exchange) => exchange.upstream).sort(), sims.map((sim) => sim.address).sort());
    await Promise.all(held.map((exchange) => exchange.finish()));
  });
});
