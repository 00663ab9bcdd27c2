#!/usr/bin/env node
import { pathToFileURL } from 'node:url';
/**
 * Run one or several backend simulators from the command line.
 *
 *   node dist/src/simulator/cli.js --engine vllm --model Qwen/Qwen2.5-0.5B-Instruct --host 127.0.0.1 --port 8001
 *   node dist/src/simulator/cli.js --backend vllm:Qwen/Qwen2.5-0.5B-Instruct@127.0.0.2:8000 \
 *                                  --backend sglang:Qwen/Qwen2.5-0.5B-Instruct@127.0.0.3:8000
 *
 * Prints one line per simulator (`<url> engine=<engine> name=<name> models=<m1,m2>`) once all listen,
 * and exits 0 on SIGTERM/SIGINT after closing them.
 */
import { parseArgs } from 'node:util';
import { isEngine, type Simulator, type SimulatorOptions, startSimulator } from './simulator.js';

export const USAGE = `Usage: node dist/src/simulator/cli.js [options]

One engine, one or more replicas:
  --engine vllm|sglang      engine to imitate (required unless --backend is used)
  --model ID                served model id (repeatable; default Qwen/Qwen2.5-0.5B-Instruct)
  --host ADDR               listen address (default 127.0.0.1)
  --port N                  port (default 0 = ephemeral); replicas use N, N+1, ...
  --replicas N              how many simulators of this engine (default 1)
  --name NAME               identity echoed in x-simulator-name (single replica only)

Any mix of engines:
  --backend ENGINE:MODEL[,MODEL...]@HOST:PORT   (repeatable) e.g. vllm:Qwen/Qwen2.5-0.5B-Instruct@127.0.0.2:8000

Timing and capacity (apply to all simulators):
  --ttft-ms N               time to first token (default 5)
  --itl-ms N                inter-token latency (default 2)
  --max-model-len N         max_model_len in /v1/models (default 32768)
  --max-running N           concurrent generations before requests queue (default 256)
  --kv-cache-tokens N       KV-cache capacity in tokens (default 65536)
  -h, --help                this text
`;

export class UsageError extends Error {}

const DEFAULT_MODEL = 'Qwen/Qwen2.5-0.5B-Instruct';

function intOption(value: string | undefined, flag: string, min: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`${flag} must be an integer >= ${min}, got '${value}'`);
  return n;
}

/** `ENGINE:MODEL[,MODEL...]@HOST:PORT` (HOST may be `[v6]`). */
export function parseBackendSpec(spec: string): Pick<SimulatorOptions, 'engine' | 'models' | 'host' | 'port'> {
  const colon = spec.indexOf(':');
  const at = spec.lastIndexOf('@');
  if (colon <= 0 || at < colon + 2) throw new UsageError(`--backend '${spec}': expected ENGINE:MODEL@HOST:PORT`);
  const engine = spec.slice(0, colon);
  if (!isEngine(engine)) throw new UsageError(`--backend '${spec}': engine must be vllm or sglang`);
  const models = spec
    .slice(colon + 1, at)
    .split(',')
    .filter((m) => m !== '');
  const addr = spec.slice(at + 1);
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(addr);
  if (m === null || models.length === 0) throw new UsageError(`--backend '${spec}': expected ENGINE:MODEL@HOST:PORT`);
  const port = intOption(m[3], '--backend port', 0)!;
  if (port > 65535) throw new UsageError(`--backend '${spec}': port out of range`);
  return { engine, models, host: m[1] ?? m[2]!, port };
}

/** parseArgs with the simulator's flags; a parse error is a UsageError. */
function parseFlags(argv: string[]) {
  try {
    return parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        engine: { type: 'string' },
        model: { type: 'string', multiple: true },
        host: { type: 'string' },
        port: { type: 'string' },
        replicas: { type: 'string' },
        name: { type: 'string' },
        backend: { type: 'string', multiple: true },
        'ttft-ms': { type: 'string' },
        'itl-ms': { type: 'string' },
        'max-model-len': { type: 'string' },
        'max-running': { type: 'string' },
        'kv-cache-tokens': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** Turn argv into simulator options (throws UsageError); `null` means --help. */
export function parseCli(argv: string[]): SimulatorOptions[] | null {
  const values = parseFlags(argv);
  if (values.help) return null;

  const common: Partial<SimulatorOptions> = {};
  const ttft = intOption(values['ttft-ms'], '--ttft-ms', 0);
  if (ttft !== undefined) common.timeToFirstTokenMs = ttft;
  const itl = intOption(values['itl-ms'], '--itl-ms', 0);
  if (itl !== undefined) common.interTokenMs = itl;
  const mml = intOption(values['max-model-len'], '--max-model-len', 1);
  if (mml !== undefined) common.maxModelLen = mml;
  const mr = intOption(values['max-running'], '--max-running', 1);
  if (mr !== undefined) common.maxRunning = mr;
  const kv = intOption(values['kv-cache-tokens'], '--kv-cache-tokens', 1);
  if (kv !== undefined) common.kvCacheTokens = kv;

  const out: SimulatorOptions[] = [];
  for (const spec of values.backend ?? []) out.push({ ...common, ...parseBackendSpec(spec) });

  if (values.engine !== undefined) {
    if (!isEngine(values.engine)) throw new UsageError(`--engine must be vllm or sglang, got '${values.engine}'`);
    const replicas = intOption(values.replicas, '--replicas', 1) ?? 1;
    const port = intOption(values.port, '--port', 0) ?? 0;
    if (port + (port === 0 ? 0 : replicas - 1) > 65535) throw new UsageError('--port out of range');
    if (values.name !== undefined && replicas > 1) throw new UsageError('--name needs --replicas 1');
    for (let i = 0; i < replicas; i++) {
      const o: SimulatorOptions = {
        ...common,
        engine: values.engine,
        models: values.model ?? [DEFAULT_MODEL],
        host: values.host ?? '127.0.0.1',
        port: port === 0 ? 0 : port + i,
      };
      if (values.name !== undefined) o.name = values.name;
      out.push(o);
    }
  } else if (values.model !== undefined || values.replicas !== undefined || values.port !== undefined || values.name !== undefined) {
    throw new UsageError('--model/--port/--replicas/--name need --engine');
  }
  if (out.length === 0) throw new UsageError('nothing to run: give --engine or --backend');
  return out;
}

export async function main(argv: string[]): Promise<void> {
  let specs: SimulatorOptions[] | null;
  try {
    specs = parseCli(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`error: ${err.message}\n\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  if (specs === null) {
    process.stdout.write(USAGE);
    return;
  }

  const sims: Simulator[] = [];
  const closeAll = (): Promise<unknown> => Promise.allSettled(sims.map((s) => s.close()));
  try {
    for (const spec of specs) sims.push(await startSimulator(spec));
  } catch (err) {
    await closeAll();
    process.stderr.write(`error: ${(err as Error).message}\n`);
    process.exitCode = 1;
    return;
  }
  for (const s of sims) {
    const models = specs[sims.indexOf(s)]!.models.join(',');
    process.stdout.write(`${s.url} engine=${s.engine} name=${s.name} models=${models}\n`);
  }

  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`${signal}: stopping ${sims.length} simulator(s)\n`);
    void closeAll().then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`fatal: ${String(err)}\n`);
    process.exit(1);
  });
}
