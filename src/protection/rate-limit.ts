import { createHash } from 'node:crypto';
import type { RequestHeaders } from '../extproc/headers.js';
import { type RequestError, rateLimited } from '../request/errors.js';
import { clip } from '../request/limits.js';
import { TtlLru } from '../scheduling/filters/lru.js';

/** A token bucket's settings: `rate` tokens a second (fractions allowed), at most `burst` held. */
export interface BucketSettings {
  rate: number;
  burst: number;
}

const LIMIT_KINDS = ['model', 'owned_by', 'tenant'] as const;
/** What a bucket is keyed by; also the `limit` label of llm_extproc_rate_limited_total. */
export type LimitKind = (typeof LIMIT_KINDS)[number];

/** The rate limits in force: each kind optional, each key (model, engine, tenant) a bucket of its own. */
export interface RateLimits {
  model?: BucketSettings;
  owned_by?: BucketSettings;
  tenant?: BucketSettings;
  /** The header naming the tenant; a request without it is not tenant-limited. */
  tenantHeader: string;
}

export interface RateLimiterOptions {
  /**
   * Whether (model, owned_by) is served. Nothing is limited (or stored) for what is not, so an
   * unknown model stays a 404 and model and engine keys are only values the registry serves.
   */
  served(model: string, ownedBy: string | undefined): boolean;
  /** Told of every refused request, by the limit that refused it (metrics). */
  limited?: (kind: LimitKind) => void;
  /** Monotonic milliseconds; a fake clock in tests. */
  now?: () => number;
  /** Most buckets kept per kind; tenants are client-chosen, so the least recently used go first. */
  maxKeys?: number;
}

/** llm-d's fairness header: the tenant a request is for. */
export const TENANT_HEADER = 'x-llm-d-inference-fairness-id';

const DEFAULT_MAX_KEYS = 10_000;
/** Longer keys are stored as their hash, so a store holds at most about maxKeys x this many characters. */
const MAX_STORED_KEY_CHARS = 128;

/**
 * Token buckets per model, per engine (owned_by) and per tenant header value. A request takes a
 * token from each bucket that applies to it, and only if all of them have one, so a refusal by one
 * limit costs the others nothing. reconfigure() swaps the limits at run time, keeping the buckets
 * of every kind whose settings did not change.
 */
export class RateLimiter {
  private readonly stores = new Map<LimitKind, BucketStore>();
  private tenantHeader = '';
  private readonly now: () => number;
  private readonly maxKeys: number;

  constructor(
    limits: RateLimits,
    private readonly options: RateLimiterOptions,
  ) {
    this.now = options.now ?? (() => performance.now());
    this.maxKeys = options.maxKeys ?? DEFAULT_MAX_KEYS;
    this.reconfigure(limits);
  }

  reconfigure(limits: RateLimits): void {
    // Another header's values name other tenants: their buckets start afresh.
    if (limits.tenantHeader !== this.tenantHeader) this.stores.delete('tenant');
    this.tenantHeader = limits.tenantHeader;
    for (const kind of LIMIT_KINDS) {
      const settings = limits[kind];
      const store = this.stores.get(kind);
      if (!settings) this.stores.delete(kind);
      else if (!store || store.settings.rate !== settings.rate || store.settings.burst !== settings.burst) {
        this.stores.set(kind, new BucketStore(kind, { ...settings }, this.maxKeys));
      }
    }
  }

  /** Undefined when the request may go (a token taken from each of its buckets), else the 429 to answer. */
  admit(model: string, ownedBy: string | undefined, headers: RequestHeaders): RequestError | undefined {
    if (this.stores.size === 0 || !this.options.served(model, ownedBy)) return undefined;
    const now = this.now();
    const held: Held[] = [];
    for (const store of this.stores.values()) {
      const key = store.kind === 'model' ? model : store.kind === 'owned_by' ? ownedBy : headers.get(this.tenantHeader) || undefined;
      if (key === undefined) continue;
      const stored = storedKey(key);
      held.push({ store, key, stored, bucket: store.bucket(stored, now) });
    }
    // The limit that frees last sets retry-after: a request waiting less would be refused again.
    let refusing: Held | undefined;
    let waitSeconds = 0;
    for (const entry of held) {
      const wait = entry.bucket.secondsUntilToken(entry.store.settings.rate);
      if (wait > waitSeconds) {
        waitSeconds = wait;
        refusing = entry;
      }
    }
    if (refusing === undefined) {
      for (const { store, stored, bucket } of held) store.take(stored, bucket, now);
      return undefined;
    }
    this.options.limited?.(refusing.store.kind);
    return refusal(refusing, waitSeconds);
  }
}

interface Held {
  store: BucketStore;
  /** As the request carries it (for the message), and as the store keys it. */
  key: string;
  stored: string;
  bucket: TokenBucket;
}

const DESCRIBED: Record<LimitKind, string> = { model: 'model', owned_by: 'engine', tenant: 'tenant' };

function refusal({ store, key }: Held, waitSeconds: number): RequestError {
  const { rate, burst } = store.settings;
  const retryAfter = Math.max(1, Math.ceil(waitSeconds));
  return rateLimited(
    `Rate limit exceeded for ${DESCRIBED[store.kind]} \`${clip(key)}\` (${rate} requests/s, burst ${burst}); retry after ${retryAfter} s.`,
    retryAfter,
  );
}

/** The buckets of one kind, bounded and forgetting idle ones once they would be full again. */
class BucketStore {
  private readonly buckets: TtlLru<TokenBucket>;

  constructor(
    readonly kind: LimitKind,
    readonly settings: BucketSettings,
    maxKeys: number,
  ) {
    // An untouched bucket is full after burst/rate seconds, and an absent key reads as a full
    // bucket: expiring it then loses nothing.
    this.buckets = new TtlLru(maxKeys, Math.max(1, Math.ceil((settings.burst / settings.rate) * 1000)));
  }

  /** The bucket of `stored` (a storedKey) refilled to `now`; a new (full) one is stored only when a token is taken. */
  bucket(stored: string, now: number): TokenBucket {
    const bucket = this.buckets.get(stored, now);
    if (bucket === undefined) return new TokenBucket(this.settings.burst, now);
    bucket.refill(this.settings, now);
    return bucket;
  }

  take(stored: string, bucket: TokenBucket, now: number): void {
    bucket.tokens -= 1;
    this.buckets.set(stored, bucket, now);
  }
}

/** Tenant values may be as long as the header limit allows; a hash keeps what is stored small. */
function storedKey(key: string): string {
  return key.length <= MAX_STORED_KEY_CHARS ? key : `sha256:${createHash('sha256').update(key).digest('base64')}`;
}

class TokenBucket {
  constructor(
    public tokens: number,
    private updatedAt: number,
  ) {}

  refill({ rate, burst }: BucketSettings, now: number): void {
    this.tokens = Math.min(burst, this.tokens + ((now - this.updatedAt) / 1000) * rate);
    this.updatedAt = now;
  }

  /** 0 when a token is there, else how long until one is. */
  secondsUntilToken(rate: number): number {
    return this.tokens >= 1 ? 0 : (1 - this.tokens) / rate;
  }
}
