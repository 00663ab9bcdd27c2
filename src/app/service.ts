import type { Logger } from 'pino';
import { listedMappings } from '../admin/api-routes.js';
import { writePolicy } from '../admin/auth.js';
import { MappingAdmin } from '../admin/mapping-admin.js';
import { AdminServer, type Readiness } from '../admin/server.js';
import { StateFile } from '../admin/state-file.js';
import { DecisionLog, statusApp } from '../admin/status/app.js';
import type { Config, EffectiveSettings } from '../config/config.js';
import { ConfigError } from '../config/errors.js';
import { PassiveHealth, type PassiveHealthOptions } from '../discovery/health/passive.js';
import { Prober, type ProberOptions } from '../discovery/health/prober.js';
import { LoadScraper, type LoadScraperOptions } from '../discovery/load/scraper.js';
import { EndpointRegistry } from '../discovery/registry.js';
import { type BindError, ExtProcServer } from '../extproc/server.js';
import { Metrics } from '../metrics.js';
import { joinHostPort } from '../net-address.js';
import { RateLimiter } from '../protection/rate-limit.js';
import { StreamShedding } from '../protection/shedding.js';
import { LiveMappings } from '../routing/mappings.js';
import { createExternalFilters, type ExternalHttpFilter } from '../scheduling/filters/external-http.js';
import { type ExternalFilterConfig, parseExternalFilters } from '../scheduling/filters/external-http-config.js';
import type { RoutingLogic } from '../scheduling/pickers.js';
import { buildChain, type ChainSpec } from '../scheduling/plugins.js';
import { Scheduler } from '../scheduling/scheduler.js';
import { grpcServerCredentials } from '../tls/grpc.js';
import type { TlsFiles } from '../tls/material.js';
import { CertificateWatcher, type TlsPort } from '../tls/watcher.js';
import { type DiscoveryOptions, type RunningDiscovery, startDiscovery } from './discovery.js';
import { LlmRouter } from './llm-router.js';
import { ConfigReloader, type ConfigSnapshot, type LiveTargets, loadFiles, type ReloadOutcome, snapshotOf } from './reload.js';

/** A running llm-extproc: ext_proc gRPC server, admin HTTP server, discovery. */
export interface Service {
  grpcPort: number;
  adminPort: number;
  endpoints: EndpointRegistry;
  metrics: Metrics;
  prober: Prober;
  scraper: LoadScraper;
  /** Reads the configuration again and applies what may change live (the file watcher calls it too). */
  reload(): Promise<ReloadOutcome>;
  /** The rate limits in force; a configuration reload swaps them with reconfigure(). */
  rateLimiter: RateLimiter;
  /** Graceful stop: not ready at once (still live), drain open streams (bounded), close everything. */
  stop(): Promise<void>;
}

export interface ServiceOptions extends DiscoveryOptions {
  /** Where EXTERNAL_HTTP_FILTERS and LLM_EXTPROC_* (the admin token too) are read from; default process.env. */
  env?: Readonly<Record<string, string | undefined>>;
  /**
   * Where `config` came from: the command line, read again on a reload, and the settings it was
   * validated from (read once at start). Without it, reload() reports `unchanged`.
   */
  reload?: { argv: readonly string[]; settings: EffectiveSettings };
  /** Monotonic milliseconds of the rate limits and the shedding log; a fake clock in tests. */
  now?: () => number;
}

/** Starts every part from a validated Config; see ServiceOptions for what may be replaced. */
export async function startService(config: Config, log: Logger, options: ServiceOptions = {}): Promise<Service> {
  const env = options.env ?? process.env;
  const externalConfigs = parseExternalFilters(env);
  const writes = await writePolicy(config);
  const files = await loadFiles(config);
  const initial: ConfigSnapshot | undefined = options.reload && snapshotOf(options.reload.settings, config, files);
  let { routes } = files.routes;
  const { mappings } = files.routes;
  const endpoints = new EndpointRegistry();
  let grpc: ExtProcServer | undefined;
  let discovery: RunningDiscovery | undefined;
  const metrics = new Metrics(
    endpoints,
    () => grpc?.activeStreams ?? 0,
    () => discovery?.staleSince(),
  );
  // The TLS files are checked before anything starts: a bad one is a start-up error.
  const watchTls = async (files: TlsFiles | undefined, port: TlsPort) => {
    if (!files) return undefined;
    for (const result of ['ok', 'failed'] as const) metrics.tlsReloads.inc({ port, result }, 0);
    return CertificateWatcher.start(files, { port, log, onReload: (result) => metrics.tlsReloads.inc({ port, result }) });
  };
  const grpcTls = await watchTls(config.tls, 'grpc');
  const adminTls = await watchTls(config.adminTls, 'admin').catch((err: unknown) => {
    grpcTls?.close();
    throw err;
  });
  const closeTls = () => {
    grpcTls?.close();
    adminTls?.close();
  };
  discovery = await startDiscovery(config, endpoints, metrics.registry, log, options).catch((err: unknown) => {
    closeTls();
    throw err;
  });
  const { source, services } = discovery;
  // Routes-file and admin mappings, one table the scheduler reads; the state file adds the saved ones.
  const liveMappings = new LiveMappings([]);
  const mappingAdmin = new MappingAdmin(liveMappings, services, config.stateFile === undefined ? undefined : new StateFile(config.stateFile, log), log);
  try {
    (await mappingAdmin.prepareFileMappings(mappings, config.routeConfig ?? '--route-config'))();
    await mappingAdmin.restore();
  } catch (err) {
    closeTls();
    await discovery.stop();
    throw err;
  }
  const passive = new PassiveHealth(endpoints, passiveOptions(config), () => metrics.ejections.inc(), log);
  /** Builds a chain; the external filters it creates are returned for closing when it is replaced. */
  const makeChain = (spec: ChainSpec, routingLogic: RoutingLogic) => {
    let created: ExternalHttpFilter[] = [];
    const create = (configs: readonly ExternalFilterConfig[]) => {
      created = createExternalFilters(configs, log, metrics.registry, { destinationHeader: config.destinationHeader });
      return created;
    };
    try {
      const chain = buildChain(spec, routingLogic, { fromEnv: externalConfigs, create });
      return { chain, created };
    } catch (err) {
      // A mistake found after the filters were made (a later plugin): theirs are closed here.
      for (const filter of created) filter.close();
      throw err;
    }
  };
  const { chain, created } = makeChain(files.chainSpec, config.routingLogic);
  let externalFilters = created;
  const scheduler = new Scheduler(endpoints, chain, {
    onOutcome: (endpoint, outcome) => passive.record(endpoint, outcome),
    pins: { mappings: liveMappings, addresses: (name) => services.addresses(name) },
    observe: (plugin, seconds, outcome) => metrics.observePlugin(plugin, outcome, seconds),
  });
  // Built even without limits, so that a reload can set some.
  const rateLimiter = new RateLimiter(config.rateLimits, {
    served: (model, ownedBy) => endpoints.lookup(model, ownedBy).kind === 'found',
    limited: (limit) => metrics.rateLimited.inc({ limit }),
    now: options.now,
  });
  // retry-after: about when a probe may have brought something back.
  const decisions = new DecisionLog();
  // The router reads it on every request: a reload replaces inputLimits in place.
  const protection = { inputLimits: config.inputLimits, rateLimiter };
  const router = new LlmRouter({
    routes: () => routes,
    scheduler,
    endpoints,
    metrics,
    log,
    retryAfterSeconds: Math.max(1, Math.ceil(config.probeIntervalMs / 1000)),
    protection,
    decisions,
  });
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
      credentials: grpcTls && grpcServerCredentials(grpcTls),
    },
    router,
    {
      decided: (startedAt) => metrics.decisionSeconds.observe((performance.now() - startedAt) / 1000),
      protocolError: () => metrics.protocolErrors.inc(),
    },
    log,
    new StreamShedding({ maxOpenStreams: config.maxOpenStreams, shed: () => metrics.streamsShed.inc(), log, now: options.now }),
  );
  const prober = new Prober(endpoints, proberOptions(config), metrics, log);
  const scraper = new LoadScraper(endpoints, scraperOptions(config), metrics.registry, log);
  const live: LiveTargets = {
    async prepare(next, changed) {
      const has = (...names: string[]) => names.some((name) => changed.has(name));
      const rebuilt = has('routing-logic', 'scheduling') ? makeChain(next.files.chainSpec, next.config.routingLogic) : undefined;
      let swapMappings: (() => void) | undefined;
      try {
        if (has('mappings')) swapMappings = await mappingAdmin.prepareFileMappings(next.files.routes.mappings, next.config.routeConfig ?? '--route-config');
      } catch (err) {
        for (const filter of rebuilt?.created ?? []) filter.close();
        throw err;
      }
      return () => {
        swapMappings?.();
        if (has('log-level')) log.level = next.config.logLevel;
        if (has('routes')) routes = next.files.routes.routes;
        if (rebuilt) {
          scheduler.replaceChain(rebuilt.chain);
          // Decisions under way may still call the old external filters: close them after the drain time.
          const retired = externalFilters;
          setTimeout(() => {
            for (const filter of retired) filter.close();
          }, config.drainTimeoutMs).unref();
          externalFilters = rebuilt.created;
        }
        if (has('probe-interval', 'probe-timeout', 'unhealthy-threshold', 'healthy-threshold', 'models-interval'))
          prober.reconfigure(proberOptions(next.config));
        if (has('passive-ejection', 'passive-ejection-time')) passive.reconfigure(passiveOptions(next.config));
        if (has('metrics-interval', 'metrics-staleness')) scraper.reconfigure(scraperOptions(next.config));
        if (has('rate-limit-model', 'rate-limit-owned-by', 'rate-limit-tenant', 'tenant-header')) rateLimiter.reconfigure(next.config.rateLimits);
        if (has('max-header-count', 'max-header-bytes', 'max-query-length', 'max-model-name-length', 'max-owned-by-length')) {
          protection.inputLimits = next.config.inputLimits;
        }
      };
    },
  };
  const reloader = options.reload && initial && new ConfigReloader(options.reload.argv, env, initial, live, metrics, log);
  // Ready = the source has its first picture (above) and every endpoint in it has been probed once.
  const readiness = (): Readiness => (grpc.draining ? 'draining' : prober.completedRounds > 0 ? 'ready' : 'starting');
  const status = statusApp({
    endpoints,
    decisions,
    log,
    // owned_by undefined (any engine) rather than the API's null.
    mappings: () => listedMappings(mappingAdmin, endpoints).map((mapping) => ({ ...mapping, owned_by: mapping.owned_by ?? undefined })),
  });
  const admin = new AdminServer(
    {
      metrics,
      endpoints,
      readiness,
      discoveryStaleSince: () => discovery.staleSince(),
      mappings: mappingAdmin,
      discover: () => prober.probeNow(),
      writes,
      status,
      log,
    },
    adminTls,
  );

  const grpcPort = await grpc.start().catch(async (err: unknown) => {
    await discovery.stop();
    closeTls();
    throw listenFailure({ host: '--host', port: '--port' }, config.host, config.port, err);
  });
  const adminPort = await admin.start(config.adminHost, config.adminPort).catch(async (err: unknown) => {
    await Promise.all([grpc.stop(), discovery.stop()]); // already running: they would keep the process alive
    closeTls();
    throw listenFailure({ host: '--admin-host', port: '--admin-port' }, config.adminHost, config.adminPort, err);
  });
  log.info(
    {
      grpcPort,
      adminPort,
      grpcTls: grpcTls ? (grpcTls.current.ca ? 'mtls' : 'tls') : 'off',
      adminTls: adminTls ? 'https' : 'off',
      discovery: source.name,
      routingLogic: scheduler.pickerName,
      filters: chain.filters.map((filter) => `${filter.name} (${filter.type})`),
      scorers: chain.scorers.map((scorer) => `${scorer.name} (${scorer.type}) x${scorer.weight}`),
      endpoints: endpoints.all().map((endpoint) => endpoint.address),
      routes: routes.list().length,
    },
    'llm-extproc listening',
  );
  reloader?.start();
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
    reload: async () => (reloader ? reloader.reload() : 'unchanged'),
    rateLimiter,
    async stop() {
      reloader?.stop();
      prober.stop();
      await Promise.all([grpc.stop(), discovery.stop(), scraper.stop()]);
      for (const filter of externalFilters) filter.close();
      // Last: /health answers until the drain is over.
      await admin.stop();
      closeTls();
    },
  };
}

function proberOptions(config: Config): ProberOptions {
  return {
    intervalMs: config.probeIntervalMs,
    timeoutMs: config.probeTimeoutMs,
    unhealthyThreshold: config.unhealthyThreshold,
    healthyThreshold: config.healthyThreshold,
    modelsIntervalMs: config.modelsIntervalMs,
  };
}

function passiveOptions(config: Config): PassiveHealthOptions {
  return { threshold: config.passiveEjection, baseEjectionMs: config.passiveEjectionMs };
}

function scraperOptions(config: Config): Omit<LoadScraperOptions, 'concurrency'> {
  return { intervalMs: config.metricsIntervalMs, timeoutMs: config.metricsIntervalMs, stalenessMs: config.metricsStalenessMs };
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
