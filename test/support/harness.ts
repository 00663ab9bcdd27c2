import { Writable } from 'node:stream';
import type { Logger } from 'pino';
import { type Service, type ServiceOptions, startService } from '../../src/app/service.js';
import { type Config, readConfiguration } from '../../src/config/config.js';
import { createLogger } from '../../src/log.js';
import { type Engine, type Simulator, startSimulator } from '../../src/simulator/simulator.js';
import { EnvoyDouble, type EnvoyDoubleOptions } from './envoy/envoy-double.js';
import { until } from './wait.js';

export const QWEN = 'Qwen/Qwen2.5-0.5B-Instruct';
export const LLAMA = 'meta-llama/Llama-3.2-1B-Instruct';

export interface PodSpec {
  engine: Engine;
  models: string[];
  /** Loopback address of its own, e.g. 127.0.0.11. */
  host: string;
  /** Endpoint group: the pod is listed as `group=address` in --static-hosts. */
  group?: string;
  timeToFirstTokenMs?: number;
  interTokenMs?: number;
}

/** Two vLLM pods (one also serving Llama) and two SGLang pods, each on its own loopback address. */
export const DEFAULT_PODS: PodSpec[] = [
  { engine: 'vllm', models: [QWEN, LLAMA], host: '127.0.0.11' },
  { engine: 'vllm', models: [QWEN], host: '127.0.0.12' },
  { engine: 'sglang', models: [QWEN], host: '127.0.0.13' },
  { engine: 'sglang', models: [QWEN], host: '127.0.0.14' },
];

export interface Cluster {
  pods: Simulator[];
  service: Service;
  envoy: EnvoyDouble;
  config: Config;
  podByAddress(address: string | undefined): Simulator | undefined;
  /** In-flight count per endpoint address, as llm-extproc's ledger holds it. */
  inFlight(): Record<string, number>;
  /** Resolves when every endpoint's in-flight count is zero (bounded). */
  settled(timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

/**
 * Simulated pods + the real llm-extproc (in-process, ephemeral ports) + an Envoy double pointed at
 * it. `flags` are llm-extproc command-line flags, `envoy` the double's options.
 */
export async function startCluster(
  options: ServiceOptions & { pods?: PodSpec[]; flags?: string[]; envoy?: Partial<EnvoyDoubleOptions>; logs?: NodeJS.WritableStream; log?: Logger } = {},
): Promise<Cluster> {
  const { pods: podSpecs, flags, logs: logStream, log, ...serviceOptions } = options;
  const pods: Simulator[] = [];
  const specs = podSpecs ?? DEFAULT_PODS;
  for (const spec of specs) {
    pods.push(
      await startSimulator({
        engine: spec.engine,
        models: spec.models,
        host: spec.host,
        port: 0,
        timeToFirstTokenMs: spec.timeToFirstTokenMs ?? 1,
        interTokenMs: spec.interTokenMs ?? 1,
      }),
    );
  }
  // TEST_LOG_LEVEL=debug shows the service's logs while debugging a test.
  const { config, service, envoy } = await startBehindEnvoy(
    [`--static-hosts=${pods.map((pod, i) => `${specs[i]!.group ? `${specs[i]!.group}=` : ''}${pod.address}`).join(',')}`, ...(flags ?? [])],
    { ...serviceOptions, log: log ?? (logStream ? createLogger('info', logStream) : undefined) },
  );
  const inFlight = () => Object.fromEntries(service.endpoints.all().map((e) => [e.address, e.inFlight]));
  return {
    pods,
    service,
    envoy,
    config,
    podByAddress: (address) => pods.find((pod) => pod.address === address),
    inFlight,
    async settled(timeoutMs = 5000) {
      await until('in-flight counts back to zero', inFlight, (counts) => Object.values(counts).every((n) => n === 0), { timeoutMs });
    },
    async close() {
      await envoy.close();
      await service.stop();
      await Promise.all(pods.map((pod) => pod.close()));
    },
  };
}

/** Where a test's llm-extproc listens (loopback, ports of its own) and probes only when the test asks. */
const TEST_FLAGS = ['--host=127.0.0.1', '--port=0', '--admin-host=127.0.0.1', '--admin-port=0', '--probe-interval=60s'];

/**
 * The real llm-extproc (in-process) from `flags` (after TEST_FLAGS, so they may override them),
 * its first probe round done, and an Envoy double (BUFFERED, response headers sent) connected to it.
 */
export async function startBehindEnvoy(
  flags: readonly string[],
  options: ServiceOptions & { log?: Logger; envoy?: Partial<EnvoyDoubleOptions> } = {},
): Promise<{ config: Config; service: Service; envoy: EnvoyDouble }> {
  const argv = [...TEST_FLAGS, ...flags];
  const { config, settings } = readConfiguration(argv, options.env)!;
  const log = options.log ?? createLogger((process.env.TEST_LOG_LEVEL as 'debug' | undefined) ?? 'silent');
  const service = await startService(config, log, { reload: { argv, settings }, ...options });
  await service.prober.probeAll();
  const envoy = new EnvoyDouble({
    extProcTarget: `127.0.0.1:${service.grpcPort}`,
    processingMode: { requestBodyMode: 'BUFFERED', responseHeaderMode: 'SEND' },
    messageTimeoutMs: 10_000,
    bufferLimitBytes: 64 * 1024 * 1024,
    routeTimeoutMs: 0,
    exchangeTimeoutMs: 20_000,
    ...options.envoy,
  });
  await envoy.connect();
  return { config, service, envoy };
}

/** Runs `fn` against a cluster of its own, closed afterwards whatever happens. */
export async function withCluster<T>(options: Parameters<typeof startCluster>[0], fn: (cluster: Cluster) => Promise<T>): Promise<T> {
  const cluster = await startCluster(options);
  try {
    return await fn(cluster);
  } finally {
    await cluster.close();
  }
}

export function chatBody(fields: Record<string, unknown>): string {
  return JSON.stringify({ messages: [{ role: 'user', content: 'Hello!' }], max_tokens: 4, ...fields });
}

export const JSON_HEADERS = { 'content-type': 'application/json' };

/** A log destination for startCluster's `logs` that keeps every JSON line, raw and parsed. */
export function captureLogs(): { stream: Writable; lines: Record<string, unknown>[]; raw: string[] } {
  const lines: Record<string, unknown>[] = [];
  const raw: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) {
        raw.push(line);
        lines.push(JSON.parse(line) as Record<string, unknown>);
      }
      done();
    },
  });
  return { stream, lines, raw };
}
