import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { EXT_PROC_SERVICE } from '../src/extproc/proto.js';
import { startSimulator, type Simulator } from '../src/simulator/simulator.js';
import { EnvoyDouble } from './support/envoy/envoy-double.js';
import { JSON_HEADERS, QWEN, chatBody, exitCode } from './support/harness.js';
import { until } from './support/wait.js';

const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));

async function freePort(host: string): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

type HealthClient = grpc.Client & { check(req: { service: string }, cb: (err: grpc.ServiceError | null, res?: { status: string }) => void): void };

function healthStatus(client: HealthClient, service: string): Promise<string> {
  return new Promise((resolve, reject) => client.check({ service }, (err, res) => (err ? reject(err) : resolve(res!.status))));
}

/** A child process answers its first requests slowly (JIT, module loading): wait generously. */
const COLD = { timeoutMs: 30_000 };
const MESSAGE_TIMEOUT_MS = 10_000;

describe('the service process: health, readiness and SIGTERM', () => {
  let pod: Simulator;
  let child: ChildProcess;
  let grpcPort: number;
  let adminPort: number;
  let stderr = '';

  before(async () => {
    pod = await startSimulator({ engine: 'vllm', models: [QWEN], host: '127.0.0.41', port: 0 });
    grpcPort = await freePort('127.0.0.1');
    adminPort = await freePort('127.0.0.1');
    child = spawn(process.execPath, [MAIN, `--static-hosts=${pod.address}`, '--host=127.0.0.1', `--port=${grpcPort}`, '--admin-host=127.0.0.1', `--admin-port=${adminPort}`, '--drain-timeout=5s', '--log-level=warn'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  });
  after(async () => {
    if (child.exitCode === null) child.kill('SIGKILL');
    await pod.close();
  });

  it('answers /health, turns /ready 200 after the first probe round, and serves gRPC health', async () => {
    const ready = await until('/ready to answer 200', () => fetch(`http://127.0.0.1:${adminPort}/ready`).then((r) => r.status), (s) => s === 200, COLD);
    assert.equal(ready, 200);
    assert.equal((await fetch(`http://127.0.0.1:${adminPort}/health`)).status, 200);
    const Client = grpc.makeClientConstructor(healthService, 'Health') as unknown as new (address: string, creds: grpc.ChannelCredentials) => HealthClient;
    const client = new Client(`127.0.0.1:${grpcPort}`, grpc.credentials.createInsecure());
    try {
      for (const name of ['', 'liveness', 'readiness', EXT_PROC_SERVICE]) assert.equal(await healthStatus(client, name), 'SERVING', name);
    } finally {
      client.close();
    }
    const metrics = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
    assert.match(metrics, new RegExp(`llm_extproc_endpoint_healthy\\{endpoint="${pod.address.replace(/\./g, '\\.')}".*\\} 1`));
  });

  it('SIGTERM lets an open request finish, then exits 0', async () => {
    const envoy = new EnvoyDouble({ extProcTarget: `127.0.0.1:${grpcPort}`, processingMode: { requestBodyMode: 'BUFFERED', responseHeaderMode: 'SEND' }, messageTimeoutMs: MESSAGE_TIMEOUT_MS });
    await envoy.connect();
    const exchange = await envoy.open({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody({ model: QWEN, stream: true, max_tokens: 3 }) });
    assert.equal(exchange.upstream, pod.address);
    child.kill('SIGTERM');
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(child.exitCode, null, 'still draining while a stream is open');
    const response = await exchange.forward();
    assert.equal(response.status, 200);
    assert.equal(response.headers['x-routed-to'], pod.address, 'the response phase still worked during the drain');
    await envoy.close();
    assert.equal(await exitCode(child), 0, stderr);
  });
});

describe("the README's first command: --demo", () => {
  it('starts its simulated vLLM and SGLang pods, turns ready, and stops cleanly', async () => {
    const [grpcPort, adminPort] = [await freePort('127.0.0.1'), await freePort('127.0.0.1')];
    const child = spawn(process.execPath, [MAIN, '--demo', '--host=127.0.0.1', `--port=${grpcPort}`, '--admin-host=127.0.0.1', `--admin-port=${adminPort}`, '--log-level=warn'], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    try {
      const ready = await until(
        'the demo\'s /ready to answer 200',
        () => fetch(`http://127.0.0.1:${adminPort}/ready`).then(async (r) => ({ status: r.status, body: (await r.json()) as { healthy_endpoints: number } })),
        (r) => r.status === 200,
        COLD,
      );
      assert.equal(ready.body.healthy_endpoints, 4);
      const envoy = new EnvoyDouble({ extProcTarget: `127.0.0.1:${grpcPort}`, messageTimeoutMs: MESSAGE_TIMEOUT_MS });
      await envoy.connect();
      const models = await envoy.request({ method: 'GET', path: '/v1/models' });
      await envoy.close();
      assert.equal(models.status, 200, `GET /v1/models: ${models.details} ${models.body.toString()}`);
      const owners = (JSON.parse(models.body.toString()) as { data: { id: string; owned_by: string }[] }).data.filter((m) => m.id === QWEN).map((m) => m.owned_by);
      assert.deepEqual(owners.sort(), ['sglang', 'vllm']);
      child.kill('SIGTERM');
      assert.equal(await exitCode(child), 0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
