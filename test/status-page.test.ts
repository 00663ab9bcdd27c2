import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { getRequestListener } from '@hono/node-server';
import { DecisionLog, STATUS_API, statusApp } from '../src/admin/status/app.js';
import { type StatusClient, StatusEvents } from '../src/admin/status/events.js';
import type { StatusSnapshot } from '../src/admin/status/snapshot.js';
import { LlmRouter } from '../src/app/llm-router.js';
import { EndpointRegistry } from '../src/discovery/registry.js';
import { RequestHeaders } from '../src/extproc/headers.js';
import type { HttpRequestView } from '../src/extproc/types.js';
import { createLogger } from '../src/log.js';
import { Metrics } from '../src/metrics.js';
import { RouteTable } from '../src/routing/routes.js';
import { Lease } from '../src/scheduling/ledger.js';
import { createPicker } from '../src/scheduling/pickers.js';
import { Scheduler } from '../src/scheduling/scheduler.js';
import { card, healthyEndpoints, pickerOnly, upsertAll } from './support/endpoints.js';
import { defer, until } from './support/wait.js';

describe('DecisionLog', () => {
  it('keeps the last N decisions and refusals, newest first, and counts all of them', () => {
    const log = new DecisionLog(3);
    const [endpoint] = healthyEndpoints(1);
    for (let i = 0; i < 5; i++) log.routed(`m${i}`, i % 2 ? 'sglang' : undefined, endpoint!, 'round_robin');
    log.refused(undefined, undefined, 413, 'request_too_large');
    assert.deepEqual(
      log.decisions().map((d) => [d.model, d.owned_by]),
      [
        ['m4', null],
        ['m3', 'sglang'],
        ['m2', null],
      ],
    );
    assert.deepEqual(
      log.refusals().map((r) => [r.model, r.status, r.code]),
      [[null, 413, 'request_too_large']],
    );
    assert.deepEqual([log.routedTotal, log.refusedTotal], [5, 1]);
  });

  it('records what the picker saw (in flight before this request, the engine queue) and hands out copies', () => {
    const log = new DecisionLog(2);
    const [endpoint] = healthyEndpoints(1);
    new Lease(endpoint!, undefined);
    new Lease(endpoint!, undefined); // this request's own lease, taken before the router records
    endpoint!.load = {
      metrics: {
        running_queue_size: 3,
        waiting_queue_size: 4,
        kv_cache_usage_percent: 10,
        active_models: {},
        waiting_models: {},
        max_active_models: 0,
        kv_cache_max_token_capacity: 0,
      },
      updateTime: new Date(),
      freshUntil: Infinity,
      inFlightAtScrape: 0,
    };
    log.routed('m', undefined, endpoint!, 'least_outstanding_requests');
    const [first] = log.decisions();
    assert.deepEqual([first!.in_flight, first!.engine_queue, first!.endpoint, first!.picker], [1, 7, '10.0.0.1:8000', 'least_outstanding_requests']);
    log.routed('n', undefined, endpoint!, 'x');
    log.routed('o', undefined, endpoint!, 'x'); // overwrites the slot `first` was copied from
    assert.equal(first!.model, 'm');
  });

  it('tells subscribers about every record until they unsubscribe', () => {
    const log = new DecisionLog();
    let calls = 0;
    const unsubscribe = log.subscribe(() => calls++);
    log.refused('m', undefined, 404, 'model_not_found');
    unsubscribe();
    log.refused('m', undefined, 404, 'model_not_found');
    assert.equal(calls, 1);
  });

  it('is fed by the router: one record where it routes, one where it refuses', () => {
    const registry = new EndpointRegistry();
    upsertAll(registry, [{ address: '10.0.0.1:8000', name: 'pod', namespace: 'ns', labels: {} }]);
    registry.update(registry.get('10.0.0.1:8000')!, { models: [card('m')], healthy: true });
    const log = new DecisionLog();
    const scheduler = new Scheduler(registry, pickerOnly(createPicker('least_outstanding_requests')));
    const routes = new RouteTable();
    const router = new LlmRouter({
      routes: () => routes,
      scheduler,
      endpoints: registry,
      metrics: new Metrics(registry, () => 0),
      log: createLogger('silent'),
      decisions: log,
    });
    const view = (body: string): HttpRequestView => ({
      headers: new RequestHeaders([
        { key: ':method', raw_value: Buffer.from('POST'), value: '' },
        { key: ':path', raw_value: Buffer.from('/v1/chat/completions'), value: '' },
      ]),
      body: Buffer.from(body),
      bodyPartial: false,
      requestId: 'r',
      signal: new AbortController().signal,
    });
    router.decide(view('{"model":"m"}'));
    router.decide(view('{"model":"other","owned_by":"vllm"}'));
    assert.deepEqual(
      log.decisions().map((d) => [d.model, d.endpoint, d.picker, d.in_flight]),
      [['m', '10.0.0.1:8000', 'least_outstanding_requests', 0]],
    );
    assert.deepEqual(
      log.refusals().map((r) => [r.model, r.owned_by, r.status, r.code]),
      [['other', 'vllm', 404, 'model_not_found']],
    );
  });
});

/** A snapshot source whose body the test sets, and which says when the hub read it. */
function testSource(initial: string) {
  let body = initial;
  let read = defer();
  let subscribed = 0;
  return {
    source: {
      body: () => {
        read.resolve();
        read = defer();
        return body;
      },
      subscribe: () => {
        subscribed++;
        return () => subscribed--;
      },
    },
    set: (next: string) => {
      body = next;
    },
    /** Resolves at the hub's next read of the body. */
    nextRead: () => read.promise,
    subscribed: () => subscribed,
  };
}

function recordingClient(): StatusClient & { sent: string[] } {
  const sent: string[] = [];
  return { sent, send: async (payload) => void sent.push(payload), heartbeat: async () => {} };
}

const OPTIONS = { maxClients: 2, minIntervalMs: 5, tickMs: 60_000, heartbeatMs: 60_000 };
const bodyOf = (payload: string) => JSON.parse(payload).v as number;

describe('StatusEvents', () => {
  // The hub's timers are unref'd (they must not keep a stopping service alive); in the service the
  // admin server holds the event loop open, here this does. Without it Node 22's runner sees an
  // empty loop while a test awaits the coalescing timer and cancels the file.
  let loop: NodeJS.Timeout;
  before(() => {
    loop = setInterval(() => {}, 60_000);
  });
  after(() => clearInterval(loop));

  it('sends a snapshot on connect, then one per burst of changes, and none when nothing changed', async () => {
    const src = testSource('{"v":1}');
    const hub = new StatusEvents(src.source, OPTIONS);
    const client = recordingClient();
    const leave = hub.join(client)!;
    src.set('{"v":2}');
    let read = src.nextRead();
    for (let i = 0; i < 50; i++) hub.changed();
    await read;
    read = src.nextRead();
    hub.changed(); // body unchanged since the last flush
    await read;
    src.set('{"v":3}');
    read = src.nextRead();
    hub.changed();
    await read;
    assert.deepEqual(client.sent.map(bodyOf), [1, 2, 3]);
    assert.ok(
      client.sent.every((payload) => typeof JSON.parse(payload).now === 'number'),
      'each carries the server clock',
    );
    leave();
  });

  it('writes one snapshot at a time to a slow client, which then gets only the newest', async () => {
    const src = testSource('{"v":1}');
    const hub = new StatusEvents(src.source, OPTIONS);
    const sent: number[] = [];
    let release = defer();
    const slow: StatusClient = {
      send: (payload) => {
        sent.push(bodyOf(payload));
        return release.promise;
      },
      heartbeat: async () => {},
    };
    hub.join(slow);
    for (const v of [2, 3, 4]) {
      src.set(`{"v":${v}}`);
      const read = src.nextRead();
      hub.changed();
      await read;
    }
    assert.deepEqual(sent, [1], 'nothing more while the first write is under way');
    const caughtUp = defer();
    const next = release;
    release = caughtUp;
    next.resolve();
    await until(
      'the newest snapshot written',
      () => sent,
      (s) => s.length === 2,
    );
    assert.deepEqual(sent, [1, 4]);
  });

  it('watches for changes only while clients are connected, and refuses clients beyond the limit', () => {
    const src = testSource('{"v":1}');
    const hub = new StatusEvents(src.source, OPTIONS);
    assert.equal(src.subscribed(), 0);
    const leaves = [hub.join(recordingClient()), hub.join(recordingClient())];
    assert.equal(hub.join(recordingClient()), undefined, 'the third of at most 2');
    assert.equal(src.subscribed(), 1);
    leaves[0]!();
    assert.equal(src.subscribed(), 1);
    leaves[1]!();
    assert.deepEqual([src.subscribed(), hub.clientCount], [0, 0]);
  });
});

/** Reads server-sent events off a fetch response, one `event:`/`data:` block at a time. */
function sseReader(res: Response) {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  return async (): Promise<{ event: string; data: string }> => {
    for (;;) {
      const end = buffer.indexOf('\n\n');
      if (end >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (block.startsWith(':')) continue; // heartbeat comment
        const field = (name: string) =>
          block
            .split('\n')
            .filter((line) => line.startsWith(`${name}: `))
            .map((line) => line.slice(name.length + 2))
            .join('\n');
        return { event: field('event'), data: field('data') };
      }
      const { value, done } = await reader.read();
      if (done) throw new Error('event stream ended');
      buffer += decoder.decode(value, { stream: true });
    }
  };
}

describe('statusApp over HTTP', () => {
  const registry = new EndpointRegistry();
  const decisions = new DecisionLog();
  let server: Server;
  let base: string;

  before(async () => {
    upsertAll(registry, [
      { address: '10.0.0.1:8000', name: 'ok', namespace: 'ns', labels: {} },
      { address: '10.0.0.2:8000', name: 'failing', namespace: 'ns', labels: {} },
      { address: '10.0.0.3:8000', name: 'ejected', namespace: 'ns', labels: {} },
      { address: '10.0.0.4:8000', name: 'new', namespace: 'ns', labels: { 'llm-d.ai/model': 'm' } },
    ]);
    for (const address of ['10.0.0.1:8000', '10.0.0.3:8000']) registry.update(registry.get(address)!, { models: [card('m')], healthy: true });
    registry.update(registry.get('10.0.0.2:8000')!, { healthy: false, error: 'status 503' });
    registry.get('10.0.0.3:8000')!.health.ejected = true;
    const app = statusApp(
      { endpoints: registry, decisions, log: createLogger('silent'), mappings: () => [{ model: 'm', service_name: 'svc', source: 'route-config' }] },
      { maxClients: 2, minIntervalMs: 5, tickMs: 60_000, heartbeatMs: 60_000 },
    );
    server = createServer(getRequestListener(app.fetch, { overrideGlobalObjects: false }));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it('serves the page under a CSP that allows exactly its inline script and style, by hash', async () => {
    const res = await fetch(`${base}/`);
    assert.equal(res.status, 200);
    const html = await res.text();
    const csp = res.headers.get('content-security-policy')!;
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|\*/);
    assert.match(csp, /default-src 'none'/);
    const hash = (tag: string) => {
      const inner = new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`).exec(html)![1]!;
      return `'sha256-${createHash('sha256').update(inner).digest('base64')}'`;
    };
    assert.ok(csp.includes(`script-src ${hash('script')}`), csp);
    assert.ok(csp.includes(`style-src ${hash('style')}`), csp);
    assert.doesNotMatch(html, /<(script|link|img)[^>]+(src|href)=/, 'no external assets');
  });

  it('explains every endpoint health: healthy, failing probe with its error, ejected, not probed yet', async () => {
    const snapshot = (await (await fetch(`${base}/admin/api/status`)).json()) as StatusSnapshot & { now: number };
    assert.equal(typeof snapshot.now, 'number');
    assert.deepEqual(
      snapshot.endpoints.map((e) => [e.name, e.health.state, e.health.reason]),
      [
        ['ok', 'healthy', null],
        ['failing', 'unhealthy', 'failing probe: status 503'],
        ['ejected', 'ejected', 'ejected after failed requests'],
        ['new', 'pending', 'not probed yet'],
      ],
    );
    assert.deepEqual(snapshot.mappings, [{ model: 'm', service_name: 'svc', source: 'route-config' }]);
  });

  it('streams snapshots: one on connect, one after a change; clients beyond the limit get a 503 JSON error until one leaves', async () => {
    const first = new AbortController();
    const a = await fetch(`${base}/admin/api/status/events`, { signal: first.signal });
    const second = new AbortController();
    const b = await fetch(`${base}/admin/api/status/events`, { signal: second.signal });
    assert.deepEqual([a.status, b.status, a.headers.get('content-type')], [200, 200, 'text/event-stream']);
    const nextA = sseReader(a);
    const nextB = sseReader(b);
    assert.equal((await nextA()).event, 'snapshot');
    assert.equal((await nextB()).event, 'snapshot');

    const refused = await fetch(`${base}/admin/api/status/events`);
    assert.equal(refused.status, 503);
    assert.equal(((await refused.json()) as { error: { code: string } }).error.code, 'too_many_status_clients');

    decisions.refused('<img src=x>', undefined, 404, 'model_not_found');
    const changed = JSON.parse((await nextB()).data) as StatusSnapshot;
    assert.deepEqual(
      changed.refusals.map((r) => r.model),
      ['<img src=x>'],
    );

    first.abort();
    const third = new AbortController();
    const c = await until(
      'a slot freed by the client that left',
      () => fetch(`${base}/admin/api/status/events`, { signal: third.signal }),
      (res) => res.status === 200,
    );
    assert.equal((await sseReader(c)()).event, 'snapshot');
    second.abort();
    third.abort();
  });

  it('answers a failure inside with an OpenAI-style 500', async () => {
    const mappings = () => {
      throw new Error('broken');
    };
    const app = statusApp({ endpoints: new EndpointRegistry(), decisions: new DecisionLog(), log: createLogger('silent'), mappings });
    const res = await app.request(STATUS_API);
    assert.equal(res.status, 500);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'internal_error');
  });

  it('answers unknown paths with an OpenAI-style 404', async () => {
    const res = await fetch(`${base}/admin/api/nothing`);
    assert.equal(res.status, 404);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'not_found');
  });
});
