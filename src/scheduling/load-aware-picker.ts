/**
 * Picker `load_aware` (`--routing-logic load_aware`): the candidate with the least estimated load
 * now, from our exact in-flight count and the engine's own, possibly older, queue figures.
 *
 * Why both: several llm-extproc replicas share the engines, and each sees only its own requests.
 * The engine's queues (`running_queue_size`, `waiting_queue_size`) count everyone's, but only as of
 * the last scrape (`--metrics-interval`, 1 s by default, hundreds of decisions at production rates).
 * Picking by the scrape alone sends every request until the next scrape to the pod that looked
 * idlest (a herd); picking by in-flight alone ignores the other replicas. So, per candidate:
 *
 *   fresh figures (`load` set and now <= `load.freshUntil`; the clock is read once per pick):
 *     others   = max(0, running + waiting - inFlightAtScrape)   what the engine held that was not ours
 *     total    = inFlight + others                              ours counted exactly, now
 *     queued   = waiting > 0 ? max(0, total - running) : 0      the engine was full at `running`
 *     score    = total + WAITING_PENALTY * queued + kvPenalty(kv_cache_usage_percent)
 *     kvPenalty(kv) = KV_PENALTY_AT_FULL * x², x = clamp((kv - KV_KNEE_PERCENT) / (100 - KV_KNEE_PERCENT), 0, 1)
 *
 *   unknown (no figures, or stale): score = inFlight + the mean of (score - inFlight) over the
 *     candidates with fresh figures (0 when none has): judged by our in-flight alone, on top of
 *     what an average pod of the set carries. Comparing it with in-flight alone (as if nobody else
 *     used it) would flood it while the others are busy with other replicas' traffic; counting it
 *     as full would starve it. Its own in-flight count still moves, so it gets its share.
 *
 * `queued` moves with our in-flight count: on an engine that had a waiting queue at the scrape,
 * every request we add since waits too (it costs 1 + WAITING_PENALTY), and every one of ours that
 * ends lets a waiting one run. An engine with no queue at the scrape is not assumed to fill up
 * before the next one (its capacity is unknown), so on it a request costs 1.
 *
 * The lowest score wins; ties (same figures, same in-flight) are broken uniformly at random with
 * one random number per decision, as LeastOutstandingPicker does. Two passes over the candidates:
 * the first scores each one into a scratch array and finds the minimum and its ties, the second
 * reads the array to the chosen tie (reading back is cheaper than scoring again: about a fifth off
 * at 10,000 candidates). The array grows to the largest candidate set seen and is reused, so a pick
 * allocates nothing. With no figures anywhere it chooses exactly as least_outstanding_requests.
 * Cost (docs/benchmark.md, section 4): one clock reading (40-50 ns on the bench machine), then
 * 2-3x least_outstanding_requests' scan at 100 candidates and 4.5-10x at 10,000, where each
 * candidate's figures are two more objects to fetch from memory.
 *
 * Parameters: none on the command line; the weights are the constants below. Example: with pods
 * A (engine: 0 running) and B, C, D (engine: 8 running each, none of it ours), a burst of 40 held
 * requests goes 16 to A and 8 to each of the others, after which all four carry 16.
 */
import type { Endpoint } from '../discovery/endpoint.js';
import type { Picker } from './pickers.js';

/**
 * Extra cost of one waiting request, on top of the 1 it counts as load. A running request shares
 * the engine's batch; a waiting one gets nothing until a running one ends, and a new request sent
 * there waits behind it. So a waiting request counts three times, and an engine with Q waiting
 * loses to one with no queue that holds up to 2Q more requests in all (a judgement, not a
 * measurement: llm-d's queue scorer goes further and looks at the waiting queue alone).
 */
export const WAITING_PENALTY = 2;

/**
 * KV-cache use below this costs nothing: engines run with the cache mostly full by design (vLLM
 * preallocates it, and 50-80 % is a healthy steady state), so low figures say nothing about delay.
 */
export const KV_KNEE_PERCENT = 80;

/**
 * The penalty at 100 %, in requests; it rises with the square of the distance above the knee
 * (1 at 85 %, 4 at 90 %, 9 at 95 %). A full cache means the engine cannot admit more work without
 * preempting some, and its waiting queue only shows it at the next scrape: 16 is what about five
 * waiting requests cost (5 x (1 + WAITING_PENALTY)).
 */
export const KV_PENALTY_AT_FULL = 16;

const KV_SPAN = 100 - KV_KNEE_PERCENT;

/**
 * Estimated load beyond our own in-flight count, from fresh figures; NaN when the endpoint's
 * figures are absent or stale at `now` (NaN fails every comparison, so a NaN queue figure or
 * freshUntil counts as unknown too; a NaN KV figure as no pressure).
 */
function externalLoad(endpoint: Endpoint, now: number): number {
  const load = endpoint.load;
  if (load === undefined || !(now <= load.freshUntil)) return Number.NaN;
  const m = load.metrics;
  const running = m.running_queue_size;
  const waiting = m.waiting_queue_size;
  const others = Math.max(0, running + waiting - load.inFlightAtScrape);
  let extra = others;
  if (waiting > 0) {
    const queued = endpoint.inFlight + others - running;
    if (queued > 0) extra += WAITING_PENALTY * queued;
  }
  const kv = m.kv_cache_usage_percent;
  if (kv > KV_KNEE_PERCENT) {
    const x = kv >= 100 ? 1 : (kv - KV_KNEE_PERCENT) / KV_SPAN;
    extra += KV_PENALTY_AT_FULL * x * x;
  }
  return extra;
}

export class LoadAwarePicker implements Picker {
  readonly name = 'load_aware';
  /** Pass 1's scores (NaN = unknown), for pass 2; grown to the largest candidate set seen, never per pick. */
  private scores = new Float64Array(64);

  /** `clock` gives performance.now() milliseconds, as `EngineLoad.freshUntil` is written. */
  constructor(
    private readonly random: () => number = Math.random,
    private readonly clock: () => number = () => performance.now(),
  ) {}

  pick(candidates: readonly Endpoint[]): Endpoint {
    const now = this.clock();
    if (this.scores.length < candidates.length) this.scores = new Float64Array(Math.max(candidates.length, this.scores.length * 2));
    const scores = this.scores;
    let knownLeast = Infinity;
    let knownTies = 0;
    let unknownLeast = Infinity;
    let unknownTies = 0;
    let externalSum = 0;
    let known = 0;
    for (let i = 0; i < candidates.length; i++) {
      const endpoint = candidates[i]!;
      const external = externalLoad(endpoint, now);
      if (external >= 0) {
        externalSum += external;
        known++;
        const score = endpoint.inFlight + external;
        scores[i] = score;
        if (score < knownLeast) {
          knownLeast = score;
          knownTies = 1;
        } else if (score === knownLeast) {
          knownTies++;
        }
      } else {
        scores[i] = Number.NaN;
        const inFlight = endpoint.inFlight;
        if (inFlight < unknownLeast) {
          unknownLeast = inFlight;
          unknownTies = 1;
        } else if (inFlight === unknownLeast) {
          unknownTies++;
        }
      }
    }
    const unknownScore = unknownLeast + (known > 0 ? externalSum / known : 0);
    const least = Math.min(knownLeast, unknownScore);
    const fromUnknown = unknownScore === least;
    const ties = (knownLeast === least ? knownTies : 0) + (fromUnknown ? unknownTies : 0);
    let chosen = ties === 1 ? 0 : Math.floor(this.random() * ties);
    for (let i = 0; i < candidates.length; i++) {
      const score = scores[i]!;
      // No known score is below knownLeast, so one equal to `least` is one of the knownTies.
      const tied = score >= 0 ? score === least : fromUnknown && candidates[i]!.inFlight === unknownLeast;
      if (tied && chosen-- === 0) return candidates[i]!;
    }
    throw new Error('load-aware picker: the minimum was not found twice');
  }
}
