import { Hono } from 'hono';
import type { EndpointRegistry } from '../discovery/registry.js';
import type { Metrics } from '../metrics.js';

/** `starting` until the first discovery/probe round has finished; `draining` from the stop signal on. */
export type Readiness = 'starting' | 'ready' | 'draining';

export interface ProbeDependencies {
  metrics: Metrics;
  endpoints: EndpointRegistry;
  readiness: () => Readiness;
  /** When discovery lost contact (its picture may be out of date); undefined while current. */
  discoveryStaleSince: () => Date | undefined;
}

/** Liveness, readiness and Prometheus metrics: what kubelet and Prometheus read, no token needed. */
export function probeRoutes(deps: ProbeDependencies): Hono {
  return new Hono()
    .get('/health', (c) => c.json({ status: 'ok' }))
    .get('/ready', (c) => {
      const readiness = deps.readiness();
      const endpoints = deps.endpoints.all();
      const unhealthy = endpoints.filter((endpoint) => !endpoint.usable);
      const staleSince = deps.discoveryStaleSince();
      return c.json(
        {
          status: readiness,
          // Stale discovery keeps serving the last known endpoints: ready, with a note.
          ...(staleSince ? { discovery: `stale since ${staleSince.toISOString()}` } : {}),
          endpoints: endpoints.length,
          healthy_endpoints: endpoints.length - unhealthy.length,
          // Why each backend is out of rotation, so an operator need not search the logs.
          unhealthy: unhealthy.map((endpoint) => ({
            endpoint: endpoint.address,
            name: endpoint.name,
            error: endpoint.health.ejected ? 'ejected after failed requests' : (endpoint.lastError ?? null),
          })),
        },
        readiness === 'ready' ? 200 : 503,
      );
    })
    .get('/metrics', async (c) => c.body(await deps.metrics.registry.metrics(), 200, { 'content-type': deps.metrics.registry.contentType }));
}
