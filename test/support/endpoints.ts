import { Endpoint, type EndpointIdentity, type ModelCard } from '../../src/discovery/endpoint.js';
import type { EndpointRegistry } from '../../src/discovery/registry.js';
import type { RequestOutcome } from '../../src/extproc/types.js';
import type { Lease } from '../../src/scheduling/ledger.js';
import type { Picker } from '../../src/scheduling/pickers.js';
import type { Chain } from '../../src/scheduling/scheduler.js';
import type { ScheduleResult } from '../../src/scheduling/types.js';

/** Adds each identity, in order, as a discovery source would. */
export function upsertAll(registry: EndpointRegistry, identities: readonly EndpointIdentity[]): void {
  for (const identity of identities) registry.upsert(identity);
}

/** A routed request the upstream answered well. */
export const OK_OUTCOME: RequestOutcome = { kind: 'response', status: 200 };

/** A chain of the picker alone, as the --routing-logic presets are. */
export function pickerOnly(picker: Picker): Chain {
  return { filters: [], scorers: [], picker };
}

/** The lease of a synchronous pick; throws (naming the result) for anything else. */
export function leaseOf(result: ScheduleResult | Promise<ScheduleResult>): Lease {
  if (result instanceof Promise) throw new Error('expected a synchronous schedule result');
  if (result.kind !== 'picked') throw new Error(`expected a pick, got ${JSON.stringify(result)}`);
  return result.lease;
}

/** `count` healthy endpoints pod-0, pod-1, ... at 10.0.0.1:8000, 10.0.0.2:8000, ... (not in any registry). */
export function healthyEndpoints(count: number): Endpoint[] {
  return Array.from({ length: count }, (_, i) => {
    const endpoint = new Endpoint({ address: `10.0.0.${i + 1}:8000`, name: `pod-${i}`, namespace: 'ns', labels: {} });
    endpoint.healthy = true;
    return endpoint;
  });
}

/** A `/v1/models` card of `id` on engine `ownedBy`. */
export function card(id: string, ownedBy = 'vllm'): ModelCard {
  return { id, object: 'model', created: 0, owned_by: ownedBy, root: null, parent: null };
}
