import type { Logger } from 'pino';
import { writePolicy } from '../admin/auth.js';
import { MappingAdmin } from '../admin/mapping-admin.js';
import { AdminServer, type Readiness } from '../admin/server.js';
import { StateFile } from '../admin/state-file.js';
import type { Config } from '../config/config.js';
import { ConfigError } from '../config/errors.js';
import { PassiveHealth } from '../discovery/health/passive.js';
import { Prober } from '../discovery/health/prober.js';
import { LoadScraper } from '../discovery/load/scraper.js';
import { EndpointRegistry } from '../discovery/registry.js';
import { type BindError, ExtProcServer } from '../extproc/server.js';
import { Metrics } from '../metrics.js';
import { joinHostPort } from '../net-address.js';
import { LiveMappings, MappingTable } from '../routing/mappings.js';
import { loadRouteConfig, type RouteConfig, RouteTable } from '../routing/routes.js';
import { createExternalFilters, type ExternalHttpFilter } from '../scheduling/filters/external-http.js';
import { parseExternalFilters } from '../scheduling/filters/external-http-config.js';
import { buildChain, loadChainSpec, PRESET_CHAIN } from '../scheduling/plugins.js';
import { Scheduler } from '../scheduling/scheduler.js';
import { type DiscoveryOptions, type RunningDiscovery, startDiscovery } from './discovery.js';
import { LlmRouter } from './llm-router.js';

/** A running llm-extproc: ext_proc gRPC server, admin HTTP server, discovery. */
export interface Service {
  grpcPort: number;
  adminPort: number;
  endpoints: EndpointRegistry;
  metrics: Metrics;
  prober: Prober;
  scraper: LoadScraper;
  /** Graceful stop: not ready at once (still live), drain open streams (bounded), close everything. */
  stop(): Promise<void>;
}

export interface ServiceOptions extends DiscoveryOptions {
  /** Where EXTERNAL_HTTP_FILTERS and LLM_EXTPROC_ADMIN_TOKEN are read from; default process.env. */
  env?: Readonly<Record<string, string | undefined>>;
}

/** Starts every part from a validated Config; see ServiceOptions for what may be replaced. */
export async function startService(config: Config, log: Logger, options: ServiceOptions = {}): Promise<Service> {
  const env = options.env ?? process.env;
  const externalConfigs = parseExternalFilters(env);
  const writes = await writePolicy(config, env);
  const { routes, mappings }: RouteConfig = config.routeConfig
    ? await loadRouteConfig(config.routeConfig)
    : { routes: new RouteTable(), mappings: new MappingTable() };
  const endpoints = new EndpointRegistry();
  let grpc: ExtProcServer | undefined;
  let discovery: RunningDiscovery | undefined;
  const metrics = new Metrics(
    endpoints,
    () => grpc?.activeStreams ?? 0,
    () => discovery?.staleSince(),
  );
  discovery = await startDiscovery(config, mappings.mappings, endpoints, metrics.registry, log, options);
  const { source, services } = discovery;
  // Routes-file and admin mappings, one table the scheduler reads; the state file adds the saved ones.
  const live = new LiveMappings(mappings.mappings);
  const mappingAdmin = new MappingAdmin(live, services, config.stateFile === undefined ? undefined : new StateFile(config.stateFile, log), log);
  await mappingAdmin.restore().catch(async (err: unknown) => {
    await discovery.stop();
    throw err;
  });
  const passive = new PassiveHealth(
    endpoints,
    { threshold: config.passiveEjection, baseEjectionMs: config.passiveEjectionMs },
    () => metrics.ejections.inc(),
    log,
  );
  const chainSpec = config.schedulingConfig ? await loadChainSpec(config.schedulingConfig) : PRESET_CHAIN;
  const externalFilters: ExternalHttpFilter[] = [];
  const chain = buildChain(chainSpec, config.routingLogic, {
    fromEnv: externalConfigs,
    create: (configs) => {
      externalFilters.push(...createExternalFilters(configs, log, metrics.registry, { destinationHeader: config.destinationHeader }));
      return externalFilters;
    },
  });
  const scheduler = new Scheduler(endpoints, chain, {
    onOutcome: (endpoint, outcome) => passive.record(endpoint, outcome),
    pins: { mappings: live, addresses: (name) => services.addresses(name) },
    observe: (plugin, seconds, outcome) => metrics.pluginSeconds.observe({ plugin: plugin.name, type: plugin.type, outcome }, seconds),
  });
  // retry-after: about when a probe may have brought something back.
  const router = new LlmRouter(() => routes, scheduler, endpoints, metrics, log, Math.max(1, Math.ceil(config.probeIntervalMs / 1000)));
  grpc = new ExtProcServer(
    {
      host: config.host,
      port: config.port,
      maxReceiveMessageBytes: config.grpcMaxReceiveBytes,
      drainTimeoutMs: config.drainTimeoutMs,
      defaultRequestBodyMode: config.requestBodyMode,
      defaultResponseBodyMode: config.responseBodyMode,
      maxBodyBytes: config.maxBodyBytes,
      destinationHeader: config.destinationHeader,
      routedToHeader: config.routedToHeader,
    },
    router,
    {
      decided: (startedAt) => metrics.decisionSeconds.observe((performance.now() - startedAt) / 1000),
      protocolError: () => metrics.protocolErrors.inc(),
    },
    log,
  );
  const prober = new Prober(
    endpoints,
    {
      intervalMs: config.probeIntervalMs,
      timeoutMs: config.probeTimeoutMs,
      unhealthyThreshold: config.unhealthyThreshold,
      healthyThreshold: config.healthyThreshold,
      modelsIntervalMs: config.modelsIntervalMs,
    },
    metrics,
    log,
  );
  const scraper = new LoadScraper(
    endpoints,
    { intervalMs: config.metricsIntervalMs, timeoutMs: config.metricsIntervalMs, stalenessMs: config.metricsStalenessMs },
    metrics.registry,
    log,
  );
  // Ready = the source has its first picture (above) and every endpoint in it has been probed once.
  const readiness = (): Readiness => (grpc.draining ? 'draining' : prober.completedRounds > 0 ? 'ready' : 'starting');
  const admin = new AdminServer({
    metrics,
    endpoints,
    readiness,
    discoveryStaleSince: () => discovery.staleSince(),
    mappings: mappingAdmin,
    discover: () => prober.probeNow(),
    writes,
    log,
  });

  const grpcPort = await grpc.start().catch(async (err: unknown) => {
    await discovery.stop();
    throw listenFailure({ host: '--host', port: '--port' }, config.host, config.port, err);
  });
  const adminPort = await admin.start(config.adminHost, config.adminPort).catch(async (err: unknown) => {
    await Promise.all([grpc.stop(), discovery.stop()]); // already running: they would keep the process alive
    throw listenFailure({ host: '--admin-host', port: '--admin-port' }, config.adminHost, config.adminPort, err);
  });
  log.info(
    {
      grpcPort,
      adminPort,
      discovery: source.name,
      routingLogic: scheduler.pickerName,
      filters: chain.filters.map((filter) => `${filter.name} (${filter.type})`),
      scorers: chain.scorers.map((scorer) => `${scorer.name} (${scorer.type}) x${scorer.weight}`),
      endpoints: endpoints.all().map((endpoint) => endpoint.address),
      routes: routes.list().length,
    },
    'llm-extproc listening',
  );
  void scraper.start();
  void prober.start().then(() => {
    grpc.setReady(true);
    const all = endpoints.all();
    const healthy = all.filter((endpoint) => endpoint.healthy).length;
    log.info({ endpoints: all.length, healthy, models: endpoints.modelCards().length }, 'first discovery round done: ready');
  });

  return {
    grpcPort,
    adminPort,
    endpoints,
    metrics,
    prober,
    scraper,
    async stop() {
      prober.stop();
      await Promise.all([grpc.stop(), discovery.stop(), scraper.stop()]);
      for (const filter of externalFilters) filter.close();
      // Last: /health answers until the drain is over.
      await admin.stop();
    },
  };
}

/** A port that cannot be bound is the operator's to fix: name the flag that chose it and the cause. */
function listenFailure(flags: { host: string; port: string }, host: string, port: number, err: unknown): ConfigError {
  const { code, message } = err as BindError;
  const address = joinHostPort(host, port);
  switch (code) {
    case 'EADDRINUSE':
      return new ConfigError(flags.port, `${address} is already in use`, `stop what listens there or choose another ${flags.port}; 0 = any free port`);
    case 'EACCES':
      return new ConfigError(flags.port, `${address} may not be bound by this user`, `choose a ${flags.port} from 1024 up`);
    case 'EADDRNOTAVAIL':
      return new ConfigError(flags.host, `${host} is not an address of this machine`, `use one of its addresses, 0.0.0.0 for all of them or 127.0.0.1`);
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new ConfigError(flags.host, `cannot resolve "${host}"`, `give an IP address of this machine, e.g. 0.0.0.0 or 127.0.0.1`);
    default:
      return new ConfigError(`${flags.host}/${flags.port}`, `cannot listen on ${address}: ${message}`, `check ${flags.host} and ${flags.port}`);
  }
}
