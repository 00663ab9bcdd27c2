import type { Endpoint } from '../discovery/endpoint.js';
import type { RequestHeaders } from '../extproc/headers.js';
import type { RoutingRequest } from '../request/routing-request.js';
import type { Lease } from './ledger.js';

/**
 * One request as scheduling plugins see it. Plugins that need more than the routing fields
 * (an external filter's prompt, a session key from the body) read the raw body themselves, lazily.
 */
export interface SchedulingRequest {
  readonly routing: RoutingRequest;
  readonly headers: RequestHeaders;
  /** The request body as Envoy sent it; undefined when routing happened on the headers. */
  readonly body: Buffer | undefined;
  /** Aborts when the ext_proc stream ends (Envoy reset, client gone): cancel outside calls with it. */
  readonly signal: AbortSignal;
  /** Every candidate at the start of this decision (before any filter): seed 000's `sched_context.pods`. */
  readonly initialCandidates: readonly Endpoint[];
}

/** A plugin that wants to know where the request went (session affinity learns from it). */
export interface PickListener {
  picked(request: SchedulingRequest, endpoint: Endpoint): void;
}

/**
 * Narrows the candidates. Returns the ones to keep, in their order (a subset of `candidates`;
 * empty = none fits). May be asynchronous (external filters). Throws PluginError when it failed and
 * must not be skipped (fail-closed); a filter that fails open returns its input instead.
 */
export interface Filter extends Partial<PickListener> {
  /** The instance's name (from the configuration), for logs, errors and metrics. */
  readonly name: string;
  /** The plugin type, e.g. `label-selector`. */
  readonly type: string;
  filter(request: SchedulingRequest, candidates: readonly Endpoint[]): readonly Endpoint[] | Promise<readonly Endpoint[]>;
}

/** Rates every candidate from 0 (worst) to 1 (best); the chain adds `weight` x score per candidate. */
export interface Scorer extends Partial<PickListener> {
  readonly name: string;
  readonly type: string;
  readonly weight: number;
  /** Writes candidates[i]'s score into scores[i]; synchronous, allocation-free on the hot path. */
  score(request: SchedulingRequest, candidates: readonly Endpoint[], scores: Float64Array): void;
}

/** A plugin that failed in a way the request must not survive (a fail-closed external filter). */
export class PluginError extends Error {
  constructor(
    /** The instance name of the plugin. */
    readonly plugin: string,
    message: string,
  ) {
    super(message);
  }
}

/** What scheduling decided, or why it could not; only app/ turns reasons into HTTP answers. */
export type ScheduleResult =
  | { kind: 'picked'; lease: Lease }
  /** No endpoint lists the model. */
  | { kind: 'unknown_model' }
  /** The model exists, but not on that engine; `engines` serve it. */
  | { kind: 'unknown_engine'; engines: readonly string[] }
  /** Endpoints serve it, but none is usable now (unhealthy, ejected, or outside its pinned Services). */
  | { kind: 'none_healthy'; services: readonly string[] | undefined }
  /** A filter removed every candidate. */
  | { kind: 'all_filtered'; filter: string }
  /** A fail-closed plugin failed. */
  | { kind: 'plugin_failed'; plugin: string; reason: string };
