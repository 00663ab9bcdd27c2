import type { Logger } from 'pino';
import { AdminServer, type Readiness } from '../admin/server.js';
import type { Config } from '../config/config.js';
import { ConfigError } from '../config/errors.js';
import { Prober } from '../discovery/prober.js';
import { EndpointRegistry } from '../discovery/registry.js';
import { StaticSource } from '../discovery/sources/static.js';
import { resolveStaticHosts, type StaticHost, staticModelCards } from '../discovery/static.js';
import { type BindError, ExtProcServer } from '../extproc/server.js';
import { Metrics } from '../metrics.js';
import { joinHostPort } from '../net-address.js';
import { loadRouteTable, RouteTable } from '../routing/routes.js';
import { createPicker } from '../scheduling/pickers.js';
import { Scheduler } from '../scheduling/scheduler.js';
import { LlmRouter } from './llm-router.js';

/** A running llm-extproc: ext_proc gRPC server, admin HTTP server, discovery. */
export interface Service {
  grpcPort: number;
  adminPort: number;
  endpoints: EndpointRegistry;
  metrics: Metrics;
  prober: Prober;
  /** Graceful stop: not ready at once (still live), drain open streams (bounded), close everything. */
  stop(): Promise<void>;
}

/** Starts every part from a validated Config; `staticHosts` may be replaced (demo backends). */
export async function startService(config: Config, log: Logger, staticHosts: readonly StaticHost[] = config.staticHosts): Promise<Service> {
  const routes = config.routeConfig ? await loadRouteTable(config.routeConfig) : new RouteTable();
  const endpoints = new EndpointRegistry();
  // Mistakes in the flags are reported before any DNS look-up.
  const staticCards = staticModelCards(staticHosts.length, config.staticModels, config.staticOwnedBy);
  const identities = (await resolveStaticHosts(staticHosts)).map((identity, index) => ({ ...identity, fixedModels: staticCards[index] }));
  const source = new StaticSource(identities);
  source.start(endpoints);

  let grpc: ExtProcServer | undefined;
  const metrics = new Metrics(endpoints, () => grpc?.activeStreams ?? 0);
  const scheduler = new Scheduler(endpoints, createPicker(config.routingLogic));
  const router = new LlmRouter(() => routes, scheduler, endpoints, metrics, log);
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
    { intervalMs: config.probeIntervalMs, timeoutMs: config.probeTimeoutMs, unhealthyThreshold: config.unhealthyThreshold },
    metrics,
    log,
  );
  const readiness = (): Readiness => (grpc.draining ? 'draining' : prober.completedRounds > 0 ? 'ready' : 'starting');
  const admin = new AdminServer({ metrics, endpoints, readiness, log });

  const grpcPort = await grpc.start().catch((err: unknown) => {
    throw listenFailure({ host: '--host', port: '--port' }, config.host, config.port, err);
  });
  const adminPort = await admin.start(config.adminHost, config.adminPort).catch(async (err: unknown) => {
    await grpc.stop(); // already bound: it would keep the process alive
    throw listenFailure({ host: '--admin-host', port: '--admin-port' }, config.adminHost, config.adminPort, err);
  });
  log.info(
    { grpcPort, adminPort, routingLogic: scheduler.pickerName, endpoints: identities.map((i) => i.address), routes: routes.list().length },
    'llm-extproc listening',
  );
  void prober.start().then(() => {
    grpc.setReady(true);
    const healthy = endpoints.all().filter((endpoint) => endpoint.healthy).length;
    log.info({ endpoints: identities.length, healthy, models: endpoints.modelCards().length }, 'first discovery round done: ready');
  });

  return {
    grpcPort,
    adminPort,
    endpoints,
    metrics,
    prober,
    async stop() {
      prober.stop();
      await grpc.stop();
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
