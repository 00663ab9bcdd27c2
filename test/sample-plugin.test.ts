import assert from 'node:assert/strict';
import { once } from 'node:events';
import { request as httpRequest } from 'node:http';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type Logger, pino } from 'pino';
import {
  DEFAULT_HOST,
  DEFAULT_PORT,
  FILTER_PATH,
  kvCacheFraction,
  parseCliArgs,
  parseUpdateTime,
  type SamplePlugin,
  startSamplePlugin,
  UsageError,
} from '../plugins/sample/server.js';
import { CHILD_TIMEOUT_MS, freePort, occupy, runNode, spawnNode } from './support/child.js';
import { until } from './support/wait.js';

const SERVER = fileURLToPath(new URL('../plugins/sample/server.js', import.meta.url));
/** Generous: a child starts in ~100 ms, but CI machines are slow and test files run side by side. */
const STEP_MS = 10_000;
/** Loopback addresses of this file's own (127.0.0.150-160). */
const CLI_HOST = '127.0.0.150';
const BUSY_HOST = '127.0.0.151';
const HOST = '127.0.0.152';

type Json = Record<string, unknown>;

function pod(name: string, namespace: string, extra: Json = {}): Json {
  return {
    pod: { namespaced_name: { name, namespace }, address: '10.0.0.9', labels: { 'llm-d.ai/role': 'decode' } },
    metrics: {
      active_models: { 'Qwen/Qwen2.5-0.5B-Instruct': 1 },
      waiting_models: {},
      max_active_models: 4,
      running_queue_size: 1,
      waiting_queue_size: 0,
      kv_cache_usage_percent: 0.25,
      kv_cache_max_token_capacity: 65536,
      update_time: '2026-08-30 12:00:00',
    },
    ...extra,
  };
}

/** A valid request: the candidates, plus one pod only the snapshot (`sched_context.pods`) has. */
function validBody(): Json {
  const candidates = [pod('decode-2', 'serving'), pod('decode-1', 'serving'), pod('prefill-12', 'other'), pod('decode-20', 'serving')];
  return {
    sched_context: {
      request: { target_model: 'Qwen/Qwen2.5-0.5B-Instruct', request_id: 'req-7', critical: true, prompt: 'Hello', headers: { 'x-request-id': 'req-7' } },
      pods: [...candidates, pod('snapshot-only-2', 'serving')],
    },
    pods: candidates,
  };
}

interface Reply {
  status: number;
  headers: Headers;
  json: unknown;
}

async function post(url: string, body: unknown, init: RequestInit = {}): Promise<Reply> {
  const res = await fetch(`${url}${FILTER_PATH}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(STEP_MS),
    ...init,
  });
  return { status: res.status, headers: res.headers, json: await res.json() };
}

/** A logger whose JSON lines the test reads. */
function capturedLog(): { log: Logger; lines: () => Json[] } {
  const lines: Json[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) if (line !== '') lines.push(JSON.parse(line) as Json);
      done();
    },
  });
  return { log: pino({ level: 'info' }, sink), lines: () => lines };
}

describe('sample plugin: POST /external/sample/filter', { concurrency: true }, () => {
  let plugin: SamplePlugin;
  const { log, lines } = capturedLog();
  before(async () => {
    plugin = await startSamplePlugin({ port: 0, host: HOST, log });
  });
  after(() => plugin.close());

  it('answers the candidates whose name ends with 2, as [{name, namespace}], and logs one line', async () => {
    const reply = await post(plugin.url, validBody());
    assert.equal(reply.status, 200);
    assert.equal(reply.headers.get('content-type'), 'application/json');
    // decode-20 contains a 2 but does not end with one; snapshot-only-2 is no candidate; no other fields.
    assert.deepEqual(reply.json, [
      { name: 'decode-2', namespace: 'serving' },
      { name: 'prefill-12', namespace: 'other' },
    ]);
    const line = await until(
      'the log line of req-7',
      () => lines().find((l) => l.requestId === 'req-7'),
      (l) => l !== undefined,
    );
    assert.deepEqual(
      { path: line!.path, status: line!.status, podsIn: line!.podsIn, podsOut: line!.podsOut, method: line!.method },
      { path: FILTER_PATH, status: 200, podsIn: 4, podsOut: 2, method: 'POST' },
    );
    assert.equal(lines().filter((l) => l.requestId === 'req-7').length, 1, 'one line per request');
  });

  it('answers [] when no candidate qualifies, and for no candidates at all', async () => {
    const body = validBody();
    body.pods = [pod('decode-1', 'serving')];
    assert.deepEqual((await post(plugin.url, body)).json, []);
    body.pods = [];
    assert.deepEqual((await post(plugin.url, body)).json, []);
  });

  it('accepts both update_time formats (Go layout, RFC 3339), in metrics or beside them, and both kv_cache_usage_percent shapes', async () => {
    const body = validBody();
    const shapes = [
      pod('a-2', 'ns'), // Go layout in metrics, fraction 0.25
      pod('b-2', 'ns', { update_time: '2025-06-09T10:30:00Z' }), // seed 000's README: beside metrics, RFC 3339
      pod('c-2', 'ns', { metrics: { kv_cache_usage_percent: 65.5, update_time: '2025-06-09T10:30:00.123+02:00' } }), // a percentage
      pod('d-2', 'ns', { metrics: null }), // Go's nil pointer
      { pod: { namespaced_name: { name: 'e-2', namespace: 'ns' } } }, // nothing optional
    ];
    body.pods = shapes;
    (body.sched_context as Json).pods = shapes;
    const reply = await post(plugin.url, body);
    assert.equal(reply.status, 200, JSON.stringify(reply.json));
    assert.deepEqual(
      (reply.json as { name: string }[]).map((p) => p.name),
      ['a-2', 'b-2', 'c-2', 'd-2', 'e-2'],
    );
  });

  it('accepts null where Go marshals a nil map (headers, labels, active_models)', async () => {
    const body = validBody();
    ((body.sched_context as Json).request as Json).headers = null;
    body.pods = [pod('a-2', 'ns', { pod: { namespaced_name: { name: 'a-2', namespace: 'ns' }, labels: null }, metrics: { active_models: null } })];
    assert.equal((await post(plugin.url, body)).status, 200);
  });

  describe('400 with a JSON error', { concurrency: true }, () => {
    const cases: [name: string, mutate: (body: Json) => unknown, error: RegExp][] = [
      ['a body that is not JSON', () => '{"sched_context": ', /^body is not JSON/],
      ['an empty body', () => '', /^body is not JSON/],
      ['a JSON array', () => [], /^body must be a JSON object$/],
      ['no sched_context', (b) => void delete b.sched_context, /^missing sched_context$/],
      ['no pods', (b) => void delete b.pods, /^missing pods$/],
      [
        'pods that are not an array',
        (b) => {
          b.pods = {};
        },
        /^pods must be an array$/,
      ],
      ['no sched_context.request', (b) => void delete (b.sched_context as Json).request, /^missing sched_context\.request$/],
      ['no sched_context.pods', (b) => void delete (b.sched_context as Json).pods, /^missing sched_context\.pods$/],
      ...(['target_model', 'request_id', 'critical', 'prompt', 'headers'] as const).map((key): [string, (b: Json) => unknown, RegExp] => [
        `no request key ${key}`,
        (b) => void delete ((b.sched_context as Json).request as Json)[key],
        new RegExp(`^missing sched_context\\.request\\.${key}$`),
      ]),
      [
        'critical as a string',
        (b) => {
          ((b.sched_context as Json).request as Json).critical = 'true';
        },
        /^sched_context\.request\.critical must be a boolean$/,
      ],
      [
        'a pod that is not an object',
        (b) => {
          b.pods = ['decode-2'];
        },
        /^pods\[0\] must be an object$/,
      ],
      [
        'a pod without namespaced_name',
        (b) => {
          b.pods = [{ pod: { name: 'decode-2' } }];
        },
        /^missing pods\[0\]\.pod\.namespaced_name$/,
      ],
      [
        'a pod whose name is a number',
        (b) => {
          b.pods = [{ pod: { namespaced_name: { name: 2, namespace: 'ns' } } }];
        },
        /^pods\[0\]\.pod\.namespaced_name\.name must be a string$/,
      ],
      [
        'a malformed pod in sched_context.pods only',
        (b) => {
          (b.sched_context as Json).pods = [{ pod: {} }];
        },
        /^missing sched_context\.pods\[0\]\.pod\.namespaced_name$/,
      ],
      [
        'an update_time in neither format',
        (b) => {
          b.pods = [pod('a-2', 'ns', { update_time: 'yesterday' })];
        },
        /^pods\[0\]\.update_time must be a time/,
      ],
      [
        'an update_time on a day that does not exist',
        (b) => {
          b.pods = [pod('a-2', 'ns', { metrics: { update_time: '2025-02-30 10:00:00' } })];
        },
        /^pods\[0\]\.metrics\.update_time must be a time/,
      ],
      [
        'a kv_cache_usage_percent over 100',
        (b) => {
          b.pods = [pod('a-2', 'ns', { metrics: { kv_cache_usage_percent: 150 } })];
        },
        /^pods\[0\]\.metrics\.kv_cache_usage_percent must be a number/,
      ],
      [
        'a queue size that is not a count',
        (b) => {
          b.pods = [pod('a-2', 'ns', { metrics: { waiting_queue_size: -1 } })];
        },
        /^pods\[0\]\.metrics\.waiting_queue_size must be an integer >= 0$/,
      ],
    ];
    it('control: the unmutated body is accepted, so each case below fails by its mutation alone', async () => {
      assert.equal((await post(plugin.url, validBody())).status, 200);
    });
    for (const [name, mutate, error] of cases) {
      it(name, async () => {
        const body = validBody();
        const replaced = mutate(body);
        const reply = await post(plugin.url, replaced === undefined ? body : replaced);
        assert.equal(reply.status, 400, JSON.stringify(reply.json));
        assert.equal(reply.headers.get('content-type'), 'application/json');
        assert.match((reply.json as { error: string }).error, error);
      });
    }
  });

  it('404 for another path, whatever the method', async () => {
    for (const path of ['/', '/external/sample', '/external/sample/score', `${FILTER_PATH}/x`, '/external/other/filter']) {
      const res = await fetch(`${plugin.url}${path}`, { method: 'POST', body: JSON.stringify(validBody()), signal: AbortSignal.timeout(STEP_MS) });
      assert.equal(res.status, 404, path);
      assert.match(((await res.json()) as { error: string }).error, /^no route /);
    }
    // A query string does not change the route.
    assert.equal((await fetch(`${plugin.url}${FILTER_PATH}?x=1`, { method: 'POST', body: JSON.stringify(validBody()) })).status, 200);
  });

  it('405 with allow: POST for another method on the filter path', async () => {
    for (const method of ['GET', 'PUT', 'DELETE', 'PATCH']) {
      const res = await fetch(`${plugin.url}${FILTER_PATH}`, { method, signal: AbortSignal.timeout(STEP_MS) });
      assert.equal(res.status, 405, method);
      assert.equal(res.headers.get('allow'), 'POST', method);
      assert.match(((await res.json()) as { error: string }).error, new RegExp(`method ${method} not allowed`));
    }
  });
});

describe('sample plugin: body size limit', { concurrency: true }, () => {
  const LIMIT = 4096;
  let plugin: SamplePlugin;
  before(async () => {
    plugin = await startSamplePlugin({ port: 0, host: HOST, log: pino({ level: 'silent' }), maxBodyBytes: LIMIT });
  });
  after(() => plugin.close());

  /** A valid body of exactly `bytes` bytes (the prompt pads it). */
  function bodyOf(bytes: number): string {
    const body = validBody();
    const base = Buffer.byteLength(JSON.stringify(body));
    ((body.sched_context as Json).request as Json).prompt = 'x'.repeat(bytes - base + 'Hello'.length);
    const text = JSON.stringify(body);
    assert.equal(Buffer.byteLength(text), bytes);
    return text;
  }

  it('a body of exactly the limit is served (control), one byte more is 413', async () => {
    assert.equal((await post(plugin.url, bodyOf(LIMIT))).status, 200);
    const reply = await post(plugin.url, bodyOf(LIMIT + 1));
    assert.equal(reply.status, 413);
    assert.deepEqual(reply.json, { error: `body over ${LIMIT} bytes` });
  });

  it('413 at once for a content-length over the limit, before any of the body is sent', async () => {
    const req = httpRequest(`${plugin.url}${FILTER_PATH}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': String(LIMIT * 1000) },
      signal: AbortSignal.timeout(STEP_MS), // a server that waits for the body fails here
    });
    const response = once(req, 'response');
    req.flushHeaders(); // headers only; the body never comes
    const [res] = (await response) as [import('node:http').IncomingMessage];
    assert.equal(res.statusCode, 413);
    assert.equal(res.headers.connection, 'close');
    res.resume();
    req.destroy();
  });

  it('413 for a chunked body (no content-length) that grows past the limit', async () => {
    const text = bodyOf(LIMIT * 2);
    const req = httpRequest(`${plugin.url}${FILTER_PATH}`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    const response = once(req, 'response');
    // Two writes without content-length: node:http sends them chunked.
    req.write(text.slice(0, LIMIT));
    req.end(text.slice(LIMIT));
    const [res] = (await response) as [import('node:http').IncomingMessage];
    // The server closes the connection after its 413; a reset after the answer is not what this tests.
    req.on('error', () => {});
    assert.equal(req.getHeader('content-length'), undefined);
    assert.equal(res.statusCode, 413);
    res.resume();
  });
});

describe('sample plugin: update_time and kv_cache_usage_percent helpers', () => {
  it('parseUpdateTime reads both formats, zone-less as UTC, Go zero time as year 1', () => {
    assert.equal(parseUpdateTime('2025-06-09 10:30:00')?.toISOString(), '2025-06-09T10:30:00.000Z');
    assert.equal(parseUpdateTime('2025-06-09T10:30:00Z')?.toISOString(), '2025-06-09T10:30:00.000Z');
    assert.equal(parseUpdateTime('2025-06-09T10:30:00.25+02:00')?.toISOString(), '2025-06-09T08:30:00.250Z');
    assert.equal(parseUpdateTime('2025-06-09T01:30:00-05:30')?.toISOString(), '2025-06-09T07:00:00.000Z');
    assert.equal(parseUpdateTime('0001-01-01 00:00:00')?.toISOString(), '0001-01-01T00:00:00.000Z');
    assert.equal(parseUpdateTime('2024-02-29 00:00:00')?.toISOString(), '2024-02-29T00:00:00.000Z');
    for (const bad of ['2025-02-29 00:00:00', '2025-13-01 00:00:00', '2025-06-09 24:00:00', '2025-06-09T10:30:00', '2025-06-09 10:30:00Z', 'yesterday', '']) {
      assert.equal(parseUpdateTime(bad), undefined, bad);
    }
  });

  it('kvCacheFraction reads a percentage above 1 as one', () => {
    assert.equal(kvCacheFraction(0.655), 0.655);
    assert.equal(kvCacheFraction(65.5), 0.655);
    assert.equal(kvCacheFraction(1), 1);
    assert.equal(kvCacheFraction(100), 1);
  });
});

describe('sample plugin: command line [PORT] [HOST]', { concurrency: true }, () => {
  it('defaults to 1080 on localhost, as seed 000', () => {
    assert.deepEqual(parseCliArgs([]), { port: DEFAULT_PORT, host: DEFAULT_HOST });
    assert.deepEqual([DEFAULT_PORT, DEFAULT_HOST], [1080, 'localhost']);
    assert.deepEqual(parseCliArgs(['8080']), { port: 8080, host: 'localhost' });
    assert.deepEqual(parseCliArgs(['8080', '0.0.0.0']), { port: 8080, host: '0.0.0.0' });
    assert.equal(parseCliArgs(['--help']), null);
    for (const bad of [['-1'], ['65536'], ['0x50'], [''], ['8080', ''], ['1', '2', '3']]) assert.throws(() => parseCliArgs(bad), UsageError, bad.join(' '));
  });

  /** Runs the built server until it exits (SIGKILL after CHILD_TIMEOUT_MS). */
  const run = (args: string[]) => runNode([SERVER, ...args]);

  function assertOneLine(outcome: { code: number | null; stderr: string }, message: RegExp): void {
    const lines = outcome.stderr.trim().split('\n');
    assert.equal(outcome.code, 2, outcome.stderr);
    assert.equal(lines.length, 1, `one line on stderr, got:\n${outcome.stderr}`);
    assert.doesNotMatch(outcome.stderr, /^\s+at /m, 'no stack trace');
    assert.match(lines[0]!, /^sample-plugin: /);
    assert.match(lines[0]!, message);
  }

  it('listens on PORT and HOST, serves the filter, and exits 0 on SIGTERM', async () => {
    // The kernel's pick of a free port on an address of our own, released for the child to take.
    const port = await freePort(CLI_HOST);
    const child = spawnNode([SERVER, String(port), CLI_HOST]);
    try {
      const listening = await until(
        'the listening line',
        () =>
          child
            .stdout()
            .split('\n')
            .find((l) => l.includes('sample plugin listening')),
        (l) => l !== undefined,
        { timeoutMs: CHILD_TIMEOUT_MS },
      );
      const url = `http://${CLI_HOST}:${port}`;
      assert.equal((JSON.parse(listening!) as { url: string }).url, url);
      assert.deepEqual((await post(url, validBody())).json, [
        { name: 'decode-2', namespace: 'serving' },
        { name: 'prefill-12', namespace: 'other' },
      ]);
      const line = await until(
        'the request log line on stdout',
        () =>
          child
            .stdout()
            .split('\n')
            .find((l) => l.includes('"requestId":"req-7"')),
        (l) => l !== undefined,
      );
      assert.equal((JSON.parse(line!) as { status: number }).status, 200);
      child.kill('SIGTERM');
      assert.equal((await child.closed).code, 0, 'exit 0, not killed by the signal');
    } finally {
      child.kill('SIGKILL'); // a no-op once it has exited
    }
  });

  for (const [name, args, message] of [
    ['a port that is not a number', ['http', CLI_HOST], /PORT "http" is not a port number 0-65535/],
    ['a port over 65535', ['70000', CLI_HOST], /PORT "70000" is not a port number 0-65535/],
    ['three arguments', ['1080', CLI_HOST, 'extra'], /expected at most PORT and HOST, got 3 arguments/],
    ['a host name that does not resolve', ['0', 'no-such-host.invalid'], /cannot resolve HOST "no-such-host\.invalid"/],
  ] as const) {
    it(`exits 2 with one line for ${name}`, async () => assertOneLine(await run([...args]), message));
  }

  it('exits 2 with one line for a port in use', async () => {
    const busy = await occupy(BUSY_HOST);
    try {
      assertOneLine(await run([String(busy.port), BUSY_HOST]), new RegExp(`^sample-plugin: 127\\.0\\.0\\.151:${busy.port} is already in use$`));
    } finally {
      busy.server.close();
    }
  });
});
