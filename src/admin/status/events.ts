import { timed } from './snapshot.js';

/** One connected page, as the hub writes to it. */
export interface StatusClient {
  /** Sends one snapshot event; resolves when the transport took it. */
  send(payload: string): Promise<void>;
  /** Sends an SSE comment so proxies keep the idle connection open. */
  heartbeat(): Promise<void>;
}

export interface StatusEventsOptions {
  /** Connections beyond this are refused (each one costs a JSON build per change). */
  maxClients: number;
  /** At most one snapshot per this many ms, however often things change. */
  minIntervalMs: number;
  /** How often to look for changes nobody announces (scraped load, in-flight counts). */
  tickMs: number;
  heartbeatMs: number;
}

export const DEFAULT_EVENTS_OPTIONS: StatusEventsOptions = { maxClients: 32, minIntervalMs: 250, tickMs: 1000, heartbeatMs: 15_000 };

/** Where snapshots come from: `body` builds the JSON object (see snapshot.ts), `subscribe` announces changes. */
export interface SnapshotSource {
  body(): string;
  /** Subscribed while clients are connected; returns the unsubscribe function. */
  subscribe(onChange: () => void): () => void;
}

/**
 * Fans snapshots out to the connected pages: one on connect, then one after changes, coalesced
 * to one per `minIntervalMs` and skipped when nothing in it changed. Its timers run only while a
 * client is connected, and are unref'd so they never keep the process alive.
 */
export class StatusEvents {
  private readonly clients = new Map<StatusClient, ClientState>();
  private lastBody: string | undefined;
  private lastSentAt = 0;
  private flushTimer: NodeJS.Timeout | undefined;
  private timers: NodeJS.Timeout[] = [];
  private unsubscribe: (() => void) | undefined;

  constructor(
    private readonly source: SnapshotSource,
    private readonly options: StatusEventsOptions = DEFAULT_EVENTS_OPTIONS,
  ) {}

  get clientCount(): number {
    return this.clients.size;
  }

  get full(): boolean {
    return this.clients.size >= this.options.maxClients;
  }

  /** Connects a client and sends it the current snapshot; returns its leave function, or undefined when full. */
  join(client: StatusClient): (() => void) | undefined {
    if (this.full) return undefined;
    const state: ClientState = { writing: false, pending: undefined };
    this.clients.set(client, state);
    if (this.clients.size === 1) this.startWatching();
    this.write(client, state, timed(this.source.body()));
    return () => this.leave(client);
  }

  /** Something changed: a snapshot goes out soon (coalesced). */
  changed = (): void => {
    if (this.clients.size === 0 || this.flushTimer) return;
    const wait = Math.max(0, this.lastSentAt + this.options.minIntervalMs - performance.now());
    this.flushTimer = setTimeout(this.flush, wait);
    this.flushTimer.unref();
  };

  private readonly flush = (): void => {
    this.flushTimer = undefined;
    this.lastSentAt = performance.now();
    const body = this.source.body();
    if (body === this.lastBody) return;
    this.lastBody = body;
    const payload = timed(body);
    for (const [client, state] of this.clients) this.write(client, state, payload);
  };

  /** One write at a time per client: a slow one gets only the newest snapshot once it catches up. */
  private write(client: StatusClient, state: ClientState, payload: string): void {
    if (state.writing) {
      state.pending = payload;
      return;
    }
    state.writing = true;
    const done = () => {
      state.writing = false;
      const next = state.pending;
      state.pending = undefined;
      if (next !== undefined && this.clients.has(client)) this.write(client, state, next);
    };
    // A client whose connection broke leaves through its abort; its failed write needs no more.
    client.send(payload).then(done, done);
  }

  private leave(client: StatusClient): void {
    if (!this.clients.delete(client) || this.clients.size > 0) return;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    this.lastBody = undefined;
  }

  private startWatching(): void {
    this.unsubscribe = this.source.subscribe(this.changed);
    const heartbeat = () => {
      for (const client of this.clients.keys()) client.heartbeat().catch(() => {});
    };
    this.timers = [setInterval(this.changed, this.options.tickMs), setInterval(heartbeat, this.options.heartbeatMs)];
    for (const timer of this.timers) timer.unref();
  }
}

interface ClientState {
  writing: boolean;
  /** The newest snapshot not yet written because a write was still under way. */
  pending: string | undefined;
}
