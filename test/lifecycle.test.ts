import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { after, before, describe, it, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { EXT_PROC_SERVICE } from '../src/extproc/proto.js';
import { HEALTH_SERVICES } from '../src/extproc/server.js';
import { type Simulator, startSimulator } from '../src/simulator/simulator.js';
import { freePort } from './support/child.js';
import { EnvoyDouble } from './support/envoy/envoy-double.js';
import { startExtProcServer } from './support/extproc-server.js';
import { chatBody, JSON_HEADERS, QWEN } from './support/harness.js';
import { until } from './support/wait.js';

const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));

/** A child process is slow on a loaded machine, and slowest at its first requests (JIT, loading): wait generously. */
const CHILD = { timeoutMs: 30_000 };
const MESSAGE_TIMEOUT_MS = 10_000;

interface LogLine {
  msg: string;
  signal?: string;
}

/** llm-extproc (dist/src/main.js) as a child process on loopback ports of its own. */
interface Child {
  process: ChildProcess;
  grpcPort: number;
  adminPort: number;
  /** Its stdout and stderr so far. */
  output(): string;
  /** Its JSON log lines so far. */
  logs(): LogLine[];
  /** Its exit code, once it has exited and its output is complete. */
  exited: Promise<number | null>;
}

async function startChild(t: TestContext, flags: string[]): Promise<Child> {
  const [grpcPort, adminPort] = [await freePort('127.0.0.1'), await freePort('127.0.0.1')];
  const child = spawn(
    process.execPath,
    [MAIN, '--host=127.0.0.1', `--port=${grpcPort}`, '--admin-host=127.0.0.1', `--admin-port=${adminPort}`, '--log-level=info', ...flags],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  // 'close' comes after 'exit' and after the pipes have ended, so the logs are whole by then.
  const exited = once(child, 'close').then(([code]) => code as number | null);
  const logs = () =>
    output
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as LogLine);
  return { process: child, grpcPort, adminPort, output: () => output, logs, exited };
}

interface ReadyAnswer {
  status: number;
  body: { status: string; endpoints: number; healthy_endpoints: number; unhealthy: unknown[] };
}

async function ready(child: Child): Promise<ReadyAnswer> {
  const response = await fetch(`http://127.0.0.1:${child.adminPort}/ready`);
  return { status: response.status, body: (await response.json()) as ReadyAnswer['body'] };
}

const untilReady = (child: Child) =>
  until(
    '/ready to answer 200',
    () => ready(child),
    (r) => r.status === 200,
    CHILD,
  );

type HealthClient = grpc.Client & {
  check(req: { service: string }, cb: (err: grpc.ServiceError | null, res?: { status: string }) => void): void;
  watch(req: { service: string }): grpc.ClientReadableStream<{ status: string }>;
};

function healthClient(port: number): HealthClient {
  const Client = grpc.makeClientConstructor(healthService, 'Health') as unknown as new (address: string, creds: grpc.ChannelCredentials) => HealthClient;
  return new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
}

function healthStatus(client: HealthClient, service: string): Promise<string> {
  return new Promise((resolve, reject) => client.check({ service }, (err, res) => (err ? reject(err) : resolve(res!.status))));
}

/** A Watch call on `service`: every status it reports, in order (the current one first). */
function watchHealth(client: HealthClient, service: string): { seen: string[]; cancel(): void } {
  const seen: string[] = [];
  const call = client.watch({ service });
  call.on('data', (answer) => seen.push(answer.status));
  call.on('error', () => undefined); // CANCELLED, when the test cancels it
  return { seen, cancel: () => call.cancel() };
}

describe('the service process: health, readiness and the drain', () => {
  let pod: Simulator;
  before(async () => {
    pod = await startSimulator({ engine: 'vllm', models: [QWEN], host: '127.0.0.41', port: 0 });
  });
  after(async () => pod.close());

  it('answers /health, turns /ready 200 after the first probe round, and serves gRPC health', async (t) => {
    const child = await startChild(t, [`--static-hosts=${pod.address}`]);
    await untilReady(child);
    assert.equal((await fetch(`http://127.0.0.1:${child.adminPort}/health`)).status, 200);
    const client = healthClient(child.grpcPort);
    try {
      for (const name of HEALTH_SERVICES) assert.equal(await healthStatus(client, name), 'SERVING', name);
    } finally {
      client.close();
    }
    const metrics = await (await fetch(`http://127.0.0.1:${child.adminPort}/metrics`)).text();
    assert.match(metrics, new RegExp(`llm_extproc_endpoint_healthy\\{endpoint="${pod.address.replace(/\./g, '\\.')}".*\\} 1`));
  });

  for (const [signal, again] of [
    ['SIGTERM', 'SIGINT'],
    ['SIGHUP', 'SIGTERM'],
  ] as const) {
    it(`${signal} drains: not ready at once but still live, ${again} during the drain is ignored, the open request finishes, exit 0`, async (t) => {
      const child = await startChild(t, [`--static-hosts=${pod.address}`, '--drain-timeout=20s']);
      await untilReady(child);
      // Watches opened before the signal: from the signal on, the server refuses new calls (GOAWAY).
      const health = healthClient(child.grpcPort);
      const watches = new Map(HEALTH_SERVICES.map((name) => [name as string, watchHealth(health, name)]));
      const stopWatching = () => {
        for (const watch of watches.values()) watch.cancel();
        health.close();
      };
      t.after(stopWatching);
      const seen = (name: string) => watches.get(name)!.seen;
      await until(
        'every health watch to report SERVING',
        () => HEALTH_SERVICES.map(seen),
        (all) => all.every((statuses) => statuses.at(-1) === 'SERVING'),
        CHILD,
      );
      const envoy = new EnvoyDouble({
        extProcTarget: `127.0.0.1:${child.grpcPort}`,
        processingMode: { requestBodyMode: 'BUFFERED', responseHeaderMode: 'SEND' },
        messageTimeoutMs: MESSAGE_TIMEOUT_MS,
      });
      t.after(() => envoy.close());
      await envoy.connect();
      const exchange = await envoy.open({
        method: 'POST',
        path: '/v1/chat/completions',
        headers: JSON_HEADERS,
        body: chatBody({ model: QWEN, stream: true, max_tokens: 3 }),
      });
      assert.equal(exchange.upstream, pod.address);

      child.process.kill(signal);
      const draining = await until(
        '/ready to answer "draining"',
        () => ready(child),
        (r) => r.body.status === 'draining',
        CHILD,
      );
      assert.equal(draining.status, 503);
      const { status: _, ...rest } = draining.body;
      assert.deepEqual(rest, { endpoints: 1, healthy_endpoints: 1, unhealthy: [] }, 'the other fields are kept');
      assert.equal((await fetch(`http://127.0.0.1:${child.adminPort}/health`)).status, 200, '/health stays 200 during the drain');
      for (const name of ['readiness', EXT_PROC_SERVICE, '']) {
        await until(
          `health "${name}" to turn NOT_SERVING on its watch`,
          () => seen(name),
          (statuses) => statuses.at(-1) === 'NOT_SERVING',
          CHILD,
        );
      }

      child.process.kill(again);
      await until(
        `${again} to be logged as ignored`,
        child.logs,
        (logs) => logs.some((l) => l.msg === 'already draining: signal ignored' && l.signal === again),
        CHILD,
      );
      const response = await exchange.forward();
      assert.equal(response.status, 200, `${response.details} ${response.body.toString()}`);
      assert.equal(response.headers['x-routed-to'], pod.address, 'the response phase still worked during the drain');
      assert.deepEqual(seen('liveness'), ['SERVING'], 'liveness never left SERVING');
      // The watches are open streams too: the drain waits for them as for Envoy's.
      stopWatching();
      await envoy.close();

      assert.equal(await child.exited, 0, child.output());
      const logs = child.logs();
      assert.equal(logs.find((l) => l.msg === 'shutting down: draining open streams')?.signal, signal, 'the log names the signal');
      assert.ok(!logs.some((l) => l.msg.startsWith('drain timeout')), 'the drain ended when its streams did, not on the timeout');
    });
  }
});

describe('ExtProcServer.stop', () => {
  it('a readiness report during the drain (a first probe round ending late) does not make it ready again', async () => {
    const unused = () => assert.fail('no request is routed here');
    const { server, port } = await startExtProcServer({ decide: unused, bodyTooLarge: unused, failed: unused });
    const health = healthClient(port);
    const readiness = watchHealth(health, 'readiness');
    let stopped: Promise<void> | undefined;
    try {
      await until(
        'the readiness watch to report',
        () => readiness.seen,
        (seen) => seen.length === 1,
      );
      stopped = server.stop(); // the open watch holds the drain open
      server.setReady(true);
      // grpc-health-check reports every status set, changed or not, so the late report shows up.
      await until(
        'the stop and the late report on the watch',
        () => readiness.seen,
        (seen) => seen.length === 3,
      );
      assert.deepEqual(readiness.seen, ['NOT_SERVING', 'NOT_SERVING', 'NOT_SERVING']);
    } finally {
      readiness.cancel();
      health.close();
      await (stopped ?? server.stop());
    }
  });
});

describe("the README's first command: --demo", () => {
  it('starts its simulated vLLM and SGLang pods, turns ready, and stops cleanly', async (t) => {
    const child = await startChild(t, ['--demo']);
    const readyAnswer = await untilReady(child);
    assert.equal(readyAnswer.body.healthy_endpoints, 4);
    const envoy = new EnvoyDouble({ extProcTarget: `127.0.0.1:${child.grpcPort}`, messageTimeoutMs: MESSAGE_TIMEOUT_MS });
    await envoy.connect();
    const models = await envoy.request({ method: 'GET', path: '/v1/models' });
    await envoy.close();
    assert.equal(models.status, 200, `GET /v1/models: ${models.details} ${models.body.toString()}`);
    const owners = (JSON.parse(models.body.toString()) as { data: { id: string; owned_by: string }[] }).data
      .filter((m) => m.id === QWEN)
      .map((m) => m.owned_by);
    assert.deepEqual(owners.sort(), ['sglang', 'vllm']);
    child.process.kill('SIGTERM');
    assert.equal(await child.exited, 0, child.output());
  });
});
