import type { HeaderValue__Output } from '../generated/envoy/config/core/v3/HeaderValue.js';

/**
 * Read-only view of the headers Envoy sent (lower-case keys, values in raw_value bytes).
 * Values are decoded on first lookup only: a request has a few dozen headers and most are never read.
 */
export class RequestHeaders {
  private readonly seen = new Map<string, string | undefined>();

  constructor(private readonly list: readonly HeaderValue__Output[]) {}

  get(name: string): string | undefined {
    if (this.seen.has(name)) return this.seen.get(name);
    let value: string | undefined;
    for (const header of this.list) {
      if (header.key === name) {
        value = headerText(header);
        break;
      }
    }
    this.seen.set(name, value);
    return value;
  }
}

function headerText(header: HeaderValue__Output): string {
  // Envoy fills raw_value; `value` is only a fallback for older senders.
  return header.raw_value && header.raw_value.length > 0 ? header.raw_value.toString() : (header.value ?? '');
}
