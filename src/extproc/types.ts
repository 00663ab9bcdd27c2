import type { RequestHeaders } from '../request/headers.js';

/** Envoy's BodySendMode names (processing_mode.proto). */
export type BodySendMode = 'NONE' | 'STREAMED' | 'BUFFERED' | 'BUFFERED_PARTIAL' | 'FULL_DUPLEX_STREAMED' | 'GRPC';

/** The HTTP request as the ext_proc layer hands it to the router. */
export interface HttpRequestView {
  headers: RequestHeaders;
  /** The whole body; undefined when routing happens before or without it. */
  body: Buffer | undefined;
  requestId: string;
}

/** The destination of a routed request, held until its ext_proc stream ends. */
export interface Destination {
  /** `ip:port` and its bytes for the header's raw_value. */
  readonly address: string;
  readonly addressBytes: Buffer;
  /** Ends the request's claim on the endpoint; safe to call more than once. */
  release(): void;
}

/** A response llm-extproc gives itself instead of routing (errors, `GET /v1/models`). */
export interface LocalReply {
  status: number;
  body: string;
  contentType: string;
  /** Why, for logs and Envoy's %RESPONSE_CODE_DETAILS%. */
  reason: string;
}

export type RouteDecision = { kind: 'route'; destination: Destination } | { kind: 'reply'; reply: LocalReply };

/** What the protocol layer asks of the LLM layer: one decision per HTTP request. */
export interface RequestRouter {
  decide(request: HttpRequestView): RouteDecision | Promise<RouteDecision>;
}
