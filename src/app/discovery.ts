import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Config } from '../config/config.js';
import type { EndpointRegistry } from '../discovery/registry.js';
import type { KubernetesSourceOptions, ServiceEndpoints } from '../discovery/sources/kubernetes.js';
import { StaticSource } from '../discovery/sources/static.js';
import { resolveStaticHosts, type StaticHost, staticModelCards } from '../discovery/static.js';
import type { DiscoverySource } from '../discovery/types.js';
import type { MappingTable } from '../routing/mappings.js';

/** Discovery as the service runs it: the source of backends and, with k8s, the Services that mappings name. */
export interface RunningDiscovery {
  source: DiscoverySource;
  /** Ready addresses of a mapped Service (k8s only). */
  serviceAddresses: ((service: string) => ReadonlySet<string> | undefined) | undefined;
  /** The earliest time any part lost contact; undefined while all are current. */
  staleSince(): Date | undefined;
  stop(): Promise<void>;
}

export interface DiscoveryOptions {
  /** Replaces --static-hosts (the demo's own backends). */
  staticHosts?: readonly StaticHost[];
  /** For tests: an injected kube config, faster back-off. */
  kubernetes?: KubernetesSourceOptions;
}

/**
 * Starts the source --service-discovery names and waits for its first complete picture (and, with
 * k8s, the first list of every mapped Service). A source that cannot get it rejects with a
 * ConfigError naming what is wrong: a start-up error, exit 2.
 */
export async function startDiscovery(
  config: Config,
  mappings: MappingTable,
  endpoints: EndpointRegistry,
  metricsRegistry: Registry,
  log: Logger,
  options: DiscoveryOptions,
): Promise<RunningDiscovery> {
  let services: ServiceEndpoints | undefined;
  let source: DiscoverySource;
  if (config.serviceDiscovery === 'k8s') {
    // Loaded only when used: the client library adds about 30 MB of heap, which every major GC
    // marks (measured: large-body CPU per request 1.6-2x the bare server's with it loaded, static mode).
    const { createKubernetesDiscovery } = await import('../discovery/sources/kubernetes.js');
    const kubernetes = createKubernetesDiscovery(config.k8s!, log, metricsRegistry, options.kubernetes);
    source = kubernetes.pods;
    services = kubernetes.services;
  } else {
    // Mistakes in the flags are reported before any DNS look-up.
    const hosts = options.staticHosts ?? config.staticHosts;
    const cards = staticModelCards(hosts.length, config.staticModels, config.staticOwnedBy);
    const identities = await resolveStaticHosts(hosts);
    source = new StaticSource(identities.map((identity, index) => ({ ...identity, fixedModels: cards[index] })));
  }
  const running: RunningDiscovery = {
    source,
    serviceAddresses: services && ((service) => services.addresses(service)),
    staleSince() {
      const times = [source.staleSince(), services?.staleSince()].filter((time) => time !== undefined);
      return times.length === 0 ? undefined : new Date(Math.min(...times.map((time) => time.getTime())));
    },
    async stop() {
      await Promise.all([source.stop(), services?.stop()]);
    },
  };
  source.start(endpoints);
  for (const service of mappings.services()) services?.watch(service);
  try {
    await source.synced;
    await Promise.all(mappings.services().map((service) => services?.synced(service)));
  } catch (err) {
    await running.stop();
    throw err;
  }
  return running;
}
