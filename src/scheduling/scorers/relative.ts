import type { Endpoint } from '../../discovery/endpoint.js';
import type { SchedulingRequest, Scorer } from '../types.js';

/**
 * A scorer relative to the other candidates (min-max): the lowest value scores 1, the highest 0,
 * the rest in between; all equal → 1. A NaN value (unknown) scores `unknownScore`.
 */
export class RelativeScorer implements Scorer {
  private values = new Float64Array(64);

  constructor(
    readonly type: string,
    readonly name: string,
    readonly weight: number,
    /** The figure to minimise; `now` is performance.now(), read once per decision. */
    private readonly figure: (endpoint: Endpoint, now: number) => number,
    private readonly unknownScore: number,
  ) {}

  score(_request: SchedulingRequest, candidates: readonly Endpoint[], scores: Float64Array): void {
    const n = candidates.length;
    if (this.values.length < n) this.values = new Float64Array(n * 2);
    const { values } = this;
    const now = performance.now();
    let min = Infinity;
    let max = -Infinity;
    for (let i = 0; i < n; i++) {
      const v = this.figure(candidates[i]!, now);
      values[i] = v;
      if (v < min) min = v;
      if (v > max) max = v;
    }
    const span = max - min;
    for (let i = 0; i < n; i++) {
      const v = values[i]!;
      scores[i] = Number.isNaN(v) ? this.unknownScore : span > 0 ? (max - v) / span : 1;
    }
  }
}
