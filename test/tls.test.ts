import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { get as httpGet } from 'node:http';
import { get as httpsGet } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect } from 'node:tls';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import type { Service } from '../src/app/service.js';
import { parseConfig } from '../src/config/config.js';
import { ConfigError } from '../src/config/errors.js';
import { createLogger } from '../src/log.js';
import { loadTlsMaterial } from '../src/tls/material.js';
import { CertificateWatcher, type ReloadResult, type TlsPort } from '../src/tls/watcher.js';
import { runNode } from './support/child.js';
import { EnvoyDouble } from './support/envoy/envoy-double.js';
import { captureLogs, chatBody, JSON_HEADERS, QWEN, withCluster } from './support/harness.js';
import { type Issued, makeCa, SERVER_NAME, SecretDir, type TestCa } from './support/tls-certs.js';
import { until } from './support/wait.js';

const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));
const BACKEND = '--static-hosts=127.0.0.1:9';
/** Rotation is seen within a debounce (100 ms) plus a file read; generous for a loaded machine. */
const ROTATION = { timeoutMs: 15_000 };

let dir: string;
let ca: TestCa;
let otherCa: TestCa;
let server: Issued;
let envoyClient: Issued;
let stranger: Issued;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'llm-extproc-tls-'));
  [ca, otherCa] = await Promise.all([makeCa(dir, 'ca'), makeCa(dir, 'other-ca')]);
  [server, envoyClient, stranger] = await Promise.all([ca.issue('server'), ca.issue('envoy'), otherCa.issue('stranger')]);
});
after(() => rm(dir, { recursive: true, force: true }));

const pod = (host: string) => [{ engine: 'vllm' as const, models: [QWEN], host }];
const tlsFlags = (cert: { certFile: string; keyFile: string }, prefix = '') => [`--${prefix}tls-cert=${cert.certFile}`, `--${prefix}tls-key=${cert.keyFile}`];
const chat = { method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody({ model: QWEN }) };

/** The SHA-256 fingerprint of the certificate a new TLS connection to `port` is served. */
async function peerFingerprint(port: number, trusted: Buffer[]): Promise<string> {
  const socket = connect({ host: '127.0.0.1', port, ca: trusted, servername: SERVER_NAME, ALPNProtocols: ['h2', 'http/1.1'] });
  try {
    await once(socket, 'secureConnect');
    return socket.getPeerCertificate().fingerprint256;
  } finally {
    socket.destroy();
  }
}

type HealthClient = grpc.Client & {
  check(req: { service: string }, options: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: { status: string }) => void): void;
};

/** A grpc-js client's Health.Check over a new channel: the status, or the call's error. */
function healthCheck(port: number, credentials: grpc.ChannelCredentials): Promise<string> {
  const Client = grpc.makeClientConstructor(healthService, 'Health') as unknown as new (
    address: string,
    creds: grpc.ChannelCredentials,
    options: grpc.ChannelOptions,
  ) => HealthClient;
  // The name Envoy's `sni` sends (an IP address is no TLS server name).
  const client = new Client(`127.0.0.1:${port}`, credentials, { 'grpc.ssl_target_name_override': SERVER_NAME });
  return new Promise<string>((resolve, reject) =>
    client.check({ service: '' }, { deadline: Date.now() + 10_000 }, (err, res) => (err ? reject(err) : resolve(res!.status))),
  ).finally(() => client.close());
}

const refused = (err: unknown) => (err as grpc.ServiceError).code === grpc.status.UNAVAILABLE;

async function reloads(service: Service, port: TlsPort, result: ReloadResult): Promise<number> {
  const { values } = await service.metrics.tlsReloads.get();
  return values.find((value) => value.labels.port === port && value.labels.result === result)?.value ?? 0;
}

function getStatus(get: typeof httpsGet, port: number, options: { ca?: Buffer[] } = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path: '/health', servername: SERVER_NAME, agent: false, ...options }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
  });
}

describe('TLS start-up checks: each mistake is a ConfigError naming its flag', () => {
  const parse = (...flags: string[]) => parseConfig([BACKEND, ...flags])!;
  const configError = (flag: string, message: RegExp) => (err: unknown) => {
    assert.ok(err instanceof ConfigError, String(err));
    assert.equal(err.flag, flag);
    assert.match(err.message, message);
    assert.doesNotMatch(err.line, /\n/);
    return true;
  };

  it('refuses a certificate without key, a key without certificate, a client CA without both', () => {
    assert.throws(() => parse('--tls-cert=a.crt'), configError('--tls-cert', /needs --tls-key/));
    assert.throws(() => parse('--tls-key=a.key'), configError('--tls-key', /needs --tls-cert/));
    assert.throws(() => parse('--tls-client-ca=ca.crt'), configError('--tls-client-ca', /needs --tls-cert and --tls-key/));
    assert.throws(() => parse('--admin-tls-cert=a.crt'), configError('--admin-tls-cert', /needs --admin-tls-key/));
    assert.throws(() => parse('--admin-tls-key=a.key'), configError('--admin-tls-key', /needs --admin-tls-cert/));
    assert.equal(parse().tls, undefined);
    assert.deepEqual(parse(...tlsFlags({ certFile: 'a.crt', keyFile: 'a.key' }), '--tls-client-ca=ca.crt').tls, {
      cert: { path: 'a.crt', flag: '--tls-cert' },
      key: { path: 'a.key', flag: '--tls-key' },
      clientCa: { path: 'ca.crt', flag: '--tls-client-ca' },
    });
  });

  it('refuses unreadable, non-PEM and mismatched files', async () => {
    const garbage = join(dir, 'garbage.pem');
    const brokenCert = join(dir, 'broken.crt');
    await writeFile(garbage, 'not a certificate\n');
    await writeFile(brokenCert, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
    const load = (...flags: string[]) => loadTlsMaterial(parse(...flags).tls!);
    const ours = tlsFlags(server);
    await assert.rejects(load(...tlsFlags({ ...server, certFile: join(dir, 'missing.crt') })), configError('--tls-cert', /cannot read .*missing\.crt: ENOENT/));
    await assert.rejects(load(...tlsFlags({ ...server, keyFile: dir })), configError('--tls-key', /cannot read .*: EISDIR/));
    await assert.rejects(load(...tlsFlags({ ...server, certFile: garbage })), configError('--tls-cert', /garbage\.pem holds no PEM certificate/));
    await assert.rejects(load(...tlsFlags({ ...server, certFile: brokenCert })), configError('--tls-cert', /certificate 1 does not parse/));
    await assert.rejects(load(...tlsFlags({ ...server, keyFile: garbage })), configError('--tls-key', /holds no PEM private key/));
    await assert.rejects(
      load(...tlsFlags({ ...server, keyFile: stranger.keyFile })),
      configError('--tls-key', /stranger\.key is not the private key of the certificate in .*server\.crt/),
    );
    await assert.rejects(load(...ours, `--tls-client-ca=${garbage}`), configError('--tls-client-ca', /holds no PEM certificate/));
    const adminFiles = parse(...tlsFlags({ ...server, keyFile: garbage }, 'admin-')).adminTls!;
    await assert.rejects(loadTlsMaterial(adminFiles), configError('--admin-tls-key', /holds no PEM private key/));
    // A path set by an env var is reported there.
    const fromEnv = parseConfig([BACKEND], { LLM_EXTPROC_TLS_CERT: server.certFile, LLM_EXTPROC_TLS_KEY: garbage })!.tls!;
    await assert.rejects(loadTlsMaterial(fromEnv), configError('LLM_EXTPROC_TLS_KEY', /holds no PEM private key/));
    const material = await load(...ours, `--tls-client-ca=${ca.certFile}`);
    assert.equal(material.leaf.fingerprint256, server.fingerprint);
  });

  it('the process exits 2 with one line for a key that does not match, or a client CA alone', async () => {
    const runMain = async (args: string[]) => {
      const { code, stderr } = await runNode([
        MAIN,
        '--log-level=warn',
        '--host=127.0.0.1',
        '--port=0',
        '--admin-host=127.0.0.1',
        '--admin-port=0',
        BACKEND,
        ...args,
      ]);
      return { code, lines: stderr.trim().split('\n') };
    };
    const [mismatch, caAlone] = await Promise.all([runMain(tlsFlags({ ...server, keyFile: stranger.keyFile })), runMain([`--tls-client-ca=${ca.certFile}`])]);
    for (const [outcome, flag] of [
      [mismatch, '--tls-key'],
      [caAlone, '--tls-client-ca'],
    ] as const) {
      assert.equal(outcome.code, 2, outcome.lines.join('\n'));
      assert.equal(outcome.lines.length, 1, outcome.lines.join('\n'));
      assert.match(outcome.lines[0]!, new RegExp(`^llm-extproc: ${flag}: .+ \\(hint: .+\\)$`));
    }
  });
});

describe('ext_proc over TLS', () => {
  it('routes a request through TLS; a plaintext client is refused', async () => {
    await withCluster(
      { pods: pod('127.0.0.171'), flags: tlsFlags(server), envoy: { extProcTls: { ca: ca.cert, servername: SERVER_NAME } } },
      async (cluster) => {
        const response = await cluster.envoy.request(chat);
        assert.equal(response.status, 200, response.body.toString());
        assert.equal(response.upstream, cluster.pods[0]!.address);
        const port = cluster.service.grpcPort;
        assert.equal(await healthCheck(port, grpc.credentials.createSsl(ca.cert)), 'SERVING');
        await assert.rejects(healthCheck(port, grpc.credentials.createInsecure()), refused);
        // A client that does not trust the CA refuses the server.
        await assert.rejects(healthCheck(port, grpc.credentials.createSsl(otherCa.cert)), refused);
      },
    );
  });

  it('mTLS: a client certificate from --tls-client-ca is required', async () => {
    const envoyTls = { ca: ca.cert, cert: envoyClient.cert, key: envoyClient.key, servername: SERVER_NAME };
    const flags = [...tlsFlags(server), `--tls-client-ca=${ca.certFile}`];
    await withCluster({ pods: pod('127.0.0.172'), flags, envoy: { extProcTls: envoyTls } }, async (cluster) => {
      const response = await cluster.envoy.request(chat);
      assert.equal(response.status, 200, response.body.toString());
      const port = cluster.service.grpcPort;
      assert.equal(await healthCheck(port, grpc.credentials.createSsl(ca.cert, envoyClient.key, envoyClient.cert)), 'SERVING');
      await assert.rejects(healthCheck(port, grpc.credentials.createSsl(ca.cert)), refused, 'no client certificate');
      await assert.rejects(healthCheck(port, grpc.credentials.createSsl(ca.cert, stranger.key, stranger.cert)), refused, 'client certificate of another CA');
    });
  });

  it('rotation: new connections get the new certificate, a stream opened before keeps going, a bad file keeps the last good one', async () => {
    const secret = new SecretDir(join(dir, 'grpc-secret'));
    await mkdir(secret.dir);
    await secret.write(server.cert, server.key);
    const rotatedCa = await makeCa(dir, 'rotated-ca');
    const next = await rotatedCa.issue('server-2');
    const both = [ca.cert, rotatedCa.cert];
    const logs = captureLogs();
    await withCluster(
      { pods: pod('127.0.0.173'), flags: tlsFlags(secret), envoy: { extProcTls: { ca: both, servername: SERVER_NAME } }, logs: logs.stream },
      async (cluster) => {
        const { service } = cluster;
        const port = service.grpcPort;
        assert.equal(await peerFingerprint(port, both), server.fingerprint);
        const before = await cluster.envoy.open(chat);
        assert.equal(before.upstream, cluster.pods[0]!.address);

        await secret.write(next.cert, next.key);
        await until(
          'a new connection to be served the new certificate',
          () => peerFingerprint(port, both),
          (fp) => fp === next.fingerprint,
          ROTATION,
        );
        assert.equal(await reloads(service, 'grpc', 'ok'), 1);
        assert.equal(await reloads(service, 'grpc', 'failed'), 0);
        // The response path runs on the stream (and connection) opened with the old certificate.
        const response = await before.forward();
        assert.equal(response.status, 200, response.body.toString());
        assert.equal(response.headers['x-routed-to'], cluster.pods[0]!.address);
        assert.equal(cluster.envoy.stats().connections, 1);

        // An Envoy that trusts only the new CA gets through now.
        const renewed = new EnvoyDouble({
          extProcTarget: `127.0.0.1:${port}`,
          processingMode: { requestBodyMode: 'BUFFERED' },
          messageTimeoutMs: 10_000,
          extProcTls: { ca: rotatedCa.cert, servername: SERVER_NAME },
        });
        try {
          assert.equal((await renewed.request(chat)).status, 200);
        } finally {
          await renewed.close();
        }

        await secret.write('-----BEGIN CERTIFICATE-----\ntruncated', next.key);
        await until(
          'the failed reload to be counted',
          () => reloads(service, 'grpc', 'failed'),
          (n) => n === 1,
          ROTATION,
        );
        assert.equal(await peerFingerprint(port, both), next.fingerprint, 'the last good certificate still serves');
        assert.equal(await reloads(service, 'grpc', 'ok'), 1);
        const warnings = logs.lines.filter((line) => line.level === 40 && String(line.msg).startsWith('TLS reload failed'));
        assert.equal(warnings.length, 1, JSON.stringify(warnings));
        assert.match(String(warnings[0]!.msg), new RegExp(`${secret.certFile.replaceAll('.', '\\.')} `));
        assert.equal(warnings[0]!.file, secret.certFile);
      },
    );
  });
});

describe('admin port over HTTPS', () => {
  it('answers HTTPS only, and follows a rotation of its certificate', async () => {
    const secret = new SecretDir(join(dir, 'admin-secret'));
    await mkdir(secret.dir);
    await secret.write(server.cert, server.key);
    const rotatedCa = await makeCa(dir, 'admin-rotated-ca');
    const next = await rotatedCa.issue('admin-2');
    const both = [ca.cert, rotatedCa.cert];
    await withCluster({ pods: pod('127.0.0.174'), flags: tlsFlags(secret, 'admin-') }, async (cluster) => {
      const { service } = cluster;
      const port = service.adminPort;
      assert.equal(await getStatus(httpsGet, port, { ca: [ca.cert] }), 200);
      await assert.rejects(getStatus(httpGet, port), 'plain HTTP is refused');
      assert.equal(await peerFingerprint(port, both), server.fingerprint);

      await secret.write(next.cert, next.key);
      await until(
        'a new connection to be served the new certificate',
        () => peerFingerprint(port, both),
        (fp) => fp === next.fingerprint,
        ROTATION,
      );
      assert.equal(await getStatus(httpsGet, port, { ca: [rotatedCa.cert] }), 200);
      assert.equal(await reloads(service, 'admin', 'ok'), 1);

      await secret.write(next.cert, stranger.key);
      await until(
        'the failed reload to be counted',
        () => reloads(service, 'admin', 'failed'),
        (n) => n === 1,
        ROTATION,
      );
      assert.equal(await peerFingerprint(port, both), next.fingerprint, 'the last good certificate still serves');
    });
  });
});

describe('CertificateWatcher', () => {
  it('passes on and counts only a changed, working set of files', async () => {
    const secret = new SecretDir(join(dir, 'unit-secret'));
    await mkdir(secret.dir);
    await secret.write(server.cert, server.key);
    const counted: ReloadResult[] = [];
    const files = { cert: { path: secret.certFile, flag: '--tls-cert' }, key: { path: secret.keyFile, flag: '--tls-key' }, clientCa: undefined };
    // The file events' own reloads are held off for the whole test: it calls reload() itself.
    const options = { port: 'grpc' as const, log: createLogger('silent'), onReload: (r: ReloadResult) => counted.push(r), settleMs: 3_600_000 };
    const watcher = await CertificateWatcher.start(files, options);
    try {
      const seen: string[] = [];
      watcher.subscribe((material) => seen.push(material.leaf.fingerprint256));
      assert.equal(await watcher.reload(), 'unchanged');
      await secret.write(server.cert, stranger.key);
      assert.equal(await watcher.reload(), 'failed');
      assert.equal(watcher.current.leaf.fingerprint256, server.fingerprint);
      await secret.write(stranger.cert, stranger.key);
      assert.equal(await watcher.reload(), 'ok');
      assert.deepEqual(seen, [stranger.fingerprint]);
      assert.deepEqual(counted, ['failed', 'ok']);
    } finally {
      watcher.close();
    }
  });
});
