/**
 * Envoy's ext_proc filter for one HTTP request, on top of a ProcessingStream: the message order of
 * each body mode (reference notes §2.3), and how Envoy applies the answers (header mutations,
 * clear_route_cache, dynamic metadata, body mutations, immediate responses).
 */

import { httpStatusNumber, structToJs } from '../extproc/proto.js';
import type { BodyMutation__Output } from '../generated/envoy/service/ext_proc/v3/BodyMutation.js';
import type { CommonResponse__Output } from '../generated/envoy/service/ext_proc/v3/CommonResponse.js';
import type { ImmediateResponse__Output } from '../generated/envoy/service/ext_proc/v3/ImmediateResponse.js';
import type { ProcessingResponse__Output } from '../generated/envoy/service/ext_proc/v3/ProcessingResponse.js';
import type { ProcessingStream } from './extproc-client.js';
import { applyHeaderMutation, type HeaderChange, type HeaderList, toHeaderMap } from './headers.js';

export const REQUEST_BODY_MODES = ['BUFFERED', 'FULL_DUPLEX_STREAMED', 'STREAMED'] as const;
export type RequestBodyMode = (typeof REQUEST_BODY_MODES)[number];
export const RESPONSE_BODY_MODES = ['NONE', 'STREAMED', 'BUFFERED', 'FULL_DUPLEX_STREAMED'] as const;
export type ResponseBodyMode = (typeof RESPONSE_BODY_MODES)[number];

/** The filter's processing_mode: request and response headers are always SEND, as in envoy/*.yaml. */
export interface FilterModes {
  request: RequestBodyMode;
  response: ResponseBodyMode;
}

/** Envoy hands a client's body on in pieces of about this size (one HTTP/1 read). */
export const BODY_CHUNK_BYTES = 16 * 1024;

/** One message on the ext_proc stream, as the explanation lists it. */
export interface TraceEvent {
  direction: 'sent' | 'received';
  message: string;
  summary: string;
}

/** A response Envoy sends itself because llm-extproc said so (immediate_response). */
export interface LocalReply {
  status: number;
  headers: HeaderList;
  body: Buffer;
  details: string;
}

/** The request as Envoy's router gets it once ext_proc let it go. */
export interface Continued {
  kind: 'continued';
  /** Request headers after every mutation, pseudo-headers included. */
  headers: HeaderList;
  /** The body that goes upstream (FULL_DUPLEX: what llm-extproc echoed). */
  body: Buffer;
  changes: HeaderChange[];
  clearRouteCache: boolean;
  /** dynamic_metadata by namespace, as JSON. */
  dynamicMetadata: Record<string, unknown>;
}

export type RequestOutcome = Continued | { kind: 'local_reply'; reply: LocalReply };

/** llm-extproc did something Envoy would not accept (Envoy's answer is in the message). */
export class ProtocolViolation extends Error {}

type CommonPhase = 'request_headers' | 'request_body' | 'response_headers' | 'response_body';

export class EnvoyFilter {
  /** Changes Envoy would ignore or reject, seen in the answers. */
  readonly problems: string[] = [];
  private continued: Continued | undefined;

  constructor(
    private readonly stream: ProcessingStream,
    private readonly modes: FilterModes,
    private readonly trace: (event: TraceEvent) => void,
    /** Envoy's message_timeout (envoy/*.yaml: 10 s); also bounds FULL_DUPLEX, where Envoy has no timer. */
    private readonly timeoutMs = 10_000,
  ) {}

  /** The request path: headers, then the body as the mode sends it; ends with the route or a local reply. */
  async request(headers: HeaderList, body: Buffer): Promise<RequestOutcome> {
    const state: Continued = { kind: 'continued', headers: [...headers], body, changes: [], clearRouteCache: false, dynamicMetadata: {} };
    this.continued = state;
    const hasBody = body.length > 0;
    this.send('request_headers', `${headers.length} headers, end_of_stream=${!hasBody}, protocol_config ${this.modes.request}/${this.modes.response}`, {
      request_headers: { headers: toHeaderMap(headers), end_of_stream: !hasBody },
      protocol_config: { request_body_mode: this.modes.request, response_body_mode: this.modes.response },
    });
    if (!hasBody) return outcome(await this.answer('request_headers', true), state);
    switch (this.modes.request) {
      case 'BUFFERED': {
        const early = await this.answer('request_headers', true);
        if (early) return outcome(early, state);
        this.sendBody('request_body', body, true);
        return outcome(await this.answer('request_body', true, (mutation) => (state.body = mutated(body, mutation))), state);
      }
      case 'STREAMED': {
        // Headers are released with this answer: body answers can no longer change the route.
        const early = await this.answer('request_headers', true);
        if (early) return outcome(early, state);
        const parts: Buffer[] = [];
        for (const [chunk, last] of chunks(body)) {
          this.sendBody('request_body', chunk, last);
          const reply = await this.answer('request_body', false, (mutation) => parts.push(mutated(chunk, mutation)));
          if (reply) return outcome(reply, state);
        }
        state.body = Buffer.concat(parts);
        return state;
      }
      case 'FULL_DUPLEX_STREAMED': {
        // Envoy streams the body at once, whatever the headers answer does; nothing goes upstream
        // that llm-extproc does not send back.
        for (const [chunk, last] of chunks(body)) this.sendBody('request_body', chunk, last);
        const early = await this.answer('request_headers', true);
        if (early) return outcome(early, state);
        const echoed = await this.readStreamedBody('request_body');
        if (!Buffer.isBuffer(echoed)) return outcome(echoed, state);
        state.body = echoed;
        return state;
      }
    }
  }

  /** The upstream's response headers (`:status` first); their answer's mutations applied. */
  async responseHeaders(status: number, headers: HeaderList, endOfStream: boolean): Promise<{ headers: HeaderList; changes: HeaderChange[] } | LocalReply> {
    const list: HeaderList = [[':status', String(status)], ...headers];
    this.send('response_headers', `:status ${status}, ${headers.length} headers, end_of_stream=${endOfStream}`, {
      response_headers: { headers: toHeaderMap(list), end_of_stream: endOfStream },
    });
    const answer = await this.next('response_headers');
    if (answer.response === 'immediate_response') return this.localReply(answer.immediate_response!);
    this.expect(answer, 'response_headers');
    const common = answer.response_headers?.response;
    const changes = applyHeaderMutation(list, common?.header_mutation, this.problems);
    this.trace({ direction: 'received', message: 'response_headers', summary: describe(common, answer) });
    return { headers: list.filter(([name]) => name !== ':status'), changes };
  }

  /**
   * The response body as the response mode shows it to llm-extproc; `deliver` gets the bytes Envoy
   * passes on to the client, as they become known.
   */
  responseBody(deliver: (chunk: Buffer) => void): ResponseBodyPlayer {
    switch (this.modes.response) {
      case 'NONE':
        return { chunk: async (data) => deliver(data), end: async () => undefined };
      case 'STREAMED': {
        const one = async (data: Buffer, last: boolean) => {
          this.sendBody('response_body', data, last);
          const reply = await this.answer('response_body', false, (mutation) => deliver(mutated(data, mutation)));
          if (reply)
            throw new ProtocolViolation(`llm-extproc answered a response_body chunk with an immediate response (${reply.status}); Envoy resets the stream`);
        };
        return { chunk: (data) => one(data, false), end: () => one(Buffer.alloc(0), true) };
      }
      case 'BUFFERED': {
        const parts: Buffer[] = [];
        return {
          chunk: async (data) => void parts.push(data),
          end: async () => {
            const body = Buffer.concat(parts);
            this.sendBody('response_body', body, true);
            const reply = await this.answer('response_body', false, (mutation) => deliver(mutated(body, mutation)));
            if (reply)
              throw new ProtocolViolation(`llm-extproc answered the response body with an immediate response (${reply.status}) after the headers were sent`);
          },
        };
      }
      case 'FULL_DUPLEX_STREAMED': {
        // Answers come M:N, at llm-extproc's pace: read them beside the chunks being sent.
        const echoed = this.readStreamedBody('response_body', deliver, 0);
        echoed.catch(() => undefined);
        return {
          chunk: async (data) => this.sendBody('response_body', data, false),
          end: async () => {
            this.sendBody('response_body', Buffer.alloc(0), true);
            const result = await withTimeout(echoed, this.timeoutMs, 'the end of the echoed response body');
            if (!Buffer.isBuffer(result)) throw new ProtocolViolation(`llm-extproc answered the response body with an immediate response (${result.status})`);
          },
        };
      }
    }
  }

  /** Envoy's graceful close: half-close and wait (≤ 1 s) for the server's OK. */
  async close(): Promise<{ code: number; details: string } | undefined> {
    const { status } = await this.stream.halfClose();
    this.trace({ direction: 'sent', message: 'half-close', summary: 'end of the HTTP exchange (graceful close)' });
    this.trace({
      direction: 'received',
      message: 'status',
      summary: status ? `gRPC ${status.code === 0 ? 'OK' : `${status.code} ${status.details}`}` : 'no status within 1 s: Envoy resets the stream',
    });
    return status;
  }

  private send(message: string, summary: string, request: Parameters<ProcessingStream['send']>[0]): void {
    this.trace({ direction: 'sent', message, summary });
    this.stream.send(request);
  }

  private sendBody(phase: 'request_body' | 'response_body', chunk: Buffer, last: boolean): void {
    this.send(phase, `${chunk.length} bytes, end_of_stream=${last}`, { [phase]: { body: chunk, end_of_stream: last } });
  }

  private async next(what: string, timeoutMs = this.timeoutMs): Promise<ProcessingResponse__Output> {
    const answer = await this.stream.next(timeoutMs, what);
    if (!answer) {
      throw new ProtocolViolation(
        `llm-extproc ended the stream with OK instead of answering ${what}: Envoy continues without it (the request would have no destination; ORIGINAL_DST answers 503)`,
      );
    }
    return answer;
  }

  private expect(answer: ProcessingResponse__Output, phase: string): void {
    if (answer.response !== phase) {
      throw new ProtocolViolation(`llm-extproc answered ${phase} with ${answer.response ?? 'an empty message'}: a spurious message, Envoy answers 500`);
    }
  }

  /**
   * Reads the answer to `phase` and applies it to the request; a local reply when llm-extproc
   * answered with one. `headersHeld`: Envoy still holds the request headers, so mutations apply.
   */
  private async answer(
    phase: CommonPhase,
    headersHeld: boolean,
    onBody?: (mutation: BodyMutation__Output | undefined) => void,
  ): Promise<LocalReply | undefined> {
    const answer = await this.next(phase);
    if (answer.response === 'immediate_response') return this.localReply(answer.immediate_response!);
    this.expect(answer, phase);
    const common = (answer[phase as 'request_headers'] as { response?: CommonResponse__Output } | undefined)?.response;
    const state = this.continued!;
    if (common?.header_mutation) {
      if (headersHeld) state.changes.push(...applyHeaderMutation(state.headers, common.header_mutation, this.problems));
      else this.problems.push(`${phase}: header_mutation after the headers went upstream is ignored by Envoy`);
    }
    if (common?.clear_route_cache) {
      if (common.header_mutation && headersHeld) state.clearRouteCache = true;
      else this.problems.push(`${phase}: clear_route_cache without a header_mutation in the same message is ignored by Envoy`);
    }
    Object.assign(state.dynamicMetadata, structToJs(answer.dynamic_metadata));
    onBody?.(common?.body_mutation);
    this.trace({ direction: 'received', message: phase, summary: describe(common, answer) });
    return undefined;
  }

  /** FULL_DUPLEX: the headers answer came; now the streamed_response chunks up to end_of_stream. */
  private async readStreamedBody(
    phase: 'request_body' | 'response_body',
    deliver?: (chunk: Buffer) => void,
    timeoutMs = this.timeoutMs,
  ): Promise<Buffer | LocalReply> {
    const parts: Buffer[] = [];
    for (;;) {
      // 0: no timer, as Envoy has none in this mode; the caller bounds the wait at the end.
      const answer = await this.next(`${phase} (streamed_response)`, timeoutMs || 2 ** 31 - 1);
      if (answer.response === 'immediate_response') return this.localReply(answer.immediate_response!);
      this.expect(answer, phase);
      const streamed = answer[phase]?.response?.body_mutation?.streamed_response;
      if (!streamed)
        throw new ProtocolViolation(`${phase} answer without body_mutation.streamed_response in FULL_DUPLEX_STREAMED: a spurious message, Envoy answers 500`);
      const chunk = streamed.body ?? Buffer.alloc(0);
      this.trace({ direction: 'received', message: phase, summary: `streamed_response ${chunk.length} bytes, end_of_stream=${!!streamed.end_of_stream}` });
      parts.push(chunk);
      deliver?.(chunk);
      if (streamed.end_of_stream) return Buffer.concat(parts);
    }
  }

  private localReply(immediate: ImmediateResponse__Output): LocalReply {
    const code = httpStatusNumber(immediate.status?.code);
    const headers: HeaderList = [];
    applyHeaderMutation(headers, immediate.headers, this.problems);
    const reply: LocalReply = {
      // Envoy answers 200 for a missing code or one below 200.
      status: Math.max(code, 200),
      headers,
      body: immediate.body ?? Buffer.alloc(0),
      details: immediate.details ?? '',
    };
    this.trace({ direction: 'received', message: 'immediate_response', summary: `${reply.status}${reply.details ? `, details ${reply.details}` : ''}` });
    return reply;
  }
}

export interface ResponseBodyPlayer {
  chunk(data: Buffer): Promise<void>;
  end(): Promise<void>;
}

function outcome(reply: LocalReply | undefined, state: Continued): RequestOutcome {
  return reply ? { kind: 'local_reply', reply } : state;
}

function* chunks(body: Buffer): Generator<[Buffer, boolean]> {
  for (let offset = 0; offset < body.length; offset += BODY_CHUNK_BYTES) {
    const end = Math.min(offset + BODY_CHUNK_BYTES, body.length);
    yield [body.subarray(offset, end), end === body.length];
  }
}

/** The bytes after a (non-streamed) body mutation: replaced, cleared or left as they were. */
function mutated(body: Buffer, mutation: BodyMutation__Output | undefined): Buffer {
  if (mutation?.mutation === 'body') return mutation.body ?? Buffer.alloc(0);
  if (mutation?.mutation === 'clear_body') return mutation.clear_body ? Buffer.alloc(0) : body;
  return body;
}

/** What an answer asked for, in a few words. */
function describe(common: CommonResponse__Output | undefined, answer: ProcessingResponse__Output): string {
  const parts: string[] = [common?.status ?? 'CONTINUE'];
  const mutation = common?.header_mutation;
  for (const option of mutation?.set_headers ?? []) parts.push(`set ${option.header?.key}`);
  for (const name of mutation?.remove_headers ?? []) parts.push(`remove ${name}`);
  if (common?.clear_route_cache) parts.push('clear_route_cache');
  if (common?.body_mutation?.mutation) parts.push(`body_mutation ${common.body_mutation.mutation}`);
  const namespaces = Object.keys(answer.dynamic_metadata?.fields ?? {});
  if (namespaces.length > 0) parts.push(`dynamic_metadata ${namespaces.join(', ')}`);
  return parts.join(', ');
}

async function withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new ProtocolViolation(`no answer with ${what} within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
