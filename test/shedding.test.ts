import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import type { Service } from '../src/app/service.js';
import { createLogger } from '../src/log.js';
import { StreamShedding } from '../src/protection/shedding.js';
import { decodeProcessingResponse, encodeProcessingRequest, fromHeaderInput, toHeaderMap } from './support/envoy/codec.js';
import type { EnvoyDouble } from './support/envoy/envoy-double.js';
import type { GrpcH2Stream } from './support/envoy/grpc-h2.js';
import { type Cluster, captureLogs, chatBody, QWEN, startCluster } from './support/harness.js';
import { until } from './support/wait.js';

describe('StreamShedding', () => {
  function shedding(maxOpenStreams: number) {
    const logs = captureLogs();
    const clock = { ms: 0 };
    let shed = 0;
    const admission = new StreamShedding({ maxOpenStreams, shed: () => shed++, log: createLogger('info', logs.stream), now: () => clock.ms });
    return { admission, clock, logs, shed: () => shed };
  }

  it('admits below the limit and sheds at it; 0 = no limit', () => {
    const { admission, shed } = shedding(3);
    assert.deepEqual(
      [0, 1, 2].map((open) => admission.admit(open)),
      [true, true, true],
    );
    assert.equal(admission.admit(3), false);
    assert.equal(shed(), 1);
    const unlimited = shedding(0);
    assert.equal(unlimited.admission.admit(1_000_000), true);
    assert.equal(unlimited.shed(), 0);
  });

  it('logs at most once a second, each line with the count shed since the last', async () => {
    const { admission, clock, logs, shed } = shedding(1);
    for (let i = 0; i < 5; i++) admission.admit(1);
    clock.ms = 999;
    for (let i = 0; i < 3; i++) admission.admit(1);
    clock.ms = 1000;
    admission.admit(1);
    clock.ms = 5000;
    admission.admit(1);
    // pino writes asynchronously to a stream: a flush orders the check.
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(shed(), 10, 'every shed stream is counted');
    assert.deepEqual(
      logs.lines.map((line) => [line.level, line.shed, line.openStreams, line.maxOpenStreams]),
      [
        [40, 1, 1, 1],
        [40, 8, 1, 1],
        [40, 1, 1, 1],
      ],
    );
  });
});

describe('--max-open-streams, end to end through the Envoy double', () => {
  const LIMIT = 3;
  const clock = { ms: 0 };
  const logs = captureLogs();
  let cluster: Cluster;
  let service: Service;
  let envoy: EnvoyDouble;

  before(async () => {
    cluster = await startCluster({
      pods: [{ engine: 'vllm', models: [QWEN], host: '127.0.0.181' }],
      flags: [`--max-open-streams=${LIMIT}`],
      log: createLogger('info', logs.stream),
      now: () => clock.ms,
    });
    ({ service, envoy } = cluster);
  });
  after(async () => cluster.close());

  const HEADERS = toHeaderMap(fromHeaderInput({ ':method': 'POST', ':path': '/v1/chat/completions', 'content-type': 'application/json' }));

  /** A stream whose request headers were sent; resolves with the first answer's kind, or the stream's gRPC status if it ended. */
  async function openStream(): Promise<{ stream: GrpcH2Stream; first: string | number }> {
    const stream = await envoy.openRawStream();
    stream.send(encodeProcessingRequest({ protocol_config: { request_body_mode: 'BUFFERED' }, request_headers: { headers: HEADERS, end_of_stream: false } }));
    const answer = await stream.recv(5000);
    if (answer) return { stream, first: decodeProcessingResponse(answer).response! };
    return { stream, first: (await stream.status).code };
  }

  const shedCount = async () => (await service.metrics.streamsShed.get()).values[0]?.value ?? 0;
  const activeStreams = async () => (await service.metrics.registry.getSingleMetric('llm_extproc_active_streams')!.get()).values[0]?.value ?? 0;
  const shedLines = () => logs.lines.filter((line) => line.shed !== undefined);

  it('sheds beyond the limit with RESOURCE_EXHAUSTED, leaves open streams alone, and admits again when one closes', async () => {
    const held = [];
    for (let i = 0; i < LIMIT; i++) held.push(await openStream());
    assert.deepEqual(
      held.map((h) => h.first),
      Array(LIMIT).fill('request_headers'),
      'within the limit: answered',
    );

    const shed = [await openStream(), await openStream()];
    assert.deepEqual(
      shed.map((s) => s.first),
      [grpc.status.RESOURCE_EXHAUSTED, grpc.status.RESOURCE_EXHAUSTED],
    );
    assert.match((await shed[0]!.stream.status).message, /too many open ext_proc streams/);
    assert.equal(await shedCount(), 2);

    // An open stream carries on: its body is routed.
    const [first, ...others] = held;
    first!.stream.send(encodeProcessingRequest({ request_body: { body: Buffer.from(chatBody({ model: QWEN })), end_of_stream: true } }));
    assert.equal(decodeProcessingResponse((await first!.stream.recv(5000))!).response, 'request_body');

    first!.stream.closeLikeEnvoy();
    await until('the closed stream to leave the count', activeStreams, (n) => n === LIMIT - 1);
    const again = await openStream();
    assert.equal(again.first, 'request_headers', 'room again after a close');
    assert.equal(await shedCount(), 2);

    // The two sheds fell within one second of the fake clock: one line. A second later the next shed logs the one left unlogged too.
    assert.deepEqual(
      shedLines().map((line) => line.shed),
      [1],
    );
    clock.ms += 1000;
    assert.equal((await openStream()).first, grpc.status.RESOURCE_EXHAUSTED);
    await until('the second shed line', shedLines, (lines) => lines.length === 2);
    assert.equal(shedLines()[1]!.shed, 2);
    assert.equal(await shedCount(), 3);

    for (const { stream } of [...others, again]) stream.closeLikeEnvoy();
    await until('every stream closed', activeStreams, (n) => n === 0);
  });
});
