import type { RequestHeaders } from './headers.js';

/** Envoy's BodySendMode names (processing_mode.proto). */
export type BodySendMode = 'NONE' | 'STREAMED' | 'BUFFERED' | 'BUFFERED_PARTIAL' | 'FULL_DUPLEX_STREAMED' | 'GRPC';

/** The HTTP request's head, as the ext_proc layer knows it before any body. */
export interface HttpRequestHead {
  headers: RequestHeaders;
  requestId: string;
  /** The Envoy route the request matched (request attribute `xds.route_name`), when Envoy sends it. */
  routeName?: string | undefined;
}

/** The HTTP request as the ext_proc layer hands it to the router. */
export interface HttpRequestView extends HttpRequestHead {
  /** The body; undefined when routing happens before or without it. */
  body: Buffer | undefined;
  /**
   * True when the body may be only the first part of a larger one (BUFFERED_PARTIAL mode, sent
   * without end_of_stream: Envoy's buffer filled, or trailers follow).
   */
  bodyPartial: boolean;
  /** Aborts when the stream ends (Envoy reset, client gone), so a router still deciding can stop. */
  readonly signal: AbortSignal;
  /** Envoy will show llm-extproc the response body (response_body_mode other than NONE). */
  readonly responseBodyVisible?: boolean;
}

/**
 * How a routed request ended, as far as the ext_proc stream can tell.
 * - `response`: Envoy sent the upstream's response headers (needs response_header_mode SEND).
 * - `no_response`: the whole request went upstream, then the stream ended without response
 *   headers: an upstream reset or connect failure (Envoy >= 1.34 keeps its own local replies from
 *   ext_proc), or a client that gave up while the backend was still silent.
 * - `abandoned`: the stream ended before the request was complete (the client went away while
 *   sending its body), or llm-extproc itself failed the stream: nothing to hold against the backend.
 */
export type RequestOutcome = { kind: 'response'; status: number } | { kind: 'no_response' } | { kind: 'abandoned' };

/** The destination of a routed request, held until its ext_proc stream ends. */
export interface Destination {
  /** `ip:port` and its bytes for the header's value. */
  readonly address: string;
  readonly addressBytes: Buffer;
  /** Ends the request's claim on the endpoint, saying how it ended; only the first call counts. */
  release(outcome: RequestOutcome): void;
}

/** A response llm-extproc gives itself instead of routing (errors, `GET /v1/models`). */
export interface LocalReply {
  status: number;
  body: string;
  contentType: string;
  /** More response headers, e.g. `allow` on a 405. */
  headers?: readonly (readonly [string, string])[];
  /** Why, for logs and Envoy's %RESPONSE_CODE_DETAILS%. */
  reason: string;
}

/** Header lookup by lower-case name (RequestHeaders serves response headers too). */
export interface HeaderLookup {
  get(name: string): string | undefined;
}

/**
 * Reads a routed request's response as Envoy shows it (body only with a response_body_mode other
 * than NONE); it never changes what the stream answers.
 */
export interface ResponseObserver {
  headers(status: number, headers: HeaderLookup): void;
  body(chunk: Buffer, endOfStream: boolean): void;
  /** The response is over: `complete` after its trailers, false when the ext_proc stream ended (a later call is ignored). */
  end(complete: boolean): void;
}

export type RouteDecision =
  /** `response`: given only when the request's view says the response body is visible. */
  { kind: 'route'; destination: Destination; response?: ResponseObserver } | { kind: 'reply'; reply: LocalReply };

/**
 * What the protocol layer asks of the application: one decision per HTTP request (after an optional
 * screening of its head), and the words of the two answers the stream finds on its own (it counts body bytes; it catches a failing router).
 */
export interface RequestRouter {
  decide(request: HttpRequestView): RouteDecision | Promise<RouteDecision>;
  /**
   * Checks of the head alone (header sizes, query, selectors in headers), made when the request
   * headers arrive, before any body is waited for: the answer refusing the request, or undefined.
   */
  screen?(request: HttpRequestHead): LocalReply | undefined;
  /** The answer to a body over `limitBytes`. */
  bodyTooLarge(request: HttpRequestHead, limitBytes: number): LocalReply;
  /** The answer when `decide` threw or rejected. */
  failed(request: HttpRequestHead, err: unknown): LocalReply;
}
