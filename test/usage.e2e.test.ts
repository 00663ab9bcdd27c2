import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import type { EnvoyResponse } from './support/envoy/envoy-double.js';
import { type Cluster, chatBody, JSON_HEADERS, QWEN, startCluster, withCluster } from './support/harness.js';

type Usage = { prompt_tokens: number; completion_tokens: number };

/** The usage the client saw: a JSON answer's, or the last SSE event's that has one. */
function usageSeen(response: EnvoyResponse): Usage | undefined {
  const text = response.body.toString();
  if (!String(response.headers['content-type']).startsWith('text/event-stream')) return JSON.parse(text).usage;
  const events = text
    .split('\n\n')
    .filter((e) => e.startsWith('data: {'))
    .map((e) => JSON.parse(e.slice('data: '.length)) as { usage?: Usage | null });
  return events.findLast((e) => e.usage)?.usage ?? undefined;
}

/** llm_extproc_tokens_total and llm_extproc_usage_missing_total for QWEN on vLLM. */
async function counted(cluster: Cluster): Promise<{ prompt: number; completion: number; missing: number; series: number }> {
  const { metrics } = cluster.service;
  const tokens = (await metrics.tokens.get()).values;
  const value = (kind: string) => tokens.find((v) => v.labels.kind === kind && v.labels.model === QWEN && v.labels.owned_by === 'vllm')?.value ?? 0;
  const missing = (await metrics.usageMissing.get()).values.find((v) => v.labels.model === QWEN && v.labels.owned_by === 'vllm')?.value ?? 0;
  return { prompt: value('prompt'), completion: value('completion'), missing, series: tokens.length };
}

const request = (fields: Record<string, unknown> = {}) => ({
  method: 'POST',
  path: '/v1/chat/completions',
  headers: JSON_HEADERS,
  body: chatBody({ model: QWEN, owned_by: 'vllm', ...fields }),
});
const chat = (cluster: Cluster, fields: Record<string, unknown>) => cluster.envoy.request(request(fields));

for (const [responseBodyMode, host] of [
  ['STREAMED', '127.0.0.171'],
  ['FULL_DUPLEX_STREAMED', '127.0.0.172'],
] as const) {
  describe(`token usage with response_body_mode ${responseBodyMode}`, () => {
    let cluster: Cluster;
    before(async () => {
      cluster = await startCluster({
        pods: [{ engine: 'vllm', models: [QWEN], host }],
        envoy: { processingMode: { requestBodyMode: 'BUFFERED', responseHeaderMode: 'SEND', responseBodyMode, responseTrailerMode: 'SEND' } },
      });
    });
    after(async () => cluster.close());

    it('counts the usage of JSON answers and of include_usage streams once each, the last continuous total, and a stream without usage as missing', async () => {
      const expected = { prompt: 0, completion: 0 };
      const add = (usage: Usage | undefined) => {
        assert.ok(usage, 'the backend reported usage');
        expected.prompt += usage.prompt_tokens;
        expected.completion += usage.completion_tokens;
      };
      const plain = await chat(cluster, { max_tokens: 5 });
      assert.equal(plain.status, 200);
      add(usageSeen(plain));
      const streamed = await chat(cluster, { max_tokens: 7, stream: true, stream_options: { include_usage: true } });
      assert.equal(streamed.status, 200);
      add(usageSeen(streamed));
      const continuous = await chat(cluster, { max_tokens: 6, stream: true, stream_options: { include_usage: true, continuous_usage_stats: true } });
      const perChunk = continuous.body
        .toString()
        .split('\n\n')
        .filter((e) => e.includes('"usage"'));
      assert.ok(perChunk.length >= 6, `usage in ${perChunk.length} chunks: the simulator sends continuous usage`);
      add(usageSeen(continuous));
      assert.deepEqual(await counted(cluster), { ...expected, missing: 0, series: 2 });
      assert.equal(expected.completion, 5 + 7 + 6);

      const withoutUsage = await chat(cluster, { max_tokens: 3, stream: true });
      assert.equal(withoutUsage.status, 200);
      assert.equal(usageSeen(withoutUsage), undefined);
      assert.deepEqual(await counted(cluster), { ...expected, missing: 1, series: 2 });
      await cluster.settled();
    });

    it('does not read encoded bodies or error answers, and passes the response on unchanged', async () => {
      const before = await counted(cluster);
      const body = JSON.stringify({ choices: [], usage: { prompt_tokens: 1000, completion_tokens: 1000 } });
      const exchange = await cluster.envoy.open(request());
      const gzipped = gzipSync(body);
      const response = await exchange.respond({
        status: 200,
        headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
        chunks: [gzipped.subarray(0, 10), gzipped.subarray(10)],
      });
      assert.deepEqual(response.body, gzipped);
      const failed = await cluster.envoy.open(request());
      assert.equal((await failed.respond({ status: 500, headers: JSON_HEADERS, body: '{"error":{"message":"boom"}}' })).status, 500);
      assert.deepEqual(await counted(cluster), before);
      await cluster.settled();
    });
  });
}

describe('token usage with response_body_mode NONE', () => {
  it('makes no meter at all', async () => {
    await withCluster({ pods: [{ engine: 'vllm', models: [QWEN], host: '127.0.0.173' }] }, async (cluster) => {
      const { metrics } = cluster.service;
      const usageSeries = metrics.usageSeries.bind(metrics);
      let meters = 0;
      metrics.usageSeries = (model, ownedBy) => {
        meters++;
        return usageSeries(model, ownedBy);
      };
      const response = await chat(cluster, { max_tokens: 2, stream: true, stream_options: { include_usage: true } });
      assert.ok(usageSeen(response));
      assert.equal(meters, 0);
      assert.deepEqual(await counted(cluster), { prompt: 0, completion: 0, missing: 0, series: 0 });
    });
  });
});
