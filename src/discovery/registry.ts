import { Endpoint, type EndpointIdentity, type ModelCard } from './endpoint.js';

/** Endpoints able to take a request, as the picker sees them. */
export type CandidateLookup =
  | { kind: 'found'; candidates: readonly Endpoint[] }
  /** No endpoint lists the model at all. */
  | { kind: 'unknown_model' }
  /** The model exists, but no endpoint of that engine serves it; `engines` lists who does. */
  | { kind: 'unknown_engine'; engines: string[] };

const SEPARATOR = '\u0000';

/**
 * The set of known backends and an index from (model) and (model, owned_by) to them.
 * It is the only shared state the request path reads; discovery sources and probers write it.
 */
export class EndpointRegistry {
  private readonly endpoints = new Map<string, Endpoint>();
  private byModel = new Map<string, Endpoint[]>();
  private byModelAndEngine = new Map<string, Endpoint[]>();
  /** Set when models or membership changed; the index is rebuilt on the next read. */
  private stale = false;

  /** Makes the registry hold exactly these identities, keeping existing Endpoint objects. */
  replaceAll(identities: readonly EndpointIdentity[]): void {
    const wanted = new Map(identities.map((identity) => [identity.address, identity]));
    for (const address of this.endpoints.keys()) {
      if (!wanted.has(address)) this.endpoints.delete(address);
    }
    for (const identity of wanted.values()) {
      const existing = this.endpoints.get(identity.address);
      if (existing) existing.labels = identity.labels;
      else this.endpoints.set(identity.address, new Endpoint(identity));
    }
    this.stale = true;
  }

  get(address: string): Endpoint | undefined {
    return this.endpoints.get(address);
  }

  all(): Endpoint[] {
    return [...this.endpoints.values()];
  }

  /** Records what a probe learned. */
  update(address: string, change: { models?: readonly ModelCard[]; healthy?: boolean; error?: string }): void {
    const endpoint = this.endpoints.get(address);
    if (!endpoint) return;
    if (change.models) {
      if (!sameModels(endpoint.models, change.models)) this.stale = true;
      endpoint.models = change.models;
    }
    if (change.healthy !== undefined) endpoint.healthy = change.healthy;
    if (change.healthy) {
      endpoint.lastSeen = new Date();
      endpoint.lastError = undefined;
    } else if (change.error !== undefined) {
      endpoint.lastError = change.error;
    }
  }

  /** Endpoints serving `model` (of engine `ownedBy` when given), healthy or not. */
  lookup(model: string, ownedBy: string | undefined): CandidateLookup {
    if (this.stale) this.reindex();
    if (ownedBy === undefined) {
      const candidates = this.byModel.get(model);
      return candidates ? { kind: 'found', candidates } : { kind: 'unknown_model' };
    }
    const candidates = this.byModelAndEngine.get(model + SEPARATOR + ownedBy);
    if (candidates) return { kind: 'found', candidates };
    const anyEngine = this.byModel.get(model);
    if (!anyEngine) return { kind: 'unknown_model' };
    return { kind: 'unknown_engine', engines: enginesOf(anyEngine, model) };
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

  private reindex(): void {
    const byModel = new Map<string, Endpoint[]>();
    const byModelAndEngine = new Map<string, Endpoint[]>();
    const add = (index: Map<string, Endpoint[]>, key: string, endpoint: Endpoint) => {
      const list = index.get(key);
      if (!list) index.set(key, [endpoint]);
      // An endpoint's cards are visited together, so a repeat can only be the last entry.
      else if (list[list.length - 1] !== endpoint) list.push(endpoint);
    };
    for (const endpoint of this.endpoints.values()) {
      for (const card of endpoint.models) {
        add(byModel, card.id, endpoint);
        add(byModelAndEngine, card.id + SEPARATOR + card.owned_by, endpoint);
      }
    }
    this.byModel = byModel;
    this.byModelAndEngine = byModelAndEngine;
    this.stale = false;
  }
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
