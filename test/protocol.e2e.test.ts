import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { STREAMED_CHUNK_BYTES } from '../src/extproc/responses.js';
import { decodeProcessingResponse, encodeProcessingRequest } from './support/envoy/envoy-double.js';
import { type Cluster, chatBody, JSON_HEADERS, LLAMA, QWEN, startCluster, withCluster } from './support/harness.js';
import { defer } from './support/wait.js';

/** An HttpHeaders message as Envoy fills it (raw_value only). */
const rawHeaders = (record: Record<string, string>) => ({
  headers: { headers: Object.entries(record).map(([key, value]) => ({ key, raw_value: Buffer.from(value) })) },
});

describe('FULL_DUPLEX_STREAMED (endpoint-picker style)', () => {
  let cluster: Cluster;
  before(async () => {
    cluster = await startCluster({
      envoy: { processingMode: { requestBodyMode: 'FULL_DUPLEX_STREAMED', requestTrailerMode: 'SEND', responseHeaderMode: 'SEND' } },
    });
  });
  after(async () => cluster.close());

  it('holds the headers answer until the body ends, then echoes the body in <=62,000-byte chunks', async () => {
    const body = chatBody({ model: QWEN, owned_by: 'sglang', padding: 'p'.repeat(200_000) });
    const chunks = [body.slice(0, 70_000), body.slice(70_000, 150_000), body.slice(150_000)].map((c) => Buffer.from(c));
    const response = await cluster.envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, chunks });
    assert.equal(response.status, 200);
    assert.equal(cluster.podByAddress(response.upstream)?.engine, 'sglang');
    assert.equal(response.requestBodySentUpstream?.toString(), body, 'the body reached the backend intact');
    const sent = response.trace.filter((t) => t.startsWith('>'));
    const received = response.trace.filter((t) => t.startsWith('<'));
    // All three body chunks went out before the first answer, and the headers answer came first.
    assert.deepEqual(sent.slice(0, 4), ['>request_headers', '>request_body', '>request_body', '>request_body']);
    assert.equal(received[0], '<request_headers');
    const echoed = received.filter((t) => t.startsWith('<request_body'));
    assert.equal(echoed.length, Math.ceil(Buffer.byteLength(body) / STREAMED_CHUNK_BYTES));
    await cluster.settled();
  });

  it('answers trailers after the echoed body when the request has trailers', async () => {
    const response = await cluster.envoy.request({
      method: 'POST',
      path: '/v1/chat/completions',
      headers: JSON_HEADERS,
      chunks: [Buffer.from(chatBody({ model: LLAMA }))],
      trailers: { 'x-trailer': 'yes' },
    });
    assert.equal(response.status, 200);
    assert.equal(response.upstream, cluster.pods[0]!.address);
    const received = response.trace.filter((t) => t.startsWith('<'));
    assert.ok(received.indexOf('<request_trailers') > received.lastIndexOf('<request_body'), received.join(' '));
  });

  it('a streamed body over --max-body-size is 413 as soon as it crosses the limit', async () => {
    await withCluster(
      {
        pods: [{ engine: 'vllm', models: [QWEN], host: '127.0.0.26' }],
        flags: ['--max-body-size=100KiB'],
        envoy: { processingMode: { requestBodyMode: 'FULL_DUPLEX_STREAMED', requestTrailerMode: 'SEND' } },
      },
      async (limited) => {
        const chunk = Buffer.alloc(60 * 1024, 'a');
        const response = await limited.envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, chunks: [chunk, chunk, chunk] });
        assert.equal(response.status, 413);
        assert.equal(JSON.parse(response.body.toString()).error.code, 'request_too_large');
        await limited.settled();
      },
    );
  });

  it('errors still come back as immediate responses', async () => {
    const response = await cluster.envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, chunks: [Buffer.from('{"model":')] });
    assert.equal(response.status, 400);
    assert.equal(response.localReply, true);
  });
});

describe('the response path in every body mode', () => {
  for (const responseBodyMode of ['STREAMED', 'BUFFERED', 'FULL_DUPLEX_STREAMED'] as const) {
    it(`${responseBodyMode}: every response message is answered and the SSE stream reaches the client whole`, async () => {
      await withCluster(
        {
          pods: [{ engine: 'vllm', models: [QWEN], host: '127.0.0.27' }],
          envoy: { processingMode: { requestBodyMode: 'BUFFERED', responseHeaderMode: 'SEND', responseBodyMode, responseTrailerMode: 'SEND' } },
        },
        async (cluster) => {
          const response = await cluster.envoy.request({
            method: 'POST',
            path: '/v1/chat/completions',
            headers: JSON_HEADERS,
            body: chatBody({ model: QWEN, stream: true, max_tokens: 6 }),
          });
          assert.equal(response.status, 200);
          assert.equal(response.headers['x-routed-to'], cluster.pods[0]!.address);
          const events = response.body
            .toString()
            .split('\n\n')
            .filter((e) => e.startsWith('data: '));
          assert.equal(events.at(-1), 'data: [DONE]');
          assert.ok(events.length >= 7, `${events.length} SSE events`);
          const sent = response.trace.filter((t) => t.startsWith('>response_body')).length;
          const answered = response.trace.filter((t) => t.startsWith('<response_body')).length;
          assert.ok(sent >= 1 && answered >= sent, `response_body sent ${sent}, answered ${answered}`);
          await cluster.settled();
        },
      );
    });
  }
});

describe('response trailers', () => {
  it('are answered after the echoed response body in FULL_DUPLEX_STREAMED', async () => {
    await withCluster(
      {
        pods: [{ engine: 'vllm', models: [QWEN], host: '127.0.0.28' }],
        envoy: {
          processingMode: { requestBodyMode: 'BUFFERED', responseHeaderMode: 'SEND', responseBodyMode: 'FULL_DUPLEX_STREAMED', responseTrailerMode: 'SEND' },
        },
      },
      async (cluster) => {
        const exchange = await cluster.envoy.open({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody({ model: QWEN }) });
        const response = await exchange.respond({
          status: 200,
          headers: { 'content-type': 'application/grpc' },
          chunks: ['part one, ', 'part two'],
          trailers: { 'grpc-status': '0' },
        });
        assert.equal(response.status, 200);
        assert.equal(response.body.toString(), 'part one, part two');
        assert.equal(response.trailers?.['grpc-status'], '0');
        const received = response.trace.filter((t) => t.startsWith('<'));
        assert.equal(received.at(-1), '<response_trailers', received.join(' '));
        await cluster.settled();
      },
    );
  });
});

describe('in-flight accounting', () => {
  let cluster: Cluster;
  before(async () => {
    cluster = await startCluster();
  });
  after(async () => cluster.close());

  it('N open requests over K backends differ by at most one, and return to zero when they end', async () => {
    const open = [];
    for (let i = 0; i < 22; i++) {
      open.push(await cluster.envoy.open({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody({ model: QWEN }) }));
    }
    const counts = Object.values(cluster.inFlight());
    assert.equal(
      counts.reduce((a, b) => a + b, 0),
      22,
    );
    assert.ok(Math.max(...counts) - Math.min(...counts) <= 1, `uneven: ${counts}`);
    await Promise.all(open.map((exchange, i) => (i % 2 ? exchange.abort() : exchange.finish())));
    await cluster.settled();
  });

  it('a client that goes away after routing, before the backend answers, is released', async () => {
    const exchange = await cluster.envoy.open({
      method: 'POST',
      path: '/v1/chat/completions',
      headers: JSON_HEADERS,
      body: chatBody({ model: QWEN, owned_by: 'vllm' }),
    });
    assert.ok(exchange.upstream);
    assert.equal(cluster.inFlight()[exchange.upstream], 1);
    await exchange.abort();
    await cluster.settled();
  });

  it('a stream cancelled while its body is awaited holds nothing', async () => {
    const stream = await cluster.envoy.openRawStream();
    stream.send(encodeProcessingRequest({ request_headers: { ...rawHeaders({ ':method': 'POST', ':path': '/v1/chat/completions' }), end_of_stream: false } }));
    const answer = decodeProcessingResponse((await stream.recv(2000))!);
    assert.equal(answer.response, 'request_headers');
    stream.closeLikeEnvoy();
    await cluster.settled();
  });

  it("a backend that vanishes mid-request gets Envoy's 503 and leaves counters at zero", async () => {
    await withCluster({ pods: [{ engine: 'vllm', models: [QWEN], host: '127.0.0.24' }] }, async (doomed) => {
      const exchange = await doomed.envoy.open({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody({ model: QWEN }) });
      assert.equal(doomed.inFlight()[exchange.upstream!], 1);
      await doomed.pods[0]!.close();
      const response = await exchange.forward();
      assert.equal(response.status, 503);
      await doomed.settled();
    });
  });

  it('a backend that dies in the middle of an SSE stream leaves counters at zero', async () => {
    await withCluster({ pods: [{ engine: 'sglang', models: [QWEN], host: '127.0.0.25', interTokenMs: 20 }] }, async (doomed) => {
      const firstChunk = defer();
      const exchange = await doomed.envoy.open({
        method: 'POST',
        path: '/v1/chat/completions',
        headers: JSON_HEADERS,
        body: chatBody({ model: QWEN, stream: true, max_tokens: 200 }),
        onResponseChunk: () => firstChunk.resolve(),
      });
      const forwarded = exchange.forward();
      await firstChunk.promise;
      assert.equal(doomed.inFlight()[exchange.upstream!], 1);
      await doomed.pods[0]!.close();
      const response = await forwarded;
      assert.doesNotMatch(response.body.toString(), /\[DONE\]/, 'the stream was cut short');
      await doomed.settled();
    });
  });

  it('a long SSE generation stays counted until its stream ends', async () => {
    // Read at each chunk the client gets: the generation is under way and its stream still open.
    const countsDuringGeneration: number[] = [];
    const exchange = await cluster.envoy.open({
      method: 'POST',
      path: '/v1/chat/completions',
      headers: JSON_HEADERS,
      body: chatBody({ model: LLAMA, stream: true, max_tokens: 30 }),
      onResponseChunk: () => countsDuringGeneration.push(cluster.inFlight()[cluster.pods[0]!.address]!),
    });
    const response = await exchange.forward();
    assert.ok(countsDuringGeneration.length > 0, 'the client got chunks');
    assert.ok(
      countsDuringGeneration.every((n) => n === 1),
      `in flight at each chunk: ${countsDuringGeneration}`,
    );
    assert.match(response.body.toString(), /\[DONE\]/);
    await cluster.settled();
  });
});

describe('protocol edge cases', () => {
  let cluster: Cluster;
  before(async () => {
    cluster = await startCluster();
  });
  after(async () => cluster.close());

  it('request_body before request_headers ends the stream with a gRPC error and is counted', async () => {
    const before = (await cluster.service.metrics.protocolErrors.get()).values[0]?.value ?? 0;
    const stream = await cluster.envoy.openRawStream();
    stream.send(encodeProcessingRequest({ request_body: { body: Buffer.from('{}'), end_of_stream: true } }));
    const status = await stream.status;
    assert.equal(status.source, 'trailers');
    assert.equal(status.code, 9 /* FAILED_PRECONDITION */);
    assert.match(status.message, /request_body/);
    assert.equal((await cluster.service.metrics.protocolErrors.get()).values[0]?.value, before + 1);
  });

  it('a second request_headers on one stream is refused', async () => {
    const stream = await cluster.envoy.openRawStream();
    const headers = { request_headers: { ...rawHeaders({ ':method': 'POST', ':path': '/v1/chat/completions' }) } };
    stream.send(encodeProcessingRequest(headers));
    await stream.recv(2000);
    stream.send(encodeProcessingRequest(headers));
    const status = await stream.status;
    assert.equal(status.code, 9);
    await cluster.settled();
  });

  it('an out-of-order message after routing releases the routed request', async () => {
    const stream = await cluster.envoy.openRawStream();
    stream.send(
      encodeProcessingRequest({
        protocol_config: { request_body_mode: 'BUFFERED' },
        request_headers: rawHeaders({ ':method': 'POST', ':path': '/v1/chat/completions' }),
      }),
    );
    await stream.recv(2000);
    stream.send(encodeProcessingRequest({ request_body: { body: Buffer.from(chatBody({ model: LLAMA })), end_of_stream: true } }));
    const routed = decodeProcessingResponse((await stream.recv(2000))!);
    assert.equal(routed.request_body?.response?.clear_route_cache, true);
    assert.equal(cluster.inFlight()[cluster.pods[0]!.address], 1);
    stream.send(encodeProcessingRequest({ request_body: { body: Buffer.from('{}'), end_of_stream: true } }));
    assert.equal((await stream.status).code, 9);
    await cluster.settled();
  });

  it('a message with no request field is refused', async () => {
    const stream = await cluster.envoy.openRawStream();
    stream.send(encodeProcessingRequest({}));
    assert.equal((await stream.status).code, 9);
  });

  it('response_headers after a routed request are refused if the request was never routed', async () => {
    const stream = await cluster.envoy.openRawStream();
    stream.send(encodeProcessingRequest({ response_headers: rawHeaders({ ':status': '200' }) }));
    assert.equal((await stream.status).code, 9);
  });

  it('observability mode gets no answers', async () => {
    const stream = await cluster.envoy.openRawStream();
    stream.send(
      encodeProcessingRequest({
        observability_mode: true,
        request_headers: { ...rawHeaders({ ':method': 'GET', ':path': '/v1/models' }), end_of_stream: true },
      }),
    );
    // A graceful close: the server's OK status comes after anything it had to answer.
    stream.halfClose();
    assert.equal((await stream.status).code, 0);
    assert.equal(await stream.recv(), null, 'no answer before the status');
  });

  it('a 20 MiB buffered body is routed', async () => {
    const body = chatBody({ model: QWEN, owned_by: 'vllm', padding: 'a'.repeat(20 * 1024 * 1024) });
    const exchange = await cluster.envoy.open({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body });
    assert.equal(cluster.podByAddress(exchange.upstream)?.engine, 'vllm');
    await exchange.finish();
    await cluster.settled();
  });

  it('STREAMED bodies are routed on headers and every chunk is answered in order', async () => {
    await withCluster(
      {
        pods: [{ engine: 'sglang', models: [QWEN], host: '127.0.0.21' }],
        envoy: { processingMode: { requestBodyMode: 'STREAMED', responseHeaderMode: 'SEND' } },
      },
      async (streamed) => {
        const body = chatBody({ model: QWEN });
        const response = await streamed.envoy.request({
          method: 'POST',
          path: '/v1/chat/completions',
          headers: { ...JSON_HEADERS, 'x-gateway-model-name': QWEN },
          chunks: [Buffer.from(body.slice(0, 10)), Buffer.from(body.slice(10))],
        });
        assert.equal(response.status, 200);
        assert.equal(response.upstream, streamed.pods[0]!.address);
        assert.equal(response.trace.filter((t) => t === '<request_body').length, 2);
      },
    );
  });

  it('without protocol_config, --request-body-mode says what Envoy sends', async () => {
    await withCluster(
      {
        pods: [{ engine: 'vllm', models: [QWEN], host: '127.0.0.22' }],
        flags: ['--request-body-mode=FULL_DUPLEX_STREAMED'],
        envoy: { sendProtocolConfig: false, processingMode: { requestBodyMode: 'FULL_DUPLEX_STREAMED', requestTrailerMode: 'SEND' } },
      },
      async (legacy) => {
        const response = await legacy.envoy.request({
          method: 'POST',
          path: '/v1/chat/completions',
          headers: JSON_HEADERS,
          chunks: [Buffer.from(chatBody({ model: QWEN }))],
        });
        assert.equal(response.status, 200);
        assert.equal(response.upstream, legacy.pods[0]!.address);
      },
    );
  });

  it("Envoy's graceful close gets an OK status from llm-extproc", async () => {
    await withCluster({ pods: [{ engine: 'vllm', models: [QWEN], host: '127.0.0.23' }], envoy: { closeMode: 'graceful' } }, async (graceful) => {
      const response = await graceful.envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody({ model: QWEN }) });
      assert.equal(response.status, 200);
      assert.equal(response.grpcStatus?.source, 'trailers');
      assert.equal(response.grpcStatus?.code, 0);
      await graceful.settled();
    });
  });
});
