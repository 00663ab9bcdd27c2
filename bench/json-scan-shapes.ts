/**
 * Hostile request bodies just under the 32 MiB body limit, each built to maximise one kind of
 * per-token work of the body scanner (see bench/json-scan.ts). All are valid JSON objects.
 */

/** The default `max-body-size` (src/config/config.ts). */
export const BODY_LIMIT_BYTES = 32 * 1024 * 1024;

export interface BodyShape {
  name: string;
  build(): Buffer;
}

/** The nesting limit of the scanner: the top-level object plus 256 nested containers. */
const NESTED_LEVELS = 256;

/** `head`, then `unit` repeated as often as fits, then `tail`, in at most BODY_LIMIT_BYTES. */
function repeated(head: string, unit: string, tail: string): Buffer {
  const count = Math.floor((BODY_LIMIT_BYTES - head.length - tail.length) / unit.length);
  return Buffer.from(head + unit.repeat(count) + tail);
}

/** One array per level below "a" (already one level), so the innermost sits at the limit. */
const deepArray = '['.repeat(NESTED_LEVELS - 1) + ']'.repeat(NESTED_LEVELS - 1);

export const HOSTILE_SHAPES: readonly BodyShape[] = [
  { name: 'escaped short keys "\\u0061":1,', build: () => repeated('{', '"\\u0061":1,', '"model":"m"}') },
  { name: 'short keys "a":1,', build: () => repeated('{', '"a":1,', '"model":"m"}') },
  { name: 'one array [1,1,1,...]', build: () => repeated('{"model":"m","a":[', '1,', '1]}') },
  { name: 'small nested objects in an array', build: () => repeated('{"model":"m","a":[', '{"a":{"b":[1,{"c":null}]}},', '{}]}') },
  { name: `nesting ${NESTED_LEVELS} deep, repeated`, build: () => repeated('{"model":"m","a":[', `${deepArray},`, '[]]}') },
  // 4096 backslashes (2048 escaped ones), then an escaped quote: every quote sits after a long run.
  { name: 'backslash runs \\\\\\\\...\\"', build: () => repeated('{"model":"m","prompt":"', `${'\\\\'.repeat(2048)}\\"`, '"}') },
  { name: 'quote-dense prompt \\"\\"\\"...', build: () => repeated('{"model":"m","messages":[{"role":"user","content":"', '\\"', '"}]}') },
];
