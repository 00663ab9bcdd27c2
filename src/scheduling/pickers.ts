import type { Endpoint } from '../discovery/endpoint.js';
import { LoadAwarePicker } from './load-aware-picker.js';

/** Chooses one endpoint among usable candidates (never called with an empty list). */
export interface Picker {
  readonly name: string;
  /**
   * `group` identifies the candidate set (stable while the set is), for pickers that keep state per
   * set; `scores` holds the chain's weighted score per candidate when it has scorers.
   */
  pick(candidates: readonly Endpoint[], group: object, scores?: Float64Array): Endpoint;
}

/**
 * Fewest in-flight requests; ties broken uniformly at random so equal pods share load. Two passes
 * (find the minimum and count its ties, then take the k-th tie) cost one random number per
 * decision, however many endpoints tie.
 */
export class LeastOutstandingPicker implements Picker {
  readonly name = 'least_outstanding_requests';

  constructor(private readonly random: () => number = Math.random) {}

  pick(candidates: readonly Endpoint[]): Endpoint {
    let least = Infinity;
    let ties = 0;
    for (let i = 0; i < candidates.length; i++) {
      const load = candidates[i]!.inFlight;
      if (load < least) {
        least = load;
        ties = 1;
      } else if (load === least) {
        ties++;
      }
    }
    let chosen = ties === 1 ? 0 : Math.floor(this.random() * ties);
    for (let i = 0; i < candidates.length; i++) {
      if (candidates[i]!.inFlight === least && chosen-- === 0) return candidates[i]!;
    }
    throw new Error('least-outstanding picker: the minimum was not found twice');
  }
}

/** Takes candidates in turn, separately for each candidate set (model, or model and engine). */
export class RoundRobinPicker implements Picker {
  readonly name = 'round_robin';
  private readonly next = new WeakMap<object, number>();

  pick(candidates: readonly Endpoint[], group: object): Endpoint {
    const turn = this.next.get(group) ?? 0;
    this.next.set(group, turn + 1 >= Number.MAX_SAFE_INTEGER ? 0 : turn + 1);
    return candidates[turn % candidates.length]!;
  }
}

export const ROUTING_LOGICS = ['least_outstanding_requests', 'round_robin', 'load_aware'] as const;
export type RoutingLogic = (typeof ROUTING_LOGICS)[number];

export function createPicker(logic: RoutingLogic): Picker {
  switch (logic) {
    case 'round_robin':
      return new RoundRobinPicker();
    case 'load_aware':
      return new LoadAwarePicker();
    case 'least_outstanding_requests':
      return new LeastOutstandingPicker();
  }
}
