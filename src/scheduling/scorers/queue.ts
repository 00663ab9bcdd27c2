/**
 * Scorer `queue`: a shorter engine waiting queue (vLLM `num_requests_waiting`, SGLang
 * `num_queue_reqs`, from fresh `/metrics` figures) scores higher, min-max over the candidates.
 * An endpoint without fresh figures scores 0.5: neither preferred nor avoided.
 *
 * Parameters: none. Example: `{type: queue, weight: 2}`
 */
import type { PluginParameters } from '../plugin-params.js';
import type { Scorer } from '../types.js';
import { freshMetrics } from './engine-figures.js';
import { RelativeScorer } from './relative.js';

export function queueScorer(name: string, weight: number, params: PluginParameters): Scorer {
  params.done();
  return new RelativeScorer('queue', name, weight, (endpoint, now) => freshMetrics(endpoint, now)?.waiting_queue_size ?? Number.NaN, 0.5);
}
