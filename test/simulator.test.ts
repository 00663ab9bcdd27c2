import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseBackendSpec, parseCli, UsageError } from '../src/simulator/cli.js';
import { type Engine, type Simulator, type SimulatorOptions, startSimulator } from '../src/simulator/simulator.js';

const MODEL = 'Qwen/Qwen2.5-0.5B-Instruct';
const STEP_MS = 5_000; // bound for any single network step

function req(sim: Simulator, path: string, init: RequestInit = {}): Promise<Response> {
  return fetch(sim.url + path, { signal: AbortSignal.timeout(STEP_MS), ...init });
}

function post(sim: Simulator, path: string, body: unknown, init: RequestInit = {}): Promise<Response> {
  return req(sim, path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    ...init,
  });
}

async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = STEP_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** SSE body → list of `data:` payloads, checking the framing on the way. */
function sseEvents(text: string): string[] {
  assert.ok(text.endsWith('\n\n'), 'SSE stream ends with a blank line');
  const events = text.slice(0, -2).split('\n\n');
  return events.map((e) => {
    assert.match(e, /^data: [^\n]*$/, `each SSE event is a single data line: ${JSON.stringify(e.slice(0, 80))}`);
    return e.slice('data: '.length);
  });
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Minimal Prometheus text-format parser that insists on HELP/TYPE before each family's samples. */
function parseExposition(text: string): { samples: Sample[]; types: Map<string, string> } {
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const samples: Sample[] = [];
  assert.ok(text.endsWith('\n'), 'exposition ends with a newline');
  for (const line of text.split('\n')) {
    if (line === '') continue;
    let m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+$/.exec(line);
    if (m) {
      helps.add(m[1]!);
      continue;
    }
    m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (gauge|counter|histogram|summary|untyped)$/.exec(line);
    if (m) {
      types.set(m[1]!, m[2]!);
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `valid sample line: ${line}`);
    const name = m[1]!;
    assert.ok(types.has(name) && helps.has(name), `HELP and TYPE precede ${name}`);
    const labels: Record<string, string> = {};
    const labelRe = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/gy;
    const body = m[2] ?? '';
    let consumed = 0;
    for (const lm of body.matchAll(labelRe)) {
      labels[lm[1]!] = lm[2]!.replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
      consumed = lm.index + lm[0].length;
    }
    assert.equal(consumed, body.length, `labels parse fully: ${line}`);
    const value = Number(m[3]);
    assert.ok(!Number.isNaN(value), `numeric value: ${line}`);
    samples.push({ name, labels, value });
  }
  return { samples, types };
}

async function scrape(sim: Simulator): Promise<Sample[]> {
  const res = await req(sim, '/metrics');
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return parseExposition(await res.text()).samples;
}

function value(samples: Sample[], name: string): number {
  const found = samples.filter((s) => s.name === name);
  assert.equal(found.length, 1, `exactly one ${name} sample`);
  return found[0]!.value;
}

const METRICS: Record<Engine, { running: string; waiting: string; kv: string; cache: string; cacheLabels: string[] }> = {
  vllm: {
    running: 'vllm:num_requests_running',
    waiting: 'vllm:num_requests_waiting',
    kv: 'vllm:kv_cache_usage_perc',
    cache: 'vllm:cache_config_info',
    cacheLabels: ['block_size', 'num_gpu_blocks'],
  },
  sglang: {
    running: 'sglang:num_running_reqs',
    waiting: 'sglang:num_queue_reqs',
    kv: 'sglang:token_usage',
    cache: 'sglang:cache_config_info',
    cacheLabels: ['page_size', 'num_pages'],
  },
};

const chat = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  model: MODEL,
  messages: [{ role: 'user', content: 'Hello! Say hi' }],
  ...extra,
});

describe('backend simulator', () => {
  const sims: Simulator[] = [];
  let vllm: Simulator;
  let sglang: Simulator;
  const byEngine = (): [Engine, Simulator][] => [
    ['vllm', vllm],
    ['sglang', sglang],
  ];
  // Every test that needs a special configuration starts its own pod on its own loopback address.
  let nextHost = 20;
  async function start(opts: Omit<SimulatorOptions, 'host'>): Promise<Simulator> {
    const sim = await startSimulator({ host: `127.0.0.${nextHost++}`, ...opts });
    sims.push(sim);
    return sim;
  }

  before(async () => {
    vllm = await startSimulator({ engine: 'vllm', models: [MODEL], host: '127.0.0.2' });
    sglang = await startSimulator({ engine: 'sglang', models: [MODEL], host: '127.0.0.3' });
    sims.push(vllm, sglang);
  });
  after(async () => {
    await Promise.all(sims.map((s) => s.close()));
  });

  test('identity: address, url, default name', () => {
    assert.match(vllm.address, /^127\.0\.0\.2:\d+$/);
    assert.equal(vllm.url, `http://${vllm.address}`);
    assert.equal(vllm.name, `vllm@${vllm.address}`);
    assert.match(sglang.address, /^127\.0\.0\.3:\d+$/);
    assert.equal(sglang.name, `sglang@${sglang.address}`);
  });

  test('/v1/models has the seed shape and owned_by = engine', async () => {
    for (const [engine, sim] of byEngine()) {
      const res = await req(sim, '/v1/models');
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('x-simulator-name'), sim.name);
      assert.equal(res.headers.get('x-simulator-engine'), engine);
      const body = (await res.json()) as { object: string; data: Record<string, unknown>[] };
      assert.equal(body.object, 'list');
      assert.equal(body.data.length, 1);
      const card = body.data[0]!;
      assert.deepEqual(Object.keys(card), ['id', 'object', 'created', 'owned_by', 'root', 'parent', 'max_model_len']);
      assert.equal(typeof card.created, 'number');
      assert.deepEqual(
        { ...card, created: 0 },
        {
          id: MODEL,
          object: 'model',
          created: 0,
          owned_by: engine,
          root: MODEL,
          parent: null,
          max_model_len: 32768,
        },
      );
    }
  });

  test('setModels changes what is served', async () => {
    const sim = await start({ engine: 'sglang', models: ['a'], maxModelLen: 4096 });
    sim.setModels(['b', 'c']);
    const body = (await (await req(sim, '/v1/models')).json()) as { data: { id: string; max_model_len: number }[] };
    assert.deepEqual(
      body.data.map((d) => d.id),
      ['b', 'c'],
    );
    assert.equal(body.data[0]!.max_model_len, 4096);
    assert.equal((await post(sim, '/v1/chat/completions', chat({ model: 'a' }))).status, 404);
    assert.equal((await post(sim, '/v1/chat/completions', chat({ model: 'c', max_tokens: 1 }))).status, 200);
  });

  test('metrics carry the engine-specific names with model_name, and only those', async () => {
    for (const [engine, sim] of byEngine()) {
      const samples = await scrape(sim);
      const own = METRICS[engine];
      const other = METRICS[engine === 'vllm' ? 'sglang' : 'vllm'];
      for (const name of [own.running, own.waiting, own.kv]) {
        assert.equal(value(samples, name), 0, `${engine} ${name} idle`);
        assert.equal(samples.find((s) => s.name === name)!.labels.model_name, MODEL);
      }
      const cache = samples.find((s) => s.name === own.cache);
      assert.ok(cache, `${engine} exposes ${own.cache}`);
      for (const l of own.cacheLabels) assert.match(cache.labels[l] ?? '', /^\d+$/, `${own.cache} label ${l}`);
      for (const name of [other.running, other.waiting, other.kv, other.cache]) {
        assert.ok(!samples.some((s) => s.name === name), `${engine} must not expose ${name}`);
      }
      assert.ok(
        samples.every((s) => s.name.startsWith(`${engine}:`)),
        `${engine} metrics use the ${engine}: prefix`,
      );
    }
  });

  test('running rises during a slow stream (metrics too) and returns to 0 after a client abort', async () => {
    for (const engine of ['vllm', 'sglang'] as const) {
      const sim = await start({ engine, models: [MODEL], timeToFirstTokenMs: 0, interTokenMs: 50 });
      const ac = new AbortController();
      const res = await post(sim, '/v1/chat/completions', chat({ stream: true, max_tokens: 10_000 }), {
        signal: AbortSignal.any([ac.signal, AbortSignal.timeout(STEP_MS)]),
      });
      assert.equal(res.status, 200);
      const reader = res.body!.getReader();
      const first = await reader.read();
      assert.equal(first.done, false);
      assert.equal(sim.stats().running, 1);
      let samples = await scrape(sim);
      assert.equal(value(samples, METRICS[engine].running), 1);
      assert.ok(value(samples, METRICS[engine].kv) > 0, 'KV usage derived from the running request');

      ac.abort();
      await reader.cancel().catch(() => undefined);
      await waitFor(() => sim.stats().running === 0, `${engine} running back to 0 after abort`);
      samples = await scrape(sim);
      assert.equal(value(samples, METRICS[engine].running), 0);
      assert.equal(value(samples, METRICS[engine].kv), 0);
      // Generation stopped: the token counter no longer moves.
      const gen = value(samples, `${engine}:generation_tokens_total`);
      assert.ok(gen < 10_000);
      await new Promise((r) => setTimeout(r, 150));
      assert.equal(value(await scrape(sim), `${engine}:generation_tokens_total`), gen);
      assert.equal(sim.stats().served, 1);
    }
  });

  test('requests beyond maxRunning wait in a queue (waiting metric) and are admitted in turn', async () => {
    const sim = await start({ engine: 'vllm', models: [MODEL], timeToFirstTokenMs: 0, interTokenMs: 20, maxRunning: 1 });
    const first = post(sim, '/v1/completions', { model: MODEL, prompt: 'one', max_tokens: 10 });
    const second = post(sim, '/v1/completions', { model: MODEL, prompt: 'two', max_tokens: 10 });
    await waitFor(() => sim.stats().waiting === 1, 'one waiting request');
    assert.equal(sim.stats().running, 1);
    const samples = await scrape(sim);
    assert.equal(value(samples, 'vllm:num_requests_running'), 1);
    assert.equal(value(samples, 'vllm:num_requests_waiting'), 1);
    const [a, b] = await Promise.all([first, second]);
    assert.equal(a.status, 200);
    assert.equal(b.status, 200);
    await Promise.all([a.text(), b.text()]);
    assert.deepEqual({ ...sim.stats(), byPath: undefined }, { running: 0, waiting: 0, served: 2, byPath: undefined });
  });

  test('SSE: text/event-stream, max_tokens content chunks, optional usage chunk, [DONE] terminator', async () => {
    for (const [engine, sim] of byEngine()) {
      for (const path of ['/v1/chat/completions', '/v1/completions'] as const) {
        for (const includeUsage of [true, false]) {
          const body =
            path === '/v1/chat/completions'
              ? chat({ stream: true, max_tokens: 7, stream_options: { include_usage: includeUsage } })
              : { model: MODEL, prompt: 'Once upon a time', stream: true, max_tokens: 7, stream_options: { include_usage: includeUsage } };
          const res = await post(sim, path, body);
          const what = `${engine} ${path} include_usage=${includeUsage}`;
          assert.equal(res.status, 200, what);
          assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/, what);
          assert.equal(res.headers.get('x-simulator-name'), sim.name);
          const events = sseEvents(await res.text());
          assert.equal(events.at(-1), '[DONE]', `${what}: ends with [DONE]`);
          assert.equal(events.filter((e) => e === '[DONE]').length, 1);
          const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as Record<string, unknown>);
          const kind = path === '/v1/chat/completions' ? 'chat.completion.chunk' : 'text_completion';
          assert.ok(
            chunks.every((c) => c.object === kind && c.model === MODEL),
            `${what}: chunk object/model`,
          );
          assert.equal(new Set(chunks.map((c) => c.id)).size, 1, `${what}: one id per stream`);
          type Choice = { delta?: { content?: string }; text?: string; finish_reason: string | null };
          const choices = chunks.flatMap((c) => c.choices as Choice[]);
          const content = choices.filter((ch) => (ch.delta?.content ?? ch.text ?? '') !== '');
          assert.equal(content.length, 7, `${what}: one content chunk per token`);
          assert.deepEqual(
            choices.filter((ch) => ch.finish_reason !== null).map((ch) => ch.finish_reason),
            ['length'],
            `${what}: a single finish_reason`,
          );
          const usage = chunks.filter((c) => c.usage !== undefined && c.usage !== null);
          if (includeUsage) {
            assert.equal(usage.length, 1, `${what}: one usage chunk`);
            assert.deepEqual(usage[0]!.choices, []);
            const u = usage[0]!.usage as Record<string, number>;
            assert.equal(u.completion_tokens, 7);
            assert.equal(u.total_tokens, u.prompt_tokens! + 7);
            assert.equal(chunks.at(-1), usage[0], `${what}: usage chunk is last before [DONE]`);
          } else {
            assert.equal(usage.length, 0, `${what}: no usage without include_usage`);
          }
        }
      }
    }
  });

  test('non-streaming answers follow each engine shape with usage', async () => {
    const shapes: Record<Engine, { top: string[]; choice: string[]; message: string[]; idRe: RegExp }> = {
      vllm: {
        top: [
          'id',
          'object',
          'created',
          'model',
          'choices',
          'service_tier',
          'system_fingerprint',
          'usage',
          'prompt_logprobs',
          'prompt_token_ids',
          'kv_transfer_params',
        ],
        choice: ['index', 'message', 'logprobs', 'finish_reason', 'stop_reason', 'token_ids'],
        message: ['role', 'content', 'refusal', 'annotations', 'audio', 'function_call', 'tool_calls', 'reasoning', 'reasoning_content'],
        idRe: /^chatcmpl-[0-9a-f]{32}$/,
      },
      sglang: {
        top: ['id', 'object', 'created', 'model', 'choices', 'usage', 'metadata'],
        choice: ['index', 'message', 'logprobs', 'finish_reason', 'matched_stop'],
        message: ['role', 'content', 'reasoning_content', 'tool_calls'],
        idRe: /^[0-9a-f]{32}$/,
      },
    };
    for (const [engine, sim] of byEngine()) {
      const res = await post(sim, '/v1/chat/completions', chat({ max_tokens: 5 }));
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
      // biome-ignore lint/suspicious/noExplicitAny: an engine's answer, checked field by field against its shape
      const body = (await res.json()) as Record<string, any>;
      assert.deepEqual(Object.keys(body), shapes[engine].top, `${engine} top-level keys`);
      assert.match(body.id, shapes[engine].idRe);
      assert.equal(body.object, 'chat.completion');
      assert.equal(body.model, MODEL);
      assert.deepEqual(Object.keys(body.choices[0]), shapes[engine].choice, `${engine} choice keys`);
      assert.deepEqual(Object.keys(body.choices[0].message), shapes[engine].message, `${engine} message keys`);
      assert.equal(body.choices[0].finish_reason, 'length');
      assert.equal(body.usage.completion_tokens, 5);
      assert.equal(body.usage.total_tokens, body.usage.prompt_tokens + 5);
      if (engine === 'sglang') assert.equal(body.usage.reasoning_tokens, 0);
      else assert.ok(!('reasoning_tokens' in body.usage));

      // Without max_tokens the answer stops naturally.
      // biome-ignore lint/suspicious/noExplicitAny: an engine's answer, checked field by field
      const free = (await (await post(sim, '/v1/completions', { model: MODEL, prompt: 'hi' })).json()) as Record<string, any>;
      assert.equal(free.object, 'text_completion');
      assert.equal(free.choices[0].finish_reason, 'stop');
      assert.equal(typeof free.choices[0].text, 'string');
      assert.ok(free.usage.completion_tokens > 0);
      if (engine === 'sglang') assert.equal(free.choices[0].matched_stop, 151645);
    }
  });

  test('400 OpenAI-style error on malformed JSON and invalid fields', async () => {
    for (const [engine, sim] of byEngine()) {
      const servedBefore = sim.stats().served;
      for (const path of ['/v1/chat/completions', '/v1/completions']) {
        const res = await post(sim, path, '{"model": "x", ');
        assert.equal(res.status, 400, `${engine} ${path}`);
        assert.equal(res.headers.get('x-simulator-engine'), engine);
        const body = (await res.json()) as { error: { message: string; type: string; code: number } };
        assert.equal(typeof body.error.message, 'string');
        assert.ok(body.error.message.length > 0);
        assert.equal(body.error.type, 'BadRequestError');
        assert.equal(body.error.code, 400);
      }
      assert.equal((await post(sim, '/v1/chat/completions', chat({ max_tokens: -1 }))).status, 400);
      assert.equal((await post(sim, '/v1/chat/completions', { model: MODEL })).status, 400);
      assert.equal((await post(sim, '/v1/completions', { model: MODEL, prompt: 42 })).status, 400);
      assert.equal((await post(sim, '/v1/completions', '[1,2]')).status, 400);
      assert.equal(sim.stats().served, servedBefore, 'rejected requests are not counted as served');
    }
  });

  test('404 OpenAI-style error for a model that is not served', async () => {
    for (const [engine, sim] of byEngine()) {
      const before = sim.stats().served;
      const res = await post(sim, '/v1/chat/completions', chat({ model: 'no/such-model' }));
      assert.equal(res.status, 404, engine);
      assert.equal(res.headers.get('x-simulator-name'), sim.name);
      const body = (await res.json()) as { error: { message: string; type: string; code: number } };
      assert.match(body.error.message, /no\/such-model/);
      assert.equal(body.error.type, 'NotFoundError');
      assert.equal(body.error.code, 404);
      assert.equal(sim.stats().served, before);
      assert.equal((await req(sim, '/v1/nowhere')).status, 404);
      assert.equal((await req(sim, '/v1/chat/completions')).status, 405);
    }
  });

  test('setHealthy(false) → 503 on /health and /v1/models; true restores 200', async () => {
    const sim = await start({ engine: 'vllm', models: [MODEL] });
    assert.equal((await req(sim, '/health')).status, 200);
    assert.equal((await req(sim, '/ping')).status, 200);
    sim.setHealthy(false);
    assert.equal((await req(sim, '/health')).status, 503);
    assert.equal((await req(sim, '/ping')).status, 503);
    const models = await req(sim, '/v1/models');
    assert.equal(models.status, 503);
    assert.equal(((await models.json()) as { error: { code: number } }).error.code, 503);
    assert.equal((await post(sim, '/v1/chat/completions', chat({ max_tokens: 1 }))).status, 503);
    assert.equal((await req(sim, '/metrics')).status, 200, 'metrics stay scrapeable');
    sim.setHealthy(true);
    assert.equal((await req(sim, '/health')).status, 200);
    assert.equal((await req(sim, '/v1/models')).status, 200);

    const sg = await start({ engine: 'sglang', models: [MODEL] });
    sg.setHealthy(false);
    assert.equal((await req(sg, '/health_generate')).status, 503);
    assert.equal((await req(sg, '/health')).status, 503);
  });

  test('a 20 MiB request body is accepted; beyond maxBodyBytes → 413', async () => {
    const big = 'x'.repeat(20 * 1024 * 1024);
    const res = await post(vllm, '/v1/chat/completions', chat({ messages: [{ role: 'user', content: big }], max_tokens: 1 }), {
      signal: AbortSignal.timeout(30_000),
    });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { usage: { prompt_tokens: number } };
    assert.ok(body.usage.prompt_tokens >= big.length / 4, 'prompt tokens estimated from the whole body');

    const small = await start({ engine: 'sglang', models: [MODEL], maxBodyBytes: 1024 * 1024 });
    const tooBig = await post(small, '/v1/completions', { model: MODEL, prompt: 'y'.repeat(2 * 1024 * 1024), max_tokens: 1 });
    assert.equal(tooBig.status, 413);
    assert.equal(((await tooBig.json()) as { error: { code: number } }).error.code, 413);
  });

  test('stats().byPath counts every request by path', async () => {
    const sim = await start({ engine: 'sglang', models: [MODEL] });
    await (await req(sim, '/health')).arrayBuffer();
    await (await req(sim, '/health?x=1')).arrayBuffer();
    await (await post(sim, '/v1/completions', { model: MODEL, prompt: 'a', max_tokens: 1 })).arrayBuffer();
    assert.deepEqual(sim.stats().byPath, { '/health': 2, '/v1/completions': 1 });
  });

  test('close() ends open streams, releases running and refuses new connections', async () => {
    const sim = await start({ engine: 'vllm', models: [MODEL], timeToFirstTokenMs: 0, interTokenMs: 50 });
    const res = await post(sim, '/v1/chat/completions', chat({ stream: true, max_tokens: 10_000 }));
    const reader = res.body!.getReader();
    await reader.read();
    assert.equal(sim.stats().running, 1);
    await sim.close();
    assert.equal(sim.stats().running, 0);
    await assert.rejects(async () => {
      for (;;) if ((await reader.read()).done) break; // a cut-off chunked stream errors
    });
    await assert.rejects(req(sim, '/health'));
    await sim.close(); // idempotent
  });
});

describe('simulator CLI', () => {
  test('argument parsing', () => {
    assert.deepEqual(parseBackendSpec('vllm:Qwen/Qwen2.5-0.5B-Instruct,other@127.0.0.9:8000'), {
      engine: 'vllm',
      models: ['Qwen/Qwen2.5-0.5B-Instruct', 'other'],
      host: '127.0.0.9',
      port: 8000,
    });
    assert.deepEqual(parseBackendSpec('sglang:m@[::1]:0'), { engine: 'sglang', models: ['m'], host: '::1', port: 0 });
    assert.throws(() => parseBackendSpec('tgi:m@127.0.0.1:1'), UsageError);
    assert.throws(() => parseBackendSpec('vllm:m'), UsageError);
    const specs = parseCli(['--engine', 'sglang', '--model', 'a', '--model', 'b', '--port', '9000', '--replicas', '2', '--ttft-ms', '20', '--itl-ms', '10']);
    assert.deepEqual(
      specs?.map((s) => [s.engine, s.models, s.host, s.port, s.timeToFirstTokenMs, s.interTokenMs]),
      [
        ['sglang', ['a', 'b'], '127.0.0.1', 9000, 20, 10],
        ['sglang', ['a', 'b'], '127.0.0.1', 9001, 20, 10],
      ],
    );
    assert.equal(parseCli(['--help']), null);
    assert.throws(() => parseCli([]), UsageError);
    assert.throws(() => parseCli(['--engine', 'tgi']), UsageError);
    assert.throws(() => parseCli(['--engine', 'vllm', '--port', 'x']), UsageError);
    assert.throws(() => parseCli(['--bogus']), UsageError);
  });

  test('serves, prints its address and exits 0 on SIGTERM', async () => {
    const cli = fileURLToPath(new URL('../src/simulator/cli.js', import.meta.url));
    const child = spawn(process.execPath, [cli, '--backend', `vllm:${MODEL}@127.0.0.4:0`, '--backend', `sglang:${MODEL}@127.0.0.5:0`], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const kill = setTimeout(() => child.kill('SIGKILL'), 15_000);
    try {
      let out = '';
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (d: string) => (out += d));
      await waitFor(() => out.split('\n').length > 2, 'two address lines');
      const lines = out.trim().split('\n');
      assert.match(lines[0]!, /^http:\/\/127\.0\.0\.4:\d+ engine=vllm name=vllm@127\.0\.0\.4:\d+ models=Qwen\/Qwen2\.5-0\.5B-Instruct$/);
      assert.match(lines[1]!, /^http:\/\/127\.0\.0\.5:\d+ engine=sglang /);
      for (const [i, engine] of ['vllm', 'sglang'].entries()) {
        const url = lines[i]!.split(' ')[0]!;
        const res = await fetch(`${url}/v1/models`, { signal: AbortSignal.timeout(STEP_MS) });
        const body = (await res.json()) as { data: { owned_by: string }[] };
        assert.equal(body.data[0]!.owned_by, engine);
      }
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      const [code, signal] = (await exited) as [number | null, string | null];
      assert.equal(signal, null);
      assert.equal(code, 0);
    } finally {
      clearTimeout(kill);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });
});
