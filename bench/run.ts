/**
 * `make bench`: measures llm-extproc's ext_proc decision path against a bare grpc-js ext_proc
 * server that does no work, under the same Envoy-like load, and prints a report (also written as
 * JSON to .bench/last.json). See docs/benchmark.md for what each figure means.
 *
 * Processes: this orchestrator (with the simulated backends, in-process), llm-extproc and the bare
 * server (child processes, so each one's CPU time can be read from /proc), and the load generator
 * (child process, bench/loadgen.ts). With taskset and ≥ 2 cores, the servers run on CPU 1 and
 * everything else on CPU 0.
 *
 *   node dist/bench/run.js [--quick] [--no-pin] [--profile] [--sections=closed,open,large,scraped,chain,picker,json-scan,detection]
 *   env: BENCH_SECONDS BENCH_WARMUP_SECONDS BENCH_ROUNDS BENCH_CONCURRENCY BENCH_FULL_DUPLEX_CONCURRENCY BENCH_CONNECTIONS BENCH_RATE
 *        BENCH_OPEN_SECONDS BENCH_LARGE_SECONDS BENCH_LARGE_CONCURRENCY BENCH_LARGE_SIZES BENCH_SCRAPED_ENDPOINTS BENCH_SCRAPED_CONCURRENCY
 *        BENCH_CHAIN_CONCURRENCY BENCH_CHAIN_SECONDS
 *        BENCH_PIN BENCH_PICKER_MS
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { type Simulator, startSimulator } from '../src/simulator/simulator.js';
import { type DetectionRow, runDetectionBench } from './detection.js';
import { type GcSummary, isGcLine, summarizeGc } from './gc-trace.js';
import { type SurvivorSummary, summarizeSurvivors } from './heap-survivors.js';
import { runJsonScanBench } from './json-scan.js';
import type { Scenario, ScenarioResult } from './loadgen.js';
import { MODEL } from './messages.js';
import { type PickerRow, ratioToLeastOutstanding, runPickerBench } from './picker.js';
import { canPin, clockTicksPerSecond, describeMachine, freePort, hasProcCpu, pinProcess, processCpuMs } from './proc.js';
import { categoryBreakdown, frameTimes } from './profile.js';
import { fmt, fmtInt, type Percentiles, percentiles, ratio, table } from './stats.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const DIST = join(ROOT, 'dist');
const MiB = 1024 * 1024;
/** Where --heap-survivors profiles are written (the servers get it as BENCH_HEAP_SURVIVORS_DIR). */
const HEAP_SURVIVORS_DIR = join(ROOT, '.bench', 'heap-survivors');

// ---------------------------------------------------------------- options

const SECTIONS = ['closed', 'open', 'large', 'scraped', 'chain', 'picker', 'json-scan', 'detection'] as const;
type Section = (typeof SECTIONS)[number];

interface Options {
  quick: boolean;
  pin: boolean;
  profile: boolean;
  traceGc: boolean;
  heapSurvivors: boolean;
  nodelay: boolean;
  bareLike: string;
  sections: Set<Section>;
  closedSeconds: number;
  warmupSeconds: number;
  rounds: number;
  concurrency: number[];
  fullDuplexConcurrency: number;
  connections: number;
  rate: number;
  openSeconds: number;
  largeSeconds: number;
  largeConcurrency: number;
  largeSizes: number[];
  scrapedEndpoints: number;
  scrapedConcurrency: number[];
  chainConcurrency: number;
  chainSeconds: number;
  pickerMs: number;
  out: string;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      'no-pin': { type: 'boolean', default: false },
      profile: { type: 'boolean', default: false },
      'trace-gc': { type: 'boolean', default: false },
      'heap-survivors': { type: 'boolean', default: false },
      nodelay: { type: 'boolean', default: false },
      'bare-like': { type: 'string', default: '' },
      sections: { type: 'string' },
      seconds: { type: 'string' },
      warmup: { type: 'string' },
      rounds: { type: 'string' },
      concurrency: { type: 'string' },
      'full-duplex-concurrency': { type: 'string' },
      connections: { type: 'string' },
      rate: { type: 'string' },
      'open-seconds': { type: 'string' },
      'large-seconds': { type: 'string' },
      'large-concurrency': { type: 'string' },
      'large-sizes': { type: 'string' },
      'scraped-endpoints': { type: 'string' },
      'scraped-concurrency': { type: 'string' },
      'chain-concurrency': { type: 'string' },
      'chain-seconds': { type: 'string' },
      'picker-ms': { type: 'string' },
      out: { type: 'string', default: '.bench/last.json' },
    },
  });
  const quick = values.quick || process.env.BENCH_QUICK === '1';
  const pick = (flag: string | undefined, env: string, full: string, short: string) => flag ?? process.env[env] ?? (quick ? short : full);
  const num = (text: string, what: string) => {
    const n = Number(text);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${what}: "${text}" is not a positive number`);
    return n;
  };
  const list = (text: string, what: string, unit = 1) => text.split(',').map((part) => num(part.trim().replace(/MiB$/i, ''), what) * unit);
  const sections = new Set<Section>();
  for (const name of (values.sections ?? process.env.BENCH_SECTIONS ?? SECTIONS.join(',')).split(',')) {
    if (!(SECTIONS as readonly string[]).includes(name.trim())) throw new Error(`--sections: unknown section "${name}" (${SECTIONS.join(', ')})`);
    sections.add(name.trim() as Section);
  }
  return {
    quick,
    pin: !values['no-pin'] && process.env.BENCH_PIN !== '0',
    profile: values.profile,
    traceGc: values['trace-gc'],
    heapSurvivors: values['heap-survivors'],
    nodelay: values.nodelay || process.env.BENCH_NODELAY === '1',
    bareLike: values['bare-like'] ?? '',
    sections,
    closedSeconds: num(pick(values.seconds, 'BENCH_SECONDS', '10', '2.5'), '--seconds'),
    warmupSeconds: num(pick(values.warmup, 'BENCH_WARMUP_SECONDS', '1', '0.5'), '--warmup'),
    rounds: Math.round(num(pick(values.rounds, 'BENCH_ROUNDS', '4', '2'), '--rounds')),
    concurrency: list(pick(values.concurrency, 'BENCH_CONCURRENCY', '1,16,64,256', '1,16,64,256'), '--concurrency').map(Math.round),
    fullDuplexConcurrency: Math.round(num(pick(values['full-duplex-concurrency'], 'BENCH_FULL_DUPLEX_CONCURRENCY', '64', '64'), '--full-duplex-concurrency')),
    connections: Math.round(num(pick(values.connections, 'BENCH_CONNECTIONS', '4', '4'), '--connections')),
    rate: num(pick(values.rate, 'BENCH_RATE', '500', '500'), '--rate'),
    openSeconds: num(pick(values['open-seconds'], 'BENCH_OPEN_SECONDS', '20', '4'), '--open-seconds'),
    largeSeconds: num(pick(values['large-seconds'], 'BENCH_LARGE_SECONDS', '10', '2'), '--large-seconds'),
    largeConcurrency: Math.round(num(pick(values['large-concurrency'], 'BENCH_LARGE_CONCURRENCY', '2', '2'), '--large-concurrency')),
    largeSizes: list(pick(values['large-sizes'], 'BENCH_LARGE_SIZES', '1,8', '1,8'), '--large-sizes', MiB),
    scrapedEndpoints: Math.round(num(pick(values['scraped-endpoints'], 'BENCH_SCRAPED_ENDPOINTS', '100', '100'), '--scraped-endpoints')),
    scrapedConcurrency: list(pick(values['scraped-concurrency'], 'BENCH_SCRAPED_CONCURRENCY', '64', '64'), '--scraped-concurrency').map(Math.round),
    chainConcurrency: Math.round(num(pick(values['chain-concurrency'], 'BENCH_CHAIN_CONCURRENCY', '64', '64'), '--chain-concurrency')),
    chainSeconds: num(pick(values['chain-seconds'], 'BENCH_CHAIN_SECONDS', '8', '2'), '--chain-seconds'),
    pickerMs: num(pick(values['picker-ms'], 'BENCH_PICKER_MS', '400', '150'), '--picker-ms'),
    out: resolve(ROOT, values.out),
  };
}

// ---------------------------------------------------------------- output

/** --heap-survivors: asks both servers for their profile of scavenge survivors and prints the largest allocators. */
async function heapSurvivorsSection(servers: { bare: ServerProcess; ext: ServerProcess }) {
  say('== Heap survivors (--heap-survivors: sampled allocations that outlived a scavenge, whole run)');
  const result: Record<string, SurvivorSummary> = {};
  for (const server of [servers.bare, servers.ext]) {
    const file = join(HEAP_SURVIVORS_DIR, `${server.pid}.heapprofile`);
    server.child.kill('SIGUSR2');
    const deadline = Date.now() + 20_000;
    while (!existsSync(file) && Date.now() < deadline) await sleep(100);
    if (!existsSync(file)) throw new Error(`${server.name} wrote no heap profile to ${file}`);
    const summary = summarizeSurvivors(file);
    result[server.name] = summary;
    say(`   ${server.name}: ${fmt(summary.totalBytes / MiB, 1)} MiB sampled; largest allocation sites:`);
    for (const { chain, bytes } of summary.chains) say(`     ${fmt(bytes / MiB, 2).padStart(6)} MiB  ${chain.slice(0, 200)}`);
  }
  say();
  return result;
}

/** Both servers' collections over the whole run (--trace-gc); their trace lines leave `output`. */
function gcSection(servers: { bare: ServerProcess; ext: ServerProcess }, extDecisions: number) {
  say('== GC (--trace-gc, both servers, whole run including warm-up and the ping floor)');
  const rows: string[][] = [];
  const result: Record<string, GcSummary & { per1000: number; lines: string[] }> = {};
  for (const server of [servers.bare, servers.ext]) {
    const gc = summarizeGc(server.output);
    const lines = server.output.filter(isGcLine);
    server.output.splice(0, server.output.length, ...server.output.filter((line) => !isGcLine(line)));
    const per1000 = (gc.scavenges + gc.fullCollections) / (extDecisions / 1000);
    result[server.name] = { ...gc, per1000, lines };
    rows.push([server.name, fmtInt(gc.scavenges), fmtInt(gc.fullCollections), fmt(gc.pauseMs, 1), fmt(gc.longestPauseMs, 2), fmt(per1000, 2)]);
  }
  say(table([['server', 'scavenges', 'full GCs', 'pause ms total', 'longest ms', 'GCs per 1000 ext requests'], ...rows]));
  say("   both servers see the same request count per section; the bare server's collections are the floor of grpc-js itself");
  say();
  return result;
}

const text: string[] = [];
/** Report text: printed and kept for the JSON. */
function say(line = ''): void {
  text.push(line);
  process.stdout.write(`${line}\n`);
}
/** Progress: stderr only. */
function progress(line: string): void {
  process.stderr.write(`  · ${line}\n`);
}

// ---------------------------------------------------------------- child processes

const SERVER_CPU = '1';
const LOADGEN_CPU = '0';

function nodeCommand(pin: boolean, cpu: string, args: string[]): [string, string[]] {
  return pin ? ['taskset', ['-c', cpu, process.execPath, ...args]] : [process.execPath, args];
}

/** Node flags for both server processes (the --nodelay experiment). */
/** Node flags for a server; BENCH_SERVER_NODE_FLAGS (both) and BENCH_EXT_NODE_FLAGS (llm-extproc only) are for experiments. */
function serverNodeFlags(opts: Options, server: 'bare' | 'llm-extproc'): string[] {
  const fromEnv = (name: string) => (process.env[name] ?? '').split(/\s+/).filter(Boolean);
  return [
    ...(opts.nodelay ? [`--import=${pathToFileURL(join(DIST, 'bench', 'nodelay-preload.js')).href}`] : []),
    ...(opts.traceGc ? ['--trace-gc'] : []),
    ...(opts.heapSurvivors ? [`--import=${pathToFileURL(join(DIST, 'bench', 'heap-survivors-preload.js')).href}`] : []),
    ...fromEnv('BENCH_SERVER_NODE_FLAGS'),
    ...(server === 'llm-extproc' ? fromEnv('BENCH_EXT_NODE_FLAGS') : []),
  ];
}

interface ServerProcess {
  name: 'bare' | 'llm-extproc';
  /** In tables and progress lines; `name` unless several llm-extproc run (section scraped). */
  label: string;
  child: ChildProcess;
  pid: number;
  target: string;
  adminPort?: number;
  output: string[];
  settings?: unknown;
}

function collectLines(child: ChildProcess, into: string[], onLine?: (line: string) => void): void {
  for (const stream of [child.stdout, child.stderr]) {
    let rest = '';
    stream?.setEncoding('utf8');
    stream?.on('data', (chunk: string) => {
      rest += chunk;
      for (let i = rest.indexOf('\n'); i >= 0; i = rest.indexOf('\n')) {
        const line = rest.slice(0, i);
        rest = rest.slice(i + 1);
        if (onLine) onLine(line);
        else if (line.trim()) into.push(line);
      }
    });
  }
}

interface LlmExtprocStart {
  label?: string;
  /** More command-line flags (after the defaults, so they win). */
  args?: string[];
  /** Ready only once every backend also has fresh engine figures (one series per endpoint in
   *  llm_extproc_endpoint_engine_running_requests): the first scrape round is done. */
  freshLoad?: boolean;
  /** More environment variables for the child (over this process's, which it inherits). */
  env?: Record<string, string>;
}

async function startLlmExtproc(
  opts: Options,
  backends: Simulator[],
  profileDir: string | undefined,
  { label = 'llm-extproc', args: extra = [], freshLoad = false, env }: LlmExtprocStart = {},
): Promise<ServerProcess> {
  const port = await freePort();
  const adminPort = await freePort();
  const args = [
    ...serverNodeFlags(opts, 'llm-extproc'),
    ...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${join(profileDir, 'llm-extproc')}`] : []),
    join(DIST, 'src', 'main.js'),
    `--static-hosts=${backends.map((b) => b.address).join(',')}`,
    '--host=127.0.0.1',
    `--port=${port}`,
    '--admin-host=127.0.0.1',
    `--admin-port=${adminPort}`,
    '--log-level=warn',
    '--drain-timeout=2s',
    ...extra,
  ];
  const [cmd, argv] = nodeCommand(opts.pin, SERVER_CPU, args);
  const child = track(spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], ...(env ? { env: { ...process.env, ...env } } : {}) }));
  const output: string[] = [];
  collectLines(child, output);
  const server: ServerProcess = { name: 'llm-extproc', label, child, pid: child.pid!, target: `127.0.0.1:${port}`, adminPort, output };
  const deadline = Date.now() + 20_000;
  let waitingFor = '/ready';
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${label} exited with ${child.exitCode}:\n${output.join('\n')}`);
    try {
      const res = await fetch(`http://127.0.0.1:${adminPort}/ready`);
      const body = (await res.json()) as { healthy_endpoints?: number };
      if (res.status === 200 && body.healthy_endpoints === backends.length) {
        waitingFor = 'fresh engine figures from every backend';
        if (!freshLoad || (await readMetrics(server)).count(FRESH_LOAD_SERIES) === backends.length) break;
      }
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${label} not ready after 20 s (waiting for ${waitingFor}):\n${output.join('\n')}`);
    await sleep(100);
  }
  return server;
}

async function startBare(opts: Options, destination: string, profileDir: string | undefined): Promise<ServerProcess> {
  const args = [
    ...serverNodeFlags(opts, 'bare'),
    ...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${join(profileDir, 'bare')}`] : []),
    join(DIST, 'bench', 'bare-server.js'),
    ...(opts.bareLike ? [`--like=${opts.bareLike}`] : []),
    '--port=0',
    `--destination=${destination}`,
    `--grpc-max-receive-size=${64 * MiB}`,
  ];
  const [cmd, argv] = nodeCommand(opts.pin, SERVER_CPU, args);
  const child = track(spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] }));
  const output: string[] = [];
  return new Promise((resolvePromise, reject) => {
    let started = false;
    collectLines(child, output, (line) => {
      if (!started && line.startsWith('{')) {
        started = true;
        const info = JSON.parse(line) as { listening: number; grpcOptions: unknown; http2: unknown };
        resolvePromise({
          name: 'bare',
          label: 'bare',
          child,
          pid: child.pid!,
          target: `127.0.0.1:${info.listening}`,
          output,
          settings: { grpcOptions: info.grpcOptions, http2: info.http2 },
        });
      } else if (line.trim()) output.push(line);
    });
    child.once('exit', (code) => {
      if (!started) reject(new Error(`bare server exited with ${code}:\n${output.join('\n')}`));
    });
  });
}

/** Every child started, so none outlives the orchestrator (Ctrl-C, a closed pipe, a crash). */
const allChildren = new Set<ChildProcess>();
function track(child: ChildProcess): ChildProcess {
  allChildren.add(child);
  child.once('exit', () => allChildren.delete(child));
  return child;
}
process.on('exit', () => {
  for (const child of allChildren) child.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => process.exit(130));
process.stdout.on('error', () => process.exit(1));

async function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

class LoadGenerator {
  private pending: { resolve: (r: ScenarioResult) => void; reject: (e: Error) => void } | undefined;
  readonly ready: Promise<void>;

  private constructor(readonly child: ChildProcess) {
    this.ready = new Promise((resolveReady, rejectReady) => {
      child.once('exit', (code) => {
        const err = new Error(`load generator exited (${code})`);
        rejectReady(err);
        this.pending?.reject(err);
      });
      child.on('message', (m: { type: string; result?: ScenarioResult; message?: string }) => {
        if (m.type === 'ready') resolveReady();
        else if (m.type === 'result') this.settle((p) => p.resolve(m.result!));
        else if (m.type === 'error') this.settle((p) => p.reject(new Error(`load generator: ${m.message}`)));
      });
    });
  }

  static start(opts: Options): LoadGenerator {
    const [cmd, argv] = nodeCommand(opts.pin, LOADGEN_CPU, [join(DIST, 'bench', 'loadgen.js')]);
    return new LoadGenerator(track(spawn(cmd, argv, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced' })));
  }

  private settle(f: (p: NonNullable<LoadGenerator['pending']>) => void): void {
    const p = this.pending;
    this.pending = undefined;
    if (p) f(p);
  }

  run(scenario: Scenario): Promise<ScenarioResult> {
    if (this.pending) throw new Error('one scenario at a time');
    return new Promise((resolveRun, reject) => {
      this.pending = { resolve: resolveRun, reject };
      this.child.send({ type: 'run', scenario });
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.child.send({ type: 'exit' });
    await exited;
  }
}

// ---------------------------------------------------------------- measurement

/** Requests each server answered completely over the whole run (warm-ups included), for --profile. */
const servedTotals: Record<string, number> = {};
function served(server: ServerProcess, result: ScenarioResult): ScenarioResult {
  servedTotals[server.label] = (servedTotals[server.label] ?? 0) + result.completedTotal;
  return result;
}

/** One server's figures for one load shape, summed over its slices. */
interface Measured {
  server: string;
  slices: number;
  completed: number;
  started: number;
  wallSeconds: number;
  requestsPerSecond: number;
  serverCpuSeconds: number;
  /** Server CPU time / completed requests. */
  cpuUsPerRequest: number;
  /** Server CPU time / wall time (1.0 = one core busy). */
  serverCores: number;
  loadgenCpuUsPerRequest: number;
  loadgenCores: number;
  /** CPU the other (idle) servers used meanwhile: their background work (probes, scrapes, metrics timers). */
  idleServerCores: number;
  /** Machine CPU not used by the server under test, the idle servers or the load generator
   *  (other processes on the machine, kernel threads, this orchestrator): noise. */
  backgroundCores: number;
  /** The same, in the worst slice. */
  backgroundCoresMax: number;
  stealCores: number;
  latencyUs: Percentiles;
  headersRtUs: Percentiles;
  /** FULL_DUPLEX: request_headers sent → last echoed body chunk. */
  echoUs: Percentiles;
  lagUs?: Percentiles;
  errors: Record<string, number>;
  errorCount: number;
  streamsLost: number;
  goaways: number;
  connectionErrors: number;
  validated: number;
  destinations: Record<string, number>;
}

/** CPU time used on the machine by anything but the servers and the load generator (ms). */
function background(r: ScenarioResult): number {
  return r.machineBusyMs - r.serverCpuMs - r.loadgenCpuMs - r.idleServerCpuMs;
}

function summarize(server: string, results: ScenarioResult[]): Measured {
  const sum = (f: (r: ScenarioResult) => number) => results.reduce((n, r) => n + f(r), 0);
  const completed = sum((r) => r.completed);
  const wallSeconds = sum((r) => r.wallMs) / 1000;
  const serverCpuMs = sum((r) => r.serverCpuMs);
  const loadgenCpuMs = sum((r) => r.loadgenCpuMs);
  const errors: Record<string, number> = {};
  const destinations: Record<string, number> = {};
  for (const r of results) {
    for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
    for (const [k, v] of Object.entries(r.destinations)) destinations[k] = (destinations[k] ?? 0) + v;
  }
  const lag = results.flatMap((r) => (r.lagUs.length ? [r.lagUs] : []));
  return {
    server,
    slices: results.length,
    completed,
    started: sum((r) => r.started),
    wallSeconds,
    requestsPerSecond: completed / wallSeconds,
    serverCpuSeconds: serverCpuMs / 1000,
    cpuUsPerRequest: (serverCpuMs * 1000) / completed,
    serverCores: serverCpuMs / 1000 / wallSeconds,
    loadgenCpuUsPerRequest: (loadgenCpuMs * 1000) / completed,
    loadgenCores: loadgenCpuMs / 1000 / wallSeconds,
    idleServerCores: sum((r) => r.idleServerCpuMs) / 1000 / wallSeconds,
    backgroundCores: Math.max(0, sum(background)) / 1000 / wallSeconds,
    backgroundCoresMax: Math.max(0, ...results.map((r) => background(r) / r.wallMs)),
    stealCores: sum((r) => r.machineStealMs) / 1000 / wallSeconds,
    latencyUs: percentiles(...results.map((r) => r.latencyUs)),
    headersRtUs: percentiles(...results.map((r) => r.headersRtUs)),
    echoUs: percentiles(...results.map((r) => r.echoUs)),
    ...(lag.length ? { lagUs: percentiles(...lag) } : {}),
    errors,
    errorCount: Object.values(errors).reduce((a, b) => a + b, 0),
    streamsLost: sum((r) => r.streamsLost),
    goaways: sum((r) => r.goaways),
    connectionErrors: sum((r) => r.connectionErrors),
    validated: sum((r) => r.validated),
    destinations,
  };
}

/** One llm-extproc against the bare slices of the same rounds. */
interface Versus {
  ext: Measured;
  /** CPU per request llm-extproc/bare of each round (slices run back to back): the spread shows noise. */
  cpuRatioPerRound: number[];
  /** Decision latency p90 and p99, llm-extproc/bare, of each round: GC pauses move these most. */
  p90RatioPerRound: number[];
  p99RatioPerRound: number[];
}

interface Pair extends Versus {
  bare: Measured;
}

type ScenarioBase = Omit<Scenario, 'name' | 'target' | 'serverPid' | 'idlePids' | 'durationMs' | 'seed'>;

/** A closed-loop load: `concurrency` requests always in flight, after the usual warm-up. */
function closedLoad(opts: Options, ticks: number, requestMode: RequestMode, concurrency: number, bodyBytes = 1024, timeoutMs = 10_000): ScenarioBase {
  return {
    connections: opts.connections,
    mode: 'closed',
    requestMode,
    concurrency,
    rate: 0,
    warmupMs: opts.warmupSeconds * 1000,
    bodyBytes,
    timeoutMs,
    clockTicks: ticks,
  };
}

/**
 * Runs the same scenario against the bare server and each llm-extproc in `exts`, `rounds` times,
 * the order reversed every other round (bare, ext… | …ext, bare | …) so slow drift of a noisy
 * machine hits all alike. The servers not under test are the slice's idle ones, with `alsoIdle`
 * (other processes of the section, e.g. a plugin server: their CPU is then not counted as noise).
 */
async function measureAgainstBare(
  lg: LoadGenerator,
  bare: ServerProcess,
  exts: ServerProcess[],
  opts: Options,
  base: ScenarioBase,
  totalSeconds: number,
  label: string,
  alsoIdle: number[] = [],
): Promise<{ bare: Measured; versus: Versus[] }> {
  const servers = [bare, ...exts];
  const results: ScenarioResult[][] = servers.map(() => []);
  const sliceMs = (totalSeconds * 1000) / opts.rounds;
  for (let round = 0; round < opts.rounds; round++) {
    const order = servers.map((_, i) => i);
    if (round % 2 === 1) order.reverse();
    for (const i of order) {
      const server = servers[i]!;
      progress(`${label}: ${server.label}, round ${round + 1}/${opts.rounds}`);
      const result = served(
        server,
        await lg.run({
          ...base,
          name: `${label} ${server.label}`,
          target: server.target,
          serverPid: server.pid,
          idlePids: [...servers.filter((other) => other !== server).map((other) => other.pid), ...alsoIdle],
          durationMs: sliceMs,
          seed: (round + 1) * 7919,
        }),
      );
      results[i]!.push(result);
    }
  }
  const [bareResults, ...extResults] = results as [ScenarioResult[], ...ScenarioResult[][]];
  const perRequest = (r: ScenarioResult) => r.serverCpuMs / r.completed;
  return {
    bare: summarize(bare.label, bareResults),
    versus: extResults.map((ext, k) => {
      const latencyRatios = (pick: (p: Percentiles) => number) =>
        ext.map((r, i) => pick(percentiles(r.latencyUs)) / pick(percentiles(bareResults[i]!.latencyUs)));
      return {
        ext: summarize(exts[k]!.label, ext),
        cpuRatioPerRound: ext.map((r, i) => perRequest(r) / perRequest(bareResults[i]!)),
        p90RatioPerRound: latencyRatios((p) => p.p90),
        p99RatioPerRound: latencyRatios((p) => p.p99),
      };
    }),
  };
}

/** measureAgainstBare with one llm-extproc: the two servers alternate (bare, ext | ext, bare | …). */
async function measurePair(
  lg: LoadGenerator,
  servers: { bare: ServerProcess; ext: ServerProcess },
  opts: Options,
  base: ScenarioBase,
  totalSeconds: number,
  label: string,
): Promise<Pair> {
  const { bare, versus } = await measureAgainstBare(lg, servers.bare, [servers.ext], opts, base, totalSeconds, label);
  return { bare, ...versus[0]! };
}

let noisy = false;

/**
 * One line on what else used the machine while these were measured. `groups`: the servers
 * measured together (in the same rounds), each group's idle servers being the others of it.
 */
function noiseLine(groups: Measured[][]): void {
  const all = groups.flat();
  const max = (f: (m: Measured) => number) => Math.max(...all.map(f));
  // The idle servers' CPU during each server's slices, named after the idle ones.
  const idle = new Map<string, number>();
  for (const group of groups) {
    for (const m of group) {
      const others = group
        .filter((other) => other !== m)
        .map((other) => other.server)
        .join(' + ');
      idle.set(others, Math.max(idle.get(others) ?? 0, m.idleServerCores));
    }
  }
  const idleText = [...idle].map(([names, cores]) => `${names} ≤ ${fmt(cores, 3)}`).join(', ');
  const worst = max((m) => m.backgroundCoresMax);
  say(
    `   noise: other CPU use on the machine ${fmt(
      max((m) => m.backgroundCores),
      2,
    )} cores on average, up to ${fmt(worst, 2)} in a slice; steal up to ${fmt(
      max((m) => m.stealCores),
      2,
    )}; ` + `idle server${idle.size > 2 ? 's' : ''} meanwhile: ${idleText} cores`,
  );
  if (worst > 0.25) {
    noisy = true;
    say(`   WARNING: other processes used up to ${fmt(worst, 2)} cores during this section: its figures are unreliable, re-run on a quiet machine`);
  }
}

function spread(values: number[]): string {
  return `${Math.min(...values).toFixed(2)}–${Math.max(...values).toFixed(2)}x`;
}

function errorsCell(m: Measured): string {
  return `${m.errorCount}/${m.streamsLost}/${m.goaways}`;
}

function listErrors(measured: Measured[]): void {
  for (const m of measured) {
    for (const [k, v] of Object.entries(m.errors)) say(`    ! ${m.server}: ${v} × ${k}`);
    if (m.connectionErrors) say(`    ! ${m.server}: ${m.connectionErrors} HTTP/2 session errors`);
  }
}

/** The bare and llm-extproc figures of each pair, for noiseLine and listErrors. */
function pairGroups(pairs: Pair[]): Measured[][] {
  return pairs.map((p) => [p.bare, p.ext]);
}

// ---------------------------------------------------------------- sections

/** The transport's floor on this machine: HTTP/2 PING round trips to the idle bare server. */
async function pingFloor(lg: LoadGenerator, bare: ServerProcess, opts: Options, ticks: number) {
  const result = await lg.run({
    name: 'ping',
    target: bare.target,
    serverPid: bare.pid,
    idlePids: [],
    connections: 1,
    mode: 'ping',
    requestMode: 'buffered',
    concurrency: 0,
    rate: 0,
    warmupMs: 0,
    durationMs: opts.quick ? 1000 : 3000,
    bodyBytes: 1024,
    timeoutMs: 10_000,
    clockTicks: ticks,
    seed: 3,
  });
  const p = percentiles(result.latencyUs);
  say(`floor:    HTTP/2 PING round trip to the idle bare server (answered inside nghttp2, no JavaScript): p50 ${fmt(p.p50, 0)} µs,`);
  say(
    `          p99 ${fmt(p.p99, 0)} µs, p99.9 ${fmt(p.p999, 0)} µs, max ${fmt(p.max, 0)} µs over ${fmtInt(p.count)} pings — no latency below this is possible here`,
  );
  say();
  return p;
}

type RequestMode = Scenario['requestMode'];
const MODE_NAME: Record<RequestMode, string> = { buffered: 'BUFFERED', full_duplex: 'FULL_DUPLEX' };

/**
 * One untimed closed-loop run at 64 streams, so measured slices do not pay for JIT compilation:
 * by default 2 warm-up periods in BUFFERED, 1 in FULL_DUPLEX, at least 1 s.
 */
async function warmUp(
  lg: LoadGenerator,
  server: ServerProcess,
  opts: Options,
  ticks: number,
  requestMode: RequestMode,
  durationMs = Math.max(1000, opts.warmupSeconds * (requestMode === 'buffered' ? 2000 : 1000)),
): Promise<void> {
  progress(`warm-up ${server.label} (${MODE_NAME[requestMode]})`);
  served(
    server,
    await lg.run({
      name: 'warm-up',
      target: server.target,
      serverPid: server.pid,
      idlePids: [],
      connections: opts.connections,
      mode: 'closed',
      requestMode,
      concurrency: 64,
      rate: 0,
      warmupMs: 0,
      durationMs,
      bodyBytes: 1024,
      timeoutMs: 10_000,
      clockTicks: ticks,
      seed: 1,
    }),
  );
}

interface ClosedRow {
  mode: RequestMode;
  concurrency: number;
  bare: Measured;
  llmExtproc: Measured;
  cpuRatioPerRound: number[];
  ratios: Record<string, number>;
}

async function closedLoop(lg: LoadGenerator, servers: { bare: ServerProcess; ext: ServerProcess }, opts: Options, ticks: number) {
  say(
    `== 1. Closed loop: N streams in flight, 1 KiB chat body, ${opts.connections} HTTP/2 connections; BUFFERED lifecycle at N = ${opts.concurrency.join(', ')},`,
  );
  say(`   FULL_DUPLEX_STREAMED at N = ${opts.fullDuplexConcurrency}`);
  say(`   baseline: bare grpc-js ext_proc server (same stack, answers at once); ${opts.closedSeconds} s measured per server per row,`);
  say(`   in ${opts.rounds} alternating slices, each after ${opts.warmupSeconds} s warm-up`);
  // One untimed warm-up of both, in both modes, so the first measured slice does not pay for JIT compilation.
  for (const requestMode of ['buffered', 'full_duplex'] as const) {
    for (const server of [servers.bare, servers.ext]) await warmUp(lg, server, opts, ticks, requestMode);
  }
  const rows: ClosedRow[] = [];
  const pairs: Pair[] = [];
  const shapes: { mode: RequestMode; concurrency: number }[] = [
    ...opts.concurrency.map((concurrency) => ({ mode: 'buffered' as const, concurrency })),
    { mode: 'full_duplex', concurrency: opts.fullDuplexConcurrency },
  ];
  for (const { mode, concurrency } of shapes) {
    const pair = await measurePair(
      lg,
      servers,
      opts,
      closedLoad(opts, ticks, mode, concurrency),
      opts.closedSeconds,
      `closed ${MODE_NAME[mode]} N=${concurrency}`,
    );
    pairs.push(pair);
    rows.push({
      mode,
      concurrency,
      bare: pair.bare,
      llmExtproc: pair.ext,
      cpuRatioPerRound: pair.cpuRatioPerRound,
      ratios: {
        cpuPerRequest: pair.ext.cpuUsPerRequest / pair.bare.cpuUsPerRequest,
        requestsPerSecond: pair.ext.requestsPerSecond / pair.bare.requestsPerSecond,
        p50: pair.ext.latencyUs.p50 / pair.bare.latencyUs.p50,
        p99: pair.ext.latencyUs.p99 / pair.bare.latencyUs.p99,
      },
    });
  }
  const header = ['mode', 'N', 'server', 'req/s', 'CPU µs/req', 'server cores', 'p50 µs', 'p99 µs', 'err/lost/GOAWAY', 'loadgen µs/req', 'loadgen cores'];
  const body: string[][] = [];
  for (const row of rows) {
    for (const m of [row.bare, row.llmExtproc]) {
      body.push([
        MODE_NAME[row.mode],
        String(row.concurrency),
        m.server,
        fmtInt(m.requestsPerSecond),
        fmt(m.cpuUsPerRequest),
        fmt(m.serverCores, 2),
        fmt(m.latencyUs.p50, 0),
        fmt(m.latencyUs.p99, 0),
        errorsCell(m),
        fmt(m.loadgenCpuUsPerRequest),
        fmt(m.loadgenCores, 2),
      ]);
    }
    body.push([
      '',
      '',
      'ratio ext/bare',
      ratio(row.llmExtproc.requestsPerSecond, row.bare.requestsPerSecond),
      ratio(row.llmExtproc.cpuUsPerRequest, row.bare.cpuUsPerRequest),
      '',
      ratio(row.llmExtproc.latencyUs.p50, row.bare.latencyUs.p50),
      ratio(row.llmExtproc.latencyUs.p99, row.bare.latencyUs.p99),
      '',
      '',
      '',
    ]);
  }
  say(table([header, ...body]));
  listErrors(pairGroups(pairs).flat());
  noiseLine(pairGroups(pairs));
  const dest = pairs
    .map((p) => p.ext.destinations)
    .reduce(
      (acc, d) => {
        for (const [k, v] of Object.entries(d)) acc[k] = (acc[k] ?? 0) + v;
        return acc;
      },
      {} as Record<string, number>,
    );
  const validated = pairs.reduce((n, p) => n + p.ext.validated + p.bare.validated, 0);
  say('   latency = request_headers sent → the answer carrying the destination: BUFFERED, the request_body answer (two round trips);');
  say('   FULL_DUPLEX, the request_headers answer (one round trip, the body sent with the headers); stream set-up included');
  say(
    `   checked: every answer's type and destination header, every FULL_DUPLEX echo against the body sent; ${fmtInt(validated)} routing answers fully decoded.`,
  );
  say(
    `   llm-extproc destinations in the decoded sample: ${Object.entries(dest)
      .sort()
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`,
  );
  const label = (r: ClosedRow) => `${r.mode === 'buffered' ? '' : `${MODE_NAME[r.mode]} `}N=${r.concurrency}`;
  const cpuRatios = rows.map((r) => r.ratios.cpuPerRequest!);
  say(`   headline — CPU per request, llm-extproc/bare: ${rows.map((r) => `${label(r)} ${r.ratios.cpuPerRequest!.toFixed(2)}x`).join(', ')} (target ≤ 1.30x)`);
  say(`   per round (ext slice / the bare slice next to it): ${pairs.map((p, i) => `${label(rows[i]!)} ${spread(p.cpuRatioPerRound)}`).join('; ')}`);
  const fd = rows.find((r) => r.mode === 'full_duplex');
  const sameN = fd && rows.find((r) => r.mode === 'buffered' && r.concurrency === fd.concurrency);
  if (fd && sameN) {
    const vs = (f: (m: Measured) => number) => `bare ${ratio(f(fd.bare), f(sameN.bare))}, llm-extproc ${ratio(f(fd.llmExtproc), f(sameN.llmExtproc))}`;
    say(
      `   FULL_DUPLEX / BUFFERED at N=${fd.concurrency}: CPU per request ${vs((m) => m.cpuUsPerRequest)}; req/s ${vs((m) => m.requestsPerSecond)}; p50 ${vs((m) => m.latencyUs.p50)}`,
    );
  }
  say();
  return { rows, maxCpuRatio: Math.max(...cpuRatios) };
}

interface OpenResult {
  mode: RequestMode;
  bare: Measured;
  llmExtproc: Measured;
  cpuRatioPerRound: number[];
  targets: { p50Met: boolean; p99Met: boolean };
}

async function openLoop(lg: LoadGenerator, servers: { bare: ServerProcess; ext: ServerProcess }, opts: Options, ticks: number) {
  say(
    `== 2. Open loop: Poisson arrivals at ${opts.rate} req/s (not closed loop), 1 KiB body, ${opts.connections} connections, BUFFERED then FULL_DUPLEX_STREAMED`,
  );
  say(`   baseline: bare server at the same arrival sequence; ${opts.openSeconds} s measured per server per mode in ${opts.rounds} alternating slices`);
  const out: OpenResult[] = [];
  for (const mode of ['buffered', 'full_duplex'] as const) {
    const pair = await measurePair(
      lg,
      servers,
      opts,
      {
        connections: opts.connections,
        mode: 'open',
        requestMode: mode,
        concurrency: 0,
        rate: opts.rate,
        warmupMs: opts.warmupSeconds * 1000,
        bodyBytes: 1024,
        timeoutMs: 10_000,
        clockTicks: ticks,
      },
      opts.openSeconds,
      `open ${opts.rate}/s ${MODE_NAME[mode]}`,
    );
    const fullDuplex = mode === 'full_duplex';
    say(
      fullDuplex
        ? '   2b. FULL_DUPLEX_STREAMED: request_headers + request_body sent at once → request_headers answer with the destination → body echoed'
        : '   2a. BUFFERED: request_headers → CONTINUE, then request_body → the answer with the destination',
    );
    // BUFFERED: the first round trip (request_headers → CONTINUE) on its own. FULL_DUPLEX: the
    // decision is that first round trip; what follows is the echo of the body.
    const extra = fullDuplex ? 'echo p50/p99 µs' : '1st RT p50/p99 µs';
    const header = [
      'server',
      'req/s',
      'p50 µs',
      'p90 µs',
      'p99 µs',
      'p99.9 µs',
      'max µs',
      extra,
      'CPU µs/req',
      'server cores',
      'err/lost/GOAWAY',
      'send lag p99 µs',
    ];
    const rows = [pair.bare, pair.ext].map((m) => {
      const second = fullDuplex ? m.echoUs : m.headersRtUs;
      return [
        m.server,
        fmtInt(m.requestsPerSecond),
        fmt(m.latencyUs.p50, 0),
        fmt(m.latencyUs.p90, 0),
        fmt(m.latencyUs.p99, 0),
        fmt(m.latencyUs.p999, 0),
        fmt(m.latencyUs.max, 0),
        `${fmt(second.p50, 0)}/${fmt(second.p99, 0)}`,
        fmt(m.cpuUsPerRequest),
        fmt(m.serverCores, 2),
        errorsCell(m),
        fmt(m.lagUs?.p99 ?? NaN, 0),
      ];
    });
    rows.push([
      'ratio ext/bare',
      ratio(pair.ext.requestsPerSecond, pair.bare.requestsPerSecond),
      ratio(pair.ext.latencyUs.p50, pair.bare.latencyUs.p50),
      ratio(pair.ext.latencyUs.p90, pair.bare.latencyUs.p90),
      ratio(pair.ext.latencyUs.p99, pair.bare.latencyUs.p99),
      ratio(pair.ext.latencyUs.p999, pair.bare.latencyUs.p999),
      '',
      '',
      ratio(pair.ext.cpuUsPerRequest, pair.bare.cpuUsPerRequest),
      '',
      '',
      '',
    ]);
    say(table([header, ...rows]));
    listErrors([pair.bare, pair.ext]);
    noiseLine(pairGroups([pair]));
    const p50ok = pair.ext.latencyUs.p50 < 500;
    const p99ok = pair.ext.latencyUs.p99 < 2000;
    say(
      `   llm-extproc targets: p50 ${fmt(pair.ext.latencyUs.p50 / 1000, 3)} ms (< 0.5 ms: ${p50ok ? 'met' : 'MISSED'}), p99 ${fmt(pair.ext.latencyUs.p99 / 1000, 3)} ms (< 2 ms: ${p99ok ? 'met' : 'MISSED'}); CPU ratio per round ${spread(pair.cpuRatioPerRound)}`,
    );
    say(
      `   latency ratio per round (GC pauses of both servers move it; see docs/benchmark.md): p90 ${spread(pair.p90RatioPerRound)}, p99 ${spread(pair.p99RatioPerRound)}`,
    );
    say(
      fullDuplex
        ? '   latency = request_headers sent → request_headers answer with the destination (one round trip, the body sent with the headers);'
        : '   latency = request_headers sent → request_body answer with the destination (two round trips); "1st RT" = the request_headers round trip alone;',
    );
    say(
      fullDuplex
        ? '   "echo" = request_headers sent → the last echoed body chunk (end_of_stream), when Envoy has the whole body back to send upstream'
        : '   stream set-up included; measured from the actual send; "send lag" = how late the load generator sent vs the schedule',
    );
    say();
    out.push({ mode, bare: pair.bare, llmExtproc: pair.ext, cpuRatioPerRound: pair.cpuRatioPerRound, targets: { p50Met: p50ok, p99Met: p99ok } });
  }
  const [buffered, fd] = out as [OpenResult, OpenResult];
  const vs = (f: (m: Measured) => number) => `bare ${ratio(f(fd.bare), f(buffered.bare))}, llm-extproc ${ratio(f(fd.llmExtproc), f(buffered.llmExtproc))}`;
  say(
    `   FULL_DUPLEX / BUFFERED at ${opts.rate} req/s: decision p50 ${vs((m) => m.latencyUs.p50)}; p99 ${vs((m) => m.latencyUs.p99)}; CPU per request ${vs((m) => m.cpuUsPerRequest)}`,
  );
  say();
  return { rate: opts.rate, modes: out };
}

async function largeBodies(lg: LoadGenerator, servers: { bare: ServerProcess; ext: ServerProcess }, opts: Options, ticks: number) {
  say(`== 3. Large bodies: BUFFERED, the whole body in one request_body message, N=${opts.largeConcurrency} in flight, ${opts.connections} connections`);
  say(`   baseline: bare server (same gRPC receive limit, 64 MiB); ${opts.largeSeconds} s measured per server per size in ${opts.rounds} alternating slices`);
  const out: { bodyBytes: number; bare: Measured; llmExtproc: Measured; cpuRatio: number; cpuRatioPerRound: number[] }[] = [];
  const pairs: Pair[] = [];
  for (const size of opts.largeSizes) {
    const pair = await measurePair(
      lg,
      servers,
      opts,
      closedLoad(opts, ticks, 'buffered', opts.largeConcurrency, size, 30_000),
      opts.largeSeconds,
      `large ${size / MiB} MiB`,
    );
    pairs.push(pair);
    out.push({
      bodyBytes: size,
      bare: pair.bare,
      llmExtproc: pair.ext,
      cpuRatio: pair.ext.cpuUsPerRequest / pair.bare.cpuUsPerRequest,
      cpuRatioPerRound: pair.cpuRatioPerRound,
    });
  }
  const header = ['body', 'server', 'req/s', 'MiB/s', 'CPU ms/req', 'server cores', 'p50 ms', 'p99 ms', 'err/lost/GOAWAY', 'loadgen ms/req'];
  const body: string[][] = [];
  for (const row of out) {
    const mib = row.bodyBytes / MiB;
    for (const m of [row.bare, row.llmExtproc]) {
      body.push([
        `${mib} MiB`,
        m.server,
        fmt(m.requestsPerSecond, 1),
        fmt(m.requestsPerSecond * mib, 0),
        fmt(m.cpuUsPerRequest / 1000, 2),
        fmt(m.serverCores, 2),
        fmt(m.latencyUs.p50 / 1000, 2),
        fmt(m.latencyUs.p99 / 1000, 2),
        errorsCell(m),
        fmt(m.loadgenCpuUsPerRequest / 1000, 2),
      ]);
    }
    body.push([
      '',
      'ratio ext/bare',
      ratio(row.llmExtproc.requestsPerSecond, row.bare.requestsPerSecond),
      '',
      ratio(row.llmExtproc.cpuUsPerRequest, row.bare.cpuUsPerRequest),
      '',
      ratio(row.llmExtproc.latencyUs.p50, row.bare.latencyUs.p50),
      ratio(row.llmExtproc.latencyUs.p99, row.bare.latencyUs.p99),
      '',
      '',
    ]);
    body.push(['', 'extra CPU', '', '', fmt((row.llmExtproc.cpuUsPerRequest - row.bare.cpuUsPerRequest) / 1000, 2), '', '', '', '', '']);
  }
  say(table([header, ...body]));
  listErrors(pairGroups(pairs).flat());
  noiseLine(pairGroups(pairs));
  say(`   CPU ratio per round: ${out.map((r) => `${r.bodyBytes / MiB} MiB ${spread(r.cpuRatioPerRound)}`).join('; ')}`);
  say('   latency: request_headers sent → destination answer received, body transfer included');
  say();
  return out;
}

/**
 * Requests each server of section 6 has answered (warm-ups included) before it is measured. With
 * the usual warm-up alone, a freshly started llm-extproc measured up to 0.2x higher against the
 * bare server than after 50,000 more requests.
 */
const SCRAPED_WARM_REQUESTS = 50_000;

/** Loopback address of the i-th pod of section 6: 127.0.2.1, 127.0.2.2, … (250 per /24, then 127.0.3.1, …). */
function scrapedHost(i: number): string {
  return `127.0.${2 + Math.floor(i / 250)}.${1 + (i % 250)}`;
}

/** What an llm-extproc's /metrics says about its scrapes (and routing) at one moment. */
async function scrapeReading(ext: ServerProcess) {
  const m = await readMetrics(ext);
  const scrapes = 'llm_extproc_engine_scrapes_total';
  return {
    at: performance.now(),
    success: m.sum(scrapes, (l) => l.includes('result="success"')),
    failed: m.sum(scrapes, (l) => !l.includes('result="success"')),
    /** Endpoints with fresh engine figures. */
    fresh: m.count(FRESH_LOAD_SERIES),
    routed: m.sum('llm_extproc_requests_total', (l) => l.includes('outcome="routed"')),
  };
}
type ScrapeReading = Awaited<ReturnType<typeof scrapeReading>>;

const perSecond = (before: ScrapeReading, after: ScrapeReading, f: (r: ScrapeReading) => number) => (f(after) - f(before)) / ((after.at - before.at) / 1000);

/** CPU each server uses over `seconds` with nothing to route (probes, scrapes, timers), and its successful scrapes per second meanwhile. */
async function idleCost(exts: ServerProcess[], seconds: number, ticks: number) {
  progress(`idle ${seconds} s: ${exts.map((e) => e.label).join(', ')}`);
  const before = await Promise.all(exts.map(scrapeReading)); // /metrics answered before the CPU window opens
  const t0 = performance.now();
  const cpu0 = exts.map((e) => processCpuMs(e.pid, ticks));
  await sleep(seconds * 1000);
  const cpu1 = exts.map((e) => processCpuMs(e.pid, ticks));
  const wallMs = performance.now() - t0;
  const after = await Promise.all(exts.map(scrapeReading));
  return exts.map((_, i) => ({ cores: (cpu1[i]! - cpu0[i]!) / wallMs, scrapesPerSecond: perSecond(before[i]!, after[i]!, (r) => r.success) }));
}

interface ScrapedRow {
  concurrency: number;
  bare: Measured;
  /** The 4-endpoint llm-extproc of section 1. */
  fewEndpoints: Versus;
  scraped: Versus;
  cpuRatio: { fewEndpoints: number; scraped: number };
  /** llm-extproc (scraped) − llm-extproc (4 endpoints), µs per request. */
  extraCpuUsPerRequest: number;
}

/**
 * Section 6: llm-extproc routing among many scraped endpoints (load_aware, default
 * --metrics-interval) against the bare server, with the 4-endpoint llm-extproc of section 1 as a
 * reference, under the closed-loop BUFFERED load of section 1.
 */
async function scrapedSection(lg: LoadGenerator, servers: { bare: ServerProcess; ext: ServerProcess }, opts: Options, ticks: number) {
  const n = opts.scrapedEndpoints;
  const idleSeconds = opts.quick ? 2 : 5;
  say(
    `== 6. Scraped endpoints: llm-extproc with ${n} simulated pods (${scrapedHost(0)}-${scrapedHost(n - 1)}, vLLM and SGLang alternately), --routing-logic=load_aware,`,
  );
  say(
    `   every pod's /metrics scraped every 1 s (--metrics-interval default); closed loop BUFFERED at N = ${opts.scrapedConcurrency.join(', ')}, as in section 1`,
  );
  say(
    `   baseline: bare server; reference: llm-extproc of section 1 (4 endpoints, least_outstanding_requests); ${opts.closedSeconds} s measured per server per row,`,
  );
  say(
    `   in ${opts.rounds} slices (bare, 4, ${n} | ${n}, 4, bare | …), each after ${opts.warmupSeconds} s warm-up; then ${idleSeconds} s idle (no load) for each one's background CPU;`,
  );
  say(`   before the rows, each server is warmed up until it has answered ${fmtInt(SCRAPED_WARM_REQUESTS)} requests in all (the new llm-extproc starts cold)`);
  const pods: Simulator[] = [];
  let scraped: ServerProcess | undefined;
  try {
    progress(`starting ${n} simulators`);
    pods.push(
      ...(await Promise.all(
        Array.from({ length: n }, (_, i) => startSimulator({ engine: i % 2 === 0 ? 'vllm' : 'sglang', models: [MODEL], host: scrapedHost(i), port: 0 })),
      )),
    );
    progress(`starting llm-extproc with ${n} endpoints`);
    const startedAt = performance.now();
    scraped = await startLlmExtproc(opts, pods, undefined, { label: `llm-extproc (${n})`, args: ['--routing-logic=load_aware'], freshLoad: true });
    const readyMs = performance.now() - startedAt;
    const fewLabel = `${servers.ext.label} (4)`;
    // The new llm-extproc is a fresh process, the others may have answered millions: warm each one
    // up to the same count, so none is measured colder (JIT tiers, heap sizes) than the others.
    for (const server of [servers.bare, servers.ext, scraped]) {
      for (let runs = 0; runs < 20 && (runs === 0 || (servedTotals[server.label] ?? 0) < SCRAPED_WARM_REQUESTS); runs++) {
        await warmUp(lg, server, opts, ticks, 'buffered');
      }
    }

    const before = await scrapeReading(scraped);
    const rows: ScrapedRow[] = [];
    for (const concurrency of opts.scrapedConcurrency) {
      const { bare, versus } = await measureAgainstBare(
        lg,
        servers.bare,
        [servers.ext, scraped],
        opts,
        closedLoad(opts, ticks, 'buffered', concurrency),
        opts.closedSeconds,
        `scraped N=${concurrency}`,
      );
      const [few, many] = versus as [Versus, Versus];
      rows.push({
        concurrency,
        bare,
        fewEndpoints: few,
        scraped: many,
        cpuRatio: { fewEndpoints: few.ext.cpuUsPerRequest / bare.cpuUsPerRequest, scraped: many.ext.cpuUsPerRequest / bare.cpuUsPerRequest },
        extraCpuUsPerRequest: many.ext.cpuUsPerRequest - few.ext.cpuUsPerRequest,
      });
    }
    const after = await scrapeReading(scraped);
    // After the load: the scraping code as warm as it was under load (right after the start it costs more).
    const [idleFew, idleScraped] = (await idleCost([servers.ext, scraped], idleSeconds, ticks)) as [IdleCost, IdleCost];

    const header = ['N', 'server', 'req/s', 'CPU µs/req', 'vs bare', 'server cores', 'p50 µs', 'p99 µs', 'err/lost/GOAWAY', 'loadgen cores'];
    const body: string[][] = [];
    for (const row of rows) {
      for (const m of [row.bare, row.fewEndpoints.ext, row.scraped.ext]) {
        body.push([
          String(row.concurrency),
          m === row.fewEndpoints.ext ? fewLabel : m.server,
          fmtInt(m.requestsPerSecond),
          fmt(m.cpuUsPerRequest),
          ratio(m.cpuUsPerRequest, row.bare.cpuUsPerRequest),
          fmt(m.serverCores, 2),
          fmt(m.latencyUs.p50, 0),
          fmt(m.latencyUs.p99, 0),
          errorsCell(m),
          fmt(m.loadgenCores, 2),
        ]);
      }
    }
    say(table([header, ...body]));
    const measured = rows.map((r) => [r.bare, r.fewEndpoints.ext, r.scraped.ext]);
    listErrors(measured.flat());
    noiseLine(measured.map((group) => group.map((m) => (m === group[1] ? { ...m, server: fewLabel } : m))));
    say(
      `   CPU ratio per round (each llm-extproc slice / the bare slice of its round): ${rows
        .map((r) => `N=${r.concurrency} 4 endpoints ${spread(r.fewEndpoints.cpuRatioPerRound)}, ${n} endpoints ${spread(r.scraped.cpuRatioPerRound)}`)
        .join('; ')}`,
    );
    const scrapesPerSecond = perSecond(before, after, (r) => r.success);
    const failed = after.failed - before.failed;
    say(
      `   scrapes by llm-extproc (${n}) over the measured rows: ${fmtInt(after.success - before.success)} successful (${fmt(scrapesPerSecond, 1)}/s), ${fmtInt(failed)} failed` +
        ` (llm_extproc_engine_scrapes_total); endpoints with fresh figures after the load: ${after.fresh}/${n} (${FRESH_LOAD_SERIES} series)${after.fresh === n && failed === 0 ? '' : ' — NOT ALL'}`,
    );
    const decoded = Object.values(
      rows.reduce(
        (acc, r) => {
          for (const [k, v] of Object.entries(r.scraped.ext.destinations)) acc[k] = (acc[k] ?? 0) + v;
          return acc;
        },
        {} as Record<string, number>,
      ),
    );
    say(
      `   llm-extproc (${n}) routed ${fmtInt(after.routed - before.routed)} requests in the measured rows; the decoded sample reached ${decoded.length}/${n} endpoints` +
        ` (${decoded.length ? `${Math.min(...decoded)}-${Math.max(...decoded)} each` : 'none'}); ready ${fmt(readyMs / 1000, 2)} s after start (probed, first scrape round done)`,
    );
    const idleScrapeUs = ((idleScraped.cores - idleFew.cores) * 1e6) / (idleScraped.scrapesPerSecond - idleFew.scrapesPerSecond);
    say(
      `   idle (${idleSeconds} s after the load): llm-extproc (${n}) ${fmt(idleScraped.cores, 3)} cores at ${fmt(idleScraped.scrapesPerSecond, 1)} scrapes/s, (4) ${fmt(idleFew.cores, 3)} cores at` +
        ` ${fmt(idleFew.scrapesPerSecond, 1)}/s: ${fmt(idleScrapeUs, 0)} µs CPU per extra scrape (its share of the probes included)`,
    );
    for (const row of rows) {
      const m = row.scraped.ext;
      say(
        `   N=${row.concurrency}: llm-extproc (${n}) − (4) = ${fmt(row.extraCpuUsPerRequest)} µs/req; of that, the idle scraping cost spread over ${fmtInt(m.requestsPerSecond)} req/s is` +
          ` ${fmt(((idleScraped.cores - idleFew.cores) * 1e6) / m.requestsPerSecond)} µs/req; the rest is the load_aware pick over ${n / 2} candidates and everything else`,
      );
    }
    say('   the simulators get no traffic (ext_proc never calls a backend): every engine reports 0 running, so load_aware ranks by in-flight counts;');
    say('   what is measured is the scraping and the scoring, not the spread of uneven loads (section 4 times the picker with spread figures)');
    const maxCpuRatio = Math.max(...rows.map((r) => r.cpuRatio.scraped));
    say(
      `   headline — CPU per request with ${n} scraped endpoints, llm-extproc/bare: ${rows.map((r) => `N=${r.concurrency} ${r.cpuRatio.scraped.toFixed(2)}x`).join(', ')} (target ≤ 1.30x);` +
        ` 4 endpoints: ${rows.map((r) => `${r.cpuRatio.fewEndpoints.toFixed(2)}x`).join(', ')}`,
    );
    if (scraped.output.length) {
      say(`   llm-extproc (${n}) wrote ${scraped.output.length} log lines (warn and above); first ones:`);
      for (const line of scraped.output.slice(0, 5)) say(`     ${line.slice(0, 300)}`);
    }
    say();
    return {
      endpoints: n,
      hosts: `${scrapedHost(0)}-${scrapedHost(n - 1)}`,
      routingLogic: 'load_aware',
      metricsInterval: '1s',
      readySeconds: readyMs / 1000,
      idle: { seconds: idleSeconds, fewEndpoints: idleFew, scraped: idleScraped, cpuUsPerExtraScrape: idleScrapeUs },
      rows,
      scrapes: { success: after.success - before.success, failed, perSecond: scrapesPerSecond, freshAfter: after.fresh },
      routed: after.routed - before.routed,
      decodedEndpoints: decoded.length,
      maxCpuRatio,
    };
  } finally {
    if (scraped) await stopChild(scraped.child);
    await Promise.all(pods.map((pod) => pod.close()));
  }
}
type IdleCost = Awaited<ReturnType<typeof idleCost>>[number];

// ---------------------------------------------------------------- section 8: the scheduling chain

/** The built-in chain of section 8: every plugin type that keeps all of the static endpoints (no labels). */
const CHAIN_CONFIG = `# bench/run.ts section 8: filters that keep every static endpoint, three scorers, max-score
filters:
  - {type: role, parameters: {role: decode}}
  - {type: label-selector, name: keep-all, parameters: {selector: "!bench-excluded"}}
scorers:
  - {type: in-flight, weight: 1}
  - {type: queue, weight: 1}
  - {type: kv-cache, weight: 1}
picker:
  type: max-score
`;

/** Requests each server of section 8 has answered (warm-ups included) before it is measured (the new
 *  ones start cold), within CHAIN_WARM_RUNS warm-ups (the external ones answer 3,000-4,000/s). */
const CHAIN_WARM_REQUESTS = 30_000;
const CHAIN_WARM_RUNS = 3;

interface PluginStats {
  keepAlive: { calls: number; failed: number; connections: number };
  close: { calls: number; failed: number; connections: number };
}

/** bench/keep-all-plugin.ts as a child process, on the load generator's CPU (the servers' CPU is for the server under test). */
async function startKeepAllPlugin(opts: Options) {
  const [cmd, argv] = nodeCommand(opts.pin, LOADGEN_CPU, [join(DIST, 'bench', 'keep-all-plugin.js')]);
  const child = track(spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] }));
  const output: string[] = [];
  const port = await new Promise<number>((resolvePort, reject) => {
    let started = false;
    collectLines(child, output, (line) => {
      if (!started && line.startsWith('{')) {
        started = true;
        resolvePort((JSON.parse(line) as { listening: number }).listening);
      } else if (line.trim()) output.push(line);
    });
    child.once('exit', (code) => {
      if (!started) reject(new Error(`keep-all plugin exited with ${code}:\n${output.join('\n')}`));
    });
  });
  const stats = async () => (await (await fetch(`http://127.0.0.1:${port}/stats`)).json()) as PluginStats;
  return { child, pid: child.pid!, port, output, stats };
}

/** What one llm-extproc's /metrics says about its decisions and its scheduling plugins, at one moment. */
async function chainReading(ext: ServerProcess) {
  const m = await readMetrics(ext);
  const calls = 'llm_extproc_external_filter_calls_total';
  const plugin = 'llm_extproc_scheduling_plugin_duration_seconds_count';
  return {
    routed: m.sum('llm_extproc_requests_total', (l) => l.includes('outcome="routed"')),
    refused: m.sum('llm_extproc_requests_total', (l) => !l.includes('outcome="routed"')),
    externalCalls: m.sum(calls),
    externalFailed: m.sum(calls, (l) => !l.includes('result="success"')),
    pluginCalls: m.sum(plugin),
    pluginNotOk: m.sum(plugin, (l) => !l.includes('outcome="ok"')),
  };
}
type ChainReading = Awaited<ReturnType<typeof chainReading>>;

type ChainVariant = 'default' | 'chain' | 'external keep-alive' | 'external close';

interface ChainRow {
  variant: ChainVariant;
  what: string;
  measured: Measured;
  cpuRatio: number;
  cpuRatioPerRound: number[];
  requestsPerSecondRatio: number;
  /** Over the measured rounds, from the llm-extproc's /metrics (differences). */
  counters: ChainReading;
  /** External variants: the plugin server's own count of calls and new connections over the measured rounds. */
  plugin?: { calls: number; failed: number; connections: number; cpuUsPerCall: number };
}

/**
 * Section 8: the scheduling chain's cost. Closed loop BUFFERED at one N against the bare server, in
 * the same rounds: llm-extproc as in section 1 (the preset: its picker alone), with a built-in chain
 * (--scheduling-config), and with one external HTTP filter on loopback, over kept-alive connections
 * and with a new connection per call.
 */
async function chainSection(lg: LoadGenerator, servers: { bare: ServerProcess; ext: ServerProcess }, backends: Simulator[], opts: Options, ticks: number) {
  const n = opts.chainConcurrency;
  say(
    `== 8. Scheduling chain: closed loop BUFFERED at N = ${n}, 1 KiB chat body, ${opts.connections} HTTP/2 connections, 4 static endpoints, against the bare server;`,
  );
  say(
    `   ${opts.chainSeconds} s measured per server, in ${opts.rounds} slices (bare, default, chain, ext keep-alive, ext close | the reverse | …), each after ${opts.warmupSeconds} s warm-up;`,
  );
  say(
    `   before the rows, each server is warmed up until it has answered ${fmtInt(CHAIN_WARM_REQUESTS)} requests in all, in at most ${opts.quick ? 1 : CHAIN_WARM_RUNS} warm-up runs (the new llm-extproc start cold)`,
  );
  say('   default  = llm-extproc of section 1 (least_outstanding_requests, a chain of its picker alone)');
  say(
    '   chain    = --scheduling-config: filters role (decode) + label-selector "!bench-excluded" (both keep all 4), scorers in-flight + queue + kv-cache, picker max-score',
  );
  say(
    '   external = default + EXTERNAL_HTTP_FILTERS with one filter (timeout_ms 1000, fail-open) on a keep-all plugin server on loopback (bench/keep-all-plugin.ts,',
  );
  say(
    `              a child process${opts.pin ? ` on CPU ${LOADGEN_CPU}, with the load generator` : ''}): keep-alive = llm-extproc's default keep-alive agent;`,
  );
  say(
    '              close = the plugin answers `connection: close`, so every call opens a new TCP connection (llm-extproc has no option to turn keep-alive off)',
  );
  const dir = join(ROOT, '.bench');
  mkdirSync(dir, { recursive: true });
  const configFile = join(dir, 'chain-scheduling.yaml');
  writeFileSync(configFile, CHAIN_CONFIG);
  const started: ServerProcess[] = [];
  let plugin: Awaited<ReturnType<typeof startKeepAllPlugin>> | undefined;
  try {
    plugin = await startKeepAllPlugin(opts);
    const filterEnv = (name: string, path: string) => ({
      EXTERNAL_HTTP_FILTERS: JSON.stringify([{ name, url: `http://127.0.0.1:${plugin!.port}/${path}`, timeout_ms: 1000 }]),
    });
    progress('starting llm-extproc with a chain, and two with an external filter');
    const chain = await startLlmExtproc(opts, backends, undefined, { label: 'llm-extproc (chain)', args: [`--scheduling-config=${configFile}`] });
    started.push(chain);
    const keepAlive = await startLlmExtproc(opts, backends, undefined, { label: 'llm-extproc (ext keep-alive)', env: filterEnv('keep-all', 'keep-alive') });
    started.push(keepAlive);
    const close = await startLlmExtproc(opts, backends, undefined, { label: 'llm-extproc (ext close)', env: filterEnv('keep-all-close', 'close') });
    started.push(close);
    const exts = [servers.ext, chain, keepAlive, close];
    const variants: { variant: ChainVariant; what: string }[] = [
      { variant: 'default', what: 'preset least_outstanding_requests' },
      { variant: 'chain', what: 'role + label-selector, 3 scorers, max-score' },
      { variant: 'external keep-alive', what: '1 external filter, keep-alive' },
      { variant: 'external close', what: '1 external filter, new connection per call' },
    ];
    const warmRuns = opts.quick ? 1 : CHAIN_WARM_RUNS;
    for (const server of [servers.bare, ...exts]) {
      for (let runs = 0; runs < warmRuns && (runs === 0 || (servedTotals[server.label] ?? 0) < CHAIN_WARM_REQUESTS); runs++) {
        await warmUp(lg, server, opts, ticks, 'buffered');
      }
    }
    const before = await Promise.all(exts.map(chainReading));
    const pluginBefore = await plugin.stats();
    const pluginCpu0 = processCpuMs(plugin.pid, ticks);
    const { bare, versus } = await measureAgainstBare(lg, servers.bare, exts, opts, closedLoad(opts, ticks, 'buffered', n), opts.chainSeconds, `chain N=${n}`, [
      plugin.pid,
    ]);
    const pluginCpuMs = processCpuMs(plugin.pid, ticks) - pluginCpu0;
    const pluginAfter = await plugin.stats();
    const after = await Promise.all(exts.map(chainReading));
    const totalPluginCalls = pluginAfter.keepAlive.calls + pluginAfter.close.calls - pluginBefore.keepAlive.calls - pluginBefore.close.calls;
    const rows: ChainRow[] = variants.map(({ variant, what }, i) => {
      const v = versus[i]!;
      const counters = Object.fromEntries(
        Object.keys(after[i]!).map((k) => [k, after[i]![k as keyof ChainReading] - before[i]![k as keyof ChainReading]]),
      ) as ChainReading;
      const side = variant === 'external keep-alive' ? 'keepAlive' : variant === 'external close' ? 'close' : undefined;
      return {
        variant,
        what,
        measured: v.ext,
        cpuRatio: v.ext.cpuUsPerRequest / bare.cpuUsPerRequest,
        cpuRatioPerRound: v.cpuRatioPerRound,
        requestsPerSecondRatio: v.ext.requestsPerSecond / bare.requestsPerSecond,
        counters,
        ...(side
          ? {
              plugin: {
                calls: pluginAfter[side].calls - pluginBefore[side].calls,
                failed: pluginAfter[side].failed - pluginBefore[side].failed,
                connections: pluginAfter[side].connections - pluginBefore[side].connections,
                // The plugin's CPU over the measured rounds (both paths, idle time included) per call of both.
                cpuUsPerCall: (pluginCpuMs * 1000) / totalPluginCalls,
              },
            }
          : {}),
      };
    });

    const header = [
      'variant',
      'decisions/s',
      'vs bare',
      'CPU µs/req',
      'vs bare',
      'per round',
      'p50 µs',
      'p99 µs',
      'err/lost/GOAWAY',
      'ext calls',
      'ext failed',
      'plugin conns',
    ];
    const body: string[][] = [
      [
        'bare',
        fmtInt(bare.requestsPerSecond),
        '',
        fmt(bare.cpuUsPerRequest),
        '',
        '',
        fmt(bare.latencyUs.p50, 0),
        fmt(bare.latencyUs.p99, 0),
        errorsCell(bare),
        '',
        '',
        '',
      ],
      ...rows.map((r) => [
        r.variant,
        fmtInt(r.measured.requestsPerSecond),
        ratio(r.measured.requestsPerSecond, bare.requestsPerSecond),
        fmt(r.measured.cpuUsPerRequest),
        ratio(r.measured.cpuUsPerRequest, bare.cpuUsPerRequest),
        spread(r.cpuRatioPerRound),
        fmt(r.measured.latencyUs.p50, 0),
        fmt(r.measured.latencyUs.p99, 0),
        errorsCell(r.measured),
        r.plugin ? fmtInt(r.counters.externalCalls) : '',
        r.plugin ? fmtInt(r.counters.externalFailed) : '',
        r.plugin ? fmtInt(r.plugin.connections) : '',
      ]),
    ];
    say(table([header, ...body]));
    const measured = [bare, ...rows.map((r) => r.measured)];
    listErrors(measured);
    noiseLine([measured]);
    say("   (the idle servers of each slice include the plugin server, busy during the external slices: its CPU is not llm-extproc's)");
    const requestFailures = measured.reduce((sum, m) => sum + m.errorCount + m.streamsLost, 0);
    const refused = rows.reduce((sum, r) => sum + r.counters.refused, 0);
    const notOk = rows.reduce((sum, r) => sum + r.counters.pluginNotOk, 0);
    for (const r of rows.filter((row) => row.plugin)) {
      const p = r.plugin!;
      say(
        `   ${r.variant}: llm_extproc_external_filter_calls_total +${fmtInt(r.counters.externalCalls)} (${fmtInt(r.counters.externalFailed)} not success) for ${fmtInt(r.counters.routed)} routed;` +
          ` the plugin counted ${fmtInt(p.calls)} calls (${p.failed} bad) on ${fmtInt(p.connections)} new connections`,
      );
    }
    const ka = rows.find((r) => r.variant === 'external keep-alive')!;
    const cl = rows.find((r) => r.variant === 'external close')!;
    const def = rows.find((r) => r.variant === 'default')!;
    const ch = rows.find((r) => r.variant === 'chain')!;
    say(
      `   extra CPU per request over default: chain ${fmt(ch.measured.cpuUsPerRequest - def.measured.cpuUsPerRequest)} µs, external keep-alive ${fmt(ka.measured.cpuUsPerRequest - def.measured.cpuUsPerRequest)} µs,` +
        ` external close ${fmt(cl.measured.cpuUsPerRequest - def.measured.cpuUsPerRequest)} µs (llm-extproc's own CPU only)`,
    );
    say(
      `   the plugin server used ${fmt(ka.plugin!.cpuUsPerCall)} µs CPU per call over the measured rounds (both paths, its idle time included), not counted above`,
    );
    say(
      `   failures: ${requestFailures === 0 && refused === 0 && notOk === 0 ? 'none' : 'SOME'} — ${requestFailures} requests failed or lost at the load generator, ${refused} refused by llm-extproc,` +
        ` ${notOk} plugin calls not ok (llm_extproc_scheduling_plugin_duration_seconds outcome ≠ ok)`,
    );
    say(
      `   headline — CPU per request llm-extproc/bare at N=${n}: default ${def.cpuRatio.toFixed(2)}x, chain ${ch.cpuRatio.toFixed(2)}x (target ≤ 1.30x: ${ch.cpuRatio <= 1.3 ? 'met' : 'MISSED'}),` +
        ` external keep-alive ${ka.cpuRatio.toFixed(2)}x, external close ${cl.cpuRatio.toFixed(2)}x`,
    );
    for (const server of [...started, plugin]) {
      if (server.output.length) {
        say(`   ${'label' in server ? server.label : 'keep-all plugin'} wrote ${server.output.length} log lines (warn and above); first ones:`);
        for (const line of server.output.slice(0, 5)) say(`     ${line.slice(0, 300)}`);
      }
    }
    say();
    return {
      concurrency: n,
      schedulingConfig: CHAIN_CONFIG,
      bare,
      rows,
      pluginCpuUsPerCall: ka.plugin!.cpuUsPerCall,
      totalPluginCalls,
      failures: { requests: requestFailures, refused, pluginNotOk: notOk },
      chainCpuRatio: ch.cpuRatio,
    };
  } finally {
    for (const server of started) await stopChild(server.child);
    if (plugin) await stopChild(plugin.child);
  }
}

function pickerSection(opts: Options): PickerRow[] {
  say(`== 4. Picker cost per decision: Scheduler.schedule() + Lease.release(), in-process, ${opts.pickerMs} ms per case, fresh process per case`);
  say('   registry: N healthy endpoints all serving one model on one engine; baseline: the 1-endpoint case of each picker');
  say('   idle = every endpoint has the same in-flight count (all tie: worst case for least_outstanding_requests); busy = in-flight spread 0..15');
  say(
    '   load_aware: fresh engine figures on every endpoint (idle: the same on all; busy: spread); vs least_outstanding = the same endpoints and state, this run',
  );
  const rows = runPickerBench(opts.pickerMs);
  const baseline = new Map(rows.filter((r) => r.endpoints === 1).map((r) => [r.picker, r.nsPerDecision]));
  say(
    table([
      ['endpoints', 'picker', 'state', 'ns/decision', 'vs 1 endpoint', 'vs least_outstanding', 'decisions timed'],
      ...rows.map((r) => [
        fmtInt(r.endpoints),
        r.picker,
        r.state,
        fmtInt(r.nsPerDecision),
        ratio(r.nsPerDecision, baseline.get(r.picker) ?? NaN),
        ratio(ratioToLeastOutstanding(r, rows), 1),
        fmtInt(r.decisions),
      ]),
    ]),
  );
  say();
  return rows;
}

function jsonScanSection(): string[] {
  say('== 5. Body scanner: scanTopLevel (finds model/owned_by) vs JSON.parse(body.toString()), in-process');
  say('   baseline: JSON.parse; the ratio is parse time / scan time (above 1x: the scanner is faster)');
  const lines = runJsonScanBench();
  for (const line of lines) say(`   ${line}`);
  say();
  return lines;
}

/** One series per endpoint with fresh engine figures (the scraper's gauges export only those). */
const FRESH_LOAD_SERIES = 'llm_extproc_endpoint_engine_running_requests';

/** One reading of llm-extproc's admin /metrics: a metric's samples, summed or counted, optionally filtered by their labels. */
async function readMetrics(ext: ServerProcess) {
  const res = await fetch(`http://127.0.0.1:${ext.adminPort}/metrics`);
  const metrics = await res.text();
  const samples = (name: string, filter: (labels: string) => boolean) =>
    [...metrics.matchAll(new RegExp(`^${name}(\\{[^}]*\\})? ([0-9.e+-]+)$`, 'gm'))].filter((m) => filter(m[1] ?? '')).map((m) => Number(m[2]));
  return {
    sum: (name: string, filter: (labels: string) => boolean = () => true) => samples(name, filter).reduce((a, b) => a + b, 0),
    count: (name: string, filter: (labels: string) => boolean = () => true) => samples(name, filter).length,
  };
}

/** Section 7: bench/detection.ts, in this process. */
async function detectionSection(): Promise<DetectionRow[]> {
  say('== 7. Failure detection: how long a failed pod keeps getting live traffic (bench/detection.ts, llm-extproc in this process)');
  say('   llm-extproc (default flags) routes 4 closed-loop clients through the Envoy double (BUFFERED, route timeout 5 s)');
  say('   to 3 vLLM simulators at 127.0.0.201-203; after 0.5 s one fails: killed = the process exits (connections refused),');
  say('   frozen = its port still accepts but never answers (a hung engine). passive on = --passive-ejection=5 (default);');
  say('   off = --passive-ejection=0, active probes only (--probe-interval=5s, --probe-timeout=2s, --unhealthy-threshold=2: the defaults)');
  const rows = await runDetectionBench((failure, passive) => progress(`detection: ${failure}, passive ${passive ? 'on' : 'off'}`));
  say(
    table([
      ['failure', 'passive health', 'out of rotation after s', 'client requests failed meanwhile', 'routed to it afterwards'],
      ...rows.map((r) => [r.failure, r.passive ? 'on' : 'off', fmt(r.detectionMs / 1000, 2), fmtInt(r.failedRequests), fmtInt(r.routedAfter)]),
    ]),
  );
  say('   out of rotation = from the failure until llm-extproc stops picking the pod; failed = client requests answered non-200 (a refused');
  say('   connection fails at once, so the clients retry fast and the count is high; a frozen pod holds each request until the 5 s route timeout);');
  say('   afterwards = requests sent in the 1 s after that which still went to the failed pod (must be 0)');
  say();
  return rows;
}

/** What llm-extproc itself counted, from its /metrics: a cross-check of the load generator. */
async function serverCheck(ext: ServerProcess, extDecisions: number) {
  const { sum: sumOf } = await readMetrics(ext);
  const routed = sumOf('llm_extproc_requests_total', (l) => l.includes('outcome="routed"'));
  const refused = sumOf('llm_extproc_requests_total', (l) => !l.includes('outcome="routed"'));
  const protocolErrors = sumOf('llm_extproc_protocol_errors_total');
  const inFlight = sumOf('llm_extproc_endpoint_in_flight_requests');
  const activeStreams = sumOf('llm_extproc_active_streams');
  say(`== llm-extproc's own counters (/metrics) after the load: routed ${fmtInt(routed)}, refused ${fmtInt(refused)}, protocol errors ${protocolErrors},`);
  say(
    `   endpoint in-flight now ${inFlight} (leases all released: ${inFlight === 0 ? 'yes' : 'NO'}), open streams now ${activeStreams}; the load generator received ${fmtInt(extDecisions)} destinations from it`,
  );
  say();
  return { routed, refused, protocolErrors, inFlightAfter: inFlight, activeStreamsAfter: activeStreams, loadgenDecisions: extDecisions };
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const opts = parseOptions();
  const started = new Date();
  const machine = describeMachine();
  const pin = opts.pin && machine.cores >= 2 && canPin();
  opts.pin = pin;
  if (!hasProcCpu()) throw new Error('this benchmark reads CPU time from /proc/<pid>/stat (Linux only)');
  const ticks = clockTicksPerSecond();
  const via = [process.env.MAKELEVEL ? 'make bench' : '', process.env.npm_lifecycle_event ? `npm run ${process.env.npm_lifecycle_event}` : '']
    .filter(Boolean)
    .join(' → ');
  const command = `node ${process.argv
    .slice(1)
    .map((a) => (a.startsWith(ROOT) ? a.slice(ROOT.length + 1) : a))
    .join(' ')}`;

  say(
    `llm-extproc benchmark — ${started.toISOString()}${opts.quick ? '  [--quick: smoke run, short durations]' : ''}${opts.profile ? '  [--profile: llm-extproc runs under --cpu-prof, figures are skewed]' : ''}${opts.nodelay ? '  [--nodelay: experiment, both servers get TCP_NODELAY]' : ''}${opts.bareLike ? `  [--bare-like=${opts.bareLike}: diagnostic, the "bare" server does part of llm-extproc's work]` : ''}`,
  );
  say(`command:  ${via ? `${via} → ` : ''}${command}`);
  say(`machine:  ${machine.cpuModel}, ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.os}`);
  say(`node:     ${machine.node} (V8 ${machine.v8})`);
  say(`cpu time: utime+stime of /proc/<pid>/stat (all threads), ${ticks} ticks/s, read by the load generator at the window edges`);
  say(
    pin
      ? `pinning:  servers on CPU ${SERVER_CPU}; load generator, orchestrator and simulated backends on CPU ${LOADGEN_CPU} (taskset)`
      : `pinning:  none (${opts.pin ? 'no taskset' : machine.cores < 2 ? 'one core' : '--no-pin'}): load generator and servers share the cores`,
  );
  say();

  if (opts.pin) pinProcess(process.pid, LOADGEN_CPU);
  const profileDir = opts.profile ? join(ROOT, '.bench', 'profile') : undefined;
  if (profileDir) rmSync(profileDir, { recursive: true, force: true });
  if (opts.heapSurvivors) {
    rmSync(HEAP_SURVIVORS_DIR, { recursive: true, force: true });
    mkdirSync(HEAP_SURVIVORS_DIR, { recursive: true });
    process.env.BENCH_HEAP_SURVIVORS_DIR = HEAP_SURVIVORS_DIR; // inherited by the servers
  }

  const backends: Simulator[] = [];
  const children: ChildProcess[] = [];
  let lg: LoadGenerator | undefined;
  const report: Record<string, unknown> = {
    version: 1,
    startedAt: started.toISOString(),
    command,
    via,
    machine,
    pinned: pin,
    options: { ...opts, sections: [...opts.sections] },
  };
  try {
    const needServers = (['closed', 'open', 'large', 'scraped', 'chain'] as const).some((section) => opts.sections.has(section));
    if (needServers) {
      for (const engine of ['vllm', 'vllm', 'sglang', 'sglang'] as const) backends.push(await startSimulator({ engine, models: [MODEL], host: '127.0.0.1' }));
      const ext = await startLlmExtproc(opts, backends, profileDir);
      children.push(ext.child);
      const bare = await startBare(opts, backends[0]!.address, profileDir);
      children.push(bare.child);
      lg = LoadGenerator.start(opts);
      children.push(lg.child);
      await lg.ready;
      const servers = { bare, ext };
      say(`backends: ${backends.map((b) => `${b.engine}@${b.address}`).join(', ')} (simulators, serving ${MODEL}; llm-extproc discovers them by probing)`);
      say(
        `servers:  llm-extproc pid ${ext.pid} at ${ext.target} (--log-level=warn, defaults otherwise: least_outstanding_requests, 32 MiB body limit, 64 MiB gRPC receive limit)`,
      );
      say(`          bare pid ${bare.pid} at ${bare.target}, settings copied from llm-extproc's grpc.Server: ${JSON.stringify(bare.settings)}`);
      say(`load:     load generator pid ${lg.child.pid}; raw HTTP/2 gRPC client (test/support/envoy/grpc-h2.ts); per request, one ext_proc stream:`);
      say('          BUFFERED     request_headers → CONTINUE, request_body → destination, response_headers → answer, END_STREAM+RST_STREAM(CANCEL)');
      say('          FULL_DUPLEX  request_headers + request_body at once → destination on the headers answer, body echoed (streamed_response),');
      say('                       response_headers → answer, END_STREAM+RST_STREAM(CANCEL)');
      say();
      report.pingFloorUs = await pingFloor(lg, bare, opts, ticks);
      report.servers = { llmExtproc: { pid: ext.pid, target: ext.target }, bare: { pid: bare.pid, target: bare.target, settings: bare.settings } };

      const sections: Record<string, unknown> = {};
      let extDecisions = 0;
      const countDecisions = (m: Measured) => (extDecisions += m.latencyUs.count);
      if (opts.sections.has('closed')) {
        const result = await closedLoop(lg, servers, opts, ticks);
        for (const r of result.rows) countDecisions(r.llmExtproc);
        sections.closedLoop = result;
      }
      if (opts.sections.has('open')) {
        const result = await openLoop(lg, servers, opts, ticks);
        for (const r of result.modes) countDecisions(r.llmExtproc);
        sections.openLoop = result;
      }
      if (opts.sections.has('large')) {
        const result = await largeBodies(lg, servers, opts, ticks);
        for (const r of result) countDecisions(r.llmExtproc);
        sections.largeBodies = result;
      }
      if (opts.sections.has('scraped')) {
        const result = await scrapedSection(lg, servers, opts, ticks);
        for (const r of result.rows) countDecisions(r.fewEndpoints.ext);
        sections.scraped = result;
      }
      if (opts.sections.has('chain')) {
        const result = await chainSection(lg, servers, backends, opts, ticks);
        countDecisions(result.rows.find((r) => r.variant === 'default')!.measured);
        sections.chain = result;
      }
      sections.serverCheck = await serverCheck(ext, extDecisions);
      if (opts.traceGc) sections.gc = gcSection(servers, extDecisions);
      if (opts.heapSurvivors) sections.heapSurvivors = await heapSurvivorsSection(servers);
      for (const server of [ext, bare]) {
        if (server.output.length) {
          say(`${server.name} wrote ${server.output.length} log lines (warn and above); first ones:`);
          for (const line of server.output.slice(0, 5)) say(`   ${line.slice(0, 300)}`);
          say();
        }
      }
      report.sections = sections;
      await lg.stop();
      await stopChild(ext.child);
      await stopChild(bare.child);
      await Promise.all(backends.splice(0).map((b) => b.close()));
      if (profileDir) report.profile = profileSection(profileDir);
    }
    report.sections ??= {};
    const sections = report.sections as Record<string, unknown>;
    if (opts.sections.has('picker')) sections.picker = pickerSection(opts);
    if (opts.sections.has('json-scan')) sections.jsonScan = jsonScanSection();
    if (opts.sections.has('detection')) sections.detection = await detectionSection();

    const closed = sections.closedLoop as { maxCpuRatio: number; rows: ClosedRow[] } | undefined;
    const open = sections.openLoop as { modes: OpenResult[] } | undefined;
    const large = sections.largeBodies as { bodyBytes: number; cpuRatio: number }[] | undefined;
    const scraped = sections.scraped as Awaited<ReturnType<typeof scrapedSection>> | undefined;
    const detection = sections.detection as DetectionRow[] | undefined;
    const chain = sections.chain as Awaited<ReturnType<typeof chainSection>> | undefined;
    say('== Summary (figures are reported, not asserted)');
    if (closed) {
      const byMode = (mode: RequestMode) =>
        closed.rows
          .filter((r) => r.mode === mode)
          .map((r) => `N=${r.concurrency} ${r.ratios.cpuPerRequest!.toFixed(2)}x`)
          .join(', ');
      say(`   CPU per request llm-extproc/bare (closed loop): BUFFERED ${byMode('buffered')}; FULL_DUPLEX ${byMode('full_duplex')};`);
      say(`   target ≤ 1.30x: ${closed.maxCpuRatio <= 1.3 ? 'met' : 'MISSED'} (worst ${closed.maxCpuRatio.toFixed(2)}x)`);
    }
    if (open) {
      say(`   decision latency at ${opts.rate} req/s, llm-extproc (targets p50 < 0.5 ms, p99 < 2 ms; bare server in brackets):`);
      for (const r of open.modes) {
        const ms = (us: number) => fmt(us / 1000, 3);
        say(
          `     ${MODE_NAME[r.mode].padEnd(11)}  p50 ${ms(r.llmExtproc.latencyUs.p50)} ms ${r.targets.p50Met ? 'met' : 'MISSED'}, p99 ${ms(r.llmExtproc.latencyUs.p99)} ms ${r.targets.p99Met ? 'met' : 'MISSED'}` +
            `  (bare p50 ${ms(r.bare.latencyUs.p50)} ms, p99 ${ms(r.bare.latencyUs.p99)} ms)`,
        );
      }
    }
    if (large) say(`   large bodies, CPU per request llm-extproc/bare: ${large.map((r) => `${r.bodyBytes / MiB} MiB ${r.cpuRatio.toFixed(2)}x`).join(', ')}`);
    if (scraped) {
      say(
        `   ${scraped.endpoints} scraped endpoints (load_aware), CPU per request llm-extproc/bare: ${scraped.rows.map((r) => `N=${r.concurrency} ${r.cpuRatio.scraped.toFixed(2)}x`).join(', ')}` +
          ` (4 endpoints: ${scraped.rows.map((r) => `${r.cpuRatio.fewEndpoints.toFixed(2)}x`).join(', ')});`,
      );
      say(
        `   target ≤ 1.30x: ${scraped.maxCpuRatio <= 1.3 ? 'met' : 'MISSED'}; ${fmt(scraped.scrapes.perSecond, 1)} scrapes/s, ${scraped.scrapes.failed} failed, fresh figures on ${scraped.scrapes.freshAfter}/${scraped.endpoints} after the load`,
      );
    }
    if (chain) {
      const cell = (variant: ChainVariant) => {
        const r = chain.rows.find((row) => row.variant === variant)!;
        return `${variant} ${r.cpuRatio.toFixed(2)}x (${fmtInt(r.measured.requestsPerSecond)}/s)`;
      };
      const external = chain.rows.filter((r) => r.plugin);
      const failures = chain.failures.requests + chain.failures.refused + chain.failures.pluginNotOk;
      say(
        `   scheduling chain at N=${chain.concurrency}, CPU per request llm-extproc/bare (decisions/s): bare ${fmtInt(chain.bare.requestsPerSecond)}/s, ${(['default', 'chain', 'external keep-alive', 'external close'] as const).map(cell).join(', ')};`,
      );
      say(
        `   target ≤ 1.30x for the built-in chain: ${chain.chainCpuRatio <= 1.3 ? 'met' : 'MISSED'}; external filter calls ${external.map((r) => `${fmtInt(r.counters.externalCalls)} (${r.counters.externalFailed} failed)`).join(' / ')};` +
          ` failed requests: ${failures === 0 ? 'none' : failures}`,
      );
    }
    if (detection) {
      const seconds = (failure: DetectionRow['failure'], passive: boolean) => {
        const r = detection.find((row) => row.failure === failure && row.passive === passive);
        return r ? `${fmt(r.detectionMs / 1000, 2)} s` : '-';
      };
      const after = detection.reduce((n, r) => n + r.routedAfter, 0);
      say(
        `   failure detection (out of rotation after), passive health on / off: killed ${seconds('killed', true)} / ${seconds('killed', false)},` +
          ` frozen ${seconds('frozen', true)} / ${seconds('frozen', false)}; routed to the failed pod afterwards: ${after === 0 ? 'none' : `${after} — SHOULD BE 0`}`,
      );
    }
    if (noisy) say('   WARNING: other processes competed for the CPUs during some sections (see their noise lines): re-run on a quiet machine');
    const finished = new Date();
    say(
      `   wall time ${((finished.getTime() - started.getTime()) / 1000).toFixed(0)} s; JSON report: ${opts.out.startsWith(ROOT) ? opts.out.slice(ROOT.length + 1) : opts.out}`,
    );
    report.finishedAt = finished.toISOString();
    report.text = text;
    mkdirSync(dirname(opts.out), { recursive: true });
    writeFileSync(opts.out, `${JSON.stringify(report, (_k, v: unknown) => (v instanceof Float64Array ? undefined : v), 2)}\n`);
  } finally {
    await lg?.stop().catch(() => {});
    for (const child of children) await stopChild(child).catch(() => {});
    await Promise.all(backends.map((b) => b.close()));
  }
}

function profileSection(dir: string) {
  const fileOf = (server: string) => {
    try {
      const f = readdirSync(join(dir, server)).find((name) => name.endsWith('.cpuprofile'));
      return f ? join(dir, server, f) : undefined;
    } catch {
      return undefined;
    }
  };
  const extFile = fileOf('llm-extproc');
  const bareFile = fileOf('bare');
  if (!extFile || !bareFile) {
    say('== Profile: no .cpuprofile was written');
    return undefined;
  }
  const perRequest = (file: string, server: string) => {
    const n = servedTotals[server] ?? 0;
    const ms = categoryBreakdown(file);
    return new Map([...ms].map(([k, v]) => [k, n ? (v * 1000) / n : NaN]));
  };
  const ext = perRequest(extFile, 'llm-extproc');
  const bare = perRequest(bareFile, 'bare');
  const names = [...new Set([...ext.keys(), ...bare.keys()])].filter((k) => k !== '(idle)' && k !== '(root)');
  names.sort((a, b) => (ext.get(b) ?? 0) - (bare.get(b) ?? 0) - ((ext.get(a) ?? 0) - (bare.get(a) ?? 0)));
  const busy = (m: Map<string, number>) => names.reduce((sum, k) => sum + (m.get(k) ?? 0), 0);
  say(`== Profile (--cpu-prof, 1 ms sampling, whole run): sampled busy time per answered request, by component`);
  say(`   requests answered: llm-extproc ${fmtInt(servedTotals['llm-extproc'] ?? 0)}, bare ${fmtInt(servedTotals.bare ?? 0)} (warm-ups included)`);
  say(
    table([
      ['component (self time)', 'llm-extproc µs/req', 'bare µs/req', 'extra µs/req'],
      ...names.map((k) => [k, fmt(ext.get(k) ?? 0), fmt(bare.get(k) ?? 0), fmt((ext.get(k) ?? 0) - (bare.get(k) ?? 0))]),
      ['total', fmt(busy(ext)), fmt(busy(bare)), fmt(busy(ext) - busy(bare))],
    ]),
  );
  // Frame by frame, per answered request: where llm-extproc spends more than the floor.
  const nExt = servedTotals['llm-extproc'] ?? 0;
  const nBare = servedTotals.bare ?? 0;
  const extFrames = frameTimes(extFile);
  const bareFrames = frameTimes(bareFile);
  const us = (m: Map<string, number>, k: string, n: number) => (n ? ((m.get(k) ?? 0) * 1000) / n : 0);
  const frames = [...new Set([...extFrames.self.keys(), ...bareFrames.self.keys()])];
  const extra = frames
    .map((k) => ({ frame: k, ext: us(extFrames.self, k, nExt), bare: us(bareFrames.self, k, nBare) }))
    .sort((a, b) => b.ext - b.bare - (a.ext - a.bare))
    .slice(0, 25);
  say();
  say('   frames with the most extra self time (µs per answered request, llm-extproc − bare):');
  say(table([['frame', 'llm-extproc', 'bare', 'extra'], ...extra.map((f) => [f.frame, fmt(f.ext), fmt(f.bare), fmt(f.ext - f.bare)])]));
  const own = [...extFrames.inclusive.keys()]
    .filter((k) => extFrames.category.get(k) === 'llm-extproc code (dist/src)')
    .map((k) => ({ frame: k, inclusive: us(extFrames.inclusive, k, nExt), self: us(extFrames.self, k, nExt) }))
    .sort((a, b) => b.inclusive - a.inclusive)
    .slice(0, 20);
  say();
  say("   llm-extproc's own functions by inclusive time (µs per answered request; callees in grpc-js, protobuf, prom-client included):");
  say(table([['frame', 'inclusive', 'self'], ...own.map((f) => [f.frame, fmt(f.inclusive), fmt(f.self)])]));
  say();
  return { componentsUsPerRequest: { llmExtproc: Object.fromEntries(ext), bare: Object.fromEntries(bare) }, servedTotals, extraFrames: extra, ownFrames: own };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
