import type { Endpoint } from '../../discovery/endpoint.js';
import type { EngineMetrics } from '../../discovery/load/types.js';

/** The endpoint's engine figures while fresh at `now`; undefined when absent or stale. */
export function freshMetrics(endpoint: Endpoint, now: number): EngineMetrics | undefined {
  const load = endpoint.load;
  return load !== undefined && now <= load.freshUntil ? load.metrics : undefined;
}
