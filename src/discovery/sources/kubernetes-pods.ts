import { CoreV1Api, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { KubernetesDiscoveryConfig } from '../../config/config.js';
import { joinHostPort } from '../../net-address.js';
import type { EndpointIdentity } from '../endpoint.js';
import type { DiscoverySource, EndpointSink } from '../types.js';
import { type KubeConnection, type KubeEnvironment, kubeMetrics, loadKubeConnection, type ResolvedNamespace, resolveNamespace } from './kube-client.js';
import { type BackoffOptions, type Named, ResilientInformer } from './kube-informer.js';

/** Shared by the Kubernetes sources' constructors; everything has a production default. */
export interface KubernetesSourceOptions {
  /** Use this client configuration instead of finding one (tests; a caller that built one). */
  kubeConfig?: KubeConfig;
  /** Where configuration is looked for (tests); the real environment by default. */
  environment?: KubeEnvironment;
  /** Retry delays after a failed list or watch (default 0.5 s doubling to 30 s, jittered). */
  backoff?: BackoffOptions;
  /** How long transient failures of the first list are retried before `synced` rejects (default 10 s). */
  startupDeadlineMs?: number;
  /** Each list request is aborted after this long (default 30 s). */
  listTimeoutMs?: number;
  /** A connection loadKubeConnection already made (createKubernetesDiscovery shares one); wins over kubeConfig. */
  connection?: KubeConnection;
}

/** What a pod is to the registry: an endpoint, or the reason it is not one. */
type Verdict = { address: string; identity: EndpointIdentity } | { reason: string };

/**
 * Backend pods of one namespace, chosen by label selector: each pod that is Ready, not terminating
 * and has an IP is the endpoint `<podIP>:<port>` (the configured port, or the pod's container port
 * of the configured name). List + watch (an informer), never polling; see ResilientInformer for how
 * the watch survives API server restarts, dropped connections and 410 Gone.
 */
export class KubernetesPodSource implements DiscoverySource {
  readonly name = 'k8s pods';
  /**
   * Resolves once the first complete pod list is in the sink and a watch from it was accepted.
   * Rejects with a one-line ConfigError when that cannot be done (no kube config; API server
   * unreachable after ~10 s of retries; 401; 403; bad label selector; 404); the source has then stopped.
   */
  readonly synced: Promise<void>;
  /** The namespace watched and why that one (flag, service account, default). */
  readonly namespace: ResolvedNamespace;

  private readonly informer: ResilientInformer<V1Pod> | undefined;
  private readonly setupError: Error | undefined;
  private sink: EndpointSink | undefined;
  /** Pod name → the address it is in the sink as. */
  private readonly addresses = new Map<string, string>();
  /** Address → the pod it is in the sink for (a newer pod may take over an address). */
  private readonly owners = new Map<string, string>();
  /** Pods already logged as lacking the named port (once per pod, until it has it or goes). */
  private readonly lackingPort = new Set<string>();

  constructor(
    private readonly config: KubernetesDiscoveryConfig,
    private readonly log: Logger,
    registry: Registry,
    options: KubernetesSourceOptions = {},
  ) {
    this.namespace = resolveNamespace(config.namespace, options.environment);
    let informer: ResilientInformer<V1Pod> | undefined;
    try {
      const kube = options.connection ?? loadKubeConnection(options.kubeConfig, options.environment);
      const core = kube.kubeConfig.makeApiClient(CoreV1Api);
      const namespace = this.namespace.namespace;
      const labelSelector = config.labelSelector;
      informer = new ResilientInformer<V1Pod>(
        kube,
        {
          resource: 'pods',
          group: '',
          kind: 'Pod',
          path: `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods`,
          namespace: this.namespace,
          labelSelector,
          list: (requestOptions) => core.listNamespacedPod({ namespace, labelSelector: labelSelector || undefined }, requestOptions),
        },
        {
          upsert: (pod) => this.podChanged(pod),
          remove: (pod, relist) => this.podGone(pod, relist ? 'pod gone (deleted while not watching)' : 'pod deleted or no longer selected'),
        },
        log,
        kubeMetrics(registry),
        options,
      );
    } catch (err) {
      this.setupError = err as Error;
    }
    this.informer = informer;
    this.synced = informer ? informer.synced : Promise.reject(this.setupError);
    this.synced.catch(() => this.stop());
  }

  start(sink: EndpointSink): void {
    if (this.sink) return;
    this.sink = sink;
    const { namespace, origin } = this.namespace;
    this.log.info({ namespace, namespaceFrom: origin, labelSelector: this.config.labelSelector, port: this.config.port }, 'watching backend pods');
    this.informer?.start();
    this.synced.then(
      () => {
        if (this.addresses.size === 0) {
          this.log.warn(
            { namespace, labelSelector: this.config.labelSelector },
            'no ready pod matches the label selector yet (a namespace that does not exist also lists as empty)',
          );
        }
      },
      () => {},
    );
  }

  staleSince(): Date | undefined {
    return this.informer?.staleSince();
  }

  async stop(): Promise<void> {
    await this.informer?.stop();
  }

  private podChanged(pod: Named<V1Pod>): void {
    const name = pod.metadata.name;
    const verdict = this.verdict(pod);
    const current = this.addresses.get(name);
    if ('reason' in verdict) {
      if (current !== undefined) this.leave(name, current, verdict.reason);
      return;
    }
    if (current !== undefined && current !== verdict.address) this.leave(name, current, `pod address changed to ${verdict.address}`);
    const owner = this.owners.get(verdict.address);
    if (owner !== undefined && owner !== name) {
      // The old pod no longer holds it: its leaving later must not take the address from the new one.
      this.log.warn({ endpoint: verdict.address, pod: name, previousPod: owner }, 'two pods claim one address; the newer claim wins');
      this.addresses.delete(owner);
    }
    this.addresses.set(name, verdict.address);
    this.owners.set(verdict.address, name);
    this.sink?.upsert(verdict.identity);
    if (current !== verdict.address) {
      this.log.info(
        { endpoint: verdict.address, pod: name, reason: current === undefined ? 'pod ready' : `pod address changed from ${current}` },
        'endpoint joined',
      );
    }
  }

  private podGone(pod: Named<V1Pod>, reason: string): void {
    const name = pod.metadata.name;
    this.lackingPort.delete(name);
    const current = this.addresses.get(name);
    if (current !== undefined) this.leave(name, current, reason);
  }

  private leave(name: string, address: string, reason: string): void {
    this.addresses.delete(name);
    this.owners.delete(address);
    this.sink?.remove(address);
    this.log.info({ endpoint: address, pod: name, reason }, 'endpoint left');
  }

  private verdict(pod: Named<V1Pod>): Verdict {
    const { metadata, status } = pod;
    if (metadata.deletionTimestamp) return { reason: 'pod terminating' };
    if (!status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')) return { reason: 'pod not ready' };
    const ip = status.podIP;
    if (!ip) return { reason: 'pod has no IP' };
    const port = this.portOf(pod);
    if (port === undefined) return { reason: `pod has no container port named "${(this.config.port as { name: string }).name}"` };
    const address = joinHostPort(ip, port);
    const labels = { ...(metadata.labels ?? {}) };
    return { address, identity: { address, name: metadata.name, namespace: this.namespace.namespace, labels, group: workloadName(pod) } };
  }

  private portOf(pod: Named<V1Pod>): number | undefined {
    const { port } = this.config;
    if ('number' in port) return port.number;
    const containers = [...(pod.spec?.containers ?? []), ...(pod.spec?.initContainers ?? [])];
    for (const container of containers) {
      for (const p of container.ports ?? []) {
        if (p.name === port.name && typeof p.containerPort === 'number') {
          this.lackingPort.delete(pod.metadata.name);
          return p.containerPort;
        }
      }
    }
    const name = pod.metadata.name;
    if (!this.lackingPort.has(name)) {
      this.lackingPort.add(name);
      this.log.warn({ pod: name, portName: port.name }, `pod has no container port named "${port.name}"; skipped until it has`);
    }
    return undefined;
  }
}

/**
 * The pod's workload, its endpoint group: a ReplicaSet owner's name without the pod-template-hash
 * suffix (the Deployment's name), else the (controller) owner's name (StatefulSet, LeaderWorkerSet,
 * ...), else the pod's own name.
 */
export function workloadName(pod: Named<V1Pod>): string {
  const owners = pod.metadata.ownerReferences ?? [];
  const owner = owners.find((reference) => reference.controller) ?? owners[0];
  if (!owner) return pod.metadata.name;
  const hash = pod.metadata.labels?.['pod-template-hash'];
  if (owner.kind === 'ReplicaSet' && hash && owner.name.endsWith(`-${hash}`)) return owner.name.slice(0, -hash.length - 1);
  return owner.name;
}
