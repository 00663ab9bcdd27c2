/**
 * Picker `max-score`: the candidate with the highest weighted score from the chain's scorers; ties
 * (and a chain without scorers, where all tie) broken uniformly at random with one random number.
 *
 * Parameters: none. Example: `{picker: {type: max-score}}` with scorers `queue` and `kv-cache`.
 */
import type { Endpoint } from '../../discovery/endpoint.js';
import type { Picker } from '../pickers.js';

export class MaxScorePicker implements Picker {
  readonly name = 'max-score';

  constructor(private readonly random: () => number = Math.random) {}

  pick(candidates: readonly Endpoint[], _group: object, scores?: Float64Array): Endpoint {
    if (!scores) return candidates[Math.floor(this.random() * candidates.length)]!;
    let best = -Infinity;
    let ties = 0;
    for (let i = 0; i < candidates.length; i++) {
      const score = scores[i]!;
      if (score > best) {
        best = score;
        ties = 1;
      } else if (score === best) {
        ties++;
      }
    }
    let chosen = ties === 1 ? 0 : Math.floor(this.random() * ties);
    for (let i = 0; i < candidates.length; i++) {
      if (scores[i] === best && chosen-- === 0) return candidates[i]!;
    }
    throw new Error('max-score picker: the maximum was not found twice');
  }
}
