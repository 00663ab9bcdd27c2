import type { Logger } from 'pino';
import type { Endpoint } from '../../discovery/endpoint.js';
import type { EndpointRegistry } from '../../discovery/registry.js';
import { freshMetrics } from '../../scheduling/scorers/engine-figures.js';
import type { DecisionLog, DecisionView, RefusalView } from './decision-log.js';

/** A routing mapping and where it came from (route file, admin API, ...). */
export interface MappingView {
  model: string;
  owned_by?: string;
  service_name: string;
  source: string;
}

/** What the status page reads. */
export interface StatusDependencies {
  endpoints: EndpointRegistry;
  mappings: () => readonly MappingView[];
  decisions: DecisionLog;
  log: Logger;
}

/**
 * healthy: in rotation; unhealthy: the active probe failed `--unhealthy-threshold` times (or not
 * yet passed `--healthy-threshold` times again); ejected: failed requests took it out; pending:
 * not probed yet.
 */
export type HealthState = 'healthy' | 'unhealthy' | 'ejected' | 'pending';

export interface EndpointStatus {
  address: string;
  name: string;
  namespace: string;
  engines: string[];
  models: string[];
  health: { state: HealthState; reason: string | null };
  in_flight: number;
  /** The last good scrape of the engine's /metrics; null before one or after a failed one. */
  load: { running: number; waiting: number; kv_cache_percent: number; scraped_at: number; fresh: boolean } | null;
  /** Epoch ms of the last passing probe. */
  last_seen: number | null;
}

export interface StatusSnapshot {
  endpoints: EndpointStatus[];
  /** Removed endpoints still counted because requests routed to them have not ended. */
  departed_endpoints: number;
  mappings: readonly MappingView[];
  totals: { routed: number; refused: number };
  decisions: DecisionView[];
  refusals: RefusalView[];
}

export function statusSnapshot(deps: StatusDependencies): StatusSnapshot {
  const { endpoints, decisions } = deps;
  return {
    endpoints: endpoints
      .all()
      .sort((a, b) => a.address.localeCompare(b.address))
      .map(endpointStatus),
    departed_endpoints: endpoints.departedCount,
    mappings: deps.mappings(),
    totals: { routed: decisions.routedTotal, refused: decisions.refusedTotal },
    decisions: decisions.decisions(),
    refusals: decisions.refusals(),
  };
}

/**
 * The snapshot as the page receives it, with the server's clock (`now`, epoch ms) so ages are
 * right whatever the browser's clock says. `body` is the JSON of a snapshot, compared by callers
 * to skip unchanged ones; `now` is spliced in front so it does not defeat the comparison.
 */
export function timed(body: string, now = Date.now()): string {
  return `{"now":${now},${body.slice(1)}`;
}

function endpointStatus(endpoint: Endpoint): EndpointStatus {
  const metrics = endpoint.load?.metrics;
  return {
    address: endpoint.address,
    name: endpoint.name,
    namespace: endpoint.namespace,
    engines: [...new Set(endpoint.models.map((card) => card.owned_by))].sort(),
    models: endpoint.models.map((card) => card.id),
    health: health(endpoint),
    in_flight: endpoint.inFlight,
    load:
      endpoint.load && metrics
        ? {
            running: metrics.running_queue_size,
            waiting: metrics.waiting_queue_size,
            kv_cache_percent: metrics.kv_cache_usage_percent,
            scraped_at: endpoint.load.updateTime.getTime(),
            fresh: freshMetrics(endpoint, performance.now()) !== undefined,
          }
        : null,
    last_seen: endpoint.lastSeen?.getTime() ?? null,
  };
}

function health(endpoint: Endpoint): EndpointStatus['health'] {
  const { lastError, health: counts } = endpoint;
  if (counts.ejected) return { state: 'ejected', reason: 'ejected after failed requests' };
  if (endpoint.healthy) return { state: 'healthy', reason: lastError === undefined ? null : `last probe failed: ${lastError}` };
  if (counts.probeSuccesses > 0) return { state: 'unhealthy', reason: `probe passing again (${counts.probeSuccesses} in a row), not yet back in rotation` };
  if (lastError !== undefined) return { state: 'unhealthy', reason: `failing probe: ${lastError}` };
  return { state: 'pending', reason: 'not probed yet' };
}
