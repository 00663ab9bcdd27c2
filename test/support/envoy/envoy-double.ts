/**
 * A test double of Envoy's side of ext_proc: the ext_proc HTTP filter, the router and an
 * ORIGINAL_DST cluster reading the destination from a request header (envoy.yaml §5.a), as far as an
 * ext_proc server can observe them. Section numbers (§) refer to
 * ../shared/reference/envoy-extproc.md (the team's reference notes).
 *
 * One `request()` = one downstream HTTP exchange = one ext_proc gRPC stream, opened lazily on the
 * first message (§1.1) over one of `connections` long-lived HTTP/2 connections.
 *
 * BUFFERED_PARTIAL is emulated as Envoy describes it: like BUFFERED up to the buffer limit; past it,
 * what is buffered goes to the processor with end_of_stream false, and after its answer the rest of
 * the body passes through unprocessed (trailers too).
 *
 * Not emulated (knowingly): the GRPC body mode, mode_override
 * (allow_mode_override is false), send_body_without_waiting_for_header_response, observability
 * mode, failure_mode_allow (always fail-closed), route_cache_action / cluster_header routing,
 * StreamedImmediateResponse (treated as spurious), metadata_context forwarding, evaluating
 * request_attributes (a request carries their values: DownstreamRequest.attributes),
 * header count/size limits, the 1.37 early stream close (we close at the end of the exchange, i.e.
 * runtime `ext_proc_stream_close_optimization: false` / pre-1.37 behaviour).
 */

import { randomUUID } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import type { ConnectionOptions } from 'node:tls';
import { EXT_PROC_FILTER_NAME } from '../../../src/extproc/attributes.js';
import { EXT_PROC_METHOD_PATH } from '../../../src/extproc/proto.js';
import type { CommonResponse__Output } from '../../../src/generated/envoy/service/ext_proc/v3/CommonResponse.js';
import {
  decodeProcessingResponse,
  encodeProcessingRequest,
  fromHeaderInput,
  type HeaderList,
  type HeaderRecord,
  type HeaderValueField,
  httpStatusCode,
  type ProcessingRequest,
  type ProcessingResponse__Output,
  structToJs,
  toHeaderMap,
  toHeaderRecord,
  toStruct,
} from './codec.js';
import { type GrpcCallStatus, GrpcCode, GrpcH2Connection, type GrpcH2ConnectionStats, type GrpcH2Stream, zeroConnectionStats } from './grpc-h2.js';
import { applyHeaderMutation, MutationError, type MutationStats } from './mutation.js';

export type { HeaderRecord } from './codec.js';
export { decodeProcessingResponse, encodeProcessingRequest } from './codec.js';

export type HeaderSendMode = 'SEND' | 'SKIP';
export type BodySendMode = 'NONE' | 'STREAMED' | 'BUFFERED' | 'BUFFERED_PARTIAL' | 'FULL_DUPLEX_STREAMED';

export interface ProcessingModeOptions {
  requestHeaderMode?: HeaderSendMode;
  responseHeaderMode?: HeaderSendMode;
  requestBodyMode?: BodySendMode;
  responseBodyMode?: BodySendMode;
  requestTrailerMode?: HeaderSendMode;
  responseTrailerMode?: HeaderSendMode;
}

export interface EnvoyDoubleOptions {
  /** ext_proc server, `host:port` (loopback). */
  extProcTarget: string;
  /** Envoy's defaults when unset (§2.1): headers SEND, bodies NONE, trailers SKIP. */
  processingMode?: ProcessingModeOptions;
  /** `message_timeout`, default 200 ms (§2.6); 504 on expiry; no timer in FULL_DUPLEX_STREAMED. */
  messageTimeoutMs?: number;
  /** `max_message_timeout`: enables `override_message_timeout` up to this value. Default 0 (off). */
  maxMessageTimeoutMs?: number;
  /** Connection buffer limit, default 1 MiB (§2.5): BUFFERED request body over it ⇒ 413. */
  bufferLimitBytes?: number;
  /** End-of-exchange close (§4.1): 'reset' (default) = END_STREAM+RST_STREAM(CANCEL); 'graceful'. */
  closeMode?: 'reset' | 'graceful';
  /** ORIGINAL_DST `http_header_name`, default 'x-gateway-destination-endpoint'. */
  destinationHeader?: string;
  /** `metadata_options.receiving_namespaces.untyped`, default ['envoy.lb']. */
  receivingNamespaces?: string[];
  /** HTTP/2 connections to the ext_proc server; streams are spread round-robin. Default 1. */
  connections?: number;
  /** First message carries protocol_config (Envoy ≥1.34). Default true. */
  sendProtocolConfig?: boolean;
  /** `status_on_error`, default 500. */
  statusOnError?: number;
  /** Route timeout (RouteAction.timeout), default 15000 like Envoy; 0 disables. */
  routeTimeoutMs?: number;
  /** Test-harness bound on one exchange (not an Envoy behaviour): rejects after it. Default 30000. */
  exchangeTimeoutMs?: number;
  /** `:authority` on the ext_proc gRPC stream (Envoy: the cluster name). Default 'ext_proc'. */
  grpcAuthority?: string;
  /** The ext_proc cluster's `transport_socket` (UpstreamTlsContext): TLS to the ext_proc server. Default plaintext. */
  extProcTls?: ConnectionOptions;
  /** Refuse (503) ORIGINAL_DST destinations outside 127.0.0.0/8 and ::1. Default true. */
  loopbackOnly?: boolean;
  /**
   * The HeaderValue field Envoy sends and reads (§1.6): 'raw_value' (default; 1.27+) or 'value'
   * (before 1.27, or runtime `send_header_raw_value` off).
   */
  headerValueField?: HeaderValueField;
}

export interface DownstreamRequest {
  method: string;
  path: string;
  /** Client headers (any case; lower-cased like Envoy). Values are byte strings (latin1). */
  headers?: Record<string, string | string[] | number | undefined>;
  /** Whole body (one chunk). */
  body?: Buffer | string;
  /** Body as separate chunks (as separate data callbacks in Envoy). Overrides `body`. */
  chunks?: (Buffer | string)[];
  /** Request trailers (then no content-length is added, as with chunked encoding). */
  trailers?: Record<string, string | string[]>;
  /** `:authority`, default 'llm.local'. */
  authority?: string;
  /** Called with each response body chunk as the downstream client would receive it. */
  onResponseChunk?: (chunk: Buffer) => void;
  /**
   * What Envoy evaluated for the filter's `request_attributes`, by attribute name (e.g.
   * `{'xds.route_name': 'chat-route'}`): sent as `attributes['envoy.filters.http.ext_proc']` on the
   * request_headers message (§1.2 field 9).
   */
  attributes?: Record<string, string | number | boolean>;
}

/** What the downstream client got, plus what the double saw on the way. */
export interface EnvoyResponse {
  status: number;
  /** Response headers: lower-case keys; a string, or a string[] when a header is repeated. */
  headers: HeaderRecord;
  body: Buffer;
  trailers?: HeaderRecord;
  /** True when Envoy generated the response (local reply / ImmediateResponse). */
  localReply: boolean;
  /** %RESPONSE_CODE_DETAILS% (approximations of Envoy's strings). */
  details?: string;
  /** True when the downstream stream was reset after response headers were sent. */
  reset?: boolean;
  /** The ORIGINAL_DST `ip:port` used. */
  upstream?: string;
  /** Request headers (incl. pseudo-headers) as the router forwarded them. */
  requestHeadersSentUpstream?: HeaderRecord;
  /** Request body as forwarded upstream. */
  requestBodySentUpstream?: Buffer;
  /** Dynamic metadata kept from the server's responses (receiving namespaces only). */
  dynamicMetadata?: Record<string, Record<string, unknown>>;
  /** Final status of the ext_proc gRPC stream (undefined when no stream was opened). */
  grpcStatus?: GrpcCallStatus;
  /** Messages exchanged on the ext_proc stream, e.g. '>request_headers', '<request_headers'. */
  trace: string[];
}

/** A synthetic upstream response for `Exchange.respond()`. */
export interface SyntheticResponse {
  status: number;
  headers?: Record<string, string | string[] | number | undefined>;
  body?: Buffer | string;
  chunks?: (Buffer | string)[];
  trailers?: Record<string, string | string[]>;
  /** Delay before each chunk (e.g. an SSE stream). Default 0 (all at once). */
  chunkIntervalMs?: number;
}

// ---------------------------------------------------------------------------------------------
// Events: everything an exchange reacts to goes through one queue.

type SourceHead = { status: number; headers: HeaderList; endOnHeaders: boolean };
type Ev =
  | { k: 'msg'; m: ProcessingResponse__Output }
  | { k: 'grpc-end'; st: GrpcCallStatus }
  | { k: 'grpc-bad'; err: Error }
  | { k: 'head'; head: SourceHead }
  | { k: 'data'; b: Buffer; eos: boolean }
  | { k: 'end'; trailers?: HeaderList }
  | { k: 'src-error'; err: Error; beforeHead: boolean; connectRefused: boolean; details?: string }
  | { k: 'route-timeout' }
  | { k: 'abort' }
  | { k: 'harness-timeout' }
  | { k: 'timeout' };

class EventQueue {
  private q: Ev[] = [];
  private w: ((e: Ev) => void) | undefined;
  push(e: Ev): void {
    const w = this.w;
    if (w) {
      this.w = undefined;
      w(e);
    } else this.q.push(e);
  }
  /** Next event; a synthetic 'timeout' when `deadline` (epoch ms) passes first. */
  next(deadline: number | undefined): Promise<Ev> {
    if (this.q.length > 0) return Promise.resolve(this.q.shift()!);
    return new Promise((resolve) => {
      let t: NodeJS.Timeout | undefined;
      if (deadline !== undefined) {
        t = setTimeout(
          () => {
            this.w = undefined;
            resolve({ k: 'timeout' });
          },
          Math.max(0, deadline - Date.now()),
        );
      }
      this.w = (e) => {
        if (t) clearTimeout(t);
        resolve(e);
      };
    });
  }
}

/** How one direction of the filter ended. */
type Outcome =
  | { kind: 'ok' }
  | { kind: 'local'; status: number; details: string; body?: Buffer; headers?: HeaderList; immediate?: boolean }
  | { kind: 'reset'; details: string }
  | { kind: 'aborted' };

class HarnessTimeout extends Error {}

const DEFAULTS = {
  requestHeaderMode: 'SEND',
  responseHeaderMode: 'SEND',
  requestBodyMode: 'NONE',
  responseBodyMode: 'NONE',
  requestTrailerMode: 'SKIP',
  responseTrailerMode: 'SKIP',
} as const satisfies Required<ProcessingModeOptions>;

type Dir = 'request' | 'response';

interface DirSpec {
  dir: Dir;
  headers: HeaderList;
  endOnHeaders: boolean;
  sendHeaders: boolean;
  bodyMode: BodySendMode;
  sendTrailers: boolean;
  /** Sink: headers released (router / downstream). */
  releaseHeaders(): void;
  /** Sink: body bytes released. */
  emitData(b: Buffer): void;
  /** Sink: end of the direction, with (possibly mutated) trailers. */
  emitEnd(trailers: HeaderList | undefined): void;
  /** Buffer overflow status: 413 on requests, 500 on responses. */
  overflow: { status: number; details: string; body?: Buffer };
  /** True once downstream response headers were committed (errors then reset instead). */
  committed(): boolean;
}

/** Remove-content-length modes (§1.6): STREAMED, FULL_DUPLEX, BUFFERED with headers SKIP. */
function removesContentLength(bodyMode: BodySendMode, sendHeaders: boolean): boolean {
  return bodyMode === 'STREAMED' || bodyMode === 'FULL_DUPLEX_STREAMED' || bodyMode === 'BUFFERED_PARTIAL' || (bodyMode === 'BUFFERED' && !sendHeaders);
}

function toBuf(b: Buffer | string): Buffer {
  return typeof b === 'string' ? Buffer.from(b) : b;
}

/** ORIGINAL_DST `use_http_header`: exactly one `ip:port` (IPv6 as `[addr]:port`), §5.a. */
export function parseOriginalDst(v: string | undefined): { host: string; port: number; hostPort: string } | undefined {
  if (v === undefined) return undefined;
  let m = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(v);
  let host: string | undefined;
  if (m && net.isIPv4(m[1]!)) host = m[1]!;
  else {
    m = /^\[([0-9A-Fa-f:.]+)\]:(\d{1,5})$/.exec(v);
    if (m && net.isIPv6(m[1]!)) host = m[1]!;
  }
  if (!m || host === undefined) return undefined;
  const port = Number(m[2]);
  if (port > 65535) return undefined;
  return { host, port, hostPort: v };
}

function isLoopback(host: string): boolean {
  return net.isIPv4(host) ? host.startsWith('127.') : host === '::1';
}

// ---------------------------------------------------------------------------------------------

/**
 * One downstream HTTP exchange. Created by `EnvoyDouble.open()`, which has run the request path;
 * then call exactly one of `forward()`, `respond()`, `abort()` or `finish()`.
 */
export class Exchange {
  /** Set when the request path ended in a local reply (the ext_proc stream is already closed). */
  localReply: EnvoyResponse | undefined;
  /** ORIGINAL_DST destination `ip:port` chosen at header release. */
  upstream: string | undefined;
  /** Request headers (mutated, with pseudo-headers) as released to the router. */
  requestHeaders: HeaderRecord = {};
  /** Request body the filter released. */
  requestBody: Buffer = Buffer.alloc(0);
  requestTrailers: HeaderRecord | undefined;
  /** Kept dynamic metadata, per namespace. */
  readonly dynamicMetadata: Record<string, Record<string, unknown>> = {};
  /** ext_proc messages sent ('>') and received ('<'), in order. */
  readonly trace: string[] = [];
  /** Mutations the default rules ignored (Envoy's `rejected_header_mutations`). */
  readonly mutationStats: MutationStats = { rejected: 0 };

  private readonly env: EnvoyDouble;
  private readonly req: DownstreamRequest;
  private readonly ev = new EventQueue();
  private call: GrpcH2Stream | undefined;
  private callFailed: GrpcCallStatus | undefined;
  private firstMessage = true;
  /** Processing over for the whole filter (OK close, error, spurious, immediate response). */
  private processingComplete = false;
  private closed = false;
  private closeP: Promise<GrpcCallStatus | undefined> | undefined;
  private heldReqHeaders: HeaderList = new Map();
  private reqBodyOut: Buffer[] = [];
  private reqTrailersOut: HeaderList | undefined;
  private upstreamReq: http.ClientRequest | undefined;
  private harnessTimer: NodeJS.Timeout | undefined;
  private done = false;
  private aborted = false;

  /** @internal */
  constructor(env: EnvoyDouble, req: DownstreamRequest) {
    this.env = env;
    this.req = req;
  }

  /** The raw ext_proc stream (undefined until the first message was sent). */
  get stream(): GrpcH2Stream | undefined {
    return this.call;
  }

  // -- ext_proc stream ---------------------------------------------------------------------------

  private send(kind: keyof ProcessingRequest & string, body: ProcessingRequest[keyof ProcessingRequest]): void {
    if (this.closed) return;
    const msg: ProcessingRequest = { [kind]: body } as ProcessingRequest;
    // Envoy evaluates request_attributes once and sends them with the first request message, the headers.
    if (kind === 'request_headers' && this.req.attributes) msg.attributes = { [EXT_PROC_FILTER_NAME]: toStruct(this.req.attributes) };
    if (this.firstMessage) {
      this.firstMessage = false;
      // §1.2 field 11: protocol_config only in the first message (Envoy ≥1.34).
      if (this.env.opts.sendProtocolConfig) {
        msg.protocol_config = {
          request_body_mode: this.env.mode.requestBodyMode,
          response_body_mode: this.env.mode.responseBodyMode,
          send_body_without_waiting_for_header_response: false,
        };
      }
      this.openCall();
    }
    this.trace.push(`>${kind}`);
    // If the stream is already gone, send() is a no-op and its end event is in the queue.
    this.call?.send(encodeProcessingRequest(msg));
  }

  private openCall(): void {
    const conn = this.env.pickConnection();
    if (!conn) {
      // §3.4: stream start fails ⇒ gRPC error (UNAVAILABLE) ⇒ status_on_error.
      this.callFailed = { code: GrpcCode.UNAVAILABLE, message: 'ext_proc cluster unavailable', source: 'connection', localReset: false };
      this.ev.push({ k: 'grpc-end', st: this.callFailed });
      return;
    }
    const s = conn.openStream(EXT_PROC_METHOD_PATH);
    this.call = s;
    s.onMessage = (buf) => {
      let m: ProcessingResponse__Output;
      try {
        m = decodeProcessingResponse(buf);
      } catch (err) {
        this.ev.push({ k: 'grpc-bad', err: err as Error });
        return;
      }
      this.ev.push({ k: 'msg', m });
    };
    s.onEnd = (st) => this.ev.push({ k: 'grpc-end', st });
  }

  /**
   * Closes the ext_proc stream the way Envoy does (§4.1): `reset` = END_STREAM + RST_STREAM(CANCEL)
   * back to back; `graceful` = END_STREAM, wait ≤1 s for the server's status, then reset.
   * Errors/timeouts always reset immediately. Resolves with the call's final status.
   */
  private closeStream(how: 'end' | 'error'): Promise<GrpcCallStatus | undefined> {
    if (this.closeP) return this.closeP;
    this.closed = true;
    this.processingComplete = true;
    const s = this.call;
    if (!s) {
      this.closeP = Promise.resolve(this.callFailed);
      return this.closeP;
    }
    if (s.isDone) {
      // The server already ended the call: just finish our half so the HTTP/2 stream closes.
      s.halfClose();
      this.closeP = Promise.resolve(s.finished);
      return this.closeP;
    }
    if (how === 'end' && this.env.opts.closeMode === 'graceful') {
      s.halfClose();
      this.closeP = Promise.race([s.status, delay(1000).then(() => undefined)]).then((st) => {
        if (st) return st;
        s.reset();
        return boundedStatus(s);
      });
    } else {
      s.closeLikeEnvoy();
      this.closeP = boundedStatus(s);
    }
    return this.closeP;
  }

  // -- the filter, one direction -------------------------------------------------------------------

  private setDynamicMetadata(m: ProcessingResponse__Output): void {
    if (!m.dynamic_metadata) return;
    // §1.3 field 8: only namespaces listed in receiving_namespaces are written.
    const md = structToJs(m.dynamic_metadata);
    for (const [ns, v] of Object.entries(md)) {
      if (!this.env.receiving.has(ns) || v === null || typeof v !== 'object' || Array.isArray(v)) continue;
      this.dynamicMetadata[ns] = { ...this.dynamicMetadata[ns], ...(v as Record<string, unknown>) };
    }
  }

  private immediate(m: ProcessingResponse__Output): Outcome {
    const ir = m.immediate_response!;
    let status = httpStatusCode(ir.status?.code);
    if (status < 200) status = 200; // §1.4: unset or <200 ⇒ 200
    const headers: HeaderList = new Map();
    try {
      applyHeaderMutation(ir.headers, headers, { removeContentLength: false, stats: this.mutationStats, field: this.env.opts.headerValueField });
    } catch {
      // Failures applying ImmediateResponse headers are only logged by Envoy (§1.4).
    }
    return {
      kind: 'local',
      status,
      details: (ir.details ?? '').replace(/\s/g, '_'),
      body: ir.body ?? Buffer.alloc(0),
      headers,
      immediate: true,
    };
  }

  /**
   * Runs one direction of the ext_proc filter (§2.2–2.3) until the direction's body and trailers
   * have been released to the sink, or it ends in a local reply / reset / abort.
   */
  private async runDirection(d: DirSpec, pre: Ev[]): Promise<Outcome> {
    const env = this.env;
    const dir = d.dir;
    const fd = d.bodyMode === 'FULL_DUPLEX_STREAMED';
    // BUFFERED_PARTIAL holds and sends like BUFFERED until the buffer limit is crossed.
    const buffered = d.bodyMode === 'BUFFERED' || d.bodyMode === 'BUFFERED_PARTIAL';
    const removeCL = removesContentLength(d.bodyMode, d.sendHeaders);
    const statusOnError = env.opts.statusOnError;
    const active = (): boolean => !this.processingComplete;

    // Expected responses, in order (not used for FULL_DUPLEX body messages, which are M:N).
    type Exp = { t: 'headers' } | { t: 'body'; chunk: Buffer; eos: boolean } | { t: 'buffered' } | { t: 'trailers' };
    const expect: Exp[] = [];
    let deadline: number | undefined;
    const armTimer = (): void => {
      // §2.6: message_timeout per message that needs an answer; never in FULL_DUPLEX_STREAMED.
      deadline = expect.length > 0 && !fd ? Date.now() + env.opts.messageTimeoutMs : undefined;
    };

    let headersHeld = true;
    let hdrAwait = false;
    let srcEnded = d.endOnHeaders;
    let srcTrailers: HeaderList | undefined;
    let sawEos = d.endOnHeaders;
    // Data not yet handled (headers still held, or BUFFERED accumulation), with its end_of_stream.
    const held: { b: Buffer; eos: boolean }[] = [];
    let heldLen = 0;
    const heldConcat = (): Buffer =>
      Buffer.concat(
        held.map((x) => x.b),
        heldLen,
      );
    let bufferedSent = false;
    /**
     * BUFFERED_PARTIAL: the buffer limit was crossed (what is held then goes out without
     * end_of_stream); later data waits in `overflow`, as flow control would keep it downstream.
     */
    let limitCrossed = false;
    const overflow: Buffer[] = [];
    let partialSent = false;
    let bodyReplaced = false;
    // FULL_DUPLEX bookkeeping.
    let fdBodyDone = d.endOnHeaders;
    let trailersSent = false;
    let trailersDone = false;
    let ended = false;

    const release = (): void => {
      if (!headersHeld) return;
      headersHeld = false;
      if (removeCL) d.headers.delete('content-length'); // §2.3 FULL_DUPLEX step 5, §7.11
      d.releaseHeaders();
    };
    const finish = (trailers: HeaderList | undefined): void => {
      if (ended) return;
      ended = true;
      release();
      d.emitEnd(trailers);
    };
    const error = (details: string, status = statusOnError): Outcome => {
      void this.closeStream('error');
      return d.committed() ? { kind: 'reset', details } : { kind: 'local', status, details };
    };
    const sendBody = (b: Buffer, eos: boolean): void => {
      this.send(`${dir}_body`, { body: b, end_of_stream: eos });
    };

    /**
     * After processing stopped (OK close): release what is held and pass the rest through
     * unprocessed (§3.4). STREAMED chunks awaiting a response go on as they were; FULL_DUPLEX
     * chunks already sent and not echoed are lost (they were drained).
     */
    const passThrough = (): void => {
      for (const x of expect) if (x.t === 'body' && x.chunk.length > 0) d.emitData(x.chunk);
      expect.length = 0;
      deadline = undefined;
      release();
      if (!bodyReplaced) for (const x of held) if (x.b.length > 0) d.emitData(x.b);
      held.length = 0;
      heldLen = 0;
      if (!bodyReplaced) for (const b of overflow) if (b.length > 0) d.emitData(b);
      overflow.length = 0;
    };

    // Progress whatever can be progressed without a server message.
    const pump = (): Outcome | undefined => {
      if (!active()) {
        passThrough();
        if (srcEnded) finish(srcTrailers);
        return undefined;
      }
      if (bodyReplaced) {
        held.length = 0;
        if (srcEnded && !hdrAwait) finish(srcTrailers);
        return undefined;
      }
      switch (d.bodyMode) {
        case 'NONE':
          if (!hdrAwait) {
            release();
            for (const x of held) if (x.b.length > 0) d.emitData(x.b);
            held.length = 0;
            heldLen = 0;
          }
          break;
        case 'STREAMED':
          // §2.3 STREAMED: held until the headers response, then one message per chunk, each
          // answered in order.
          if (!hdrAwait) {
            release();
            if (held.length > 0) {
              for (const x of held) {
                sendBody(x.b, x.eos);
                expect.push({ t: 'body', chunk: x.b, eos: x.eos });
              }
              held.length = 0;
              heldLen = 0;
              armTimer();
            }
          }
          break;
        case 'BUFFERED':
        case 'BUFFERED_PARTIAL': {
          // §2.3 BUFFERED: nothing of the body until the headers response, then the whole body.
          // BUFFERED_PARTIAL: or, once over the buffer limit, what is held (end_of_stream false).
          if (!hdrAwait && (srcEnded || limitCrossed) && !bufferedSent && !d.endOnHeaders) {
            bufferedSent = true;
            partialSent = limitCrossed;
            sendBody(heldConcat(), !srcTrailers && !limitCrossed);
            expect.push({ t: 'buffered' });
            armTimer();
          }
          if (!hdrAwait && d.endOnHeaders) release();
          break;
        }
        case 'FULL_DUPLEX_STREAMED':
          break; // chunks go out on arrival, see 'data'
      }
      // Trailers (§1.2 field 6/7: only with trailer mode SEND and when trailers exist).
      // In FULL_DUPLEX they follow the chunks at once; otherwise they wait like the body.
      if (srcEnded && srcTrailers && !trailersSent && (fd || !hdrAwait)) {
        const bodyPhaseSent = !buffered || bufferedSent;
        if (bodyPhaseSent && d.sendTrailers && !partialSent) {
          trailersSent = true;
          this.send(`${dir}_trailers`, { trailers: toHeaderMap(srcTrailers, this.env.opts.headerValueField) });
          if (!fd) {
            expect.push({ t: 'trailers' });
            armTimer();
          }
        } else if (bodyPhaseSent) {
          trailersSent = true;
          trailersDone = true;
        }
      }
      // Finished?
      if (srcEnded && !hdrAwait && expect.length === 0) {
        if (fd) {
          const trailersOk = !srcTrailers || !d.sendTrailers || trailersDone;
          if ((fdBodyDone || trailersDone) && trailersOk) finish(srcTrailers);
        } else if (!buffered || bufferedSent || d.endOnHeaders) {
          if (!srcTrailers || trailersDone || !d.sendTrailers || partialSent) finish(srcTrailers);
        }
      }
      return undefined;
    };

    // Start: the headers message (§1.4, end_of_stream when no body).
    if (active() && d.sendHeaders) {
      this.send(`${dir}_headers`, { headers: toHeaderMap(d.headers, this.env.opts.headerValueField), end_of_stream: d.endOnHeaders });
      hdrAwait = true;
      expect.push({ t: 'headers' });
      armTimer();
    } else if (!buffered || !active()) {
      release();
    }

    const handleCommon = (cr: CommonResponse__Output | undefined, allowHeaderMutation: boolean, stage: 'headers' | 'body'): Outcome | undefined => {
      if (!cr) return undefined;
      if (cr.header_mutation && allowHeaderMutation) {
        try {
          applyHeaderMutation(cr.header_mutation, d.headers, {
            removeContentLength: removeCL,
            stats: this.mutationStats,
            field: this.env.opts.headerValueField,
          });
        } catch (err) {
          if (err instanceof MutationError) return error(err.message.replace(/\s/g, '_'));
          throw err;
        }
      }
      if (stage === 'headers' && cr.status === 'CONTINUE_AND_REPLACE') {
        // §1.4: a body mutation on a headers response only with CONTINUE_AND_REPLACE; the body is
        // replaced and no further body goes to the processor.
        bodyReplaced = true;
        const bm = cr.body_mutation;
        const nb = bm?.mutation === 'body' ? (bm.body ?? Buffer.alloc(0)) : Buffer.alloc(0);
        d.headers.delete('content-length');
        held.length = 0;
        heldLen = 0;
        release();
        if (nb.length > 0) d.emitData(nb);
      }
      return undefined;
    };

    const onMessage = (m: ProcessingResponse__Output): Outcome | undefined => {
      const kind = m.response ?? '(none)';
      this.trace.push(`<${kind}`);
      if (m.override_message_timeout) {
        // §1.3 field 10: the message only extends the timer; other fields are ignored.
        const ms = Number(m.override_message_timeout.seconds ?? 0) * 1000 + Math.floor((m.override_message_timeout.nanos ?? 0) / 1e6);
        if (env.opts.maxMessageTimeoutMs > 0 && ms >= 1 && ms <= env.opts.maxMessageTimeoutMs && deadline !== undefined) {
          deadline = Date.now() + ms;
        }
        return undefined;
      }
      if (kind === 'immediate_response') {
        this.setDynamicMetadata(m);
        const o = this.immediate(m);
        if (d.committed()) {
          void this.closeStream('error');
          return { kind: 'reset', details: 'ext_proc_immediate_response_after_headers' };
        }
        void this.closeStream('end'); // closeStreamMaybeGraceful
        return o;
      }
      if (fd) return onFullDuplexMessage(m, kind);
      const head = expect[0];
      const want = head ? `${dir}_${head.t === 'buffered' ? 'body' : head.t}` : undefined;
      if (!head || kind !== want) return error('spurious_message'); // §3.4: spurious ⇒ 500
      const bm = kind.endsWith('_body') ? m[kind as 'request_body']?.response?.body_mutation : undefined;
      if (bm?.mutation === 'streamed_response') return error('spurious_message'); // §1.4 only FULL_DUPLEX
      expect.shift();
      this.setDynamicMetadata(m);
      switch (head.t) {
        case 'headers': {
          const o = handleCommon(m[`${dir}_headers`]?.response, true, 'headers');
          if (o) return o;
          hdrAwait = false;
          // BUFFERED with a body keeps holding the headers until the body response (§2.2).
          if (!buffered || d.endOnHeaders || bodyReplaced) release();
          break;
        }
        case 'body': {
          // STREAMED: header mutations in body responses are ignored (§2.2).
          const cr = m[`${dir}_body`]?.response;
          let out = head.chunk;
          if (cr?.body_mutation?.mutation === 'body') out = cr.body_mutation.body ?? Buffer.alloc(0);
          else if (cr?.body_mutation?.mutation === 'clear_body' && cr.body_mutation.clear_body) out = Buffer.alloc(0);
          if (out.length > 0) d.emitData(out);
          break;
        }
        case 'buffered': {
          const cr = m[`${dir}_body`]?.response;
          const o = handleCommon(cr, true, 'body');
          if (o) return o;
          let out = heldConcat();
          const bmut = cr?.body_mutation;
          if (bmut?.mutation === 'body' || (bmut?.mutation === 'clear_body' && bmut.clear_body)) {
            const nb = bmut.mutation === 'body' ? (bmut.body ?? Buffer.alloc(0)) : Buffer.alloc(0);
            // §2.3 BUFFERED step 5: a mutated body needs a matching content-length (BUFFERED+SEND;
            // with headers SKIP the content-length is removed instead).
            const cl = removeCL ? undefined : d.headers.get('content-length')?.[0];
            if (cl !== undefined && Number(cl) !== nb.length) {
              return error('mismatch_between_content_length_and_the_length_of_the_mutated_body');
            }
            out = nb;
          }
          held.length = 0;
          heldLen = 0;
          release();
          if (out.length > 0) d.emitData(out);
          for (const b of overflow.splice(0)) if (b.length > 0) d.emitData(b);
          break;
        }
        case 'trailers': {
          try {
            if (srcTrailers)
              applyHeaderMutation(m[`${dir}_trailers`]?.header_mutation, srcTrailers, {
                removeContentLength: false,
                stats: this.mutationStats,
                field: this.env.opts.headerValueField,
              });
          } catch (err) {
            if (err instanceof MutationError) return error(err.message.replace(/\s/g, '_'));
            throw err;
          }
          trailersDone = true;
          break;
        }
      }
      armTimer();
      return undefined;
    };

    const onFullDuplexMessage = (m: ProcessingResponse__Output, kind: string): Outcome | undefined => {
      // §2.3 FULL_DUPLEX: headers response first, then streamed_response body chunks, then trailers.
      if (kind === `${dir}_headers`) {
        if (!hdrAwait) return error('spurious_message');
        expect.length = 0;
        this.setDynamicMetadata(m);
        const o = handleCommon(m[`${dir}_headers`]?.response, true, 'headers');
        if (o) return o;
        hdrAwait = false;
        release();
        return undefined;
      }
      if (kind === `${dir}_body`) {
        const bm = m[`${dir}_body`]?.response?.body_mutation;
        if (hdrAwait || trailersDone || bm?.mutation !== 'streamed_response') return error('spurious_message');
        this.setDynamicMetadata(m); // header_mutation on FULL_DUPLEX body responses is ignored
        const sr = bm.streamed_response!;
        if (sr.body && sr.body.length > 0) d.emitData(sr.body);
        if (sr.end_of_stream) fdBodyDone = true;
        return undefined;
      }
      if (kind === `${dir}_trailers`) {
        if (hdrAwait || !trailersSent || trailersDone || !srcTrailers) return error('spurious_message');
        this.setDynamicMetadata(m);
        try {
          applyHeaderMutation(m[`${dir}_trailers`]?.header_mutation, srcTrailers, {
            removeContentLength: false,
            stats: this.mutationStats,
            field: this.env.opts.headerValueField,
          });
        } catch (err) {
          if (err instanceof MutationError) return error(err.message.replace(/\s/g, '_'));
          throw err;
        }
        trailersDone = true;
        return undefined;
      }
      return error('spurious_message');
    };

    const onData = (b: Buffer, eos: boolean): Outcome | undefined => {
      if (eos) sawEos = true;
      if (bodyReplaced) return undefined; // CONTINUE_AND_REPLACE discarded the rest
      if (!active()) {
        release();
        if (b.length > 0) d.emitData(b);
        if (eos) srcEnded = true;
        return undefined;
      }
      if (fd) {
        // §2.3 FULL_DUPLEX step 2: each chunk goes out at once; the original bytes are drained.
        sendBody(b, eos);
        if (eos) srcEnded = true;
        return undefined;
      }
      if (limitCrossed) {
        // BUFFERED_PARTIAL past the limit: held back until the partial body's answer, then passed through unprocessed.
        if (partialSent && !headersHeld) {
          if (b.length > 0) d.emitData(b);
        } else overflow.push(b);
        if (eos) srcEnded = true;
        return undefined;
      }
      held.push({ b, eos });
      heldLen += b.length;
      if (d.bodyMode === 'BUFFERED_PARTIAL' && !eos && heldLen > env.opts.bufferLimitBytes) limitCrossed = true;
      if (d.bodyMode === 'BUFFERED' && heldLen > env.opts.bufferLimitBytes) {
        // §2.5: over the buffer limit ⇒ 413 (request) / 500 (response); the body is never sent.
        void this.closeStream('error');
        return d.committed() ? { kind: 'reset', details: d.overflow.details } : { kind: 'local', ...d.overflow };
      }
      if (eos) srcEnded = true;
      return undefined;
    };

    const onSource = (e: Ev & { k: 'data' | 'end' }): Outcome | undefined => {
      if (ended) return undefined;
      if (e.k === 'data') return onData(e.b, e.eos);
      srcTrailers = e.trailers && e.trailers.size > 0 ? e.trailers : undefined;
      // The codec saw the end separately from the last data (chunked encoding): Envoy's filter gets
      // an empty data callback with end_stream, which STREAMED / FULL_DUPLEX forward as an empty
      // body message with end_of_stream=true.
      if (!sawEos && !srcTrailers) {
        const o = onData(Buffer.alloc(0), true);
        if (o) return o;
      }
      srcEnded = true;
      return undefined;
    };

    for (const e of pre) this.ev.push(e);
    for (;;) {
      const o = pump();
      if (o) return o;
      if (ended) return { kind: 'ok' };
      const e = await this.ev.next(deadline);
      let r: Outcome | undefined;
      switch (e.k) {
        case 'msg':
          if (!active()) {
            // After an OK close or a spurious message Envoy ignores the stream.
            this.trace.push(`<${e.m.response ?? '(none)'} (ignored)`);
            break;
          }
          r = onMessage(e.m);
          break;
        case 'grpc-end':
          if (!active()) break;
          if (e.st.code === GrpcCode.OK) {
            // §3.4: OK close ⇒ processing stops, the request continues unprocessed.
            this.processingComplete = true;
            void this.closeStream('end');
            break;
          }
          r = error(`ext_proc_error_gRPC_error_${e.st.code}${e.st.message ? `{${e.st.message.replace(/\s/g, '_')}}` : ''}`);
          break;
        case 'grpc-bad':
          if (active()) r = error('ext_proc_error_gRPC_error_13{failed_to_parse_response}');
          break;
        case 'timeout':
          // §2.6: message timeout ⇒ 504 (status_on_error does not apply).
          r = error('ext_proc_error_per-message_timeout_exceeded', 504);
          break;
        case 'data':
        case 'end':
          r = onSource(e);
          break;
        case 'abort':
          return { kind: 'aborted' };
        case 'harness-timeout':
          throw new HarnessTimeout(`exchange did not finish within ${env.opts.exchangeTimeoutMs} ms (trace: ${this.trace.join(' ')})`);
        case 'src-error':
          return e.beforeHead ? upstreamFailure(e) : { kind: 'reset', details: 'upstream_reset_after_response_started{connection_termination}' };
        case 'route-timeout':
          return d.committed()
            ? { kind: 'reset', details: 'upstream_response_timeout' }
            : { kind: 'local', status: 504, details: 'upstream_response_timeout', body: Buffer.from('upstream request timeout') };
        case 'head':
          break; // not expected here
      }
      if (r) return r;
    }
  }

  // -- request path --------------------------------------------------------------------------------

  /** @internal Runs the request path: HCM header handling, ext_proc request direction, routing. */
  async runRequestPath(): Promise<void> {
    const env = this.env;
    const req = this.req;
    this.harnessTimer = setTimeout(() => this.ev.push({ k: 'harness-timeout' }), env.opts.exchangeTimeoutMs).unref();
    // HCM: HTTP/1.1 client → Envoy header map (§1.4, §9.2).
    const h: HeaderList = new Map();
    h.set(':authority', [req.authority ?? 'llm.local']);
    h.set(':path', [req.path]);
    h.set(':method', [req.method.toUpperCase()]);
    h.set(':scheme', ['http']);
    const client = fromHeaderInput(req.headers);
    const hostHdr = client.get('host');
    if (hostHdr && req.authority === undefined) h.set(':authority', [hostHdr[0]!]);
    client.delete('host');
    for (const [k, v] of client) h.set(k, v);
    const chunks = (req.chunks ?? (req.body !== undefined ? [req.body] : [])).map(toBuf).filter((b) => b.length > 0);
    const bodyLen = chunks.reduce((n, b) => n + b.length, 0);
    const trailers = req.trailers ? fromHeaderInput(req.trailers) : undefined;
    const hasBodyInput = req.chunks !== undefined || req.body !== undefined;
    if (hasBodyInput && !trailers && !h.has('content-length')) h.set('content-length', [String(bodyLen)]);
    if (!h.has('x-forwarded-proto')) h.set('x-forwarded-proto', ['http']);
    if (!h.has('x-request-id')) h.set('x-request-id', [randomUUID()]); // HCM generates one
    this.heldReqHeaders = h;

    const endOnHeaders = bodyLen === 0 && !trailers;
    const pre: Ev[] = [];
    for (const [i, b] of chunks.entries()) pre.push({ k: 'data', b, eos: i === chunks.length - 1 && !trailers });
    if (!endOnHeaders) pre.push(trailers ? { k: 'end', trailers } : { k: 'end' });

    const mode = env.mode;
    let outcome: Outcome;
    try {
      outcome = await this.runDirection(
        {
          dir: 'request',
          headers: h,
          endOnHeaders,
          sendHeaders: mode.requestHeaderMode === 'SEND',
          bodyMode: mode.requestBodyMode,
          sendTrailers: mode.requestTrailerMode === 'SEND',
          releaseHeaders: () => {},
          emitData: (b) => this.reqBodyOut.push(b),
          emitEnd: (t) => (this.reqTrailersOut = t),
          overflow: { status: 413, details: 'request_payload_too_large', body: Buffer.from('Payload Too Large') },
          committed: () => false,
        },
        pre,
      );
    } catch (err) {
      await this.teardown('error');
      throw err;
    }
    this.requestHeaders = toHeaderRecord(h);
    this.requestBody = Buffer.concat(this.reqBodyOut);
    this.requestTrailers = this.reqTrailersOut ? toHeaderRecord(this.reqTrailersOut) : undefined;
    if (outcome.kind === 'aborted') return;
    if (outcome.kind !== 'ok') {
      this.localReply = await this.makeLocalReply(outcome);
      return;
    }
    // Router + ORIGINAL_DST (§5.a): FIRST value of the header, exactly one ip:port.
    const dst = parseOriginalDst(h.get(env.opts.destinationHeader)?.[0]);
    if (!dst) {
      this.localReply = await this.makeLocalReply({ kind: 'local', status: 503, details: 'no_healthy_upstream', body: Buffer.from('no healthy upstream') });
      return;
    }
    this.upstream = dst.hostPort;
  }

  private async makeLocalReply(o: Outcome & { kind: 'local' | 'reset' }, extra?: Partial<EnvoyResponse>): Promise<EnvoyResponse> {
    // Local replies are not sent to the processor (≥1.34); the stream is closed (§4.1).
    const grpcStatus = await this.teardown(o.kind === 'local' && o.immediate ? 'end' : 'error');
    if (o.kind === 'reset') {
      return { ...this.baseResult(), status: 0, headers: {}, body: Buffer.alloc(0), localReply: false, reset: true, details: o.details, grpcStatus, ...extra };
    }
    const body = o.body ?? Buffer.alloc(0);
    const headers: HeaderList = new Map();
    headers.set(':status', [String(o.status)]);
    headers.set('content-length', [String(body.length)]);
    if (body.length > 0) headers.set('content-type', ['text/plain']);
    if (o.headers) for (const [k, v] of o.headers) headers.set(k, v);
    headers.set('date', [new Date().toUTCString()]);
    headers.set('server', ['envoy']);
    headers.delete(':status');
    return { ...this.baseResult(), status: o.status, headers: toHeaderRecord(headers), body, localReply: true, details: o.details, grpcStatus, ...extra };
  }

  private baseResult(): Pick<EnvoyResponse, 'trace' | 'dynamicMetadata' | 'upstream' | 'requestHeadersSentUpstream' | 'requestBodySentUpstream'> {
    const r: Pick<EnvoyResponse, 'trace' | 'dynamicMetadata' | 'upstream' | 'requestHeadersSentUpstream' | 'requestBodySentUpstream'> = {
      trace: this.trace,
      dynamicMetadata: this.dynamicMetadata,
    };
    if (this.upstream) r.upstream = this.upstream;
    if (this.sentUpstreamHeaders) r.requestHeadersSentUpstream = this.sentUpstreamHeaders;
    if (this.sentUpstreamBody) r.requestBodySentUpstream = this.sentUpstreamBody;
    return r;
  }

  private sentUpstreamHeaders: HeaderRecord | undefined;
  private sentUpstreamBody: Buffer | undefined;

  private async teardown(how: 'end' | 'error'): Promise<GrpcCallStatus | undefined> {
    if (this.harnessTimer) clearTimeout(this.harnessTimer);
    this.harnessTimer = undefined;
    this.done = true;
    if (this.upstreamReq && !this.upstreamReq.destroyed) this.upstreamReq.destroy();
    return this.closeStream(how);
  }

  private assertUsable(): void {
    if (this.localReply)
      throw new Error(`request path ended in a local reply (${this.localReply.status} ${this.localReply.details ?? ''}); nothing to forward`);
    if (this.done) throw new Error('exchange already finished');
  }

  // -- response path -------------------------------------------------------------------------------

  /** Forwards the request to the ORIGINAL_DST upstream over HTTP/1.1, then runs the response path. */
  async forward(): Promise<EnvoyResponse> {
    this.assertUsable();
    const env = this.env;
    const dst = parseOriginalDst(this.upstream)!;
    const h = this.heldReqHeaders;
    const headers: http.OutgoingHttpHeaders = { host: h.get(':authority')?.[0] ?? dst.hostPort };
    for (const [k, v] of h) if (!k.startsWith(':') && k !== 'host') headers[k] = v.length === 1 ? v[0] : v;
    const body = this.requestBody;
    this.sentUpstreamHeaders = toHeaderRecord(h);
    this.sentUpstreamBody = body;
    if (env.opts.loopbackOnly && !isLoopback(dst.host)) {
      return this.finishWith({ kind: 'local', status: 503, details: 'double_refused_non_loopback_destination', body: Buffer.from('no healthy upstream') });
    }
    const method = h.get(':method')![0]!;
    const ureq = http.request({
      host: dst.host,
      port: dst.port,
      method,
      path: h.get(':path')![0]!,
      headers,
      agent: env.agent,
      setHost: false,
    });
    this.upstreamReq = ureq;
    let gotHead = false;
    ureq.on('error', (err: NodeJS.ErrnoException) => {
      if (this.done) return;
      this.ev.push({ k: 'src-error', err, beforeHead: !gotHead, connectRefused: err.code === 'ECONNREFUSED' });
    });
    ureq.on('response', (res) => {
      gotHead = true;
      const rh: HeaderList = new Map();
      rh.set(':status', [String(res.statusCode ?? 502)]);
      const raw = res.rawHeaders;
      for (let i = 0; i < raw.length; i += 2) {
        const k = raw[i]!.toLowerCase();
        // HTTP/1 connection-specific headers are not part of Envoy's header map.
        if (k === 'connection' || k === 'keep-alive' || k === 'transfer-encoding') continue;
        const cur = rh.get(k);
        if (cur) cur.push(raw[i + 1]!);
        else rh.set(k, [raw[i + 1]!]);
      }
      const cl = res.headers['content-length'];
      const status = res.statusCode ?? 502;
      const endOnHeaders = cl === '0' || status === 204 || status === 304 || method === 'HEAD';
      this.ev.push({ k: 'head', head: { status, headers: rh, endOnHeaders } });
      let left = cl !== undefined ? Number(cl) : -1;
      res.on('data', (b: Buffer) => {
        if (left >= 0) left -= b.length;
        this.ev.push({ k: 'data', b, eos: left === 0 });
      });
      res.on('end', () => {
        const t = fromHeaderInput(res.trailers as Record<string, string>);
        this.ev.push(t.size > 0 ? { k: 'end', trailers: t } : { k: 'end' });
      });
      res.on('error', (err) => this.ev.push({ k: 'src-error', err, beforeHead: false, connectRefused: false }));
      res.on('aborted', () => this.ev.push({ k: 'src-error', err: new Error('upstream aborted'), beforeHead: false, connectRefused: false }));
    });
    if (this.reqTrailersOut) {
      ureq.removeHeader('content-length');
      if (body.length > 0) ureq.write(body);
      ureq.addTrailers(Object.fromEntries([...this.reqTrailersOut].map(([k, v]) => [k, v.join(', ')])));
      ureq.end();
    } else if (body.length > 0 && !h.has('content-length')) {
      // Remove-content-length modes: the HTTP/1 upstream gets chunked encoding (§7.11). (Node
      // would compute a content-length for end(body).)
      ureq.write(body);
      ureq.end();
    } else {
      ureq.end(body.length > 0 ? body : undefined);
    }
    return this.runResponsePath();
  }

  /** Runs the response path against a synthetic upstream response instead of a real backend. */
  async respond(r: SyntheticResponse): Promise<EnvoyResponse> {
    this.assertUsable();
    this.sentUpstreamHeaders = this.requestHeaders;
    this.sentUpstreamBody = this.requestBody;
    const rh: HeaderList = new Map([[':status', [String(r.status)]]]);
    fromHeaderInput(r.headers, rh);
    const chunks = (r.chunks ?? (r.body !== undefined ? [r.body] : [])).map(toBuf).filter((b) => b.length > 0);
    const trailers = r.trailers ? fromHeaderInput(r.trailers) : undefined;
    const total = chunks.reduce((n, b) => n + b.length, 0);
    if (!trailers && r.chunks === undefined && !rh.has('content-length')) rh.set('content-length', [String(total)]);
    const endOnHeaders = total === 0 && !trailers;
    this.ev.push({ k: 'head', head: { status: r.status, headers: rh, endOnHeaders } });
    const iv = r.chunkIntervalMs ?? 0;
    if (!endOnHeaders) {
      void (async () => {
        for (let i = 0; i < chunks.length; i++) {
          if (iv > 0) await delay(iv);
          if (this.done) return;
          this.ev.push({ k: 'data', b: chunks[i]!, eos: i === chunks.length - 1 && !trailers && r.chunks === undefined });
        }
        if (iv > 0) await delay(iv);
        this.ev.push(trailers ? { k: 'end', trailers } : { k: 'end' });
      })();
    }
    return this.runResponsePath();
  }

  private async runResponsePath(): Promise<EnvoyResponse> {
    const env = this.env;
    let routeTimer: NodeJS.Timeout | undefined;
    if (env.opts.routeTimeoutMs > 0) routeTimer = setTimeout(() => this.ev.push({ k: 'route-timeout' }), env.opts.routeTimeoutMs);
    try {
      // Wait for the upstream response head; anything from the processor meanwhile is handled by
      // the filter (a message is spurious, an error ends the exchange).
      let head: SourceHead | undefined;
      for (;;) {
        const e = await this.ev.next(undefined);
        if (e.k === 'head') {
          head = e.head;
          break;
        }
        const o = this.idleEvent(e);
        if (o) return this.finishWith(o);
      }
      const mode = env.mode;
      const down = { headers: head.headers, committed: false, chunks: [] as Buffer[], trailers: undefined as HeaderList | undefined };
      const outcome = await this.runDirection(
        {
          dir: 'response',
          headers: head.headers,
          endOnHeaders: head.endOnHeaders,
          sendHeaders: mode.responseHeaderMode === 'SEND',
          bodyMode: mode.responseBodyMode,
          sendTrailers: mode.responseTrailerMode === 'SEND',
          releaseHeaders: () => (down.committed = true),
          emitData: (b) => {
            down.chunks.push(b);
            this.req.onResponseChunk?.(b);
          },
          emitEnd: (t) => (down.trailers = t),
          overflow: { status: 500, details: 'response_payload_too_large' },
          committed: () => down.committed,
        },
        [],
      );
      if (outcome.kind === 'aborted') {
        await this.teardown('end');
        return {
          ...this.baseResult(),
          status: 0,
          headers: {},
          body: Buffer.concat(down.chunks),
          localReply: false,
          reset: true,
          details: 'downstream_remote_disconnect',
        };
      }
      const status = Number(down.headers.get(':status')?.[0] ?? head.status);
      down.headers.delete(':status');
      // HCM adds these after the filter chain (so the processor never sees them).
      if (!down.headers.has('date')) down.headers.set('date', [new Date().toUTCString()]);
      down.headers.set('server', ['envoy']);
      if (outcome.kind === 'reset') {
        // Response headers already went downstream: Envoy can only reset the stream.
        const grpcStatus = await this.teardown('error');
        return {
          ...this.baseResult(),
          status,
          headers: toHeaderRecord(down.headers),
          body: Buffer.concat(down.chunks),
          localReply: false,
          reset: true,
          details: outcome.details,
          grpcStatus,
        };
      }
      if (outcome.kind !== 'ok') return this.finishWith(outcome);
      const grpcStatus = await this.teardown('end');
      const res: EnvoyResponse = {
        ...this.baseResult(),
        status,
        headers: toHeaderRecord(down.headers),
        body: Buffer.concat(down.chunks),
        localReply: false,
        details: 'via_upstream',
        grpcStatus,
      };
      if (down.trailers) res.trailers = toHeaderRecord(down.trailers);
      return res;
    } catch (err) {
      await this.teardown('error');
      throw err;
    } finally {
      if (routeTimer) clearTimeout(routeTimer);
    }
  }

  /** An event between the request and the response direction. */
  private idleEvent(e: Ev): Outcome | undefined {
    switch (e.k) {
      case 'msg':
        this.trace.push(`<${e.m.response ?? '(none)'}${this.processingComplete ? ' (ignored)' : ''}`);
        if (this.processingComplete) return undefined;
        return { kind: 'local', status: this.env.opts.statusOnError, details: 'spurious_message' };
      case 'grpc-end':
        if (this.processingComplete) return undefined;
        if (e.st.code === GrpcCode.OK) {
          this.processingComplete = true;
          void this.closeStream('end');
          return undefined;
        }
        return { kind: 'local', status: this.env.opts.statusOnError, details: `ext_proc_error_gRPC_error_${e.st.code}` };
      case 'grpc-bad':
        return this.processingComplete ? undefined : { kind: 'local', status: this.env.opts.statusOnError, details: 'ext_proc_error_gRPC_error_13' };
      case 'src-error':
        return upstreamFailure(e);
      case 'route-timeout':
        return { kind: 'local', status: 504, details: 'upstream_response_timeout', body: Buffer.from('upstream request timeout') };
      case 'abort':
        return { kind: 'aborted' };
      case 'harness-timeout':
        throw new HarnessTimeout(`exchange did not finish within ${this.env.opts.exchangeTimeoutMs} ms (trace: ${this.trace.join(' ')})`);
      default:
        return undefined;
    }
  }

  private async finishWith(o: Outcome, extra?: Partial<EnvoyResponse>): Promise<EnvoyResponse> {
    if (o.kind === 'ok') throw new Error('finishWith(ok)');
    if (o.kind === 'aborted') {
      await this.teardown('end');
      return { ...this.baseResult(), status: 0, headers: {}, body: Buffer.alloc(0), localReply: false, reset: true, details: 'downstream_remote_disconnect' };
    }
    return this.makeLocalReply(o, extra);
  }

  /**
   * The downstream client goes away (mid-request or mid-response). Envoy's onDestroy closes the
   * ext_proc stream the usual way (END_STREAM + RST_STREAM), no response path (§4.1).
   */
  async abort(): Promise<GrpcCallStatus | undefined> {
    if (this.aborted) return this.closeP;
    this.aborted = true;
    this.ev.push({ k: 'abort' });
    if (this.upstreamReq && !this.upstreamReq.destroyed) this.upstreamReq.destroy();
    return this.teardown('end');
  }

  /** Ends the exchange without a response path; closes the stream per closeMode. */
  async finish(): Promise<GrpcCallStatus | undefined> {
    return this.teardown('end');
  }
}

function upstreamFailure(e: Ev & { k: 'src-error' }): Outcome {
  if (e.connectRefused) {
    return {
      kind: 'local',
      status: 503,
      details: 'upstream_reset_before_response_started{remote_connection_failure,delayed_connect_error:_Connection_refused}',
      body: Buffer.from(
        'upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused',
      ),
    };
  }
  return {
    kind: 'local',
    status: 503,
    details: 'upstream_reset_before_response_started{connection_termination}',
    body: Buffer.from('upstream connect error or disconnect/reset before headers. reset reason: connection termination'),
  };
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The stream's status, bounded: the RST we sent ends it locally within a tick or two. */
function boundedStatus(s: GrpcH2Stream): Promise<GrpcCallStatus | undefined> {
  return Promise.race([s.status, delay(2000).then(() => undefined)]);
}

// ---------------------------------------------------------------------------------------------

type ResolvedOptions = Required<Omit<EnvoyDoubleOptions, 'processingMode' | 'extProcTls'>> & Pick<EnvoyDoubleOptions, 'extProcTls'>;

/** The Envoy double. See the module comment. */
export class EnvoyDouble {
  readonly opts: ResolvedOptions;
  readonly mode: Required<ProcessingModeOptions>;
  readonly receiving: Set<string>;
  /** @internal upstream connection pool (HTTP/1.1 keep-alive, like Envoy's). */
  readonly agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  private conns: (GrpcH2Connection | undefined)[];
  private readonly connecting: (Promise<GrpcH2Connection | undefined> | undefined)[] = [];
  private readonly retired: GrpcH2Connection[] = [];
  private rr = 0;
  private closing = false;

  constructor(options: EnvoyDoubleOptions) {
    const mode = { ...DEFAULTS, ...stripUndefined(options.processingMode ?? {}) };
    // Config validation (§2.3, [S11]): FULL_DUPLEX_STREAMED requires trailer mode SEND.
    if (mode.requestBodyMode === 'FULL_DUPLEX_STREAMED' && mode.requestTrailerMode !== 'SEND') {
      throw new Error('If the ext_proc filter has the request_body_mode set to FULL_DUPLEX_STREAMED, then the request_trailer_mode has to be set to SEND');
    }
    if (mode.responseBodyMode === 'FULL_DUPLEX_STREAMED' && mode.responseTrailerMode !== 'SEND') {
      throw new Error('If the ext_proc filter has the response_body_mode set to FULL_DUPLEX_STREAMED, then the response_trailer_mode has to be set to SEND');
    }
    this.mode = mode;
    this.opts = {
      extProcTarget: options.extProcTarget,
      messageTimeoutMs: options.messageTimeoutMs ?? 200,
      maxMessageTimeoutMs: options.maxMessageTimeoutMs ?? 0,
      bufferLimitBytes: options.bufferLimitBytes ?? 1024 * 1024,
      closeMode: options.closeMode ?? 'reset',
      destinationHeader: (options.destinationHeader ?? 'x-gateway-destination-endpoint').toLowerCase(),
      receivingNamespaces: options.receivingNamespaces ?? ['envoy.lb'],
      connections: Math.max(1, options.connections ?? 1),
      sendProtocolConfig: options.sendProtocolConfig ?? true,
      statusOnError: options.statusOnError ?? 500,
      routeTimeoutMs: options.routeTimeoutMs ?? 15000,
      exchangeTimeoutMs: options.exchangeTimeoutMs ?? 30000,
      grpcAuthority: options.grpcAuthority ?? 'ext_proc',
      extProcTls: options.extProcTls,
      loopbackOnly: options.loopbackOnly ?? true,
      headerValueField: options.headerValueField ?? 'raw_value',
    };
    this.receiving = new Set(this.opts.receivingNamespaces);
    this.conns = new Array(this.opts.connections).fill(undefined);
  }

  /** Opens the HTTP/2 connections (otherwise done by the first `open()`/`request()`). */
  async connect(): Promise<void> {
    for (let i = 0; i < this.conns.length; i++) await this.ensureConn(i);
  }

  private ensureConn(i: number): Promise<GrpcH2Connection | undefined> {
    const c = this.conns[i];
    if (c && !c.isGone) return Promise.resolve(c);
    // One connect per slot at a time: concurrent requests share it.
    let p = this.connecting[i];
    if (!p) {
      if (c) this.retired.push(c); // GOAWAY / failure: Envoy opens a new connection
      this.conns[i] = undefined;
      p = GrpcH2Connection.connect(this.opts.extProcTarget, { authority: this.opts.grpcAuthority, tls: this.opts.extProcTls })
        .then(
          (n) => {
            this.conns[i] = n;
            return n;
          },
          () => undefined,
        )
        .finally(() => {
          this.connecting[i] = undefined;
        });
      this.connecting[i] = p;
    }
    return p;
  }

  /** @internal Next connection round-robin (already connected by `open()`). */
  pickConnection(): GrpcH2Connection | undefined {
    const n = this.conns.length;
    for (let k = 0; k < n; k++) {
      const c = this.conns[(this.rr + k) % n];
      if (c && !c.isGone) {
        this.rr = (this.rr + k + 1) % n;
        return c;
      }
    }
    return undefined;
  }

  private needsProcessor(): boolean {
    const m = this.mode;
    return (
      m.requestHeaderMode === 'SEND' ||
      m.responseHeaderMode === 'SEND' ||
      m.requestBodyMode !== 'NONE' ||
      m.responseBodyMode !== 'NONE' ||
      m.requestTrailerMode === 'SEND' ||
      m.responseTrailerMode === 'SEND'
    );
  }

  /** Runs the request path of one exchange and returns it for step-wise control. */
  async open(req: DownstreamRequest): Promise<Exchange> {
    if (this.closing) throw new Error('EnvoyDouble closed');
    if (this.needsProcessor()) {
      const i = this.rr % this.conns.length;
      const c = this.conns[i];
      if (!c || c.isGone) await this.ensureConn(i);
    }
    const ex = new Exchange(this, req);
    await ex.runRequestPath();
    return ex;
  }

  /** One whole HTTP exchange as Envoy would run it. */
  async request(req: DownstreamRequest): Promise<EnvoyResponse> {
    const ex = await this.open(req);
    if (ex.localReply) return ex.localReply;
    return ex.forward();
  }

  /** A raw ext_proc stream on one of the double's connections, for protocol tests. */
  async openRawStream(): Promise<GrpcH2Stream> {
    const c = await this.ensureConn(this.rr++ % this.conns.length);
    if (!c) throw new Error(`cannot connect to ${this.opts.extProcTarget}`);
    return c.openStream(EXT_PROC_METHOD_PATH);
  }

  /** All connections used so far (current and replaced after GOAWAY/failure). */
  get connectionsUsed(): GrpcH2Connection[] {
    return [...this.retired, ...this.conns.filter((c): c is GrpcH2Connection => c !== undefined)];
  }

  /** Connection counters summed over all connections used. */
  stats(): GrpcH2ConnectionStats & { connections: number } {
    const out: GrpcH2ConnectionStats & { connections: number } = { ...zeroConnectionStats(), connections: 0 };
    for (const c of this.connectionsUsed) {
      const s = c.stats;
      out.connections++;
      out.goawayCount += s.goawayCount;
      out.goawayCodes.push(...s.goawayCodes);
      out.errors.push(...s.errors);
      out.streamsOpened += s.streamsOpened;
      out.streamsWithStatus += s.streamsWithStatus;
      out.streamsLost += s.streamsLost;
      out.streamsResetLocally += s.streamsResetLocally;
    }
    return out;
  }

  async close(): Promise<void> {
    this.closing = true;
    this.agent.destroy();
    await Promise.all(this.connectionsUsed.map((c) => c.close(1000)));
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
