/**
 * The floor: an ext_proc server that does no work. Same stack as llm-extproc (@grpc/grpc-js, the
 * same proto-loader package definition and codec, the same grpc.Server options and HTTP/2 stream
 * reset limits), answering every ProcessingRequest at once. BUFFERED (or no protocol_config):
 *   request_headers  → CONTINUE (empty HeadersResponse)
 *   request_body     → a fixed x-gateway-destination-endpoint header mutation + clear_route_cache
 *   response_headers / response_body / trailers → empty answers
 * FULL_DUPLEX_STREAMED request body (protocol_config on the first message), the least a correct
 * server must do:
 *   request_headers  → nothing yet; the body chunks are collected
 *   request_body with end_of_stream (or request_trailers, which end the body when it had no
 *                    end_of_stream) → the request_headers answer with the fixed destination header
 *                    mutation + clear_route_cache, then the body echoed as request_body answers with
 *                    body_mutation.streamed_response chunks of ≤ 62,000 bytes, the last with
 *                    end_of_stream (after trailers: end_of_stream false, then the trailers answer)
 * and ending the call with OK when the client half-closes, as llm-extproc does.
 *
 * The server options are not copied by hand: an ExtProcServer is constructed (never started) with
 * the same receive limit and its grpc.Server's options and HTTP/2 server options are copied, so the
 * baseline keeps up with whatever llm-extproc sets.
 *
 * Run: node dist/bench/bare-server.js --port=0 --destination=127.0.0.2:8000 [--grpc-max-receive-size=64MiB]
 * Prints one JSON line {"listening": port, ...} on stdout once bound.
 *
 * Diagnostics (`--like=a,b,…`, off by default; `bench/run.js --bare-like=…`): add one piece of
 * llm-extproc's per-request work at a time, using llm-extproc's own code, to see what each costs
 * against the floor:
 *   responses  answers built by src/extproc/responses.ts (destination header + envoy.lb dynamic
 *              metadata on the body answer, x-routed-to on the response_headers answer)
 *   route      RequestHeaders + x-request-id + readRoutingRequest (body scan) + Scheduler.schedule
 *              over 4 endpoints, the lease released when the stream ends
 *   metrics    src/metrics.ts (prom-client, default metrics on) with the request counter and the
 *              decision histogram updated per request, as llm-extproc does
 */

import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { EndpointRegistry } from '../src/discovery/registry.js';
import { RequestHeaders } from '../src/extproc/headers.js';
import { extProcPackageDefinition } from '../src/extproc/proto.js';
import { routedToResponse, routeResponse } from '../src/extproc/responses.js';
import { ExtProcServer } from '../src/extproc/server.js';
import type { HeaderValue__Output } from '../src/generated/envoy/config/core/v3/HeaderValue.js';
import type { ProcessingRequest__Output } from '../src/generated/envoy/service/ext_proc/v3/ProcessingRequest.js';
import type { ProcessingResponse } from '../src/generated/envoy/service/ext_proc/v3/ProcessingResponse.js';
import { createLogger } from '../src/log.js';
import { Metrics } from '../src/metrics.js';
import { readRoutingRequest, scanRoutingKeys } from '../src/request/routing-request.js';
import { RouteTable } from '../src/routing/routes.js';
import type { Lease } from '../src/scheduling/ledger.js';
import { LeastOutstandingPicker } from '../src/scheduling/pickers.js';
import { Scheduler } from '../src/scheduling/scheduler.js';
import { leaseOf, OK_OUTCOME, pickerOnly, upsertAll } from '../test/support/endpoints.js';
import { MAX_STREAMED_CHUNK_BYTES } from './messages.js';

const MiB = 1024 * 1024;
const EMPTY = Buffer.alloc(0);

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
    destination: { type: 'string', default: '127.0.0.2:8000' },
    'destination-header': { type: 'string', default: 'x-gateway-destination-endpoint' },
    'grpc-max-receive-size': { type: 'string', default: String(64 * MiB) },
    like: { type: 'string', default: '' },
  },
});

const LIKE = new Set(values.like!.split(',').filter(Boolean));
for (const name of LIKE) if (!['responses', 'route', 'metrics'].includes(name)) throw new Error(`--like: unknown "${name}"`);

const maxReceive = Number(values['grpc-max-receive-size']);

interface ServerInternals {
  options: grpc.ServerOptions;
  commonServerOptions?: Record<string, unknown>;
}

/** llm-extproc's grpc.Server, built the way llm-extproc builds it, for its settings only. */
function llmExtprocServerSettings(): ServerInternals {
  const reference = new ExtProcServer(
    {
      host: '127.0.0.1',
      port: 0,
      maxReceiveMessageBytes: maxReceive,
      drainTimeoutMs: 1000,
      defaultRequestBodyMode: 'BUFFERED',
      defaultResponseBodyMode: 'NONE',
      maxBodyBytes: maxReceive,
      destinationHeader: values['destination-header']!,
      routedToHeader: 'x-routed-to',
    },
    {
      decide: () => {
        throw new Error('unused');
      },
      bodyTooLarge: () => {
        throw new Error('unused');
      },
      failed: () => {
        throw new Error('unused');
      },
    },
    { decided: () => {}, protocolError: () => {} },
    createLogger('warn'),
  );
  return (reference as unknown as { server: ServerInternals }).server;
}

const reference = llmExtprocServerSettings();
const server = new grpc.Server({ ...reference.options });
const internals = server as unknown as ServerInternals;
if (!internals.commonServerOptions || !reference.commonServerOptions) {
  throw new Error('grpc-js no longer exposes commonServerOptions: cannot copy the HTTP/2 settings');
}
Object.assign(internals.commonServerOptions, reference.commonServerOptions);

const destinationMutation = {
  response: {
    header_mutation: {
      set_headers: [{ header: { key: values['destination-header']!, raw_value: Buffer.from(values.destination!) }, append: { value: false } }],
    },
    clear_route_cache: true,
  },
};
const ANSWERS: Record<string, ProcessingResponse> = {
  request_headers: { request_headers: {} },
  request_body: { request_body: destinationMutation },
  request_trailers: { request_trailers: {} },
  response_headers: { response_headers: {} },
  response_body: { response_body: {} },
  response_trailers: { response_trailers: {} },
};
/** FULL_DUPLEX_STREAMED: the destination goes on the request_headers answer. */
let fullDuplexRoute: ProcessingResponse = { request_headers: destinationMutation };

const destinationBytes = Buffer.from(values.destination!);
if (LIKE.has('responses')) {
  ANSWERS.request_body = routeResponse('request_body', values['destination-header']!, values.destination!, destinationBytes, 'raw_value');
  ANSWERS.response_headers = routedToResponse('x-routed-to', destinationBytes, 'raw_value');
  fullDuplexRoute = routeResponse('request_headers', values['destination-header']!, values.destination!, destinationBytes, 'raw_value');
}

/** FULL_DUPLEX_STREAMED: write `body` back as streamed_response chunks; the last carries `endOfStream`. */
function echo(call: grpc.ServerDuplexStream<ProcessingRequest__Output, ProcessingResponse>, body: Buffer, endOfStream: boolean): void {
  let offset = 0;
  do {
    const end = Math.min(offset + MAX_STREAMED_CHUNK_BYTES, body.length);
    call.write({
      request_body: {
        response: { body_mutation: { streamed_response: { body: body.subarray(offset, end), end_of_stream: endOfStream && end === body.length } } },
      },
    });
    offset = end;
  } while (offset < body.length);
}

// --like=route: llm-extproc's request reading and scheduling, over 4 endpoints serving the model.
const MODEL = 'Qwen/Qwen2.5-0.5B-Instruct';
const registry = new EndpointRegistry();
const scheduler = new Scheduler(registry, pickerOnly(new LeastOutstandingPicker()));
const routes = new RouteTable();
if (LIKE.has('route')) {
  const hosts = ['vllm', 'vllm', 'sglang', 'sglang'].map((engine, i) => ({ engine, address: `127.0.0.${i + 2}:8000` }));
  upsertAll(
    registry,
    hosts.map((h) => ({ address: h.address, name: h.address, namespace: 'bench', labels: {} })),
  );
  for (const h of hosts) {
    registry.update(registry.get(h.address)!, {
      models: [{ id: MODEL, object: 'model', created: 0, owned_by: h.engine, root: MODEL, parent: null }],
      healthy: true,
    });
  }
}
const metrics = LIKE.has('metrics') ? new Metrics(registry, () => 0) : undefined;

const definition = grpc.loadPackageDefinition(extProcPackageDefinition()) as unknown as {
  envoy: { service: { ext_proc: { v3: { ExternalProcessor: grpc.ServiceClientConstructor } } } };
};
server.addService(definition.envoy.service.ext_proc.v3.ExternalProcessor.service, {
  Process: (call: grpc.ServerDuplexStream<ProcessingRequest__Output, ProcessingResponse>) => {
    let headers: RequestHeaders | undefined;
    let requestId = '';
    let lease: Lease | undefined;
    let startedAt = 0;
    let fullDuplex = false;
    /** FULL_DUPLEX: the request_headers answer is held until the body is complete. */
    let holding = false;
    let chunks: Buffer[] = [];
    /** --like=route/metrics: the work llm-extproc does once it has the body. */
    const decide = (body: Buffer) => {
      let model = '';
      let ownedBy = '';
      if (LIKE.has('route') && headers) {
        const routing = readRoutingRequest(headers, body.length ? scanRoutingKeys(body, false) : undefined, routes, requestId);
        lease = leaseOf(scheduler.schedule({ routing }));
        model = routing.model;
        ownedBy = routing.ownedBy ?? '';
      }
      if (metrics) {
        metrics.requests.inc({ outcome: 'routed', status: '200', model, owned_by: ownedBy });
        metrics.decisionSeconds.observe((performance.now() - startedAt) / 1000);
      }
    };
    /** FULL_DUPLEX: the body is complete: the route on the headers answer, then the echo. */
    const release = (trailersFollow: boolean) => {
      holding = false;
      const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      chunks = [];
      if (LIKE.size > 0) decide(body);
      if (call.cancelled || call.writableEnded) return;
      call.write(fullDuplexRoute);
      echo(call, body, !trailersFollow);
      if (trailersFollow) call.write(ANSWERS.request_trailers!);
    };
    call.on('data', (message: ProcessingRequest__Output) => {
      if (message.protocol_config) fullDuplex = message.protocol_config.request_body_mode === 'FULL_DUPLEX_STREAMED';
      if (LIKE.size > 0 && message.request === 'request_headers') {
        startedAt = performance.now();
        headers = new RequestHeaders((message.request_headers!.headers?.headers ?? []) as HeaderValue__Output[]);
        requestId = headers.get('x-request-id') ?? '';
      }
      if (fullDuplex) {
        if (message.request === 'request_headers') {
          if (!message.request_headers!.end_of_stream) {
            holding = true;
            return;
          }
          // No body will come: the route goes on the headers answer at once.
          if (!call.cancelled && !call.writableEnded) call.write(fullDuplexRoute);
          return;
        }
        if (holding && message.request === 'request_body') {
          chunks.push(message.request_body!.body ?? EMPTY);
          if (message.request_body!.end_of_stream) release(false);
          return;
        }
        if (holding && message.request === 'request_trailers') return release(true);
      } else if (LIKE.size > 0 && message.request === 'request_body') {
        decide(message.request_body!.body ?? EMPTY);
      }
      const answer = message.request ? ANSWERS[message.request] : undefined;
      if (answer && !call.cancelled && !call.writableEnded) call.write(answer);
    });
    call.on('end', () => {
      lease?.release(OK_OUTCOME);
      if (!call.cancelled && !call.writableEnded) call.end();
    });
    call.on('close', () => lease?.release(OK_OUTCOME));
    call.on('error', () => {});
  },
});

server.bindAsync(`${values.host}:${values.port}`, grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    process.stderr.write(`bare-server: ${err.message}\n`);
    process.exit(1);
  }
  const http2 = internals.commonServerOptions!;
  process.stdout.write(
    `${JSON.stringify({
      listening: port,
      pid: process.pid,
      like: [...LIKE],
      grpcOptions: reference.options,
      http2: { streamResetBurst: http2.streamResetBurst, streamResetRate: http2.streamResetRate, maxSessionMemory: http2.maxSessionMemory },
    })}\n`,
  );
});

const stop = () => server.tryShutdown(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
