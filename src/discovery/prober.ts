import type { Logger } from 'pino';
import type { Metrics } from '../metrics.js';
import type { Endpoint, ModelCard } from './endpoint.js';
import { ProbeError, probeGet } from './http-probe.js';
import type { EndpointRegistry } from './registry.js';

/** A `/v1/models` answer larger than this fails the probe (about 10,000 model cards). */
export const MAX_MODELS_ANSWER_BYTES = 4 * 1024 * 1024;
/** `/health` answers are read and dropped; this bounds what a misbehaving backend can send. */
const MAX_HEALTH_ANSWER_BYTES = 64 * 1024;

export interface ProberOptions {
  intervalMs: number;
  timeoutMs: number;
  /** Consecutive failures before a healthy endpoint is taken out of rotation. */
  unhealthyThreshold: number;
}

/**
 * Keeps the registry fresh: each round asks every endpoint for `/v1/models` (models, owned_by),
 * or `/health` when its models are configured statically. A failing endpoint stays known, so its
 * model answers 503 (temporarily unusable) rather than 404 (never served).
 */
export class Prober {
  private timer: NodeJS.Timeout | undefined;
  private readonly failures = new Map<string, number>();
  private rounds = 0;
  private running: Promise<void> | undefined;

  constructor(
    private readonly registry: EndpointRegistry,
    private readonly options: ProberOptions,
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {}

  /** Number of completed rounds; readiness waits for the first. */
  get completedRounds(): number {
    return this.rounds;
  }

  start(): Promise<void> {
    const first = this.probeAll();
    this.timer = setInterval(() => void this.probeAll(), this.options.intervalMs);
    this.timer.unref();
    return first;
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** One round over every endpoint; overlapping calls share the round in progress. */
  probeAll(): Promise<void> {
    this.running ??= Promise.all(this.registry.all().map((endpoint) => this.probe(endpoint))).then(() => {
      this.rounds++;
      this.running = undefined;
    });
    return this.running;
  }

  private async probe(endpoint: Endpoint): Promise<void> {
    const staticCards = endpoint.fixedModels;
    const timeoutMs = this.options.timeoutMs;
    try {
      if (staticCards) {
        await probeGet(endpoint.baseUrl, '/health', { timeoutMs, maxBytes: MAX_HEALTH_ANSWER_BYTES });
        this.succeeded(endpoint, staticCards);
      } else {
        const body = await probeGet(endpoint.baseUrl, '/v1/models', { timeoutMs, maxBytes: MAX_MODELS_ANSWER_BYTES });
        this.succeeded(endpoint, parseModelsAnswer(body));
      }
    } catch (err) {
      // Nothing may escape a probe: it runs from a timer.
      this.failed(endpoint, err instanceof ProbeError ? err.message : `probe failed unexpectedly: ${(err as Error).message}`);
    }
  }

  private succeeded(endpoint: Endpoint, models: readonly ModelCard[]): void {
    this.metrics.probes.inc({ result: 'success' });
    if (!endpoint.healthy) this.log.info({ endpoint: endpoint.address, models: models.map((m) => `${m.id} (${m.owned_by})`) }, 'backend is healthy');
    this.failures.delete(endpoint.address);
    this.registry.update(endpoint, { models, healthy: true });
  }

  private failed(endpoint: Endpoint, reason: string): void {
    this.metrics.probes.inc({ result: 'failure' });
    const count = (this.failures.get(endpoint.address) ?? 0) + 1;
    this.failures.set(endpoint.address, count);
    // Never-seen endpoints are unusable at once; known ones get a little benefit of the doubt.
    const takeOut = endpoint.lastSeen === undefined || count >= this.options.unhealthyThreshold;
    if (takeOut && endpoint.healthy) this.log.warn({ endpoint: endpoint.address, reason }, 'backend is unhealthy; taking it out of rotation');
    else if (endpoint.lastSeen === undefined && count === 1) this.log.warn({ endpoint: endpoint.address, reason }, 'backend probe failed');
    this.registry.update(endpoint, takeOut ? { healthy: false, error: reason } : { error: reason });
  }
}

/** A `/v1/models` body → model cards; ProbeError when it is not JSON or not a model list. */
function parseModelsAnswer(body: Buffer): ModelCard[] {
  let document: unknown;
  try {
    document = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new ProbeError(`GET /v1/models: the answer is not JSON (${(err as Error).message.slice(0, 80)})`);
  }
  try {
    return parseModelList(document);
  } catch (err) {
    throw new ProbeError(`GET /v1/models: ${(err as Error).message}`);
  }
}

/** Validates a `/v1/models` answer into model cards (owned_by defaults to "unknown"). */
export function parseModelList(document: unknown): ModelCard[] {
  const data = (document as { data?: unknown } | null)?.data;
  if (!Array.isArray(data)) throw new Error('the answer has no data array');
  return data.map((entry: unknown, index) => {
    const item = entry as Partial<Record<keyof ModelCard, unknown>> | null;
    if (!item || typeof item.id !== 'string' || item.id === '') throw new Error(`data[${index}] has no id`);
    const card: ModelCard = {
      id: item.id,
      object: 'model',
      created: typeof item.created === 'number' ? item.created : 0,
      owned_by: typeof item.owned_by === 'string' && item.owned_by ? item.owned_by : 'unknown',
      root: typeof item.root === 'string' ? item.root : null,
      parent: typeof item.parent === 'string' ? item.parent : null,
    };
    if (typeof item.max_model_len === 'number') card.max_model_len = item.max_model_len;
    return card;
  });
}
