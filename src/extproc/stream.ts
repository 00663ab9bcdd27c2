import { randomUUID } from 'node:crypto';
import type { ServerDuplexStream } from '@grpc/grpc-js';
import { status as GrpcStatus } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { HeaderValue__Output } from '../generated/envoy/config/core/v3/HeaderValue.js';
import type { ProcessingRequest__Output } from '../generated/envoy/service/ext_proc/v3/ProcessingRequest.js';
import { REQUEST_ID_HEADER } from '../wire-names.js';
import { envoyRouteName } from './attributes.js';
import type { OutgoingResponse } from './encoded.js';
import { type HeaderValueField, RequestHeaders, responseStatus } from './headers.js';
import {
  CONTINUE_REQUEST_BODY,
  CONTINUE_REQUEST_HEADERS,
  CONTINUE_REQUEST_TRAILERS,
  CONTINUE_RESPONSE_BODY,
  CONTINUE_RESPONSE_HEADERS,
  CONTINUE_RESPONSE_TRAILERS,
  type DestinationAnswers,
  immediateResponse,
  streamedBodyResponses,
} from './responses.js';
import type {
  BodySendMode,
  Destination,
  HttpRequestHead,
  HttpRequestView,
  LocalReply,
  RequestOutcome,
  RequestRouter,
  ResponseObserver,
  RouteDecision,
} from './types.js';

export type ExtProcCall = ServerDuplexStream<ProcessingRequest__Output, OutgoingResponse>;

export interface StreamSettings {
  /** Body modes assumed when Envoy sends no protocol_config (Envoy before 1.34). */
  defaultRequestBodyMode: BodySendMode;
  defaultResponseBodyMode: BodySendMode;
  maxBodyBytes: number;
}

/** What a stream reports about itself when it ends or decides (metrics, logs). */
export interface StreamObserver {
  /** A decision was sent; `startedAt` is when the request headers arrived (performance.now()). */
  decided(startedAt: number): void;
  protocolError(reason: string): void;
}

type Phase =
  /** Nothing yet, or only metadata. */
  | 'awaiting_request_headers'
  /** Headers seen; the body decides (BUFFERED or FULL_DUPLEX_STREAMED). */
  | 'awaiting_request_body'
  /** A decision is being made (the router answered with a promise). */
  | 'deciding'
  /** Routed: the request goes upstream; response messages may follow. */
  | 'routed'
  /** We answered with an immediate response; Envoy sends nothing more that needs an answer. */
  | 'replied'
  | 'closed';

/**
 * One ext_proc stream = one HTTP request. Knows Envoy's message order per body mode and nothing
 * about LLMs: the RequestRouter decides (and words every answer), this class turns the decision
 * into Envoy's messages and holds the destination until the stream ends, however it ends.
 */
export class ExtProcStream {
  private phase: Phase = 'awaiting_request_headers';
  private requestBodyMode: BodySendMode;
  private responseBodyMode: BodySendMode;
  private observabilityOnly = false;
  /**
   * The request headers, kept only until the decision: grpc-js call objects (and so this stream)
   * often outlive a scavenge, and the decoded header list is most of what a stream holds.
   */
  private headers: RequestHeaders | undefined;
  private headerValueField: HeaderValueField = 'raw_value';
  private requestId = '';
  /** Envoy's matched route (attribute `xds.route_name` on request_headers), if configured and named. */
  private routeName: string | undefined;
  private startedAt = 0;
  private bodyChunks: Buffer[] = [];
  private bodyBytes = 0;
  /** Messages that arrived while an asynchronous decision was pending, handled after it. */
  private backlog: ProcessingRequest__Output[] = [];
  private destination: Destination | undefined;
  /** Reads the response (token usage); set only when the router asked, i.e. the body is visible. */
  private response: ResponseObserver | undefined;
  /** STREAMED: routed on the headers while body chunks still come; a stream ending now was the client's doing. */
  private requestBodyOpen = false;
  /** The upstream's `:status`, once Envoy sends the response headers. */
  private upstreamStatus: number | undefined;
  /** The view of a decision still pending: its signal aborts if the stream ends first. */
  private pendingView: StreamRequestView | undefined;

  constructor(
    private readonly call: ExtProcCall,
    private readonly router: RequestRouter,
    private readonly settings: StreamSettings,
    private readonly answers: DestinationAnswers,
    private readonly observer: StreamObserver,
    private readonly log: Logger,
  ) {
    this.requestBodyMode = settings.defaultRequestBodyMode;
    this.responseBodyMode = settings.defaultResponseBodyMode;
    call.on('data', (message: ProcessingRequest__Output) => this.receive(message));
    // Envoy half-closed: with graceful close it waits for our OK status; otherwise a reset follows.
    call.on('end', () => this.close('half-close'));
    call.on('cancelled', () => this.close('cancelled'));
    call.on('error', () => this.close('error'));
    call.on('close', () => this.close('closed'));
  }

  private receive(message: ProcessingRequest__Output): void {
    if (this.phase === 'closed') return;
    if (this.phase === 'deciding') {
      this.backlog.push(message);
      return;
    }
    this.handle(message);
  }

  private handle(message: ProcessingRequest__Output): void {
    if (message.protocol_config) {
      this.requestBodyMode = message.protocol_config.request_body_mode ?? 'NONE';
      this.responseBodyMode = message.protocol_config.response_body_mode ?? 'NONE';
    }
    // Envoy ignores every answer in observability mode, so none is sent.
    if (message.observability_mode) this.observabilityOnly = true;
    if (this.observabilityOnly) return;

    switch (message.request) {
      case 'request_headers':
        this.routeName = envoyRouteName(message);
        this.onRequestHeaders(message.request_headers!.headers?.headers ?? [], !!message.request_headers!.end_of_stream);
        return;
      case 'request_body':
        this.onRequestBody(message.request_body!.body ?? EMPTY, !!message.request_body!.end_of_stream);
        return;
      case 'request_trailers':
        this.onRequestTrailers();
        return;
      case 'response_headers':
        if (!this.expectRouted('response_headers')) return;
        this.onResponseHeaders(message.response_headers!.headers?.headers ?? []);
        return;
      case 'response_body':
        this.onResponseBody(message.response_body!.body ?? EMPTY, !!message.response_body!.end_of_stream);
        return;
      case 'response_trailers':
        if (!this.expectRouted('response_trailers')) return;
        this.response?.end(true);
        this.send(CONTINUE_RESPONSE_TRAILERS);
        return;
      default:
        this.protocolError('a ProcessingRequest without a request field');
        return;
    }
  }

  private onRequestHeaders(list: readonly HeaderValue__Output[], endOfStream: boolean): void {
    if (this.phase !== 'awaiting_request_headers') {
      this.protocolError(`request_headers in phase ${this.phase}`);
      return;
    }
    this.startedAt = performance.now();
    this.headers = new RequestHeaders(list);
    this.headerValueField = this.headers.valueField;
    this.requestId = this.headers.get(REQUEST_ID_HEADER) || randomUUID();
    if (this.screenHead()) return;
    if (endOfStream || this.requestBodyMode === 'NONE' || this.requestBodyMode === 'STREAMED') {
      // No body will come before the headers go upstream: route on the headers alone.
      this.requestBodyOpen = !endOfStream && this.requestBodyMode === 'STREAMED';
      this.decide(undefined, 'request_headers');
      return;
    }
    this.phase = 'awaiting_request_body';
    // FULL_DUPLEX: hold the headers answer until the body is read. BUFFERED: route on the body answer.
    if (this.requestBodyMode !== 'FULL_DUPLEX_STREAMED') this.send(CONTINUE_REQUEST_HEADERS);
  }

  /** The router's checks of the head alone, before any body is waited for; true when it answered. */
  private screenHead(): boolean {
    let refusal: LocalReply | undefined;
    try {
      refusal = this.router.screen?.(this.head());
    } catch (err) {
      this.internalError(err);
      return true;
    }
    if (refusal) this.reply(refusal);
    return refusal !== undefined;
  }

  private onRequestBody(chunk: Buffer, endOfStream: boolean): void {
    // Chunks Envoy sent before it saw our immediate response (FULL_DUPLEX 413) are no error.
    if (this.phase === 'replied') return;
    if (this.phase === 'routed') {
      // STREAMED: one answer per chunk, in order; the route was set on the headers.
      if (this.requestBodyMode === 'STREAMED') {
        if (endOfStream) this.requestBodyOpen = false;
        this.send(CONTINUE_REQUEST_BODY);
        return;
      }
      this.protocolError(`request_body after the route was decided in ${this.requestBodyMode} mode`);
      return;
    }
    if (this.phase !== 'awaiting_request_body') {
      this.protocolError(`request_body in phase ${this.phase}`);
      return;
    }
    this.bodyBytes += chunk.length;
    if (this.bodyBytes > this.settings.maxBodyBytes) {
      this.bodyChunks = [];
      this.reply(this.router.bodyTooLarge(this.head(), this.settings.maxBodyBytes));
      return;
    }
    this.bodyChunks.push(chunk);
    if (this.requestBodyMode === 'FULL_DUPLEX_STREAMED') {
      if (endOfStream) this.decide(this.takeBody(), 'request_headers');
      return;
    }
    // BUFFERED (and BUFFERED_PARTIAL): this one message is all the body Envoy will send before
    // releasing the headers, even when trailers follow (end_of_stream false). In BUFFERED_PARTIAL
    // end_of_stream false may also mean Envoy's buffer filled and this is only the first part.
    this.decide(this.takeBody(), 'request_body', false, this.requestBodyMode === 'BUFFERED_PARTIAL' && !endOfStream);
  }

  private onRequestTrailers(): void {
    if (this.phase === 'replied') return;
    if (this.phase === 'awaiting_request_body' && this.requestBodyMode === 'FULL_DUPLEX_STREAMED') {
      // FULL_DUPLEX with trailers: the body ended without end_of_stream; the trailers end it.
      this.decide(this.takeBody(), 'request_headers', true);
      return;
    }
    if (this.phase === 'routed') {
      this.requestBodyOpen = false;
      this.send(CONTINUE_REQUEST_TRAILERS);
      return;
    }
    this.protocolError(`request_trailers in phase ${this.phase}`);
  }

  private onResponseHeaders(list: readonly HeaderValue__Output[]): void {
    this.upstreamStatus = responseStatus(list) ?? 0;
    this.response?.headers(this.upstreamStatus, new RequestHeaders(list));
    this.send(this.responseHeadersAnswer());
  }

  private onResponseBody(chunk: Buffer, endOfStream: boolean): void {
    if (!this.expectRouted('response_body')) return;
    // Read before the answer goes out, so the count is in when Envoy passes the chunk on.
    this.response?.body(chunk, endOfStream);
    if (this.responseBodyMode === 'FULL_DUPLEX_STREAMED') {
      for (const answer of streamedBodyResponses('response_body', chunk, endOfStream)) this.send(answer);
    } else {
      this.send(CONTINUE_RESPONSE_BODY);
    }
  }

  private responseHeadersAnswer(): OutgoingResponse {
    return this.destination ? this.answers.routedTo(this.destination, this.headerValueField) : CONTINUE_RESPONSE_HEADERS;
  }

  private head(): HttpRequestHead {
    return { headers: this.headers!, requestId: this.requestId, routeName: this.routeName };
  }

  private expectRouted(what: string): boolean {
    if (this.phase === 'routed') return true;
    this.protocolError(`${what} in phase ${this.phase}`);
    return false;
  }

  private takeBody(): Buffer {
    const body = this.bodyChunks.length === 1 ? this.bodyChunks[0]! : Buffer.concat(this.bodyChunks, this.bodyBytes);
    this.bodyChunks = [];
    return body;
  }

  /**
   * Asks the router and answers on `phase`: the request_headers answer (no body, or FULL_DUPLEX)
   * or the request_body answer (BUFFERED). In FULL_DUPLEX the body is echoed after the headers.
   */
  private decide(body: Buffer | undefined, phase: 'request_headers' | 'request_body', trailersFollow = false, bodyPartial = false): void {
    const view = new StreamRequestView(this.headers!, body, bodyPartial, this.requestId, this.routeName, isVisible(this.responseBodyMode));
    let decision: RouteDecision | Promise<RouteDecision>;
    try {
      decision = this.router.decide(view);
    } catch (err) {
      this.internalError(err);
      return;
    }
    if (!(decision instanceof Promise)) {
      this.apply(decision, body, phase, trailersFollow);
      return;
    }
    this.phase = 'deciding';
    this.pendingView = view;
    decision.then(
      (result) => {
        this.pendingView = undefined;
        // The stream may have ended while the router worked: give the claim back at once.
        if ((this.phase as Phase) === 'closed') {
          if (result.kind === 'route') result.destination.release(ABANDONED);
          return;
        }
        this.apply(result, body, phase, trailersFollow);
        this.drainBacklog();
      },
      (err: unknown) => {
        this.pendingView = undefined;
        if ((this.phase as Phase) !== 'closed') this.internalError(err);
      },
    );
  }

  private apply(decision: RouteDecision, body: Buffer | undefined, phase: 'request_headers' | 'request_body', trailersFollow: boolean): void {
    this.observer.decided(this.startedAt);
    this.headers = undefined;
    if (decision.kind === 'reply') {
      this.reply(decision.reply);
      return;
    }
    const { destination } = decision;
    this.destination = destination;
    this.response = decision.response;
    this.phase = 'routed';
    this.send(this.answers.route(phase, destination, this.headerValueField));
    if (this.requestBodyMode === 'FULL_DUPLEX_STREAMED' && body !== undefined) {
      for (const answer of streamedBodyResponses('request_body', body, !trailersFollow)) this.send(answer);
      if (trailersFollow) this.send(CONTINUE_REQUEST_TRAILERS);
    }
  }

  private drainBacklog(): void {
    while (this.backlog.length > 0 && this.phase !== 'deciding' && this.phase !== 'closed') {
      this.handle(this.backlog.shift()!);
    }
  }

  private reply(reply: LocalReply): void {
    this.phase = 'replied';
    this.send(immediateResponse(reply, this.headerValueField));
  }

  private send(response: OutgoingResponse): void {
    if (this.phase === 'closed' || this.call.cancelled || this.call.writableEnded) return;
    this.call.write(response);
  }

  private internalError(err: unknown): void {
    this.reply(this.router.failed(this.head(), err));
  }

  /** Out-of-order or malformed input: end the stream with a gRPC error (Envoy answers 500). */
  private protocolError(reason: string): void {
    if (this.phase === 'closed') return;
    this.log.warn({ requestId: this.requestId || undefined, reason }, 'ext_proc protocol violation; ending the stream');
    this.observer.protocolError(reason);
    this.close('protocol-error');
    this.call.emit('error', { code: GrpcStatus.FAILED_PRECONDITION, details: `llm-extproc: unexpected ${reason}` });
  }

  /** The stream is over: release the destination exactly once and finish our side. */
  private close(how: 'half-close' | 'cancelled' | 'error' | 'closed' | 'protocol-error'): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    this.backlog = [];
    this.bodyChunks = [];
    this.destination?.release(this.outcome(how));
    this.response?.end(false);
    this.pendingView?.abort(`the ext_proc stream ended (${how})`);
    // After Envoy's half-close, answer with OK so a graceful close completes at once. Envoy's
    // default close sends a reset right behind the half-close: wait a turn so that, in that case,
    // no status is sent into a stream that is already gone.
    if (how === 'half-close') setImmediate(() => this.finishCall());
  }

  /** How the routed request ended: only Envoy's own close after a complete request may be the backend's fault. */
  private outcome(how: 'half-close' | 'cancelled' | 'error' | 'closed' | 'protocol-error'): RequestOutcome {
    if (this.upstreamStatus !== undefined) return { kind: 'response', status: this.upstreamStatus };
    // Our own protocol error or a transport error on the ext_proc stream is not the backend's doing.
    // (A bare reset cannot be told from Envoy's half-close + reset: grpc-js reports both as an end.)
    return how === 'protocol-error' || how === 'error' || this.requestBodyOpen ? ABANDONED : NO_RESPONSE;
  }

  private finishCall(): void {
    if (!this.call.cancelled && !this.call.writableEnded) this.call.end();
  }
}

const EMPTY = Buffer.alloc(0);
const ABANDONED: RequestOutcome = { kind: 'abandoned' };
const NO_RESPONSE: RequestOutcome = { kind: 'no_response' };

/** Whether Envoy sends response_body messages in this mode (GRPC is not implemented by Envoy). */
function isVisible(mode: BodySendMode): boolean {
  return mode === 'STREAMED' || mode === 'BUFFERED' || mode === 'BUFFERED_PARTIAL' || mode === 'FULL_DUPLEX_STREAMED';
}

/** The request as a decision sees it; the AbortSignal is created only if the router reads it. */
class StreamRequestView implements HttpRequestView {
  private controller: AbortController | undefined;

  constructor(
    readonly headers: RequestHeaders,
    readonly body: Buffer | undefined,
    readonly bodyPartial: boolean,
    readonly requestId: string,
    readonly routeName: string | undefined,
    readonly responseBodyVisible: boolean,
  ) {}

  get signal(): AbortSignal {
    this.controller ??= new AbortController();
    return this.controller.signal;
  }

  abort(why: string): void {
    this.controller?.abort(new Error(why));
  }
}
