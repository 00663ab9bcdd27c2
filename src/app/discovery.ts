import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Config } from '../config/config.js';
import type { EndpointIdentity } from '../discovery/endpoint.js';
import type { EndpointRegistry } from '../discovery/registry.js';
import type { KubernetesSourceOptions, ServiceEndpoints } from '../discovery/sources/kubernetes.js';
import { StaticSource } from '../discovery/sources/static.js';
import { resolveStaticHosts, type StaticHost, staticModelCards } from '../discovery/static.js';
import type { DiscoverySource } from '../discovery/types.js';

/** Discovery as the service runs it: the source of backends and what mappings' `service_name` resolves to. */
export interface RunningDiscovery {
  source: DiscoverySource;
  services: MappedServices;
  /** The earliest time any part lost contact; undefined while all are current. */
  staleSince(): Date | undefined;
  stop(): Promise<void>;
}

/**
 * The targets of mappings: Kubernetes Services (their EndpointSlices) with k8s discovery, endpoint
 * groups (`group=` in --static-hosts) with static discovery.
 */
export interface MappedServices {
  /** What a `service_name` names here, for messages. */
  readonly kind: 'Service' | 'endpoint group';
  /** Its ready addresses; undefined while unknown. */
  addresses(name: string): ReadonlySet<string> | undefined;
  /**
   * Follows `name` for one mapping (counted: each needs its release). Resolves once its endpoints
   * are known, to undefined or to why there is no such service; the follow stands either way.
   * Rejects (the follow released) when that cannot be known, e.g. RBAC refuses the list.
   */
  follow(name: string): Promise<string | undefined>;
  release(name: string): void;
}

export interface DiscoveryOptions {
  /** Replaces --static-hosts (the demo's own backends). */
  staticHosts?: readonly StaticHost[];
  /** For tests: an injected kube config, faster back-off. */
  kubernetes?: KubernetesSourceOptions;
}

/**
 * Starts the source --service-discovery names and waits for its first complete picture. A source
 * that cannot get it rejects with a ConfigError naming what is wrong: a start-up error, exit 2.
 * The Services or groups that mappings name are followed through `services` (MappingAdmin).
 */
export async function startDiscovery(
  config: Config,
  endpoints: EndpointRegistry,
  metricsRegistry: Registry,
  log: Logger,
  options: DiscoveryOptions,
): Promise<RunningDiscovery> {
  let serviceEndpoints: ServiceEndpoints | undefined;
  let source: DiscoverySource;
  let services: MappedServices;
  if (config.serviceDiscovery === 'k8s') {
    // Loaded only when used: the client library adds about 30 MB of heap, which every major GC
    // marks (measured: large-body CPU per request 1.6-2x the bare server's with it loaded, static mode).
    const { createKubernetesDiscovery } = await import('../discovery/sources/kubernetes.js');
    const kubernetes = createKubernetesDiscovery(config.k8s!, log, metricsRegistry, options.kubernetes);
    source = kubernetes.pods;
    serviceEndpoints = kubernetes.services;
    services = kubernetesServices(kubernetes.services);
  } else {
    // Mistakes in the flags are reported before any DNS look-up.
    const hosts = options.staticHosts ?? config.staticHosts;
    const cards = staticModelCards(hosts.length, config.staticModels, config.staticOwnedBy);
    const identities = await resolveStaticHosts(hosts);
    source = new StaticSource(identities.map((identity, index) => ({ ...identity, fixedModels: cards[index] })));
    services = staticGroups(identities);
  }
  const running: RunningDiscovery = {
    source,
    services,
    staleSince() {
      const times = [source.staleSince(), serviceEndpoints?.staleSince()].filter((time) => time !== undefined);
      return times.length === 0 ? undefined : new Date(Math.min(...times.map((time) => time.getTime())));
    },
    async stop() {
      await Promise.all([source.stop(), serviceEndpoints?.stop()]);
    },
  };
  source.start(endpoints);
  try {
    await source.synced;
  } catch (err) {
    await running.stop();
    throw err;
  }
  return running;
}

/** Every group named by a `group=` prefix; a group's addresses never change (the list is fixed). */
function staticGroups(identities: readonly EndpointIdentity[]): MappedServices {
  const groups = new Map<string, Set<string>>();
  for (const { group, address } of identities) {
    if (group === undefined) continue;
    const addresses = groups.get(group) ?? new Set();
    addresses.add(address);
    groups.set(group, addresses);
  }
  const known = [...groups.keys()].sort().join(', ') || 'none';
  return {
    kind: 'endpoint group',
    addresses: (name) => groups.get(name),
    follow: async (name) => (groups.has(name) ? undefined : `no --static-hosts entry is in endpoint group "${name}" (groups: ${known})`),
    release() {},
  };
}

/** Services through their EndpointSlices: followed = watched. */
function kubernetesServices(serviceEndpoints: ServiceEndpoints): MappedServices {
  return {
    kind: 'Service',
    addresses: (name) => serviceEndpoints.addresses(name),
    async follow(name) {
      serviceEndpoints.watch(name);
      try {
        await serviceEndpoints.synced(name);
      } catch (err) {
        serviceEndpoints.unwatch(name);
        throw err;
      }
      if (serviceEndpoints.sliceCount(name) !== 0) return undefined;
      return `no Service "${name}" in namespace "${serviceEndpoints.namespace.namespace}" (no EndpointSlice is labelled kubernetes.io/service-name=${name})`;
    },
    release: (name) => serviceEndpoints.unwatch(name),
  };
}
