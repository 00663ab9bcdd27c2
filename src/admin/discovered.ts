import type { Endpoint } from '../discovery/endpoint.js';

/** One (model, owned_by) that endpoints in groups serve, and those groups (sorted). */
export interface DiscoveredService {
  model: string;
  owned_by: string;
  groups: string[];
}

/**
 * What discovery found: each (model, owned_by) an endpoint in a group lists, with the groups
 * serving it, sorted by model then engine. Endpoints in no group (static entries without `group=`) are left out.
 */
export function discoveredServices(endpoints: readonly Endpoint[]): DiscoveredService[] {
  const found = new Map<string, DiscoveredService>();
  for (const endpoint of endpoints) {
    if (endpoint.group === undefined) continue;
    for (const card of endpoint.models) {
      const key = `${card.id}::${card.owned_by}`;
      const service = found.get(key) ?? { model: card.id, owned_by: card.owned_by, groups: [] };
      if (!service.groups.includes(endpoint.group)) service.groups.push(endpoint.group);
      found.set(key, service);
    }
  }
  return [...found.values()]
    .map((service) => ({ ...service, groups: service.groups.sort() }))
    .sort((a, b) => a.model.localeCompare(b.model) || a.owned_by.localeCompare(b.owned_by));
}

/** Seed 003's `services` object: `"<model>::<owned_by>": "<group>"` (several groups: joined with ","). */
export function servicesObject(services: readonly DiscoveredService[]): Record<string, string> {
  return Object.fromEntries(services.map((service) => [`${service.model}::${service.owned_by}`, service.groups.join(',')]));
}
