import { EndpointHealth } from './health/state.js';
import type { EngineLoad } from './load/types.js';

/** One model as a backend's `/v1/models` lists it (seed 003's shape). */
export interface ModelCard {
  id: string;
  object: 'model';
  created: number;
  owned_by: string;
  root: string | null;
  parent: string | null;
  max_model_len?: number;
}

/** Where a backend came from and how it is known to operators. */
export interface EndpointIdentity {
  /** `ip:port`, exactly what Envoy's ORIGINAL_DST cluster parses. */
  address: string;
  /** Pod name, or the configured host for static backends. */
  name: string;
  namespace: string;
  labels: Record<string, string>;
  /**
   * The endpoint group it belongs to, which admin mappings and `/admin/discover` name: the
   * `group=` prefix of its --static-hosts entry, or its pod's workload (Deployment, StatefulSet, ...).
   */
  group?: string;
  /** Models given by configuration (--static-models): the endpoint is then probed with /health only. */
  fixedModels?: readonly ModelCard[];
}

/** Pod labels that stand in for `/v1/models` until the first probe answers (llm-d's names). */
export const MODEL_LABEL = 'llm-d.ai/model';
export const ENGINE_LABEL = 'llm-d.ai/engine-type';

/**
 * A backend pod. Objects are kept for the life of the address so the in-flight count, which the
 * picker reads on every request, never needs a map lookup.
 */
export class Endpoint {
  readonly address: string;
  readonly name: string;
  readonly namespace: string;
  labels: Record<string, string>;
  /** See EndpointIdentity.group; undefined = in no group. */
  readonly group: string | undefined;
  /** When the object was made (Date.now()): the admin API shows the endpoint's age. */
  readonly discoveredAt = Date.now();
  /** See EndpointIdentity.fixedModels. */
  fixedModels: readonly ModelCard[] | undefined;
  /** Models served, as last learned from `/v1/models` or given statically. */
  models: readonly ModelCard[] = [];
  /** The active probe's verdict (`/health`): false until the first success. */
  healthy = false;
  /** Failure counts and passive ejection; dropped with the endpoint. */
  readonly health = new EndpointHealth();
  /** The engine's own figures from its `/metrics`; undefined until a scrape succeeds or after one fails. */
  load: EngineLoad | undefined;
  /** The picker may choose it: the probe says healthy and failed requests have not ejected it. */
  get usable(): boolean {
    return this.healthy && !this.health.ejected;
  }
  /** Requests routed here whose ext_proc stream has not ended yet. */
  inFlight = 0;
  /** When the last probe answered, or undefined before the first. */
  lastSeen: Date | undefined;
  /** Why the last probe failed, for operators. */
  lastError: string | undefined;
  /** The address as raw_value bytes, built once. */
  readonly addressBytes: Buffer;

  constructor(identity: EndpointIdentity) {
    this.address = identity.address;
    this.name = identity.name;
    this.namespace = identity.namespace;
    this.labels = identity.labels;
    this.group = identity.group;
    this.fixedModels = identity.fixedModels;
    this.addressBytes = Buffer.from(identity.address);
  }

  /** Back to a stranger: what was learned about the address before it left is not trusted on return. */
  forgetState(): void {
    this.healthy = false;
    this.models = [];
    this.load = undefined;
    this.lastSeen = undefined;
    this.lastError = undefined;
    this.health.reset();
  }

  get baseUrl(): string {
    const colon = this.address.lastIndexOf(':');
    const host = this.address.slice(0, colon);
    return `http://${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}${this.address.slice(colon)}`;
  }
}
