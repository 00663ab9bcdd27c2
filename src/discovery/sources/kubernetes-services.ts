import { DiscoveryV1Api, type V1EndpointSlice } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { KubernetesDiscoveryConfig } from '../../config/config.js';
import type { ConfigError } from '../../config/errors.js';
import { joinHostPort } from '../../net-address.js';
import { DNS_1035_LABEL } from '../names.js';
import {
  classifyFailure,
  type KubeConnection,
  type KubeMetrics,
  kubeMetrics,
  loadKubeConnection,
  type ResolvedNamespace,
  resolveNamespace,
  withSignal,
} from './kube-client.js';
import { type InformerOptions, type Named, ResilientInformer } from './kube-informer.js';
import type { KubernetesSourceOptions } from './kubernetes-pods.js';

/** The label the EndpointSlice controller puts on each slice: the name of its Service. */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

/** What is known of a Service's endpoints. */
export type ServiceLookup =
  /** The ready endpoints as `ip:port` (the same object until they change; may be empty). */
  | { kind: 'known'; addresses: ReadonlySet<string> }
  /** Nothing is known yet, or cannot be: `reason` says why, for logs and error answers. */
  | { kind: 'unknown'; reason: string };

/** Why `name` cannot be a Service name (a DNS-1035 label), or undefined when it can. */
export function serviceNameProblem(name: string): string | undefined {
  return DNS_1035_LABEL.test(name) ? undefined : `"${name}" is not a Service name: at most 63 lower-case letters, digits and "-", starting with a letter`;
}

interface WatchedService {
  readonly name: string;
  refs: number;
  informer: ResilientInformer<V1EndpointSlice> | undefined;
  /** Slice name → its ready addresses. */
  readonly slices: Map<string, ReadonlySet<string>>;
  /** A complete list has been applied: the union of the slices is the answer. */
  listed: boolean;
  answer: ServiceLookup;
  readonly synced: Promise<void>;
  resolve(): void;
  reject(err: Error): void;
  /** Slices already logged for a problem (no usable port, unsupported address type). */
  readonly logged: Set<string>;
}

const UNAVAILABLE =
  'the API server does not serve discovery.k8s.io/v1 (Kubernetes before 1.21), so the endpoints of Services are unknown; pod discovery is unaffected';

/**
 * The ready endpoints of Kubernetes Services, from their EndpointSlices (discovery.k8s.io/v1,
 * label kubernetes.io/service-name). Only Services something asked for are watched: `watch(name)`
 * starts a list + watch of that Service's slices, `unwatch(name)` ends it (counted: each watch
 * needs its unwatch). A route pinned to a Service narrows its candidates to `addresses(name)`,
 * which are `ip:port` like the pod source's, so the two can be intersected: the port is the slice
 * port matching the configured port (number, or name), else the slice's only port.
 *
 * An endpoint is ready unless `conditions.ready` is false or it is terminating. An API server
 * without discovery.k8s.io/v1 is logged once; lookups then answer unknown, saying so.
 */
export class ServiceEndpoints {
  readonly namespace: ResolvedNamespace;
  private readonly services = new Map<string, WatchedService>();
  private readonly listeners = new Set<(serviceName: string) => void>();
  private readonly connection: KubeConnection | undefined;
  private readonly setupError: ConfigError | undefined;
  private readonly discovery: DiscoveryV1Api | undefined;
  private readonly metrics: KubeMetrics;
  private readonly informerOptions: InformerOptions;
  private apiCheck: Promise<boolean> | undefined;
  private stopped = false;

  constructor(
    private readonly config: KubernetesDiscoveryConfig,
    private readonly log: Logger,
    registry: Registry,
    options: KubernetesSourceOptions = {},
  ) {
    this.namespace = resolveNamespace(config.namespace, options.environment);
    this.metrics = kubeMetrics(registry);
    this.informerOptions = options;
    try {
      this.connection = options.connection ?? loadKubeConnection(options.kubeConfig, options.environment);
      this.discovery = this.connection.kubeConfig.makeApiClient(DiscoveryV1Api);
    } catch (err) {
      this.setupError = err as ConfigError;
    }
  }

  /** Starts watching the Service's EndpointSlices (once per name; counted). Throws for a name no Service can have. */
  watch(serviceName: string): void {
    const problem = serviceNameProblem(serviceName);
    if (problem) throw new Error(problem);
    const known = this.services.get(serviceName);
    if (known) {
      known.refs += 1;
      return;
    }
    let resolve!: () => void;
    let reject!: (err: Error) => void;
    const synced = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    synced.catch(() => {});
    const service: WatchedService = {
      name: serviceName,
      refs: 1,
      informer: undefined,
      slices: new Map(),
      listed: false,
      answer: { kind: 'unknown', reason: `the EndpointSlices of Service "${serviceName}" have not been listed yet` },
      synced,
      resolve,
      reject,
      logged: new Set(),
    };
    this.services.set(serviceName, service);
    if (this.stopped) {
      service.answer = { kind: 'unknown', reason: 'Service endpoints are no longer watched (stopped)' };
      service.resolve();
      return;
    }
    if (this.setupError) {
      service.answer = { kind: 'unknown', reason: this.setupError.line };
      service.reject(this.setupError);
      return;
    }
    void this.apiAvailable().then((available) => {
      if (this.services.get(serviceName) !== service || this.stopped) return;
      if (available) this.startInformer(service);
      else {
        service.answer = { kind: 'unknown', reason: UNAVAILABLE };
        service.resolve();
        this.changed(serviceName);
      }
    });
  }

  /** Ends one watch of the Service; the last one stops watching and forgets its endpoints. */
  unwatch(serviceName: string): void {
    const service = this.services.get(serviceName);
    if (!service) return;
    service.refs -= 1;
    if (service.refs > 0) return;
    this.services.delete(serviceName);
    void service.informer?.stop();
    service.resolve();
    this.changed(serviceName);
  }

  /** What is known of the Service's ready endpoints, allocation-free. */
  lookup(serviceName: string): ServiceLookup {
    return this.services.get(serviceName)?.answer ?? { kind: 'unknown', reason: `Service "${serviceName}" is not watched` };
  }

  /** The Service's ready endpoints as `ip:port`; undefined while unknown (lookup() says why). */
  addresses(serviceName: string): ReadonlySet<string> | undefined {
    const answer = this.lookup(serviceName);
    return answer.kind === 'known' ? answer.addresses : undefined;
  }

  /**
   * How many EndpointSlices the Service has, once a complete list is in (undefined before, and when
   * unwatched). The EndpointSlice controller writes at least one, empty or not, for every Service
   * with a selector: 0 means no such Service (or one without a selector).
   */
  sliceCount(serviceName: string): number | undefined {
    const service = this.services.get(serviceName);
    return service?.listed ? service.slices.size : undefined;
  }

  /**
   * Resolves once the Service's first list is in (or it is clear none can be: no
   * discovery.k8s.io/v1); rejects with a one-line ConfigError when the list cannot be done, as the
   * pod source's `synced` does (it keeps retrying; lookup() says what failed until it works).
   */
  synced(serviceName: string): Promise<void> {
    const service = this.services.get(serviceName);
    return service ? service.synced : Promise.reject(new Error(`Service "${serviceName}" is not watched`));
  }

  /** Called with the Service's name whenever its lookup answer changes. Returns the unsubscribe. */
  onChange(listener: (serviceName: string) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The earliest time a watched Service's informer lost contact; undefined while all are current. */
  staleSince(): Date | undefined {
    let earliest: Date | undefined;
    for (const service of this.services.values()) {
      const since = service.informer?.staleSince();
      if (since && (!earliest || since < earliest)) earliest = since;
    }
    return earliest;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all([...this.services.values()].map((service) => service.informer?.stop()));
  }

  /** Whether discovery.k8s.io/v1 is served: asked once. Only a 404 says no; any other failure lets the lists speak for themselves. */
  private apiAvailable(): Promise<boolean> {
    this.apiCheck ??= this.discovery!.getAPIResources({}, withSignal(AbortSignal.timeout(this.informerOptions.listTimeoutMs ?? 30_000))).then(
      (list) => {
        if (list.resources?.some((r) => r.name === 'endpointslices')) return true;
        this.log.warn({ server: this.connection!.server }, `discovery.k8s.io/v1 lists no endpointslices: ${UNAVAILABLE}`);
        return false;
      },
      (err: unknown) => {
        const failure = classifyFailure(err);
        if (failure.kind === 'not_found') {
          this.log.warn({ server: this.connection!.server }, UNAVAILABLE);
          return false;
        }
        this.log.debug({ error: failure.detail }, 'could not ask whether discovery.k8s.io/v1 is served; assuming it is');
        return true;
      },
    );
    return this.apiCheck;
  }

  private startInformer(service: WatchedService): void {
    const discovery = this.discovery!;
    const namespace = this.namespace.namespace;
    const labelSelector = `${SERVICE_NAME_LABEL}=${service.name}`;
    const informer = new ResilientInformer<V1EndpointSlice>(
      this.connection!,
      {
        resource: 'endpointslices',
        group: 'discovery.k8s.io',
        kind: 'EndpointSlice',
        path: `/apis/discovery.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/endpointslices`,
        namespace: this.namespace,
        labelSelector,
        list: (requestOptions) => discovery.listNamespacedEndpointSlice({ namespace, labelSelector }, requestOptions),
      },
      {
        upsert: (slice) => {
          service.slices.set(slice.metadata.name, this.sliceAddresses(service, slice));
          this.publish(service);
        },
        remove: (slice) => {
          service.slices.delete(slice.metadata.name);
          service.logged.delete(slice.metadata.name);
          this.publish(service);
        },
        listed: () => {
          service.listed = true;
          this.publish(service);
        },
      },
      this.log.child({ service: service.name }),
      this.metrics,
      this.informerOptions,
    );
    service.informer = informer;
    informer.synced.then(
      () => service.resolve(),
      (err: ConfigError) => {
        if (!service.listed) {
          service.answer = { kind: 'unknown', reason: err.line };
          this.changed(service.name);
        }
        service.reject(err);
      },
    );
    informer.start();
  }

  /** The slice's ready endpoints as `ip:port`. */
  private sliceAddresses(service: WatchedService, slice: Named<V1EndpointSlice>): ReadonlySet<string> {
    const addresses = new Set<string>();
    const sliceName = slice.metadata.name;
    if (slice.addressType !== 'IPv4' && slice.addressType !== 'IPv6') {
      this.logOnce(service, sliceName, `EndpointSlice "${sliceName}" has addressType ${slice.addressType}; only IPv4 and IPv6 are used`);
      return addresses;
    }
    const port = this.slicePort(slice);
    if (typeof port === 'string') {
      this.logOnce(service, sliceName, `EndpointSlice "${sliceName}" skipped: ${port}`);
      return addresses;
    }
    service.logged.delete(sliceName);
    for (const endpoint of slice.endpoints ?? []) {
      if (endpoint.conditions?.ready === false || endpoint.conditions?.terminating === true) continue;
      for (const ip of endpoint.addresses ?? []) addresses.add(joinHostPort(ip, port));
    }
    return addresses;
  }

  /** The slice port that matches the configured port, else its only one; a string says why none. */
  private slicePort(slice: V1EndpointSlice): number | string {
    const wanted = this.config.port;
    const ports = (slice.ports ?? []).filter((p) => typeof p.port === 'number');
    const match = ports.find((p) => ('number' in wanted ? p.port === wanted.number : p.name === wanted.name));
    if (match) return match.port!;
    if (ports.length === 1) return ports[0]!.port!;
    // No ports at all means "all ports" (a Service without ports): only a port number can be used then.
    if (ports.length === 0 && (slice.ports ?? []).length === 0 && 'number' in wanted) return wanted.number;
    const given = 'number' in wanted ? `--k8s-port ${wanted.number}` : `--k8s-port-name ${wanted.name}`;
    const listed = ports.map((p) => `${p.name || '(unnamed)'}:${p.port}`).join(', ') || 'none';
    return `no port matches ${given} (ports: ${listed})`;
  }

  private logOnce(service: WatchedService, sliceName: string, message: string): void {
    if (service.logged.has(sliceName)) return;
    service.logged.add(sliceName);
    this.log.warn({ service: service.name, slice: sliceName }, message);
  }

  /** Publishes the union of the slices once a list is complete; tells listeners when it changed. */
  private publish(service: WatchedService): void {
    if (!service.listed) return;
    const union = new Set<string>();
    for (const addresses of service.slices.values()) for (const address of addresses) union.add(address);
    const previous = service.answer;
    if (previous.kind === 'known' && sameSet(previous.addresses, union)) return;
    service.answer = { kind: 'known', addresses: union };
    this.changed(service.name);
  }

  private changed(serviceName: string): void {
    for (const listener of this.listeners) {
      try {
        listener(serviceName);
      } catch (err) {
        this.log.error({ err, service: serviceName }, 'a Service endpoints listener failed');
      }
    }
  }
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  if (a.size !== b.size) return false;
  for (const item of a) if (!b.has(item)) return false;
  return true;
}
