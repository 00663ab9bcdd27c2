import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { extProcService } from '../src/extproc/proto.js';
import type { ProcessingRequest__Output } from '../src/generated/envoy/service/ext_proc/v3/ProcessingRequest.js';
import { EnvoyDouble } from './support/envoy/envoy-double.js';
import { type Cluster, chatBody, JSON_HEADERS, QWEN, startCluster } from './support/harness.js';

const REQUESTS = 3000;
const CONCURRENCY = 16;

/** Runs `total` full request phases over the double's single connection, each closed like Envoy. */
async function hammer(envoy: EnvoyDouble, total: number): Promise<{ ok: number; failed: string[] }> {
  let started = 0;
  let ok = 0;
  const failed: string[] = [];
  const body = chatBody({ model: QWEN });
  const worker = async () => {
    while (started < total) {
      started++;
      try {
        const exchange = await envoy.open({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body });
        if (exchange.localReply || !exchange.upstream) failed.push(`local reply ${exchange.localReply?.status} ${exchange.localReply?.details}`);
        else ok++;
        await exchange.finish();
      } catch (err) {
        failed.push((err as Error).message);
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return { ok, failed };
}

describe("Envoy's END_STREAM + RST_STREAM close over one long-lived connection", () => {
  let cluster: Cluster;
  before(async () => {
    cluster = await startCluster({ pods: [{ engine: 'vllm', models: [QWEN], host: '127.0.0.31' }], envoy: { connections: 1 } });
  });
  after(async () => cluster.close());

  it(`llm-extproc takes ${REQUESTS} Envoy-closed streams on one connection with no GOAWAY and no request lost`, async () => {
    const result = await hammer(cluster.envoy, REQUESTS);
    const stats = cluster.envoy.stats();
    assert.deepEqual(result.failed.slice(0, 5), []);
    assert.equal(result.ok, REQUESTS);
    assert.equal(stats.connections, 1);
    assert.equal(stats.goawayCount, 0);
    assert.equal(stats.streamsLost, 0);
    await cluster.settled();
  });

  it("the same load does trip Node's limiter on a grpc-js server without the fix (so the test above can fail)", async () => {
    const server = new grpc.Server();
    server.addService(extProcService().service, {
      Process: (call: grpc.ServerDuplexStream<ProcessingRequest__Output, object>) => {
        call.on('data', (message: ProcessingRequest__Output) => {
          if (message.request === 'request_headers') call.write({ request_headers: {} });
          else if (message.request === 'request_body') {
            call.write({
              request_body: {
                response: {
                  header_mutation: { set_headers: [{ header: { key: 'x-gateway-destination-endpoint', raw_value: Buffer.from(cluster.pods[0]!.address) } }] },
                  clear_route_cache: true,
                },
              },
            });
          }
        });
        call.on('error', () => undefined);
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    const envoy = new EnvoyDouble({
      extProcTarget: `127.0.0.1:${port}`,
      processingMode: { requestBodyMode: 'BUFFERED' },
      messageTimeoutMs: 10_000,
      connections: 1,
    });
    try {
      await envoy.connect();
      const result = await hammer(envoy, REQUESTS);
      const stats = envoy.stats();
      assert.ok(stats.goawayCount > 0 || result.failed.length > 0, `expected GOAWAYs or lost requests, got ${JSON.stringify(stats)}`);
    } finally {
      await envoy.close().catch(() => undefined);
      server.forceShutdown();
    }
  });
});
