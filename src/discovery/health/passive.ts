import type { Logger } from 'pino';
import type { RequestOutcome } from '../../extproc/types.js';
import type { Endpoint } from '../endpoint.js';
import type { EndpointRegistry } from '../registry.js';

export interface PassiveHealthOptions {
  /** Consecutive failed requests that eject an endpoint (--passive-ejection); 0 turns this off. */
  threshold: number;
  /** The first ejection's length (--passive-ejection-time); each further one doubles, up to 10x. */
  baseEjectionMs: number;
}

/** Ejections grow to at most this many base periods (Envoy's outlier detection uses 30 s and 300 s). */
const MAX_EJECTION_FACTOR = 10;

/**
 * Passive health: how routed requests end counts for or against their endpoint. A 5xx, or a
 * stream that ended with the request sent and no response headers, is a failure; --passive-ejection
 * of them in a row eject the endpoint for a back-off, after which the active probe decides.
 *
 * "No response headers" only means something once Envoy has shown it sends response headers at
 * all (response_header_mode SEND): until some stream has carried them, it is not held against
 * anyone. A client that gives up while the backend is silent looks the same to ext_proc as an
 * upstream reset (docs/design.md); any answered request in between resets the count.
 */
export class PassiveHealth {
  /** Envoy sends response headers to ext_proc (set by the first stream that carried them). */
  private responsesObserved = false;

  constructor(
    private readonly registry: EndpointRegistry,
    private options: PassiveHealthOptions,
    private readonly onEjection: (endpoint: Endpoint) => void,
    private readonly log: Logger,
  ) {}

  /** New settings (a config reload); ejections under way keep the length they were given. */
  reconfigure(options: PassiveHealthOptions): void {
    this.options = options;
  }

  /** Counts one routed request's end; ignored for endpoints that have left the registry. */
  record(endpoint: Endpoint, outcome: RequestOutcome): void {
    if (this.options.threshold === 0 || this.registry.get(endpoint.address) !== endpoint) return;
    if (outcome.kind === 'abandoned') return;
    if (outcome.kind === 'response') {
      this.responsesObserved = true;
      if (outcome.status < 500) {
        endpoint.health.requestFailures = 0;
        return;
      }
    } else if (!this.responsesObserved) {
      return;
    }
    const { health } = endpoint;
    if (health.ejected || ++health.requestFailures < this.options.threshold) return;
    this.eject(endpoint, outcome.kind === 'response' ? `answered ${outcome.status}` : 'ended without response headers');
  }

  private eject(endpoint: Endpoint, last: string): void {
    const { health } = endpoint;
    const now = performance.now();
    // Serving well for as long as the last ejection lasted forgives the earlier ones.
    if (health.ejections > 0 && now - health.returnedAt > this.ejectionMs(health.ejections)) health.ejections = 0;
    health.ejections++;
    const ejectionMs = this.ejectionMs(health.ejections);
    health.ejected = true;
    health.ejectedUntil = now + ejectionMs;
    this.registry.usabilityChanged(endpoint);
    this.onEjection(endpoint);
    this.log.warn(
      { endpoint: endpoint.address, name: endpoint.name, failures: health.requestFailures, last, ejectionSeconds: ejectionMs / 1000 },
      'requests to the backend failed in a row: ejected; the active probe decides its return after the back-off',
    );
  }

  private ejectionMs(ejections: number): number {
    return this.options.baseEjectionMs * Math.min(2 ** (ejections - 1), MAX_EJECTION_FACTOR);
  }
}
