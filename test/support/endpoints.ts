import type { EndpointIdentity } from '../../src/discovery/endpoint.js';
import type { EndpointRegistry } from '../../src/discovery/registry.js';
import type { RequestOutcome } from '../../src/extproc/types.js';

/** Adds each identity, in order, as a discovery source would. */
export function upsertAll(registry: EndpointRegistry, identities: readonly EndpointIdentity[]): void {
  for (const identity of identities) registry.upsert(identity);
}

/** A routed request the upstream answered well. */
export const OK_OUTCOME: RequestOutcome = { kind: 'response', status: 200 };
