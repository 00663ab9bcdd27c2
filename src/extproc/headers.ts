import type { HeaderValue__Output } from '../generated/envoy/config/core/v3/HeaderValue.js';

/**
 * Which HeaderValue field carries header values on this stream. Envoy 1.27+ sends and reads
 * `raw_value` (unconditionally since about 1.31); older Envoy, or one with the runtime guard
 * `send_header_raw_value` off, sends and reads `value`. Answers use the field the request came in.
 */
export type HeaderValueField = 'raw_value' | 'value';

/**
 * Read-only view of the headers Envoy sent (lower-case keys). Values are decoded on first lookup
 * only: a request has a few dozen headers and most are never read.
 */
export class RequestHeaders {
  private readonly seen = new Map<string, string | undefined>();
  /** The field Envoy filled: `value` only when no header carries `raw_value` and some carries `value`. */
  readonly valueField: HeaderValueField;

  constructor(private readonly list: readonly HeaderValue__Output[]) {
    this.valueField = usesValueField(list) ? 'value' : 'raw_value';
  }

  get(name: string): string | undefined {
    if (this.seen.has(name)) return this.seen.get(name);
    let value: string | undefined;
    for (const header of this.list) {
      if (header.key === name) {
        value = this.valueField === 'raw_value' ? (header.raw_value?.toString() ?? '') : (header.value ?? '');
        break;
      }
    }
    this.seen.set(name, value);
    return value;
  }

  /** How many headers Envoy sent, pseudo-headers included. */
  get count(): number {
    return this.list.length;
  }

  /** Names plus values in bytes, pseudo-headers included, as Envoy's max_request_headers_kb counts them. */
  byteLength(): number {
    let bytes = 0;
    for (const header of this.list) {
      const value = this.valueField === 'raw_value' ? (header.raw_value?.length ?? 0) : Buffer.byteLength(header.value ?? '');
      // Names are ASCII tokens (Envoy's codecs refuse others), so their length is their size.
      bytes += (header.key?.length ?? 0) + value;
    }
    return bytes;
  }

  /**
   * Every header as Envoy sent it, in order (pseudo-headers such as `:path` included; a name that
   * occurs twice occurs twice). Decodes all values: for the few consumers that forward the headers.
   */
  entries(): [name: string, value: string][] {
    return this.list.map((header) => [header.key ?? '', this.valueField === 'raw_value' ? (header.raw_value?.toString() ?? '') : (header.value ?? '')]);
  }
}

function usesValueField(list: readonly HeaderValue__Output[]): boolean {
  let value = false;
  for (const header of list) {
    if (header.raw_value && header.raw_value.length > 0) return false;
    if (header.value) value = true;
  }
  return value;
}

/** The `:status` of response headers as Envoy sends them (either value field); undefined when absent or not a number. */
export function responseStatus(list: readonly HeaderValue__Output[]): number | undefined {
  for (const header of list) {
    if (header.key !== ':status') continue;
    const text = header.raw_value && header.raw_value.length > 0 ? header.raw_value.toString('latin1') : (header.value ?? '');
    return /^\d{3}$/.test(text) ? Number(text) : undefined;
  }
  return undefined;
}
