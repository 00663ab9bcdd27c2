import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LlmRouter } from '../src/app/llm-router.js';
import type { ModelCard } from '../src/discovery/endpoint.js';
import { EndpointRegistry } from '../src/discovery/registry.js';
import { RequestHeaders } from '../src/extproc/headers.js';
import type { HttpRequestView, RouteDecision } from '../src/extproc/types.js';
import { createLogger } from '../src/log.js';
import { Metrics } from '../src/metrics.js';
import { SCAN_SLICE_BYTES } from '../src/request/json-scan.js';
import { RouteTable } from '../src/routing/routes.js';
import { createPicker } from '../src/scheduling/pickers.js';
import { Scheduler } from '../src/scheduling/scheduler.js';
import { pickerOnly, upsertAll } from './support/endpoints.js';

const MODEL = 'm';

function router(): LlmRouter {
  const registry = new EndpointRegistry();
  upsertAll(registry, [{ address: '10.0.0.1:8000', name: 'pod', namespace: 'ns', labels: {} }]);
  const card: ModelCard = { id: MODEL, object: 'model', created: 0, owned_by: 'vllm', root: MODEL, parent: null };
  registry.update(registry.get('10.0.0.1:8000')!, { models: [card], healthy: true });
  const routes = new RouteTable();
  return new LlmRouter({
    routes: () => routes,
    scheduler: new Scheduler(registry, pickerOnly(createPicker('least_outstanding_requests'))),
    endpoints: registry,
    metrics: new Metrics(registry, () => 0),
    log: createLogger('silent'),
  });
}

function view(body: Buffer, signal = new AbortController().signal): HttpRequestView {
  const headers = new RequestHeaders([
    { key: ':method', raw_value: Buffer.from('POST'), value: '' },
    { key: ':path', raw_value: Buffer.from('/v1/chat/completions'), value: '' },
  ]);
  return { headers, body, bodyPartial: false, requestId: 'r', signal };
}

/** Millions of short keys: the shape that costs a scanner the most per byte. */
function hostileBody(bytes: number): Buffer {
  const unit = '"\\u0061":1,';
  return Buffer.from(`{"model":"${MODEL}",${unit.repeat(Math.ceil(bytes / unit.length))}"z":1}`);
}

describe('LlmRouter: large bodies do not hold up the event loop', () => {
  it('a body within one scan slice is decided at once', () => {
    const decision = router().decide(view(Buffer.from(`{"model":"${MODEL}"}`)));
    assert.ok(!(decision instanceof Promise));
    assert.equal((decision as RouteDecision).kind, 'route');
  });

  it('a larger body is scanned across event-loop turns, and other work runs in between', async () => {
    const body = hostileBody(8 * SCAN_SLICE_BYTES);
    const decision = router().decide(view(body));
    assert.ok(decision instanceof Promise, 'an asynchronous decision');
    let turns = 0;
    let settled = false;
    void decision.then(() => (settled = true));
    // Each setImmediate turn observed before the decision settles is a turn the scan gave away.
    while (!settled) {
      await new Promise((resolve) => setImmediate(resolve));
      turns++;
    }
    assert.ok(turns >= 4, `the scan yielded ${turns} times`);
    const result = await decision;
    assert.equal(result.kind, 'route');
  });

  it('a small body routed by the preset chain never asks for the stream’s AbortSignal (the stream makes it only on demand)', () => {
    let asked = 0;
    const lazy = view(Buffer.from(JSON.stringify({ model: MODEL })));
    Object.defineProperty(lazy, 'signal', {
      get: () => {
        asked++;
        return new AbortController().signal;
      },
    });
    const decision = router().decide(lazy);
    assert.ok(!(decision instanceof Promise) && decision.kind === 'route');
    assert.equal(asked, 0);
  });

  it("the scan stops when the stream ends (the view's signal aborts)", async () => {
    const controller = new AbortController();
    const decision = router().decide(view(hostileBody(8 * SCAN_SLICE_BYTES), controller.signal));
    controller.abort(new Error('stream ended'));
    await assert.rejects(decision as Promise<RouteDecision>, /stream ended/);
  });
});
