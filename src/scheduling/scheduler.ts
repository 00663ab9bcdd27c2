import type { Endpoint } from '../discovery/endpoint.js';
import type { EndpointRegistry } from '../discovery/registry.js';
import { notFound, type RequestError, unavailable } from '../request/errors.js';
import { clip } from '../request/limits.js';
import type { RoutingRequest } from '../request/routing-request.js';
import type { MappingTable } from '../routing/mappings.js';
import { Lease, type OutcomeListener } from './ledger.js';
import type { Picker } from './pickers.js';

export interface SchedulerOptions {
  /** The `retry-after` of a 503 when nothing usable serves the model. */
  retryAfterSeconds: number;
  /** Told how every routed request ended (passive health). */
  onOutcome?: OutcomeListener;
  /** Models pinned to Kubernetes Services (route file `mappings`), and those Services' ready addresses. */
  pins?: { mappings: MappingTable; addresses(service: string): ReadonlySet<string> | undefined };
}

/**
 * Candidates for (model, owned_by) from the registry, the built-in filters (healthy), then the
 * picker. Throws RequestError: 404 when nothing serves the model (or not on that engine), 503
 * when something does but none of it is usable now.
 */
export class Scheduler {
  constructor(
    private readonly registry: EndpointRegistry,
    private readonly picker: Picker,
    private readonly options: SchedulerOptions = { retryAfterSeconds: 1 },
  ) {}

  get pickerName(): string {
    return this.picker.name;
  }

  schedule(request: RoutingRequest): Lease {
    const lookup = this.registry.lookup(request.model, request.ownedBy);
    if (lookup.kind === 'unknown_model') {
      throw notFound('model_not_found', `The model \`${clip(request.model)}\` does not exist or is not served by any backend.`);
    }
    if (lookup.kind === 'unknown_engine') {
      throw notFound(
        'model_not_found',
        `The model \`${clip(request.model)}\` is not served by engine \`${clip(request.ownedBy)}\` (served by: ${lookup.engines.join(', ')}).`,
      );
    }
    const services = this.options.pins?.mappings.servicesFor(request.model, request.ownedBy);
    if (services) return this.schedulePinned(request, lookup.healthy, services);
    const usable = lookup.healthy;
    if (usable.length === 0) {
      throw this.noneUsable(
        `No healthy backend is available for model \`${clip(request.model)}\`${request.ownedBy ? ` on engine \`${clip(request.ownedBy)}\`` : ''}`,
      );
    }
    return new Lease(this.picker.pick(usable, lookup), this.options.onOutcome);
  }

  /** 503: the model is served, but nothing that may take it is usable now. */
  private noneUsable(what: string): RequestError {
    return unavailable('no_healthy_backend', `${what}; try again later.`, [['retry-after', String(this.options.retryAfterSeconds)]]);
  }

  /** A mapped model: only usable endpoints that are ready endpoints of one of its Services. */
  private schedulePinned(request: RoutingRequest, usable: readonly Endpoint[], services: readonly string[]): Lease {
    const books = services.map((service) => this.options.pins!.addresses(service));
    const allowed = usable.filter((endpoint) => books.some((addresses) => addresses?.has(endpoint.address)));
    if (allowed.length === 0) {
      throw this.noneUsable(`No healthy backend of Service ${services.map((s) => `\`${s}\``).join(', ')} is available for model \`${clip(request.model)}\``);
    }
    // The services array is the same object for the same mapping: per-set picker state keys on it.
    return new Lease(this.picker.pick(allowed, services), this.options.onOutcome);
  }
}
