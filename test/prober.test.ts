import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import { MAX_MODELS_ANSWER_BYTES, Prober } from '../src/discovery/health/prober.js';
import { EndpointRegistry } from '../src/discovery/registry.js';
import { createLogger } from '../src/log.js';
import { Metrics } from '../src/metrics.js';
import { upsertAll } from './support/endpoints.js';

/** A backend on its own loopback address that answers every request with `handler`. */
async function backend(
  host: string,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<{ server: Server; address: string; requests: string[] }> {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return { server, address: `${host}:${(server.address() as AddressInfo).port}`, requests };
}

const servers: Server[] = [];
after(async () => {
  for (const server of servers) server.closeAllConnections();
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
});

/** Probes `address` once and returns what the registry then holds for it. */
async function probeOnce(address: string, timeoutMs = 2000) {
  const registry = new EndpointRegistry();
  upsertAll(registry, [{ address, name: address, namespace: 'static', labels: {} }]);
  const prober = new Prober(
    registry,
    { intervalMs: 60_000, timeoutMs, unhealthyThreshold: 1, healthyThreshold: 1, modelsIntervalMs: 60_000 },
    new Metrics(registry, () => 0),
    createLogger('silent'),
  );
  await prober.probeAll();
  return registry.get(address)!;
}

const MODELS = JSON.stringify({ object: 'list', data: [{ id: 'm', object: 'model', created: 1, owned_by: 'vllm' }] });

describe('backend probes do not trust the backend', () => {
  it('a valid /v1/models answer makes the endpoint healthy (the baseline the failures below depart from)', async () => {
    const pod = await backend('127.0.0.71', (_req, res) => res.end(MODELS));
    servers.push(pod.server);
    const endpoint = await probeOnce(pod.address);
    assert.equal(endpoint.healthy, true);
    assert.deepEqual(
      endpoint.models.map((m) => m.id),
      ['m'],
    );
  });

  it('an endless /v1/models answer fails once past the byte limit, and the connection is dropped', async () => {
    let closed!: () => void;
    const connectionClosed = new Promise<void>((resolve) => (closed = resolve));
    const chunk = Buffer.alloc(64 * 1024, ' ');
    const pod = await backend('127.0.0.72', (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"data":[');
      const pump = () => {
        while (res.write(chunk)) if (res.destroyed) return;
      };
      res.on('drain', pump);
      res.on('close', closed);
      pump();
    });
    servers.push(pod.server);
    const endpoint = await probeOnce(pod.address);
    assert.equal(endpoint.healthy, false);
    assert.equal(endpoint.lastError, `GET /v1/models: the answer is over the limit of ${MAX_MODELS_ANSWER_BYTES} bytes`);
    await connectionClosed;
  });

  it('a declared content-length over the limit fails before reading', async () => {
    const pod = await backend('127.0.0.73', (_req, res) => {
      res.writeHead(200, { 'content-length': String(MAX_MODELS_ANSWER_BYTES + 1) });
      res.write('{');
    });
    servers.push(pod.server);
    const endpoint = await probeOnce(pod.address);
    assert.equal(endpoint.lastError, `GET /v1/models: the answer is ${MAX_MODELS_ANSWER_BYTES + 1} bytes, over the limit of ${MAX_MODELS_ANSWER_BYTES}`);
  });

  it("a redirect is not followed: the backend is not credited with the other server's models", async () => {
    const other = await backend('127.0.0.74', (_req, res) => res.end(MODELS));
    const pod = await backend('127.0.0.75', (_req, res) => {
      res.writeHead(302, { location: `http://${other.address}/v1/models` });
      res.end();
    });
    servers.push(other.server, pod.server);
    const endpoint = await probeOnce(pod.address);
    assert.equal(endpoint.healthy, false);
    assert.deepEqual(endpoint.models, []);
    assert.equal(endpoint.lastError, 'GET /v1/models: answered 302 (redirects are not followed)');
    assert.deepEqual(other.requests, [], 'the redirect target was never asked');
  });

  it('says why: refused connection, timeout, status, HTML, wrong shape', async () => {
    const closedPort = await backend('127.0.0.76', () => undefined);
    await new Promise((resolve) => closedPort.server.close(resolve));
    let unblock!: () => void;
    const blocked = new Promise<void>((resolve) => (unblock = resolve));
    const hanging = await backend('127.0.0.77', (_req, res) => void blocked.then(() => res.end(MODELS)));
    const failing = await backend('127.0.0.78', (_req, res) => {
      res.writeHead(500);
      res.end('oops');
    });
    const html = await backend('127.0.0.79', (_req, res) => res.end('<html>login</html>'));
    const shapeless = await backend('127.0.0.80', (_req, res) => res.end('{"models":[]}'));
    servers.push(hanging.server, failing.server, html.server, shapeless.server);
    try {
      assert.equal((await probeOnce(closedPort.address)).lastError, 'GET /v1/models: connection refused (ECONNREFUSED)');
      assert.equal((await probeOnce(hanging.address, 200)).lastError, 'GET /v1/models: no answer within 200 ms');
      assert.equal((await probeOnce(failing.address)).lastError, 'GET /v1/models: answered 500');
      assert.match((await probeOnce(html.address)).lastError!, /^GET \/v1\/models: the answer is not JSON \(/);
      assert.equal((await probeOnce(shapeless.address)).lastError, 'GET /v1/models: the answer has no data array');
    } finally {
      unblock();
    }
  });
});
