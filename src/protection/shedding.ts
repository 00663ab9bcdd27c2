import type { Logger } from 'pino';

export interface StreamSheddingOptions {
  /** Open ext_proc streams beyond which a new one is refused; 0 = no limit. */
  maxOpenStreams: number;
  /** Told of every stream shed (metrics). */
  shed: () => void;
  log: Logger;
  /** Monotonic milliseconds; a fake clock in tests. */
  now?: () => number;
}

/** A flood of shed streams is logged at most this often, each line with the count since the last. */
const LOG_INTERVAL_MS = 1000;

/**
 * Admission of new ext_proc streams: beyond `maxOpenStreams` a stream is shed (the server ends it
 * with RESOURCE_EXHAUSTED, and Envoy applies its failure_mode_allow). Open streams are untouched.
 */
export class StreamShedding {
  private readonly now: () => number;
  private loggedAt = Number.NEGATIVE_INFINITY;
  private unlogged = 0;

  constructor(private readonly options: StreamSheddingOptions) {
    this.now = options.now ?? (() => performance.now());
  }

  /** Whether a new stream may open beside `openStreams` others; a refusal is counted and (rate-limited) logged. */
  admit(openStreams: number): boolean {
    const { maxOpenStreams } = this.options;
    if (maxOpenStreams === 0 || openStreams < maxOpenStreams) return true;
    this.options.shed();
    this.unlogged++;
    const now = this.now();
    if (now - this.loggedAt >= LOG_INTERVAL_MS) {
      this.options.log.warn(
        { shed: this.unlogged, openStreams, maxOpenStreams },
        'too many open ext_proc streams: new ones are ended with RESOURCE_EXHAUSTED (see --max-open-streams)',
      );
      this.loggedAt = now;
      this.unlogged = 0;
    }
    return false;
  }
}
