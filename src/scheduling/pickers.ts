import type { Endpoint } from '../discovery/endpoint.js';

/** Chooses one endpoint among usable candidates (never called with an empty list). */
export interface Picker {
  readonly name: string;
  pick(candidates: readonly Endpoint[], key: string): Endpoint;
}

/** Fewest in-flight requests; ties broken uniformly at random so equal pods share load. */
export class LeastOutstandingPicker implements Picker {
  readonly name = 'least_outstanding_requests';

  constructor(private readonly random: () => number = Math.random) {}

  pick(candidates: readonly Endpoint[]): Endpoint {
    let best = candidates[0]!;
    let ties = 1;
    for (let i = 1; i < candidates.length; i++) {
      const candidate = candidates[i]!;
      if (candidate.inFlight < best.inFlight) {
        best = candidate;
        ties = 1;
      } else if (candidate.inFlight === best.inFlight) {
        // Reservoir sampling: the k-th tie replaces the choice with probability 1/k.
        ties++;
        if (this.random() * ties < 1) best = candidate;
      }
    }
    return best;
  }
}

/** Takes candidates in turn, separately for each (model, owned_by) key. */
export class RoundRobinPicker implements Picker {
  readonly name = 'round_robin';
  private readonly next = new Map<string, number>();

  pick(candidates: readonly Endpoint[], key: string): Endpoint {
    const turn = this.next.get(key) ?? 0;
    this.next.set(key, turn + 1 >= Number.MAX_SAFE_INTEGER ? 0 : turn + 1);
    return candidates[turn % candidates.length]!;
  }
}

export const ROUTING_LOGICS = ['least_outstanding_requests', 'round_robin'] as const;
export type RoutingLogic = (typeof ROUTING_LOGICS)[number];

export function createPicker(logic: RoutingLogic): Picker {
  return logic === 'round_robin' ? new RoundRobinPicker() : new LeastOutstandingPicker();
}
