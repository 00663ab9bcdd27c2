/**
 * Encoding/decoding of ext_proc messages with the project's package definition, plus the small
 * conversions the Envoy double needs (header maps, Struct, HTTP status enum).
 */
import type { MethodDefinition } from '@grpc/proto-loader';
import { extProcPackageDefinition, httpStatusNumber, structToJs } from '../../../src/extproc/proto.js';
import type { HeaderMap, HeaderMap__Output } from '../../../src/generated/envoy/config/core/v3/HeaderMap.js';
import type { ProcessingRequest, ProcessingRequest__Output } from '../../../src/generated/envoy/service/ext_proc/v3/ProcessingRequest.js';
import type { ProcessingResponse, ProcessingResponse__Output } from '../../../src/generated/envoy/service/ext_proc/v3/ProcessingResponse.js';
import type { Struct } from '../../../src/generated/google/protobuf/Struct.js';

export type { ProcessingRequest, ProcessingRequest__Output, ProcessingResponse, ProcessingResponse__Output };

type ProcessMethod = MethodDefinition<ProcessingRequest, ProcessingResponse, ProcessingRequest__Output, ProcessingResponse__Output>;

let method: ProcessMethod | undefined;
function processMethod(): ProcessMethod {
  if (!method) {
    const svc = extProcPackageDefinition()['envoy.service.ext_proc.v3.ExternalProcessor'] as unknown as Record<string, ProcessMethod>;
    method = svc.Process!;
  }
  return method;
}

/** Serialises a ProcessingRequest (what Envoy sends) to protobuf bytes. */
export function encodeProcessingRequest(req: ProcessingRequest): Buffer {
  return processMethod().requestSerialize(req);
}

/** Parses protobuf bytes of a ProcessingResponse (what the server sends). Throws on garbage. */
export function decodeProcessingResponse(buf: Buffer): ProcessingResponse__Output {
  return processMethod().responseDeserialize(buf);
}

/** Server side helpers, for tests that play the ext_proc server on a raw stream. */
export function encodeProcessingResponse(res: ProcessingResponse): Buffer {
  return processMethod().responseSerialize(res);
}
export function decodeProcessingRequest(buf: Buffer): ProcessingRequest__Output {
  return processMethod().requestDeserialize(buf);
}

/** `envoy.type.v3.StatusCode` → the numeric HTTP code (src/extproc/proto.ts, shared with `npm run try`). */
export const httpStatusCode = httpStatusNumber;

/**
 * Headers as Envoy holds them: lower-case name → values in order (several for repeated headers).
 * Values are byte strings (latin1), so raw_value bytes round-trip exactly.
 */
export type HeaderList = Map<string, string[]>;

/** Public shape of headers in results: lower-case keys; a string, or an array when repeated. */
export type HeaderRecord = Record<string, string | string[]>;

export function toHeaderRecord(h: HeaderList): HeaderRecord {
  const out: HeaderRecord = {};
  for (const [k, v] of h) if (v.length > 0) out[k] = v.length === 1 ? v[0]! : [...v];
  return out;
}

export function fromHeaderInput(input: Record<string, string | string[] | number | undefined> | undefined, into: HeaderList = new Map()): HeaderList {
  if (!input) return into;
  for (const [k, v] of Object.entries(input)) {
    if (v === undefined) continue;
    const key = k.toLowerCase();
    const vals = Array.isArray(v) ? v.map(String) : [String(v)];
    const cur = into.get(key);
    if (cur) cur.push(...vals);
    else into.set(key, vals);
  }
  return into;
}

/**
 * The HeaderValue field Envoy fills and reads: `raw_value` since 1.27 (unconditionally since ~1.31),
 * `value` before 1.27 or with the runtime guard `send_header_raw_value` off (§1.6).
 */
export type HeaderValueField = 'raw_value' | 'value';

/** Envoy → server: every value in `field` (raw_value bytes by default), the other left empty (§1.6). Pseudo-headers first. */
export function toHeaderMap(h: HeaderList, field: HeaderValueField = 'raw_value'): HeaderMap {
  const headers: { key: string; raw_value?: Buffer; value?: string }[] = [];
  for (const pass of [true, false]) {
    for (const [k, vals] of h) {
      if (k.startsWith(':') !== pass) continue;
      for (const v of vals) headers.push(field === 'raw_value' ? { key: k, raw_value: Buffer.from(v, 'latin1') } : { key: k, value: v });
    }
  }
  return { headers };
}

/** Server → Envoy header map (e.g. trailers); Envoy reads only `field`. */
export function fromHeaderMap(m: HeaderMap__Output | undefined, field: HeaderValueField = 'raw_value'): HeaderList {
  const out: HeaderList = new Map();
  for (const hv of m?.headers ?? []) {
    const k = (hv.key ?? '').toLowerCase();
    const v = readHeaderValue(hv, field);
    const cur = out.get(k);
    if (cur) cur.push(v);
    else out.set(k, [v]);
  }
  return out;
}

/** Flat attribute values → google.protobuf.Struct (camelCase inside: proto-loader drops snake_case keys). */
export function toStruct(values: Record<string, string | number | boolean>): Struct {
  const fields: Struct['fields'] = {};
  for (const [k, v] of Object.entries(values)) {
    fields[k] = typeof v === 'string' ? { stringValue: v } : typeof v === 'number' ? { numberValue: v } : { boolValue: v };
  }
  return { fields };
}

export { structToJs };

/** The value Envoy sees in a HeaderValue it reads: only the field it uses; the other is ignored. */
export function readHeaderValue(hv: { raw_value?: Buffer; value?: string }, field: HeaderValueField): string {
  return field === 'raw_value' ? (hv.raw_value ? hv.raw_value.toString('latin1') : '') : (hv.value ?? '');
}
