/**
 * Picker `random`: any candidate, uniformly. A baseline, and what spreads load when nothing else is known.
 *
 * Parameters: none. Example: `{picker: {type: random}}`
 */
import type { Endpoint } from '../../discovery/endpoint.js';
import type { Picker } from '../pickers.js';

export class RandomPicker implements Picker {
  readonly name = 'random';

  constructor(private readonly random: () => number = Math.random) {}

  pick(candidates: readonly Endpoint[]): Endpoint {
    return candidates[Math.floor(this.random() * candidates.length)]!;
  }
}
