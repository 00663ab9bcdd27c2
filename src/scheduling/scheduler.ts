import type { EndpointRegistry } from '../discovery/registry.js';
import { notFound, unavailable } from '../request/errors.js';
import { clip } from '../request/limits.js';
import type { RoutingRequest } from '../request/routing-request.js';
import { Lease, type OutcomeListener } from './ledger.js';
import type { Picker } from './pickers.js';

export interface SchedulerOptions {
  /** The `retry-after` of a 503 when nothing usable serves the model. */
  retryAfterSeconds: number;
  /** Told how every routed request ended (passive health). */
  onOutcome?: OutcomeListener;
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
    const usable = lookup.healthy;
    if (usable.length === 0) {
      throw unavailable(
        'no_healthy_backend',
        `No healthy backend is available for model \`${clip(request.model)}\`${request.ownedBy ? ` on engine \`${clip(request.ownedBy)}\`` : ''}; try again later.`,
        [['retry-after', String(this.options.retryAfterSeconds)]],
      );
    }
    return new Lease(this.picker.pick(usable, lookup), this.options.onOutcome);
  }
}
