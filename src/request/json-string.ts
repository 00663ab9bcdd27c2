/**
 * The contents of a JSON string in a byte buffer (the bytes between its quotes): checking and
 * decoding its escapes, and comparing it with a name without building a string.
 */

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const SLASH = 0x2f;
const LETTER_U = 0x75;

/** compareWithName: the content decodes to the name. */
export const EQUAL = -1;
/** compareWithName: the content decodes to something else. */
export const DIFFERENT = -2;

function hexValue(byte: number): number {
  if (byte >= 0x30 && byte <= 0x39) return byte - 0x30;
  const lower = byte | 0x20;
  return lower >= 0x61 && lower <= 0x66 ? lower - 0x57 : -1;
}

/** The UTF-16 code unit of the escape whose backslash is at `at`, or -1 if it is not a valid escape before `end`. */
function escapedUnit(buf: Buffer, at: number, end: number): number {
  if (at + 1 >= end) return -1;
  switch (buf[at + 1]) {
    case QUOTE:
    case BACKSLASH:
    case SLASH:
      return buf[at + 1]!;
    case 0x62: // b
      return 0x08;
    case 0x66: // f
      return 0x0c;
    case 0x6e: // n
      return 0x0a;
    case 0x72: // r
      return 0x0d;
    case 0x74: // t
      return 0x09;
    case LETTER_U: {
      if (at + 6 > end) return -1;
      let unit = 0;
      for (let i = at + 2; i < at + 6; i++) {
        const digit = hexValue(buf[i]!);
        if (digit === -1) return -1;
        unit = unit * 16 + digit;
      }
      return unit;
    }
    default:
      return -1;
  }
}

/** Bytes taken by the (valid) escape whose backslash is at `at`. */
function escapeLength(buf: Buffer, at: number): number {
  return buf[at + 1] === LETTER_U ? 6 : 2;
}

function isHighSurrogate(unit: number): boolean {
  return unit >= 0xd800 && unit <= 0xdbff;
}

function isLowSurrogate(unit: number): boolean {
  return unit >= 0xdc00 && unit <= 0xdfff;
}

/** The offset of the first invalid escape in buf[start, end), or -1 when all are valid. */
export function invalidEscapeAt(buf: Buffer, start: number, end: number): number {
  let i = start;
  while (i < end) {
    if (buf[i] !== BACKSLASH) {
      i++;
      continue;
    }
    if (escapedUnit(buf, i, end) === -1) return i;
    i += escapeLength(buf, i);
  }
  return -1;
}

/** Decodes buf[start, end), whose escapes must be valid (see invalidEscapeAt), as JSON.parse would. */
export function decodeContent(buf: Buffer, start: number, end: number): string {
  let decoded = '';
  let run = start;
  // UTF-8 never uses the backslash byte inside a multi-byte sequence, so the runs between escapes
  // decode on their own; lone surrogates survive, as with JSON.parse, because each escape
  // becomes its own UTF-16 unit.
  for (let i = start; i < end; i++) {
    if (buf[i] !== BACKSLASH) continue;
    decoded += buf.toString('utf8', run, i) + String.fromCharCode(escapedUnit(buf, i, end));
    run = i + escapeLength(buf, i);
    i = run - 1;
  }
  return decoded + buf.toString('utf8', run, end);
}

/** Whether the UTF-8 encoding of `codePoint` is at name[at...]: the offset after it, or -1. */
function matchUtf8(name: Buffer, at: number, codePoint: number): number {
  const length = codePoint < 0x80 ? 1 : codePoint < 0x800 ? 2 : codePoint < 0x10000 ? 3 : 4;
  const lead = length === 1 ? codePoint : ((0xf00 >> length) & 0xff) | (codePoint >> (6 * (length - 1)));
  if (name[at] !== lead) return -1;
  for (let i = 1; i < length; i++) {
    if (name[at + i] !== (0x80 | ((codePoint >> (6 * (length - 1 - i))) & 0x3f))) return -1;
  }
  return at + length;
}

/**
 * Compares buf[start, end) with `name` (UTF-8 bytes of a well-formed string), decoding escapes on
 * the fly and stopping at the first difference. Returns EQUAL, DIFFERENT, or the offset of an
 * invalid escape met while the content still matched the start of the name.
 */
export function compareWithName(buf: Buffer, start: number, end: number, name: Buffer): number {
  let matched = 0;
  let i = start;
  while (i < end) {
    const byte = buf[i]!;
    if (byte !== BACKSLASH) {
      if (name[matched] !== byte) return DIFFERENT;
      matched++;
      i++;
      continue;
    }
    const unit = escapedUnit(buf, i, end);
    if (unit === -1) return i;
    i += escapeLength(buf, i);
    let codePoint = unit;
    if (isHighSurrogate(unit)) {
      const low = buf[i] === BACKSLASH ? escapedUnit(buf, i, end) : -1;
      // A lone surrogate cannot be part of a well-formed name.
      if (!isLowSurrogate(low)) return DIFFERENT;
      codePoint = 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
      i += 6;
    } else if (isLowSurrogate(unit)) {
      return DIFFERENT;
    }
    matched = matchUtf8(name, matched, codePoint);
    if (matched === -1) return DIFFERENT;
  }
  return matched === name.length ? EQUAL : DIFFERENT;
}
