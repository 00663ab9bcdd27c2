import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { Destination, RequestOutcome, RequestRouter, RouteDecision } from '../src/extproc/types.js';
import { decodeProcessingResponse, EnvoyDouble, encodeProcessingRequest } from './support/envoy/envoy-double.js';
import { startExtProcServer } from './support/extproc-server.js';
import { type Deferred, defer } from './support/wait.js';

/** Routes every request to `target` and hands the test each request's outcome. */
class OutcomeRouter implements RequestRouter {
  target = '127.0.0.1:1';
  private outcome: Deferred<RequestOutcome> = defer();
  readonly bodyTooLarge = () => ({ status: 413, body: '', contentType: 'text/plain', reason: 'test' });
  readonly failed = () => ({ status: 500, body: '', contentType: 'text/plain', reason: 'test' });

  /** Call before the request: resolves with how it ended. */
  nextOutcome(): Promise<RequestOutcome> {
    this.outcome = defer();
    return this.outcome.promise;
  }

  decide(): RouteDecision {
    const settle = this.outcome;
    const destination: Destination = {
      address: this.target,
      addressBytes: Buffer.from(this.target),
      release: (outcome) => settle.resolve(outcome),
    };
    return { kind: 'route', destination };
  }
}

const headers = (record: Record<string, string>) => ({
  headers: { headers: Object.entries(record).map(([key, value]) => ({ key, raw_value: Buffer.from(value) })) },
});

describe('how a routed request ended, as the stream reports it (passive health reads this)', () => {
  const router = new OutcomeRouter();
  let envoy: EnvoyDouble;
  let stopServer: () => Promise<void>;
  let upstream: Server;
  let upstreamAddress: string;
  let holdUpstream: (() => void) | undefined;
  before(async () => {
    const { server, port } = await startExtProcServer(router);
    stopServer = () => server.stop();
    envoy = new EnvoyDouble({
      extProcTarget: `127.0.0.1:${port}`,
      processingMode: { requestBodyMode: 'BUFFERED', responseHeaderMode: 'SEND' },
      messageTimeoutMs: 5000,
    });
    await envoy.connect();
    // /slow holds its answer until the test says; every other path answers with the status it names.
    upstream = createServer((req, res) => {
      if (req.url === '/slow') {
        holdUpstream = () => res.end('late');
        return;
      }
      res.writeHead(Number(req.url!.slice(1)));
      res.end('x');
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.91', resolve));
    upstreamAddress = `127.0.0.91:${(upstream.address() as AddressInfo).port}`;
  });
  after(async () => {
    await envoy.close();
    await stopServer();
    upstream.closeAllConnections();
    await new Promise((resolve) => upstream.close(resolve));
  });

  const post = (path: string) => ({ method: 'POST', path, headers: { 'content-type': 'application/json' }, body: '{"model":"m"}' });

  it('the upstream answered: its status, 2xx or 5xx', async () => {
    router.target = upstreamAddress;
    for (const status of [200, 503]) {
      const outcome = router.nextOutcome();
      const response = await envoy.request(post(`/${status}`));
      assert.equal(response.status, status);
      assert.deepEqual(await outcome, { kind: 'response', status });
    }
  });

  it('the upstream refused the connection: Envoy answers 503 itself, and ext_proc only sees the stream end', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.92', resolve));
    router.target = `127.0.0.92:${(closed.address() as AddressInfo).port}`;
    await new Promise((resolve) => closed.close(resolve));
    const outcome = router.nextOutcome();
    const response = await envoy.request(post('/200'));
    assert.equal(response.status, 503);
    assert.equal(response.localReply, true);
    assert.deepEqual(await outcome, { kind: 'no_response' });
  });

  it('a client that gives up while the backend is silent looks the same (documented: it counts as no response)', async () => {
    router.target = upstreamAddress;
    const outcome = router.nextOutcome();
    const exchange = await envoy.open(post('/slow'));
    const forwarded = exchange.forward();
    await exchange.abort();
    assert.deepEqual(await outcome, { kind: 'no_response' });
    holdUpstream?.();
    await forwarded.catch(() => undefined);
  });

  /** STREAMED request bodies: routed on the headers, chunks follow. */
  async function streamedRouted() {
    router.target = '127.0.0.93:8000';
    const outcome = router.nextOutcome();
    const stream = await envoy.openRawStream();
    stream.send(
      encodeProcessingRequest({
        protocol_config: { request_body_mode: 'STREAMED' },
        request_headers: headers({ ':method': 'POST', ':path': '/v1/completions', 'x-owned-by': 'vllm' }),
      }),
    );
    assert.equal(decodeProcessingResponse((await stream.recv(2000))!).response, 'request_headers');
    stream.send(encodeProcessingRequest({ request_body: { body: Buffer.from('{"model":'), end_of_stream: false } }));
    assert.equal(decodeProcessingResponse((await stream.recv(2000))!).response, 'request_body');
    return { stream, outcome };
  }

  it('the client went away while still sending its body: abandoned, not the backend’s fault', async () => {
    const { stream, outcome } = await streamedRouted();
    stream.closeLikeEnvoy();
    assert.deepEqual(await outcome, { kind: 'abandoned' });
  });

  it('control: the same stream with its body complete ends as no response', async () => {
    const { stream, outcome } = await streamedRouted();
    stream.send(encodeProcessingRequest({ request_body: { body: Buffer.from('"m"}'), end_of_stream: true } }));
    assert.equal(decodeProcessingResponse((await stream.recv(2000))!).response, 'request_body');
    stream.closeLikeEnvoy();
    assert.deepEqual(await outcome, { kind: 'no_response' });
  });
});
