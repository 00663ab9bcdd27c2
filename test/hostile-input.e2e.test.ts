import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parseConfig } from '../src/config/config.js';
import { ConfigError } from '../src/config/errors.js';
import { DEFAULT_INPUT_LIMITS } from '../src/request/limits.js';
import { decodeProcessingResponse, encodeProcessingRequest, fromHeaderInput, httpStatusCode, toHeaderMap } from './support/envoy/codec.js';
import { applyHeaderMutation } from './support/envoy/mutation.js';
import { type Cluster, captureLogs, chatBody, JSON_HEADERS, LLAMA, QWEN, startCluster, withCluster } from './support/harness.js';

async function counter(cluster: Cluster, labels: Record<string, string>): Promise<number> {
  const { values } = await cluster.service.metrics.requests.get();
  return values
    .filter((v) => Object.entries(labels).every(([k, want]) => (v.labels as Record<string, unknown>)[k] === want))
    .reduce((sum, v) => sum + v.value, 0);
}

describe('an Envoy that sends and reads header values in `value` (before 1.27, or send_header_raw_value off)', () => {
  let cluster: Cluster;
  before(async () => {
    cluster = await startCluster({ envoy: { headerValueField: 'value' } });
  });
  after(async () => cluster.close());

  it('is routed: the destination and x-routed-to come back in `value`', async () => {
    const response = await cluster.envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody({ model: LLAMA }) });
    assert.equal(response.status, 200, response.body.toString());
    assert.equal(response.upstream, cluster.pods[0]!.address);
    assert.equal(response.headers['x-routed-to'], cluster.pods[0]!.address);
  });

  it('reads the engine selector header and answers errors with their content-type', async () => {
    const routed = await cluster.envoy.request({
      method: 'POST',
      path: '/v1/chat/completions',
      headers: { ...JSON_HEADERS, 'x-owned-by': 'sglang' },
      body: chatBody({ model: QWEN }),
    });
    assert.equal(routed.headers['x-simulator-engine'], 'sglang');
    const refused = await cluster.envoy.request({
      method: 'POST',
      path: '/v1/chat/completions',
      headers: JSON_HEADERS,
      body: chatBody({ model: 'no-such-model' }),
    });
    assert.equal(refused.status, 404);
    assert.equal(refused.headers['content-type'], 'application/json');
  });

  it('control: such an Envoy reads an answer given only in raw_value as an empty header', () => {
    const headers = fromHeaderInput({ ':path': '/' });
    const mutation = {
      set_headers: [{ header: { key: 'x-gateway-destination-endpoint', raw_value: Buffer.from('127.0.0.1:1'), value: '' }, append: { value: false } }],
      remove_headers: [],
    };
    applyHeaderMutation(mutation, headers, { removeContentLength: false, field: 'value' });
    assert.deepEqual(headers.get('x-gateway-destination-endpoint'), ['']);
    // ... and the modern field is what the double sends by default.
    assert.ok(toHeaderMap(headers).headers?.every((h) => 'raw_value' in h && !('value' in h)));
  });
});

describe('after llm-extproc answers a FULL_DUPLEX body with 413', () => {
  it('body chunks and trailers Envoy had already sent are ignored, not protocol errors', async () => {
    await withCluster(
      {
        pods: [{ engine: 'vllm', models: [QWEN], host: '127.0.0.27' }],
        flags: ['--max-body-size=100KiB'],
        envoy: { processingMode: { requestBodyMode: 'FULL_DUPLEX_STREAMED', requestTrailerMode: 'SEND' } },
      },
      async (cluster) => {
        const protocolErrorsBefore = (await cluster.service.metrics.protocolErrors.get()).values[0]?.value ?? 0;
        const tooLargeBefore = await counter(cluster, { outcome: 'request_too_large', status: '413' });
        const stream = await cluster.envoy.openRawStream();
        const chunk = Buffer.alloc(60 * 1024, 'a');
        const headers = toHeaderMap(fromHeaderInput({ ':method': 'POST', ':path': '/v1/chat/completions', 'content-type': 'application/json' }));
        // Everything is on the wire before the server can answer: the chunks after the second
        // (which crosses the limit) are what a real Envoy has in flight when the 413 arrives.
        stream.send(
          encodeProcessingRequest({ protocol_config: { request_body_mode: 'FULL_DUPLEX_STREAMED' }, request_headers: { headers, end_of_stream: false } }),
        );
        for (let i = 0; i < 4; i++) stream.send(encodeProcessingRequest({ request_body: { body: chunk, end_of_stream: false } }));
        stream.send(encodeProcessingRequest({ request_trailers: { trailers: toHeaderMap(fromHeaderInput({ 'x-trailer': '1' })) } }));
        const answer = decodeProcessingResponse((await stream.recv(5000))!);
        assert.equal(answer.response, 'immediate_response');
        assert.equal(answer.immediate_response?.status?.code, 'PayloadTooLarge');
        // The half-close is handled after every earlier message, so the status orders the check.
        stream.halfClose();
        const status = await stream.status;
        assert.equal(status.code, 0, `stream status ${status.code} ${status.message}`);
        assert.equal((await cluster.service.metrics.protocolErrors.get()).values[0]?.value ?? 0, protocolErrorsBefore);
        assert.equal(await counter(cluster, { outcome: 'request_too_large', status: '413' }), tooLargeBefore + 1, 'the 413 is counted once');
        await cluster.settled();
      },
    );
  });
});

describe('methods on /v1/models, which llm-extproc answers itself', () => {
  let cluster: Cluster;
  before(async () => {
    cluster = await startCluster();
  });
  after(async () => cluster.close());

  it('HEAD is answered like GET', async () => {
    const get = await cluster.envoy.request({ method: 'GET', path: '/v1/models' });
    const head = await cluster.envoy.request({ method: 'HEAD', path: '/v1/models' });
    assert.equal(get.status, 200);
    assert.equal(head.status, 200);
    assert.equal(head.localReply, true);
    assert.equal(head.headers['content-type'], 'application/json');
    assert.equal((await cluster.envoy.request({ method: 'HEAD', path: `/v1/models/${encodeURIComponent(QWEN)}` })).status, 200);
  });

  for (const method of ['OPTIONS', 'DELETE', 'POST', 'PUT']) {
    it(`${method} gets 405 with an allow header`, async () => {
      const response = await cluster.envoy.request({
        method,
        path: '/v1/models',
        headers: JSON_HEADERS,
        body: method === 'OPTIONS' || method === 'DELETE' ? undefined : '{}',
      });
      assert.equal(response.status, 405, response.body.toString());
      assert.equal(response.headers.allow, 'GET, HEAD');
      assert.equal(JSON.parse(response.body.toString()).error.code, 'method_not_allowed');
      assert.equal(response.upstream, undefined, 'not sent to a backend');
    });
  }
});

describe('client-supplied values are bounded in answers and logs', () => {
  let cluster: Cluster;
  const logs = captureLogs();
  before(async () => {
    cluster = await startCluster({ logs: logs.stream });
  });
  after(async () => cluster.close());

  const post = (body: string, headers: Record<string, string> = {}, path = '/v1/chat/completions') =>
    cluster.envoy.request({ method: 'POST', path, headers: { ...JSON_HEADERS, ...headers }, body });

  it('an 8 MiB model name is a small 400 and a small log line', async () => {
    const hugeModel = 'm'.repeat(8 * 1024 * 1024);
    const logLinesBefore = logs.raw.length;
    const response = await post(chatBody({ model: hugeModel }));
    assert.equal(response.status, 400);
    assert.equal(JSON.parse(response.body.toString()).error.code, 'invalid_model');
    assert.ok(response.body.length < 1024, `answer of ${response.body.length} bytes`);
    const written = logs.raw.slice(logLinesBefore);
    assert.equal(written.length, 1);
    assert.ok(written[0]!.length < 2048, `log line of ${written[0]!.length} bytes`);
  });

  it('a model name at the limit (default 256 bytes) is looked up; one byte over is refused, naming the field and the limit', async () => {
    assert.equal((await post(chatBody({ model: 'x'.repeat(256) }))).status, 404);
    const over = await post(chatBody({ model: 'x'.repeat(257) }));
    assert.equal(over.status, 400);
    assert.equal(JSON.parse(over.body.toString()).error.message, '`model` is longer than the limit of 256 bytes.');
  });

  it('an unknown model of a couple of hundred characters is echoed cut short', async () => {
    const response = await post(chatBody({ model: `unknown-${'z'.repeat(200)}` }));
    assert.equal(response.status, 404);
    const message = JSON.parse(response.body.toString()).error.message as string;
    assert.ok(message.length < 250, message);
    assert.match(message, /… \(208 bytes\)/);
  });

  it('over-long engine selectors are refused wherever they come from', async () => {
    const long = 'e'.repeat(129);
    for (const response of [
      await post(chatBody({ model: QWEN, owned_by: long })),
      await post(chatBody({ model: QWEN }), { 'x-owned-by': long }),
      await post(chatBody({ model: QWEN }), {}, `/v1/chat/completions?owned_by=${long}`),
    ]) {
      assert.equal(response.status, 400);
      assert.equal(JSON.parse(response.body.toString()).error.code, 'invalid_owned_by');
    }
    assert.equal((await post(chatBody({ model: QWEN, owned_by: 'e'.repeat(128) }))).status, 404, 'at the limit: looked up, not served');
  });

  it('the logged path of a refused request is cut short', async () => {
    const response = await post(chatBody({ model: 'nope' }), {}, `/v1/chat/completions?pad=${'p'.repeat(5000)}`);
    assert.equal(response.status, 404);
    const line = logs.lines.at(-1)!;
    assert.ok((line.path as string).length < 200, `path of ${(line.path as string).length} characters`);
  });
});

describe('limits on what a client controls: just under passes, just over is refused, each counted', () => {
  let cluster: Cluster;
  const LIMITS = ['--max-header-count=12', '--max-header-bytes=1KiB', '--max-query-length=64', '--max-model-name-length=40', '--max-owned-by-length=8'];
  before(async () => {
    cluster = await startCluster({ flags: LIMITS });
  });
  after(async () => cluster.close());

  const BASE = { ':method': 'POST', ':path': '/v1/chat/completions', 'content-type': 'application/json' };
  const bytesOf = (record: Record<string, string>) => Object.entries(record).reduce((sum, [k, v]) => sum + k.length + Buffer.byteLength(v), 0);

  /** The answer to request headers alone (BUFFERED, no body sent yet): `request_headers` when they passed, else the status. */
  async function headersAnswer(record: Record<string, string>): Promise<{ answer: string; status?: number; code?: string }> {
    const stream = await cluster.envoy.openRawStream();
    stream.send(
      encodeProcessingRequest({
        protocol_config: { request_body_mode: 'BUFFERED' },
        request_headers: { headers: toHeaderMap(fromHeaderInput(record)), end_of_stream: false },
      }),
    );
    const answer = decodeProcessingResponse((await stream.recv(5000))!);
    stream.closeLikeEnvoy();
    const reply = answer.immediate_response;
    if (!reply) return { answer: answer.response! };
    return { answer: answer.response!, status: httpStatusCode(reply.status?.code), code: JSON.parse(reply.body!.toString()).error.code };
  }

  it('--max-header-count: 12 headers pass, 13 are a 431', async () => {
    const headers = (n: number) => ({ ...BASE, ...Object.fromEntries(Array.from({ length: n - 3 }, (_, i) => [`x-h${i}`, 'v'])) });
    const before = await counter(cluster, { outcome: 'request_headers_too_large', status: '431' });
    assert.deepEqual(await headersAnswer(headers(12)), { answer: 'request_headers' });
    assert.deepEqual(await headersAnswer(headers(13)), { answer: 'immediate_response', status: 431, code: 'request_headers_too_large' });
    assert.equal(await counter(cluster, { outcome: 'request_headers_too_large', status: '431' }), before + 1);
  });

  it('--max-header-bytes: names plus values of exactly 1 KiB pass, one byte more is a 431, before any body', async () => {
    const padded = (total: number) => {
      const record = { ...BASE, 'x-pad': '' };
      record['x-pad'] = 'p'.repeat(total - bytesOf(record));
      assert.equal(bytesOf(record), total);
      return record;
    };
    const before = await counter(cluster, { outcome: 'request_headers_too_large', status: '431' });
    assert.deepEqual(await headersAnswer(padded(1024)), { answer: 'request_headers' });
    assert.deepEqual(await headersAnswer(padded(1025)), { answer: 'immediate_response', status: 431, code: 'request_headers_too_large' });
    assert.equal(await counter(cluster, { outcome: 'request_headers_too_large', status: '431' }), before + 1);
  });

  it('--max-query-length: a 64-byte query string is routed, 65 bytes are a 414', async () => {
    const withQuery = (bytes: number) =>
      cluster.envoy.request({
        method: 'POST',
        path: `/v1/chat/completions?${'q'.repeat(bytes - 2)}=1`,
        headers: JSON_HEADERS,
        body: chatBody({ model: QWEN }),
      });
    const before = await counter(cluster, { outcome: 'query_too_long', status: '414' });
    assert.equal((await withQuery(64)).status, 200);
    const over = await withQuery(65);
    assert.equal(over.status, 414);
    assert.deepEqual(JSON.parse(over.body.toString()).error, {
      message: 'The query string is longer than the limit of 64 bytes.',
      type: 'invalid_request_error',
      param: null,
      code: 'query_too_long',
    });
    assert.equal(await counter(cluster, { outcome: 'query_too_long', status: '414' }), before + 1);
  });

  it('--max-model-name-length: in the body at body time, in the header at headers time', async () => {
    const post = (model: string) => cluster.envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody({ model }) });
    const before = await counter(cluster, { outcome: 'invalid_model', status: '400' });
    assert.equal((await post('m'.repeat(40))).status, 404, 'at the limit: looked up');
    const over = await post('m'.repeat(41));
    assert.equal(over.status, 400);
    assert.equal(JSON.parse(over.body.toString()).error.message, '`model` is longer than the limit of 40 bytes.');
    assert.deepEqual(await headersAnswer({ ...BASE, 'x-gateway-model-name': 'm'.repeat(40) }), { answer: 'request_headers' });
    assert.deepEqual(await headersAnswer({ ...BASE, 'x-gateway-model-name': 'm'.repeat(41) }), {
      answer: 'immediate_response',
      status: 400,
      code: 'invalid_model',
    });
    assert.equal(await counter(cluster, { outcome: 'invalid_model', status: '400' }), before + 2);
  });

  it('--max-owned-by-length: the header and the query are refused at headers time, the body field at body time', async () => {
    const before = await counter(cluster, { outcome: 'invalid_owned_by', status: '400' });
    const refused = { answer: 'immediate_response', status: 400, code: 'invalid_owned_by' };
    assert.deepEqual(await headersAnswer({ ...BASE, 'x-owned-by': 'e'.repeat(8) }), { answer: 'request_headers' });
    assert.deepEqual(await headersAnswer({ ...BASE, 'x-owned-by': 'e'.repeat(9) }), refused);
    assert.deepEqual(await headersAnswer({ ...BASE, ':path': `/v1/chat/completions?owned_by=${'e'.repeat(8)}` }), { answer: 'request_headers' });
    assert.deepEqual(await headersAnswer({ ...BASE, ':path': `/v1/chat/completions?owned_by=${'e'.repeat(9)}` }), refused);
    const post = (ownedBy: string) =>
      cluster.envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody({ model: QWEN, owned_by: ownedBy }) });
    assert.equal((await post('e'.repeat(8))).status, 404, 'at the limit: looked up, not served');
    const over = await post('e'.repeat(9));
    assert.equal(over.status, 400);
    assert.equal(JSON.parse(over.body.toString()).error.message, '`owned_by` is longer than the limit of 8 bytes.');
    assert.equal(await counter(cluster, { outcome: 'invalid_owned_by', status: '400' }), before + 3);
  });
});

describe('the input limit flags', () => {
  const parse = (...argv: string[]) => parseConfig(['--static-hosts=10.0.0.1:8000', ...argv])!;

  it('default to Envoy-like header limits, 8 KiB of query, 256-byte models and 128-byte engines', () => {
    assert.deepEqual(parse().inputLimits, DEFAULT_INPUT_LIMITS);
  });

  it('refuse values that are not sizes or counts in range, naming the flag', () => {
    for (const [flag, bad] of [
      ['--max-header-count', '0'],
      ['--max-header-bytes', 'lots'],
      ['--max-query-length', '0'],
      ['--max-model-name-length', '4097'],
      ['--max-owned-by-length', '-1'],
    ] as const) {
      assert.throws(
        () => parse(`${flag}=${bad}`),
        (err: unknown) => err instanceof ConfigError && err.flag === flag,
        `${flag}=${bad}`,
      );
    }
  });
});

describe('BUFFERED_PARTIAL: Envoy forwards only the first part of a body over its buffer', () => {
  let cluster: Cluster;
  const limit = 64 * 1024;
  before(async () => {
    cluster = await startCluster({ envoy: { processingMode: { requestBodyMode: 'BUFFERED_PARTIAL', responseHeaderMode: 'SEND' }, bufferLimitBytes: limit } });
  });
  after(async () => cluster.close());

  const prompt = 'lorem ipsum '.repeat(20_000); // ~240 KiB: well past the buffer
  /** The body as a client's connection delivers it, in 16 KiB reads, so Envoy's buffer fills before the end. */
  const post = (body: string) => {
    const bytes = Buffer.from(body);
    const chunks: Buffer[] = [];
    for (let offset = 0; offset < bytes.length; offset += 16 * 1024) chunks.push(bytes.subarray(offset, offset + 16 * 1024));
    return cluster.envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, chunks });
  };

  it('a body within the buffer is routed as in BUFFERED', async () => {
    const response = await post(chatBody({ model: QWEN, owned_by: 'sglang' }));
    assert.equal(response.status, 200, response.body.toString());
    assert.equal(response.headers['x-simulator-engine'], 'sglang');
  });

  it('a larger body whose first part names model and owned_by is routed on that part, and the backend gets all of it', async () => {
    const body = JSON.stringify({ model: QWEN, owned_by: 'sglang', max_tokens: 2, messages: [{ role: 'user', content: prompt }] });
    assert.ok(body.length > 3 * limit);
    const response = await post(body);
    assert.equal(response.status, 200, response.body.toString().slice(0, 300));
    assert.equal(response.headers['x-simulator-engine'], 'sglang', 'owned_by read from the forwarded part');
    assert.equal(response.requestBodySentUpstream?.length, Buffer.byteLength(body), 'the rest of the body passed through to the backend');
    await cluster.settled();
  });

  it('a larger body whose first part names no model gets a 413 saying where to put it, not "not valid JSON"', async () => {
    const response = await post(JSON.stringify({ messages: [{ role: 'user', content: prompt }], model: QWEN }));
    assert.equal(response.status, 413);
    const error = JSON.parse(response.body.toString()).error;
    assert.equal(error.code, 'request_too_large');
    assert.match(error.message, /put "model" \(and "owned_by"\) before the prompt/);
  });

  it('malformed JSON inside the forwarded part is still a 400', async () => {
    const response = await post(`{"model": "${QWEN}", "max_tokens": 2,, "messages": [{"role":"user","content":"${prompt}"}]}`);
    assert.equal(response.status, 400);
    assert.equal(JSON.parse(response.body.toString()).error.code, 'invalid_json');
  });
});
