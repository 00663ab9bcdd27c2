import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Endpoint } from '../src/discovery/endpoint.js';
import { EndpointRegistry } from '../src/discovery/registry.js';
import type { RoutingRequest } from '../src/request/routing-request.js';
import { MappingTable } from '../src/routing/mappings.js';
import { Lease } from '../src/scheduling/ledger.js';
import { LoadAwarePicker } from '../src/scheduling/load-aware-picker.js';
import { LeastOutstandingPicker, type Picker, RoundRobinPicker } from '../src/scheduling/pickers.js';
import { Scheduler, type SchedulerOptions } from '../src/scheduling/scheduler.js';
import { card, healthyEndpoints, leaseOf, OK_OUTCOME, pickerOnly, upsertAll } from './support/endpoints.js';

const GROUP = {};

/** Fresh engine figures, the same on every endpoint. */
function equalFigures(list: Endpoint[]): void {
  for (const endpoint of list) {
    endpoint.load = {
      metrics: {
        active_models: {},
        waiting_models: {},
        max_active_models: 0,
        running_queue_size: 3,
        waiting_queue_size: 1,
        kv_cache_usage_percent: 85,
        kv_cache_max_token_capacity: 0,
      },
      updateTime: new Date(),
      freshUntil: performance.now() + 60_000,
      inFlightAtScrape: 0,
    };
  }
}

/** The behaviour every picker must have (run once per implementation; `prepare` sets up the endpoints). */
function pickerContract(name: string, create: () => Picker, prepare: (list: Endpoint[]) => void = () => {}) {
  describe(`${name}: shared picker contract`, () => {
    it('always returns one of the candidates', () => {
      const picker = create();
      const list = healthyEndpoints(5);
      prepare(list);
      for (let i = 0; i < 50; i++) assert.ok(list.includes(picker.pick(list, GROUP)));
    });
    it('works with a single candidate', () => {
      const list = healthyEndpoints(1);
      prepare(list);
      assert.equal(create().pick(list, GROUP), list[0]);
    });
    it('spreads equal load over every candidate', () => {
      const picker = create();
      const list = healthyEndpoints(4);
      prepare(list);
      const seen = new Set<Endpoint>();
      for (let i = 0; i < 200; i++) seen.add(picker.pick(list, GROUP));
      assert.equal(seen.size, 4);
    });
  });
}

pickerContract('least_outstanding_requests', () => new LeastOutstandingPicker());
pickerContract('round_robin', () => new RoundRobinPicker());
pickerContract('load_aware (no engine figures)', () => new LoadAwarePicker());
pickerContract('load_aware (fresh, equal engine figures)', () => new LoadAwarePicker(), equalFigures);

describe('LeastOutstandingPicker', () => {
  it('picks the endpoint with the fewest in-flight requests', () => {
    const list = healthyEndpoints(3);
    list[0]!.inFlight = 5;
    list[1]!.inFlight = 1;
    list[2]!.inFlight = 3;
    assert.equal(new LeastOutstandingPicker().pick(list), list[1]);
  });
  it('breaks ties uniformly at random', () => {
    const list = healthyEndpoints(3);
    const counts = new Map<Endpoint, number>();
    const picker = new LeastOutstandingPicker();
    for (let i = 0; i < 3000; i++) {
      const chosen = picker.pick(list);
      counts.set(chosen, (counts.get(chosen) ?? 0) + 1);
    }
    for (const endpoint of list) assert.ok((counts.get(endpoint) ?? 0) > 800, `unfair tie-break: ${[...counts.values()]}`);
  });
  it('N leases over K endpoints differ by at most one', () => {
    const list = healthyEndpoints(4);
    const picker = new LeastOutstandingPicker();
    const leases = Array.from({ length: 43 }, () => new Lease(picker.pick(list), undefined));
    const loads = list.map((e) => e.inFlight);
    assert.ok(Math.max(...loads) - Math.min(...loads) <= 1, `loads ${loads}`);
    for (const lease of leases) lease.release(OK_OUTCOME);
    assert.deepEqual(
      list.map((e) => e.inFlight),
      [0, 0, 0, 0],
    );
  });
});

describe('RoundRobinPicker', () => {
  it('takes candidates in turn, per candidate set', () => {
    const list = healthyEndpoints(3);
    const picker = new RoundRobinPicker();
    const [a, b] = [{}, {}];
    assert.deepEqual(
      [0, 1, 2, 3].map(() => picker.pick(list, a).name),
      ['pod-0', 'pod-1', 'pod-2', 'pod-0'],
    );
    assert.equal(picker.pick(list, b).name, 'pod-0');
  });
});

describe('Lease', () => {
  it('releases exactly once however often release is called', () => {
    const [endpoint] = healthyEndpoints(1);
    const lease = new Lease(endpoint!, undefined);
    assert.equal(endpoint!.inFlight, 1);
    lease.release(OK_OUTCOME);
    lease.release(OK_OUTCOME);
    assert.equal(endpoint!.inFlight, 0);
  });
});

describe('Scheduler', () => {
  const request = (model: string, ownedBy?: string): RoutingRequest => ({
    method: 'POST',
    path: '/v1/chat/completions',
    model,
    ownedBy,
    ownedBySource: ownedBy ? 'body.owned_by' : undefined,
    routeName: undefined,
    requestId: 'r',
  });
  function setup(options?: SchedulerOptions) {
    const registry = new EndpointRegistry();
    upsertAll(registry, [
      { address: '10.0.0.1:8000', name: 'v1', namespace: 'ns', labels: {} },
      { address: '10.0.0.2:8000', name: 'v2', namespace: 'ns', labels: {} },
      { address: '10.0.0.3:30000', name: 's1', namespace: 'ns', labels: {} },
    ]);
    registry.update(registry.get('10.0.0.1:8000')!, { models: [card('qwen', 'vllm'), card('llama', 'vllm')], healthy: true });
    registry.update(registry.get('10.0.0.2:8000')!, { models: [card('qwen', 'vllm')], healthy: true });
    registry.update(registry.get('10.0.0.3:30000')!, { models: [card('qwen', 'sglang')], healthy: true });
    return { registry, scheduler: new Scheduler(registry, pickerOnly(new LeastOutstandingPicker()), options) };
  }
  const pick = (scheduler: Scheduler, model: string, ownedBy?: string) => leaseOf(scheduler.schedule({ routing: request(model, ownedBy) }));
  const result = (scheduler: Scheduler, model: string, ownedBy?: string) => scheduler.schedule({ routing: request(model, ownedBy) });

  it('routes by model and engine', () => {
    const { scheduler } = setup();
    assert.equal(pick(scheduler, 'qwen', 'sglang').address, '10.0.0.3:30000');
    assert.equal(pick(scheduler, 'llama').address, '10.0.0.1:8000');
  });
  it('model-only routing spans engines', () => {
    const { scheduler } = setup();
    const seen = new Set(Array.from({ length: 6 }, () => pick(scheduler, 'qwen').address));
    assert.equal(seen.size, 3);
  });
  it('unknown model is 404; known model on another engine is 404 naming the engines', () => {
    const { scheduler } = setup();
    assert.deepEqual(result(scheduler, 'gpt-4'), { kind: 'unknown_model' });
    assert.deepEqual(result(scheduler, 'llama', 'sglang'), { kind: 'unknown_engine', engines: ['vllm'] });
  });
  it('known but unhealthy is 503, and unhealthy endpoints are never picked', () => {
    const { registry, scheduler } = setup();
    registry.update(registry.get('10.0.0.3:30000')!, { healthy: false });
    assert.deepEqual(result(scheduler, 'qwen', 'sglang'), { kind: 'none_healthy', services: undefined });
    registry.update(registry.get('10.0.0.1:8000')!, { healthy: false });
    for (let i = 0; i < 10; i++) assert.equal(pick(scheduler, 'qwen').address, '10.0.0.2:8000');
  });
  it('keeps endpoint objects (and their in-flight counts) across rediscovery', () => {
    const { registry, scheduler } = setup();
    const lease = pick(scheduler, 'llama');
    registry.upsert({ address: '10.0.0.1:8000', name: 'v1', namespace: 'ns', labels: { a: 'b' } });
    registry.remove('10.0.0.3:30000');
    assert.equal(registry.get('10.0.0.1:8000')!.inFlight, 1);
    lease.release(OK_OUTCOME);
    assert.equal(registry.get('10.0.0.1:8000')!.inFlight, 0);
    assert.deepEqual(registry.lookup('qwen', 'sglang'), { kind: 'unknown_engine', engines: ['vllm'] });
  });
  it('a model mapped to a Service goes only to its ready endpoints; other models are not narrowed', () => {
    const services: Record<string, ReadonlySet<string>> = { 'qwen-decode': new Set(['10.0.0.2:8000', '10.0.0.3:30000']) };
    const mappings = new MappingTable([{ model: 'qwen', owned_by: 'vllm', service_name: 'qwen-decode' }]);
    const { registry, scheduler } = setup({ pins: { mappings, addresses: (name) => services[name] } });
    for (let i = 0; i < 8; i++) assert.equal(pick(scheduler, 'qwen', 'vllm').address, '10.0.0.2:8000');
    const anyEngine = new Set(Array.from({ length: 12 }, () => pick(scheduler, 'qwen').address));
    assert.deepEqual([...anyEngine].sort(), ['10.0.0.2:8000', '10.0.0.3:30000'], 'naming no engine: every mapping of the model applies');
    assert.equal(pick(scheduler, 'llama').address, '10.0.0.1:8000', 'an unmapped model is not narrowed');
    registry.update(registry.get('10.0.0.2:8000')!, { healthy: false });
    assert.deepEqual(result(scheduler, 'qwen', 'vllm'), { kind: 'none_healthy', services: ['qwen-decode'] });
    services['qwen-decode'] = new Set();
    registry.update(registry.get('10.0.0.2:8000')!, { healthy: true });
    assert.deepEqual(result(scheduler, 'qwen', 'vllm'), { kind: 'none_healthy', services: ['qwen-decode'] });
  });
  it('aggregates one model card per (model, owned_by)', () => {
    const { registry } = setup();
    assert.deepEqual(
      registry.modelCards().map((c) => `${c.id}/${c.owned_by}`),
      ['llama/vllm', 'qwen/sglang', 'qwen/vllm'],
    );
  });
});
