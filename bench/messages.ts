/**
 * The ext_proc messages the load generator sends, serialized once with the same proto-loader codec
 * the servers use, exactly as Envoy's BUFFERED lifecycle sends them: request_headers (with
 * protocol_config), request_body (the whole body, end_of_stream), response_headers.
 */
import type { MethodDefinition, PackageDefinition } from '@grpc/proto-loader';
import type { ProcessingRequest } from '../src/generated/envoy/service/ext_proc/v3/ProcessingRequest.js';
import type { ProcessingResponse, ProcessingResponse__Output } from '../src/generated/envoy/service/ext_proc/v3/ProcessingResponse.js';
import { EXT_PROC_SERVICE, extProcPackageDefinition } from '../src/extproc/proto.js';

export const MODEL = 'Qwen/Qwen2.5-0.5B-Instruct';
export const DESTINATION_HEADER = 'x-gateway-destination-endpoint';

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

  constructor(bodyBytes: number, prefix: number) {
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
      protocol_config: { request_body_mode: 'BUFFERED', response_body_mode: 'NONE' },
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

/** The destination header value of a request_body answer, or undefined (full decode: sampling only). */
export function destinationOf(answer: Buffer): string | undefined {
  const decoded = processMethod().responseDeserialize(answer);
  const set = decoded.request_body?.response?.header_mutation?.set_headers ?? [];
  for (const option of set) {
    if (option.header?.key === DESTINATION_HEADER) return option.header.raw_value?.toString() ?? option.header.value;
  }
  return undefined;
}
