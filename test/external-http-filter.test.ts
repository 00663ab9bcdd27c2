import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { ConfigError } from '../src/config/errors.js';
import { Endpoint } from '../src/discovery/endpoint.js';
import { RequestHeaders } from '../src/extproc/headers.js';
import { createLogger } from '../src/log.js';
import type { RoutingRequest } from '../src/request/routing-request.js';
import { CircuitBreaker } from '../src/scheduling/filters/circuit-breaker.js';
import { createExternalFilters, type ExternalFilterOptions, type ExternalHttpFilter } from '../src/scheduling/filters/external-http.js';
import { type ExternalFilterConfig, parseExternalFilters } from '../src/scheduling/filters/external-http-config.js';
import { requestBody } from '../src/scheduling/filters/external-http-wire.js';
import { promptOf } from '../src/scheduling/filters/prompt.js';
import { PluginError, type SchedulingRequest } from '../src/scheduling/types.js';
import { captureLogs } from './support/harness.js';
import { metricBy, metricValue } from './support/metrics.js';
import { defer, until } from './support/wait.js';

// ---------------------------------------------------------------------------------------------
// Fake plugins, requests, endpoints

interface Plugin {
  url: string;
  /** Parsed bodies of the requests, in order. */
  bodies: Record<string, unknown>[];
  requests: IncomingMessage[];
  connections: Socket[];
  server: Server;
}

const servers: Server[] = [];
const filters: ExternalHttpFilter[] = [];
after(async () => {
  for (const filter of filters) filter.close();
  for (const server of servers) server.closeAllConnections();
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
});

let plugins = 0;
/** A plugin server on a loopback address of 127.0.0.161-180 (in turn); `handler` answers each request once its body is read. */
async function plugin(handler: (req: IncomingMessage, res: ServerResponse, body: Record<string, unknown>) => void, path = ''): Promise<Plugin> {
  const host = `127.0.0.${161 + (plugins++ % 20)}`;
  const bodies: Record<string, unknown>[] = [];
  const requests: IncomingMessage[] = [];
  const connections: Socket[] = [];
  const server = createServer((req, res) => {
    requests.push(req);
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown>;
      bodies.push(body);
      handler(req, res, body);
    });
  });
  server.on('connection', (socket: Socket) => connections.push(socket));
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return { url: `http://${host}:${(server.address() as AddressInfo).port}${path}`, bodies, requests, connections, server };
}

const json = (res: ServerResponse, value: unknown, status = 200) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(typeof value === 'string' ? value : JSON.stringify(value));
};

/** A plugin that keeps the candidates `keep` picks (by default all of them). */
const keeping = (keep: (pods: { name: string; namespace: string }[]) => unknown = (pods) => pods) =>
  plugin((_req, res, body) => json(res, keep(podNames(body.pods))));

function podNames(pods: unknown): { name: string; namespace: string }[] {
  return (pods as { pod: { namespaced_name: { name: string; namespace: string } } }[]).map((p) => p.pod.namespaced_name);
}

function config(url: string, fields: Partial<ExternalFilterConfig> = {}): ExternalFilterConfig {
  const [parsed] = parseExternalFilters({ EXTERNAL_HTTP_FILTERS: JSON.stringify([{ name: fields.name ?? 'test', url, timeout_ms: 2000 }]) });
  return { ...parsed!, ...fields };
}

interface Setup {
  filter: ExternalHttpFilter;
  registry: Registry;
  logs: ReturnType<typeof captureLogs>;
}

function setup(configValue: ExternalFilterConfig, options: ExternalFilterOptions = {}): Setup {
  const registry = new Registry();
  const logs = captureLogs();
  const [filter] = createExternalFilters([configValue], createLogger('debug', logs.stream), registry, options);
  filters.push(filter!);
  return { filter: filter!, registry, logs };
}

function endpoint(address: string, name: string, namespace = 'ml-serving', labels: Record<string, string> = {}): Endpoint {
  const e = new Endpoint({ address, name, namespace, labels });
  e.healthy = true;
  return e;
}

const PODS = [endpoint('10.0.1.100:8000', 'model-server-1'), endpoint('10.0.1.101:8000', 'model-server-2'), endpoint('10.0.1.102:8000', 'model-server-3')];

const ROUTING: RoutingRequest = {
  method: 'POST',
  path: '/v1/chat/completions',
  model: 'llama-7b',
  ownedBy: undefined,
  ownedBySource: undefined,
  routeName: undefined,
  requestId: 'req-12345',
};

function headers(record: [string, string][]): RequestHeaders {
  return new RequestHeaders(record.map(([key, value]) => ({ key, raw_value: Buffer.from(value), value: '' })));
}

function schedulingRequest(fields: Partial<SchedulingRequest> = {}): SchedulingRequest {
  return {
    routing: ROUTING,
    headers: headers([[':path', '/v1/chat/completions']]),
    body: Buffer.from(JSON.stringify({ model: 'llama-7b', messages: [{ role: 'user', content: 'Hello, world!' }] })),
    signal: new AbortController().signal,
    initialCandidates: PODS,
    ...fields,
  };
}

const names = (list: readonly Endpoint[]) => list.map((e) => e.name);

/** Calls by result (zero results left out). */
const counts = (registry: Registry) => metricBy(registry, 'llm_extproc_external_filter_calls_total', 'result', { dropZero: true });

// ---------------------------------------------------------------------------------------------

describe('external HTTP filter: the request', () => {
  it("POSTs seed 000's body to <url>/filter, field by field", async () => {
    const p = await keeping(undefined);
    const withFigures = endpoint('10.0.1.100:8000', 'model-server-1', 'ml-serving', { model: 'llama-7b', gpu: 'true' });
    withFigures.load = {
      metrics: {
        active_models: { 'llama-7b': 2 },
        waiting_models: {},
        max_active_models: 4,
        running_queue_size: 2,
        waiting_queue_size: 1,
        kv_cache_usage_percent: 65.5,
        kv_cache_max_token_capacity: 8192,
      },
      updateTime: new Date('2025-06-09T10:30:00.250Z'),
      freshUntil: 0,
      inFlightAtScrape: 0,
    };
    const noFigures = endpoint('[fd00::7]:8000', 'model-server-2');
    const staticHost = new Endpoint({ address: '127.0.0.1:8001', name: 'http://vllm-0:8001', namespace: 'static', labels: {} });
    const { filter } = setup(config(`${p.url}/external/sample`));
    const request = schedulingRequest({
      headers: headers([
        [':method', 'POST'],
        [':path', '/v1/chat/completions'],
        ['user-agent', 'test-client'],
        ['x-gateway-destination-endpoint', '6.6.6.6:80'],
        ['accept', 'text/plain'],
        ['accept', 'application/json'],
        ['cookie', 'a=1'],
        ['cookie', 'b=2'],
      ]),
      initialCandidates: [withFigures, noFigures, staticHost],
    });
    await filter.filter(request, [withFigures, noFigures]);

    const req = p.requests[0]!;
    assert.equal(req.method, 'POST');
    assert.equal(req.url, '/external/sample/filter');
    assert.equal(req.headers['content-type'], 'application/json');
    assert.equal(req.headers['x-request-id'], 'req-12345');

    const body = p.bodies[0]!;
    assert.deepEqual(Object.keys(body), ['sched_context', 'pods']);
    const sched = body.sched_context as Record<string, unknown>;
    assert.deepEqual(Object.keys(sched), ['request', 'pods']);
    const r = sched.request as Record<string, unknown>;
    assert.deepEqual(Object.keys(r), ['target_model', 'request_id', 'critical', 'prompt', 'headers']);
    assert.equal(r.target_model, 'llama-7b');
    assert.equal(r.request_id, 'req-12345');
    assert.equal(r.critical, false);
    assert.equal(r.prompt, '<|im_start|>user\nHello, world!<|im_end|>\n');
    // Pseudo-headers kept; repeated names joined; our own destination header never forwarded.
    assert.deepEqual(r.headers, {
      ':method': 'POST',
      ':path': '/v1/chat/completions',
      'user-agent': 'test-client',
      accept: 'text/plain, application/json',
      cookie: 'a=1; b=2',
    });

    const all = sched.pods as Record<string, unknown>[];
    const candidates = body.pods as Record<string, unknown>[];
    assert.deepEqual(names2(all), ['model-server-1', 'model-server-2', 'http://vllm-0:8001']);
    assert.deepEqual(names2(candidates), ['model-server-1', 'model-server-2']);

    const [first, second] = candidates as [Record<string, unknown>, Record<string, unknown>];
    assert.deepEqual(Object.keys(first), ['pod', 'metrics', 'update_time']);
    assert.deepEqual(first.pod, {
      namespaced_name: { name: 'model-server-1', namespace: 'ml-serving' },
      address: '10.0.1.100',
      labels: { model: 'llama-7b', gpu: 'true' },
    });
    assert.deepEqual(first.metrics, {
      active_models: { 'llama-7b': 2 },
      waiting_models: {},
      max_active_models: 4,
      running_queue_size: 2,
      waiting_queue_size: 1,
      kv_cache_usage_percent: 65.5,
      kv_cache_max_token_capacity: 8192,
      update_time: '2025-06-09 10:30:00',
    });
    assert.equal(first.update_time, '2025-06-09T10:30:00Z');
    // No scrape yet: no metrics, no update_time (not zeros, which would read as an idle pod).
    assert.deepEqual(second, { pod: { namespaced_name: { name: 'model-server-2', namespace: 'ml-serving' }, address: 'fd00::7', labels: {} } });
    // A static host: its name is the configured spec, its namespace "static".
    assert.deepEqual((all[2] as { pod: unknown }).pod, {
      namespaced_name: { name: 'http://vllm-0:8001', namespace: 'static' },
      address: '127.0.0.1',
      labels: {},
    });
  });

  it('a pod is serialised once per scrape: a new scrape or new labels show at once', () => {
    const pod = endpoint('10.0.1.200:8000', 'cached-pod');
    const figures = (waiting: number) => ({
      metrics: {
        active_models: {},
        waiting_models: {},
        max_active_models: 0,
        running_queue_size: 1,
        waiting_queue_size: waiting,
        kv_cache_usage_percent: 10,
        kv_cache_max_token_capacity: 0,
      },
      updateTime: new Date('2026-01-01T00:00:00Z'),
      freshUntil: 0,
      inFlightAtScrape: 0,
    });
    const sent = () => JSON.parse(requestBody(schedulingRequest({ initialCandidates: [pod] }), [pod], '', 'x-gateway-destination-endpoint')).pods[0];
    pod.load = figures(1);
    assert.equal(sent().metrics.waiting_queue_size, 1);
    assert.equal(sent().metrics.waiting_queue_size, 1, 'the same scrape: the same JSON');
    pod.load = figures(7);
    assert.equal(sent().metrics.waiting_queue_size, 7, 'a new scrape is sent at once');
    pod.labels = { tier: 'gold' };
    assert.deepEqual(sent().pod.labels, { tier: 'gold' }, 'new labels are sent at once');
    pod.load = undefined;
    assert.equal(sent().metrics, undefined, 'a failed scrape drops the figures');
  });

  it('joins /filter as a URL: with or without a trailing slash, and with no path', async () => {
    const p = await keeping(undefined);
    for (const suffix of ['/external/sample/', '/external/sample', '', '/']) {
      const { filter } = setup(config(p.url + suffix));
      await filter.filter(schedulingRequest(), PODS);
    }
    assert.deepEqual(
      p.requests.map((r) => r.url),
      ['/external/sample/filter', '/external/sample/filter', '/filter', '/filter'],
    );
  });

  it('sends the completions prompt', async () => {
    const p = await keeping(undefined);
    const { filter } = setup(config(p.url));
    await filter.filter(schedulingRequest({ body: Buffer.from('{"model":"m","prompt":"Once upon a time"}') }), PODS);
    assert.equal((p.bodies[0]!.sched_context as { request: { prompt: unknown } }).request.prompt, 'Once upon a time');
  });

  it('send_prompt false sends "" without reading the body', async () => {
    const p = await keeping(undefined);
    const { filter } = setup(config(p.url, { sendPrompt: false }));
    const request = schedulingRequest();
    Object.defineProperty(request, 'body', {
      get() {
        throw new Error('the body was read');
      },
    });
    const kept = await filter.filter(request, PODS);
    assert.equal(kept.length, 3);
    assert.equal((p.bodies[0]!.sched_context as { request: { prompt: unknown } }).request.prompt, '');
  });

  it('reuses one keep-alive connection for sequential calls', async () => {
    const p = await keeping(undefined);
    const { filter } = setup(config(p.url));
    for (let i = 0; i < 4; i++) await filter.filter(schedulingRequest(), PODS);
    assert.equal(p.requests.length, 4);
    assert.equal(p.connections.length, 1);
  });

  it('retries once on a new connection when the plugin closed the idle one', async () => {
    const p = await keeping(undefined);
    const { filter, registry } = setup(config(p.url));
    await filter.filter(schedulingRequest(), PODS);
    assert.equal(p.connections.length, 1);
    // Closed by the plugin in the same turn as the next call: the client still holds it as idle.
    p.connections[0]!.destroy();
    const kept = await filter.filter(schedulingRequest(), PODS);
    assert.equal(kept.length, 3);
    assert.equal(p.connections.length, 2);
    assert.deepEqual(await counts(registry), { success: 2 });
  });
});

describe('external HTTP filter: the prompt', () => {
  const body = (value: unknown) => Buffer.from(JSON.stringify(value));
  it('builds the chat prompt from string-content messages, skipping the others', () => {
    const prompt = promptOf(
      body({
        model: 'm',
        messages: [
          { role: 'system', content: 'Be brief.' },
          { role: 'user', content: [{ type: 'text', text: 'parts are skipped' }] },
          { role: 'user', content: 'Hi' },
          { content: 'no role' },
          'not an object',
        ],
      }),
    );
    assert.equal(prompt, '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n');
  });
  it('takes the completions prompt: a string, or strings joined by newlines; anything else is ""', () => {
    assert.equal(promptOf(body({ prompt: 'abc' })), 'abc');
    assert.equal(promptOf(body({ prompt: ['a', 'b'] })), 'a\nb');
    assert.equal(promptOf(body({ prompt: [1, 2, 3] })), '');
    assert.equal(promptOf(body({ prompt: 7 })), '');
    assert.equal(promptOf(body({ model: 'm' })), '');
  });
  it('uses messages when both are present, and gives "" for no body or one that does not parse', () => {
    assert.equal(promptOf(body({ prompt: 'p', messages: [{ role: 'user', content: 'c' }] })), '<|im_start|>user\nc<|im_end|>\n');
    assert.equal(promptOf(undefined), '');
    assert.equal(promptOf(Buffer.from('{"model":"m","messages":[{"role":"user","content":"cut at the buf')), '');
    assert.equal(promptOf(Buffer.from('[1]')), '');
  });
});

function names2(pods: Record<string, unknown>[]): string[] {
  return podNames(pods).map((n) => n.name);
}

describe('external HTTP filter: answers', () => {
  it('keeps the pods named, in the candidates’ order, duplicates once', async () => {
    const p = await keeping((pods) => [pods[2], pods[0], pods[2]]);
    const { filter, registry } = setup(config(p.url));
    assert.deepEqual(names(await filter.filter(schedulingRequest(), PODS)), ['model-server-1', 'model-server-3']);
    assert.deepEqual(await counts(registry), { success: 1 });
  });

  it('matches by namespace and name: the same name in another namespace is not kept', async () => {
    const p = await keeping(() => [{ name: 'model-server-1', namespace: 'other' }]);
    const { filter } = setup(config(p.url));
    assert.deepEqual(names(await filter.filter(schedulingRequest(), PODS)), []);
  });

  it('ignores pods it did not send as candidates; counts them, logs once', async () => {
    const p = await keeping((pods) => [pods[0], { name: 'ghost', namespace: 'ml-serving' }, { name: 'model-server-3', namespace: 'ml-serving' }]);
    const { filter, registry, logs } = setup(config(p.url));
    // model-server-3 is in sched_context.pods but no longer a candidate: it cannot come back.
    const kept = await filter.filter(schedulingRequest(), PODS.slice(0, 2));
    assert.deepEqual(names(kept), ['model-server-1']);
    await filter.filter(schedulingRequest(), PODS.slice(0, 2));
    assert.equal(await metricValue(registry, 'llm_extproc_external_filter_unknown_pods_total'), 4);
    const warned = logs.lines.filter((l) => String(l.msg).includes('not among the candidates'));
    assert.equal(warned.length, 1);
    assert.deepEqual(warned[0]!.examples, ['ml-serving/ghost', 'ml-serving/model-server-3']);
  });

  it('an empty list keeps nothing', async () => {
    const p = await keeping(() => []);
    const { filter, registry } = setup(config(p.url));
    assert.deepEqual(await filter.filter(schedulingRequest(), PODS), []);
    assert.deepEqual(await counts(registry), { success: 1 });
  });

  it('is not called without candidates', async () => {
    const p = await keeping(undefined);
    const { filter } = setup(config(p.url));
    assert.deepEqual(await filter.filter(schedulingRequest(), []), []);
    assert.equal(p.requests.length, 0);
  });

  // [what, the plugin's handler, result label, reason, the call's time budget (short where the timeout is the point)]
  const failures: [string, (req: IncomingMessage, res: ServerResponse) => void, string, RegExp, number?][] = [
    ['not JSON', (_q, res) => json(res, 'Hello'), 'bad_answer', /the answer is not JSON/],
    ['a JSON object', (_q, res) => json(res, { pods: [] }), 'bad_answer', /not a JSON list but object/],
    ['items of the wrong shape', (_q, res) => json(res, [{ name: 'model-server-1' }]), 'bad_answer', /item 1 of the answer is not/],
    ['500', (_q, res) => json(res, 'plugin broke\n', 500), 'http_status', /answered 500: plugin broke$/],
    ['204', (_q, res) => res.writeHead(204).end(), 'http_status', /answered 204$/],
    ['a closed connection', (req) => req.socket.destroy(), 'transport', /connection reset \(ECONNRESET\)/],
    ['no answer (hang)', () => {}, 'timeout', /no answer within 100 ms/, 100],
    // The plugin answers only once llm-extproc has given up on the call (its timeout closed the request).
    ['an answer after the timeout', (_q, res) => res.once('close', () => json(res, [])), 'timeout', /no answer within 100 ms/, 100],
    ['too large an answer', (_q, res) => json(res, `[${'{"name":"x","namespace":"y"},'.repeat(40_000)}{}]`), 'too_large', /over the limit/],
  ];

  for (const [what, handler, result, reason, timeoutMs = 5000] of failures) {
    it(`fails on ${what}: fail-open keeps every candidate, fail-closed throws PluginError`, async () => {
      const p = await plugin((req, res) => handler(req, res));
      const open = setup(config(p.url, { name: 'lenient', timeoutMs }));
      assert.deepEqual(names(await open.filter.filter(schedulingRequest(), PODS.slice(1))), ['model-server-2', 'model-server-3']);
      assert.deepEqual(await counts(open.registry), { [result]: 1 });
      const warned = open.logs.lines.find((l) => l.msg === 'external filter failed; keeping every candidate');
      assert.match(String(warned?.reason), reason);
      assert.equal(warned?.requestId, 'req-12345');
      assert.equal(await metricValue(open.registry, 'llm_extproc_external_filter_fail_open_total'), 1);

      const closed = setup(config(p.url, { name: 'strict', timeoutMs, failOpen: false }));
      await assert.rejects(closed.filter.filter(schedulingRequest(), PODS), (err: unknown) => {
        assert.ok(err instanceof PluginError);
        assert.equal(err.plugin, 'strict');
        assert.match(err.message, /^external filter "strict" failed: POST http:\/\/[\d.:]+\/filter/);
        assert.match(err.message, reason);
        return true;
      });
      assert.deepEqual(await counts(closed.registry), { [result]: 1 });
      assert.equal(await metricValue(closed.registry, 'llm_extproc_external_filter_fail_open_total'), 0, 'fail-closed is no fail-open');
    });
  }

  it('fails on a refused connection', async () => {
    const p = await keeping(undefined);
    await new Promise((resolve) => p.server.close(resolve));
    const { filter, registry, logs } = setup(config(p.url));
    assert.equal((await filter.filter(schedulingRequest(), PODS)).length, 3);
    assert.deepEqual(await counts(registry), { transport: 1 });
    assert.match(String(logs.lines.at(-1)?.reason), /connection refused \(ECONNREFUSED\)/);
  });

  it('observes the duration of each call made', async () => {
    const p = await keeping(undefined);
    const { filter, registry } = setup(config(p.url));
    await filter.filter(schedulingRequest(), PODS);
    await filter.filter(schedulingRequest(), PODS);
    assert.equal(await metricValue(registry, 'llm_extproc_external_filter_duration_seconds', {}, '_count'), 2);
  });
});

describe('external HTTP filter: cancellation', () => {
  it("the request's signal aborts the call mid-way: rejects with its reason, not a plugin failure", async () => {
    const arrived = defer();
    const p = await plugin(() => arrived.resolve());
    const { filter, registry, logs } = setup(config(p.url, { failOpen: false, timeoutMs: 10_000 }), { breaker: { threshold: 1, baseMs: 1000, maxMs: 1000 } });
    const controller = new AbortController();
    const call = filter.filter(schedulingRequest({ signal: controller.signal }), PODS);
    await arrived.promise;
    const closed = defer();
    p.requests[0]!.socket.on('close', () => closed.resolve());
    const reason = new Error('stream reset');
    controller.abort(reason);
    await assert.rejects(call, (err) => err === reason);
    await closed.promise; // the call's connection is torn down
    assert.deepEqual(await counts(registry), { cancelled: 1 });
    assert.equal(logs.lines.filter((l) => Number(l.level) >= 40).length, 0);
    // A threshold of 1 would have opened the circuit on a failure: the next call goes to the plugin.
    const next = filter.filter(schedulingRequest(), PODS);
    await until(
      'the second call to arrive',
      () => p.requests.length,
      (n) => n === 2,
    );
    p.server.closeAllConnections();
    await assert.rejects(next, PluginError);
  });

  it('an already aborted signal makes no call', async () => {
    const p = await keeping(undefined);
    const { filter } = setup(config(p.url));
    const controller = new AbortController();
    controller.abort(new Error('gone'));
    await assert.rejects(filter.filter(schedulingRequest({ signal: controller.signal }), PODS), /gone/);
    assert.equal(p.requests.length, 0);
  });
});

describe('external HTTP filter: circuit breaker', () => {
  it('opens after 5 consecutive failures, retries after a doubling back-off, closes on success; logs once each', async () => {
    let healthy = false;
    const p = await plugin((_req, res, body) => (healthy ? json(res, podNames(body.pods)) : json(res, 'down', 503)));
    let now = 0;
    const { filter, registry, logs } = setup(config(p.url), { now: () => now, breaker: { threshold: 5, baseMs: 1000, maxMs: 3000 } });
    const call = () => filter.filter(schedulingRequest(), PODS);
    const opened = () => logs.lines.filter((l) => String(l.msg).startsWith('external filter circuit opened'));
    const gauge = () => metricValue(registry, 'llm_extproc_external_filter_circuit_open');

    for (let i = 0; i < 4; i++) await call();
    assert.equal(opened().length, 0);
    await call();
    assert.equal(p.requests.length, 5);
    assert.equal(opened().length, 1);
    assert.equal(opened()[0]!.openMs, 1000);
    assert.equal(await gauge(), 1);

    // Open: skipped, failing open (every candidate kept).
    assert.equal((await call()).length, 3);
    now = 999;
    await call();
    assert.equal(p.requests.length, 5);
    assert.deepEqual(await counts(registry), { http_status: 5, skipped: 2 });

    // The period is over: one trial, which fails and doubles the period.
    now = 1000;
    await call();
    assert.equal(p.requests.length, 6);
    now = 2999;
    await call();
    assert.equal(p.requests.length, 6);
    now = 3000;
    await call();
    assert.equal(p.requests.length, 7);
    // Capped at 3000 (not 4000).
    now = 6000;
    healthy = true;
    assert.equal((await call()).length, 3);
    assert.equal(p.requests.length, 8);
    assert.equal(await gauge(), 0);
    const closedLogs = logs.lines.filter((l) => String(l.msg).startsWith('external filter circuit closed'));
    assert.equal(closedLogs.length, 1);
    assert.equal(opened().length, 1);

    // Closed again, with a fresh count: four failures do not open it.
    healthy = false;
    for (let i = 0; i < 4; i++) await call();
    assert.equal(p.requests.length, 12);
    await call();
    assert.equal(opened().length, 2);
    assert.equal(opened()[1]!.openMs, 1000);
  });

  it('a success in between resets the count', async () => {
    let answers = 0;
    const p = await plugin((_req, res) => (++answers % 5 === 0 ? json(res, []) : json(res, 'down', 500)));
    const { filter, logs } = setup(config(p.url), { now: () => 0 });
    for (let i = 0; i < 12; i++) await filter.filter(schedulingRequest(), PODS);
    assert.equal(p.requests.length, 12);
    assert.equal(logs.lines.filter((l) => String(l.msg).startsWith('external filter circuit opened')).length, 0);
  });

  it('skipping follows fail-closed: PluginError naming the plugin', async () => {
    const p = await plugin((_req, res) => json(res, 'down', 500));
    const { filter } = setup(config(p.url, { name: 'strict', failOpen: false }), { now: () => 0, breaker: { threshold: 2, baseMs: 1000, maxMs: 1000 } });
    for (let i = 0; i < 2; i++) await assert.rejects(filter.filter(schedulingRequest(), PODS), PluginError);
    await assert.rejects(
      filter.filter(schedulingRequest(), PODS),
      /external filter "strict" failed: skipped: the circuit is open after 2 consecutive failures/,
    );
    assert.equal(p.requests.length, 2);
  });

  it('lets one trial through at a time while half-open', () => {
    let now = 0;
    const breaker = new CircuitBreaker({ threshold: 1, baseMs: 10, maxMs: 100 }, () => now);
    assert.deepEqual(breaker.admit(), { admitted: true, trial: false });
    assert.equal(breaker.failure(false)?.kind, 'opened');
    now = 10;
    assert.deepEqual(breaker.admit(), { admitted: true, trial: true });
    assert.equal(breaker.admit().admitted, false);
    // A late failure of a call admitted before the circuit opened changes nothing.
    assert.equal(breaker.failure(false), undefined);
    breaker.abandoned(true);
    assert.deepEqual(breaker.admit(), { admitted: true, trial: true });
    assert.equal(breaker.success(true)?.kind, 'closed');
    assert.deepEqual(breaker.admit(), { admitted: true, trial: false });
  });
});

describe('external HTTP filter: EXTERNAL_HTTP_FILTERS', () => {
  const parse = (value: string, variable = 'EXTERNAL_HTTP_FILTERS') => parseExternalFilters({ [variable]: value });

  it("reads seed 000's entries, with our defaults", () => {
    assert.deepEqual(parseExternalFilters({}), []);
    assert.deepEqual(parse('  '), []);
    const [entry] = parse('[{"name":"load", "url":"http://sample-plugins-server-service:80/external/sample", "weight": 1}]');
    assert.equal(entry!.name, 'load');
    assert.equal(entry!.url, 'http://sample-plugins-server-service:80/external/sample');
    assert.equal(entry!.filterUrl.href, 'http://sample-plugins-server-service/external/sample/filter');
    assert.equal(entry!.weight, 1);
    assert.equal(entry!.timeoutMs, 50);
    assert.equal(entry!.failOpen, true);
    assert.equal(entry!.sendPrompt, true);
    const [own] = parse('[{"name":"b","url":"https://p:8443/","timeout_ms":250,"fail_open":false,"send_prompt":false}]');
    assert.deepEqual(
      { ...own, filterUrl: own!.filterUrl.href },
      {
        name: 'b',
        url: 'https://p:8443/',
        filterUrl: 'https://p:8443/filter',
        weight: undefined,
        timeoutMs: 250,
        failOpen: false,
        sendPrompt: false,
      },
    );
  });

  const bad: [string, RegExp][] = [
    ['[{"name":"a","url":"http://p"', /^EXTERNAL_HTTP_FILTERS: is not valid JSON/],
    ['{"name":"a","url":"http://p"}', /is not a JSON list/],
    ['["a"]', /entry 1: is not a JSON object/],
    ['[{"url":"http://p"}]', /entry 1: has no "name"/],
    ['[{"name":"","url":"http://p"}]', /entry 1: "name" "" is not a name/],
    ['[{"name":"a b","url":"http://p"}]', /"name" "a b" is not a name/],
    ['[{"name":"a"}]', /entry 1 \("a"\): has no "url"/],
    ['[{"name":"a","url":"p:80/x"}]', /"url" "p:80\/x" is not http or https/],
    ['[{"name":"a","url":"not a url"}]', /"url" "not a url" is not a URL/],
    ['[{"name":"a","url":"ftp://p/x"}]', /is not http or https/],
    ['[{"name":"a","url":"http://u:pw@p/x"}]', /holds credentials/],
    ['[{"name":"a","url":"http://p/x?y=1"}]', /has a query or fragment/],
    ['[{"name":"a","url":"http://p"},{"name":"a","url":"http://q"}]', /the name "a" is used twice/],
    ['[{"name":"a","url":"http://p","weight":"1"}]', /"weight" is not a non-negative integer/],
    ['[{"name":"a","url":"http://p","timeout_ms":0}]', /"timeout_ms" is not an integer from 1 to 10000/],
    ['[{"name":"a","url":"http://p","timeout_ms":1.5}]', /"timeout_ms" is not an integer/],
    ['[{"name":"a","url":"http://p","fail_open":"no"}]', /"fail_open" is not true or false/],
    ['[{"name":"a","url":"http://p","send_prompt":1}]', /"send_prompt" is not true or false/],
    ['[{"name":"a","url":"http://p","timeout":100}]', /entry 1 \("a"\): unknown key "timeout"/],
    ['[{"name":"a","url":"http://p"},{"name":"b","url":"http://q","fail_open":null,"x":1}]', /entry 2 \("b"\): unknown key "x"/],
  ];
  for (const [value, message] of bad) {
    it(`refuses ${value}`, () => {
      assert.throws(
        () => parse(value),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError);
          assert.equal(err.flag, 'EXTERNAL_HTTP_FILTERS');
          assert.match(err.line, message);
          assert.doesNotMatch(err.line, /\n/);
          return true;
        },
      );
    });
  }

  it('refuses prefill filters: llm-extproc has no prefill scheduler', () => {
    assert.throws(
      () => parse('[{"name":"load","url":"http://sample-plugins-server-service:80/external/sample"}]', 'EXTERNAL_HTTP_PREFILL_FILTERS'),
      (err: unknown) =>
        err instanceof ConfigError && err.flag === 'EXTERNAL_HTTP_PREFILL_FILTERS' && /"load".*no prefill scheduler.*EXTERNAL_HTTP_FILTERS/.test(err.line),
    );
    assert.throws(
      () => parse('nope', 'EXTERNAL_HTTP_PREFILL_FILTERS'),
      (err: unknown) => err instanceof ConfigError && err.line.startsWith('EXTERNAL_HTTP_PREFILL_FILTERS: is not valid JSON'),
    );
    assert.deepEqual(parseExternalFilters({ EXTERNAL_HTTP_PREFILL_FILTERS: '[]', EXTERNAL_HTTP_FILTERS: '[]' }), []);
  });
});

describe('RequestHeaders.entries', () => {
  it('lists every header in order, from either value field', () => {
    assert.deepEqual(
      headers([
        [':path', '/x'],
        ['a', '1'],
        ['a', '2'],
      ]).entries(),
      [
        [':path', '/x'],
        ['a', '1'],
        ['a', '2'],
      ],
    );
    const old = new RequestHeaders([
      { key: 'b', value: 'v', raw_value: Buffer.alloc(0) },
      { key: 'c', value: '', raw_value: Buffer.alloc(0) },
    ]);
    assert.deepEqual(old.entries(), [
      ['b', 'v'],
      ['c', ''],
    ]);
  });
});
