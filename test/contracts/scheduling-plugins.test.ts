import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Endpoint } from '../../src/discovery/endpoint.js';
import { RequestHeaders } from '../../src/extproc/headers.js';
import { buildChain, PLUGIN_TYPES, type PluginSpec } from '../../src/scheduling/plugins.js';
import type { SchedulingRequest } from '../../src/scheduling/types.js';
import { card } from '../support/endpoints.js';

/**
 * The behaviour every scheduling plugin owes the chain, run against every registered type: a new
 * plugin gets these checks by being registered (and given sample parameters below if it needs any).
 */
const SAMPLE_PARAMETERS: Record<string, Record<string, unknown>> = {
  'label-selector': { selector: 'zone=a' },
};

/** Filters these candidates exercise by differing in what they look at (session-affinity needs a session first). */
const DROPS_SOME_OF_THESE = new Set(['model', 'owned_by', 'healthy', 'label-selector', 'role']);

/** Six endpoints that differ in every way a plugin looks at: labels, models, health, in-flight, engine figures. */
function candidates(): Endpoint[] {
  return Array.from({ length: 6 }, (_, i) => {
    const endpoint = new Endpoint({
      address: `10.0.0.${i + 1}:8000`,
      name: `pod-${i}`,
      namespace: 'ns',
      labels: i % 2 === 0 ? { zone: 'a', 'llm-d.ai/role': 'decode' } : i === 1 ? { zone: 'b', 'llm-d.ai/role': 'prefill' } : {},
    });
    endpoint.models = [i === 4 ? card('other') : card('m', i < 3 ? 'vllm' : 'sglang')];
    endpoint.healthy = i !== 5;
    endpoint.inFlight = (i * 7) % 5;
    if (i < 4) {
      endpoint.load = {
        metrics: {
          active_models: {},
          waiting_models: {},
          max_active_models: 0,
          running_queue_size: i * 2,
          waiting_queue_size: (i * 3) % 4,
          kv_cache_usage_percent: i * 30,
          kv_cache_max_token_capacity: 0,
        },
        updateTime: new Date(),
        freshUntil: performance.now() + 60_000,
        inFlightAtScrape: 0,
      };
    }
    return endpoint;
  });
}

const request = (list: readonly Endpoint[]): SchedulingRequest => ({
  routing: { method: 'POST', path: '/v1/completions', model: 'm', ownedBy: 'vllm', ownedBySource: 'header', routeName: undefined, requestId: 'r' },
  headers: new RequestHeaders([]),
  body: undefined,
  signal: new AbortController().signal,
  initialCandidates: list,
});

const spec = (type: string): PluginSpec => ({ type, parameters: SAMPLE_PARAMETERS[type] ?? {} });

describe('every filter', () => {
  for (const type of PLUGIN_TYPES.filters) {
    it(`${type}: keeps a subset in order, leaves its input alone, and empty stays empty`, async () => {
      const [filter] = buildChain({ filters: [spec(type)], scorers: [] }, 'least_outstanding_requests').filters;
      const list = candidates();
      const before = [...list];
      const kept = await filter!.filter(request(list), list);
      assert.deepEqual(list, before, 'the input list is not changed');
      let at = -1;
      for (const endpoint of kept) {
        const index = list.indexOf(endpoint);
        assert.ok(index > at, `${endpoint.name} is an input candidate, in input order`);
        at = index;
      }
      if (DROPS_SOME_OF_THESE.has(type)) assert.ok(kept.length < list.length, 'these candidates differ in what it checks: it must drop some');
      assert.deepEqual(await filter!.filter(request([]), []), []);
    });
  }
});

describe('every scorer', () => {
  for (const type of PLUGIN_TYPES.scorers) {
    it(`${type}: one score in [0, 1] per candidate, the same for the same input, and it tells them apart`, () => {
      const [scorer] = buildChain({ filters: [], scorers: [spec(type)] }, 'least_outstanding_requests').scorers;
      const list = candidates();
      const first = new Float64Array(list.length).fill(-1);
      scorer!.score(request(list), list, first);
      for (const value of first) assert.ok(value >= 0 && value <= 1, `score ${value} in [0, 1]`);
      const second = new Float64Array(list.length);
      scorer!.score(request(list), list, second);
      assert.deepEqual([...second], [...first]);
      assert.ok(new Set(first).size > 1, 'the candidates differ in what it scores');
    });
  }
});

describe('every picker', () => {
  for (const type of PLUGIN_TYPES.pickers) {
    it(`${type}: returns one of the candidates; the only one when there is one; spreads over equal ones`, () => {
      const { picker } = buildChain({ filters: [], scorers: [], picker: { type } }, 'least_outstanding_requests');
      const list = candidates();
      for (const endpoint of list) {
        endpoint.inFlight = 0;
        endpoint.load = undefined;
      }
      const group = {};
      const scores = new Float64Array(list.length).fill(1);
      const seen = new Set<Endpoint>();
      for (let i = 0; i < 60; i++) {
        const chosen = picker.pick(list, group, scores);
        assert.ok(list.includes(chosen));
        seen.add(chosen);
      }
      assert.ok(seen.size > 1, 'equal candidates share the load');
      assert.equal(picker.pick([list[2]!], group, new Float64Array([0.3])), list[2]);
    });
  }
});
