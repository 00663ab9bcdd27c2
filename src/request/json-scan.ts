/**
 * Reads the values of a few top-level keys of a JSON object without materialising it.
 *
 * A request body can be tens of MiB of prompt text, and routing needs only `model` and the engine
 * selector. JSON.parse would decode the whole buffer into a JS string and build every object; this
 * scanner walks the bytes once, jumps over string contents with Buffer.indexOf (native memchr) and
 * still checks the document's structure (brackets, commas, colons, literals, numbers), so
 * malformed JSON is rejected. It does not check what is inside strings (control characters,
 * UTF-8 validity, escapes), with one exception: the escapes of a wanted value, and of a key that
 * could be a wanted one, must be valid. The model server parses the body itself and answers the
 * rest.
 *
 * Hostile bodies: the work per skipped key or value is a few byte comparisons, with no
 * allocation, so the cost is linear in the body. The scan is also resumable: TopLevelScanner
 * advances by a byte budget, and scanTopLevelSliced scans one slice per event-loop turn, so no
 * body within the size limit blocks the loop for long. `bench/json-scan.ts` measures both.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { compareWithName, DIFFERENT, decodeContent, EQUAL, invalidEscapeAt } from './json-string.js';

export type ScanResult =
  /** `complete`: the top-level object ended within the body (always so unless `partial`). */
  { ok: true; complete: boolean; values: Map<string, ScannedValue> } | { ok: false; error: string; offset: number };

/** A wanted key's value: its string content, or the JSON type it had instead of a string. */
export type ScannedValue =
  | { type: 'string'; value: string }
  /** A string longer than `maxValueBytes` between its quotes (raw bytes, escapes undecoded). */
  | { type: 'string-too-long'; bytes: number }
  | { type: 'number' | 'boolean' | 'null' | 'object' | 'array'; raw?: string };

export interface ScanOptions {
  /**
   * The body is only the first bytes of a longer one (Envoy's BUFFERED_PARTIAL): reaching its end
   * is not an error but an ok result with `complete: false`, holding the wanted values that ended
   * within it. Structural errors before the end are still errors.
   */
  partial?: boolean;
  /**
   * Longest wanted string value, in raw bytes between its quotes; a longer one is reported as
   * 'string-too-long' without being decoded. Checking and decoding a wanted value is done in one
   * step when the scan reaches its end, so this also bounds that step. Unset: no limit.
   */
  maxValueBytes?: number;
}

export interface SlicedScanOptions extends ScanOptions {
  /** Bytes scanned per event-loop turn; SCAN_SLICE_BYTES is the recommended size. */
  sliceBytes: number;
  /** Stops the scan between slices; the promise then rejects with `signal.reason`. */
  signal?: AbortSignal;
}

/**
 * Recommended slice for scanTopLevelSliced. bench/json-scan.ts, on a busy 2-core machine: over
 * the hostile 32 MiB bodies the longest 256 KiB slice took up to 1.5 ms (`[1,1,1,...]`, millions
 * of short escaped keys), with rare 3-5 ms outliers while other processes loaded the machine;
 * 1 MiB slices took 4-8 ms. The slices' total is that of one scanTopLevel.
 */
export const SCAN_SLICE_BYTES = 256 * 1024;

/** Deeper nesting below the top-level object is refused. */
const MAX_DEPTH = 256;

/** JSON's structural bytes (shared with usage/json-usage.ts). */
export const QUOTE = 0x22;
export const BACKSLASH = 0x5c;
export const OPEN_BRACE = 0x7b;
export const CLOSE_BRACE = 0x7d;
export const OPEN_BRACKET = 0x5b;
export const CLOSE_BRACKET = 0x5d;
export const COLON = 0x3a;
export const COMMA = 0x2c;
const MINUS = 0x2d;
const PLUS = 0x2b;
const POINT = 0x2e;
/**
 * Strings are searched byte by byte this far before Buffer.indexOf is worth its fixed cost: long
 * enough for most keys and short values, short enough that memchr takes over soon in long text
 * (measured in isolation: 24 beat 48 by ~25% on quoted prose, and kept most of its lead on runs
 * of escaped quotes).
 */
const SHORT_STRING_BYTES = 24;
/** An escape takes at most 6 bytes (\uXXXX) per byte of the UTF-8 it stands for. */
const MAX_ESCAPED_BYTES_PER_BYTE = 6;

// What the scanner expects next (its `state`), or the kind of token it is in.
const EXPECT_OBJECT = 0;
const EXPECT_KEY_OR_CLOSE = 1;
const EXPECT_KEY = 2;
const EXPECT_COLON = 3;
const EXPECT_VALUE_OR_CLOSE = 4;
const EXPECT_VALUE = 5;
const EXPECT_COMMA_OR_CLOSE = 6;
const EXPECT_END = 7;
const IN_STRING = 8;
const IN_NUMBER = 9;
const IN_LITERAL = 10;

// What the string being scanned is.
const SKIPPED = 0;
const NESTED_KEY = 1;
const TOP_LEVEL_KEY = 2;
const WANTED_VALUE = 3;

// Where a number is in its grammar: -?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?
const AFTER_MINUS = 0;
const AFTER_ZERO = 1;
const IN_INTEGER = 2;
const AFTER_POINT = 3;
const IN_FRACTION = 4;
const AFTER_E = 5;
const AFTER_EXPONENT_SIGN = 6;
const IN_EXPONENT = 7;

// Kinds of open containers and of recorded values.
const OBJECT = 1;
const ARRAY = 2;
const NOTHING = 0;
const STRING = 3;
const STRING_TOO_LONG = 4;
const NUMBER = 5;
const BOOLEAN = 6;
const NULL = 7;

const LITERALS = { t: Buffer.from('true'), f: Buffer.from('false'), n: Buffer.from('null') };

class ScanError extends Error {
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(message);
  }
}

export function isWhitespace(byte: number): boolean {
  return byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09;
}

function isDigit(byte: number): boolean {
  return byte >= 0x30 && byte <= 0x39;
}

/** Whether an odd number of backslashes end just before `at`, counting back no further than `floor`. */
export function oddBackslashesBefore(buf: Buffer, at: number, floor: number): boolean {
  let i = at;
  while (i > floor && buf[i - 1] === BACKSLASH) i--;
  return (at - i) % 2 === 1;
}

/** The top-level keys a scan collects, prepared once so that most keys are rejected by length. */
export class WantedKeys {
  readonly names: readonly string[];
  /** UTF-8 bytes of each name, by index into `names`. */
  readonly bytes: readonly Buffer[];
  /**
   * By a key's byte length between its quotes: the indexes of the names it could decode to.
   * Escapes only lengthen, to at most 6 bytes (\uXXXX) per byte of UTF-8, so a name of n bytes
   * is spelt in n to 6n.
   */
  readonly candidates: readonly (readonly number[])[];

  constructor(names: readonly string[]) {
    this.names = [...new Set(names)];
    this.bytes = this.names.map((name) => Buffer.from(name));
    this.bytes.forEach((bytes, i) => {
      // A lone surrogate would not survive the byte comparison of keys.
      if (bytes.toString() !== this.names[i]) throw new RangeError(`wanted key ${JSON.stringify(this.names[i])} is not well-formed Unicode`);
    });
    const longest = Math.max(0, ...this.bytes.map((bytes) => bytes.length * MAX_ESCAPED_BYTES_PER_BYTE));
    this.candidates = Array.from({ length: longest + 1 }, (_, keyLength) =>
      this.bytes.flatMap((bytes, i) => (bytes.length <= keyLength && keyLength <= bytes.length * MAX_ESCAPED_BYTES_PER_BYTE ? [i] : [])),
    );
  }
}

/** Scans `body`, which must be one JSON object, collecting the values of the `wanted` top-level keys. */
export function scanTopLevel(body: Buffer, wanted: WantedKeys, options: ScanOptions = {}): ScanResult {
  return new TopLevelScanner(body, wanted, options).advance(body.length + 1)!;
}

/**
 * scanTopLevel in slices of `sliceBytes`, one per event-loop turn (setImmediate), so that I/O
 * and timers run in between; the first slice is scanned before it returns. Resolves with the
 * result scanTopLevel would give; rejects with `signal.reason` if the signal aborts first.
 */
export async function scanTopLevelSliced(body: Buffer, wanted: WantedKeys, options: SlicedScanOptions): Promise<ScanResult> {
  const { sliceBytes, signal, ...scanOptions } = options;
  const scanner = new TopLevelScanner(body, wanted, scanOptions);
  for (;;) {
    signal?.throwIfAborted();
    const result = scanner.advance(sliceBytes);
    if (result !== undefined) return result;
    await nextTurn();
  }
}

/**
 * The scan as a state machine with an explicit stack of open containers, so that it can stop
 * after any byte and resume there.
 */
export class TopLevelScanner {
  private pos = 0;
  private state = EXPECT_OBJECT;
  private outcome: ScanResult | undefined;
  /** The buffer cut at the current slice's end, so that Buffer.indexOf never reads past it. */
  private window: Buffer;
  /** Kinds of the open containers, the top-level object first. (A typed array costs more to make than a small body to scan.) */
  private readonly stack: number[] = [];
  /** Index into wanted.names of the current top-level member's key, or -1. */
  private member = -1;
  /** Where the current string, number or literal began. */
  private tokenStart = 0;
  private stringRole = SKIPPED;
  /** Whether the byte where the current string's scan resumes is escaped by the slice's last byte. */
  private escapePending = false;
  private numberPart = AFTER_MINUS;
  private literal: Buffer = LITERALS.t;
  private literalMatched = 0;
  /** Per wanted name: the kind of its last complete value, and where that value's bytes are. */
  private readonly recordedKind: number[];
  private readonly recordedStart: number[];
  private readonly recordedEnd: number[];
  private readonly partial: boolean;
  private readonly maxValueBytes: number;

  constructor(
    private readonly buf: Buffer,
    private readonly wanted: WantedKeys,
    options: ScanOptions = {},
  ) {
    this.window = buf;
    this.partial = options.partial ?? false;
    this.maxValueBytes = options.maxValueBytes ?? Infinity;
    if (!(this.maxValueBytes >= 0)) throw new RangeError(`maxValueBytes must be >= 0, not ${options.maxValueBytes}`);
    this.recordedKind = wanted.names.map(() => NOTHING);
    this.recordedStart = wanted.names.map(() => 0);
    this.recordedEnd = wanted.names.map(() => 0);
  }

  /** Open containers; the top-level object is at depth 1. */
  private get depth(): number {
    return this.stack.length;
  }

  /**
   * Scans at most `budget` more bytes. Returns the result once the scan is over (the end of the
   * body, or an error), undefined while there is more to scan.
   */
  advance(budget: number): ScanResult | undefined {
    if (!(budget >= 1)) throw new RangeError(`the scan budget must be at least 1 byte, not ${budget}`);
    if (this.outcome !== undefined) return this.outcome;
    const buf = this.buf;
    const stop = Math.min(this.pos + budget, buf.length);
    this.window = stop === buf.length ? buf : buf.subarray(0, stop);
    try {
      this.scan(stop);
      if (this.pos < buf.length) return undefined;
      this.outcome = this.endOfBody();
    } catch (err) {
      if (!(err instanceof ScanError)) throw err;
      this.outcome = { ok: false, error: err.message, offset: err.offset };
    }
    return this.outcome;
  }

  private fail(at: number, message: string): never {
    throw new ScanError(`${message} (at byte ${at})`, at);
  }

  private endOfBody(): ScanResult {
    const complete = this.state === EXPECT_END;
    if (!complete && !this.partial) this.fail(this.buf.length, 'unexpected end of the body');
    return { ok: true, complete, values: this.recordedValues() };
  }

  private recordedValues(): Map<string, ScannedValue> {
    const values = new Map<string, ScannedValue>();
    const names = this.wanted.names;
    for (let i = 0; i < names.length; i++) {
      const kind = this.recordedKind[i]!;
      const start = this.recordedStart[i]!;
      const end = this.recordedEnd[i]!;
      if (kind === NOTHING) continue;
      if (kind === STRING) values.set(names[i]!, { type: 'string', value: decodeContent(this.buf, start, end) });
      else if (kind === STRING_TOO_LONG) values.set(names[i]!, { type: 'string-too-long', bytes: end - start });
      else if (kind === OBJECT || kind === ARRAY) values.set(names[i]!, { type: kind === OBJECT ? 'object' : 'array' });
      else values.set(names[i]!, { type: kind === NUMBER ? 'number' : kind === BOOLEAN ? 'boolean' : 'null', raw: this.buf.toString('latin1', start, end) });
    }
    return values;
  }

  /**
   * Runs the state machine up to `stop`. Each handler consumes what it can and hands on directly
   * to the handler of what must follow (a comma to its key, a key to its colon, a colon to its
   * value), so the loop dispatches on `state` only once per member: after a value ends, a
   * container opens, or the slice ends. No chain leads back to its start, so the call depth stays
   * small. A handler that stops at `stop` leaves `state` saying where to resume.
   */
  private scan(stop: number): void {
    let pos = this.pos;
    while (pos < stop) {
      switch (this.state) {
        case EXPECT_COMMA_OR_CLOSE:
          pos = this.commaOrClose(pos, stop);
          break;
        case EXPECT_KEY_OR_CLOSE:
        case EXPECT_KEY:
          pos = this.key(pos, stop);
          break;
        case EXPECT_COLON:
          pos = this.colon(pos, stop);
          break;
        case EXPECT_VALUE_OR_CLOSE:
        case EXPECT_VALUE:
          pos = this.value(pos, stop);
          break;
        case IN_STRING:
          pos = this.string(pos, stop, this.escapePending);
          break;
        case IN_NUMBER:
          pos = this.number(pos, stop, this.numberPart);
          break;
        case IN_LITERAL:
          pos = this.literalRest(pos, stop, this.literal, this.literalMatched);
          break;
        case EXPECT_OBJECT:
          pos = this.topLevelObject(pos, stop);
          break;
        default:
          pos = this.trailingWhitespace(pos, stop);
      }
    }
    this.pos = pos;
  }

  private skipWhitespace(pos: number, stop: number): number {
    const buf = this.buf;
    // Most tokens follow each other without whitespace: one comparison settles that.
    if (pos < stop && buf[pos]! > 0x20) return pos;
    while (pos < stop && isWhitespace(buf[pos]!)) pos++;
    return pos;
  }

  private topLevelObject(pos: number, stop: number): number {
    pos = this.skipWhitespace(pos, stop);
    if (pos === stop) return pos;
    if (this.buf[pos] !== OPEN_BRACE) this.fail(pos, 'the body is not a JSON object');
    this.open(pos, OBJECT);
    return pos + 1;
  }

  private trailingWhitespace(pos: number, stop: number): number {
    pos = this.skipWhitespace(pos, stop);
    if (pos < stop) this.fail(pos, 'unexpected data after the JSON object');
    return pos;
  }

  /**
   * After a value in a container: ',' and the next member, or the end of this container. While
   * members end within the slice, it goes on with the next one (or the enclosing container's
   * end) itself rather than through the dispatch loop.
   */
  private commaOrClose(pos: number, stop: number): number {
    for (;;) {
      pos = this.skipWhitespace(pos, stop);
      if (pos === stop) return pos;
      const byte = this.buf[pos];
      const inObject = this.stack[this.depth - 1] === OBJECT;
      if (byte === COMMA) {
        this.state = inObject ? EXPECT_KEY : EXPECT_VALUE;
        pos = inObject ? this.key(pos + 1, stop) : this.value(pos + 1, stop);
        if (this.state !== EXPECT_COMMA_OR_CLOSE) return pos;
        continue;
      }
      if (byte !== (inObject ? CLOSE_BRACE : CLOSE_BRACKET)) {
        this.fail(pos, inObject ? "expected ',' or '}' in an object" : "expected ',' or ']' in an array");
      }
      this.closeContainer();
      pos++;
      if (this.state === EXPECT_END) return pos;
    }
  }

  /** A member's key (or, just after '{', the object's end). */
  private key(pos: number, stop: number): number {
    pos = this.skipWhitespace(pos, stop);
    if (pos === stop) return pos;
    const byte = this.buf[pos];
    if (byte === CLOSE_BRACE && this.state === EXPECT_KEY_OR_CLOSE) {
      this.closeContainer();
      return pos + 1;
    }
    if (byte !== QUOTE) this.fail(pos, 'expected a string key');
    this.tokenStart = pos;
    this.stringRole = this.depth === 1 ? TOP_LEVEL_KEY : NESTED_KEY;
    return this.string(pos + 1, stop, false);
  }

  private colon(pos: number, stop: number): number {
    pos = this.skipWhitespace(pos, stop);
    if (pos === stop) return pos;
    if (this.buf[pos] !== COLON) this.fail(pos, "expected ':' after a key");
    this.state = EXPECT_VALUE;
    return this.value(pos + 1, stop);
  }

  /** A value (or, just after '[', the array's end): its first byte says what it is. */
  private value(pos: number, stop: number): number {
    const buf = this.buf;
    pos = this.skipWhitespace(pos, stop);
    // An array's first element follows at once: take it here rather than in the dispatch loop.
    while (pos < stop && buf[pos] === OPEN_BRACKET) {
      this.open(pos, ARRAY);
      pos = this.skipWhitespace(pos + 1, stop);
    }
    if (pos === stop) return pos;
    const byte = buf[pos]!;
    this.tokenStart = pos;
    if (byte === QUOTE) {
      this.stringRole = this.depth === 1 && this.member !== -1 ? WANTED_VALUE : SKIPPED;
      return this.string(pos + 1, stop, false);
    }
    if (isDigit(byte)) return this.number(pos + 1, stop, byte === 0x30 ? AFTER_ZERO : IN_INTEGER);
    switch (byte) {
      case MINUS:
        return this.number(pos + 1, stop, AFTER_MINUS);
      case OPEN_BRACE:
        this.open(pos, OBJECT);
        return pos + 1;
      case CLOSE_BRACKET:
        if (this.state !== EXPECT_VALUE_OR_CLOSE) this.fail(pos, 'unexpected character');
        this.closeContainer();
        return pos + 1;
      case 0x74: // t
        return this.literalRest(pos + 1, stop, LITERALS.t, 1);
      case 0x66: // f
        return this.literalRest(pos + 1, stop, LITERALS.f, 1);
      case 0x6e: // n
        return this.literalRest(pos + 1, stop, LITERALS.n, 1);
      default:
        return this.fail(pos, 'unexpected character');
    }
  }

  private open(pos: number, kind: number): void {
    if (this.depth > MAX_DEPTH) this.fail(pos, `nesting deeper than ${MAX_DEPTH} levels`);
    this.stack.push(kind);
    this.state = kind === OBJECT ? EXPECT_KEY_OR_CLOSE : EXPECT_VALUE_OR_CLOSE;
  }

  /** After a closing bracket or brace. */
  private closeContainer(): void {
    const kind = this.stack.pop()!;
    if (this.depth === 0) this.state = EXPECT_END;
    else this.valueEnded(kind, 0);
  }

  /** A value ended at `end`: records it if it is a wanted top-level member's. */
  private valueEnded(kind: number, end: number): void {
    if (this.depth === 1 && this.member !== -1) this.record(kind, this.tokenStart, end);
    this.state = EXPECT_COMMA_OR_CLOSE;
  }

  private record(kind: number, start: number, end: number): void {
    this.recordedKind[this.member] = kind;
    this.recordedStart[this.member] = start;
    this.recordedEnd[this.member] = end;
  }

  /** Matches the rest of a literal whose first `matched` bytes are behind `pos`. */
  private literalRest(pos: number, stop: number, literal: Buffer, matched: number): number {
    for (; matched < literal.length && pos < stop; matched++, pos++) {
      if (this.buf[pos] !== literal[matched]) this.fail(pos, `invalid literal, expected ${literal.toString()}`);
    }
    if (matched === literal.length) {
      this.valueEnded(literal === LITERALS.n ? NULL : BOOLEAN, pos);
    } else {
      this.state = IN_LITERAL;
      this.literal = literal;
      this.literalMatched = matched;
    }
    return pos;
  }

  /** Follows the number grammar up to `stop`; the number has ended if that happens before `stop`. */
  private number(pos: number, stop: number, part: number): number {
    // Most numbers are plain integers: a loop small enough for V8 to inline settles them.
    if (part === IN_INTEGER) {
      const buf = this.buf;
      while (pos < stop && isDigit(buf[pos]!)) pos++;
      const next = pos < stop ? buf[pos]! : POINT;
      if (next !== POINT && (next | 0x20) !== 0x65) return this.numberEnded(pos);
    }
    return this.numberParts(pos, stop, part);
  }

  /** The whole number grammar, one part after the other from the part where it left off. */
  private numberParts(pos: number, stop: number, part: number): number {
    const buf = this.buf;
    if (part === AFTER_MINUS) {
      if (pos === stop) return this.numberPaused(part, pos);
      const byte = buf[pos]!;
      if (!isDigit(byte)) this.fail(pos, 'invalid number');
      part = byte === 0x30 ? AFTER_ZERO : IN_INTEGER;
      pos++;
    }
    if (part === IN_INTEGER) while (pos < stop && isDigit(buf[pos]!)) pos++;
    if (part === IN_INTEGER || part === AFTER_ZERO) {
      if (pos === stop) return this.numberPaused(part, pos);
      const byte = buf[pos]!;
      if (byte === POINT) part = AFTER_POINT;
      else if ((byte | 0x20) === 0x65) part = AFTER_E;
      else return this.numberEnded(pos);
      pos++;
    }
    if (part === AFTER_POINT) {
      if (pos === stop) return this.numberPaused(part, pos);
      if (!isDigit(buf[pos]!)) this.fail(pos, 'invalid number');
      part = IN_FRACTION;
      pos++;
    }
    if (part === IN_FRACTION) {
      while (pos < stop && isDigit(buf[pos]!)) pos++;
      if (pos === stop) return this.numberPaused(part, pos);
      if ((buf[pos]! | 0x20) !== 0x65) return this.numberEnded(pos);
      part = AFTER_E;
      pos++;
    }
    if (part === AFTER_E) {
      if (pos === stop) return this.numberPaused(part, pos);
      const byte = buf[pos]!;
      if (byte === PLUS || byte === MINUS) part = AFTER_EXPONENT_SIGN;
      else if (isDigit(byte)) part = IN_EXPONENT;
      else this.fail(pos, 'invalid number');
      pos++;
    }
    if (part === AFTER_EXPONENT_SIGN) {
      if (pos === stop) return this.numberPaused(part, pos);
      if (!isDigit(buf[pos]!)) this.fail(pos, 'invalid number');
      part = IN_EXPONENT;
      pos++;
    }
    while (pos < stop && isDigit(buf[pos]!)) pos++;
    return pos === stop ? this.numberPaused(part, pos) : this.numberEnded(pos);
  }

  private numberPaused(part: number, pos: number): number {
    this.state = IN_NUMBER;
    this.numberPart = part;
    return pos;
  }

  private numberEnded(end: number): number {
    this.valueEnded(NUMBER, end);
    return end;
  }

  /** Inside a string: up to its closing quote, then what follows it. */
  private string(pos: number, stop: number, escapePending: boolean): number {
    const quote = this.closingQuote(pos, stop, escapePending);
    return quote === -1 ? stop : this.stringEnded(quote, stop);
  }

  /**
   * The current string's closing quote, searched from `pos` up to `stop`, or -1 when the slice
   * ends first (the search then resumes there, `escapePending` saying whether its first byte is
   * escaped by the slice's last).
   */
  private closingQuote(pos: number, stop: number, escapePending: boolean): number {
    const buf = this.buf;
    let from = escapePending ? pos + 1 : pos;
    for (;;) {
      // Byte by byte first, following escapes: keys and short values end within a few bytes,
      // where a JS loop beats the native call's fixed cost, and so do runs of escaped quotes.
      const shortEnd = Math.min(from + SHORT_STRING_BYTES, stop);
      let i = from;
      while (i < shortEnd) {
        const byte = buf[i];
        if (byte === QUOTE) return i;
        i += byte === BACKSLASH ? 2 : 1;
      }
      // i > stop: the slice ends on a backslash, which escapes the next slice's first byte.
      if (i >= stop) return this.sliceEndsInString(i > stop);
      // Then memchr. A quote it finds is escaped if an odd number of backslashes precede it;
      // no escape spans i, so the count stops there and never counts a backslash twice.
      const quote = this.window.indexOf(QUOTE, i);
      if (quote === -1) return this.sliceEndsInString(oddBackslashesBefore(buf, stop, i));
      if (!oddBackslashesBefore(buf, quote, i)) return quote;
      from = quote + 1;
    }
  }

  private sliceEndsInString(escapePending: boolean): -1 {
    this.state = IN_STRING;
    this.escapePending = escapePending;
    return -1;
  }

  /** The current string's closing quote is at `quote`; goes on with what follows it. */
  private stringEnded(quote: number, stop: number): number {
    const start = this.tokenStart + 1;
    const role = this.stringRole;
    if (role === TOP_LEVEL_KEY) {
      this.member = this.wantedIndex(start, quote);
      // A repeated key: the last value counts, so an earlier one is forgotten.
      if (this.member !== -1) this.recordedKind[this.member] = NOTHING;
    }
    if (role === TOP_LEVEL_KEY || role === NESTED_KEY) {
      this.state = EXPECT_COLON;
      return this.colon(quote + 1, stop);
    }
    if (role === WANTED_VALUE) this.recordWantedString(start, quote);
    this.state = EXPECT_COMMA_OR_CLOSE;
    return quote + 1;
  }

  private recordWantedString(start: number, end: number): void {
    if (end - start > this.maxValueBytes) {
      this.record(STRING_TOO_LONG, start, end);
      return;
    }
    const invalid = invalidEscapeAt(this.buf, start, end);
    if (invalid !== -1) this.fail(invalid, 'invalid escape in a string');
    this.record(STRING, start, end);
  }

  /** The index of the wanted name that the key buf[start, end) decodes to, or -1. */
  private wantedIndex(start: number, end: number): number {
    const candidates = this.wanted.candidates[end - start];
    if (candidates === undefined) return -1;
    for (let i = 0; i < candidates.length; i++) {
      const comparison = compareWithName(this.buf, start, end, this.wanted.bytes[candidates[i]!]!);
      if (comparison === EQUAL) return candidates[i]!;
      if (comparison !== DIFFERENT) this.fail(comparison, 'invalid escape in a string');
    }
    return -1;
  }
}
