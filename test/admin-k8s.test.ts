import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Service } from '../src/app/service.js';
import { workloadName } from '../src/discovery/sources/kubernetes-pods.js';
import { type Simulator, startSimulator } from '../src/simulator/simulator.js';
import type { EnvoyDouble } from './support/envoy/envoy-double.js';
import { chatBody, JSON_HEADERS, LLAMA, QWEN, startBehindEnvoy } from './support/harness.js';
import { FakeKubeApiServer, type KubeObject } from './support/kube-api-server.js';
import { DECODE, pod, slice } from './support/kube-fixtures.js';
import { until } from './support/wait.js';

const NAMESPACE = 'llm';
const TOKEN = 'k8s-admin-token';

type Owner = { kind: string; name: string } | undefined;

/** A Ready pod of simulator `sim` with its named port, owned by `owner` (as its controller). */
function podOf(name: string, sim: Simulator, owner: Owner, labels: Record<string, string> = {}): KubeObject {
  const object = pod(name, { ip: sim.host, labels: { ...DECODE, ...labels }, ports: [{ name: 'http', containerPort: sim.port }] });
  const ownerReferences = owner ? [{ apiVersion: 'apps/v1', kind: owner.kind, name: owner.name, uid: `uid-${owner.name}`, controller: true }] : undefined;
  return { ...object, metadata: { ...object.metadata, ...(ownerReferences ? { ownerReferences } : {}) } };
}

/**
 * The admin API with --service-discovery=k8s: service_name is a Service resolved through its
 * EndpointSlices, watched while mapped; /admin/discover groups pods by their workload.
 */
describe('admin API (Kubernetes discovery)', () => {
  let api: FakeKubeApiServer;
  let sims: Simulator[];
  let service: Service;
  let envoy: EnvoyDouble;
  const admin = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(`http://127.0.0.1:${service.adminPort}${path}`, {
      method,
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, text, json: JSON.parse(text) as Record<string, unknown> };
  };
  const served = async (fields: Record<string, unknown>, n = 16) => {
    const seen = new Set<string>();
    for (let i = 0; i < n; i++) {
      const response = await envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody(fields) });
      assert.equal(response.status, 200, response.body.toString());
      seen.add(response.upstream!);
    }
    return [...seen].sort();
  };

  before(async () => {
    api = await FakeKubeApiServer.start();
    sims = [];
    for (const [host, engine, models] of [
      ['127.0.0.91', 'vllm', [QWEN]],
      ['127.0.0.92', 'vllm', [QWEN]],
      ['127.0.0.93', 'sglang', [QWEN]],
      ['127.0.0.94', 'vllm', [QWEN, LLAMA]],
    ] as const) {
      sims.push(await startSimulator({ engine, models: [...models], host, port: 0, timeToFirstTokenMs: 1, interTokenMs: 1 }));
    }
    const deployment = { kind: 'ReplicaSet', name: 'qwen-vllm-7d9f8c' };
    api.put('pods', podOf('qwen-vllm-7d9f8c-abcde', sims[0]!, deployment, { 'pod-template-hash': '7d9f8c' }), NAMESPACE);
    api.put('pods', podOf('qwen-vllm-7d9f8c-fghij', sims[1]!, deployment, { 'pod-template-hash': '7d9f8c' }), NAMESPACE);
    api.put('pods', podOf('qwen-sglang-0', sims[2]!, { kind: 'StatefulSet', name: 'qwen-sglang' }), NAMESPACE);
    api.put('pods', podOf('lonely', sims[3]!, undefined), NAMESPACE);
    api.put('endpointslices', slice('qwen-pinned-x1', 'qwen-pinned', [{ ip: sims[1]!.host }], { ports: [{ name: 'http', port: sims[1]!.port }] }), NAMESPACE);
    ({ service, envoy } = await startBehindEnvoy(['--service-discovery=k8s', `--k8s-namespace=${NAMESPACE}`, '--k8s-port-name=http'], {
      kubernetes: { kubeConfig: api.kubeConfig(), backoff: { initialMs: 20, maxMs: 100 } },
      env: { LLM_EXTPROC_ADMIN_TOKEN: TOKEN },
    }));
  });
  after(async () => {
    await envoy.close();
    await service.stop();
    await api.stop();
    await Promise.all(sims.map((sim) => sim.close()));
  });

  it('POST pins (model, owned_by) to the ready endpoints of the Service, watched from then on; DELETE un-pins and stops the watch', async () => {
    const vllmPods = [sims[0]!.address, sims[1]!.address, sims[3]!.address].sort();
    assert.deepEqual(await served({ model: QWEN, owned_by: 'vllm' }), vllmPods);
    assert.equal(api.openWatches('endpointslices'), 0, 'nothing mapped, nothing watched');

    const mapping = { model: QWEN, owned_by: 'vllm', service_name: 'qwen-pinned' };
    const added = await admin('POST', '/admin/api/routing', mapping);
    assert.equal(added.status, 201, added.text);
    assert.deepEqual(await served({ model: QWEN, owned_by: 'vllm' }), [sims[1]!.address]);
    await until(
      'the Service is watched',
      () => api.openWatches('endpointslices'),
      (n) => n === 1,
    );

    // The slice follows the Service: the pin follows the slice.
    api.put('endpointslices', slice('qwen-pinned-x1', 'qwen-pinned', [{ ip: sims[0]!.host }], { ports: [{ name: 'http', port: sims[0]!.port }] }), NAMESPACE);
    await until(
      'the pin moved to pod 0',
      () => served({ model: QWEN, owned_by: 'vllm' }, 4),
      (seen) => seen.join() === sims[0]!.address,
    );

    const deleted = await admin('DELETE', `/admin/api/routing?model=${encodeURIComponent(QWEN)}&owned_by=vllm`);
    assert.equal(deleted.status, 200, deleted.text);
    assert.deepEqual(await served({ model: QWEN, owned_by: 'vllm' }, 24), vllmPods);
    await until(
      'the watch is closed',
      () => api.openWatches('endpointslices'),
      (n) => n === 0,
    );
  });

  it('a Service that has no EndpointSlice is a 400 naming it, and is not left watched', async () => {
    const answer = await admin('POST', '/admin/api/routing', { model: QWEN, owned_by: 'sglang', service_name: 'no-such-svc' });
    assert.equal(answer.status, 400, answer.text);
    const error = (answer.json as { error: { code: string; message: string } }).error;
    assert.equal(error.code, 'unknown_service');
    assert.match(error.message, /no Service "no-such-svc" in namespace "llm"/);
    assert.ok(
      api.requests.some((r) => r.path.endsWith('/endpointslices') && r.query.labelSelector === 'kubernetes.io/service-name=no-such-svc'),
      'its EndpointSlices were listed',
    );
    await until(
      'no watch left',
      () => api.openWatches('endpointslices'),
      (n) => n === 0,
    );
    const listed = (await admin('GET', '/admin/api/routing')).json.mappings as { source: string }[];
    assert.equal(listed.filter((m) => m.source === 'admin').length, 0);
  });

  it("POST /admin/discover answers each (model, owned_by) with the workload serving it, seed 003's shape", async () => {
    const answer = await admin('POST', '/admin/discover');
    assert.equal(answer.status, 200, answer.text);
    assert.deepEqual(answer.json, {
      message: 'Service discovery completed',
      discovered: 3,
      services: {
        [`${LLAMA}::vllm`]: 'lonely',
        [`${QWEN}::sglang`]: 'qwen-sglang',
        [`${QWEN}::vllm`]: 'lonely,qwen-vllm',
      },
    });
    const endpoints = (await admin('GET', '/admin/api/endpoints')).json.endpoints as { name: string; group: string }[];
    assert.deepEqual(Object.fromEntries(endpoints.map((e) => [e.name, e.group])), {
      'qwen-vllm-7d9f8c-abcde': 'qwen-vllm',
      'qwen-vllm-7d9f8c-fghij': 'qwen-vllm',
      'qwen-sglang-0': 'qwen-sglang',
      lonely: 'lonely',
    });
  });

  it('the workload of a pod: Deployment (ReplicaSet less its hash), other controller, first owner, the pod itself', () => {
    const named = (owners: { kind: string; name: string; controller?: boolean }[] | undefined, labels: Record<string, string> = {}) =>
      workloadName({
        metadata: { name: 'the-pod', labels, ...(owners ? { ownerReferences: owners.map((o) => ({ apiVersion: 'v1', uid: 'u', ...o })) } : {}) },
      });
    assert.equal(named([{ kind: 'ReplicaSet', name: 'web-5d8f', controller: true }], { 'pod-template-hash': '5d8f' }), 'web');
    assert.equal(named([{ kind: 'ReplicaSet', name: 'bare-rs', controller: true }], { 'pod-template-hash': '5d8f' }), 'bare-rs', 'a bare ReplicaSet');
    assert.equal(named([{ kind: 'StatefulSet', name: 'db', controller: true }]), 'db');
    assert.equal(
      named([
        { kind: 'Thing', name: 'not-controller' },
        { kind: 'LeaderWorkerSet', name: 'lws', controller: true },
      ]),
      'lws',
    );
    assert.equal(named([{ kind: 'Thing', name: 'first' }]), 'first');
    assert.equal(named(undefined), 'the-pod');
  });
});
