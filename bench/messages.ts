/**
 * The ext_proc messages the load generator sends, serialized once with the same proto-loader codec
 * the servers use, exactly as Envoy sends them: request_headers (with protocol_config naming the
 * request body mode, BUFFERED or FULL_DUPLEX_STREAMED), request_body (the whole body,
 * end_of_stream), response_headers. And the cheap readers for the answers: the destination
 * (sampled full decode) and the streamed_response chunk of a FULL_DUPLEX body echo (a few varints,
 * no decode).
 */
import type { MethodDefinition, PackageDefinition } from '@grpc/proto-loader';
import { EXT_PROC_SERVICE, extProcPackageDefinition } from '../src/extproc/proto.js';
import type { ProcessingRequest } from '../src/generated/envoy/service/ext_proc/v3/ProcessingRequest.js';
import type { ProcessingResponse, ProcessingResponse__Output } from '../src/generated/envoy/service/ext_proc/v3/ProcessingResponse.js';

export const MODEL = 'Qwen/Qwen2.5-0.5B-Instruct';
export const DESTINATION_HEADER = 'x-gateway-destination-endpoint';
/** FULL_DUPLEX_STREAMED: the largest body chunk a server may echo in one streamed_response (GIE's
 *  endpoint picker cuts at 62,000 bytes, under Envoy's 64 KiB advice). */
export const MAX_STREAMED_CHUNK_BYTES = 62_000;

/** The request body modes the benchmark drives, as protocol_config names them. */
export type RequestBodyMode = 'BUFFERED' | 'FULL_DUPLEX_STREAMED';

/** First byte of a serialized ProcessingResponse: the tag of the oneof field that is set. */
export const RESPONSE_TAG = {
  request_headers: 0x0a, // field 1, length-delimited
  response_headers: 0x12, // field 2
  request_body: 0x1a, // field 3
  immediate_response: 0x3a, // field 7
} as const;

type ProcessMethod = MethodDefinition<ProcessingRequest, ProcessingResponse, ProcessingRequest, ProcessingResponse__Output>;

let method: ProcessMethod | undefined;

/** The Process method definition: requestSerialize / responseDeserialize etc. */
export function processMethod(definition: PackageDefinition = extProcPackageDefinition()): ProcessMethod {
  method ??= (definition[EXT_PROC_SERVICE] as unknown as { Process: ProcessMethod }).Process;
  return method;
}

const REQUEST_ID_PLACEHOLDER = '00000000-0000-4000-8000-000000000000';

/**
 * A serialized request_headers message whose x-request-id is rewritten in place before every send
 * (same length, so no re-encoding): `next()` returns the template with a fresh id. `send()` copies
 * small messages into the gRPC frame at once, so reusing the buffer is safe.
 */
export class RequestHeadersTemplate {
  readonly bytes: Buffer;
  private readonly idOffset: number;
  private counter = 0;

  constructor(bodyBytes: number, prefix: number, requestBodyMode: RequestBodyMode = 'BUFFERED') {
    const h = (key: string, value: string) => ({ key, raw_value: Buffer.from(value) });
    const message: ProcessingRequest = {
      request_headers: {
        headers: {
          headers: [
            h(':authority', 'llm-gateway.default.svc.cluster.local:8080'),
            h(':path', '/v1/chat/completions'),
            h(':method', 'POST'),
            h(':scheme', 'http'),
            h('user-agent', 'OpenAI/Python 1.54.4'),
            h('accept', 'application/json'),
            h('content-type', 'application/json'),
            h('content-length', String(bodyBytes)),
            h('authorization', 'Bearer sk-bench-0123456789abcdef0123456789abcdef'),
            h('x-stainless-lang', 'python'),
            h('x-forwarded-proto', 'http'),
            h('x-request-id', REQUEST_ID_PLACEHOLDER),
          ],
        },
        end_of_stream: false,
      },
      // FULL_DUPLEX_STREAMED also needs request trailer mode SEND in Envoy's filter config; that is
      // not part of protocol_config, and without request trailers nothing else changes on the wire.
      protocol_config: { request_body_mode: requestBodyMode, response_body_mode: 'NONE' },
    };
    this.bytes = processMethod().requestSerialize(message);
    this.idOffset = this.bytes.indexOf(REQUEST_ID_PLACEHOLDER);
    if (this.idOffset < 0) throw new Error('x-request-id placeholder not found in the serialized headers');
    // 8 hex digits per load-generator process, so ids stay unique across runs.
    this.bytes.write((prefix >>> 0).toString(16).padStart(8, '0'), this.idOffset, 'latin1');
  }

  next(): Buffer {
    const n = ++this.counter;
    this.bytes.write(n.toString(16).padStart(12, '0'), this.idOffset + 24, 'latin1');
    return this.bytes;
  }
}

/**
 * An OpenAI chat completion body of exactly `bytes` bytes (model first, owned_by last: the scanner
 * has to walk the whole messages array to find it, the realistic worst case).
 */
export function chatBody(bytes: number, ownedBy: string): Buffer {
  const head = `{"model":"${MODEL}","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"`;
  const tail = `"}],"max_tokens":128,"temperature":0.7,"stream":true,"stream_options":{"include_usage":true},"owned_by":"${ownedBy}"}`;
  const room = bytes - Buffer.byteLength(head) - Buffer.byteLength(tail);
  if (room < 0) throw new Error(`a chat body cannot be as small as ${bytes} bytes`);
  // Plain text with some JSON escapes and multi-byte characters, like real prompts.
  const unit = 'Summarise the \\"quarterly\\" report: revenue grew 12%, costs fell; caf\u00e9 \u4e2d\u6587 notes.\\n ';
  let content = unit.repeat(Math.floor(room / Buffer.byteLength(unit)));
  content += 'x'.repeat(room - Buffer.byteLength(content));
  const body = Buffer.from(head + content + tail);
  if (body.length !== bytes) throw new Error(`chat body is ${body.length} bytes, wanted ${bytes}`);
  JSON.parse(body.toString()); // must be valid JSON
  return body;
}

export function requestBodyMessage(body: Buffer): Buffer {
  return processMethod().requestSerialize({ request_body: { body, end_of_stream: true } });
}

export function responseHeadersMessage(): Buffer {
  const h = (key: string, value: string) => ({ key, raw_value: Buffer.from(value) });
  return processMethod().requestSerialize({
    response_headers: {
      headers: {
        headers: [
          h(':status', '200'),
          h('content-type', 'text/event-stream; charset=utf-8'),
          h('date', 'Mon, 24 Nov 2025 15:26:00 GMT'),
          h('server', 'uvicorn'),
          h('x-envoy-upstream-service-time', '14'),
        ],
      },
      end_of_stream: false,
    },
  });
}

/**
 * The destination header value of a routing answer (request_body in BUFFERED, request_headers in
 * FULL_DUPLEX_STREAMED), or undefined (full decode: sampling only).
 */
export function destinationOf(answer: Buffer): string | undefined {
  const decoded = processMethod().responseDeserialize(answer);
  const set = (decoded.request_body ?? decoded.request_headers)?.response?.header_mutation?.set_headers ?? [];
  for (const option of set) {
    if (option.header?.key === DESTINATION_HEADER) return option.header.raw_value?.toString() ?? option.header.value;
  }
  return undefined;
}

/** The streamed_response of a request_body answer, fully decoded (sampling only, to cross-check
 *  {@link streamedChunkOf}). */
export function decodedStreamedChunk(answer: Buffer): { body: Buffer; endOfStream: boolean } | undefined {
  const streamed = processMethod().responseDeserialize(answer).request_body?.response?.body_mutation?.streamed_response;
  return streamed ? { body: Buffer.from(streamed.body ?? []), endOfStream: !!streamed.end_of_stream } : undefined;
}

/**
 * The streamed_response chunk of a serialized request_body answer, read straight off the wire:
 * ProcessingResponse.request_body (3) → BodyResponse.response (1) → CommonResponse.body_mutation (3)
 * → BodyMutation.streamed_response (3) → StreamedBodyResponse {body (1), end_of_stream (2)}.
 * `body` is a view into `answer` (no copy). Undefined when the path is absent or the bytes are not
 * well-formed protobuf. Unknown fields are skipped, as a decoder would.
 */
export function streamedChunkOf(answer: Buffer): { body: Buffer; endOfStream: boolean } | undefined {
  let range: Range | undefined = [0, answer.length];
  for (const field of [3, 1, 3, 3]) {
    range = lengthDelimited(answer, range[0], range[1], field);
    if (!range) return undefined;
  }
  const [start, end] = range;
  let body: Buffer = EMPTY;
  let endOfStream = false;
  let at = start;
  while (at < end) {
    const key = varint(answer, at, end);
    if (!key) return undefined;
    at = key[1];
    const field = key[0] >>> 3;
    const wire = key[0] & 7;
    if (field === 1 && wire === 2) {
      const len = varint(answer, at, end);
      if (!len || len[1] + len[0] > end) return undefined;
      body = answer.subarray(len[1], len[1] + len[0]);
      at = len[1] + len[0];
    } else if (field === 2 && wire === 0) {
      const v = varint(answer, at, end);
      if (!v) return undefined;
      endOfStream = v[0] !== 0;
      at = v[1];
    } else {
      const next = skip(answer, at, end, wire);
      if (next < 0) return undefined;
      at = next;
    }
  }
  return { body, endOfStream };
}

type Range = [start: number, end: number];
const EMPTY = Buffer.alloc(0);

/** The payload range of the first length-delimited `field` in buf[start, end). */
function lengthDelimited(buf: Buffer, start: number, end: number, field: number): Range | undefined {
  let at = start;
  while (at < end) {
    const key = varint(buf, at, end);
    if (!key) return undefined;
    at = key[1];
    const wire = key[0] & 7;
    if (wire === 2 && key[0] >>> 3 === field) {
      const len = varint(buf, at, end);
      if (!len || len[1] + len[0] > end) return undefined;
      return [len[1], len[1] + len[0]];
    }
    at = skip(buf, at, end, wire);
    if (at < 0) return undefined;
  }
  return undefined;
}

/** A varint at buf[at] (up to 2^53): [value, offset after it], or undefined. */
function varint(buf: Buffer, at: number, end: number): [number, number] | undefined {
  let value = 0;
  let scale = 1;
  for (let i = at; i < end && i < at + 8; i++) {
    const b = buf[i]!;
    value += (b & 0x7f) * scale;
    if (b < 0x80) return [value, i + 1];
    scale *= 128;
  }
  return undefined;
}

/** The offset after a field's value of wire type `wire` at buf[at], or -1. */
function skip(buf: Buffer, at: number, end: number, wire: number): number {
  switch (wire) {
    case 0: {
      for (let i = at; i < end && i < at + 10; i++) if (buf[i]! < 0x80) return i + 1;
      return -1;
    }
    case 1:
      return at + 8 <= end ? at + 8 : -1;
    case 2: {
      const len = varint(buf, at, end);
      return len && len[1] + len[0] <= end ? len[1] + len[0] : -1;
    }
    case 5:
      return at + 4 <= end ? at + 4 : -1;
    default:
      return -1;
  }
}
