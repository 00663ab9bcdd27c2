import type { Endpoint } from '../discovery/endpoint.js';
import type { EndpointRegistry } from '../discovery/registry.js';
import { RequestHeaders } from '../extproc/headers.js';
import type { HttpRequestView } from '../extproc/types.js';
import type { RoutingRequest } from '../request/routing-request.js';
import type { MappingTable } from '../routing/mappings.js';
import { Lease, type OutcomeListener } from './ledger.js';
import type { Picker } from './pickers.js';
import { type Filter, PluginError, type ScheduleResult, type SchedulingRequest, type Scorer } from './types.js';

export interface SchedulerOptions {
  /** Told how every routed request ended (passive health). */
  onOutcome?: OutcomeListener;
  /**
   * Models pinned to Services or endpoint groups (routes-file and admin mappings), and their ready
   * addresses. `servicesFor` is read once per request, so a table swapped meanwhile is never half seen.
   */
  pins?: { mappings: Pick<MappingTable, 'servicesFor'>; addresses(service: string): ReadonlySet<string> | undefined };
  /** Told each plugin's time and outcome (metrics). */
  observe?: (plugin: Filter | Scorer, seconds: number, outcome: PluginOutcome) => void;
}

/** What one plugin call came to, as the chain records it (`cancelled`: the stream ended first). */
export type PluginOutcome = 'ok' | 'emptied' | 'failed' | 'cancelled';

/** The plugins of one chain: filters in order, weighted scorers, one picker. */
export interface Chain {
  filters: readonly Filter[];
  scorers: readonly Scorer[];
  picker: Picker;
}

/** What the scheduler needs of a request: its routing fields and, for plugins, the HTTP request itself. */
export interface SchedulingInput {
  routing: RoutingRequest;
  /** Headers, body and signal for plugins; none in benchmarks and tests of the bare chain. */
  http?: Pick<HttpRequestView, 'headers' | 'body' | 'signal'>;
}

const NO_HEADERS = new RequestHeaders([]);
const NEVER = new AbortController().signal;

/**
 * Candidates for (model, owned_by) from the registry index (which already applies the built-in
 * model, owned_by and healthy filters), narrowed to a mapped Service's endpoints, then the chain:
 * filters in order (possibly asynchronous), scorers (weighted sum), the picker. It returns a
 * result, never an HTTP error: app/ words the answers.
 */
export class Scheduler {
  /** Scratch arrays for the weighted sum and one scorer's scores, grown to the largest set seen. */
  private total = new Float64Array(64);
  private single = new Float64Array(64);
  /** See pinned(): the last pinned answer per candidate set (an entry goes with its array). */
  private readonly pinnedSets = new WeakMap<
    readonly Endpoint[],
    { services: readonly string[]; books: (ReadonlySet<string> | undefined)[]; narrowed: readonly Endpoint[] }
  >();

  constructor(
    private readonly registry: EndpointRegistry,
    private chain: Chain,
    private readonly options: SchedulerOptions = {},
  ) {}

  /**
   * A new chain (a config reload). Decisions under way finish with the chain they started with;
   * the old plugins' state (round-robin position, affinity tables) goes with them.
   */
  replaceChain(chain: Chain): void {
    this.chain = chain;
  }

  get pickerName(): string {
    return this.chain.picker.name;
  }

  schedule(input: SchedulingInput): ScheduleResult | Promise<ScheduleResult> {
    const { routing } = input;
    const lookup = this.registry.lookup(routing.model, routing.ownedBy);
    if (lookup.kind === 'unknown_model') return UNKNOWN_MODEL;
    if (lookup.kind === 'unknown_engine') return { kind: 'unknown_engine', engines: lookup.engines };
    let candidates = lookup.healthy;
    let group: object = lookup;
    const services = this.options.pins?.mappings.servicesFor(routing.model, routing.ownedBy);
    if (services) {
      candidates = this.pinned(candidates, services, this.options.pins!.addresses);
      // The services array is the same object for the same mapping: per-set picker state keys on it.
      group = services;
    }
    if (candidates.length === 0) return { kind: 'none_healthy', services };
    const chain = this.chain;
    // The presets have no plugins besides the picker: no request object, no scores.
    if (chain.filters.length === 0 && chain.scorers.length === 0) return this.pick(chain, undefined, candidates, group);
    const { http } = input;
    const request: SchedulingRequest = {
      routing,
      headers: http?.headers ?? NO_HEADERS,
      body: http?.body,
      // Read only by plugins that make outside calls: the stream creates its AbortSignal on first use.
      get signal() {
        return http?.signal ?? NEVER;
      },
      initialCandidates: candidates,
    };
    return this.filterFrom(chain, 0, request, candidates, group);
  }

  /**
   * The endpoints of `healthy` that `services` hold. Its inputs change only when the registry
   * reindexes (a new `healthy` array) or a service's endpoints change (a new address Set), so the
   * answer is kept per `healthy` array and rebuilt only then, not per request.
   */
  private pinned(
    healthy: readonly Endpoint[],
    services: readonly string[],
    addresses: (service: string) => ReadonlySet<string> | undefined,
  ): readonly Endpoint[] {
    const kept = this.pinnedSets.get(healthy);
    if (kept?.services === services && sameBooks(kept.books, services, addresses)) return kept.narrowed;
    const books = services.map((service) => addresses(service));
    const narrowed = healthy.filter((endpoint) => books.some((book) => book?.has(endpoint.address)));
    this.pinnedSets.set(healthy, { services, books, narrowed });
    return narrowed;
  }

  /** Runs filters from `index` on; synchronous as long as the filters are. */
  private filterFrom(
    chain: Chain,
    index: number,
    request: SchedulingRequest,
    candidates: readonly Endpoint[],
    group: object,
  ): ScheduleResult | Promise<ScheduleResult> {
    const { filters } = chain;
    for (let i = index; i < filters.length; i++) {
      const filter = filters[i]!;
      const started = this.options.observe ? performance.now() : 0;
      let kept: readonly Endpoint[] | Promise<readonly Endpoint[]>;
      try {
        kept = filter.filter(request, candidates);
      } catch (err) {
        return this.failed(filter, started, err, request.signal);
      }
      if (kept instanceof Promise) {
        return kept.then(
          (list) => this.emptied(filter, started, list) ?? this.filterFrom(chain, i + 1, request, list, group),
          (err: unknown) => this.failed(filter, started, err, request.signal),
        );
      }
      const stop = this.emptied(filter, started, kept);
      if (stop) return stop;
      candidates = kept;
    }
    return this.pick(chain, request, candidates, group);
  }

  /** Records a filter's call; the result to answer when it left no candidate, else undefined. */
  private emptied(filter: Filter, started: number, kept: readonly Endpoint[]): ScheduleResult | undefined {
    this.options.observe?.(filter, (performance.now() - started) / 1000, kept.length === 0 ? 'emptied' : 'ok');
    return kept.length === 0 ? { kind: 'all_filtered', filter: filter.name } : undefined;
  }

  /** A fail-closed PluginError becomes a result; a call cut short by the stream's end, or a bug, propagates. */
  private failed(plugin: Filter, started: number, err: unknown, signal: AbortSignal): ScheduleResult {
    this.options.observe?.(plugin, (performance.now() - started) / 1000, signal.aborted ? 'cancelled' : 'failed');
    if (err instanceof PluginError && !signal.aborted) return { kind: 'plugin_failed', plugin: err.plugin, reason: err.message };
    throw err;
  }

  /** Scores (when there are scorers) then the picker; the lease starts counting at once. */
  private pick(chain: Chain, request: SchedulingRequest | undefined, candidates: readonly Endpoint[], group: object): ScheduleResult {
    const { scorers, picker } = chain;
    const scores = request && scorers.length > 0 ? this.weightedScores(scorers, request, candidates) : undefined;
    const endpoint = picker.pick(candidates, group, scores);
    const lease = new Lease(endpoint, this.options.onOutcome);
    if (request) tellPicked(chain, request, endpoint);
    return { kind: 'picked', lease };
  }

  /** The weighted sum of every scorer's scores, in a scratch array reused across decisions. */
  private weightedScores(scorers: readonly Scorer[], request: SchedulingRequest, candidates: readonly Endpoint[]): Float64Array {
    const n = candidates.length;
    if (this.total.length < n) {
      this.total = new Float64Array(Math.max(n, this.total.length * 2));
      this.single = new Float64Array(this.total.length);
    }
    const { total, single } = this;
    total.fill(0, 0, n);
    for (const scorer of scorers) {
      const started = this.options.observe ? performance.now() : 0;
      single.fill(0, 0, n);
      scorer.score(request, candidates, single);
      // A score outside [0, 1] (or NaN) is clamped: one plugin's bug cannot outweigh the others.
      for (let i = 0; i < n; i++) total[i]! += scorer.weight * Math.min(1, Math.max(0, single[i]! || 0));
      this.options.observe?.(scorer, (performance.now() - started) / 1000, 'ok');
    }
    return total;
  }
}

/** Whether each service's address Set is still the one `books` holds (no allocation: per request). */
function sameBooks(
  books: readonly (ReadonlySet<string> | undefined)[],
  services: readonly string[],
  addresses: (service: string) => ReadonlySet<string> | undefined,
): boolean {
  for (let i = 0; i < services.length; i++) if (addresses(services[i]!) !== books[i]) return false;
  return true;
}

function tellPicked(chain: Chain, request: SchedulingRequest, endpoint: Endpoint): void {
  for (const filter of chain.filters) filter.picked?.(request, endpoint);
  for (const scorer of chain.scorers) scorer.picked?.(request, endpoint);
}

const UNKNOWN_MODEL: ScheduleResult = { kind: 'unknown_model' };
