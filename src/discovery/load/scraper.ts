import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Endpoint } from '../endpoint.js';
import { ENGINE_LABEL } from '../endpoint.js';
import { ProbeError, type ProbeFailure, probeGet } from '../http-probe.js';
import type { EndpointRegistry } from '../registry.js';
import { ENGINE_METRIC_NAMES, isEngineKind, readEngineMetrics } from './engines.js';
import { PromTextError, parsePromText } from './prom-text.js';
import type { EngineMetrics } from './types.js';

/** A `/metrics` answer larger than this fails the scrape (a vLLM answer is a few hundred KiB). */
export const MAX_METRICS_ANSWER_BYTES = 4 * 1024 * 1024;
/** Scrapes under way at once, by default. */
export const DEFAULT_SCRAPE_CONCURRENCY = 32;

export interface LoadScraperOptions {
  /** Time between scrapes of each endpoint (--metrics-interval). */
  intervalMs: number;
  /** How long one scrape may take; the interval, if that is shorter. */
  timeoutMs: number;
  /** How long figures may steer picks after their scrape (--metrics-staleness). */
  stalenessMs: number;
  /** Scrapes under way at once; default 32. */
  concurrency?: number;
}

function checkTimes(options: Omit<LoadScraperOptions, 'concurrency'>): void {
  for (const [what, value] of [
    ['intervalMs', options.intervalMs],
    ['timeoutMs', options.timeoutMs],
    ['stalenessMs', options.stalenessMs],
  ] as const) {
    if (!Number.isFinite(value) || value <= 0) throw new RangeError(`LoadScraper: ${what} must be a positive number of milliseconds, got ${value}`);
  }
}

/** `llm_extproc_engine_scrapes_total{result}` values. */
export type ScrapeResult = 'success' | 'http_error' | 'timeout' | 'refused' | 'too_large' | 'transport_error' | 'garbage';
const RESULTS: readonly ScrapeResult[] = ['success', 'http_error', 'timeout', 'refused', 'too_large', 'transport_error', 'garbage'];
const RESULT_OF_FAILURE: Record<ProbeFailure, Exclude<ScrapeResult, 'success'>> = {
  http_status: 'http_error',
  timeout: 'timeout',
  refused: 'refused',
  too_large: 'too_large',
  transport: 'transport_error',
};

/** What the scraper remembers of one endpoint while it is a member of the registry. */
interface ScrapeState {
  /** The scrape queued or under way: at most one per endpoint. */
  running: Promise<void> | undefined;
  /** Why scrapes fail, since the first failure; undefined while they succeed (and before the first). */
  failing: string | undefined;
}

type Outcome = { result: 'success'; metrics: EngineMetrics; inFlight: number } | { result: Exclude<ScrapeResult, 'success'>; reason: string };

/**
 * Scrapes every endpoint's `/metrics` each interval into `Endpoint.load`: the engine's queues and
 * KV-cache usage, or undefined when the last scrape failed or was not understood (stale figures
 * must not steer picks).
 *
 * State lives with the endpoint: `Endpoint.load`, and a little bookkeeping in a WeakMap keyed by
 * the Endpoint object, dropped when the endpoint leaves the registry. Nothing is kept per address,
 * so pod churn does not grow the scraper.
 *
 * Each endpoint is scraped on its own schedule: at every tick, each endpoint whose last scrape
 * has ended gets a new one. An endpoint that hangs holds only its own scrape (until the timeout)
 * and one of the `concurrency` slots; the others are scraped on time.
 */
export class LoadScraper {
  private readonly states = new WeakMap<Endpoint, ScrapeState>();
  /** Scrapes queued or under way, for stop() to wait on. */
  private readonly pending = new Set<Promise<void>>();
  private readonly limiter: Limiter;
  private options: LoadScraperOptions;
  private readonly scrapes: Counter<'result'>;
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<void> | undefined;

  constructor(
    private readonly endpoints: EndpointRegistry,
    options: LoadScraperOptions,
    metricsRegistry: Registry,
    private readonly log: Logger,
  ) {
    const concurrency = options.concurrency ?? DEFAULT_SCRAPE_CONCURRENCY;
    checkTimes(options);
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`LoadScraper: concurrency must be a positive integer, got ${concurrency}`);
    this.limiter = new Limiter(concurrency);
    this.options = options;

    this.scrapes = new Counter({
      name: 'llm_extproc_engine_scrapes_total',
      help: "Scrapes of backends' /metrics (engine load) by result.",
      labelNames: ['result'] as const,
      registers: [metricsRegistry],
    });
    for (const result of RESULTS) this.scrapes.inc({ result }, 0);
    const perEndpoint = (name: string, help: string, value: (metrics: EngineMetrics) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['endpoint', 'name'] as const,
        registers: [metricsRegistry],
        collect() {
          this.reset();
          const now = performance.now();
          for (const endpoint of endpoints.all()) {
            const load = endpoint.load;
            if (load && load.freshUntil > now) this.set({ endpoint: endpoint.address, name: endpoint.name }, value(load.metrics));
          }
        },
      });
    perEndpoint('llm_extproc_endpoint_engine_running_requests', 'Requests the engine says it is running (last fresh scrape).', (m) => m.running_queue_size);
    perEndpoint('llm_extproc_endpoint_engine_waiting_requests', 'Requests the engine says are queued (last fresh scrape).', (m) => m.waiting_queue_size);
    perEndpoint(
      'llm_extproc_endpoint_engine_kv_cache_usage_ratio',
      'KV-cache usage the engine reports, 0..1 (last fresh scrape).',
      (m) => m.kv_cache_usage_percent / 100,
    );

    endpoints.onMembership({
      // A new pod is scraped at once rather than at the next tick, so its load is known early.
      added: (endpoint) => {
        if (this.timer) void this.scrape(endpoint);
      },
      // Its figures went with forgetState(); a scrape still under way finds itself disowned.
      removed: (endpoint) => {
        this.states.delete(endpoint);
      },
    });
  }

  /** Scrapes every endpoint now and then every interval; resolves when the first round has ended. */
  start(): Promise<void> {
    if (!this.timer) this.schedule();
    return this.scrapeAll();
  }

  /** New times (a config reload; concurrency stays): figures already scraped keep their freshness. */
  reconfigure(options: Omit<LoadScraperOptions, 'concurrency'>): void {
    checkTimes(options);
    const intervalChanged = options.intervalMs !== this.options.intervalMs;
    this.options = { ...options, concurrency: this.options.concurrency };
    if (this.timer && intervalChanged) this.schedule();
  }

  private schedule(): void {
    clearInterval(this.timer);
    this.timer = setInterval(() => this.tick(), this.options.intervalMs);
    this.timer.unref();
  }

  /** No more scrapes; resolves once those under way have ended (within the timeout). */
  stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    return Promise.all([...this.pending]).then(() => undefined);
  }

  /**
   * One round over every endpoint: resolves when each has answered or failed. Overlapping calls
   * share the round; an endpoint already being scraped is not asked twice.
   */
  scrapeAll(): Promise<void> {
    this.round ??= Promise.all(this.endpoints.all().map((endpoint) => this.scrape(endpoint))).then(() => {
      this.round = undefined;
    });
    return this.round;
  }

  /** From the timer: nothing may throw. */
  private tick(): void {
    try {
      for (const endpoint of this.endpoints.all()) void this.scrape(endpoint);
    } catch (err) {
      this.log.error({ err }, 'engine metrics scrape round failed unexpectedly');
    }
  }

  /** The endpoint's scrape under way, or a new one. Never rejects. */
  private scrape(endpoint: Endpoint): Promise<void> {
    let state = this.states.get(endpoint);
    if (!state) {
      state = { running: undefined, failing: undefined };
      this.states.set(endpoint, state);
    }
    if (state.running) return state.running;
    const owner = state;
    const run = this.limiter
      .run(() => this.scrapeNow(endpoint, owner))
      .catch((err: unknown) => this.log.error({ err, endpoint: endpoint.address }, 'engine metrics scrape failed unexpectedly'))
      .finally(() => {
        if (owner.running === run) owner.running = undefined;
        this.pending.delete(run);
      });
    state.running = run;
    this.pending.add(run);
    return run;
  }

  /** Whether `state` is still the endpoint's, i.e. the endpoint has not left the registry since. */
  private owns(endpoint: Endpoint, state: ScrapeState): boolean {
    return this.states.get(endpoint) === state && this.endpoints.get(endpoint.address) === endpoint;
  }

  private async scrapeNow(endpoint: Endpoint, state: ScrapeState): Promise<void> {
    if (!this.owns(endpoint, state)) return; // removed while queued
    const outcome = await this.fetchLoad(endpoint);
    this.scrapes.inc({ result: outcome.result });
    if (!this.owns(endpoint, state)) return; // removed meanwhile: it keeps nothing
    if (outcome.result === 'success') {
      endpoint.load = {
        metrics: outcome.metrics,
        updateTime: new Date(),
        freshUntil: performance.now() + this.options.stalenessMs,
        inFlightAtScrape: outcome.inFlight,
      };
      if (state.failing !== undefined) this.log.info({ endpoint: endpoint.address, name: endpoint.name }, 'engine metrics scrape recovered');
      state.failing = undefined;
    } else {
      endpoint.load = undefined;
      if (state.failing === undefined) {
        this.log.warn(
          { endpoint: endpoint.address, name: endpoint.name, reason: outcome.reason },
          'engine metrics scrape failing; its load figures are not used',
        );
      }
      state.failing = outcome.reason;
    }
  }

  private async fetchLoad(endpoint: Endpoint): Promise<Outcome> {
    let body: Buffer;
    try {
      body = await probeGet(endpoint.baseUrl, '/metrics', {
        timeoutMs: Math.min(this.options.timeoutMs, this.options.intervalMs),
        maxBytes: MAX_METRICS_ANSWER_BYTES,
      });
    } catch (err) {
      if (err instanceof ProbeError) return { result: RESULT_OF_FAILURE[err.failure], reason: err.message };
      return { result: 'transport_error', reason: `GET /metrics: ${(err as Error).message}` };
    }
    // Our count when the answer came: the engine's queues then already held these requests.
    const inFlight = endpoint.inFlight;
    try {
      const reading = readEngineMetrics(parsePromText(body.toString('utf8'), { names: ENGINE_METRIC_NAMES }), engineHint(endpoint));
      if (!reading.ok) return { result: 'garbage', reason: `GET /metrics: ${reading.reason}` };
      return { result: 'success', metrics: reading.metrics, inFlight };
    } catch (err) {
      if (err instanceof PromTextError) return { result: 'garbage', reason: `GET /metrics: not Prometheus text: ${err.message}` };
      // A bug of ours, not the engine's: still no figures from this answer.
      return { result: 'garbage', reason: `GET /metrics: reading the answer failed unexpectedly: ${(err as Error).message}` };
    }
  }
}

/** Which engine the pod says it runs: its llm-d.ai/engine-type label, else its models' owned_by. */
function engineHint(endpoint: Endpoint): string | undefined {
  const label = endpoint.labels[ENGINE_LABEL];
  if (label) return label;
  return endpoint.models.find((model) => isEngineKind(model.owned_by))?.owned_by;
}

/** Runs at most `limit` tasks at once, the others in arrival order. */
class Limiter {
  private active = 0;
  private readonly queue: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.active < this.limit) this.active++;
    else await new Promise<void>((resolve) => this.queue.push(resolve));
    try {
      return await task();
    } finally {
      // Hand the slot straight to the next task, or give it back.
      const next = this.queue.shift();
      if (next) next();
      else this.active--;
    }
  }
}
