import type { EndpointIdentity } from './endpoint.js';

/**
 * Where a discovery source writes what it sees. Calls arrive in the order the source saw the
 * changes; `upsert` of a known address updates it, `remove` of an unknown one is ignored.
 */
export interface EndpointSink {
  upsert(identity: EndpointIdentity): void;
  remove(address: string): void;
}

/**
 * A way of finding backends (a static list, Kubernetes pods, a Service's EndpointSlices). Each
 * source owns the addresses it upserts; the registry holds the union.
 */
export interface DiscoverySource {
  /** For logs and `/ready`: `static`, `k8s pods`, ... */
  readonly name: string;
  /** Begins feeding `sink`; never throws for a remote failure (it retries and reports staleness). */
  start(sink: EndpointSink): void;
  /** Resolves once the first complete picture is in the sink (the first list, for Kubernetes). */
  readonly synced: Promise<void>;
  /** When the source lost contact (its picture may be out of date since then); undefined while current. */
  staleSince(): Date | undefined;
  /** Stops watching; the endpoints already upserted stay in the sink. */
  stop(): Promise<void>;
}
