import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import type { Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startService } from '../src/app/service.js';
import { parseConfig } from '../src/config/config.js';
import { ConfigError } from '../src/config/errors.js';
import { logGrpcJsTo } from '../src/extproc/grpc-log.js';
import { createLogger } from '../src/log.js';
import { CHILD_TIMEOUT_MS, freePort, occupy, release, runNode, spawnNode } from './support/child.js';
import { FakeKubeApiServer, statusObject } from './support/kube-api-server.js';
import { until } from './support/wait.js';

const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));

/** Fails unless `host:port` can be bound, i.e. nothing is left listening there. */
async function assertFree(host: string, port: number): Promise<void> {
  await release((await occupy(host, port)).server);
}

/** Runs main.js until it exits (SIGKILL after CHILD_TIMEOUT_MS). */
function run(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number | null; stderr: string }> {
  return runNode([MAIN, '--log-level=warn', ...args], { env });
}

/** Exit 2 and exactly one line on stderr: `llm-extproc: <flag>: <message> (hint: ...)`, no stack trace. */
function assertOneLine(outcome: { code: number | null; stderr: string }, flag: string, message: RegExp): void {
  const lines = outcome.stderr.trim().split('\n');
  assert.equal(outcome.code, 2, outcome.stderr);
  assert.equal(lines.length, 1, `one line on stderr, got:\n${outcome.stderr}`);
  assert.doesNotMatch(outcome.stderr, /^\s+at /m, 'no stack trace');
  assert.ok(lines[0]!.startsWith(`llm-extproc: ${flag}: `), lines[0]);
  assert.match(lines[0]!, message);
  assert.match(lines[0]!, /\(hint: .+\)$/);
}

describe('start-up mistakes: one line on stderr, exit 2', { concurrency: true }, () => {
  // Anything that starts by mistake does so on loopback ports of its own, and the test then fails.
  const loopback = (host: string) => [`--host=${host}`, '--port=0', `--admin-host=${host}`, '--admin-port=0'];
  const backend = '--static-hosts=127.0.0.1:9';
  const cases: [name: string, args: string[], flag: string, message: RegExp][] = [
    ['a static host without port', ['--static-hosts=10.0.0.1', ...loopback('127.0.0.71')], '--static-hosts', /"10\.0\.0\.1" has no port/],
    ['a static port over 65535', ['--static-hosts=10.0.0.1:70000', ...loopback('127.0.0.71')], '--static-hosts', /port "70000" is not 1-65535/],
    ['an https backend', ['--static-hosts=https://10.0.0.1:8443', ...loopback('127.0.0.71')], '--static-hosts', /only http backends/],
    ['--static-hosts=, (no backend at all)', ['--static-hosts=,', ...loopback('127.0.0.71')], '--static-hosts', /names no backend/],
    [
      'a static host name that does not resolve',
      ['--static-hosts=no-such-backend.invalid:8000', ...loopback('127.0.0.71')],
      '--static-hosts',
      /cannot resolve "no-such-backend\.invalid"/,
    ],
    ['--port= (an unset shell variable)', [backend, ...loopback('127.0.0.71'), '--port='], '--port', /is empty/],
    ['a port in hex', [backend, ...loopback('127.0.0.71'), '--port=0x1f90'], '--port', /"0x1f90" is not a port number/],
    ['a dotted quad with an octet over 255', [backend, ...loopback('127.0.0.71'), '--host=999.1.1.1'], '--host', /"999\.1\.1\.1" is not an IPv4 address/],
    ['a probe interval beyond 1h', [backend, ...loopback('127.0.0.71'), '--probe-interval=600h'], '--probe-interval', /600h is outside 100ms\.\.1h/],
    [
      'an unreadable route file',
      [backend, ...loopback('127.0.0.71'), `--route-config=${join(tmpdir(), 'llm-extproc-no-such-routes.json')}`],
      '--route-config',
      /cannot read .*llm-extproc-no-such-routes\.json/,
    ],
    ['an unknown flag', [backend, ...loopback('127.0.0.71'), '--bogus'], '--bogus', /unknown flag.*--help/],
  ];
  for (const [name, args, flag, message] of cases) {
    it(name, async () => assertOneLine(await run(args), flag, message));
  }

  it('EXTERNAL_HTTP_FILTERS that is not JSON', async () => {
    const outcome = await run([backend, ...loopback('127.0.0.71')], { ...process.env, EXTERNAL_HTTP_FILTERS: '[{name: sample}]' });
    assertOneLine(outcome, 'EXTERNAL_HTTP_FILTERS', /JSON/);
  });

  describe('ports already in use', { concurrency: true }, () => {
    let grpcBlocker: { server: Server; port: number };
    let adminBlocker: { server: Server; port: number };
    before(async () => {
      grpcBlocker = await occupy('127.0.0.72');
      adminBlocker = await occupy('127.0.0.73');
    });
    after(async () => {
      await release(grpcBlocker.server);
      await release(adminBlocker.server);
    });

    it('the gRPC port', async () => {
      const adminPort = await freePort('127.0.0.72');
      const args = [backend, '--host=127.0.0.72', `--port=${grpcBlocker.port}`, '--admin-host=127.0.0.72', `--admin-port=${adminPort}`];
      assertOneLine(await run(args), '--port', new RegExp(`127\\.0\\.0\\.72:${grpcBlocker.port} is already in use`));
      await assertFree('127.0.0.72', adminPort);
    });

    it('the admin port, after the gRPC port was bound', async () => {
      const grpcPort = await freePort('127.0.0.73');
      const args = [backend, '--host=127.0.0.73', `--port=${grpcPort}`, '--admin-host=127.0.0.73', `--admin-port=${adminBlocker.port}`];
      assertOneLine(await run(args), '--admin-port', new RegExp(`127\\.0\\.0\\.73:${adminBlocker.port} is already in use`));
      await assertFree('127.0.0.73', grpcPort);
    });

    it('the admin port with --demo (its simulated backends already running)', async () => {
      const args = ['--demo', '--host=127.0.0.73', '--port=0', '--admin-host=127.0.0.73', `--admin-port=${adminBlocker.port}`];
      assertOneLine(await run(args), '--admin-port', /is already in use/);
    });
  });
});

describe('start-up mistakes with --service-discovery=k8s: one line, exit 2', { concurrency: true }, () => {
  let api: FakeKubeApiServer;
  let kubeconfig: string;
  const args = ['--service-discovery=k8s', '--k8s-namespace=llm', '--host=127.0.0.75', '--port=0', '--admin-host=127.0.0.75', '--admin-port=0'];
  before(async () => {
    api = await FakeKubeApiServer.start();
    api.requiredToken = 'right-token';
    api.respond(
      { resource: 'pods', namespace: 'forbidden' },
      { status: 403, body: statusObject(403, 'Forbidden', 'pods is forbidden: cannot list resource "pods"') },
    );
    const dir = await mkdtemp(join(tmpdir(), 'kubeconfig-'));
    kubeconfig = join(dir, 'config');
    await writeFile(
      kubeconfig,
      [
        'apiVersion: v1',
        'kind: Config',
        `clusters: [{name: fake, cluster: {server: "${api.url}", insecure-skip-tls-verify: true}}]`,
        'users: [{name: me, user: {token: right-token}}]',
        'contexts: [{name: fake, context: {cluster: fake, user: me}}]',
        'current-context: fake',
      ].join('\n'),
    );
  });
  after(async () => api.stop());
  const env = (extra: Record<string, string>) => ({ PATH: process.env.PATH, HOME: tmpdir(), ...extra });

  it('no kube config at all (not in a cluster, no KUBECONFIG, no ~/.kube/config)', async () => {
    const outcome = await run(args, env({}));
    assert.equal(outcome.code, 2, outcome.stderr);
    assert.equal(outcome.stderr.trim().split('\n').length, 1, outcome.stderr);
    assert.match(outcome.stderr, /kube/i);
  });

  it('RBAC missing: names the verb, resource and namespace', async () => {
    const outcome = await run([...args, '--k8s-namespace=forbidden'], env({ KUBECONFIG: kubeconfig }));
    assert.equal(outcome.code, 2, outcome.stderr);
    const lines = outcome.stderr.trim().split('\n');
    assert.equal(lines.length, 1, outcome.stderr);
    assert.doesNotMatch(outcome.stderr, /^\s+at /m);
    assert.match(lines[0]!, /list.*pods.*forbidden/i);
    assert.match(lines[0]!, /k8s\/rbac\.yaml/);
  });

  it('control: the same kube config and a namespace it may read starts (and is stopped)', async () => {
    const child = spawnNode([MAIN, '--log-level=info', ...args], { env: env({ KUBECONFIG: kubeconfig }) });
    await until('llm-extproc listening', child.stdout, (text) => text.includes('llm-extproc listening'), { timeoutMs: CHILD_TIMEOUT_MS });
    child.kill('SIGTERM');
    assert.equal((await child.closed).code, 0);
  });
});

describe('startService when a port cannot be bound', () => {
  const log = createLogger('silent');
  before(() => logGrpcJsTo(log)); // grpc-js would print its own line about the failed bind
  it('closes the gRPC server it already bound when the admin port fails', async () => {
    const adminBlocker = await occupy('127.0.0.74');
    try {
      const grpcPort = await freePort('127.0.0.74');
      const config = parseConfig([
        '--static-hosts=127.0.0.1:9',
        '--host=127.0.0.74',
        `--port=${grpcPort}`,
        '--admin-host=127.0.0.74',
        `--admin-port=${adminBlocker.port}`,
      ])!;
      await assert.rejects(startService(config, log), (err: unknown) => err instanceof ConfigError && err.flag === '--admin-port');
      await assertFree('127.0.0.74', grpcPort);
    } finally {
      await release(adminBlocker.server);
    }
  });

  it("names --host and the cause when the address is not one of this machine's", async () => {
    // 192.0.2.0/24 is TEST-NET-1: a valid address that no machine here has.
    const config = parseConfig(['--static-hosts=127.0.0.1:9', '--host=192.0.2.1', '--port=0', '--admin-host=127.0.0.74', '--admin-port=0'])!;
    await assert.rejects(startService(config, log), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.line, '--host: 192.0.2.1 is not an address of this machine (hint: use one of its addresses, 0.0.0.0 for all of them or 127.0.0.1)');
      return true;
    });
  });
});
