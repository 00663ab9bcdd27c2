import { type Context, Hono, type MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { Logger } from 'pino';
import type { Endpoint } from '../discovery/endpoint.js';
import type { EndpointRegistry } from '../discovery/registry.js';
import type { Metrics } from '../metrics.js';
import type { SourcedMapping } from '../routing/mappings.js';
import { freshMetrics } from '../scheduling/scorers/engine-figures.js';
import { guardWrite, type WritePolicy } from './auth.js';
import { discoveredServices, servicesObject } from './discovered.js';
import { badRequest, conflict, errorResponse, notFound } from './errors.js';
import type { MappingAdmin, MappingChange } from './mapping-admin.js';
import { mappingKeySchema, mappingSchema, parseWith } from './schemas.js';

/** Admin bodies are a mapping or nothing: a few hundred bytes. */
export const MAX_ADMIN_BODY_BYTES = 64 * 1024;

export interface ApiDependencies {
  endpoints: EndpointRegistry;
  mappings: MappingAdmin;
  /** One discovery round now (every endpoint's /v1/models re-read); resolves when it is done. */
  discover: () => Promise<void>;
  writes: WritePolicy;
  metrics: Metrics;
  log: Logger;
}

type Source = SourcedMapping['source'] | 'discovery';

/** A mapping as the API shows it: seed 001's fields (owned_by null = any engine) and where it came from. */
function shown(mapping: { model: string; owned_by?: string | undefined; service_name: string }, source: Source) {
  return { model: mapping.model, owned_by: mapping.owned_by ?? null, service_name: mapping.service_name, source };
}

/** Every mapping as GET /admin/api/routing and the status page show them: configured, added, discovered. */
export function listedMappings(mappings: Pick<MappingAdmin, 'list'>, endpoints: EndpointRegistry): ReturnType<typeof shown>[] {
  return [
    ...mappings.list().map((mapping) => shown(mapping, mapping.source)),
    ...discoveredServices(endpoints.all()).flatMap((found) =>
      found.groups.map((group) => shown({ model: found.model, owned_by: found.owned_by, service_name: group }, 'discovery')),
    ),
  ];
}

/** The routing API (seed 001), discovery (seed 003) and the endpoint list. Writes pass guardWrite. */
export function apiRoutes(deps: ApiDependencies): Hono {
  const guard = (route: string): MiddlewareHandler => guardWrite(deps.writes, deps.metrics, deps.log, route);
  // After the guard: nothing of a refused write is read.
  const limit = bodyLimit({
    maxSize: MAX_ADMIN_BODY_BYTES,
    onError: () =>
      errorResponse(413, 'invalid_request_error', 'request_too_large', `The request body is larger than the limit of ${MAX_ADMIN_BODY_BYTES} bytes.`),
  });
  return new Hono()
    .get('/admin/api/routing', (c) => c.json({ mappings: listedMappings(deps.mappings, deps.endpoints) }))
    .post('/admin/api/routing', guard('POST /admin/api/routing'), limit, async (c) => {
      const body = await jsonBody(c);
      if (body instanceof Response) return body;
      const parsed = parseWith(mappingSchema, body, 'body');
      if (!parsed.ok) return badRequest('invalid_mapping', parsed.message);
      return changeAnswer(await deps.mappings.add(parsed.value), 201, 'Routing mapping added');
    })
    .delete('/admin/api/routing', guard('DELETE /admin/api/routing'), limit, async (c) => {
      const parsed = parseWith(mappingKeySchema, c.req.query(), 'query');
      if (!parsed.ok) return badRequest('invalid_mapping', `${parsed.message} (DELETE /admin/api/routing?model=...&owned_by=...)`);
      return changeAnswer(await deps.mappings.remove(parsed.value.model, parsed.value.owned_by), 200, 'Routing mapping deleted');
    })
    .post('/admin/discover', guard('POST /admin/discover'), limit, async (c) => {
      await deps.discover();
      const services = servicesObject(discoveredServices(deps.endpoints.all()));
      return c.json({ message: 'Service discovery completed', discovered: Object.keys(services).length, services });
    })
    .get('/admin/api/endpoints', (c) => c.json({ endpoints: deps.endpoints.all().map(endpointView) }));
}

/** The body as JSON; an answer when it is none. */
async function jsonBody(c: Context): Promise<unknown> {
  const text = await c.req.text();
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return badRequest('invalid_json', text.trim() === '' ? 'body: a JSON object is required' : 'body: is not valid JSON');
  }
}

function changeAnswer(change: MappingChange, status: 200 | 201, message: string): Response {
  switch (change.kind) {
    case 'done':
      return Response.json({ message, mapping: shown(change.mapping, change.mapping.source) }, { status });
    case 'unknown_service':
      return badRequest('unknown_service', change.message);
    case 'unavailable':
      return errorResponse(503, 'service_unavailable_error', 'service_lookup_failed', change.message);
    case 'conflict': {
      const { existing } = change;
      const key = `${existing.model} (${existing.owned_by ?? 'any engine'})`;
      return existing.source === 'admin' && status === 201
        ? conflict('mapping_exists', `${key} is mapped already, to ${existing.service_name}: delete that mapping first`)
        : conflict('mapping_from_routes_file', `${key} is mapped to ${existing.service_name} by the routes file (--route-config): change it there`);
    }
    case 'not_found':
      return notFound('mapping_not_found', 'no admin mapping has this (model, owned_by)');
  }
}

/** An endpoint as operators want to see it: who, what it serves, how it is doing and since when it is known. */
function endpointView(endpoint: Endpoint) {
  const { load } = endpoint;
  return {
    address: endpoint.address,
    name: endpoint.name,
    namespace: endpoint.namespace,
    group: endpoint.group ?? null,
    engines: [...new Set(endpoint.models.map((card) => card.owned_by))].sort(),
    models: endpoint.models.map((card) => ({ id: card.id, owned_by: card.owned_by })),
    health: {
      healthy: endpoint.healthy,
      ejected: endpoint.health.ejected,
      usable: endpoint.usable,
      last_error: endpoint.lastError ?? null,
      last_seen: endpoint.lastSeen?.toISOString() ?? null,
    },
    in_flight: endpoint.inFlight,
    load: load ? { ...load.metrics, update_time: load.updateTime.toISOString(), fresh: freshMetrics(endpoint, performance.now()) !== undefined } : null,
    age_seconds: Math.floor((Date.now() - endpoint.discoveredAt) / 1000),
  };
}
