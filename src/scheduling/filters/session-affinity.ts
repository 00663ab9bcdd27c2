/**
 * Filter `session-affinity`: keeps a conversation on the endpoint that served its last request,
 * while that endpoint is still a candidate and not overloaded.
 *
 * A request carries a session key: by default the `x-session-id` header, or the body's top-level
 * `user` field (OpenAI's end-user id) with `source: body_user`. When the key maps to an endpoint
 * that is among the candidates and not overloaded, the filter returns just that endpoint. Otherwise
 * (no key, a new or expired key, the endpoint gone, unusable (not offered) or filtered out earlier,
 * or overloaded) it returns the candidates unchanged, the rest of the chain picks, and `picked`
 * remembers that choice for the key. So a conversation moves only when it must, and then stays
 * where it moved to: after an overload the pin follows the pick to the new endpoint, which now
 * holds the newest history, and does not go back when the old one recovers. (If nothing was
 * picked meanwhile, the old endpoint is returned again as soon as it is no longer overloaded.)
 * A request without a key gets its candidates back (the same array) and costs one header lookup,
 * with no allocation by the filter (RequestHeaders caches the lookup); with `body_user` it costs
 * one scan of the body for `user`, which allocates the scanner's state and result.
 *
 * Overloaded (either is enough):
 * - our in-flight count for the endpoint is above `max_in_flight`; or
 * - the engine's figures are fresh (`load` set and now <= `load.freshUntil`) and its waiting queue
 *   (`waiting_queue_size`) is above `max_waiting`. Stale or absent figures are not held against it.
 * The thresholds are absolute, not relative to the other candidates: a pinned conversation gains
 * from its cached prefix (no prefill of the history) and should keep it through ordinary load, but
 * not at any price. The defaults are judgements, not measurements: a queue of more than 5 waiting
 * requests means the engine has been full for a while and a new request waits behind all of them,
 * which likely costs more than recomputing the history elsewhere. `max_in_flight` is a backstop
 * for when engine figures are missing or stale (an engine without /metrics, failing scrapes): 128 of
 * our own requests on one pod is in the range of engines' batch limits (vLLM --max-num-seqs,
 * whose default depends on version and hardware); set it near your engines' limit divided by the
 * number of llm-extproc replicas, since each counts only its own.
 *
 * Memory is bounded: at most `max_sessions` keys are remembered (least recently picked first out),
 * each for `ttl` after its last pick (a sliding TTL; see TtlLru). An entry holds the endpoint's
 * address, not the Endpoint, so a removed pod is never kept alive by it; if its address comes back
 * (a new pod on a reused IP) the key simply points at the new pod, which costs one cache miss.
 *
 * Keys: the empty string is no key. Keys of up to 256 UTF-8 bytes are used as they are; longer
 * ones, up to 8 KiB, are replaced by their SHA-256 (`sha256:` + base64url), so that a stored key
 * is never longer than 256 bytes; longer than 8 KiB (raw, escapes counted, for `user`), or a `user`
 * that is not a string: no key, and the request is scheduled as if it had none. (A literal key
 * equal to some hash would share its pin: harmless, since any client can already choose its key.)
 * The `user` value is read with the top-level scanner (no JSON.parse), in slices of one event-loop
 * turn each for bodies above SCAN_SLICE_BYTES; a partial body (BUFFERED_PARTIAL) is scanned as far
 * as it goes. If the request's signal aborts during a sliced scan, filter() rejects with its reason.
 *
 * filter() and picked() meet through a WeakMap from the request to its key, written only for
 * requests that have one; picked() for a request whose key filter() has not read does nothing.
 *
 * Parameters:
 *   source         `header` (default) or `body_user`: where the session key comes from.
 *   header         the header that carries the key with `source: header`; default `x-session-id`.
 *                  Lower-cased; must be a valid header name.
 *   max_sessions   keys remembered at most, 1..10,000,000; default 10000.
 *   ttl            how long a key is remembered after its last pick: a duration (`90s`, `10m`,
 *                  `1h`, `1500ms`; a bare number is seconds), 1s..24h; default `10m`.
 *   max_in_flight  our in-flight requests on the endpoint above which it is overloaded; default 128.
 *   max_waiting    engine waiting-queue length above which it is overloaded (fresh figures only);
 *                  default 5. 0 = any waiting request moves the conversation.
 *
 * Example:
 *   - type: session-affinity
 *     parameters:
 *       source: header
 *       header: x-session-id
 *       max_sessions: 50000
 *       ttl: 30m
 *       max_in_flight: 64
 *       max_waiting: 10
 *
 * Session affinity and prefix-cache-aware routing aim at the same thing, a request landing where
 * its KV cache already is, by different means. Affinity pins a conversation by an explicit key to
 * the pod that served its previous turn, where the cache of the history probably still is: a map
 * lookup per request, exact for chat sessions, and blind to anything without a key. Prefix-cache-
 * aware routing needs no key: it hashes the prompt's prefix blocks and routes to the pod most
 * likely to hold them, which also finds prefixes shared across users and sessions (a common system
 * prompt, a few-shot preamble), but it must read the whole prompt and keep an index of which pod
 * holds which blocks. They combine: affinity first for keyed sessions, prefix scoring for the rest.
 */
import { createHash } from 'node:crypto';
import { durationMs } from '../../config/config.js';
import { ConfigError } from '../../config/errors.js';
import type { Endpoint } from '../../discovery/endpoint.js';
import { SCAN_SLICE_BYTES, type ScanResult, scanTopLevel, scanTopLevelSliced, WantedKeys } from '../../request/json-scan.js';
import { needsSlicedScan } from '../../request/routing-request.js';
import { HEADER_NAME } from '../../wire-names.js';
import { SCHEDULING_CONFIG_FLAG } from '../plugin-params.js';
import { freshMetrics } from '../scorers/engine-figures.js';
import type { Filter, PickListener, SchedulingRequest } from '../types.js';
import { TtlLru } from './lru.js';

export const SESSION_AFFINITY_TYPE = 'session-affinity';

/** Keys up to this many UTF-8 bytes are stored as they are. */
export const MAX_KEY_BYTES = 256;
/** Keys up to this many bytes (raw, for the body's `user`) are hashed; longer ones are no key. */
export const MAX_HASHED_KEY_BYTES = 8 * 1024;

export type SessionKeySource = 'header' | 'body_user';

export interface SessionAffinityOptions {
  source: SessionKeySource;
  /** Lower-case header name (source `header`). */
  header: string;
  maxSessions: number;
  ttlMs: number;
  maxInFlight: number;
  maxWaiting: number;
}

export const SESSION_AFFINITY_DEFAULTS: Readonly<SessionAffinityOptions> = Object.freeze({
  source: 'header',
  header: 'x-session-id',
  maxSessions: 10_000,
  ttlMs: 10 * 60_000,
  maxInFlight: 128,
  maxWaiting: 5,
});

const USER_KEY = new WantedKeys(['user']);
const USER_SCAN = { partial: true, maxValueBytes: MAX_HASHED_KEY_BYTES } as const;
const USER_SCAN_SLICED = { ...USER_SCAN, sliceBytes: SCAN_SLICE_BYTES } as const;

/** The key as stored: `raw` itself when short, its hash when long, undefined when empty or too long. */
export function sessionKey(raw: string | undefined): string | undefined {
  if (!raw) return undefined;
  // A string of n UTF-16 units is at most 3n UTF-8 bytes, so short ones need no count.
  if (raw.length <= MAX_KEY_BYTES / 3) return raw;
  const bytes = Buffer.byteLength(raw);
  if (bytes <= MAX_KEY_BYTES) return raw;
  if (bytes > MAX_HASHED_KEY_BYTES) return undefined;
  return `sha256:${createHash('sha256').update(raw).digest('base64url')}`;
}

function userKey(scan: ScanResult): string | undefined {
  if (!scan.ok) return undefined;
  const user = scan.values.get('user');
  return user?.type === 'string' ? sessionKey(user.value) : undefined;
}

export class SessionAffinityFilter implements Filter, PickListener {
  readonly type = SESSION_AFFINITY_TYPE;
  readonly options: Readonly<SessionAffinityOptions>;
  /** Session key → endpoint address. */
  private readonly sessions: TtlLru<string>;
  /** The key filter() read for a request, for picked(); only requests with a key are entered. */
  private readonly keys = new WeakMap<SchedulingRequest, string>();

  /** `clock` gives performance.now() milliseconds, as `EngineLoad.freshUntil` is written. */
  constructor(
    readonly name: string = SESSION_AFFINITY_TYPE,
    options: Partial<SessionAffinityOptions> = {},
    private readonly clock: () => number = () => performance.now(),
  ) {
    this.options = Object.freeze({ ...SESSION_AFFINITY_DEFAULTS, ...options });
    this.sessions = new TtlLru(this.options.maxSessions, this.options.ttlMs);
  }

  /** Sessions remembered now (expired ones included until they are dropped). */
  get size(): number {
    return this.sessions.size;
  }

  filter(request: SchedulingRequest, candidates: readonly Endpoint[]): readonly Endpoint[] | Promise<readonly Endpoint[]> {
    if (this.options.source === 'header') return this.pin(request, sessionKey(request.headers.get(this.options.header)), candidates);
    const body = request.body;
    if (body === undefined || body.length === 0) return candidates;
    if (!needsSlicedScan(body)) return this.pin(request, userKey(scanTopLevel(body, USER_KEY, USER_SCAN)), candidates);
    return scanTopLevelSliced(body, USER_KEY, { ...USER_SCAN_SLICED, signal: request.signal }).then((scan) => this.pin(request, userKey(scan), candidates));
  }

  picked(request: SchedulingRequest, endpoint: Endpoint): void {
    const key = this.keys.get(request);
    if (key !== undefined) this.sessions.set(key, endpoint.address, this.clock());
  }

  private pin(request: SchedulingRequest, key: string | undefined, candidates: readonly Endpoint[]): readonly Endpoint[] {
    if (key === undefined) return candidates;
    this.keys.set(request, key);
    const now = this.clock();
    const address = this.sessions.get(key, now);
    if (address === undefined) return candidates;
    for (let i = 0; i < candidates.length; i++) {
      const endpoint = candidates[i]!;
      if (endpoint.address === address) return this.overloaded(endpoint, now) ? candidates : [endpoint];
    }
    return candidates;
  }

  private overloaded(endpoint: Endpoint, now: number): boolean {
    if (endpoint.inFlight > this.options.maxInFlight) return true;
    return (freshMetrics(endpoint, now)?.waiting_queue_size ?? 0) > this.options.maxWaiting;
  }
}

const PARAMETERS = ['source', 'header', 'max_sessions', 'ttl', 'max_in_flight', 'max_waiting'] as const;
const SOURCES: readonly SessionKeySource[] = ['header', 'body_user'];
const MAX_SESSIONS_LIMIT = 10_000_000;
const TTL_MIN_MS = 1000;
const TTL_MAX_MS = 24 * 3_600_000;
/** Far above any engine's batch; also keeps the figures exact integers. */
const MAX_THRESHOLD = 1_000_000;

/**
 * Builds the filter from its configuration's `parameters`. Throws ConfigError (flag
 * `--scheduling-config`) for an unknown parameter or a bad value, naming the instance.
 */
export function createSessionAffinity(parameters: Record<string, unknown>, name: string = SESSION_AFFINITY_TYPE, clock?: () => number): SessionAffinityFilter {
  const fail = (message: string, hint: string): never => {
    throw new ConfigError(SCHEDULING_CONFIG_FLAG, `${SESSION_AFFINITY_TYPE} "${name}": ${message}`, hint);
  };
  for (const key of Object.keys(parameters)) {
    if (!(PARAMETERS as readonly string[]).includes(key)) fail(`unknown parameter "${key}"`, `use ${PARAMETERS.join(', ')}`);
  }
  const options: Partial<SessionAffinityOptions> = {};
  const { source, header, max_sessions, ttl, max_in_flight, max_waiting } = parameters;

  if (source !== undefined) {
    if (typeof source !== 'string' || !(SOURCES as readonly string[]).includes(source))
      fail(`source ${show(source)} is not one of ${SOURCES.join(', ')}`, 'e.g. source: header');
    options.source = source as SessionKeySource;
  }
  if (header !== undefined) {
    if (options.source === 'body_user') fail('header applies to source: header only', 'drop header, or use source: header');
    const lower = typeof header === 'string' ? header.trim().toLowerCase() : '';
    if (!HEADER_NAME.test(lower)) fail(`header ${show(header)} is not a valid header name`, `e.g. the default ${SESSION_AFFINITY_DEFAULTS.header}`);
    options.header = lower;
  }
  if (max_sessions !== undefined) options.maxSessions = integer('max_sessions', max_sessions, 1, MAX_SESSIONS_LIMIT, fail);
  if (ttl !== undefined) options.ttlMs = duration(ttl, fail);
  if (max_in_flight !== undefined) options.maxInFlight = integer('max_in_flight', max_in_flight, 0, MAX_THRESHOLD, fail);
  if (max_waiting !== undefined) options.maxWaiting = integer('max_waiting', max_waiting, 0, MAX_THRESHOLD, fail);
  return new SessionAffinityFilter(name, options, clock);
}

type Fail = (message: string, hint: string) => never;

function integer(parameter: string, value: unknown, min: number, max: number, fail: Fail): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    fail(`${parameter} must be an integer in ${min}..${max}, not ${show(value)}`, `e.g. ${parameter}: ${defaultText(parameter)}`);
  }
  return value as number;
}

/** `500ms`, `30s`, `10m`, `1h`, or a bare number of seconds (a YAML number or a string). */
function duration(value: unknown, fail: Fail): number {
  const ms = durationMs(typeof value === 'number' ? String(value) : typeof value === 'string' ? value : '');
  const hint = 'write e.g. 30s, 10m or 1h, within 1s..24h; a bare number is seconds';
  if (ms === undefined) return fail(`ttl ${show(value)} is not a duration`, hint);
  if (ms < TTL_MIN_MS || ms > TTL_MAX_MS) fail(`ttl ${show(value)} is outside 1s..24h`, hint);
  return ms;
}

function defaultText(parameter: string): string {
  if (parameter === 'max_sessions') return String(SESSION_AFFINITY_DEFAULTS.maxSessions);
  if (parameter === 'max_in_flight') return String(SESSION_AFFINITY_DEFAULTS.maxInFlight);
  return String(SESSION_AFFINITY_DEFAULTS.maxWaiting);
}

/** A parameter's value as an error message quotes it: JSON, cut short. */
function show(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 60 ? `${text.slice(0, 60)}…` : text;
}
