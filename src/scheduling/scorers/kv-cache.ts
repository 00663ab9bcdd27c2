/**
 * Scorer `kv-cache`: more free KV cache scores higher: 1 − kv_cache_usage_percent / 100, from fresh
 * `/metrics` figures (vLLM `kv_cache_usage_perc`, SGLang `token_usage`). Absolute, not relative to
 * the other candidates: a pod at 95 % is near full whatever the others use. Without fresh figures: 0.5.
 *
 * Parameters: none. Example: `{type: kv-cache, weight: 1}`
 */
import type { Endpoint } from '../../discovery/endpoint.js';
import type { PluginParameters } from '../plugin-params.js';
import type { SchedulingRequest, Scorer } from '../types.js';
import { freshMetrics } from './engine-figures.js';

export function kvCacheScorer(name: string, weight: number, params: PluginParameters): Scorer {
  params.done();
  return {
    type: 'kv-cache',
    name,
    weight,
    score(_request: SchedulingRequest, candidates: readonly Endpoint[], scores: Float64Array): void {
      const now = performance.now();
      for (let i = 0; i < candidates.length; i++) {
        const usage = freshMetrics(candidates[i]!, now)?.kv_cache_usage_percent;
        scores[i] = usage === undefined || Number.isNaN(usage) ? 0.5 : 1 - Math.min(100, Math.max(0, usage)) / 100;
      }
    },
  };
}
