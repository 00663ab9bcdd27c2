import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Cluster, captureLogs, chatBody, JSON_HEADERS, LLAMA, QWEN, startCluster } from './support/harness.js';

/** Which engine's pod served the request, checked three ways that must agree. */
function servedBy(cluster: Cluster, response: { status: number; headers: Record<string, unknown>; upstream?: string }) {
  assert.equal(response.status, 200, `expected 200, got ${response.status}`);
  const routedTo = response.headers['x-routed-to'];
  assert.equal(routedTo, response.upstream, 'x-routed-to names the upstream Envoy used');
  const pod = cluster.podByAddress(response.upstream);
  assert.ok(pod, `upstream ${response.upstream} is one of the pods`);
  assert.equal(response.headers['x-simulator-engine'], pod.engine);
  return pod;
}

describe('routing through Envoy (BUFFERED)', () => {
  let cluster: Cluster;
  const logs = captureLogs();
  before(async () => {
    cluster = await startCluster({ logs: logs.stream });
  });
  after(async () => cluster.close());

  const post = (body: string, headers: Record<string, string> = {}, path = '/v1/chat/completions') =>
    cluster.envoy.request({ method: 'POST', path, headers: { ...JSON_HEADERS, ...headers }, body });

  it('owned_by in the body picks that engine, every time', async () => {
    for (const engine of ['sglang', 'vllm', 'sglang', 'vllm']) {
      const pod = servedBy(cluster, await post(chatBody({ model: QWEN, owned_by: engine })));
      assert.equal(pod.engine, engine);
    }
  });

  it('legacy body fields engine and inference_server select the engine', async () => {
    assert.equal(servedBy(cluster, await post(chatBody({ model: QWEN, engine: 'sglang' }))).engine, 'sglang');
    assert.equal(servedBy(cluster, await post(chatBody({ model: QWEN, inference_server: 'vllm' }))).engine, 'vllm');
  });

  it('header x-owned-by and query ?owned_by= select the engine', async () => {
    assert.equal(servedBy(cluster, await post(chatBody({ model: QWEN }), { 'x-owned-by': 'sglang' })).engine, 'sglang');
    assert.equal(servedBy(cluster, await post(chatBody({ model: QWEN }), {}, '/v1/chat/completions?owned_by=vllm')).engine, 'vllm');
  });

  it('the body beats the header, which beats the query', async () => {
    const response = await post(chatBody({ model: QWEN, owned_by: 'vllm' }), { 'x-owned-by': 'sglang' }, '/v1/chat/completions?owned_by=sglang');
    assert.equal(servedBy(cluster, response).engine, 'vllm');
    assert.equal(servedBy(cluster, await post(chatBody({ model: QWEN }), { 'x-owned-by': 'vllm' }, '/v1/chat/completions?owned_by=sglang')).engine, 'vllm');
  });

  it('model-only routing uses every engine serving the model', async () => {
    const engines = new Set<string>();
    for (let i = 0; i < 24 && engines.size < 2; i++) engines.add(servedBy(cluster, await post(chatBody({ model: QWEN }))).engine);
    assert.deepEqual([...engines].sort(), ['sglang', 'vllm']);
    assert.equal(servedBy(cluster, await post(chatBody({ model: LLAMA }))).address, cluster.pods[0]!.address);
  });

  it('overwrites a destination header sent by the client', async () => {
    const response = await post(chatBody({ model: LLAMA }), { 'x-gateway-destination-endpoint': '127.0.0.99:1' });
    assert.equal(servedBy(cluster, response).address, cluster.pods[0]!.address);
    assert.equal(response.requestHeadersSentUpstream?.['x-gateway-destination-endpoint'], cluster.pods[0]!.address);
  });

  it('sets the envoy.lb dynamic metadata to the same destination', async () => {
    const response = await post(chatBody({ model: LLAMA }));
    assert.deepEqual(response.dynamicMetadata?.['envoy.lb'], { 'x-gateway-destination-endpoint': cluster.pods[0]!.address });
  });

  it('streams SSE answers through and releases the request when the stream ends', async () => {
    const response = await post(chatBody({ model: QWEN, owned_by: 'sglang', stream: true, max_tokens: 5 }));
    servedBy(cluster, response);
    assert.match(response.body.toString(), /data: \[DONE\]/);
    await cluster.settled();
  });

  it('GET /v1/models aggregates every (model, owned_by) without touching a backend', async () => {
    const response = await cluster.envoy.request({ method: 'GET', path: '/v1/models' });
    assert.equal(response.status, 200);
    assert.equal(response.localReply, true);
    const list = JSON.parse(response.body.toString()) as { object: string; data: { id: string; owned_by: string; object: string }[] };
    assert.equal(list.object, 'list');
    assert.deepEqual(
      list.data.map((m) => `${m.id}|${m.owned_by}`),
      [`${LLAMA}|vllm`, `${QWEN}|sglang`, `${QWEN}|vllm`],
    );
    assert.ok(list.data.every((m) => m.object === 'model'));
    const one = await cluster.envoy.request({ method: 'GET', path: `/v1/models/${LLAMA}` });
    assert.equal(JSON.parse(one.body.toString()).id, LLAMA);
  });

  describe('errors are immediate OpenAI-style answers', () => {
    const expectError = async (
      response: { status: number; body: Buffer; localReply: boolean; headers: Record<string, unknown> },
      status: number,
      code: string,
    ) => {
      assert.equal(response.status, status);
      assert.equal(response.localReply, true);
      assert.equal(response.headers['content-type'], 'application/json');
      const { error } = JSON.parse(response.body.toString()) as { error: { message: string; type: string; code: string } };
      assert.equal(error.code, code);
      assert.ok(error.message.length > 10 && typeof error.type === 'string');
      return error;
    };
    it('malformed JSON is 400', async () => {
      await expectError(await post('{"model": "x",'), 400, 'invalid_json');
    });
    it('a missing model is 400', async () => {
      await expectError(await post(JSON.stringify({ messages: [] })), 400, 'missing_model');
    });
    it('an unknown model is 404', async () => {
      await expectError(await post(chatBody({ model: 'gpt-9' })), 404, 'model_not_found');
    });
    it('a known model on an engine that does not serve it is 404 naming who does', async () => {
      const error = await expectError(await post(chatBody({ model: LLAMA, owned_by: 'sglang' })), 404, 'model_not_found');
      assert.match(error.message, /vllm/);
    });
    it('counters stay at zero after errors', async () => cluster.settled());
    it('requests are counted by outcome, and unknown models or engines never become label values', async () => {
      await post(chatBody({ model: QWEN, owned_by: 'made-up-engine' }));
      const text = await cluster.service.metrics.registry.metrics();
      const value = (labels: string) => Number(new RegExp(`llm_extproc_requests_total\\{${labels}\\} (\\d+)`).exec(text)?.[1] ?? 0);
      assert.ok(value(`outcome="routed",status="200",model="${LLAMA}",owned_by=""`) >= 1);
      assert.ok(value(`outcome="routed",status="200",model="${QWEN}",owned_by="sglang"`) >= 1);
      assert.ok(value('outcome="model_not_found",status="404",model="",owned_by=""') >= 1);
      assert.ok(value(`outcome="model_not_found",status="404",model="${LLAMA}",owned_by="sglang"`) >= 1);
      assert.ok(value(`outcome="model_not_found",status="404",model="${QWEN}",owned_by=""`) >= 1);
      assert.doesNotMatch(text, /gpt-9|made-up-engine/);
    });
    it('each refusal is logged as JSON with the x-request-id and the reason', async () => {
      await post(chatBody({ model: 'gpt-9' }), { 'x-request-id': 'trace-me-404' });
      const line = logs.lines.find((entry) => entry.requestId === 'trace-me-404');
      assert.ok(line, 'a log line carries the request id');
      assert.equal(line.code, 'model_not_found');
      assert.equal(line.status, 404);
      assert.match(String(line.msg), /gpt-9/);
    });
  });
});

describe('route config, body limit and unhealthy backends', () => {
  let cluster: Cluster;
  before(async () => {
    const dir = await mkdtemp(join(tmpdir(), 'llm-extproc-routes-'));
    const routes = join(dir, 'routes.json');
    await writeFile(
      routes,
      JSON.stringify([
        { name: 'chat-route', model: QWEN, path_prefix: '/v1/chat' },
        { name: 'completion-route', model: LLAMA, path_prefix: '/v1/completions' },
        { name: 'sglang-only', model: QWEN, path_prefix: '/sglang/', owned_by: 'sglang' },
      ]),
    );
    cluster = await startCluster({ flags: [`--route-config=${routes}`, '--max-body-size=1MiB', '--grpc-max-receive-size=8MiB'] });
  });
  after(async () => cluster.close());

  it('a route gives the model when the body names none', async () => {
    const response = await cluster.envoy.request({ method: 'POST', path: '/v1/completions', headers: JSON_HEADERS, body: JSON.stringify({ prompt: 'hi' }) });
    servedBy(cluster, response);
    assert.equal(response.upstream, cluster.pods[0]!.address);
  });

  it('a route can pin the engine', async () => {
    for (let i = 0; i < 4; i++) {
      const response = await cluster.envoy.request({
        method: 'POST',
        path: '/sglang/v1/chat/completions',
        headers: JSON_HEADERS,
        body: JSON.stringify({ messages: [] }),
      });
      assert.equal(cluster.podByAddress(response.upstream)?.engine, 'sglang');
    }
  });

  it('a body over --max-body-size is 413 from llm-extproc', async () => {
    const body = chatBody({ model: QWEN, padding: 'x'.repeat(1024 * 1024) });
    const response = await cluster.envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body });
    assert.equal(response.status, 413);
    assert.equal(JSON.parse(response.body.toString()).error.code, 'request_too_large');
  });

  it('a model whose backends are all unhealthy is 503; healthy ones keep serving', async () => {
    const [, , sglangA, sglangB] = cluster.pods;
    sglangA!.setHealthy(false);
    sglangB!.setHealthy(false);
    await cluster.service.prober.probeAll();
    await cluster.service.prober.probeAll();
    const response = await cluster.envoy.request({
      method: 'POST',
      path: '/v1/chat/completions',
      headers: JSON_HEADERS,
      body: chatBody({ model: QWEN, owned_by: 'sglang' }),
    });
    assert.equal(response.status, 503);
    assert.equal(JSON.parse(response.body.toString()).error.code, 'no_healthy_backend');
    const ready = (await (await fetch(`http://127.0.0.1:${cluster.service.adminPort}/ready`)).json()) as {
      healthy_endpoints: number;
      unhealthy: { endpoint: string; error: string }[];
    };
    assert.equal(ready.healthy_endpoints, 2);
    assert.deepEqual(ready.unhealthy.map((u) => u.endpoint).sort(), [sglangA!.address, sglangB!.address].sort());
    assert.match(ready.unhealthy[0]!.error, /503/, '/ready says why a backend is out of rotation');
    for (let i = 0; i < 4; i++) {
      const ok = await cluster.envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody({ model: QWEN }) });
      assert.equal(cluster.podByAddress(ok.upstream)?.engine, 'vllm', 'model-only routing avoids unhealthy pods');
    }
    sglangA!.setHealthy(true);
    await cluster.service.prober.probeAll();
    const back = await cluster.envoy.request({
      method: 'POST',
      path: '/v1/chat/completions',
      headers: JSON_HEADERS,
      body: chatBody({ model: QWEN, owned_by: 'sglang' }),
    });
    assert.equal(back.upstream, sglangA!.address);
  });
});
