/**
 * Scorer `in-flight`: fewer requests in flight from this llm-extproc scores higher (min-max over the
 * candidates: the least loaded 1, the most loaded 0, all equal 1). Exact and always known.
 *
 * Parameters: none. Example: `{type: in-flight, weight: 1}`
 */
import type { PluginParameters } from '../plugin-params.js';
import type { Scorer } from '../types.js';
import { RelativeScorer } from './relative.js';

export function inFlightScorer(name: string, weight: number, params: PluginParameters): Scorer {
  params.done();
  return new RelativeScorer('in-flight', name, weight, (endpoint) => endpoint.inFlight, 0.5);
}
