import type { Endpoint } from '../discovery/endpoint.js';
import type { Destination, RequestOutcome } from '../extproc/types.js';

/** Told how each routed request ended (passive health). */
export type OutcomeListener = (endpoint: Endpoint, outcome: RequestOutcome) => void;

/**
 * One routed request's claim on an endpoint. `release` is idempotent: the ext_proc stream can end
 * in several ways at once (half-close, cancel, error, our own reply) and only the first counts.
 */
export class Lease implements Destination {
  private released = false;

  constructor(
    readonly endpoint: Endpoint,
    private readonly onOutcome: OutcomeListener | undefined,
  ) {
    endpoint.inFlight++;
  }

  /** The destination as the ext_proc layer needs it. */
  get address(): string {
    return this.endpoint.address;
  }

  get addressBytes(): Buffer {
    return this.endpoint.addressBytes;
  }

  release(outcome: RequestOutcome): void {
    if (this.released) return;
    this.released = true;
    this.endpoint.inFlight--;
    this.onOutcome?.(this.endpoint, outcome);
  }
}
