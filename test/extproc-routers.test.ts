import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ExtProcServer } from '../src/extproc/server.js';
import type { Destination, HttpRequestView, LocalReply, RequestRouter, RouteDecision } from '../src/extproc/types.js';
import { createLogger } from '../src/log.js';
import { EnvoyDouble, decodeProcessingResponse, encodeProcessingRequest } from './support/envoy/envoy-double.js';

/** The answers the stream asks the application for, worded so a test can tell them apart. */
const TEST_REPLIES = {
  bodyTooLarge: (): LocalReply => ({ status: 413, body: 'test: too large', contentType: 'text/plain', reason: 'test_too_large' }),
  failed: (): LocalReply => ({ status: 500, body: 'test: router failed', contentType: 'text/plain', reason: 'test_failed' }),
};

/** A router that answers after a delay, as one consulting external plugins will. */
class SlowRouter implements RequestRouter {
  readonly bodyTooLarge = TEST_REPLIES.bodyTooLarge;
  readonly failed = TEST_REPLIES.failed;
  releases = 0;
  decided = 0;
  constructor(private readonly delayMs: number) {}

  async decide(_request: HttpRequestView): Promise<RouteDecision> {
    await new Promise((resolve) => setTimeout(resolve, this.delayMs));
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
async function serve(router: RequestRouter): Promise<{ envoy: EnvoyDouble; stop(): Promise<void> }> {
  const server = new ExtProcServer(
    {
      host: '127.0.0.1', port: 0, maxReceiveMessageBytes: 1 << 20, drainTimeoutMs: 1000, defaultRequestBodyMode: 'BUFFERED',
      defaultResponseBodyMode: 'NONE', maxBodyBytes: 1 << 20, destinationHeader: 'x-gateway-destination-endpoint', routedToHeader: 'x-routed-to',
    },
    router,
    { decided: () => undefined, protocolError: () => undefined },
    createLogger('silent'),
  );
  const port = await server.start();
  const envoy = new EnvoyDouble({ extProcTarget: `127.0.0.1:${port}`, processingMode: { requestBodyMode: 'BUFFERED' }, messageTimeoutMs: 5000 });
  await envoy.connect();
  return {
    envoy,
    async stop() {
      await envoy.close();
      await server.stop();
    },
  };
}

describe('ext_proc streams with an asynchronous router', () => {
  const router = new SlowRouter(50);
  let envoy: EnvoyDouble;
  let stop: () => Promise<void>;
  before(async () => {
    ({ envoy, stop } = await serve(router));
  });
  after(async () => stop());

  it('messages that arrive while deciding are answered afterwards, in order', async () => {
    const stream = await envoy.openRawStream();
    stream.send(encodeProcessingRequest({ protocol_config: { request_body_mode: 'BUFFERED' }, request_headers: headers({ ':method': 'POST', ':path': '/x' }) }));
    assert.equal(decodeProcessingResponse((await stream.recv(2000))!).response, 'request_headers');
    stream.send(encodeProcessingRequest({ request_body: { body: Buffer.from('{}'), end_of_stream: true } }));
    stream.send(encodeProcessingRequest({ response_headers: headers({ ':status': '200' }) }));
    const first = decodeProcessingResponse((await stream.recv(2000))!);
    const second = decodeProcessingResponse((await stream.recv(2000))!);
    assert.equal(first.response, 'request_body');
    assert.equal(first.request_body?.response?.header_mutation?.set_headers?.[0]?.header?.raw_value?.toString(), '127.0.0.61:8000');
    assert.equal(second.response, 'response_headers');
    assert.equal(second.response_headers?.response?.header_mutation?.set_headers?.[0]?.header?.key, 'x-routed-to');
    const releasesBefore = router.releases;
    stream.closeLikeEnvoy();
    await stream.status;
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(router.releases, releasesBefore + 1);
  });

  it('a stream that ends while its decision is pending gives the destination back at once', async () => {
    const decidedBefore = router.decided;
    const releasesBefore = router.releases;
    const stream = await envoy.openRawStream();
    stream.send(encodeProcessingRequest({ protocol_config: { request_body_mode: 'BUFFERED' }, request_headers: headers({ ':method': 'POST', ':path': '/x' }) }));
    await stream.recv(2000);
    stream.send(encodeProcessingRequest({ request_body: { body: Buffer.from('{}'), end_of_stream: true } }));
    await new Promise((resolve) => setTimeout(resolve, 10));
    stream.closeLikeEnvoy();
    await new Promise((resolve) => setTimeout(resolve, 120));
    assert.equal(router.decided, decidedBefore + 1, 'the decision completed after the stream ended');
    assert.equal(router.releases, releasesBefore + 1, 'and was released exactly once');
  });
});

describe('a router that fails', () => {
  for (const [name, router] of [
    ['throws', { ...TEST_REPLIES, decide: () => { throw new Error('boom'); } }],
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
