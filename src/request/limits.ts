/**
 * Bounds on what a client controls, so one request cannot make llm-extproc store, log or echo
 * megabytes. Model ids on Hugging Face are at most ~100 characters and engine names a few; the
 * defaults leave room for local paths and LoRA adapter names. The header defaults are Envoy's own
 * (max_request_headers_kb 60, max_headers_count 100), so behind a default Envoy they rarely bite.
 */
export interface InputLimits {
  /** Request headers, pseudo-headers included (431 above). */
  maxHeaderCount: number;
  /** Names plus values of all request headers, in bytes (431 above). */
  maxHeaderBytes: number;
  /** The query string of `:path`, after the `?`, in bytes (414 above). */
  maxQueryBytes: number;
  /** The model name, from any source, in bytes (400 above). */
  maxModelBytes: number;
  /** The engine selector (owned_by), from any source, in bytes (400 above). */
  maxOwnedByBytes: number;
}

export const DEFAULT_INPUT_LIMITS: Readonly<InputLimits> = {
  maxHeaderCount: 100,
  maxHeaderBytes: 64 * 1024,
  maxQueryBytes: 8 * 1024,
  maxModelBytes: 256,
  maxOwnedByBytes: 128,
};

/** The largest model or owned_by limit that may be configured: names are short, and the body scan relies on it. */
export const MAX_NAME_LIMIT_BYTES = 4096;

/** Client-supplied text quoted in an error message or a log line is cut to this many characters. */
export const MAX_ECHOED_CHARS = 100;

/** `value` as it may be echoed: cut to MAX_ECHOED_CHARS, saying how long it really was. */
export function clip(value: string): string;
export function clip(value: string | undefined): string | undefined;
export function clip(value: string | undefined): string | undefined {
  if (value === undefined || value.length <= MAX_ECHOED_CHARS) return value;
  return `${value.slice(0, MAX_ECHOED_CHARS)}… (${Buffer.byteLength(value)} bytes)`;
}
