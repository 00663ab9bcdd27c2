import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { KubernetesDiscoveryConfig } from '../../config/config.js';
import { type KubeConnection, loadKubeConnection } from './kube-client.js';
import { KubernetesPodSource, type KubernetesSourceOptions } from './kubernetes-pods.js';
import { ServiceEndpoints } from './kubernetes-services.js';

export type { KubernetesSourceOptions } from './kubernetes-pods.js';
export { KubernetesPodSource } from './kubernetes-pods.js';
export { ServiceEndpoints, type ServiceLookup, serviceNameProblem } from './kubernetes-services.js';

/** Kubernetes discovery: the backend pods (a DiscoverySource) and the Service resolver, sharing one client configuration. */
export interface KubernetesDiscovery {
  pods: KubernetesPodSource;
  services: ServiceEndpoints;
}

/**
 * Both Kubernetes parts for `--service-discovery=k8s`. Never throws: a missing or unusable kube
 * config rejects `pods.synced` (and each `services.synced(name)`) with its ConfigError.
 */
export function createKubernetesDiscovery(
  config: KubernetesDiscoveryConfig,
  log: Logger,
  registry: Registry,
  options: KubernetesSourceOptions = {},
): KubernetesDiscovery {
  let connection: KubeConnection | undefined = options.connection;
  try {
    connection ??= loadKubeConnection(options.kubeConfig, options.environment);
  } catch {
    // Each part finds the same problem and reports it through its synced promise.
  }
  const shared = { ...options, connection };
  return { pods: new KubernetesPodSource(config, log, registry, shared), services: new ServiceEndpoints(config, log, registry, shared) };
}
