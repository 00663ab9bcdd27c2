import { setTimeout as sleep } from 'node:timers/promises';
import {
  type ConfigurationOptions,
  type KubernetesListObject,
  type KubernetesObject,
  ListWatch,
  type ObservableMiddleware,
  Watch,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { ConfigError } from '../../config/errors.js';
import {
  classifyFailure,
  errorText,
  type KubeConnection,
  type KubeMetrics,
  MalformedAnswer,
  type ResolvedNamespace,
  type RestartCause,
  startupError,
  withSignal,
} from './kube-client.js';

/**
 * One list + watch of one resource, kept alive: @kubernetes/client-node's ListWatch (the informer:
 * its cache, relist-and-reconcile after 410 Gone, re-watch after a clean close) driven from here
 * where it stops short. Read from client-node 2.0.1's cache.js and watch.js:
 *
 * - after any failed list or watch (connection refused or reset, a non-200 answer) it calls its
 *   error callbacks and stops for good; restarting is the caller's job. Done here, with capped,
 *   jittered exponential backoff.
 * - a watch event without an object or metadata (`{"type":"ADDED"}`) throws inside an async
 *   handler: an unhandled rejection, which ends a Node process. Events are checked first here;
 *   bad ones are logged, counted and dropped. A line that is not JSON is dropped by the library
 *   itself, silently, before anything here sees it.
 * - a DELETED event for an object not in the cache is dropped silently; here it is also logged
 *   and counted.
 * - `stop()` during a list lets that list go on to open a watch; here a stopped informer opens none.
 * - `stop()` does not end its wait before a re-watch (up to 30 s after repeated clean closes), whose
 *   timer then keeps the process alive; here the wait ends on stop.
 * - it does not ask for bookmarks; here it does (they keep the resourceVersion fresh on a quiet
 *   resource, so a re-watch does not fall back to a full relist).
 */

export interface BackoffOptions {
  /** The first retry waits between half this and this. */
  initialMs: number;
  /** No retry waits longer. */
  maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 500, maxMs: 30_000 };

/** Exponential backoff with "equal jitter": each delay is uniform in [d/2, d], d doubling up to the cap. */
export class Backoff {
  private attempt = 0;

  constructor(
    private readonly options: BackoffOptions,
    private readonly random: () => number = Math.random,
  ) {}

  next(): number {
    const ceiling = Math.min(this.options.maxMs, this.options.initialMs * 2 ** Math.min(this.attempt, 30));
    this.attempt += 1;
    return Math.round(ceiling / 2 + (this.random() * ceiling) / 2);
  }

  reset(): void {
    this.attempt = 0;
  }
}

/** What is watched. */
export interface WatchTarget<T extends KubernetesObject> {
  /** URL name of the resource (`pods`, `endpointslices`): metric label, log field, messages. */
  resource: string;
  /** `''` for the core group. */
  group: string;
  /** `Pod`, `EndpointSlice`: a watch event about another kind is malformed. */
  kind: string;
  /** The collection's URL path, e.g. `/api/v1/namespaces/ns/pods`. */
  path: string;
  namespace: ResolvedNamespace;
  /** '' = every object of the namespace. */
  labelSelector: string;
  /** One list call with the given request options (they carry the abort signal). */
  list(options: ConfigurationOptions<ObservableMiddleware>): Promise<KubernetesListObject<T>>;
}

/** Told about objects in the order the informer learns of them; never about a malformed one. */
export interface InformerHandlers<T extends KubernetesObject> {
  /** Listed, added or changed. */
  upsert(object: T): void;
  /** Deleted or no longer selected; `relist` when it was missing from a relist (gone while not watching). */
  remove(object: T, relist: boolean): void;
  /** A complete list is in (the first, or a relist); called before the watch that follows it. */
  listed?(): void;
}

export interface InformerOptions {
  backoff?: BackoffOptions;
  /** Transient failures of the first list are retried for this long before `synced` rejects. */
  startupDeadlineMs?: number;
  /** Each list request is aborted after this long. */
  listTimeoutMs?: number;
}

const WATCH_TYPES = new Set(['ADDED', 'MODIFIED', 'DELETED', 'BOOKMARK', 'ERROR']);

/** A named object: what every handler may rely on. */
export type Named<T> = T & { metadata: { name: string; namespace?: string } };

export class ResilientInformer<T extends KubernetesObject> {
  /**
   * Resolves once the first list is in the handlers and a watch from it was accepted. Rejects with
   * a one-line ConfigError when the first list cannot be done (a permanent failure at once; a
   * transient one once retries pass the start-up deadline); the informer keeps retrying after that
   * until stopped.
   */
  readonly synced: Promise<void>;
  private resolveSynced!: () => void;
  private rejectSynced!: (err: ConfigError) => void;
  private settled = false;

  private readonly informer: ListWatch<T>;
  private readonly backoff: Backoff;
  private readonly startupDeadlineMs: number;
  private readonly listTimeoutMs: number;
  private readonly stopping = new AbortController();
  private stopped = false;
  private startedAt = 0;
  private attempts = 0;
  private listed = false;
  /** True between a list's answer and the watch that follows it: removals then come from the relist. */
  private relisting = false;
  private phase: 'list' | 'watch' = 'list';
  private lostAt: Date | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  /** A 410 ERROR event was seen: the stream's end that follows is the relist, not a plain close. */
  private expired = false;

  constructor(
    private readonly connection: KubeConnection,
    private readonly target: WatchTarget<T>,
    private readonly handlers: InformerHandlers<Named<T>>,
    private readonly log: Logger,
    private readonly metrics: KubeMetrics,
    options: InformerOptions = {},
  ) {
    this.backoff = new Backoff(options.backoff ?? DEFAULT_BACKOFF);
    this.startupDeadlineMs = options.startupDeadlineMs ?? 10_000;
    this.listTimeoutMs = options.listTimeoutMs ?? 30_000;
    this.synced = new Promise<void>((resolve, reject) => {
      this.resolveSynced = resolve;
      this.rejectSynced = reject;
    });
    // Whoever awaits it sees the rejection; nobody awaiting it must not crash the process.
    this.synced.catch(() => {});
    const watch = new GuardedWatch(connection, this);
    // The library waits (up to 30 s) before re-watching after repeated clean closes; stop() must end that wait, or
    // the timer keeps the process alive.
    const delayFn = (ms: number) => sleep(ms, undefined, { signal: this.stopping.signal }).catch(() => {});
    this.informer = new ListWatch<T>(target.path, watch, () => this.list(), false, target.labelSelector || undefined, undefined, { delayFn });
    this.informer.on('add', (object) => this.deliver('upsert', object));
    this.informer.on('update', (object) => this.deliver('upsert', object));
    this.informer.on('delete', (object) => this.deliver('remove', object));
    this.informer.on('error', (err) => this.failed(err));
  }

  start(): void {
    if (this.startedAt !== 0 || this.stopped) return;
    this.startedAt = performance.now();
    this.run();
  }

  /** When contact was lost (the picture may be out of date since); undefined while lists and watches work. */
  staleSince(): Date | undefined {
    return this.lostAt;
  }

  /** The cached object, if the informer holds it. */
  get(name: string): T | undefined {
    return this.informer.get(name, this.target.namespace.namespace);
  }

  /** Stops watching and retrying; the handlers hear nothing more. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.restartTimer);
    this.stopping.abort();
    await this.informer.stop();
  }

  // --- driven by the library ---------------------------------------------------------------

  private run(): void {
    this.restartTimer = undefined;
    if (this.stopped) return;
    // start() rejects only on a bug in the chain (the guarded watch never throws); treat it as a failure.
    this.informer.start().catch((err: unknown) => this.failed(err));
  }

  private async list(): Promise<KubernetesListObject<T>> {
    this.phase = 'list';
    const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(this.listTimeoutMs)]);
    const list: unknown = await this.target.list(withSignal(signal));
    if (!list || typeof list !== 'object' || !Array.isArray((list as { items?: unknown }).items)) {
      throw new MalformedAnswer(`a ${this.target.resource} list without items: ${preview(list)}`);
    }
    this.contact();
    this.listed = true;
    this.relisting = true;
    const { items, ...rest } = list as KubernetesListObject<T>;
    return { ...rest, items: this.usableItems(items) };
  }

  /** List items the library can cache: objects with a name, in the watched namespace. */
  private usableItems(items: unknown[]): T[] {
    return items.filter((item: unknown) => {
      const problem = this.problemWith(item);
      if (problem) this.anomaly('malformed', `ignored: ${this.target.resource} list item ${problem}`, item);
      return !problem;
    }) as T[];
  }

  private deliver(kind: 'upsert' | 'remove', object: T): void {
    if (this.stopped) return;
    try {
      if (kind === 'upsert') this.handlers.upsert(object as Named<T>);
      else this.handlers.remove(object as Named<T>, this.relisting);
    } catch (err) {
      this.log.error({ err, resource: this.target.resource, object: object.metadata?.name }, `handling a ${this.target.resource} change failed`);
    }
  }

  /** A list or watch failed and the library stopped: note it, maybe end the start-up, retry later. */
  private failed(err: unknown): void {
    if (this.stopped) return;
    if (this.restartTimer !== undefined) return; // already scheduled
    this.relisting = false;
    const failure = classifyFailure(err);
    this.metrics.errors.inc({ resource: this.target.resource, kind: failure.kind });
    this.lostAt ??= new Date();
    let delay = this.backoff.next();
    this.attempts += 1;
    // At start-up the retries use the whole window: the last one waits only until the deadline.
    const remaining = this.startupDeadlineMs - (performance.now() - this.startedAt);
    if (!this.settled) delay = Math.max(0, Math.min(delay, remaining));
    const fields = {
      resource: this.target.resource,
      namespace: this.target.namespace.namespace,
      server: this.connection.server,
      error: failure.detail,
      retryInMs: delay,
    };
    if (!this.settled) {
      if (!failure.transient || remaining <= 0) {
        this.settled = true;
        const error = startupError(failure, this.scope(), this.attempts);
        this.log.error({ ...fields, retryInMs: undefined }, `${this.phase} of ${this.target.resource} failed at start-up: ${error.line}`);
        this.rejectSynced(error);
      } else {
        this.log.warn(fields, `${this.phase} of ${this.target.resource} failed at start-up; retrying`);
      }
    } else {
      const level = failure.transient ? 'warn' : 'error';
      this.log[level](fields, `${this.phase} of ${this.target.resource} failed; keeping the last known state and retrying`);
    }
    this.metrics.restarts.inc({ resource: this.target.resource, cause: 'error' });
    this.restartTimer = setTimeout(() => this.run(), delay);
  }

  private scope() {
    const { resource, group, namespace, labelSelector } = this.target;
    return { connection: this.connection, verb: this.phase, resource, group, namespace, labelSelector };
  }

  /** A list answered or a watch was accepted. */
  private contact(): void {
    this.backoff.reset();
    if (this.lostAt) {
      this.log.info(
        { resource: this.target.resource, server: this.connection.server, lostForMs: Date.now() - this.lostAt.getTime() },
        `${this.target.resource}: contact with the API server is back`,
      );
      this.lostAt = undefined;
    }
  }

  // --- seen by the guarded watch -------------------------------------------------------------

  /** @internal The library asks for a watch: the list before it (if any) is in the handlers now. */
  watchStarting(): boolean {
    if (this.stopped) return false;
    const afterList = this.relisting;
    this.relisting = false;
    this.phase = 'watch';
    if (afterList && this.handlers.listed) {
      try {
        this.handlers.listed();
      } catch (err) {
        this.reportBug(err, 'handling the end of a list');
      }
    }
    return true;
  }

  /** @internal The watch request was answered 200. */
  watchAccepted(): void {
    if (this.stopped) return;
    this.contact();
    if (this.listed && !this.settled) {
      this.settled = true;
      this.resolveSynced();
    }
  }

  /** @internal The stream ended: `err` null for a clean close. False: say nothing more to the library. */
  watchEnded(err: unknown): boolean {
    if (this.stopped) return false;
    const expired = this.expired || (err as { statusCode?: unknown } | null)?.statusCode === 410;
    this.expired = false;
    let cause: RestartCause | undefined;
    if (expired) cause = 'expired';
    else if (err === null || err === undefined) cause = 'closed';
    else if ((err as { name?: unknown }).name === 'TimeoutError') cause = 'timeout';
    // Other errors reach failed() through the library's error callback.
    if (cause) {
      this.metrics.restarts.inc({ resource: this.target.resource, cause });
      if (cause === 'expired') this.metrics.errors.inc({ resource: this.target.resource, kind: 'expired' });
      // A quiet watch ends every 30 s (client-node's inactivity timeout): routine, so debug; a relist is worth a line.
      const level = cause === 'expired' ? 'info' : 'debug';
      this.log[level](
        { resource: this.target.resource, cause },
        `${this.target.resource} watch ended; ${cause === 'expired' ? 'relisting' : 'watching again'}`,
      );
    }
    return true;
  }

  /** @internal Whether a watch event may go to the library; logs and counts the ones that may not. */
  admit(type: unknown, object: unknown): boolean {
    if (this.stopped) return false;
    if (typeof type !== 'string' || !WATCH_TYPES.has(type)) {
      this.anomaly('malformed', `ignored: watch event of unknown type ${JSON.stringify(type)}`, object);
      return false;
    }
    if (!object || typeof object !== 'object') {
      this.anomaly('malformed', `ignored: ${type} watch event without an object`, object);
      return false;
    }
    if (type === 'ERROR') {
      const status = object as { code?: unknown; message?: unknown; reason?: unknown };
      if (status.code === 410) this.expired = true;
      else this.metrics.errors.inc({ resource: this.target.resource, kind: 'other' });
      this.log.warn(
        { resource: this.target.resource, code: status.code, reason: status.reason, message: status.message },
        `${this.target.resource} watch reported an error`,
      );
      return true;
    }
    if (type === 'BOOKMARK') {
      const ok = typeof (object as { metadata?: { resourceVersion?: unknown } }).metadata?.resourceVersion === 'string';
      if (!ok) this.anomaly('malformed', 'ignored: BOOKMARK without metadata.resourceVersion', object);
      return ok;
    }
    const problem = this.problemWith(object);
    if (problem) {
      this.anomaly('malformed', `ignored: ${type} event for an object ${problem}`, object);
      return false;
    }
    const name = (object as Named<T>).metadata.name;
    const known = this.get(name) !== undefined;
    if (type === 'DELETED' && !known) {
      this.anomaly('unknown_object', `ignored: DELETED event for ${this.target.resource} "${name}", which was never seen`, undefined);
      return false;
    }
    if (type === 'MODIFIED' && !known) {
      // The event carries the object's full state; taking it as an add is what a fresh list would do.
      this.anomaly('unknown_object', `MODIFIED event for ${this.target.resource} "${name}", which was never seen; taken as added`, undefined);
    }
    return true;
  }

  private problemWith(object: unknown): string | undefined {
    if (!object || typeof object !== 'object') return 'that is not an object';
    const { metadata, kind } = object as { metadata?: { name?: unknown; namespace?: unknown }; kind?: unknown };
    if (!metadata || typeof metadata !== 'object') return 'without metadata';
    if (typeof metadata.name !== 'string' || metadata.name === '') return 'without metadata.name';
    if (metadata.namespace !== undefined && metadata.namespace !== this.target.namespace.namespace) {
      return `from another namespace (${String(metadata.namespace)})`;
    }
    if (kind !== undefined && kind !== this.target.kind) return `of kind ${String(kind)}, not ${this.target.kind}`;
    return undefined;
  }

  /** Logs and counts something that made no sense (`what` says what became of it). */
  private anomaly(reason: 'malformed' | 'unknown_object', what: string, object: unknown): void {
    this.metrics.anomalies.inc({ resource: this.target.resource, reason });
    this.log.warn({ resource: this.target.resource, reason, object: object === undefined ? undefined : preview(object) }, what);
  }

  /** @internal */
  reportBug(err: unknown, during: string): void {
    this.log.error({ err, resource: this.target.resource }, `${this.target.resource} informer: ${during} failed: ${errorText(err)}`);
  }
}

/** At most 200 characters of JSON, for a log line about a bad object. */
function preview(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 200 ? `${text.slice(0, 197)}...` : text;
}

/**
 * client-node's Watch with its edges guarded for the informer above: events are checked before
 * the library sees them, rejections of its async handlers are caught, bookmarks are requested, and
 * a stopped informer opens no watch.
 */
class GuardedWatch<T extends KubernetesObject> extends Watch {
  constructor(
    connection: KubeConnection,
    private readonly owner: ResilientInformer<T>,
  ) {
    super(connection.kubeConfig);
  }

  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    const idle = new AbortController();
    if (!this.owner.watchStarting()) {
      idle.abort();
      return idle;
    }
    let ended = false;
    const guardedDone = (err: unknown) => {
      if (ended) return;
      ended = true;
      if (!this.owner.watchEnded(err)) return;
      try {
        // The library's done handler is async (it relists and re-watches); a rejection would be unhandled.
        Promise.resolve(done(err)).catch((bug: unknown) => this.owner.reportBug(bug, 'restarting the watch'));
      } catch (bug) {
        this.owner.reportBug(bug, 'restarting the watch');
      }
    };
    const guardedCallback = (type: string, object: unknown, raw?: unknown) => {
      if (!this.owner.admit(type, object)) return;
      try {
        // The library's event handler is async too.
        Promise.resolve(callback(type, object, raw)).catch((bug: unknown) => this.owner.reportBug(bug, `applying a ${type} event`));
      } catch (bug) {
        this.owner.reportBug(bug, `applying a ${type} event`);
      }
    };
    try {
      const controller = await super.watch(path, { ...queryParams, allowWatchBookmarks: true }, guardedCallback, guardedDone);
      if (!ended) this.owner.watchAccepted();
      return controller;
    } catch (err) {
      // Before the request (credentials, exec plugins): the library would leave this unhandled.
      guardedDone(err);
      idle.abort();
      return idle;
    }
  }
}
