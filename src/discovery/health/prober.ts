import type { Logger } from 'pino';
import type { Metrics } from '../../metrics.js';
import type { Endpoint, ModelCard } from '../endpoint.js';
import { ProbeError, probeGet } from '../http-probe.js';
import type { EndpointRegistry } from '../registry.js';
import { parseModelsAnswer } from './models-answer.js';

/** A `/v1/models` answer larger than this fails the probe (about 10,000 model cards). */
export const MAX_MODELS_ANSWER_BYTES = 4 * 1024 * 1024;
/** `/health` answers are read and dropped; this bounds what a misbehaving backend can send. */
const MAX_HEALTH_ANSWER_BYTES = 64 * 1024;

export interface ProberOptions {
  /** Time between `/health` probes (--probe-interval). */
  intervalMs: number;
  timeoutMs: number;
  /** Consecutive failures before a healthy endpoint is taken out of rotation. */
  unhealthyThreshold: number;
  /** Consecutive successes before an unhealthy endpoint returns (1 = at once). */
  healthyThreshold: number;
  /** Time between re-reads of `/v1/models`, so a redeployed model is noticed (--models-interval). */
  modelsIntervalMs: number;
}

/**
 * Active health: every round asks each endpoint for `/health`, and for `/v1/models` when its
 * models are unknown or were last read --models-interval ago (never for --static-models). A failing
 * endpoint stays known, so its model answers 503 (temporarily unusable) rather than 404 (never
 * served). It also returns endpoints whose passive ejection has run out, once a probe passes.
 */
export class Prober {
  private timer: NodeJS.Timeout | undefined;
  private rounds = 0;
  private running: Promise<void> | undefined;

  constructor(
    private readonly registry: EndpointRegistry,
    private options: ProberOptions,
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {
    // A new pod is probed at once rather than at the next tick.
    registry.onMembership({
      added: (endpoint) => {
        if (this.timer) void this.probe(endpoint);
      },
    });
  }

  /** Number of completed rounds; readiness waits for the first. */
  get completedRounds(): number {
    return this.rounds;
  }

  /** Runs the first round now (resolved when it is done) and then one every interval. */
  start(): Promise<void> {
    this.schedule();
    return this.probeAll();
  }

  /** New settings (a config reload): counts so far stay; a new interval starts from now. */
  reconfigure(options: ProberOptions): void {
    const intervalChanged = options.intervalMs !== this.options.intervalMs;
    this.options = options;
    if (this.timer && intervalChanged) this.schedule();
  }

  private schedule(): void {
    clearInterval(this.timer);
    this.timer = setInterval(() => void this.probeAll(), this.options.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One round over every endpoint; overlapping calls share the round in progress. */
  probeAll(): Promise<void> {
    return this.round(false);
  }

  /**
   * A round that starts after this call and re-reads every `/v1/models` (not --static-models) now,
   * whatever --models-interval says: POST /admin/discover. A round already running may have read
   * before the call, so it is waited out first.
   */
  async probeNow(): Promise<void> {
    while (this.running) await this.running;
    return this.round(true);
  }

  private round(readModels: boolean): Promise<void> {
    this.running ??= Promise.all(this.registry.all().map((endpoint) => this.probe(endpoint, readModels))).then(() => {
      this.rounds++;
      this.running = undefined;
    });
    return this.running;
  }

  private async probe(endpoint: Endpoint, readModels = false): Promise<void> {
    const timeoutMs = this.options.timeoutMs;
    try {
      if (this.modelsDue(endpoint) || (readModels && !endpoint.fixedModels)) {
        const body = await probeGet(endpoint.baseUrl, '/v1/models', { timeoutMs, maxBytes: MAX_MODELS_ANSWER_BYTES });
        const models = parseModelsAnswer(body);
        endpoint.health.modelsReadAt = performance.now();
        this.succeeded(endpoint, models);
      } else {
        await probeGet(endpoint.baseUrl, '/health', { timeoutMs, maxBytes: MAX_HEALTH_ANSWER_BYTES });
        this.succeeded(endpoint, undefined);
      }
    } catch (err) {
      // Nothing may escape a probe: it runs from a timer.
      this.failed(endpoint, err instanceof ProbeError ? err.message : `probe failed unexpectedly: ${(err as Error).message}`);
    }
  }

  private modelsDue(endpoint: Endpoint): boolean {
    if (endpoint.fixedModels) return false;
    const readAt = endpoint.health.modelsReadAt;
    return readAt === undefined || performance.now() - readAt >= this.options.modelsIntervalMs;
  }

  private succeeded(endpoint: Endpoint, models: readonly ModelCard[] | undefined): void {
    this.metrics.probes.inc({ result: 'success' });
    const { health } = endpoint;
    health.probeFailures = 0;
    let healthy = endpoint.healthy;
    if (!healthy && ++health.probeSuccesses >= this.options.healthyThreshold) {
      healthy = true;
      health.probeSuccesses = 0;
      const served = (models ?? endpoint.models).map((m) => `${m.id} (${m.owned_by})`);
      this.log.info({ endpoint: endpoint.address, name: endpoint.name, models: served }, 'backend is healthy: in rotation');
    }
    if (health.ejected && performance.now() >= health.ejectedUntil) {
      health.ejected = false;
      health.requestFailures = 0;
      health.returnedAt = performance.now();
      this.registry.usabilityChanged(endpoint);
      this.log.info({ endpoint: endpoint.address, name: endpoint.name }, 'ejection over and the probe passed: back in rotation');
    }
    this.registry.update(endpoint, { models, healthy });
  }

  private failed(endpoint: Endpoint, reason: string): void {
    this.metrics.probes.inc({ result: 'failure' });
    const { health } = endpoint;
    health.probeSuccesses = 0;
    health.probeFailures++;
    // An endpoint never seen healthy is out already; a healthy one gets --unhealthy-threshold tries.
    const takeOut = endpoint.healthy && health.probeFailures >= this.options.unhealthyThreshold;
    if (takeOut) {
      this.log.warn({ endpoint: endpoint.address, name: endpoint.name, reason, failures: health.probeFailures }, 'backend is unhealthy: out of rotation');
    } else if (endpoint.lastSeen === undefined && health.probeFailures === 1) {
      this.log.warn({ endpoint: endpoint.address, name: endpoint.name, reason }, 'backend probe failed; not in rotation yet');
    }
    this.registry.update(endpoint, takeOut ? { healthy: false, error: reason } : { error: reason });
  }
}
