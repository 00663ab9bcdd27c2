import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError } from '../src/config/errors.js';
import type { Endpoint } from '../src/discovery/endpoint.js';
import { EndpointRegistry } from '../src/discovery/registry.js';
import { RequestHeaders } from '../src/extproc/headers.js';
import { LeastOutstandingPicker } from '../src/scheduling/pickers.js';
import { buildChain, loadChainSpec } from '../src/scheduling/plugins.js';
import { type PluginOutcome, Scheduler } from '../src/scheduling/scheduler.js';
import { type Filter, PluginError, type SchedulingRequest, type Scorer } from '../src/scheduling/types.js';
import { card, leaseOf, upsertAll } from './support/endpoints.js';
import { defer } from './support/wait.js';

/** The least-outstanding preset with these filters in front. */
const withFilters = (filters: Filter[]) => ({ filters, scorers: [], picker: new LeastOutstandingPicker() });

const routing = { method: 'POST', path: '/v1/completions', model: 'm', ownedBy: undefined, ownedBySource: undefined, routeName: undefined, requestId: 'r' };

function registry(labels: Record<string, string>[]): EndpointRegistry {
  const reg = new EndpointRegistry();
  upsertAll(
    reg,
    labels.map((l, i) => ({ address: `10.0.0.${i + 1}:8000`, name: `pod-${i}`, namespace: 'ns', labels: l })),
  );
  for (const endpoint of reg.all()) reg.update(endpoint, { models: [card('m')], healthy: true });
  return reg;
}

/** A filter the test controls: records what it saw, keeps what `keep` says, maybe later. */
function probeFilter(name: string, keep: (list: readonly Endpoint[]) => readonly Endpoint[] | Promise<readonly Endpoint[]>) {
  const seen: string[][] = [];
  const picked: string[] = [];
  const filter: Filter = {
    name,
    type: 'test',
    filter: (_request, list) => {
      seen.push(list.map((e) => e.name));
      return keep(list);
    },
    picked: (_request: SchedulingRequest, endpoint: Endpoint) => void picked.push(endpoint.name),
  };
  return { filter, seen, picked };
}

describe('the scheduling chain', () => {
  it('runs filters in order, each on what the previous kept, and tells them where the request went', () => {
    const reg = registry([{ a: '1' }, { a: '1', b: '1' }, {}]);
    const first = probeFilter('first', (list) => list.filter((e) => e.labels.a));
    const second = probeFilter('second', (list) => list.filter((e) => e.labels.b));
    const chain = withFilters([first.filter, second.filter]);
    const lease = leaseOf(new Scheduler(reg, chain).schedule({ routing }));
    assert.equal(lease.endpoint.name, 'pod-1');
    assert.deepEqual(first.seen, [['pod-0', 'pod-1', 'pod-2']]);
    assert.deepEqual(second.seen, [['pod-0', 'pod-1']]);
    assert.deepEqual([first.picked, second.picked], [['pod-1'], ['pod-1']]);
  });

  it('a filter that keeps nothing ends the decision, named; later filters are not asked', () => {
    const reg = registry([{}, {}]);
    const none = probeFilter('none-fit', () => []);
    const after = probeFilter('after', (list) => list);
    const chain = withFilters([none.filter, after.filter]);
    assert.deepEqual(new Scheduler(reg, chain).schedule({ routing }), { kind: 'all_filtered', filter: 'none-fit' });
    assert.deepEqual(after.seen, []);
  });

  it('an asynchronous filter is awaited; the rest of the chain runs after it', async () => {
    const reg = registry([{ a: '1' }, {}]);
    const gate = defer<void>();
    const slow = probeFilter('slow', async (list) => {
      await gate.promise;
      return list.filter((e) => e.labels.a);
    });
    const next = probeFilter('next', (list) => list);
    const outcomes: [string, PluginOutcome][] = [];
    const scheduler = new Scheduler(reg, withFilters([slow.filter, next.filter]), {
      observe: (plugin, _seconds, outcome) => outcomes.push([plugin.name, outcome]),
    });
    const pending = scheduler.schedule({ routing });
    assert.ok(pending instanceof Promise);
    assert.deepEqual(next.seen, [], 'not before the slow filter answered');
    gate.resolve();
    const result = await pending;
    assert.equal(result.kind === 'picked' && result.lease.endpoint.name, 'pod-0');
    assert.deepEqual(next.seen, [['pod-0']]);
    assert.deepEqual(outcomes, [
      ['slow', 'ok'],
      ['next', 'ok'],
    ]);
  });

  it('a fail-closed plugin failure becomes plugin_failed naming it; any other exception is a bug and propagates', async () => {
    const reg = registry([{}]);
    const closed = probeFilter('ext', async () => {
      throw new PluginError('ext', 'timed out after 50 ms');
    });
    const scheduler = new Scheduler(reg, withFilters([closed.filter]));
    assert.deepEqual(await scheduler.schedule({ routing }), { kind: 'plugin_failed', plugin: 'ext', reason: 'timed out after 50 ms' });
    const buggy = probeFilter('bug', () => {
      throw new TypeError('oops');
    });
    assert.throws(() => new Scheduler(reg, withFilters([buggy.filter])).schedule({ routing }), TypeError);
  });

  it('a filter cut short by the end of the stream is recorded as cancelled and the decision rejects', async () => {
    const reg = registry([{}]);
    const controller = new AbortController();
    const waiting = probeFilter(
      'ext',
      (_list) => new Promise((_resolve, reject) => controller.signal.addEventListener('abort', () => reject(controller.signal.reason))),
    );
    const outcomes: PluginOutcome[] = [];
    const scheduler = new Scheduler(reg, withFilters([waiting.filter]), {
      observe: (_plugin, _seconds, outcome) => outcomes.push(outcome),
    });
    const pending = scheduler.schedule({ routing, http: { headers: new RequestHeaders([]), body: undefined, signal: controller.signal } });
    controller.abort(new Error('the ext_proc stream ended'));
    await assert.rejects(Promise.resolve(pending), /the ext_proc stream ended/);
    assert.deepEqual(outcomes, ['cancelled']);
  });

  it('scores are weighted and summed; max-score takes the best; out-of-range scores are clamped', () => {
    const reg = registry([{}, {}, {}]);
    const fixed = (name: string, weight: number, values: number[]): Scorer => ({
      name,
      type: 'test',
      weight,
      score: (_request, _list, scores) => scores.set(values),
    });
    const chain = buildChain({ filters: [], scorers: [], picker: { type: 'max-score' } }, 'least_outstanding_requests');
    const scheduler = (scorers: Scorer[]) => new Scheduler(reg, { ...chain, scorers });
    // pod-0: 1·1 + 3·0 = 1; pod-1: 1·0 + 3·0.5 = 1.5; pod-2: 1·0.9 + 3·0.4 = 2.1
    assert.equal(leaseOf(scheduler([fixed('a', 1, [1, 0, 0.9]), fixed('b', 3, [0, 0.5, 0.4])]).schedule({ routing })).endpoint.name, 'pod-2');
    // A scorer answering 50 for pod-0 counts as 1, not 50: pod-1 (0 + 3) wins.
    assert.equal(leaseOf(scheduler([fixed('huge', 1, [50, 0, 0]), fixed('b', 3, [0, 1, 0])]).schedule({ routing })).endpoint.name, 'pod-1');
  });
});

describe('scheduling config files', () => {
  async function load(text: string, name = 'chain.yaml') {
    const dir = await mkdtemp(join(tmpdir(), 'chain-'));
    await writeFile(join(dir, name), text);
    return loadChainSpec(join(dir, name));
  }
  const refuses = async (text: string, message: RegExp) =>
    assert.rejects(
      (async () => buildChain(await load(text), 'least_outstanding_requests'))(),
      (err: unknown) => err instanceof ConfigError && err.flag === '--scheduling-config' && message.test(err.message),
    );

  it('builds the chain the file describes', async () => {
    const chain = buildChain(
      await load(
        'filters:\n  - {type: role, parameters: {role: decode}}\n  - {type: label-selector, name: zone-a, parameters: {selector: zone=a}}\nscorers:\n  - {type: queue, weight: 2}\n  - {type: kv-cache}\npicker: {type: max-score}\n',
      ),
      'least_outstanding_requests',
    );
    assert.deepEqual(
      chain.filters.map((f) => `${f.type}:${f.name}`),
      ['role:role', 'label-selector:zone-a'],
    );
    assert.deepEqual(
      chain.scorers.map((s) => `${s.type}×${s.weight}`),
      ['queue×2', 'kv-cache×1'],
    );
    assert.equal(chain.picker.name, 'max-score');
  });

  it('external-http entries take their place in the chain; EXTERNAL_HTTP_FILTERS ones follow; one factory call makes them all', async () => {
    const calls: string[][] = [];
    const fake = (name: string): Filter => ({ name, type: 'external-http', filter: (_r, list) => list });
    const spec = await load(
      'filters:\n  - {type: role}\n  - {type: external-http, name: gpu-check, parameters: {url: "http://127.0.0.1:9/ext", timeout_ms: 80, fail_open: false}}\n  - {type: healthy}\n',
    );
    const chain = buildChain(spec, 'least_outstanding_requests', {
      fromEnv: [
        {
          name: 'env-one',
          url: 'http://127.0.0.1:9/e',
          filterUrl: new URL('http://127.0.0.1:9/e/filter'),
          weight: undefined,
          timeoutMs: 50,
          failOpen: true,
          sendPrompt: true,
        },
      ],
      create: (configs) => {
        calls.push(configs.map((c) => `${c.name}:${c.timeoutMs}:${c.failOpen}:${c.filterUrl.pathname}`));
        return configs.map((c) => fake(c.name));
      },
    });
    assert.deepEqual(calls, [['gpu-check:80:false:/ext/filter', 'env-one:50:true:/e/filter']]);
    assert.deepEqual(
      chain.filters.map((f) => f.name),
      ['role', 'gpu-check', 'healthy', 'env-one'],
    );
    await refuses(
      'filters: [{type: external-http, name: x, parameters: {url: "ftp://host/x"}}]',
      /filters\[0\] \("x"\): "url" "ftp:\/\/host\/x" is not http or https/,
    );
  });

  it('without a picker, --routing-logic picks', async () => {
    assert.equal(buildChain(await load('filters: [{type: healthy}]'), 'round_robin').picker.name, 'round_robin');
  });

  it('every mistake is one error naming the plugin and what is wrong', async () => {
    await refuses('filters: [{type: nope}]', /filters\[0\]: no plugin of type "nope"/);
    await refuses('filters: [{type: role, parameters: {rol: decode}}]', /filters\[0\] \(role\): unknown parameter "rol"/);
    await refuses('filters: [{type: label-selector, parameters: {selector: "a=b=c"}}]', /parameters\.selector has a requirement "a=b=c"/);
    await refuses('scorers: [{type: queue, weight: -1}]', /scorers\[0\] \(queue\): weight must be a number/);
    await refuses('filters: [{type: role}, {type: role}]', /the name "role" is used twice/);
    await refuses('picker: {type: fastest}', /picker\[0\]: no plugin of type "fastest"/);
    await refuses('filterz: []', /"filterz" is not a known section/);
    await refuses('filters: [{type: role, weight: 2}]', /filters\[0\]\.weight is not a known field/);
  });
});
