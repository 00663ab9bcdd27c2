/**
 * Bounds on what a client controls, so one request cannot make llm-extproc store, log or echo
 * megabytes. Model ids on Hugging Face are at most ~100 characters and engine names a few; the
 * limits leave room for local paths and LoRA adapter names.
 */
export const MAX_MODEL_BYTES = 512;
export const MAX_OWNED_BY_BYTES = 128;

/** Client-supplied text quoted in an error message or a log line is cut to this many characters. */
export const MAX_ECHOED_CHARS = 100;

/** `value` as it may be echoed: cut to MAX_ECHOED_CHARS, saying how long it really was. */
export function clip(value: string): string;
export function clip(value: string | undefined): string | undefined;
export function clip(value: string | undefined): string | undefined {
  if (value === undefined || value.length <= MAX_ECHOED_CHARS) return value;
  return `${value.slice(0, MAX_ECHOED_CHARS)}… (${Buffer.byteLength(value)} bytes)`;
}
