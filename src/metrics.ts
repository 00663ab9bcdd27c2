import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { Endpoint } from './discovery/endpoint.js';
import type { EndpointRegistry } from './discovery/registry.js';

/**
 * llm-extproc's Prometheus series, all prefixed `llm_extproc_`. Labels stay bounded: models and
 * engines only as the registry knows them, endpoints only as discovered.
 */
export class Metrics {
  readonly registry = new Registry();

  readonly requests = new Counter({
    name: 'llm_extproc_requests_total',
    help: 'HTTP requests decided, by outcome (routed, or the error code answered), model and engine.',
    labelNames: ['outcome', 'status', 'model', 'owned_by'] as const,
    registers: [this.registry],
  });

  readonly decisionSeconds = new Histogram({
    name: 'llm_extproc_decision_duration_seconds',
    help: 'From the request headers reaching llm-extproc to the decision being sent (body wait included).',
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2],
    registers: [this.registry],
  });

  readonly protocolErrors = new Counter({
    name: 'llm_extproc_protocol_errors_total',
    help: 'ext_proc streams ended with a gRPC error because a message arrived out of order or malformed.',
    registers: [this.registry],
  });

  readonly probes = new Counter({
    name: 'llm_extproc_backend_probes_total',
    help: 'Backend probes by result.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly pluginSeconds = new Histogram({
    name: 'llm_extproc_scheduling_plugin_duration_seconds',
    help: 'Time of each scheduling plugin call (filters and scorers of --scheduling-config and external filters), by outcome: ok, emptied (kept nothing), failed.',
    labelNames: ['plugin', 'type', 'outcome'] as const,
    buckets: [0.00001, 0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [this.registry],
  });

  readonly ejections = new Counter({
    name: 'llm_extproc_endpoint_ejections_total',
    help: 'Endpoints ejected by passive health (consecutive failed requests).',
    registers: [this.registry],
  });

  readonly adminWrites = new Counter({
    name: 'llm_extproc_admin_writes_total',
    help: 'Admin API writes (POST, DELETE) by route and result: ok, rejected (bad input, conflict, failure), unauthorized (no or wrong token), forbidden (no token configured).',
    labelNames: ['route', 'result'] as const,
    registers: [this.registry],
  });

  /** Counter children of routed requests by model, then engine, so the hot path skips label hashing and key building. */
  private readonly routedChildren = new Map<string, Map<string, Counter.Internal>>();

  constructor(endpoints: EndpointRegistry, activeStreams: () => number, discoveryStaleSince: () => Date | undefined = () => undefined) {
    collectDefaultMetrics({ register: this.registry, prefix: 'llm_extproc_' });
    const perEndpoint = (name: string, help: string, value: (endpoint: Endpoint) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['endpoint', 'name'] as const,
        registers: [this.registry],
        collect() {
          this.reset();
          for (const endpoint of endpoints.all()) this.set({ endpoint: endpoint.address, name: endpoint.name }, value(endpoint));
        },
      });
    perEndpoint('llm_extproc_endpoint_in_flight_requests', 'Requests routed to the endpoint whose ext_proc stream has not ended.', (e) => e.inFlight);
    perEndpoint('llm_extproc_endpoint_healthy', '1 when the endpoint passed its last probe.', (e) => (e.healthy ? 1 : 0));
    perEndpoint('llm_extproc_endpoint_ejected', '1 while passive health keeps the endpoint out after failed requests.', (e) => (e.health.ejected ? 1 : 0));
    new Gauge({
      name: 'llm_extproc_discovery_stale_seconds',
      help: 'How long discovery has been out of contact (e.g. the Kubernetes API server unreachable); 0 while current.',
      registers: [this.registry],
      collect() {
        const since = discoveryStaleSince();
        this.set(since ? (Date.now() - since.getTime()) / 1000 : 0);
      },
    });
    new Gauge({
      name: 'llm_extproc_active_streams',
      help: 'Open ext_proc streams (one per HTTP request passing Envoy).',
      registers: [this.registry],
      collect() {
        this.set(activeStreams());
      },
    });
  }

  /** Counts one routed request; `model` is always one the registry serves, so the map stays small. */
  routed(model: string, ownedBy: string): void {
    let byEngine = this.routedChildren.get(model);
    if (!byEngine) {
      byEngine = new Map();
      this.routedChildren.set(model, byEngine);
    }
    let child = byEngine.get(ownedBy);
    if (!child) {
      child = this.requests.labels({ outcome: 'routed', status: '200', model, owned_by: ownedBy });
      byEngine.set(ownedBy, child);
    }
    child.inc();
  }
}
