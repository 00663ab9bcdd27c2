/**
 * How long a dead backend keeps getting traffic: llm-extproc (in-process, default health flags
 * unless a scenario says otherwise) routes live traffic through the Envoy double to three
 * simulated pods; one pod fails, and the clock runs until llm-extproc takes it out of rotation.
 *
 *   killed   the process exits: connections are refused (Envoy answers 503 itself; ext_proc sees
 *            the stream end without response headers)
 *   frozen   the process stops answering but its port still accepts (a hung engine, SIGSTOP)
 *
 * each with passive health on (the default, --passive-ejection=5) and off (active probes only:
 * --probe-interval=5s, --unhealthy-threshold=2, --probe-timeout=2s). Reported: time from the
 * failure to the endpoint leaving rotation, and how many client requests failed meanwhile.
 *
 * Section 7 of `make bench` (bench/run.ts); run alone: node dist/bench/detection.js
 */

import { createServer, type Server, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { createLogger } from '../src/log.js';
import { type Simulator, startSimulator } from '../src/simulator/simulator.js';
import { startBehindEnvoy } from '../test/support/harness.js';
import { MODEL } from './messages.js';

export interface DetectionRow {
  failure: 'killed' | 'frozen';
  passive: boolean;
  /** From the failure to the endpoint leaving rotation. */
  detectionMs: number;
  /** Client requests that failed (non-200) in that time. */
  failedRequests: number;
  /** Requests routed to the failed pod after it left rotation (must be 0). */
  routedAfter: number;
}

const HOSTS = ['127.0.0.201', '127.0.0.202', '127.0.0.203'];
const WORKERS = 4;
const BODY = JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 });

/** A port that accepts connections and never answers (the frozen process). */
async function blackHole(host: string, port: number): Promise<{ close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  return {
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

async function scenario(failure: DetectionRow['failure'], passive: boolean): Promise<DetectionRow> {
  const pods: Simulator[] = [];
  for (const host of HOSTS) pods.push(await startSimulator({ engine: 'vllm', models: [MODEL], host, port: 0, timeToFirstTokenMs: 1, interTokenMs: 1 }));
  // The health flags stay llm-extproc's defaults: --probe-interval=5s is written out because the
  // test harness otherwise probes only when asked.
  const { service, envoy } = await startBehindEnvoy(
    [`--static-hosts=${pods.map((pod) => pod.address).join(',')}`, '--probe-interval=5s', ...(passive ? [] : ['--passive-ejection=0'])],
    {
      log: createLogger('silent'),
      // A frozen upstream holds a request until Envoy's route timeout; the figure counts it as failed.
      envoy: { routeTimeoutMs: 5000, exchangeTimeoutMs: 30_000, bufferLimitBytes: 1024 * 1024 },
    },
  );

  const victim = pods[1]!;
  const endpoint = service.endpoints.get(victim.address)!;
  let failedAt = 0;
  let outAt = 0;
  let failedRequests = 0;
  let routedAfter = 0;
  let running = true;
  const workers = Array.from({ length: WORKERS }, async () => {
    while (running) {
      const sentAfterOut = outAt !== 0;
      const response = await envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: { 'content-type': 'application/json' }, body: BODY });
      if (failedAt !== 0 && !sentAfterOut && response.status !== 200) failedRequests++;
      if (sentAfterOut && response.upstream === victim.address) routedAfter++;
    }
  });
  await new Promise((resolve) => setTimeout(resolve, 500)); // steady traffic first
  const port = victim.port;
  await victim.close();
  const hole = failure === 'frozen' ? await blackHole(victim.host, port) : undefined;
  failedAt = performance.now();
  await new Promise<void>((resolve) => {
    const check = setInterval(() => {
      if (!endpoint.usable) {
        outAt = performance.now();
        clearInterval(check);
        resolve();
      }
    }, 5);
  });
  await new Promise((resolve) => setTimeout(resolve, 1000)); // traffic after detection: none may reach the victim
  running = false;
  await Promise.all(workers);
  await envoy.close();
  await service.stop();
  await hole?.close();
  await Promise.all(pods.map((pod) => pod.close()));
  return { failure, passive, detectionMs: outAt - failedAt, failedRequests, routedAfter };
}

/** Every scenario in turn; `starting` is told before each one (progress lines). */
export async function runDetectionBench(starting?: (failure: DetectionRow['failure'], passive: boolean) => void): Promise<DetectionRow[]> {
  const rows: DetectionRow[] = [];
  for (const failure of ['killed', 'frozen'] as const) {
    for (const passive of [true, false]) {
      starting?.(failure, passive);
      rows.push(await scenario(failure, passive));
    }
  }
  return rows;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const row of await runDetectionBench()) {
    console.log(
      `${row.failure.padEnd(7)} passive ${row.passive ? 'on ' : 'off'}  out after ${(row.detectionMs / 1000).toFixed(2)} s, ` +
        `${row.failedRequests} client requests failed meanwhile, ${row.routedAfter} routed to it afterwards`,
    );
  }
}
