import type { Logger } from 'pino';
import { AdminServer } from '../admin/server.js';
import type { Config } from '../config/config.js';
import type { ModelCard } from '../discovery/endpoint.js';
import { Prober } from '../discovery/prober.js';
import { EndpointRegistry } from '../discovery/registry.js';
import { resolveStaticHosts, staticModelCards, type StaticHost } from '../discovery/static.js';
import { ExtProcServer } from '../extproc/server.js';
import { Metrics } from '../metrics.js';
import { RouteTable, loadRouteTable } from '../routing/routes.js';
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
  /** Graceful stop: not ready, drain open streams (bounded), close everything. */
  stop(): Promise<void>;
}

/** Starts every part from a validated Config; `staticHosts` may be replaced (demo backends). */
export async function startService(config: Config, log: Logger, staticHosts: readonly StaticHost[] = config.staticHosts): Promise<Service> {
  const routes = config.routeConfig ? await loadRouteTable(config.routeConfig) : new RouteTable();
  const endpoints = new EndpointRegistry();
  // Mistakes in the flags are reported before any DNS look-up.
  const staticCards = staticModelCards(staticHosts.length, config.staticModels, config.staticOwnedBy);
  const identities = await resolveStaticHosts(staticHosts);
  endpoints.replaceAll(identities);

  const staticModels = new Map<string, readonly ModelCard[]>();
  identities.forEach((identity, index) => {
    const cards = staticCards[index];
    if (cards) {
      staticModels.set(identity.address, cards);
      endpoints.update(identity.address, { models: cards });
    }
  });

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
    { intervalMs: config.probeIntervalMs, timeoutMs: config.probeTimeoutMs, unhealthyThreshold: config.unhealthyThreshold, staticModels },
    metrics,
    log,
  );
  const admin = new AdminServer({ metrics, endpoints, isReady: () => prober.completedRounds > 0, log });

  const grpcPort = await grpc.start();
  const adminPort = await admin.start(config.adminHost, config.adminPort);
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
      await admin.stop();
    },
  };
}
