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

  private readonly pluginSeconds = new Histogram({
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

  readonly configReloads = new Counter({
    name: 'llm_extproc_config_reloads_total',
    help: 'Reloads of the config, route and scheduling files after they changed, by result: ok (applied), failed (rejected, the last good configuration stays).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  private readonly configInfo = new Gauge({
    name: 'llm_extproc_config_info',
    help: 'Always 1; hash is a fingerprint of the configuration in effect (settings and the files they name).',
    labelNames: ['hash'] as const,
    registers: [this.registry],
  });

  readonly rateLimited = new Counter({
    name: 'llm_extproc_rate_limited_total',
    help: 'Requests refused with 429 by a rate limit, by the limit that refused them: model, owned_by or tenant.',
    labelNames: ['limit'] as const,
    registers: [this.registry],
  });

  readonly streamsShed = new Counter({
    name: 'llm_extproc_streams_shed_total',
    help: 'ext_proc streams ended with RESOURCE_EXHAUSTED at once because --max-open-streams were open.',
    registers: [this.registry],
  });

  readonly tokens = new Counter({
    name: 'llm_extproc_tokens_total',
    help: 'Tokens the backends reported in the usage of their responses (needs a response_body_mode other than NONE), by model, engine and kind (prompt, completion).',
    labelNames: ['model', 'owned_by', 'kind'] as const,
    registers: [this.registry],
  });

  readonly usageMissing = new Counter({
    name: 'llm_extproc_usage_missing_total',
    help: 'Successful JSON or SSE responses seen to their end without a usage object (e.g. streams without stream_options.include_usage).',
    labelNames: ['model', 'owned_by'] as const,
    registers: [this.registry],
  });

  readonly tlsReloads = new Counter({
    name: 'llm_extproc_tls_reloads_total',
    help: "Reloads of a TLS port's certificate files after they changed, by port (grpc, admin) and result: ok, or failed (the last good certificate kept serving).",
    labelNames: ['port', 'result'] as const,
    registers: [this.registry],
  });

  readonly routeNameUnknown = new Counter({
    name: 'llm_extproc_route_name_unknown_total',
    help: 'Requests whose Envoy route name (attribute xds.route_name) is not in the routes file, so they were matched by path_prefix.',
    registers: [this.registry],
  });

  /** Counter children by model, then engine, so the hot path skips label hashing and key building. */
  private readonly routedChildren = new ByModelAndEngine<Counter.Internal>();
  private readonly usageChildren = new ByModelAndEngine<UsageSeries>();
  readonly adminWrites = new Counter({
    name: 'llm_extproc_admin_writes_total',
    help: 'Admin API writes (POST, DELETE) by route and result: ok, rejected (bad input, conflict, failure), unauthorized (no or wrong token), forbidden (no token configured).',
    labelNames: ['route', 'result'] as const,
    registers: [this.registry],
  });

  constructor(endpoints: EndpointRegistry, activeStreams: () => number, discoveryStaleSince: () => Date | undefined = () => undefined) {
    collectDefaultMetrics({ register: this.registry, prefix: 'llm_extproc_' });
    for (const result of ['ok', 'failed']) this.configReloads.inc({ result }, 0);
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
    perEndpoint(
      'llm_extproc_endpoint_consecutive_ejections',
      'Passive ejections of the endpoint in a row (each one doubles the back-off); 0 once it has served well since.',
      (e) => e.health.ejections,
    );
    perEndpoint(
      'llm_extproc_endpoint_engine_scrape_age_seconds',
      "Age of the endpoint's last good /metrics scrape; -1 when there is none (never scraped, or the last scrape failed).",
      (e) => (e.load ? (Date.now() - e.load.updateTime.getTime()) / 1000 : -1),
    );
    const discoveryEvents = new Counter({
      name: 'llm_extproc_discovery_events_total',
      help: 'Endpoints that discovery added or removed (static hosts at start, pods and their address changes with k8s).',
      labelNames: ['event'] as const,
      registers: [this.registry],
    });
    for (const event of ['added', 'removed']) discoveryEvents.inc({ event }, 0);
    endpoints.onMembership({ added: () => discoveryEvents.inc({ event: 'added' }), removed: () => discoveryEvents.inc({ event: 'removed' }) });
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

  /** Marks `hash` as the configuration in effect (one series at a time). */
  configLoaded(hash: string): void {
    this.configInfo.reset();
    this.configInfo.set({ hash }, 1);
  }

  /** Children of pluginSeconds per plugin object, then outcome: a call of the hot path hashes no labels. */
  private readonly pluginChildren = new WeakMap<object, Map<string, Histogram.Internal<'plugin' | 'type' | 'outcome'>>>();

  /** Times one scheduling plugin call. */
  observePlugin(plugin: { name: string; type: string }, outcome: string, seconds: number): void {
    let byOutcome = this.pluginChildren.get(plugin);
    if (!byOutcome) {
      byOutcome = new Map();
      this.pluginChildren.set(plugin, byOutcome);
    }
    let child = byOutcome.get(outcome);
    if (!child) {
      child = this.pluginSeconds.labels({ plugin: plugin.name, type: plugin.type, outcome });
      byOutcome.set(outcome, child);
    }
    child.observe(seconds);
  }

  /** Counts one routed request; `model` is always one the registry serves, so the map stays small. */
  routed(model: string, ownedBy: string): void {
    let child = this.routedChildren.get(model, ownedBy);
    if (!child) {
      child = this.requests.labels({ outcome: 'routed', status: '200', model, owned_by: ownedBy });
      this.routedChildren.set(model, ownedBy, child);
    }
    child.inc();
  }

  /** The token series of a routed request's model and engine (as in `routed`). */
  usageSeries(model: string, ownedBy: string): UsageSeries {
    let series = this.usageChildren.get(model, ownedBy);
    if (!series) {
      series = {
        prompt: this.tokens.labels({ model, owned_by: ownedBy, kind: 'prompt' }),
        completion: this.tokens.labels({ model, owned_by: ownedBy, kind: 'completion' }),
        missing: this.usageMissing.labels({ model, owned_by: ownedBy }),
      };
      this.usageChildren.set(model, ownedBy, series);
    }
    return series;
  }
}

export interface UsageSeries {
  prompt: Counter.Internal;
  completion: Counter.Internal;
  missing: Counter.Internal;
}

/** Values by model, then engine: no key string is built per lookup. */
class ByModelAndEngine<T> {
  private readonly byModel = new Map<string, Map<string, T>>();

  get(model: string, ownedBy: string): T | undefined {
    return this.byModel.get(model)?.get(ownedBy);
  }

  set(model: string, ownedBy: string, value: T): void {
    let byEngine = this.byModel.get(model);
    if (!byEngine) {
      byEngine = new Map();
      this.byModel.set(model, byEngine);
    }
    byEngine.set(ownedBy, value);
  }
}
