/**
 * Filters `model`, `owned_by` and `healthy`: what the registry index already applies before the
 * chain runs (candidates are the usable endpoints serving the request's model, on its engine when
 * one is named). Listing them in a chain is allowed, e.g. to document it or to re-check after an
 * external filter; each costs one pass over the candidates.
 *
 * Parameters: none. Example: `{type: healthy}`
 */
import type { Endpoint } from '../../discovery/endpoint.js';
import type { PluginParameters } from '../plugin-params.js';
import type { Filter, SchedulingRequest } from '../types.js';

type Check = (endpoint: Endpoint, request: SchedulingRequest) => boolean;

const CHECKS: Record<'model' | 'owned_by' | 'healthy', Check> = {
  model: (endpoint, request) => endpoint.models.some((card) => card.id === request.routing.model),
  owned_by: (endpoint, request) =>
    request.routing.ownedBy === undefined || endpoint.models.some((card) => card.id === request.routing.model && card.owned_by === request.routing.ownedBy),
  healthy: (endpoint) => endpoint.usable,
};

export class ServedFilter implements Filter {
  private readonly check: Check;

  constructor(
    readonly type: keyof typeof CHECKS,
    readonly name: string,
    params: PluginParameters,
  ) {
    this.check = CHECKS[type];
    params.done();
  }

  filter(request: SchedulingRequest, candidates: readonly Endpoint[]): readonly Endpoint[] {
    return candidates.filter((endpoint) => this.check(endpoint, request));
  }
}
