import type { Endpoint } from '../../discovery/endpoint.js';

/** A routed request as the status page lists it. */
export interface DecisionView {
  /** Epoch milliseconds. */
  at: number;
  model: string;
  owned_by: string | null;
  endpoint: string;
  /** Why this endpoint: the picker, and what it saw there. */
  picker: string;
  /** Requests in flight at the endpoint when it was picked (this one not counted). */
  in_flight: number;
  /** The engine's running + waiting at the last scrape, when one is known. */
  engine_queue: number | null;
}

/** A request answered with an error instead of a route. */
export interface RefusalView {
  at: number;
  model: string | null;
  owned_by: string | null;
  status: number;
  code: string;
}

/** Receives what the router decided; the status page's DecisionLog is one. */
export interface DecisionSink {
  routed(model: string, ownedBy: string | undefined, endpoint: Endpoint, picker: string): void;
  refused(model: string | undefined, ownedBy: string | undefined, status: number, code: string): void;
}

/**
 * The last N decisions and refusals, for the status page. Recording happens on the request path,
 * so it only overwrites the fields of a preallocated slot: no allocation, no JSON. Views are built
 * when a page asks.
 */
export class DecisionLog implements DecisionSink {
  private readonly routedRing: Ring<DecisionView>;
  private readonly refusedRing: Ring<RefusalView>;
  private readonly listeners = new Set<() => void>();
  /** Totals since start (the rings keep only the last ones). */
  routedTotal = 0;
  refusedTotal = 0;

  constructor(capacity = 100) {
    this.routedRing = new Ring(capacity, () => ({ at: 0, model: '', owned_by: null, endpoint: '', picker: '', in_flight: 0, engine_queue: null }));
    this.refusedRing = new Ring(capacity, () => ({ at: 0, model: null, owned_by: null, status: 0, code: '' }));
  }

  routed(model: string, ownedBy: string | undefined, endpoint: Endpoint, picker: string): void {
    const slot = this.routedRing.next();
    slot.at = Date.now();
    slot.model = model;
    slot.owned_by = ownedBy ?? null;
    slot.endpoint = endpoint.address;
    slot.picker = picker;
    // The lease was taken just before: what the picker saw excludes it.
    slot.in_flight = endpoint.inFlight - 1;
    const metrics = endpoint.load?.metrics;
    slot.engine_queue = metrics ? metrics.running_queue_size + metrics.waiting_queue_size : null;
    this.routedTotal++;
    this.changed();
  }

  refused(model: string | undefined, ownedBy: string | undefined, status: number, code: string): void {
    const slot = this.refusedRing.next();
    slot.at = Date.now();
    slot.model = model ?? null;
    slot.owned_by = ownedBy ?? null;
    slot.status = status;
    slot.code = code;
    this.refusedTotal++;
    this.changed();
  }

  /** Newest first, copies (the slots are reused). */
  decisions(): DecisionView[] {
    return this.routedRing.newestFirst().map((slot) => ({ ...slot }));
  }

  refusals(): RefusalView[] {
    return this.refusedRing.newestFirst().map((slot) => ({ ...slot }));
  }

  /** Called after every record; returns the unsubscribe function. */
  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private changed(): void {
    for (const listener of this.listeners) listener();
  }
}

/** A fixed-size ring of reusable slots, created up front. */
class Ring<T> {
  private readonly slots: T[];
  private written = 0;

  constructor(capacity: number, create: () => T) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`ring capacity must be a positive integer, got ${capacity}`);
    this.slots = Array.from({ length: capacity }, create);
  }

  /** The slot to overwrite: the oldest once the ring is full. */
  next(): T {
    return this.slots[this.written++ % this.slots.length]!;
  }

  newestFirst(): T[] {
    const count = Math.min(this.written, this.slots.length);
    const out: T[] = [];
    for (let i = 1; i <= count; i++) out.push(this.slots[(this.written - i) % this.slots.length]!);
    return out;
  }
}
