#!/usr/bin/env node
/**
 * The sample external filter plugin: an HTTP server llm-extproc calls as `POST <url>/filter` with
 * the scheduling context and the candidate pods, answering the pods to keep. This one keeps the
 * pods whose name ends with `2`, which is llm-d's sample logic (seed 000); replace `keepPods` with
 * your own. See README.md next to this file.
 *
 *   npm run sample-plugin -- [PORT] [HOST]        (defaults: 1080 localhost)
 *   node dist/plugins/sample/server.js 1080 0.0.0.0
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo, isIP } from 'node:net';
import { pathToFileURL } from 'node:url';
import { type Logger, pino } from 'pino';

export const FILTER_PATH = '/external/sample/filter';
export const DEFAULT_PORT = 1080;
/** As seed 000's server: loopback only unless told otherwise (the Dockerfile passes 0.0.0.0). */
export const DEFAULT_HOST = 'localhost';
/** A request carries the prompt and every pod's metrics; 8 MiB leaves room for long prompts and many pods. */
export const DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024;

// ---- the wire format (field names as llm-extproc and llm-d send them) ----

export interface NamespacedName {
  name: string;
  namespace: string;
}

export interface PodMetrics {
  active_models?: Record<string, number> | null;
  waiting_models?: Record<string, number> | null;
  max_active_models?: number | null;
  running_queue_size?: number | null;
  waiting_queue_size?: number | null;
  /** 0-100 from llm-extproc (as seed 000's README shows, 65.5); a 0-1 fraction from llm-d's Go code. See kvCacheFraction. */
  kv_cache_usage_percent?: number | null;
  kv_cache_max_token_capacity?: number | null;
  /** `2006-01-02 15:04:05` (Go layout, no zone) or RFC 3339. See parseUpdateTime. */
  update_time?: string | null;
}

export interface PluginPod {
  pod: { namespaced_name: NamespacedName; address?: string | null; labels?: Record<string, string> | null };
  metrics?: PodMetrics | null;
  /** Where seed 000's README puts it (next to `metrics`); the Go structs put it inside `metrics`. Both are accepted. */
  update_time?: string | null;
}

export interface LlmRequest {
  target_model: string;
  request_id: string;
  critical: boolean;
  prompt: string;
  headers: Record<string, string> | null;
}

export interface FilterRequest {
  sched_context: { request: LlmRequest; pods: PluginPod[] };
  /** The candidates still alive at this filter; the answer names the ones to keep. */
  pods: PluginPod[];
}

// ---- the plugin's logic: replace this ----

/** Seed 000's sample logic: keep the candidates whose pod name ends with `2`, in their order. */
export function keepPods(request: FilterRequest): NamespacedName[] {
  return request.pods
    .filter((p) => p.pod.namespaced_name.name.endsWith('2'))
    .map(({ pod: { namespaced_name: n } }) => ({ name: n.name, namespace: n.namespace }));
}

// ---- helpers for plugins that read the metrics ----

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$/;
const GO_LAYOUT = /^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?()$/;

/**
 * `update_time` as a Date, or undefined when it is neither format: RFC 3339
 * (`2025-06-09T10:30:00Z`, seed 000's README) or Go's `2006-01-02 15:04:05` (what llm-d's code
 * sends), which has no zone and is read as UTC.
 */
export function parseUpdateTime(text: string): Date | undefined {
  const m = RFC3339.exec(text) ?? GO_LAYOUT.exec(text);
  if (m === null) return undefined;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  // Leap years repeat every 400 years, so year % 400 + 2000 has the same month lengths (and Date.UTC reads it right).
  const daysInMonth = new Date(Date.UTC(2000 + (year % 400), month, 0)).getUTCDate();
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth || hour > 23 || minute > 59 || second > 59) return undefined;
  let offsetMinutes = 0;
  const zone = m[8]!;
  if (zone.length === 6) {
    const [oh, om] = [Number(zone.slice(1, 3)), Number(zone.slice(4, 6))];
    if (oh > 23 || om > 59) return undefined;
    offsetMinutes = (zone[0] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day); // not Date.UTC: it maps years 0-99 to 1900-1999 (Go's zero time is year 1)
  date.setUTCHours(hour, minute - offsetMinutes, second, Math.floor(Number(m[7] ?? 0) * 1000));
  return date;
}

/**
 * `kv_cache_usage_percent` as a 0-1 fraction. llm-extproc sends a percentage, as seed 000's README
 * shows (65.5); llm-d's Go code sent a fraction despite the name. A value above 1 is read as a
 * percentage, so a percentage of 1% or less is indistinguishable from a fraction (and read as one).
 */
export function kvCacheFraction(value: number): number {
  return value > 1 ? value / 100 : value;
}

// ---- validation ----

/** A request the plugin cannot use: answered 400 with `{"error": message}`. */
export class BadRequest extends Error {}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function field(parent: Json, key: string, at: string): unknown {
  if (!(key in parent)) throw new BadRequest(`missing ${at}${key}`);
  return parent[key];
}

function object(parent: Json, key: string, at: string): Json {
  const value = field(parent, key, at);
  if (!isObject(value)) throw new BadRequest(`${at}${key} must be an object`);
  return value;
}

function array(parent: Json, key: string, at: string): unknown[] {
  const value = field(parent, key, at);
  if (!Array.isArray(value)) throw new BadRequest(`${at}${key} must be an array`);
  return value;
}

function typed(parent: Json, key: string, at: string, type: 'string' | 'boolean'): void {
  if (typeof field(parent, key, at) !== type) throw new BadRequest(`${at}${key} must be a ${type}`);
}

/** Optional fields may be absent or null (Go marshals a nil map as null). */
function present(parent: Json, key: string): boolean {
  return parent[key] !== undefined && parent[key] !== null;
}

function mapOf(parent: Json, key: string, at: string, ok: (v: unknown) => boolean, what: string): void {
  if (!present(parent, key)) return;
  const value = parent[key];
  if (!isObject(value) || !Object.values(value).every(ok)) throw new BadRequest(`${at}${key} must be an object of ${what}`);
}

const isString = (v: unknown): boolean => typeof v === 'string';
const isCount = (v: unknown): boolean => Number.isInteger(v) && (v as number) >= 0;

function checkUpdateTime(parent: Json, at: string): void {
  if (!present(parent, 'update_time')) return;
  const value = parent.update_time;
  if (typeof value !== 'string' || parseUpdateTime(value) === undefined) {
    throw new BadRequest(`${at}update_time must be a time like 2006-01-02 15:04:05 or 2006-01-02T15:04:05Z`);
  }
}

function checkPods(pods: unknown[], at: string): void {
  pods.forEach((entry, i) => {
    const here = `${at}[${i}].`;
    if (!isObject(entry)) throw new BadRequest(`${at}[${i}] must be an object`);
    const pod = object(entry, 'pod', here);
    const name = object(pod, 'namespaced_name', `${here}pod.`);
    typed(name, 'name', `${here}pod.namespaced_name.`, 'string');
    typed(name, 'namespace', `${here}pod.namespaced_name.`, 'string');
    if (present(pod, 'address') && typeof pod.address !== 'string') throw new BadRequest(`${here}pod.address must be a string`);
    mapOf(pod, 'labels', `${here}pod.`, isString, 'strings');
    checkUpdateTime(entry, here);
    if (!present(entry, 'metrics')) return;
    if (!isObject(entry.metrics)) throw new BadRequest(`${here}metrics must be an object`);
    const metrics = entry.metrics;
    const m = `${here}metrics.`;
    mapOf(metrics, 'active_models', m, isCount, 'counts');
    mapOf(metrics, 'waiting_models', m, isCount, 'counts');
    for (const key of ['max_active_models', 'running_queue_size', 'waiting_queue_size', 'kv_cache_max_token_capacity']) {
      if (present(metrics, key) && !isCount(metrics[key])) throw new BadRequest(`${m}${key} must be an integer >= 0`);
    }
    const kv = metrics.kv_cache_usage_percent;
    // Either shape: a 0-1 fraction or a 0-100 percentage.
    if (present(metrics, 'kv_cache_usage_percent') && !(typeof kv === 'number' && kv >= 0 && kv <= 100)) {
      throw new BadRequest(`${m}kv_cache_usage_percent must be a number 0-1 (or a percentage 0-100)`);
    }
    checkUpdateTime(metrics, m);
  });
}

/**
 * The parsed body as a FilterRequest, or BadRequest. Required, as in seed 000: `sched_context`,
 * `pods`, `sched_context.request` with `target_model`, `request_id`, `critical`, `prompt`,
 * `headers`, and `sched_context.pods`; each pod needs `pod.namespaced_name.{name,namespace}`.
 * Known optional fields are type-checked; unknown fields are ignored.
 */
export function parseFilterRequest(body: unknown): FilterRequest {
  if (!isObject(body)) throw new BadRequest('body must be a JSON object');
  const sched = object(body, 'sched_context', '');
  const pods = array(body, 'pods', '');
  const request = object(sched, 'request', 'sched_context.');
  const all = array(sched, 'pods', 'sched_context.');
  const at = 'sched_context.request.';
  typed(request, 'target_model', at, 'string');
  typed(request, 'request_id', at, 'string');
  typed(request, 'critical', at, 'boolean');
  typed(request, 'prompt', at, 'string');
  field(request, 'headers', at);
  mapOf(request, 'headers', at, isString, 'strings');
  checkPods(all, 'sched_context.pods');
  checkPods(pods, 'pods');
  return body as unknown as FilterRequest;
}

// ---- the HTTP server ----

export interface SamplePluginOptions {
  port: number;
  host: string;
  /** One line per request; default: pino at info on stdout. */
  log?: Logger;
  /** Bodies above this are answered 413 (default DEFAULT_MAX_BODY_BYTES). */
  maxBodyBytes?: number;
}

export interface SamplePlugin {
  /** `http://<bound address>:<port>` (the plugin's url for llm-extproc is this + `/external/sample`). */
  readonly url: string;
  close(): Promise<void>;
}

/** What one request's log line says, besides the method and path. */
interface Outcome {
  status: number;
  body: unknown;
  requestId?: string;
  podsIn?: number;
  podsOut?: number;
  headers?: Record<string, string>;
}

const MAX_LOGGED_CHARS = 200;

function clip(text: string): string {
  return text.length <= MAX_LOGGED_CHARS ? text : `${text.slice(0, MAX_LOGGED_CHARS)}…`;
}

/**
 * The whole body, or undefined once it passes `limit` (chunked, or a content-length that lied).
 * Not `for await`: leaving that loop early destroys the request, and with it the socket the 413
 * should go out on; here the rest is left unread and `connection: close` ends the socket.
 */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size <= limit) return void chunks.push(chunk);
      req.off('data', onData).off('end', onEnd).pause();
      resolve(undefined);
    };
    const onEnd = (): void => resolve(Buffer.concat(chunks, size));
    req.on('data', onData).on('end', onEnd).once('error', reject);
    // A client that hangs up mid-body: nobody left to answer.
    req.once('close', () => {
      if (!req.complete) reject(new Error('client closed the connection mid-body'));
    });
  });
}

async function decide(req: IncomingMessage, path: string, maxBodyBytes: number): Promise<Outcome> {
  if (path !== FILTER_PATH) return { status: 404, body: { error: `no route ${clip(path)}; the filter is POST ${FILTER_PATH}` } };
  if (req.method !== 'POST') {
    return { status: 405, body: { error: `method ${req.method} not allowed; use POST` }, headers: { allow: 'POST' } };
  }
  const tooLarge: Outcome = { status: 413, body: { error: `body over ${maxBodyBytes} bytes` }, headers: { connection: 'close' } };
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > maxBodyBytes) return tooLarge;
  const raw = await readBody(req, maxBodyBytes);
  if (raw === undefined) return tooLarge;
  let body: unknown;
  try {
    body = JSON.parse(raw.toString('utf8'));
  } catch (err) {
    return { status: 400, body: { error: `body is not JSON: ${(err as Error).message}` } };
  }
  // The request id, when there is one, goes on the log line even if the rest is wrong.
  const requestId = isObject(body) && isObject(body.sched_context) && isObject(body.sched_context.request) ? body.sched_context.request.request_id : undefined;
  const ids = typeof requestId === 'string' ? { requestId: clip(requestId) } : {};
  let request: FilterRequest;
  try {
    request = parseFilterRequest(body);
  } catch (err) {
    if (!(err instanceof BadRequest)) throw err;
    return { status: 400, body: { error: err.message }, ...ids };
  }
  const kept = keepPods(request);
  return { status: 200, body: kept, ...ids, podsIn: request.pods.length, podsOut: kept.length };
}

function send(res: ServerResponse, outcome: Outcome): void {
  const text = JSON.stringify(outcome.body);
  res.writeHead(outcome.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...outcome.headers });
  res.end(text);
}

function defaultLogger(): Logger {
  return pino({ name: 'sample-plugin', level: process.env.LOG_LEVEL ?? 'info', base: { pid: process.pid } });
}

/** Listens on `host:port` (port 0: any free one); rejects with the listen error (EADDRINUSE...). */
export async function startSamplePlugin(options: SamplePluginOptions): Promise<SamplePlugin> {
  const log = options.log ?? defaultLogger();
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const server: Server = createServer((req, res) => {
    const started = performance.now();
    const path = (req.url ?? '/').split('?', 1)[0]!;
    decide(req, path, maxBodyBytes).then(
      (outcome) => {
        send(res, outcome);
        const { status, requestId, podsIn, podsOut } = outcome;
        const problem = status === 200 ? undefined : (outcome.body as { error: string }).error;
        const line = { method: req.method, path: clip(path), status, requestId, podsIn, podsOut, error: problem, ms: Math.round(performance.now() - started) };
        if (status === 200) log.info(line, 'filter');
        else log.warn(line, 'rejected');
      },
      (err: unknown) => {
        // A client that went away mid-body (or a bug): nobody to answer in the first case.
        log.warn({ method: req.method, path: clip(path), err }, 'request failed');
        if (!res.headersSent && !res.destroyed) send(res, { status: 500, body: { error: 'internal error' } });
        else res.destroy();
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const url = `http://${isIP(address.address) === 6 ? `[${address.address}]` : address.address}:${address.port}`;
  log.info({ url, filter: `${url}${FILTER_PATH}` }, 'sample plugin listening');
  return {
    url,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}

// ---- command line: [PORT] [HOST], as seed 000's `python server.py [PORT] [HOST]` ----

export const USAGE = `usage: sample-plugin [PORT] [HOST] (defaults ${DEFAULT_PORT} ${DEFAULT_HOST}; PORT 0 = any free port)`;

export class UsageError extends Error {}

/** `[PORT] [HOST]` → options; `null` for --help; UsageError for anything else. */
export function parseCliArgs(argv: readonly string[]): { port: number; host: string } | null {
  if (argv.length === 1 && (argv[0] === '-h' || argv[0] === '--help')) return null;
  if (argv.length > 2) throw new UsageError(`expected at most PORT and HOST, got ${argv.length} arguments`);
  const [portText, host = DEFAULT_HOST] = argv;
  let port = DEFAULT_PORT;
  if (portText !== undefined) {
    if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) throw new UsageError(`PORT ${JSON.stringify(clip(portText))} is not a port number 0-65535`);
    port = Number(portText);
  }
  if (host === '') throw new UsageError('HOST is empty');
  return { port, host };
}

/** A listen error as one line for a person, or undefined when it is not a mistake in PORT or HOST. */
export function listenProblem(err: NodeJS.ErrnoException, port: number, host: string): string | undefined {
  const where = `${isIP(host) === 6 ? `[${host}]` : host}:${port}`;
  switch (err.code) {
    case 'EADDRINUSE':
      return `${where} is already in use`;
    case 'EACCES':
      return `${where}: permission denied (ports below 1024 need privileges)`;
    case 'EADDRNOTAVAIL':
      return `HOST ${host} is not an address of this machine`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `cannot resolve HOST ${JSON.stringify(clip(host))}`;
    default:
      return undefined;
  }
}

export async function main(argv: readonly string[]): Promise<void> {
  let args: { port: number; host: string } | null;
  try {
    args = parseCliArgs(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`sample-plugin: ${err.message}; ${USAGE}\n`);
    process.exitCode = 2;
    return;
  }
  if (args === null) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  let plugin: SamplePlugin;
  try {
    plugin = await startSamplePlugin(args);
  } catch (err) {
    const problem = listenProblem(err as NodeJS.ErrnoException, args.port, args.host);
    process.stderr.write(`sample-plugin: ${problem ?? (err as Error).message}\n`);
    process.exitCode = problem === undefined ? 1 : 2;
    return;
  }
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    void plugin.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`sample-plugin: ${String(err)}\n`);
    process.exit(1);
  });
}
