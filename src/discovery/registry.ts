import { ENGINE_LABEL, Endpoint, type EndpointIdentity, MODEL_LABEL, type ModelCard } from './endpoint.js';
import type { EndpointSink } from './types.js';

/** The endpoints serving one model (or one model on one engine), built when the index is. */
export interface CandidateSet {
  kind: 'found';
  all: readonly Endpoint[];
  /** The usable subset (probe passed, not ejected): what the picker chooses from. */
  healthy: readonly Endpoint[];
}

/** Endpoints able to take a request, as the picker sees them. */
export type CandidateLookup =
  | CandidateSet
  /** No endpoint lists the model at all. */
  | { kind: 'unknown_model' }
  /** The model exists, but no endpoint of that engine serves it; `engines` lists who does. */
  | { kind: 'unknown_engine'; engines: string[] };

const SEPARATOR = '\u0000';

/** Told when an address joins or leaves the registry (probers start or stop watching it). */
export interface MembershipListener {
  added?(endpoint: Endpoint): void;
  removed?(endpoint: Endpoint): void;
}

/**
 * The set of known backends and an index from (model) and (model, owned_by) to them.
 * It is the only shared state the request path reads; discovery sources and probers write it.
 */
export class EndpointRegistry implements EndpointSink {
  private readonly endpoints = new Map<string, Endpoint>();
  /**
   * Endpoints removed while requests were still routed to them, by address. Should the address
   * return (a pod flapping NotReady → Ready), the same object comes back, so its in-flight count
   * stays exact; entries go once their requests end (checked on every membership change).
   */
  private readonly departed = new Map<string, Endpoint>();
  private readonly listeners: MembershipListener[] = [];
  private readonly stateListeners: ((endpoint: Endpoint) => void)[] = [];
  private byModel = new Map<string, CandidateSet>();
  /** model → owned_by → endpoints; nested so a lookup never builds a key string. */
  private byModelAndEngine = new Map<string, Map<string, CandidateSet>>();
  /** Every owned_by value some endpoint reports. */
  private engines = new Set<string>();
  /** Set when models, membership or health changed; the index is rebuilt on the next read. */
  private stale = false;

  /** Told when an endpoint's health, ejection or models change (not on every probe that confirms them). */
  onStateChange(listener: (endpoint: Endpoint) => void): void {
    this.stateListeners.push(listener);
  }

  onMembership(listener: MembershipListener): void {
    this.listeners.push(listener);
  }

  /** Adds the endpoint, or updates the labels and fixed models of a known one. */
  upsert(identity: EndpointIdentity): void {
    const known = this.endpoints.get(identity.address);
    if (known) {
      known.labels = identity.labels;
      if (identity.fixedModels !== known.fixedModels) this.setFixedModels(known, identity.fixedModels);
      this.standIn(known);
      return;
    }
    let endpoint = this.departed.get(identity.address);
    if (endpoint) {
      this.departed.delete(identity.address);
      endpoint.labels = identity.labels;
      endpoint.fixedModels = identity.fixedModels;
    } else {
      endpoint = new Endpoint(identity);
    }
    if (endpoint.fixedModels) endpoint.models = endpoint.fixedModels;
    this.standIn(endpoint);
    this.endpoints.set(endpoint.address, endpoint);
    this.stale = true;
    this.sweepDeparted();
    for (const listener of this.listeners) listener.added?.(endpoint);
  }

  /** Takes the endpoint out of every candidate set at once; its state is forgotten. */
  remove(address: string): void {
    const endpoint = this.endpoints.get(address);
    if (!endpoint) return;
    this.endpoints.delete(address);
    endpoint.forgetState();
    if (endpoint.inFlight > 0) this.departed.set(address, endpoint);
    this.stale = true;
    this.sweepDeparted();
    for (const listener of this.listeners) listener.removed?.(endpoint);
  }

  /** Removed endpoints still counted here (their requests have not ended): for tests and the status page. */
  get departedCount(): number {
    return this.departed.size;
  }

  get(address: string): Endpoint | undefined {
    return this.endpoints.get(address);
  }

  all(): Endpoint[] {
    return [...this.endpoints.values()];
  }

  /** Records what a probe learned; ignored for an endpoint removed meanwhile. */
  update(endpoint: Endpoint, change: { models?: readonly ModelCard[]; healthy?: boolean; error?: string }): void {
    if (this.endpoints.get(endpoint.address) !== endpoint) return;
    let changed = false;
    if (change.models) {
      if (!sameModels(endpoint.models, change.models)) changed = true;
      endpoint.models = change.models;
    }
    if (change.healthy !== undefined && change.healthy !== endpoint.healthy) {
      endpoint.healthy = change.healthy;
      changed = true;
    }
    if (change.healthy) {
      endpoint.lastSeen = new Date();
      endpoint.lastError = undefined;
    } else if (change.error !== undefined) {
      endpoint.lastError = change.error;
    }
    if (changed) this.stateChanged(endpoint);
  }

  /** Passive ejection of `endpoint` started or ended: the usable subsets change. */
  usabilityChanged(endpoint: Endpoint): void {
    this.stateChanged(endpoint);
  }

  private stateChanged(endpoint: Endpoint): void {
    this.stale = true;
    for (const listener of this.stateListeners) listener(endpoint);
  }

  /** Endpoints serving `model` (of engine `ownedBy` when given), all and healthy. */
  lookup(model: string, ownedBy: string | undefined): CandidateLookup {
    if (this.stale) this.reindex();
    const anyEngine = this.byModel.get(model);
    if (!anyEngine) return UNKNOWN_MODEL;
    if (ownedBy === undefined) return anyEngine;
    return this.byModelAndEngine.get(model)?.get(ownedBy) ?? { kind: 'unknown_engine', engines: enginesOf(anyEngine.all, model) };
  }

  /** Whether any endpoint reports this engine (bounds metric labels taken from requests). */
  hasEngine(ownedBy: string): boolean {
    if (this.stale) this.reindex();
    return this.engines.has(ownedBy);
  }

  /** Every (model, owned_by) pair served, one card each, for the aggregated `/v1/models`. */
  modelCards(): ModelCard[] {
    const cards = new Map<string, ModelCard>();
    for (const endpoint of this.endpoints.values()) {
      for (const card of endpoint.models) {
        const key = card.id + SEPARATOR + card.owned_by;
        if (!cards.has(key)) cards.set(key, card);
      }
    }
    return [...cards.values()].sort((a, b) => a.id.localeCompare(b.id) || a.owned_by.localeCompare(b.owned_by));
  }

  private setFixedModels(endpoint: Endpoint, models: readonly ModelCard[] | undefined): void {
    endpoint.fixedModels = models;
    if (models) endpoint.models = models;
    this.stale = true;
  }

  /** Before the first probe answers, the pod labels llm-d.ai/model and llm-d.ai/engine-type say what it serves. */
  private standIn(endpoint: Endpoint): void {
    if (endpoint.lastSeen !== undefined || endpoint.fixedModels) return;
    const model = endpoint.labels[MODEL_LABEL];
    const models = model ? [labelCard(model, endpoint.labels[ENGINE_LABEL] || 'vllm')] : [];
    if (!sameModels(endpoint.models, models)) {
      endpoint.models = models;
      this.stale = true;
    }
  }

  private sweepDeparted(): void {
    for (const [address, endpoint] of this.departed) if (endpoint.inFlight === 0) this.departed.delete(address);
  }

  private reindex(): void {
    const byModel = new Map<string, CandidateSet>();
    const byModelAndEngine = new Map<string, Map<string, CandidateSet>>();
    const engineNames = new Set<string>();
    for (const endpoint of this.endpoints.values()) {
      for (const card of endpoint.models) {
        engineNames.add(card.owned_by);
        addTo(byModel, card.id, endpoint);
        let engines = byModelAndEngine.get(card.id);
        if (!engines) {
          engines = new Map();
          byModelAndEngine.set(card.id, engines);
        }
        addTo(engines, card.owned_by, endpoint);
      }
    }
    this.byModel = byModel;
    this.byModelAndEngine = byModelAndEngine;
    this.engines = engineNames;
    this.stale = false;
  }
}

const UNKNOWN_MODEL: CandidateLookup = { kind: 'unknown_model' };

function addTo(index: Map<string, CandidateSet>, key: string, endpoint: Endpoint): void {
  let set = index.get(key);
  if (!set) {
    set = { kind: 'found', all: [], healthy: [] };
    index.set(key, set);
  }
  const all = set.all as Endpoint[];
  // An endpoint's cards are visited together, so a repeat can only be the last entry.
  if (all[all.length - 1] === endpoint) return;
  all.push(endpoint);
  if (endpoint.usable) (set.healthy as Endpoint[]).push(endpoint);
}

function labelCard(model: string, engine: string): ModelCard {
  return { id: model, object: 'model', created: 0, owned_by: engine, root: null, parent: null };
}

function sameModels(a: readonly ModelCard[], b: readonly ModelCard[]): boolean {
  return a.length === b.length && a.every((card, i) => card.id === b[i]!.id && card.owned_by === b[i]!.owned_by);
}

function enginesOf(endpoints: readonly Endpoint[], model: string): string[] {
  const engines = new Set<string>();
  for (const endpoint of endpoints) {
    for (const card of endpoint.models) if (card.id === model) engines.add(card.owned_by);
  }
  return [...engines].sort();
}
