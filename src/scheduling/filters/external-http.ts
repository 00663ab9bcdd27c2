import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Endpoint } from '../../discovery/endpoint.js';
import { DESTINATION_HEADER } from '../../wire-names.js';
import { type Filter, PluginError, type SchedulingRequest } from '../types.js';
import { type BreakerOptions, CircuitBreaker, DEFAULT_BREAKER, type Transition } from './circuit-breaker.js';
import { CallError, type ClientOptions, DEFAULT_CLIENT, PluginClient } from './external-http-client.js';
import type { ExternalFilterConfig } from './external-http-config.js';
import { AnswerError, type KeptPod, parseAnswer, requestBody } from './external-http-wire.js';
import { promptOf } from './prompt.js';

/**
 * External HTTP filters: llm-extproc external filter protocol v1 (docs/external-filters.md), the
 * filter call of llm-d's external plugin proposal (PR #183, seed 000). Each configured plugin is a
 * Filter that POSTs the request and the candidates to `<url>/filter` and keeps the pods it names.
 */

export interface ExternalFilterOptions {
  /** Never forwarded in `headers`: the header llm-extproc sets itself (--destination-header). */
  destinationHeader?: string;
  /** Monotonic milliseconds for the circuit breaker; performance.now by default. */
  now?: () => number;
  breaker?: BreakerOptions;
  client?: ClientOptions;
}

/** `llm_extproc_external_filter_calls_total{result}` values. */
export type CallResult = 'success' | 'timeout' | 'http_status' | 'too_large' | 'transport' | 'bad_answer' | 'cancelled' | 'skipped';
const RESULTS: readonly CallResult[] = ['success', 'timeout', 'http_status', 'too_large', 'transport', 'bad_answer', 'cancelled', 'skipped'];

/** One Filter per configured plugin, in order; their series go to `registry` (plugin names are bounded by the configuration). */
export function createExternalFilters(
  configs: readonly ExternalFilterConfig[],
  log: Logger,
  registry: Registry,
  options: ExternalFilterOptions = {},
): ExternalHttpFilter[] {
  if (configs.length === 0) return [];
  // One set of series per registry: a reload that rebuilds the chain makes new filters, not new series.
  let metrics = metricsByRegistry.get(registry);
  if (!metrics) {
    metrics = new ExternalFilterMetrics(registry);
    metricsByRegistry.set(registry, metrics);
  }
  return configs.map((config) => new ExternalHttpFilter(config, log, metrics, options));
}

const metricsByRegistry = new WeakMap<Registry, ExternalFilterMetrics>();

class ExternalFilterMetrics {
  readonly calls: Counter<'plugin' | 'result'>;
  readonly seconds: Histogram<'plugin'>;
  readonly unknownPods: Counter<'plugin'>;
  readonly failedOpen: Counter<'plugin'>;
  readonly circuitOpen: Gauge<'plugin'>;

  constructor(registry: Registry) {
    this.calls = new Counter({
      name: 'llm_extproc_external_filter_calls_total',
      help: 'External filter calls by plugin and result (skipped: not called, the circuit being open).',
      labelNames: ['plugin', 'result'] as const,
      registers: [registry],
    });
    this.seconds = new Histogram({
      name: 'llm_extproc_external_filter_duration_seconds',
      help: 'External filter calls made, from sending to the answer read (or the failure).',
      labelNames: ['plugin'] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
      registers: [registry],
    });
    this.unknownPods = new Counter({
      name: 'llm_extproc_external_filter_unknown_pods_total',
      help: 'Pods an external filter kept that were not among the candidates sent (ignored).',
      labelNames: ['plugin'] as const,
      registers: [registry],
    });
    this.failedOpen = new Counter({
      name: 'llm_extproc_external_filter_fail_open_total',
      help: 'Requests that went on with every candidate because the external filter failed or its circuit was open, and it is fail_open.',
      labelNames: ['plugin'] as const,
      registers: [registry],
    });
    this.circuitOpen = new Gauge({
      name: 'llm_extproc_external_filter_circuit_open',
      help: '1 while consecutive failures keep the external filter from being called.',
      labelNames: ['plugin'] as const,
      registers: [registry],
    });
  }
}

/** Prompts by request, so several external filters parse one body once. */
const prompts = new WeakMap<SchedulingRequest, string>();

function promptFor(request: SchedulingRequest): string {
  let prompt = prompts.get(request);
  if (prompt === undefined) {
    prompt = promptOf(request.body);
    prompts.set(request, prompt);
  }
  return prompt;
}

const SEPARATOR = '\u0000';
const keyOf = (namespace: string, name: string) => `${namespace}${SEPARATOR}${name}`;

export class ExternalHttpFilter implements Filter {
  readonly type = 'external-http';
  readonly name: string;
  private readonly client: PluginClient;
  private readonly breaker: CircuitBreaker;
  private readonly destinationHeader: string;
  private readonly results: Record<CallResult, Counter.Internal>;
  private readonly seconds: Histogram.Internal<'plugin'>;
  private readonly unknownPods: Counter.Internal;
  private readonly failedOpen: Counter.Internal;
  private readonly circuitOpen: Gauge.Internal<'plugin'>;
  private unknownLogged = false;

  constructor(
    readonly config: ExternalFilterConfig,
    private readonly log: Logger,
    metrics: ExternalFilterMetrics,
    options: ExternalFilterOptions = {},
  ) {
    this.name = config.name;
    this.client = new PluginClient(config.filterUrl, options.client ?? DEFAULT_CLIENT);
    this.breaker = new CircuitBreaker(options.breaker ?? DEFAULT_BREAKER, options.now ?? (() => performance.now()));
    this.destinationHeader = (options.destinationHeader ?? DESTINATION_HEADER).toLowerCase();
    const plugin = config.name;
    this.results = Object.fromEntries(RESULTS.map((result) => [result, metrics.calls.labels({ plugin, result })])) as Record<CallResult, Counter.Internal>;
    this.seconds = metrics.seconds.labels({ plugin });
    this.unknownPods = metrics.unknownPods.labels({ plugin });
    this.failedOpen = metrics.failedOpen.labels({ plugin });
    this.circuitOpen = metrics.circuitOpen.labels({ plugin });
    this.circuitOpen.set(0);
  }

  /**
   * The candidates the plugin keeps, in their order. On failure: the candidates unchanged
   * (fail_open) or a PluginError. When the request's signal aborts, rejects with its reason: a
   * cancelled call is not a failure. No candidates: no call.
   */
  async filter(request: SchedulingRequest, candidates: readonly Endpoint[]): Promise<readonly Endpoint[]> {
    if (candidates.length === 0) return candidates;
    if (request.signal.aborted) throw request.signal.reason;
    const admission = this.breaker.admit();
    if (!admission.admitted) {
      this.results.skipped.inc();
      return this.failed(
        candidates,
        `skipped: the circuit is open after ${this.breaker.threshold} consecutive failures (next try in ${Math.ceil(admission.retryInMs)} ms)`,
      );
    }
    const body = requestBody(request, candidates, this.config.sendPrompt ? promptFor(request) : '', this.destinationHeader);
    const started = performance.now();
    let kept: KeptPod[];
    try {
      const answer = await this.client.post(body, request.routing.requestId, this.config.timeoutMs, request.signal);
      kept = parseAnswer(answer);
    } catch (err) {
      this.seconds.observe((performance.now() - started) / 1000);
      if (!(err instanceof CallError || err instanceof AnswerError)) {
        // The signal's reason (Envoy reset the stream): no verdict on the plugin.
        this.breaker.abandoned(admission.trial);
        if (request.signal.aborted) this.results.cancelled.inc();
        throw err;
      }
      this.results[err instanceof CallError ? err.failure : 'bad_answer'].inc();
      const reason = err instanceof CallError ? err.message : `POST ${this.config.filterUrl.href}: ${err.message}`;
      this.noteTransition(this.breaker.failure(admission.trial), reason);
      this.log.warn(
        { plugin: this.name, requestId: request.routing.requestId, failOpen: this.config.failOpen, reason },
        this.config.failOpen ? 'external filter failed; keeping every candidate' : 'external filter failed; failing the request',
      );
      return this.failed(candidates, reason);
    }
    this.seconds.observe((performance.now() - started) / 1000);
    this.results.success.inc();
    this.noteTransition(this.breaker.success(admission.trial));
    return this.keep(request, candidates, kept);
  }

  /** Closes the plugin's idle connections (shutdown). */
  close(): void {
    this.client.close();
  }

  private keep(request: SchedulingRequest, candidates: readonly Endpoint[], kept: readonly KeptPod[]): readonly Endpoint[] {
    const wanted = new Set<string>();
    for (const pod of kept) wanted.add(keyOf(pod.namespace, pod.name));
    const out: Endpoint[] = [];
    for (const candidate of candidates) {
      const key = keyOf(candidate.namespace, candidate.name);
      if (wanted.delete(key)) out.push(candidate);
    }
    // What is left was not sent as a candidate: ignored (the answer can only narrow).
    if (wanted.size > 0) {
      this.unknownPods.inc(wanted.size);
      if (!this.unknownLogged) {
        this.unknownLogged = true;
        const examples = [...wanted].slice(0, 3).map((key) => key.replace(SEPARATOR, '/'));
        this.log.warn(
          { plugin: this.name, requestId: request.routing.requestId, unknown: wanted.size, examples },
          'external filter kept pods that were not among the candidates; ignored (logged once per plugin, counted in llm_extproc_external_filter_unknown_pods_total)',
        );
      }
    }
    return out;
  }

  private failed(candidates: readonly Endpoint[], reason: string): readonly Endpoint[] {
    if (this.config.failOpen) {
      this.failedOpen.inc();
      return candidates;
    }
    throw new PluginError(this.name, `external filter "${this.name}" failed: ${reason}`);
  }

  private noteTransition(transition: Transition, reason?: string): void {
    if (transition?.kind === 'opened') {
      this.circuitOpen.set(1);
      this.log.warn(
        { plugin: this.name, failures: transition.failures, openMs: transition.openMs, failOpen: this.config.failOpen, reason },
        `external filter circuit opened: not called for ${transition.openMs} ms after ${transition.failures} consecutive failures, then retried one call at a time`,
      );
    } else if (transition?.kind === 'closed') {
      this.circuitOpen.set(0);
      this.log.info({ plugin: this.name }, 'external filter circuit closed: the plugin answered again');
    }
  }
}
