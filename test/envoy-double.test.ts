/**
 * Tests of the Envoy test double itself (test/support/envoy/*), against tiny in-test ext_proc
 * servers (grpc-js, the project's package definition) and a tiny HTTP backend on 127.0.0.2.
 */

import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { extProcPackageDefinition } from '../src/extproc/proto.js';
import type { HeaderValueOption } from '../src/generated/envoy/config/core/v3/HeaderValueOption.js';
import type { ProcessingRequest__Output } from '../src/generated/envoy/service/ext_proc/v3/ProcessingRequest.js';
import type { ProcessingResponse } from '../src/generated/envoy/service/ext_proc/v3/ProcessingResponse.js';
import { decodeProcessingResponse, EnvoyDouble, type EnvoyDoubleOptions, encodeProcessingRequest } from './support/envoy/envoy-double.js';
import { GrpcH2Connection, grpcFrame } from './support/envoy/grpc-h2.js';
import { H2FrameType, startH2Sniffer } from './support/envoy/h2-sniffer.js';
import { defer, until } from './support/wait.js';

const T = { timeout: 20_000 };
const DEST = 'x-gateway-destination-endpoint';

// ---------------------------------------------------------------------------------------------
// In-test ext_proc server

type Req = ProcessingRequest__Output;
type Res = ProcessingResponse;
interface CallRec {
  msgs: Req[];
  /** Message kinds received, plus 'end' / 'cancelled' / 'error' stream events, in order. */
  events: string[];
  /** ms timestamps of `events`. */
  times: number[];
  call: grpc.ServerDuplexStream<Req, Res>;
}
type Handler = (m: Req, rec: CallRec) => Res | Res[] | undefined | Promise<Res | Res[] | undefined>;

interface Processor {
  target: string;
  calls: CallRec[];
  close(): Promise<void>;
}

async function startProcessor(handler: Handler, opts: { endOkOnHalfClose?: boolean; onCall?: (rec: CallRec) => void } = {}): Promise<Processor> {
  const pkg = extProcPackageDefinition();
  const svc = pkg['envoy.service.ext_proc.v3.ExternalProcessor'] as unknown as grpc.ServiceDefinition;
  const server = new grpc.Server();
  const calls: CallRec[] = [];
  server.addService(svc, {
    Process: (call: grpc.ServerDuplexStream<Req, Res>) => {
      const rec: CallRec = { msgs: [], events: [], times: [], call };
      calls.push(rec);
      const note = (e: string): void => {
        rec.events.push(e);
        rec.times.push(performance.now());
      };
      let chain = Promise.resolve();
      call.on('data', (m: Req) => {
        rec.msgs.push(m);
        note(m.request ?? '?');
        chain = chain.then(async () => {
          const out = await handler(m, rec);
          if (!out) return;
          for (const r of Array.isArray(out) ? out : [out]) if (!call.cancelled && call.writable) call.write(r);
        });
      });
      call.on('end', () => {
        note('end');
        if (opts.endOkOnHalfClose) void chain.then(() => call.end());
      });
      call.on('cancelled', () => note('cancelled'));
      call.on('error', () => note('error'));
      opts.onCall?.(rec);
    },
  });
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? rej(err) : res(p))),
  );
  return {
    target: `127.0.0.1:${port}`,
    calls,
    close: () => new Promise<void>((res) => server.tryShutdown(() => res())).then(() => server.forceShutdown()),
  };
}

const setHeader = (key: string, value: string, append?: boolean): HeaderValueOption => ({
  header: { key, raw_value: Buffer.from(value) },
  ...(append === undefined ? {} : { append: { value: append } }),
});
const headersResp = (dir: 'request' | 'response', set: HeaderValueOption[] = [], extra: Partial<Res> = {}): Res => ({
  [`${dir}_headers`]: { response: { header_mutation: { set_headers: set } } },
  ...extra,
});
const bodyResp = (dir: 'request' | 'response', common: object = {}): Res => ({ [`${dir}_body`]: { response: common } });
/** Answers every message with an empty CONTINUE of the matching type. */
const continueAll = (m: Req): Res => {
  const k = m.request!;
  if (k.endsWith('_trailers')) return { [k]: {} };
  return { [k]: { response: {} } };
};
/** Header value as the server saw it (raw_value bytes). */
function hv(m: Req | undefined, key: string): string[] {
  const hs = (m?.request_headers ?? m?.response_headers)?.headers?.headers ?? [];
  return hs.filter((h) => h.key === key).map((h) => (h.raw_value ?? Buffer.alloc(0)).toString('latin1'));
}

// ---------------------------------------------------------------------------------------------
// In-test HTTP backend on 127.0.0.2

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  body: Buffer;
  trailers: NodeJS.Dict<string>;
}
interface Backend {
  hostPort: string;
  seen: Seen[];
  handler: (req: Seen, res: http.ServerResponse) => void;
  close(): Promise<void>;
}
async function startBackend(): Promise<Backend> {
  const seen: Seen[] = [];
  const b: Backend = {
    hostPort: '',
    seen,
    handler: (_req, res) => {
      res.setHeader('content-type', 'application/json');
      res.setHeader('x-backend', 'yes');
      res.end('{"ok":true}');
    },
    close: async () => {},
  };
  const srv = http.createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      const s: Seen = {
        method: req.method!,
        url: req.url!,
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        body: Buffer.concat(parts),
        trailers: req.trailers,
      };
      seen.push(s);
      b.handler(s, res);
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.2', r));
  b.hostPort = `127.0.0.2:${(srv.address() as net.AddressInfo).port}`;
  b.close = () =>
    new Promise<void>((r) => {
      srv.closeAllConnections();
      srv.close(() => r());
    });
  return b;
}

async function withDouble<R>(opts: EnvoyDoubleOptions, fn: (d: EnvoyDouble) => Promise<R>): Promise<R> {
  const d = new EnvoyDouble(opts);
  try {
    return await fn(d);
  } finally {
    await d.close();
  }
}

const kinds = (rec: CallRec | undefined): string[] => (rec?.events ?? []).filter((e) => e !== 'end' && e !== 'cancelled' && e !== 'error');
const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let backend: Backend;
before(async () => {
  backend = await startBackend();
});
after(async () => {
  await backend.close();
});

// ---------------------------------------------------------------------------------------------

describe('grpc-h2 client', () => {
  it('reassembles messages split across DATA frames and several per frame; reads grpc-status', T, async () => {
    const srv = http2.createServer();
    srv.on('stream', (s) => {
      s.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '3', 'grpc-message': 'bad%20thing' }));
      s.on('error', () => {});
      const three = Buffer.concat([grpcFrame(Buffer.from('a')), grpcFrame(Buffer.alloc(0)), grpcFrame(Buffer.from('ccc'))]);
      const big = grpcFrame(Buffer.alloc(100_000, 7));
      s.write(three);
      // A message split in odd places, including inside the 5-byte header.
      void (async () => {
        s.write(big.subarray(0, 3));
        await delay(20);
        s.write(big.subarray(3, 50_000));
        await delay(20);
        s.end(big.subarray(50_000));
      })();
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const conn = await GrpcH2Connection.connect(`127.0.0.1:${(srv.address() as net.AddressInfo).port}`);
    try {
      const st = conn.openStream('/x.Y/Z');
      st.halfClose();
      const got: Buffer[] = [];
      for await (const m of st) got.push(Buffer.from(m));
      assert.deepEqual(
        got.slice(0, 3).map((b) => b.toString()),
        ['a', '', 'ccc'],
      );
      assert.equal(got.length, 4);
      assert.equal(got[3]!.length, 100_000);
      assert.ok(got[3]!.every((x) => x === 7));
      const status = await st.status;
      assert.equal(status.code, 3);
      assert.equal(status.message, 'bad thing');
      assert.equal(status.source, 'trailers');
    } finally {
      conn.destroy();
      srv.close();
    }
  });

  it('closeLikeEnvoy puts END_STREAM then RST_STREAM(CANCEL) on the wire, back to back', T, async () => {
    const seen: string[] = [];
    const srv = http2.createServer();
    srv.on('stream', (s) => {
      s.respond({ ':status': 200, 'content-type': 'application/grpc' });
      s.on('data', () => {});
      s.on('end', () => seen.push('end'));
      s.on('close', () => seen.push(`close:${s.rstCode}`));
      s.on('error', () => {});
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const sniff = await startH2Sniffer(`127.0.0.1:${(srv.address() as net.AddressInfo).port}`);
    const conn = await GrpcH2Connection.connect(sniff.target);
    try {
      const st = conn.openStream('/x.Y/Z');
      // A big message right before the close: the naive end()+close() loses END_STREAM here.
      st.send(Buffer.alloc(40_000, 1));
      st.closeLikeEnvoy();
      const status = await st.status;
      assert.equal(status.localReset, true);
      assert.equal(status.rstCode, http2.constants.NGHTTP2_CANCEL);
      await until(
        'two streams at the server',
        () => seen.length,
        (n) => n >= 2,
      );
      assert.deepEqual(seen, ['end', `close:${http2.constants.NGHTTP2_CANCEL}`]);
      const frames = sniff.frames.filter((f) => f.streamId === 1);
      const endIdx = frames.findIndex((f) => f.type === H2FrameType.DATA && (f.flags & 0x1) === 1);
      assert.ok(endIdx >= 0, 'a DATA frame with END_STREAM was sent');
      const next = frames[endIdx + 1];
      assert.ok(next, 'a frame follows END_STREAM');
      assert.equal(next.type, H2FrameType.RST_STREAM);
      assert.equal(next.errorCode, http2.constants.NGHTTP2_CANCEL);
      assert.equal(frames.length, endIdx + 2, 'nothing after the RST_STREAM');
      // Back to back on the connection too: at most control frames of stream 0 in between.
      const between = sniff.frames.filter((f) => f.seq > frames[endIdx]!.seq && f.seq < next.seq);
      assert.ok(between.every((f) => f.streamId === 0));
    } finally {
      conn.destroy();
      await sniff.close();
      srv.close();
    }
  });

  it('counts GOAWAY frames and their error code', T, async () => {
    const srv = http2.createServer();
    srv.on('stream', (s) => {
      s.respond({ ':status': 200, 'content-type': 'application/grpc' });
      s.on('error', () => {});
      s.session?.goaway(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const conn = await GrpcH2Connection.connect(`127.0.0.1:${(srv.address() as net.AddressInfo).port}`);
    try {
      assert.equal(conn.stats.goawayCount, 0);
      conn.openStream('/x.Y/Z');
      await until(
        'a GOAWAY',
        () => conn.stats.goawayCount,
        (n) => n > 0,
      );
      assert.equal(conn.stats.goawayCount, 1);
      assert.deepEqual(conn.stats.goawayCodes, [http2.constants.NGHTTP2_ENHANCE_YOUR_CALM]);
      assert.equal(conn.isGone, true);
    } finally {
      conn.destroy();
      srv.close();
    }
  });

  // Node's HTTP/2 rapid-reset limiter vs Envoy-style closes (machine-notes): with the default
  // limits the server answers thousands of END_STREAM+RST closes with GOAWAY; with raised limits
  // nothing is lost. Both sides are observable with the client's counters.
  for (const tuned of [false, true]) {
    it(`3000 Envoy-closed streams on one connection, server ${tuned ? 'with raised' : 'with default'} reset limits`, T, async () => {
      const srv = http2.createServer(tuned ? ({ streamResetBurst: 100_000, streamResetRate: 100_000 } as http2.ServerOptions) : {});
      srv.on('stream', (s) => {
        s.respond({ ':status': 200, 'content-type': 'application/grpc' });
        s.on('error', () => {});
        s.once('data', () => s.write(grpcFrame(Buffer.from('pong'))));
      });
      await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
      const conn = await GrpcH2Connection.connect(`127.0.0.1:${(srv.address() as net.AddressInfo).port}`);
      let ok = 0;
      let lost = 0;
      try {
        const one = async (): Promise<void> => {
          if (conn.isGone) {
            lost++;
            return;
          }
          const st = conn.openStream('/x.Y/Z');
          st.send(Buffer.from('ping'));
          const m = await Promise.race([st.recv(), st.status.then(() => null)]);
          if (m && m.toString() === 'pong') ok++;
          else lost++;
          st.closeLikeEnvoy();
          await st.status;
        };
        for (let i = 0; i < 3000; i += 50) await Promise.all(Array.from({ length: 50 }, one));
        if (tuned) {
          assert.equal(conn.stats.goawayCount, 0);
          assert.equal(lost, 0);
          assert.equal(ok, 3000);
          assert.equal(conn.stats.streamsLost, 0);
        } else {
          assert.ok(conn.stats.goawayCount >= 1, 'default limiter sends GOAWAY');
          assert.ok(lost > 0);
        }
      } finally {
        conn.destroy();
        srv.close();
      }
    });
  }
});

// ---------------------------------------------------------------------------------------------

describe('Envoy double: request path', () => {
  it('default mode: headers in raw_value, pseudo-headers, protocol_config, x-request-id, message order', T, async () => {
    const p = await startProcessor((m) => {
      if (m.request === 'request_headers') return headersResp('request', [setHeader(DEST, backend.hostPort)]);
      if (m.request === 'response_headers') return headersResp('response', [setHeader('x-routed-by', 'test')]);
    });
    try {
      await withDouble({ extProcTarget: p.target }, async (d) => {
        const r = await d.request({ method: 'get', path: '/v1/models', headers: { 'X-Client': 'a', 'x-multi': ['1', '2'] } });
        assert.equal(r.status, 200);
        assert.equal(r.localReply, false);
        assert.equal(r.upstream, backend.hostPort);
        assert.equal(r.headers['x-routed-by'], 'test');
        assert.equal(r.headers['x-backend'], 'yes');
        assert.equal(r.body.toString(), '{"ok":true}');
        const rec = p.calls[0]!;
        assert.deepEqual(kinds(rec), ['request_headers', 'response_headers']);
        const first = rec.msgs[0]!;
        assert.equal(first.protocol_config?.request_body_mode, 'NONE');
        assert.equal(rec.msgs[1]!.protocol_config, undefined, 'protocol_config only in the first message');
        assert.equal(first.request_headers?.end_of_stream, true);
        for (const h of first.request_headers!.headers!.headers!) {
          assert.equal(h.value ?? '', '', `value empty for ${h.key}`);
          assert.equal(h.key, h.key!.toLowerCase());
        }
        assert.deepEqual(hv(first, ':method'), ['GET']);
        assert.deepEqual(hv(first, ':path'), ['/v1/models']);
        assert.deepEqual(hv(first, ':scheme'), ['http']);
        assert.deepEqual(hv(first, ':authority'), ['llm.local']);
        assert.deepEqual(hv(first, 'x-client'), ['a']);
        assert.deepEqual(hv(first, 'x-multi'), ['1', '2']);
        assert.match(hv(first, 'x-request-id')[0]!, /^[0-9a-f-]{36}$/);
        assert.deepEqual(hv(rec.msgs[1], ':status'), ['200']);
        assert.deepEqual(hv(rec.msgs[1], 'x-backend'), ['yes']);
        assert.equal(hv(rec.msgs[1], 'server').length, 0, 'HCM server header is added after the filter');
        const seen = backend.seen.at(-1)!;
        assert.equal(seen.url, '/v1/models');
        assert.equal(seen.headers[DEST], backend.hostPort);
        assert.equal(seen.headers.host, 'llm.local');
        assert.equal(seen.headers['x-request-id'], hv(first, 'x-request-id')[0]);
      });
    } finally {
      await p.close();
    }
  });

  it('keeps a client x-request-id and sends content-length for a body', T, async () => {
    const p = await startProcessor((m) => (m.request === 'request_headers' ? headersResp('request', [setHeader(DEST, backend.hostPort)]) : continueAll(m)));
    try {
      await withDouble({ extProcTarget: p.target }, async (d) => {
        const r = await d.request({ method: 'POST', path: '/v1/chat/completions', headers: { 'x-request-id': 'rid-1' }, body: '{"model":"m"}' });
        assert.equal(r.status, 200);
        const h = p.calls[0]!.msgs[0]!;
        assert.deepEqual(hv(h, 'x-request-id'), ['rid-1']);
        assert.deepEqual(hv(h, 'content-length'), ['13']);
        assert.equal(h.request_headers?.end_of_stream, false);
        // Body mode NONE: no body message, the body goes upstream untouched.
        assert.deepEqual(kinds(p.calls[0]), ['request_headers', 'response_headers']);
        assert.equal(backend.seen.at(-1)!.body.toString(), '{"model":"m"}');
      });
    } finally {
      await p.close();
    }
  });

  it('BUFFERED: whole body in one message only after the headers response; destination from the body response', T, async () => {
    let headersAnsweredAt = 0;
    const p = await startProcessor(async (m) => {
      if (m.request === 'request_headers') {
        await delay(60);
        headersAnsweredAt = performance.now();
        return { request_headers: { response: {} } };
      }
      if (m.request === 'request_body') {
        const model = JSON.parse(m.request_body!.body!.toString()).model;
        return bodyResp('request', {
          header_mutation: { set_headers: [setHeader(DEST, backend.hostPort), setHeader('x-model', model)] },
          clear_route_cache: true,
        });
      }
      return continueAll(m);
    });
    try {
      await withDouble(
        { extProcTarget: p.target, messageTimeoutMs: 1000, processingMode: { requestBodyMode: 'BUFFERED', responseHeaderMode: 'SKIP' } },
        async (d) => {
          const r = await d.request({ method: 'POST', path: '/v1/chat/completions', chunks: [Buffer.from('{"model":'), Buffer.from('"llama"}')] });
          assert.equal(r.status, 200, r.details);
          const rec = p.calls[0]!;
          assert.deepEqual(kinds(rec), ['request_headers', 'request_body']);
          const bodyAt = rec.times[rec.events.indexOf('request_body')]!;
          assert.ok(bodyAt >= headersAnsweredAt, 'body sent only after the headers response');
          assert.equal(rec.msgs[1]!.request_body!.body!.toString(), '{"model":"llama"}');
          assert.equal(rec.msgs[1]!.request_body!.end_of_stream, true);
          const seen = backend.seen.at(-1)!;
          assert.equal(seen.headers['x-model'], 'llama');
          assert.equal(seen.headers['content-length'], '17', 'BUFFERED+SEND keeps content-length');
          assert.equal(seen.body.toString(), '{"model":"llama"}');
        },
      );
    } finally {
      await p.close();
    }
  });

  it('BUFFERED body over the buffer limit: 413, body never sent to the processor or upstream', T, async () => {
    const p = await startProcessor((m) => (m.request === 'request_headers' ? headersResp('request', [setHeader(DEST, backend.hostPort)]) : continueAll(m)));
    const before = backend.seen.length;
    try {
      await withDouble({ extProcTarget: p.target, bufferLimitBytes: 1000, processingMode: { requestBodyMode: 'BUFFERED' } }, async (d) => {
        const r = await d.request({ method: 'POST', path: '/x', chunks: [Buffer.alloc(600, 97), Buffer.alloc(600, 98)] });
        assert.equal(r.status, 413);
        assert.equal(r.localReply, true);
        assert.equal(r.details, 'request_payload_too_large');
        await until(
          'the processor to see the stream cancelled',
          () => p.calls[0]?.events ?? [],
          (events) => events.includes('cancelled'),
        );
        assert.deepEqual(kinds(p.calls[0]), ['request_headers']);
        assert.equal(backend.seen.length, before);
        // Exactly at the limit is fine.
        const ok = await d.request({ method: 'POST', path: '/x', body: Buffer.alloc(1000, 97) });
        assert.equal(ok.status, 200);
      });
    } finally {
      await p.close();
    }
  });

  it('BUFFERED: a mutated body needs a matching content-length', T, async () => {
    const p = await startProcessor((m) => {
      if (m.request === 'request_headers') return { request_headers: { response: {} } };
      if (m.request === 'request_body') {
        const fix = m.request_body!.body!.toString() === 'fix';
        return bodyResp('request', {
          header_mutation: { set_headers: [setHeader(DEST, backend.hostPort), ...(fix ? [setHeader('content-length', '7')] : [])] },
          body_mutation: { body: Buffer.from('changed') },
        });
      }
      return continueAll(m);
    });
    try {
      await withDouble({ extProcTarget: p.target, processingMode: { requestBodyMode: 'BUFFERED' } }, async (d) => {
        const bad = await d.request({ method: 'POST', path: '/x', body: 'original' });
        assert.equal(bad.status, 500);
        assert.match(bad.details!, /mismatch_between_content_length/);
        const good = await d.request({ method: 'POST', path: '/x', body: 'fix' });
        assert.equal(good.status, 200, good.details);
        assert.equal(backend.seen.at(-1)!.body.toString(), 'changed');
      });
    } finally {
      await p.close();
    }
  });

  it('BUFFERED with request headers SKIP: body is the first message; content-length removed', T, async () => {
    const p = await startProcessor((m) =>
      m.request === 'request_body'
        ? bodyResp('request', {
            header_mutation: { set_headers: [setHeader(DEST, backend.hostPort), setHeader('content-length', '3')] },
            body_mutation: { body: Buffer.from('new body') },
          })
        : continueAll(m),
    );
    try {
      await withDouble(
        { extProcTarget: p.target, processingMode: { requestHeaderMode: 'SKIP', requestBodyMode: 'BUFFERED', responseHeaderMode: 'SKIP' } },
        async (d) => {
          const r = await d.request({ method: 'POST', path: '/b', body: 'old' });
          assert.equal(r.status, 200, r.details);
          assert.deepEqual(kinds(p.calls[0]), ['request_body']);
          assert.equal(p.calls[0]!.msgs[0]!.protocol_config?.request_body_mode, 'BUFFERED');
          const seen = backend.seen.at(-1)!;
          assert.equal(seen.body.toString(), 'new body');
          assert.equal(seen.headers['content-length'], undefined);
        },
      );
    } finally {
      await p.close();
    }
  });

  it('STREAMED: one response per chunk, in order; chunk mutations; content-length removed', T, async () => {
    const p = await startProcessor((m) => {
      if (m.request === 'request_headers') return headersResp('request', [setHeader(DEST, backend.hostPort), setHeader('content-length', '999')]);
      if (m.request === 'request_body')
        return bodyResp('request', {
          body_mutation: { body: Buffer.from(m.request_body!.body!.toString().toUpperCase()) },
          header_mutation: { set_headers: [setHeader('x-ignored', '1')] },
        });
      return continueAll(m);
    });
    try {
      await withDouble({ extProcTarget: p.target, processingMode: { requestBodyMode: 'STREAMED', responseHeaderMode: 'SKIP' } }, async (d) => {
        const r = await d.request({ method: 'POST', path: '/s', chunks: ['ab', 'cd', 'ef'] });
        assert.equal(r.status, 200, r.details);
        const rec = p.calls[0]!;
        assert.deepEqual(kinds(rec), ['request_headers', 'request_body', 'request_body', 'request_body']);
        assert.deepEqual(
          rec.msgs.slice(1).map((m) => [m.request_body!.body!.toString(), m.request_body!.end_of_stream]),
          [
            ['ab', false],
            ['cd', false],
            ['ef', true],
          ],
        );
        const seen = backend.seen.at(-1)!;
        assert.equal(seen.body.toString(), 'ABCDEF');
        assert.equal(seen.headers['content-length'], undefined, 'content-length removed (and the set skipped)');
        assert.equal(seen.headers['transfer-encoding'], 'chunked');
        assert.equal(seen.headers['x-ignored'], undefined, 'header mutations in STREAMED body responses are ignored');
      });
    } finally {
      await p.close();
    }
  });

  it('FULL_DUPLEX_STREAMED: chunks sent before any answer; headers response first, then streamed_response', T, async () => {
    const p = await startProcessor((m, rec) => {
      // GIE style: read the whole body, then answer headers + re-emit the (rewritten) body.
      if (m.request === 'request_body' && m.request_body!.end_of_stream) {
        const body = Buffer.concat(rec.msgs.filter((x) => x.request_body).map((x) => x.request_body!.body!)).toString();
        const out = Buffer.from(body.replace('alias', 'real-model'));
        return [
          headersResp('request', [setHeader(DEST, backend.hostPort)], {
            dynamic_metadata: { fields: { 'envoy.lb': { structValue: { fields: { [DEST]: { stringValue: backend.hostPort } } } } } },
          }),
          bodyResp('request', { body_mutation: { streamed_response: { body: out.subarray(0, 5) } } }),
          bodyResp('request', { body_mutation: { streamed_response: { body: out.subarray(5), end_of_stream: true } } }),
        ];
      }
      if (m.request === 'response_headers') return headersResp('response');
      if (m.request === 'response_body') {
        const b = m.response_body!;
        return bodyResp('response', { body_mutation: { streamed_response: { body: b.body, end_of_stream: b.end_of_stream } } });
      }
      return undefined;
    });
    try {
      const mode = {
        requestBodyMode: 'FULL_DUPLEX_STREAMED',
        requestTrailerMode: 'SEND',
        responseBodyMode: 'FULL_DUPLEX_STREAMED',
        responseTrailerMode: 'SEND',
      } as const;
      await withDouble({ extProcTarget: p.target, processingMode: mode }, async (d) => {
        const r = await d.request({ method: 'POST', path: '/v1/completions', chunks: ['{"model":', '"alias"}'] });
        assert.equal(r.status, 200, r.details);
        assert.equal(r.body.toString(), '{"ok":true}');
        assert.deepEqual(r.dynamicMetadata, { 'envoy.lb': { [DEST]: backend.hostPort } });
        const rec = p.calls[0]!;
        assert.deepEqual(kinds(rec).slice(0, 3), ['request_headers', 'request_body', 'request_body']);
        assert.equal(rec.msgs[0]!.protocol_config?.request_body_mode, 'FULL_DUPLEX_STREAMED');
        assert.equal(rec.msgs[2]!.request_body!.end_of_stream, true);
        assert.ok(kinds(rec).includes('response_headers'));
        const seen = backend.seen.at(-1)!;
        assert.equal(seen.body.toString(), '{"model":"real-model"}');
        assert.equal(seen.headers['content-length'], undefined);
      });
    } finally {
      await p.close();
    }
  });

  it('FULL_DUPLEX_STREAMED config without trailer mode SEND is rejected', () => {
    assert.throws(
      () => new EnvoyDouble({ extProcTarget: '127.0.0.1:1', processingMode: { requestBodyMode: 'FULL_DUPLEX_STREAMED' } }),
      /request_trailer_mode has to be set to SEND/,
    );
    assert.throws(
      () => new EnvoyDouble({ extProcTarget: '127.0.0.1:1', processingMode: { responseBodyMode: 'FULL_DUPLEX_STREAMED' } }),
      /response_trailer_mode/,
    );
  });

  for (const [name, answer] of [
    [
      'body response before the headers response',
      (): Res[] => [bodyResp('request', { body_mutation: { streamed_response: { body: Buffer.from('x'), end_of_stream: true } } })],
    ],
    [
      'non-streamed body mutation',
      (): Res[] => [headersResp('request', [setHeader(DEST, backend.hostPort)]), bodyResp('request', { body_mutation: { body: Buffer.from('x') } })],
    ],
    ['empty body response', (): Res[] => [headersResp('request', [setHeader(DEST, backend.hostPort)]), bodyResp('request', {})]],
  ] as const) {
    it(`FULL_DUPLEX_STREAMED: ${name} is spurious ⇒ 500`, T, async () => {
      const p = await startProcessor((m) => (m.request === 'request_body' && m.request_body!.end_of_stream ? answer() : undefined));
      const before = backend.seen.length;
      try {
        await withDouble({ extProcTarget: p.target, processingMode: { requestBodyMode: 'FULL_DUPLEX_STREAMED', requestTrailerMode: 'SEND' } }, async (d) => {
          const r = await d.request({ method: 'POST', path: '/x', body: 'abc' });
          assert.equal(r.status, 500);
          assert.equal(r.localReply, true);
          assert.equal(r.details, 'spurious_message');
          assert.equal(backend.seen.length, before);
        });
      } finally {
        await p.close();
      }
    });
  }

  it('streamed_response outside FULL_DUPLEX is spurious ⇒ 500', T, async () => {
    const p = await startProcessor((m) => {
      if (m.request === 'request_headers') return headersResp('request', [setHeader(DEST, backend.hostPort)]);
      if (m.request === 'request_body') return bodyResp('request', { body_mutation: { streamed_response: { body: Buffer.from('x'), end_of_stream: true } } });
    });
    try {
      await withDouble({ extProcTarget: p.target, processingMode: { requestBodyMode: 'STREAMED' } }, async (d) => {
        const r = await d.request({ method: 'POST', path: '/x', body: 'abc' });
        assert.equal(r.status, 500);
        assert.equal(r.details, 'spurious_message');
      });
    } finally {
      await p.close();
    }
  });

  it('header mutation semantics: overwrite by default, append=true adds, refused headers ignored, :path allowed', T, async () => {
    const p = await startProcessor((m) => {
      if (m.request !== 'request_headers') return continueAll(m);
      return {
        request_headers: {
          response: {
            header_mutation: {
              remove_headers: ['x-remove-me', 'host', ':path'],
              set_headers: [
                setHeader(DEST, backend.hostPort),
                setHeader('x-over', 'new'), // append unset ⇒ overwrite
                setHeader('x-over-false', 'new', false),
                { ...setHeader('x-action', 'new'), append_action: 'APPEND_IF_EXISTS_OR_ADD' }, // ignored ⇒ overwrite
                setHeader('x-app', 'two', true),
                setHeader('X-Upper', 'lowered'),
                setHeader(':authority', 'evil.example'),
                setHeader('host', 'evil.example'),
                setHeader(':method', 'DELETE'),
                setHeader(':scheme', 'https'),
                setHeader('x-envoy-original-dst-host', '10.0.0.1:80'),
                setHeader(':path', '/rewritten'),
                { header: { key: 'x-value-only', value: 'ignored-value' } },
              ],
            },
          },
        },
      };
    });
    try {
      await withDouble({ extProcTarget: p.target }, async (d) => {
        const ex = await d.open({
          method: 'POST',
          path: '/orig',
          headers: { 'x-over': 'old', 'x-over-false': 'old', 'x-action': 'old', 'x-app': 'one', 'x-remove-me': '1' },
          body: 'b',
        });
        assert.equal(ex.localReply, undefined);
        const h = ex.requestHeaders;
        assert.equal(h['x-over'], 'new');
        assert.equal(h['x-over-false'], 'new');
        assert.equal(h['x-action'], 'new');
        assert.deepEqual(h['x-app'], ['one', 'two']);
        assert.equal(h['x-upper'], 'lowered');
        assert.equal(h[':authority'], 'llm.local');
        assert.equal(h.host, undefined);
        assert.equal(h[':method'], 'POST');
        assert.equal(h[':scheme'], 'http');
        assert.equal(h['x-envoy-original-dst-host'], undefined);
        assert.equal(h[':path'], '/rewritten');
        assert.equal(h['x-value-only'], '', 'only `value` set ⇒ empty header (Envoy reads raw_value)');
        assert.equal(h['x-remove-me'], undefined);
        assert.equal(ex.mutationStats.rejected, 7);
        const r = await ex.forward();
        assert.equal(r.status, 200);
        const seen = backend.seen.at(-1)!;
        assert.equal(seen.url, '/rewritten');
        assert.equal(seen.method, 'POST');
        assert.equal(seen.headers.host, 'llm.local');
        assert.equal(seen.headers['x-app'], 'one, two');
      });
    } finally {
      await p.close();
    }
  });

  it('value and raw_value both set ⇒ local reply with status_on_error', T, async () => {
    const p = await startProcessor((m) =>
      m.request === 'request_headers'
        ? {
            request_headers: {
              response: { header_mutation: { set_headers: [{ header: { key: DEST, value: backend.hostPort, raw_value: Buffer.from(backend.hostPort) } }] } },
            },
          }
        : undefined,
    );
    try {
      await withDouble({ extProcTarget: p.target }, async (d) => {
        const r = await d.request({ method: 'GET', path: '/x' });
        assert.equal(r.status, 500);
        assert.equal(r.localReply, true);
        assert.match(r.details!, /Only_one_of_value_or_raw_value/);
        assert.deepEqual(kinds(p.calls[0]), ['request_headers'], 'local replies are not sent to the processor');
      });
      await withDouble({ extProcTarget: p.target, statusOnError: 502 }, async (d) => {
        assert.equal((await d.request({ method: 'GET', path: '/x' })).status, 502);
      });
    } finally {
      await p.close();
    }
  });

  it('ORIGINAL_DST: first header value, exactly one ip:port, else 503', T, async () => {
    let value: HeaderValueOption[] = [];
    const p = await startProcessor((m) => (m.request === 'request_headers' ? headersResp('request', value) : continueAll(m)));
    try {
      await withDouble({ extProcTarget: p.target }, async (d) => {
        const cases: [HeaderValueOption[], Record<string, string> | undefined, number][] = [
          [[], undefined, 503], // no header
          [[setHeader(DEST, `${backend.hostPort},127.0.0.3:80`)], undefined, 503], // comma list
          [[setHeader(DEST, 'localhost:80')], undefined, 503], // hostname
          [[setHeader(DEST, '127.0.0.2')], undefined, 503], // no port
          [[setHeader(DEST, backend.hostPort, true)], { [DEST]: 'garbage' }, 503], // appended: first value wins
          [[setHeader(DEST, backend.hostPort)], { [DEST]: 'garbage' }, 200], // overwritten
          [[], { [DEST]: backend.hostPort }, 200], // the client's own header (not sanitised)
        ];
        for (const [set, clientHeaders, want] of cases) {
          value = set;
          const r = await d.request({ method: 'GET', path: '/x', headers: clientHeaders });
          assert.equal(r.status, want, JSON.stringify(set));
          if (want === 503) {
            assert.equal(r.localReply, true);
            assert.equal(r.details, 'no_healthy_upstream');
            assert.equal(r.body.toString(), 'no healthy upstream');
          }
        }
        // Local replies are not processed: only request_headers for the 503s.
        assert.deepEqual(kinds(p.calls[0]), ['request_headers']);
        assert.deepEqual(kinds(p.calls[5]), ['request_headers', 'response_headers']);
      });
    } finally {
      await p.close();
    }
  });

  it('connection refused upstream ⇒ 503 local reply', T, async () => {
    const closed = net.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.2', r));
    const port = (closed.address() as net.AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const p = await startProcessor((m) => (m.request === 'request_headers' ? headersResp('request', [setHeader(DEST, `127.0.0.2:${port}`)]) : continueAll(m)));
    try {
      await withDouble({ extProcTarget: p.target }, async (d) => {
        const r = await d.request({ method: 'GET', path: '/x' });
        assert.equal(r.status, 503);
        assert.equal(r.localReply, true);
        assert.match(r.details!, /remote_connection_failure/);
        assert.deepEqual(kinds(p.calls[0]), ['request_headers']);
      });
    } finally {
      await p.close();
    }
  });

  it('spurious response (wrong type for the state) ⇒ 500 and the stream is reset', T, async () => {
    const p = await startProcessor((m) => (m.request === 'request_headers' ? headersResp('response') : undefined));
    try {
      await withDouble({ extProcTarget: p.target }, async (d) => {
        const r = await d.request({ method: 'GET', path: '/x', headers: { [DEST]: backend.hostPort } });
        assert.equal(r.status, 500);
        assert.equal(r.details, 'spurious_message');
        await until(
          'the processor to see the stream cancelled',
          () => p.calls[0]!.events,
          (events) => events.includes('cancelled'),
        );
      });
    } finally {
      await p.close();
    }
  });

  it('message timeout ⇒ 504 after message_timeout; none in FULL_DUPLEX', T, async () => {
    const p = await startProcessor(() => undefined); // never answers
    try {
      await withDouble({ extProcTarget: p.target, messageTimeoutMs: 150 }, async (d) => {
        const t0 = performance.now();
        const r = await d.request({ method: 'GET', path: '/x' });
        const dt = performance.now() - t0;
        assert.equal(r.status, 504);
        assert.equal(r.details, 'ext_proc_error_per-message_timeout_exceeded');
        assert.ok(dt >= 140 && dt < 1500, `took ${dt} ms`);
      });
      await withDouble(
        {
          extProcTarget: p.target,
          messageTimeoutMs: 100,
          exchangeTimeoutMs: 600,
          processingMode: { requestBodyMode: 'FULL_DUPLEX_STREAMED', requestTrailerMode: 'SEND' },
        },
        async (d) => {
          // No per-message timer in FULL_DUPLEX: only the harness bound ends this exchange.
          await assert.rejects(d.request({ method: 'POST', path: '/x', body: 'x' }), /did not finish within 600 ms/);
        },
      );
    } finally {
      await p.close();
    }
  });

  it('gRPC error status ⇒ 500; OK close ⇒ request continues unprocessed', T, async () => {
    let mode: 'error' | 'ok' = 'error';
    const p = await startProcessor((_m, rec) => {
      if (mode === 'error') rec.call.emit('error', { code: grpc.status.RESOURCE_EXHAUSTED, details: 'too big' });
      else rec.call.end();
    });
    try {
      await withDouble({ extProcTarget: p.target }, async (d) => {
        const r = await d.request({ method: 'GET', path: '/x', headers: { [DEST]: backend.hostPort } });
        assert.equal(r.status, 500);
        assert.equal(r.details, 'ext_proc_error_gRPC_error_8{too_big}');
        mode = 'ok';
        const r2 = await d.request({ method: 'GET', path: '/x', headers: { [DEST]: backend.hostPort } });
        assert.equal(r2.status, 200, r2.details);
        assert.equal(r2.grpcStatus?.code, 0);
        assert.deepEqual(kinds(p.calls[1]), ['request_headers'], 'no response_headers after an OK close');
      });
    } finally {
      await p.close();
    }
  });

  it('ImmediateResponse ⇒ local reply with its status, headers, body; unset status ⇒ 200', T, async () => {
    let status: string | undefined = 'TooManyRequests';
    const p = await startProcessor(() => ({
      immediate_response: {
        ...(status ? { status: { code: status as 'TooManyRequests' } } : {}),
        headers: { set_headers: [setHeader('retry-after', '3'), setHeader('x-envoy-nope', '1')] },
        body: Buffer.from('slow down'),
        details: 'rate limited',
      },
    }));
    const before = backend.seen.length;
    try {
      await withDouble({ extProcTarget: p.target }, async (d) => {
        const r = await d.request({ method: 'GET', path: '/x', headers: { [DEST]: backend.hostPort } });
        assert.equal(r.status, 429);
        assert.equal(r.localReply, true);
        assert.equal(r.headers['retry-after'], '3');
        assert.equal(r.headers['x-envoy-nope'], undefined);
        assert.equal(r.body.toString(), 'slow down');
        assert.equal(r.details, 'rate_limited');
        status = undefined;
        const r2 = await d.request({ method: 'GET', path: '/x', headers: { [DEST]: backend.hostPort } });
        assert.equal(r2.status, 200);
        assert.equal(r2.localReply, true);
        assert.equal(backend.seen.length, before);
        assert.deepEqual(kinds(p.calls[0]), ['request_headers']);
      });
    } finally {
      await p.close();
    }
  });

  it('dynamic metadata kept only for receiving namespaces', T, async () => {
    const md = {
      fields: { 'envoy.lb': { structValue: { fields: { a: { stringValue: '1' } } } }, 'other.ns': { structValue: { fields: { b: { numberValue: 2 } } } } },
    };
    const p = await startProcessor((m) =>
      m.request === 'request_headers' ? headersResp('request', [setHeader(DEST, backend.hostPort)], { dynamic_metadata: md }) : continueAll(m),
    );
    try {
      await withDouble({ extProcTarget: p.target }, async (d) => {
        assert.deepEqual((await d.request({ method: 'GET', path: '/x' })).dynamicMetadata, { 'envoy.lb': { a: '1' } });
      });
      await withDouble({ extProcTarget: p.target, receivingNamespaces: ['other.ns'] }, async (d) => {
        assert.deepEqual((await d.request({ method: 'GET', path: '/x' })).dynamicMetadata, { 'other.ns': { b: 2 } });
      });
      await withDouble({ extProcTarget: p.target, receivingNamespaces: [] }, async (d) => {
        assert.deepEqual((await d.request({ method: 'GET', path: '/x' })).dynamicMetadata, {});
      });
    } finally {
      await p.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('Envoy double: response path and stream end', () => {
  it('STREAMED response: SSE chunks reach the processor and the client as they arrive', T, async () => {
    const p = await startProcessor((m) => {
      if (m.request === 'request_headers') return headersResp('request', [setHeader(DEST, backend.hostPort)]);
      if (m.request === 'response_headers') return headersResp('response', [setHeader('x-seen', '1')]);
      if (m.request === 'response_body')
        return bodyResp('response', { body_mutation: { body: Buffer.from(m.response_body!.body!.toString().replace('data', 'DATA')) } });
    });
    // The backend writes a chunk only once the client has the one before: a double that held the
    // response back would never get the second chunk and time out.
    const delivered = [defer(), defer(), defer()];
    const prevHandler = backend.handler;
    backend.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      void (async () => {
        for (let i = 0; i < 3; i++) {
          res.write(`data: ${i}\n\n`);
          await delivered[i]!.promise;
        }
        res.end();
      })();
    };
    try {
      await withDouble({ extProcTarget: p.target, processingMode: { responseBodyMode: 'STREAMED' } }, async (d) => {
        const arrivals: string[] = [];
        const onResponseChunk = (chunk: Buffer) => delivered[arrivals.push(chunk.toString()) - 1]?.resolve();
        const r = await d.request({ method: 'POST', path: '/v1/chat/completions', body: '{"stream":true}', onResponseChunk });
        assert.equal(r.status, 200, r.details);
        assert.equal(r.headers['x-seen'], '1');
        assert.equal(r.headers['content-length'], undefined);
        assert.equal(r.body.toString(), 'DATA: 0\n\nDATA: 1\n\nDATA: 2\n\n');
        const rec = p.calls[0]!;
        const bodies = rec.msgs.filter((m) => m.response_body).map((m) => [m.response_body!.body!.toString(), m.response_body!.end_of_stream]);
        assert.deepEqual(bodies, [
          ['data: 0\n\n', false],
          ['data: 1\n\n', false],
          ['data: 2\n\n', false],
          ['', true],
        ]);
        assert.deepEqual(arrivals, ['DATA: 0\n\n', 'DATA: 1\n\n', 'DATA: 2\n\n']);
      });
    } finally {
      backend.handler = prevHandler;
      await p.close();
    }
  });

  it('respond(): synthetic upstream response, BUFFERED response body with mutation', T, async () => {
    const p = await startProcessor((m) => {
      if (m.request === 'request_headers') return headersResp('request', [setHeader(DEST, '127.0.0.2:1')]);
      if (m.request === 'response_headers') return { response_headers: { response: {} } };
      if (m.request === 'response_body') {
        return bodyResp('response', {
          header_mutation: { set_headers: [setHeader('content-length', '4'), setHeader('x-total', String(m.response_body!.body!.length))] },
          body_mutation: { body: Buffer.from('done') },
        });
      }
    });
    try {
      await withDouble({ extProcTarget: p.target, processingMode: { responseBodyMode: 'BUFFERED' } }, async (d) => {
        const ex = await d.open({ method: 'GET', path: '/x' });
        assert.equal(ex.upstream, '127.0.0.2:1');
        const r = await ex.respond({ status: 201, headers: { 'content-type': 'text/plain' }, body: 'hello world' });
        assert.equal(r.status, 201, r.details);
        assert.equal(r.body.toString(), 'done');
        assert.equal(r.headers['x-total'], '11');
        assert.equal(r.headers['content-length'], '4');
        assert.deepEqual(kinds(p.calls[0]), ['request_headers', 'response_headers', 'response_body']);
        assert.equal(p.calls[0]!.msgs[2]!.response_body!.end_of_stream, true);
      });
    } finally {
      await p.close();
    }
  });

  it('default close: the server sees end then cancelled; graceful close ends with the server OK status', T, async () => {
    const p = await startProcessor(continueAll, { endOkOnHalfClose: false });
    const p2 = await startProcessor(continueAll, { endOkOnHalfClose: true });
    try {
      await withDouble({ extProcTarget: p.target }, async (d) => {
        const r = await d.request({ method: 'GET', path: '/x', headers: { [DEST]: backend.hostPort } });
        assert.equal(r.status, 200);
        assert.equal(r.grpcStatus?.localReset, true);
        await until(
          'the processor to see the stream cancelled',
          () => p.calls[0]!.events,
          (events) => events.includes('cancelled'),
        );
        const ev = p.calls[0]!.events;
        assert.ok(ev.indexOf('end') >= 0 && ev.indexOf('end') < ev.indexOf('cancelled'), ev.join(','));
      });
      await withDouble({ extProcTarget: p2.target, closeMode: 'graceful' }, async (d) => {
        const r = await d.request({ method: 'GET', path: '/x', headers: { [DEST]: backend.hostPort } });
        assert.equal(r.status, 200);
        assert.equal(r.grpcStatus?.code, 0);
        assert.equal(r.grpcStatus?.source, 'trailers');
        assert.equal(r.grpcStatus?.localReset, false);
      });
      // Graceful close against a server that never ends the call: reset after ≤1 s.
      await withDouble({ extProcTarget: p.target, closeMode: 'graceful' }, async (d) => {
        const t0 = performance.now();
        const r = await d.request({ method: 'GET', path: '/x', headers: { [DEST]: backend.hostPort } });
        assert.equal(r.grpcStatus?.localReset, true);
        assert.ok(performance.now() - t0 >= 900);
      });
    } finally {
      await p.close();
      await p2.close();
    }
  });

  it('abort(): client goes away mid-request ⇒ END_STREAM + RST, no response path', T, async () => {
    const p = await startProcessor((m) => (m.request === 'request_headers' ? headersResp('request', [setHeader(DEST, backend.hostPort)]) : continueAll(m)));
    try {
      await withDouble({ extProcTarget: p.target }, async (d) => {
        const ex = await d.open({ method: 'GET', path: '/x' });
        assert.equal(ex.upstream, backend.hostPort);
        const st = await ex.abort();
        assert.equal(st?.localReset, true);
        await until(
          'the processor to see the stream cancelled',
          () => p.calls[0]!.events,
          (events) => events.includes('cancelled'),
        );
        assert.deepEqual(p.calls[0]!.events, ['request_headers', 'end', 'cancelled']);
        await assert.rejects(ex.forward(), /already finished/);
      });
    } finally {
      await p.close();
    }
  });

  it('abort() mid-response (SSE): upstream cut, stream closed, result marked reset', T, async () => {
    const p = await startProcessor((m) => {
      if (m.request === 'request_headers') return headersResp('request', [setHeader(DEST, backend.hostPort)]);
      if (m.request === 'response_headers') return headersResp('response');
      if (m.request === 'response_body')
        return bodyResp('response', { body_mutation: { streamed_response: { body: m.response_body!.body, end_of_stream: m.response_body!.end_of_stream } } });
      return undefined;
    });
    const prevHandler = backend.handler;
    let upstreamClosed = false;
    backend.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: first\n\n');
      const t = setInterval(() => res.write('data: more\n\n'), 50);
      res.on('close', () => {
        upstreamClosed = true;
        clearInterval(t);
      });
    };
    try {
      const mode = { responseBodyMode: 'FULL_DUPLEX_STREAMED', responseTrailerMode: 'SEND' } as const;
      await withDouble({ extProcTarget: p.target, processingMode: mode }, async (d) => {
        let chunks = 0;
        const ex = await d.open({ method: 'POST', path: '/v1/chat/completions', body: '{}', onResponseChunk: () => chunks++ });
        const pending = ex.forward();
        const t0 = Date.now();
        await until(
          'the stream to flow downstream',
          () => chunks,
          (n) => n >= 2,
        );
        await ex.abort();
        const r = await pending;
        assert.equal(r.reset, true);
        assert.equal(r.details, 'downstream_remote_disconnect');
        assert.ok(Date.now() - t0 < 5000);
        await until(
          'the upstream closed and the stream cancelled',
          () => ({ upstreamClosed, events: p.calls[0]!.events }),
          (seen) => seen.upstreamClosed && seen.events.includes('cancelled'),
        );
        const ev = p.calls[0]!.events;
        assert.ok(ev.indexOf('end') < ev.indexOf('cancelled'), ev.join(','));
        assert.ok(!ev.includes('response_trailers'));
      });
    } finally {
      backend.handler = prevHandler;
      await p.close();
    }
  });

  it('FULL_DUPLEX_STREAMED with request trailers: trailers sent after the chunks, mutated trailers go upstream', T, async () => {
    const p = await startProcessor((m, rec) => {
      if (m.request === 'request_trailers') {
        const body = Buffer.concat(rec.msgs.filter((x) => x.request_body).map((x) => x.request_body!.body!));
        return [
          headersResp('request', [setHeader(DEST, backend.hostPort)]),
          bodyResp('request', { body_mutation: { streamed_response: { body } } }),
          { request_trailers: { header_mutation: { set_headers: [setHeader('x-checksum', 'fixed')] } } },
        ];
      }
      return undefined;
    });
    try {
      await withDouble(
        { extProcTarget: p.target, processingMode: { requestBodyMode: 'FULL_DUPLEX_STREAMED', requestTrailerMode: 'SEND', responseHeaderMode: 'SKIP' } },
        async (d) => {
          const r = await d.request({ method: 'POST', path: '/t', chunks: ['ab', 'cd'], trailers: { 'x-checksum': 'orig' } });
          assert.equal(r.status, 200, r.details);
          const rec = p.calls[0]!;
          assert.deepEqual(kinds(rec), ['request_headers', 'request_body', 'request_body', 'request_trailers']);
          assert.deepEqual(
            rec.msgs.filter((m) => m.request_body).map((m) => m.request_body!.end_of_stream),
            [false, false],
          );
          const seen = backend.seen.at(-1)!;
          assert.equal(seen.body.toString(), 'abcd');
          assert.equal(seen.trailers['x-checksum'], 'fixed');
        },
      );
    } finally {
      await p.close();
    }
  });

  it('sendProtocolConfig: false omits protocol_config', T, async () => {
    const p = await startProcessor((m) => (m.request === 'request_headers' ? headersResp('request', [setHeader(DEST, '127.0.0.2:1')]) : continueAll(m)));
    try {
      await withDouble({ extProcTarget: p.target, sendProtocolConfig: false }, async (d) => {
        await (await d.open({ method: 'GET', path: '/x' })).finish();
        assert.equal(p.calls[0]!.msgs[0]!.protocol_config, undefined);
      });
    } finally {
      await p.close();
    }
  });

  it('raw escape hatch: out-of-order message on a raw stream, see the server status', T, async () => {
    const p = await startProcessor((m, rec) => {
      if (rec.msgs.length === 1 && m.request !== 'request_headers') {
        rec.call.emit('error', { code: grpc.status.FAILED_PRECONDITION, details: 'expected request_headers first' });
        return;
      }
      return continueAll(m);
    });
    try {
      await withDouble({ extProcTarget: p.target }, async (d) => {
        const ok = await d.openRawStream();
        ok.send(encodeProcessingRequest({ request_headers: { headers: { headers: [{ key: ':path', raw_value: Buffer.from('/') }] }, end_of_stream: true } }));
        const reply = decodeProcessingResponse((await ok.recv(2000))!);
        assert.equal(reply.response, 'request_headers');
        ok.closeLikeEnvoy();
        const bad = await d.openRawStream();
        bad.send(encodeProcessingRequest({ request_body: { body: Buffer.from('x'), end_of_stream: true } }));
        const st = await bad.status;
        assert.equal(st.code, grpc.status.FAILED_PRECONDITION);
        assert.equal(st.message, 'expected request_headers first');
      });
    } finally {
      await p.close();
    }
  });

  it('streams spread over `connections`; many requests on one connection, 0 GOAWAY, 0 lost', T, async () => {
    const p = await startProcessor((m) => (m.request === 'request_headers' ? headersResp('request', [setHeader(DEST, '127.0.0.2:1')]) : continueAll(m)));
    try {
      await withDouble({ extProcTarget: p.target, connections: 3 }, async (d) => {
        await d.connect();
        for (let i = 0; i < 9; i++) {
          const ex = await d.open({ method: 'GET', path: '/x' });
          await ex.respond({ status: 200, body: 'ok' });
        }
        const conns = d.connectionsUsed;
        assert.equal(conns.length, 3);
        assert.deepEqual(
          conns.map((c) => c.stats.streamsOpened),
          [3, 3, 3],
        );
      });
      // Generous message timeout: this test is about the connection, not about a loaded CI box.
      await withDouble({ extProcTarget: p.target, messageTimeoutMs: 5000 }, async (d) => {
        const one = async (): Promise<number> => (await (await d.open({ method: 'GET', path: '/x' })).respond({ status: 200, body: 'ok' })).status;
        let ok = 0;
        for (let i = 0; i < 600; i += 30) ok += (await Promise.all(Array.from({ length: 30 }, one))).filter((s) => s === 200).length;
        const s = d.stats();
        assert.equal(ok, 600);
        assert.equal(s.connections, 1);
        assert.equal(s.goawayCount, 0);
        assert.equal(s.streamsLost, 0);
        assert.equal(s.streamsOpened, 600);
      });
    } finally {
      await p.close();
    }
  });
});
