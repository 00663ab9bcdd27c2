import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError } from '../src/config/errors.js';
import { Endpoint } from '../src/discovery/endpoint.js';
import { RequestHeaders } from '../src/extproc/headers.js';
import { SCAN_SLICE_BYTES } from '../src/request/json-scan.js';
import {
  createSessionAffinity,
  MAX_HASHED_KEY_BYTES,
  MAX_KEY_BYTES,
  SESSION_AFFINITY_DEFAULTS,
  type SessionAffinityFilter,
  sessionKey,
} from '../src/scheduling/filters/session-affinity.js';
import type { SchedulingRequest } from '../src/scheduling/types.js';
import { healthyEndpoints } from './support/endpoints.js';

interface RequestOptions {
  headers?: Record<string, string>;
  body?: Buffer | string;
  signal?: AbortSignal;
}

function request({ headers = {}, body, signal = new AbortController().signal }: RequestOptions = {}): SchedulingRequest {
  return {
    routing: { method: 'POST', path: '/v1/chat/completions', model: 'm', ownedBy: undefined, ownedBySource: undefined, routeName: undefined, requestId: 'r' },
    headers: new RequestHeaders(Object.entries(headers).map(([key, value]) => ({ key, raw_value: Buffer.from(value), value: '' }))),
    body: typeof body === 'string' ? Buffer.from(body) : body,
    signal,
    initialCandidates: [],
  };
}

const session = (id: string): SchedulingRequest => request({ headers: { 'x-session-id': id } });

/**
 * One scheduling decision as the chain makes it: the filter narrows, `choose` picks among what is
 * left (the rest of the chain), and the filter hears of the pick.
 */
async function decide(
  filter: SessionAffinityFilter,
  req: SchedulingRequest,
  candidates: readonly Endpoint[],
  choose: (left: readonly Endpoint[]) => Endpoint = (left) => left[0]!,
): Promise<{ left: readonly Endpoint[]; picked: Endpoint }> {
  const left = await filter.filter(req, candidates);
  const picked = choose(left);
  filter.picked(req, picked);
  return { left, picked };
}

/** A picker that cycles through the candidates, so an unpinned request rarely lands where the last one did. */
function cycling(): (left: readonly Endpoint[]) => Endpoint {
  let next = 0;
  return (left) => left[next++ % left.length]!;
}

/** A manual clock, in performance.now() milliseconds. */
function fakeClock(start = 1000): { now: () => number; advance(ms: number): void } {
  let t = start;
  return {
    now: () => t,
    advance(ms) {
      t += ms;
    },
  };
}

function figures(endpoint: Endpoint, waiting: number, freshUntil: number): void {
  endpoint.load = {
    metrics: {
      active_models: {},
      waiting_models: {},
      max_active_models: 0,
      running_queue_size: 4,
      waiting_queue_size: waiting,
      kv_cache_usage_percent: 50,
      kv_cache_max_token_capacity: 0,
    },
    updateTime: new Date(),
    freshUntil,
    inFlightAtScrape: 0,
  };
}

describe('session-affinity: pinning', () => {
  it('holds a session on its first endpoint across requests, while unkeyed requests spread', async () => {
    const filter = createSessionAffinity({});
    const list = healthyEndpoints(4);
    const choose = cycling();
    const first = await decide(filter, session('s1'), list, choose);
    for (let i = 0; i < 20; i++) {
      const { left, picked } = await decide(filter, session('s1'), list, choose);
      assert.deepEqual(left, [first.picked], `request ${i} was narrowed to the pinned endpoint`);
      assert.equal(picked, first.picked);
    }
    // Control: the same chooser without a key visits every endpoint.
    const seen = new Set<Endpoint>();
    for (let i = 0; i < 8; i++) seen.add((await decide(filter, request(), list, choose)).picked);
    assert.equal(seen.size, 4);
  });

  it('keeps separate sessions apart', async () => {
    const filter = createSessionAffinity({});
    const list = healthyEndpoints(3);
    const choose = cycling();
    const a = (await decide(filter, session('a'), list, choose)).picked;
    const b = (await decide(filter, session('b'), list, choose)).picked;
    assert.notEqual(a, b);
    assert.deepEqual(await filter.filter(session('a'), list), [a]);
    assert.deepEqual(await filter.filter(session('b'), list), [b]);
  });

  it('falls back when the endpoint leaves the candidates, and re-pins to the new one', async () => {
    const filter = createSessionAffinity({});
    const list = healthyEndpoints(3);
    const [a, b] = list as [Endpoint, Endpoint, Endpoint];
    await decide(filter, session('s'), list, () => a);

    // Unhealthy: the scheduler no longer offers it.
    a.healthy = false;
    const usable = list.filter((endpoint) => endpoint.usable);
    const fallback = await decide(filter, session('s'), usable, () => b);
    assert.equal(fallback.left, usable, 'the candidates come back unchanged (same array)');

    // Back to health: the session now lives on b, where its newest history is.
    a.healthy = true;
    assert.deepEqual(await filter.filter(session('s'), list), [b]);
  });

  it('follows the address, not the object: a pod removed and re-added at its address is found again', async () => {
    const filter = createSessionAffinity({});
    const list = healthyEndpoints(3);
    await decide(filter, session('s'), list, () => list[1]!);
    const replacement = new Endpoint({ address: list[1]!.address, name: 'pod-1-new', namespace: 'ns', labels: {} });
    const next = [list[0]!, replacement, list[2]!];
    assert.deepEqual(await filter.filter(session('s'), next), [replacement]);
  });

  it('a request whose key filter() never read is not remembered by picked()', () => {
    const filter = createSessionAffinity({});
    const list = healthyEndpoints(2);
    filter.picked(session('s'), list[0]!);
    assert.equal(filter.size, 0);
  });
});

describe('session-affinity: overload', () => {
  it('falls back while our in-flight count is above max_in_flight, and returns once it is not', async () => {
    const filter = createSessionAffinity({ max_in_flight: 3 });
    const list = healthyEndpoints(3);
    const a = list[0]!;
    await decide(filter, session('s'), list, () => a);

    a.inFlight = 3;
    assert.deepEqual(await filter.filter(session('s'), list), [a], 'at the limit it still holds');
    a.inFlight = 4;
    assert.equal(await filter.filter(session('s'), list), list, 'above it the candidates come back unchanged');
    a.inFlight = 2;
    assert.deepEqual(await filter.filter(session('s'), list), [a], 'nothing was picked meanwhile: back to a');
  });

  it('after an overload the pin follows the pick and stays there', async () => {
    const filter = createSessionAffinity({ max_in_flight: 3 });
    const list = healthyEndpoints(3);
    const [a, b] = list as [Endpoint, Endpoint, Endpoint];
    await decide(filter, session('s'), list, () => a);
    a.inFlight = 10;
    await decide(filter, session('s'), list, () => b);
    a.inFlight = 0;
    assert.deepEqual(await filter.filter(session('s'), list), [b]);
  });

  it('falls back while fresh engine figures show a waiting queue above max_waiting; stale ones do not count', async () => {
    const clock = fakeClock();
    const filter = createSessionAffinity({ max_waiting: 2 }, 'affinity', clock.now);
    const list = healthyEndpoints(3);
    const a = list[0]!;
    await decide(filter, session('s'), list, () => a);

    figures(a, 2, clock.now() + 1000);
    assert.deepEqual(await filter.filter(session('s'), list), [a], 'at the limit it still holds');
    figures(a, 3, clock.now() + 1000);
    assert.equal(await filter.filter(session('s'), list), list, 'fresh and above: unchanged');
    clock.advance(1000);
    assert.equal(await filter.filter(session('s'), list), list, 'fresh up to freshUntil inclusive');
    clock.advance(1);
    assert.deepEqual(await filter.filter(session('s'), list), [a], 'stale figures are not held against it');
    figures(a, 0, clock.now() + 1000);
    assert.deepEqual(await filter.filter(session('s'), list), [a], 'queue drained: holds again');
  });

  it('uses its documented defaults', async () => {
    const filter = createSessionAffinity({});
    assert.deepEqual({ ...filter.options }, { ...SESSION_AFFINITY_DEFAULTS });
    const list = healthyEndpoints(2);
    const a = list[0]!;
    await decide(filter, session('s'), list, () => a);
    a.inFlight = SESSION_AFFINITY_DEFAULTS.maxInFlight;
    figures(a, SESSION_AFFINITY_DEFAULTS.maxWaiting, performance.now() + 60_000);
    assert.deepEqual(await filter.filter(session('s'), list), [a]);
    a.inFlight++;
    assert.equal(await filter.filter(session('s'), list), list);
  });
});

describe('session-affinity: memory', () => {
  it('forgets a session ttl after its last pick; each pick restarts the ttl', async () => {
    const clock = fakeClock();
    const filter = createSessionAffinity({ ttl: '10s' }, 'affinity', clock.now);
    const list = healthyEndpoints(2);
    const a = list[0]!;
    await decide(filter, session('s'), list, () => a);

    clock.advance(9_999);
    const held = await decide(filter, session('s'), list);
    assert.deepEqual(held.left, [a]);
    clock.advance(9_999);
    assert.deepEqual(await filter.filter(session('s'), list), [a], 'the pick at 9.999 s restarted the ttl');
    clock.advance(1);
    assert.equal(await filter.filter(session('s'), list), list, 'expired 10 s after the last pick');
    assert.equal(filter.size, 0, 'and dropped');
  });

  it('never remembers more than max_sessions, dropping the least recently picked', async () => {
    const filter = createSessionAffinity({ max_sessions: 3 });
    const list = healthyEndpoints(4);
    const choose = cycling();
    const pins = new Map<string, Endpoint>();
    for (let i = 0; i < 50; i++) {
      pins.set(`s${i}`, (await decide(filter, session(`s${i}`), list, choose)).picked);
      assert.ok(filter.size <= 3, `size ${filter.size} after ${i + 1} sessions`);
    }
    for (const id of ['s47', 's48', 's49']) assert.deepEqual(await filter.filter(session(id), list), [pins.get(id)]);
    assert.equal(await filter.filter(session('s46'), list), list, 's46 was evicted');
  });
});

describe('session-affinity: keys', () => {
  it('no key: the candidates come back as the same array, and nothing is remembered', async () => {
    const headerFilter = createSessionAffinity({});
    const bodyFilter = createSessionAffinity({ source: 'body_user' });
    const list = healthyEndpoints(3);
    const unkeyed = [
      [headerFilter, request()],
      [headerFilter, request({ headers: { 'x-session-id': '' } })],
      [headerFilter, request({ headers: { 'x-other': 's' } })],
      [bodyFilter, request()],
      [bodyFilter, request({ body: '' })],
      [bodyFilter, request({ body: '{"model":"m"}' })],
      [bodyFilter, request({ body: '{"model":"m","user":""}' })],
      [bodyFilter, request({ body: '{"model":"m","user":42}' })],
      [bodyFilter, request({ body: '{"model":"m","user":{"id":"s"}}' })],
      [bodyFilter, request({ body: '{"user":"s" oops' })],
    ] as const;
    for (const [filter, req] of unkeyed) {
      const { left } = await decide(filter, req, list);
      assert.equal(left, list);
    }
    assert.equal(headerFilter.size, 0);
    assert.equal(bodyFilter.size, 0);
  });

  it('header source: reads the configured header (case-insensitively configured) and ignores the body', async () => {
    const filter = createSessionAffinity({ header: 'X-Conversation' });
    const list = healthyEndpoints(3);
    // Both conversations also carry the default header and a body user, the same for both.
    const req = (id: string) => request({ headers: { 'x-conversation': id, 'x-session-id': 'shared' }, body: '{"user":"shared"}' });
    await decide(filter, req('c1'), list, () => list[0]!);
    await decide(filter, req('c2'), list, () => list[1]!);
    assert.deepEqual(await filter.filter(req('c1'), list), [list[0]]);
    assert.deepEqual(await filter.filter(req('c2'), list), [list[1]]);
    assert.equal(await filter.filter(session('c1'), list), list, 'the default header is not a key here');
    assert.equal(await filter.filter(request({ body: '{"user":"c1"}' }), list), list, 'nor is the body user');
  });

  it('body_user source: reads the top-level user, not a nested one, and ignores the header', async () => {
    const filter = createSessionAffinity({ source: 'body_user' });
    const list = healthyEndpoints(3);
    const body = '{"model":"m","messages":[{"role":"user","user":"nested"}],"user":"u1"}';
    const first = (await decide(filter, request({ body }), list, () => list[2]!)).picked;
    assert.equal(first, list[2]);
    assert.deepEqual(await filter.filter(request({ body: '{"user":"u1","model":"m"}' }), list), [list[2]]);
    assert.equal(await filter.filter(request({ body: '{"model":"m","user":"nested"}' }), list), list);
    assert.equal(await filter.filter(request({ headers: { 'x-session-id': 'u1' } }), list), list);
  });

  it('body_user: a body larger than one scan slice is scanned asynchronously, and a partial one as far as it goes', async () => {
    const filter = createSessionAffinity({ source: 'body_user' });
    const list = healthyEndpoints(3);
    const prompt = 'x'.repeat(SCAN_SLICE_BYTES * 3);
    const large = request({ body: `{"model":"m","prompt":"${prompt}","user":"big"}` });
    const pending = filter.filter(large, list);
    assert.ok(pending instanceof Promise, 'a large body is scanned in slices');
    assert.equal(await pending, list);
    filter.picked(large, list[1]!);
    assert.deepEqual(await filter.filter(request({ body: '{"user":"big"}' }), list), [list[1]]);

    // BUFFERED_PARTIAL: the body stops inside the prompt, after user.
    const partial = request({ body: `{"model":"m","user":"big","prompt":"${'y'.repeat(1000)}` });
    assert.deepEqual(await filter.filter(partial, list), [list[1]]);
  });

  it('body_user: a sliced scan stops when the request is aborted', async () => {
    const filter = createSessionAffinity({ source: 'body_user' });
    const controller = new AbortController();
    const req = request({ body: `{"prompt":"${'x'.repeat(SCAN_SLICE_BYTES * 4)}","user":"u"}`, signal: controller.signal });
    const pending = filter.filter(req, healthyEndpoints(2));
    controller.abort(new Error('stream ended'));
    await assert.rejects(Promise.resolve(pending), /stream ended/);
  });

  it('keys up to 256 bytes are kept as they are, longer ones up to 8 KiB are hashed, longer still are no key', () => {
    const exact = 'k'.repeat(MAX_KEY_BYTES);
    assert.equal(sessionKey(exact), exact);
    const long = 'k'.repeat(MAX_KEY_BYTES + 1);
    const hashed = sessionKey(long)!;
    assert.match(hashed, /^sha256:[A-Za-z0-9_-]{43}$/);
    assert.ok(Buffer.byteLength(hashed) <= MAX_KEY_BYTES);
    assert.equal(sessionKey(long), hashed, 'deterministic');
    assert.notEqual(sessionKey(`${'k'.repeat(MAX_KEY_BYTES)}j`), hashed, 'distinct long keys stay distinct');
    // Bytes, not characters: 86 euro signs are 258 bytes.
    assert.match(sessionKey('€'.repeat(86))!, /^sha256:/);
    assert.equal(sessionKey('€'.repeat(85)), '€'.repeat(85));
    assert.match(sessionKey('k'.repeat(MAX_HASHED_KEY_BYTES))!, /^sha256:/);
    assert.equal(sessionKey('k'.repeat(MAX_HASHED_KEY_BYTES + 1)), undefined);
    assert.equal(sessionKey(''), undefined);
    assert.equal(sessionKey(undefined), undefined);
  });

  it('a long key pins like a short one; an over-long one is no key, by header or by body', async () => {
    const list = healthyEndpoints(3);
    const headerFilter = createSessionAffinity({});
    const long = 'L'.repeat(4000);
    await decide(headerFilter, session(long), list, () => list[2]!);
    assert.deepEqual(await headerFilter.filter(session(long), list), [list[2]]);
    assert.equal(await headerFilter.filter(session(`${long}M`), list), list, 'a different long key is another session');
    const tooLong = 'T'.repeat(MAX_HASHED_KEY_BYTES + 1);
    assert.equal((await decide(headerFilter, session(tooLong), list)).left, list);
    assert.equal(headerFilter.size, 1);

    const bodyFilter = createSessionAffinity({ source: 'body_user' });
    assert.equal((await decide(bodyFilter, request({ body: `{"user":"${tooLong}"}` }), list)).left, list);
    assert.equal(bodyFilter.size, 0);
  });
});

describe('session-affinity: parameters', () => {
  it('accepts every parameter', () => {
    const filter = createSessionAffinity(
      { source: 'header', header: ' X-Chat-Id ', max_sessions: 50_000, ttl: '30m', max_in_flight: 64, max_waiting: 0 },
      'sticky',
    );
    assert.equal(filter.name, 'sticky');
    assert.equal(filter.type, 'session-affinity');
    assert.deepEqual({ ...filter.options }, { source: 'header', header: 'x-chat-id', maxSessions: 50_000, ttlMs: 1_800_000, maxInFlight: 64, maxWaiting: 0 });
    assert.equal(createSessionAffinity({}).name, 'session-affinity');
    assert.equal(createSessionAffinity({ source: 'body_user' }).options.source, 'body_user');
  });

  it('reads ttl as a duration or a bare number of seconds', () => {
    const ttl = (value: unknown) => createSessionAffinity({ ttl: value }).options.ttlMs;
    assert.equal(ttl('1500ms'), 1500);
    assert.equal(ttl('45s'), 45_000);
    assert.equal(ttl('2h'), 7_200_000);
    assert.equal(ttl(600), 600_000);
    assert.equal(ttl('90'), 90_000);
    assert.equal(ttl('1.5m'), 90_000);
  });

  const bad: [string, Record<string, unknown>, RegExp][] = [
    ['an unknown parameter', { max_session: 10 }, /unknown parameter "max_session"/],
    ['an unknown source', { source: 'cookie' }, /source "cookie" is not one of header, body_user/],
    ['a non-string source', { source: 1 }, /source 1 is not one of/],
    ['header with body_user', { source: 'body_user', header: 'x-a' }, /header applies to source: header only/],
    ['an invalid header name', { header: 'x session' }, /header "x session" is not a valid header name/],
    ['an empty header name', { header: '' }, /header "" is not a valid header name/],
    ['a non-string header', { header: 7 }, /header 7 is not a valid header name/],
    ['max_sessions 0', { max_sessions: 0 }, /max_sessions must be an integer in 1\.\.10000000, not 0/],
    ['a fractional max_sessions', { max_sessions: 1.5 }, /max_sessions must be an integer .* not 1\.5/],
    ['a string max_sessions', { max_sessions: '100' }, /max_sessions must be an integer .* not "100"/],
    ['a huge max_sessions', { max_sessions: 1e9 }, /max_sessions must be an integer/],
    ['a negative max_in_flight', { max_in_flight: -1 }, /max_in_flight must be an integer in 0\.\.1000000, not -1/],
    ['a null max_waiting', { max_waiting: null }, /max_waiting must be an integer .* not null/],
    ['a ttl that is not a duration', { ttl: 'ten minutes' }, /ttl "ten minutes" is not a duration/],
    ['a ttl below 1s', { ttl: '500ms' }, /ttl "500ms" is outside 1s\.\.24h/],
    ['a ttl above 24h', { ttl: '25h' }, /ttl "25h" is outside 1s\.\.24h/],
    ['a zero ttl', { ttl: 0 }, /ttl 0 is outside/],
  ];
  for (const [what, parameters, message] of bad) {
    it(`refuses ${what} with a one-line ConfigError naming the instance`, () => {
      assert.throws(
        () => createSessionAffinity(parameters, 'sticky'),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError);
          assert.equal(err.flag, '--scheduling-config');
          assert.match(err.message, message);
          assert.match(err.message, /^session-affinity "sticky": /);
          assert.ok(err.hint.length > 0);
          assert.doesNotMatch(err.line, /\n/);
          return true;
        },
      );
    });
  }
});
