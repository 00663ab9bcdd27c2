import assert from 'node:assert/strict';
import { type EventEmitter, once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import type { ExtProcServer } from '../src/extproc/server.js';
import type { Destination, HttpRequestView, LocalReply, RequestRouter, RouteDecision } from '../src/extproc/types.js';
import { decodeProcessingResponse, EnvoyDouble, encodeProcessingRequest } from './support/envoy/envoy-double.js';
import type { GrpcH2Stream } from './support/envoy/grpc-h2.js';
import { startExtProcServer } from './support/extproc-server.js';
import { type Deferred, defer, until } from './support/wait.js';

/** The answers the stream asks the application for, worded so a test can tell them apart. */
const TEST_REPLIES = {
  bodyTooLarge: (): LocalReply => ({ status: 413, body: 'test: too large', contentType: 'text/plain', reason: 'test_too_large' }),
  failed: (): LocalReply => ({ status: 500, body: 'test: router failed', contentType: 'text/plain', reason: 'test_failed' }),
};

/**
 * A router whose decisions wait for the test, as one consulting external plugins would: the test
 * learns when the router is asked and decides when the answer comes.
 */
class GatedRouter implements RequestRouter {
  readonly bodyTooLarge = TEST_REPLIES.bodyTooLarge;
  readonly failed = TEST_REPLIES.failed;
  releases = 0;
  decided = 0;
  private asked = defer<Deferred<void>>();

  /** Call before sending the request: resolves when it is being decided, with its gate. */
  nextDecision(): Promise<Deferred<void>> {
    return this.asked.promise;
  }

  async decide(_request: HttpRequestView): Promise<RouteDecision> {
    const gate = defer();
    this.asked.resolve(gate);
    this.asked = defer();
    await gate.promise;
    this.decided++;
    const destination: Destination = {
      address: '127.0.0.61:8000',
      addressBytes: Buffer.from('127.0.0.61:8000'),
      release: () => void this.releases++,
    };
    return { kind: 'route', destination };
  }
}

const headers = (record: Record<string, string>) => ({
  headers: { headers: Object.entries(record).map(([key, value]) => ({ key, raw_value: Buffer.from(value) })) },
});

/** The real ext_proc server with `router`, and an Envoy double (BUFFERED) in front of it. */
async function serve(router: RequestRouter): Promise<{ envoy: EnvoyDouble; server: ExtProcServer; stop(): Promise<void> }> {
  const { server, port } = await startExtProcServer(router);
  const envoy = new EnvoyDouble({ extProcTarget: `127.0.0.1:${port}`, processingMode: { requestBodyMode: 'BUFFERED' }, messageTimeoutMs: 5000 });
  await envoy.connect();
  return {
    envoy,
    server,
    async stop() {
      await envoy.close();
      await server.stop();
    },
  };
}

/**
 * The server side of the newest ext_proc stream. A listener added here runs after the stream's own,
 * so when it fires the server has handled the message or the close.
 */
function newestCall(server: ExtProcServer): EventEmitter {
  // The server keeps its open calls private; this test reads them to order events by the server's own.
  const call = [...(server as unknown as { openStreams: Set<EventEmitter> }).openStreams].at(-1);
  assert.ok(call, 'the server has an open stream');
  return call;
}

describe('ext_proc streams with an asynchronous router', () => {
  const router = new GatedRouter();
  let envoy: EnvoyDouble;
  let server: ExtProcServer;
  let stop: () => Promise<void>;
  before(async () => {
    ({ envoy, server, stop } = await serve(router));
  });
  after(async () => stop());

  /** A raw stream whose request headers were answered; the next message is the body. */
  async function awaitingBody(): Promise<{ stream: GrpcH2Stream; call: EventEmitter }> {
    const stream = await envoy.openRawStream();
    stream.send(
      encodeProcessingRequest({ protocol_config: { request_body_mode: 'BUFFERED' }, request_headers: headers({ ':method': 'POST', ':path': '/x' }) }),
    );
    assert.equal(decodeProcessingResponse((await stream.recv(2000))!).response, 'request_headers');
    return { stream, call: newestCall(server) };
  }

  it('messages that arrive while deciding are answered afterwards, in order', async () => {
    const { stream, call } = await awaitingBody();
    const asked = router.nextDecision();
    stream.send(encodeProcessingRequest({ request_body: { body: Buffer.from('{}'), end_of_stream: true } }));
    const gate = await asked;
    const arrived = once(call, 'data');
    stream.send(encodeProcessingRequest({ response_headers: headers({ ':status': '200' }) }));
    await arrived;
    gate.resolve();
    const first = decodeProcessingResponse((await stream.recv(2000))!);
    const second = decodeProcessingResponse((await stream.recv(2000))!);
    assert.equal(first.response, 'request_body');
    assert.equal(first.request_body?.response?.header_mutation?.set_headers?.[0]?.header?.raw_value?.toString(), '127.0.0.61:8000');
    assert.equal(second.response, 'response_headers');
    assert.equal(second.response_headers?.response?.header_mutation?.set_headers?.[0]?.header?.key, 'x-routed-to');
    const releasesBefore = router.releases;
    stream.closeLikeEnvoy();
    await until(
      'the routed request to be released',
      () => router.releases,
      (n) => n === releasesBefore + 1,
    );
  });

  it('a stream that ends while its decision is pending gives the destination back at once', async () => {
    const decidedBefore = router.decided;
    const releasesBefore = router.releases;
    const { stream, call } = await awaitingBody();
    const asked = router.nextDecision();
    stream.send(encodeProcessingRequest({ request_body: { body: Buffer.from('{}'), end_of_stream: true } }));
    const gate = await asked;
    const closed = once(call, 'close');
    stream.closeLikeEnvoy();
    await closed;
    gate.resolve();
    await until(
      'the late decision to be released',
      () => router.releases,
      (n) => n === releasesBefore + 1,
    );
    assert.equal(router.decided, decidedBefore + 1, 'the decision completed after the stream ended');
  });
});

describe('a router that fails', () => {
  for (const [name, router] of [
    [
      'throws',
      {
        ...TEST_REPLIES,
        decide: () => {
          throw new Error('boom');
        },
      },
    ],
    ['rejects', { ...TEST_REPLIES, decide: () => Promise.reject(new Error('boom')) }],
  ] as const) {
    it(`${name}: the request gets the application's failure answer as an immediate response`, async () => {
      const { envoy, stop } = await serve(router as RequestRouter);
      try {
        const response = await envoy.request({ method: 'POST', path: '/v1/chat/completions', body: '{"model":"m"}' });
        assert.equal(response.status, 500);
        assert.equal(response.localReply, true);
        assert.equal(response.body.toString(), 'test: router failed');
      } finally {
        await stop();
      }
    });
  }
});
