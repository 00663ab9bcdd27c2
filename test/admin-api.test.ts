import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { tokenMatches } from '../src/admin/auth.js';
import type { Service, ServiceOptions } from '../src/app/service.js';
import { ConfigError } from '../src/config/errors.js';
import { parseStaticHosts } from '../src/discovery/static.js';
import { createLogger } from '../src/log.js';
import { MAX_NAME_LIMIT_BYTES } from '../src/request/limits.js';
import { type Simulator, startSimulator } from '../src/simulator/simulator.js';
import type { EnvoyDouble } from './support/envoy/envoy-double.js';
import { captureLogs, chatBody, JSON_HEADERS, LLAMA, QWEN, startBehindEnvoy } from './support/harness.js';

const TOKEN = 'admin-s3cret-token';

/** Answers of the admin port, parsed. */
interface Answer {
  status: number;
  headers: Headers;
  text: string;
  json: Record<string, unknown>;
}

async function call(
  port: number,
  method: string,
  path: string,
  options: { token?: string; body?: unknown; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
  let body: string | undefined;
  if (options.body !== undefined) {
    body = typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
    headers['content-type'] ??= 'application/json';
  }
  const response = await fetch(`http://127.0.0.1:${port}${path}`, { method, headers, body });
  const text = await response.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {}
  return { status: response.status, headers: response.headers, text, json };
}

/** An OpenAI-style error answer with this status and code; its message, for further checks. */
function assertError(answer: Answer, status: number, code: string): string {
  assert.equal(answer.status, status, answer.text);
  assert.equal(answer.headers.get('content-type'), 'application/json');
  const error = (answer.json as { error: { message: string; type: string; code: string; param: null } }).error;
  assert.equal(error.code, code, answer.text);
  assert.equal(typeof error.message, 'string');
  assert.equal(typeof error.type, 'string');
  assert.equal(error.param, null);
  return error.message;
}

const LLAMA_VLLM = { model: LLAMA, owned_by: 'vllm', service_name: 'llama-vllm' };

/**
 * Four simulated pods: 127.0.0.81 (Qwen + Llama) in group llama-vllm, .82 and .83 (Qwen) in
 * qwen-vllm, .84 (SGLang Qwen) in no group. The routes file maps Llama on vLLM to llama-vllm.
 */
describe('admin API (static discovery)', () => {
  let sims: Simulator[];
  let dir: string;
  let routesFile: string;
  const groups = ['llama-vllm', 'qwen-vllm', 'qwen-vllm', undefined];
  const running: { service: Service; envoy: EnvoyDouble }[] = [];

  before(async () => {
    sims = [
      await startSimulator({ engine: 'vllm', models: [QWEN, LLAMA], host: '127.0.0.81', port: 0, timeToFirstTokenMs: 1, interTokenMs: 1 }),
      await startSimulator({ engine: 'vllm', models: [QWEN], host: '127.0.0.82', port: 0, timeToFirstTokenMs: 1, interTokenMs: 1 }),
      await startSimulator({ engine: 'vllm', models: [QWEN], host: '127.0.0.83', port: 0, timeToFirstTokenMs: 1, interTokenMs: 1 }),
      await startSimulator({ engine: 'sglang', models: [QWEN], host: '127.0.0.84', port: 0, timeToFirstTokenMs: 1, interTokenMs: 1 }),
    ];
    dir = await mkdtemp(join(tmpdir(), 'admin-api-'));
    routesFile = join(dir, 'routes.json');
    await writeFile(routesFile, JSON.stringify({ mappings: [LLAMA_VLLM] }));
    await writeFile(join(dir, 'token'), `  ${TOKEN}\n`);
  });
  after(async () => {
    await Promise.all(
      running.map(async ({ service, envoy }) => {
        await envoy.close();
        await service.stop();
      }),
    );
    await Promise.all(sims.map((sim) => sim.close()));
  });

  const hostsFlag = () => `--static-hosts=${sims.map((sim, i) => (groups[i] ? `${groups[i]}=${sim.address}` : sim.address)).join(',')}`;

  /** llm-extproc on the four pods with the routes file; `flags` after, so they may add or override. */
  async function start(flags: string[], options: ServiceOptions & { logs?: NodeJS.WritableStream } = {}) {
    const log = options.logs ? createLogger('info', options.logs) : undefined;
    const started = await startBehindEnvoy([hostsFlag(), `--route-config=${routesFile}`, ...flags], { env: {}, ...options, ...(log ? { log } : {}) });
    running.push(started);
    const port = started.service.adminPort;
    return {
      ...started,
      port,
      admin: (method: string, path: string, options?: Parameters<typeof call>[3]) => call(port, method, path, options),
      /** The upstreams `n` chat requests went to. */
      async served(fields: Record<string, unknown>, n = 16): Promise<string[]> {
        const seen = new Set<string>();
        for (let i = 0; i < n; i++) {
          const response = await started.envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody(fields) });
          assert.equal(response.status, 200, response.body.toString());
          seen.add(response.upstream!);
        }
        return [...seen].sort();
      },
      async stop() {
        running.splice(running.indexOf(started), 1);
        await started.envoy.close();
        await started.service.stop();
      },
    };
  }

  describe('with a token (from --admin-token-file, trimmed)', () => {
    let gateway: Awaited<ReturnType<typeof start>>;
    const logs = captureLogs();
    before(async () => {
      gateway = await start([`--admin-token-file=${join(dir, 'token')}`], { logs: logs.stream });
    });

    it('/health answers as before: {"status":"ok"}, application/json with its length', async () => {
      const answer = await gateway.admin('GET', '/health');
      assert.equal(answer.status, 200);
      assert.equal(answer.text, '{"status":"ok"}');
      assert.equal(answer.headers.get('content-type'), 'application/json');
      assert.equal(answer.headers.get('content-length'), '15');
    });

    it('reads need no token: GET /admin/api/routing lists routes-file and discovery mappings with their source', async () => {
      const answer = await gateway.admin('GET', '/admin/api/routing');
      assert.equal(answer.status, 200);
      assert.deepEqual(answer.json, {
        mappings: [
          { ...LLAMA_VLLM, source: 'routes-file' },
          { model: LLAMA, owned_by: 'vllm', service_name: 'llama-vllm', source: 'discovery' },
          { model: QWEN, owned_by: 'vllm', service_name: 'llama-vllm', source: 'discovery' },
          { model: QWEN, owned_by: 'vllm', service_name: 'qwen-vllm', source: 'discovery' },
        ],
      });
    });

    it('GET /admin/api/endpoints: address, name, group, engines, models, health, in-flight, load and age of each', async () => {
      const answer = await gateway.admin('GET', '/admin/api/endpoints');
      assert.equal(answer.status, 200);
      const list = answer.json.endpoints as Record<string, unknown>[];
      assert.deepEqual(
        list.map((e) => [e.address, e.name, e.group]),
        sims.map((sim, i) => [sim.address, sim.address, groups[i] ?? null]),
      );
      const first = list[0]!;
      assert.deepEqual(first.engines, ['vllm']);
      assert.deepEqual(first.models, [
        { id: QWEN, owned_by: 'vllm' },
        { id: LLAMA, owned_by: 'vllm' },
      ]);
      assert.deepEqual(Object.keys(first.health as object), ['healthy', 'ejected', 'usable', 'last_error', 'last_seen']);
      assert.equal((first.health as { healthy: boolean }).healthy, true);
      assert.equal(first.in_flight, 0);
      assert.ok('load' in first);
      assert.equal(typeof first.age_seconds, 'number');
      assert.deepEqual(list[3]!.engines, ['sglang']);
    });

    it('an unknown route is a 404 and a wrong method a 405 with allow, both OpenAI-style', async () => {
      assert.match(assertError(await gateway.admin('GET', '/admin/nothing'), 404, 'not_found'), /no admin route GET \/admin\/nothing/);
      const get = await gateway.admin('GET', '/admin/discover');
      assertError(get, 405, 'method_not_allowed');
      assert.equal(get.headers.get('allow'), 'POST');
      const put = await gateway.admin('PUT', '/admin/api/routing', { token: TOKEN, body: LLAMA_VLLM });
      assertError(put, 405, 'method_not_allowed');
      assert.equal(put.headers.get('allow'), 'GET, HEAD, POST, DELETE');
    });

    it('writes without the token, with a wrong one or a prefix of it are 401 with www-authenticate, logged without the token', async () => {
      const attempts: [string, Record<string, string>][] = [
        ['none', {}],
        ['wrong', { authorization: 'Bearer not-the-token' }],
        ['prefix', { authorization: `Bearer ${TOKEN.slice(0, -1)}` }],
        ['longer', { authorization: `Bearer ${TOKEN}x` }],
        ['basic', { authorization: `Basic ${Buffer.from(`admin:${TOKEN}`).toString('base64')}` }],
      ];
      for (const [what, headers] of attempts) {
        for (const [method, path] of [
          ['POST', '/admin/api/routing'],
          ['DELETE', `/admin/api/routing?model=${encodeURIComponent(LLAMA)}`],
          ['POST', '/admin/discover'],
        ] as const) {
          const answer = await gateway.admin(method, path, { headers, body: method === 'POST' ? { model: QWEN, service_name: 'qwen-vllm' } : undefined });
          assert.equal(answer.status, 401, `${what} ${method} ${path}`);
          assert.equal(answer.headers.get('www-authenticate'), 'Bearer realm="llm-extproc-admin"');
          assertError(answer, 401, what === 'none' || what === 'basic' ? 'missing_admin_token' : 'invalid_admin_token');
        }
      }
      const refused = logs.lines.filter((line) => line.msg === 'admin write refused');
      assert.equal(refused.length, attempts.length * 3);
      assert.equal(refused[1]!.level, 40, 'warn');
      assert.ok(
        logs.raw.every((line) => !line.includes(TOKEN.slice(0, -1)) && !line.includes('not-the-token')),
        'no token in the logs',
      );
      assert.ok(!(await gateway.admin('GET', '/admin/api/routing')).text.includes('"admin"'), 'nothing was added');
      const metrics = (await gateway.admin('GET', '/metrics')).text;
      assert.match(metrics, /llm_extproc_admin_writes_total\{route="POST \/admin\/api\/routing",result="unauthorized"\} 5/);
    });

    it('POST with a bad body: 400 saying which field; 413 above 64 KiB', async () => {
      const bad: [unknown, string, RegExp][] = [
        ['{"model": ', 'invalid_json', /body: is not valid JSON/],
        ['', 'invalid_json', /body: a JSON object is required/],
        [[1, 2], 'invalid_mapping', /^body: /],
        [{ owned_by: 'vllm', service_name: 'qwen-vllm' }, 'invalid_mapping', /^model: is required$/],
        [{ model: 7, service_name: 'qwen-vllm' }, 'invalid_mapping', /^model: must be a string$/],
        [{ model: QWEN, owned_by: '', service_name: 'qwen-vllm' }, 'invalid_mapping', /^owned_by: must not be empty$/],
        [{ model: QWEN, service_name: 'Qwen_VLLM' }, 'invalid_mapping', /^service_name: must be a Service or endpoint group name/],
        [{ model: QWEN }, 'invalid_mapping', /^service_name: is required$/],
        [{ model: QWEN, service_name: 'qwen-vllm', engine: 'vllm' }, 'invalid_mapping', /^body: unknown field "engine"$/],
        [
          { model: 'x'.repeat(MAX_NAME_LIMIT_BYTES + 1), service_name: 'qwen-vllm' },
          'invalid_mapping',
          new RegExp(`^model: must be at most ${MAX_NAME_LIMIT_BYTES} bytes$`),
        ],
        [{ model: QWEN, owned_by: 'vllm', service_name: 'no-such-group' }, 'unknown_service', /endpoint group "no-such-group".*groups: llama-vllm, qwen-vllm/],
      ];
      for (const [body, code, message] of bad) {
        assert.match(assertError(await gateway.admin('POST', '/admin/api/routing', { token: TOKEN, body }), 400, code), message, JSON.stringify(body));
      }
      const huge = { model: QWEN, service_name: 'qwen-vllm', padding: 'x'.repeat(64 * 1024) };
      assertError(await gateway.admin('POST', '/admin/api/routing', { token: TOKEN, body: huge }), 413, 'request_too_large');
      // Chunked, no content-length: counted while read.
      const chunked = await fetch(`http://127.0.0.1:${gateway.port}/admin/api/routing`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}` },
        body: new Blob([JSON.stringify(huge)]).stream(),
        duplex: 'half',
      } as RequestInit);
      assert.equal(chunked.status, 413);
      const metrics = (await gateway.admin('GET', '/metrics')).text;
      assert.match(metrics, /llm_extproc_admin_writes_total\{route="POST \/admin\/api\/routing",result="rejected"\} 13/);
    });

    it('POST pins (model, owned_by) to the group through Envoy; a duplicate and the routes-file key are 409; DELETE un-pins', async () => {
      const qwenVllm = { model: QWEN, owned_by: 'vllm' };
      assert.deepEqual(await gateway.served(qwenVllm), [sims[0]!.address, sims[1]!.address, sims[2]!.address].sort(), 'not pinned yet');

      const added = await gateway.admin('POST', '/admin/api/routing', { token: TOKEN, body: { ...qwenVllm, service_name: 'qwen-vllm' } });
      assert.equal(added.status, 201, added.text);
      assert.deepEqual(added.json, { message: 'Routing mapping added', mapping: { ...qwenVllm, service_name: 'qwen-vllm', source: 'admin' } });
      assert.deepEqual(await gateway.served(qwenVllm), [sims[1]!.address, sims[2]!.address].sort(), 'pinned to qwen-vllm');

      const again = await gateway.admin('POST', '/admin/api/routing', { token: TOKEN, body: { ...qwenVllm, service_name: 'llama-vllm' } });
      assert.match(assertError(again, 409, 'mapping_exists'), /mapped already, to qwen-vllm/);
      const fileKey = await gateway.admin('POST', '/admin/api/routing', { token: TOKEN, body: { ...LLAMA_VLLM, service_name: 'qwen-vllm' } });
      assert.match(assertError(fileKey, 409, 'mapping_from_routes_file'), /by the routes file/);
      const listed = (await gateway.admin('GET', '/admin/api/routing')).json.mappings as { source: string }[];
      assert.deepEqual(
        listed.filter((m) => m.source !== 'discovery'),
        [
          { ...LLAMA_VLLM, source: 'routes-file' },
          { ...qwenVllm, service_name: 'qwen-vllm', source: 'admin' },
        ],
      );

      const deleted = await gateway.admin('DELETE', `/admin/api/routing?model=${encodeURIComponent(QWEN)}&owned_by=vllm`, { token: TOKEN });
      assert.equal(deleted.status, 200, deleted.text);
      assert.deepEqual(deleted.json, { message: 'Routing mapping deleted', mapping: { ...qwenVllm, service_name: 'qwen-vllm', source: 'admin' } });
      assert.deepEqual(await gateway.served(qwenVllm), [sims[0]!.address, sims[1]!.address, sims[2]!.address].sort(), 'un-pinned');
      const metrics = (await gateway.admin('GET', '/metrics')).text;
      assert.match(metrics, /llm_extproc_admin_writes_total\{route="POST \/admin\/api\/routing",result="ok"\} 1/);
      assert.match(metrics, /llm_extproc_admin_writes_total\{route="DELETE \/admin\/api\/routing",result="ok"\} 1/);
    });

    it('an any-engine mapping (owned_by left out) pins requests naming no engine; DELETE without owned_by removes it', async () => {
      const added = await gateway.admin('POST', '/admin/api/routing', { token: TOKEN, body: { model: QWEN, owned_by: null, service_name: 'llama-vllm' } });
      assert.equal(added.status, 201, added.text);
      assert.deepEqual(await gateway.served({ model: QWEN }), [sims[0]!.address]);
      assertError(
        await gateway.admin('DELETE', `/admin/api/routing?model=${encodeURIComponent(QWEN)}&owned_by=vllm`, { token: TOKEN }),
        404,
        'mapping_not_found',
      );
      assert.equal((await gateway.admin('DELETE', `/admin/api/routing?model=${encodeURIComponent(QWEN)}`, { token: TOKEN })).status, 200);
      assert.ok((await gateway.served({ model: QWEN }, 24)).length > 1, 'un-pinned');
    });

    it('DELETE: 404 when absent, 409 for a routes-file mapping, 400 for a bad query', async () => {
      assertError(await gateway.admin('DELETE', '/admin/api/routing?model=nothing&owned_by=vllm', { token: TOKEN }), 404, 'mapping_not_found');
      const file = await gateway.admin('DELETE', `/admin/api/routing?model=${encodeURIComponent(LLAMA)}&owned_by=vllm`, { token: TOKEN });
      assert.match(assertError(file, 409, 'mapping_from_routes_file'), /change it there/);
      assert.match(assertError(await gateway.admin('DELETE', '/admin/api/routing', { token: TOKEN }), 400, 'invalid_mapping'), /^model: is required/);
      assert.match(
        assertError(await gateway.admin('DELETE', '/admin/api/routing?model=m&ownedby=vllm', { token: TOKEN }), 400, 'invalid_mapping'),
        /unknown field "ownedby"/,
      );
    });

    it("POST /admin/discover re-reads every /v1/models now and answers seed 003's shape exactly", async () => {
      sims[2]!.setModels([QWEN, 'new-model']);
      try {
        const answer = await gateway.admin('POST', '/admin/discover', { token: TOKEN });
        assert.equal(answer.status, 200, answer.text);
        assert.equal(
          answer.text,
          JSON.stringify({
            message: 'Service discovery completed',
            discovered: 3,
            services: {
              [`${LLAMA}::vllm`]: 'llama-vllm',
              'new-model::vllm': 'qwen-vllm',
              [`${QWEN}::vllm`]: 'llama-vllm,qwen-vllm',
            },
          }),
        );
      } finally {
        sims[2]!.setModels([QWEN]);
        await gateway.admin('POST', '/admin/discover', { token: TOKEN });
      }
    });
  });

  it('with no token configured, writes are 403 (counted forbidden); reads still work', async () => {
    const gateway = await start([]);
    try {
      const answer = await gateway.admin('POST', '/admin/api/routing', { token: 'anything', body: { model: QWEN, service_name: 'qwen-vllm' } });
      assert.match(assertError(answer, 403, 'admin_writes_disabled'), /no admin token is configured/);
      assertError(await gateway.admin('POST', '/admin/discover'), 403, 'admin_writes_disabled');
      assert.equal((await gateway.admin('GET', '/admin/api/routing')).status, 200);
      assert.match((await gateway.admin('GET', '/metrics')).text, /llm_extproc_admin_writes_total\{route="POST \/admin\/discover",result="forbidden"\} 1/);
    } finally {
      await gateway.stop();
    }
  });

  it('--admin-insecure-writes accepts writes without a token', async () => {
    const gateway = await start(['--admin-insecure-writes']);
    try {
      assert.equal((await gateway.admin('POST', '/admin/api/routing', { body: { model: QWEN, service_name: 'qwen-vllm' } })).status, 201);
      assert.equal((await gateway.admin('POST', '/admin/discover')).status, 200);
    } finally {
      await gateway.stop();
    }
  });

  it('the token from LLM_EXTPROC_ADMIN_TOKEN (the env of ServiceOptions); --admin-insecure-writes with a token is refused', async () => {
    const gateway = await start([], { env: { LLM_EXTPROC_ADMIN_TOKEN: 'from-env' } });
    try {
      assertError(await gateway.admin('POST', '/admin/discover', { token: TOKEN }), 401, 'invalid_admin_token');
      assert.equal((await gateway.admin('POST', '/admin/discover', { token: 'from-env' })).status, 200);
    } finally {
      await gateway.stop();
    }
    await assert.rejects(
      start(['--admin-insecure-writes'], { env: { LLM_EXTPROC_ADMIN_TOKEN: 'from-env' } }),
      (err: unknown) => err instanceof ConfigError && err.flag === '--admin-insecure-writes',
    );
    await writeFile(join(dir, 'empty-token'), ' \n');
    await assert.rejects(
      start([`--admin-token-file=${join(dir, 'empty-token')}`]),
      (err: unknown) => err instanceof ConfigError && err.line.includes('empty-token is empty'),
    );
  });

  it('a routes-file mapping naming a group no --static-hosts entry is in is a start-up ConfigError', async () => {
    const file = join(dir, 'bad-routes.json');
    await writeFile(file, JSON.stringify({ mappings: [{ model: QWEN, service_name: 'nowhere' }] }));
    await assert.rejects(
      startBehindEnvoy([hostsFlag(), `--route-config=${file}`]),
      (err: unknown) => err instanceof ConfigError && err.flag === '--route-config' && /endpoint group "nowhere"/.test(err.message),
    );
  });

  describe('--state-file', () => {
    it('admin mappings survive a restart: the file is written atomically and read back, the pin holds', async () => {
      const stateFile = join(dir, 'state.json');
      const flags = [`--admin-token-file=${join(dir, 'token')}`, `--state-file=${stateFile}`];
      const first = await start(flags);
      const mapping = { model: QWEN, owned_by: 'vllm', service_name: 'qwen-vllm' };
      assert.equal((await first.admin('POST', '/admin/api/routing', { token: TOKEN, body: mapping })).status, 201);
      await first.stop();
      assert.deepEqual(JSON.parse(await readFile(stateFile, 'utf8')), { version: 1, mappings: [mapping] });
      assert.deepEqual(
        (await readdir(dir)).filter((name) => name.includes('.tmp')),
        [],
        'no temporary file left',
      );

      const second = await start(flags);
      try {
        const listed = (await second.admin('GET', '/admin/api/routing')).json.mappings as { source: string }[];
        assert.deepEqual(
          listed.filter((m) => m.source === 'admin'),
          [{ ...mapping, source: 'admin' }],
        );
        assert.deepEqual(await second.served({ model: QWEN, owned_by: 'vllm' }), [sims[1]!.address, sims[2]!.address].sort());
        assert.equal((await second.admin('DELETE', `/admin/api/routing?model=${encodeURIComponent(QWEN)}&owned_by=vllm`, { token: TOKEN })).status, 200);
        assert.deepEqual(JSON.parse(await readFile(stateFile, 'utf8')), { version: 1, mappings: [] });
      } finally {
        await second.stop();
      }
    });

    it('a save that fails is a 500 (OpenAI-style, logged) and undoes the change', async () => {
      const sub = await mkdtemp(join(dir, 'vanishing-'));
      const logs = captureLogs();
      const gateway = await start(['--admin-insecure-writes', `--state-file=${join(sub, 'state.json')}`], { logs: logs.stream });
      try {
        await rm(sub, { recursive: true });
        const answer = await gateway.admin('POST', '/admin/api/routing', { body: { model: QWEN, owned_by: 'vllm', service_name: 'qwen-vllm' } });
        assertError(answer, 500, 'internal_error');
        assert.ok(logs.lines.some((line) => line.msg === 'admin request failed' && line.level === 50));
        const listed = (await gateway.admin('GET', '/admin/api/routing')).json.mappings as { source: string }[];
        assert.deepEqual(
          listed.filter((m) => m.source === 'admin'),
          [],
        );
        assert.ok((await gateway.served({ model: QWEN, owned_by: 'vllm' })).includes(sims[0]!.address), 'not pinned');
      } finally {
        await gateway.stop();
      }
    });

    it('a corrupt file is logged, moved aside, and the service starts from configuration alone', async () => {
      const sub = await mkdtemp(join(dir, 'corrupt-'));
      const stateFile = join(sub, 'state.json');
      await writeFile(stateFile, '{"version":1,"mappings":[{"model":');
      const logs = captureLogs();
      const gateway = await start([`--state-file=${stateFile}`], { logs: logs.stream });
      try {
        const files = await readdir(sub);
        assert.equal(files.length, 1);
        assert.match(files[0]!, /^state\.json\.corrupt-\d{4}-\d\d-\d\dT[\d-]+Z$/);
        const warning = logs.lines.find((line) => String(line.msg).includes('state file is corrupt'));
        assert.ok(warning, 'logged');
        assert.equal(warning.level, 40);
        assert.equal(warning.stateFile, stateFile);
        assert.equal(warning.movedTo, join(sub, files[0]!));
        const listed = (await gateway.admin('GET', '/admin/api/routing')).json.mappings as { source: string }[];
        assert.deepEqual(
          listed.filter((m) => m.source === 'admin'),
          [],
        );
      } finally {
        await gateway.stop();
      }
    });

    it('a saved mapping whose group is gone, or whose key the routes file now maps, is logged and skipped', async () => {
      const stateFile = join(dir, 'stale-state.json');
      const keep = { model: QWEN, owned_by: 'sglang', service_name: 'qwen-vllm' };
      await writeFile(
        stateFile,
        JSON.stringify({ version: 1, mappings: [{ model: QWEN, service_name: 'gone-group' }, { ...LLAMA_VLLM, service_name: 'qwen-vllm' }, keep] }),
      );
      const logs = captureLogs();
      const gateway = await start([`--state-file=${stateFile}`], { logs: logs.stream });
      try {
        const skipped = logs.lines.filter((line) => line.msg === 'state file mapping skipped');
        assert.deepEqual(
          skipped.map((line) => line.service_name),
          ['gone-group', 'qwen-vllm'],
        );
        assert.match(String(skipped[0]!.reason), /endpoint group "gone-group"/);
        assert.match(String(skipped[1]!.reason), /by the routes-file/);
        const listed = (await gateway.admin('GET', '/admin/api/routing')).json.mappings as { source: string }[];
        assert.deepEqual(
          listed.filter((m) => m.source === 'admin'),
          [{ ...keep, source: 'admin' }],
        );
      } finally {
        await gateway.stop();
      }
    });
  });
});

describe('admin API building blocks', () => {
  it('--static-hosts entries may carry a group= prefix (a DNS-1035 label); entries without one are in no group', () => {
    assert.deepEqual(parseStaticHosts('llama-vllm=10.0.0.1:8000,llama-vllm=http://10.0.0.2:8000/v1?a=b,10.0.0.3:8000'), [
      { spec: '10.0.0.1:8000', host: '10.0.0.1', port: 8000, group: 'llama-vllm' },
      { spec: 'http://10.0.0.2:8000/v1?a=b', host: '10.0.0.2', port: 8000, group: 'llama-vllm' },
      { spec: '10.0.0.3:8000', host: '10.0.0.3', port: 8000 },
    ]);
    for (const [flag, message] of [
      ['Llama=10.0.0.1:8000', /"Llama" is not a Service or endpoint group name/],
      ['=10.0.0.1:8000', /empty group/],
      ['a=b=10.0.0.1:8000', /"b=10\.0\.0\.1" is not an IP address or host name/],
    ] as const) {
      assert.throws(
        () => parseStaticHosts(flag),
        (err: unknown) => err instanceof ConfigError && err.flag === '--static-hosts' && message.test(err.message),
        flag,
      );
    }
  });

  it('the token compare accepts the token only: not a prefix, not a longer string, not empty', () => {
    const digest = (text: string) => createHash('sha256').update(text).digest();
    const token = 'abcdef123456';
    assert.equal(tokenMatches(token, digest(token)), true);
    for (const other of ['abcdef12345', 'abcdef1234567', '', 'ABCDEF123456']) assert.equal(tokenMatches(other, digest(token)), false, other);
  });
});
