import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type CommandIo, tryCommand } from '../src/try/command.js';
import { ExtProcClient } from '../src/try/extproc-client.js';
import { runNode } from './support/child.js';
import { type Cluster, DEFAULT_PODS, QWEN, startCluster, withCluster } from './support/harness.js';
import { makeCa, SERVER_NAME } from './support/tls-certs.js';

const CLI = fileURLToPath(new URL('../src/try/cli.js', import.meta.url));
/** Generous: a child starts in ~200 ms, but CI machines are slow and test files run side by side. */
const CHILD_TIMEOUT_MS = 30_000;

/** Collects what the command writes; `onWrite` sees each write as it happens. */
class Capture {
  readonly writes: string[] = [];
  onWrite: ((text: string) => void) | undefined;

  write(chunk: string | Buffer): boolean {
    const text = chunk.toString();
    this.writes.push(text);
    this.onWrite?.(text);
    return true;
  }

  get text(): string {
    return this.writes.join('');
  }
}

async function run(argv: string[]): Promise<{ code: number; stdout: Capture; stderr: Capture }> {
  const io = { stdout: new Capture(), stderr: new Capture() } satisfies CommandIo;
  const code = await tryCommand(argv, io);
  return { code, ...io };
}

/** Runs the built CLI as a child process until it exits (SIGKILL after CHILD_TIMEOUT_MS). */
function runChild(argv: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return runNode([CLI, ...argv], { timeoutMs: CHILD_TIMEOUT_MS });
}

/** The destination the text output names. */
function routedTo(stdout: string): string {
  const match = /^Routed: Envoy's ORIGINAL_DST cluster sends the request to (\S+)$/m.exec(stdout);
  assert.ok(match, `no route in:\n${stdout}`);
  return match[1]!;
}

describe('npm run try: Envoy played against a real llm-extproc', () => {
  let cluster: Cluster;
  let target: string[];

  before(async () => {
    // Paced tokens, so a streamed answer takes long enough to be seen arriving piece by piece.
    cluster = await startCluster({ pods: DEFAULT_PODS.map((pod) => ({ ...pod, interTokenMs: 20 })) });
    target = ['--target', `127.0.0.1:${cluster.service.grpcPort}`, '--admin', `127.0.0.1:${cluster.service.adminPort}`];
  });
  after(() => cluster.close());

  it('explains a routed request: the destination is a real SGLang pod, with its engine, models and the picker', async () => {
    const { code, stdout, stderr } = await run(target);
    assert.equal(code, 0, stderr.text);
    const address = routedTo(stdout.text);
    assert.equal(cluster.podByAddress(address)?.engine, 'sglang', `${address} is not one of the SGLang pods`);
    assert.match(stdout.text, new RegExp(`header set: x-gateway-destination-endpoint: ${address.replaceAll('.', '\\.')}`));
    assert.match(stdout.text, /clear_route_cache/);
    assert.match(stdout.text, new RegExp(`endpoint: engine sglang, serves ${QWEN.replace('.', '\\.')} \\(sglang\\)`));
    assert.match(stdout.text, /why: least_outstanding_requests picked it .* on sglang, with 0 request\(s\) in flight there/);
    assert.match(stdout.text, /← status {13}gRPC OK/);
    // Its half-close ended the request: nothing is left counted in flight.
    await cluster.settled();
  });

  it('prints the 404 local reply for a model no backend serves', async () => {
    const { code, stdout } = await run([...target, '-d', JSON.stringify({ model: 'no/such-model', messages: [] })]);
    assert.equal(code, 0);
    assert.match(stdout.text, /^Local reply: Envoy answers the client itself/m);
    assert.match(stdout.text, /^ {2}HTTP 404$/m);
    assert.match(stdout.text, /^ {2}content-type: application\/json$/m);
    const body = stdout.text.split('\n').find((line) => line.startsWith('{"error"'));
    assert.equal((JSON.parse(body!) as { error: { code: string } }).error.code, 'model_not_found');
    assert.doesNotMatch(stdout.text, /^Routed/m);
  });

  it('--forward prints the simulated completion, with x-routed-to set on the response path', async () => {
    const { code, stdout, stderr } = await run([
      ...target,
      '--forward',
      '-d',
      JSON.stringify({ model: QWEN, owned_by: 'vllm', max_tokens: 3, messages: [{ role: 'user', content: 'Hi' }] }),
    ]);
    assert.equal(code, 0, stderr.text);
    const address = routedTo(stdout.text);
    assert.equal(cluster.podByAddress(address)?.engine, 'vllm');
    assert.match(stdout.text, /→ response_headers {3}:status 200/);
    assert.match(stdout.text, new RegExp(`x-routed-to: ${address.replaceAll('.', '\\.')} {3}\\(set by llm-extproc on response_headers\\)`));
    const completion = JSON.parse(stdout.text.split('\n').find((line) => line.startsWith('{"id"'))!) as {
      object: string;
      usage: { completion_tokens: number };
    };
    assert.equal(completion.object, 'chat.completion');
    assert.equal(completion.usage.completion_tokens, 3);
  });

  it('--forward streams SSE lines as the backend sends them', async () => {
    const stdout = new Capture();
    let pod: ReturnType<Cluster['podByAddress']>;
    // For each `data:` write: was the backend still generating when it was written?
    const seenWhileGenerating: boolean[] = [];
    stdout.onWrite = (text) => {
      pod ??= cluster.podByAddress(/sends the request to (\S+)/.exec(text)?.[1]);
      if (text.includes('data: {')) seenWhileGenerating.push((pod?.stats().running ?? 0) > 0);
    };
    const body = JSON.stringify({ model: QWEN, owned_by: 'sglang', stream: true, max_tokens: 8, messages: [{ role: 'user', content: 'Hi' }] });
    const code = await tryCommand([...target, '--forward', '-d', body], { stdout, stderr: new Capture() });
    assert.equal(code, 0);
    assert.ok(pod, 'the route names a pod');
    assert.ok(seenWhileGenerating.filter(Boolean).length >= 2, `data: lines written while the pod generated: ${JSON.stringify(seenWhileGenerating)}`);
    assert.match(stdout.text, /^data: \[DONE\]$/m);
  });

  it('FULL_DUPLEX_STREAMED: routes in the held headers answer and forwards the echoed body', async () => {
    const { code, stdout, stderr } = await run([...target, '--mode', 'FULL_DUPLEX_STREAMED', '--response-mode', 'FULL_DUPLEX_STREAMED', '--forward']);
    assert.equal(code, 0, stderr.text);
    const trace = stdout.text.split('\n').filter((line) => /^ {2}[→←] /.test(line));
    assert.match(trace[0]!, /→ request_headers .*protocol_config FULL_DUPLEX_STREAMED\/FULL_DUPLEX_STREAMED/);
    assert.match(trace[1]!, /→ request_body .*end_of_stream=true/);
    assert.match(trace[2]!, /← request_headers .*set x-gateway-destination-endpoint, clear_route_cache/);
    assert.match(trace[3]!, /← request_body +streamed_response \d+ bytes, end_of_stream=true/);
    assert.equal(cluster.podByAddress(routedTo(stdout.text))?.engine, 'sglang');
    // The backend got the echoed body: a valid request it answered.
    assert.match(stdout.text, /"object":"chat.completion"/);
    assert.match(stdout.text, /response body: \d+ response_body messages sent to llm-extproc, \d+ answers/);
  });

  it('--json prints one document with the route, the endpoint and the decision', async () => {
    const { code, stdout } = await run([...target, '--json']);
    assert.equal(code, 0);
    const result = JSON.parse(stdout.text) as {
      outcome: string;
      route: { destination: string; clear_route_cache: boolean };
      admin: { reachable: boolean; endpoint: { engines: string[] }; decision: { picker: string; endpoint: string }; decision_is_ours: boolean };
      trace: { message: string }[];
    };
    assert.equal(result.outcome, 'routed');
    assert.equal(cluster.podByAddress(result.route.destination)?.engine, 'sglang');
    assert.equal(result.route.clear_route_cache, true);
    assert.deepEqual(result.admin.endpoint.engines, ['sglang']);
    assert.equal(result.admin.decision.picker, 'least_outstanding_requests');
    assert.equal(result.admin.decision.endpoint, result.route.destination);
    assert.equal(result.admin.decision_is_ours, true);
    assert.deepEqual(
      result.trace.map((event) => event.message),
      ['request_headers', 'request_headers', 'request_body', 'request_body', 'half-close', 'status'],
    );
  });

  it('says in one line when the admin port cannot be reached, and explains the route all the same', async () => {
    const { code, stdout } = await run(['--target', `127.0.0.1:${cluster.service.grpcPort}`, '--admin', '127.0.0.1:9']);
    assert.equal(code, 0);
    routedTo(stdout.text);
    assert.equal(stdout.text.split('\n').filter((line) => line.includes('admin port')).length, 1);
    assert.match(stdout.text, /the admin port cannot be reached: ECONNREFUSED/);
  });

  it('a bad flag is one line on stderr and exit 2', async () => {
    for (const argv of [['--mode', 'CHUNKY'], ['--target', 'nowhere'], ['--header', 'no colon'], ['--frobnicate']]) {
      const { code, stdout, stderr } = await run(argv);
      assert.equal(code, 2, argv.join(' '));
      assert.equal(stdout.text, '');
      assert.match(stderr.text, /^llm-extproc-try: [^\n]+\n$/, argv.join(' '));
    }
  });

  it('a gRPC error from llm-extproc is printed with its code and details, exit 1', async () => {
    // llm-extproc sheds streams beyond --max-open-streams: hold the only one.
    const shedding = await startCluster({ pods: DEFAULT_PODS.slice(0, 1), flags: ['--max-open-streams=1'] });
    const holder = new ExtProcClient({ target: `127.0.0.1:${shedding.service.grpcPort}` });
    try {
      const held = holder.open();
      held.send({ request_headers: { headers: { headers: [{ key: ':path', raw_value: Buffer.from('/v1/chat/completions') }] }, end_of_stream: false } });
      await held.next(10_000, 'request_headers');
      const { code, stderr } = await run(['--target', `127.0.0.1:${shedding.service.grpcPort}`, '--admin', `127.0.0.1:${shedding.service.adminPort}`]);
      assert.equal(code, 1);
      assert.match(
        stderr.text,
        /^llm-extproc-try: llm-extproc ended the stream with gRPC RESOURCE_EXHAUSTED \(8\): llm-extproc: too many open ext_proc streams; Envoy answers 500/,
      );
      await held.halfClose();
    } finally {
      holder.close();
      await shedding.close();
    }
  });

  it('as a child process: routes and forwards (npm run try)', { timeout: CHILD_TIMEOUT_MS * 2 }, async () => {
    const { code, stdout, stderr } = await runChild([...target, '--forward']);
    assert.equal(code, 0, stderr);
    assert.equal(cluster.podByAddress(routedTo(stdout))?.engine, 'sglang');
    assert.match(stdout, /"object":"chat.completion"/);
  });
});

describe('npm run try without llm-extproc', () => {
  it('names the address and the way to start it in one line, exit 2', { timeout: CHILD_TIMEOUT_MS * 2 }, async () => {
    // Port 9 (discard) on loopback: nothing listens there.
    const { code, stdout, stderr } = await runChild(['--target', '127.0.0.1:9']);
    assert.equal(code, 2);
    assert.equal(stdout, '');
    assert.match(stderr, /^llm-extproc-try: llm-extproc is not reachable at 127\.0\.0\.1:9 \(ECONNREFUSED\); start it with `npm start -- --demo`[^\n]*\n$/);
  });
});

describe('npm run try over mTLS', () => {
  it('routes with --ca, --cert, --key and --server-name; without a client certificate the handshake fails (exit 2)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'try-tls-'));
    try {
      const ca = await makeCa(dir, 'ca');
      const [server, client] = await Promise.all([ca.issue('server'), ca.issue('client')]);
      const flags = [`--tls-cert=${server.certFile}`, `--tls-key=${server.keyFile}`, `--tls-client-ca=${ca.certFile}`];
      const envoyTls = { ca: ca.cert, cert: client.cert, key: client.key, servername: SERVER_NAME };
      await withCluster({ pods: DEFAULT_PODS.slice(2, 3), flags, envoy: { extProcTls: envoyTls } }, async (cluster) => {
        const base = [
          '--target',
          `127.0.0.1:${cluster.service.grpcPort}`,
          '--admin',
          `127.0.0.1:${cluster.service.adminPort}`,
          '--ca',
          ca.certFile,
          '--server-name',
          SERVER_NAME,
        ];
        const mtls = await run([...base, '--cert', client.certFile, '--key', client.keyFile]);
        assert.equal(mtls.code, 0, mtls.stderr.text);
        assert.equal(routedTo(mtls.stdout.text), cluster.pods[0]!.address);
        const anonymous = await run(base);
        assert.equal(anonymous.code, 2);
        assert.match(
          anonymous.stderr.text,
          /^llm-extproc-try: llm-extproc at 127\.0\.0\.1:\d+ refused the TLS handshake \([^)\n]*certificate required\); check --ca[^\n]*\n$/,
        );
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
