/** When a failing plugin is left alone, and for how long. */
export interface BreakerOptions {
  /** Consecutive failures that open the circuit. */
  threshold: number;
  /** The first open period; each reopening after a failed trial doubles it. */
  baseMs: number;
  /** The longest open period. */
  maxMs: number;
}

export const DEFAULT_BREAKER: BreakerOptions = { threshold: 5, baseMs: 1000, maxMs: 30_000 };

/** What a call may do now: go ahead (`trial`: it decides whether the circuit closes), or not. */
export type Admission = { admitted: true; trial: boolean } | { admitted: false; retryInMs: number };

/** A change worth one log line. */
export type Transition = { kind: 'opened'; failures: number; openMs: number } | { kind: 'closed' } | undefined;

/**
 * A per-plugin circuit breaker. Closed: every call goes; `threshold` consecutive failures open it.
 * Open: calls are refused until the period ends. Then one call at a time is let through as a trial
 * (half-open): its success closes the circuit and resets the period, its failure reopens it for
 * twice as long (capped). Results of calls admitted before the circuit opened are ignored once it
 * is open, so a burst of late failures does not extend the period. `now` is a monotonic clock (ms).
 */
export class CircuitBreaker {
  private failures = 0;
  private openUntil: number | undefined;
  private periodMs: number;
  private trialRunning = false;

  constructor(
    private readonly options: BreakerOptions,
    private readonly now: () => number,
  ) {
    this.periodMs = options.baseMs;
  }

  get threshold(): number {
    return this.options.threshold;
  }

  get open(): boolean {
    return this.openUntil !== undefined;
  }

  admit(): Admission {
    if (this.openUntil === undefined) return { admitted: true, trial: false };
    const left = this.openUntil - this.now();
    if (left > 0 || this.trialRunning) return { admitted: false, retryInMs: Math.max(left, 0) };
    this.trialRunning = true;
    return { admitted: true, trial: true };
  }

  success(trial: boolean): Transition {
    if (trial) {
      this.trialRunning = false;
      this.openUntil = undefined;
      this.failures = 0;
      this.periodMs = this.options.baseMs;
      return { kind: 'closed' };
    }
    if (this.openUntil === undefined) this.failures = 0;
    return undefined;
  }

  failure(trial: boolean): Transition {
    if (trial) {
      this.trialRunning = false;
      this.periodMs = Math.min(this.periodMs * 2, this.options.maxMs);
      this.openUntil = this.now() + this.periodMs;
      return undefined;
    }
    if (this.openUntil !== undefined) return undefined;
    this.failures += 1;
    if (this.failures < this.options.threshold) return undefined;
    this.openUntil = this.now() + this.periodMs;
    return { kind: 'opened', failures: this.failures, openMs: this.periodMs };
  }

  /** A call that ended without a verdict (cancelled): a trial's slot is freed for the next call. */
  abandoned(trial: boolean): void {
    if (trial) this.trialRunning = false;
  }
}
