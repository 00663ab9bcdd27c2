/**
 * Reads the string values of a few top-level keys of a JSON object without materialising it.
 *
 * A request body can be tens of MiB of prompt text, and routing needs only `model` and the engine
 * selector. JSON.parse would decode the whole buffer into a JS string and build every object; this
 * scanner walks the bytes once, jumps over string contents with Buffer.indexOf (native memchr) and
 * still checks the document's structure (brackets, commas, colons, literals, numbers), so
 * malformed JSON is rejected. It does not check what is inside strings (control characters, escape
 * letters, UTF-8 validity): the model server parses the body itself and answers such errors.
 * `bench/json-scan.ts` measures it against JSON.parse.
 */

export type ScanResult =
  | { ok: true; values: Map<string, ScannedValue> }
  | { ok: false; error: string; offset: number };

/** A wanted key's value: its string content, or the JSON type it had instead of a string. */
export type ScannedValue =
  | { type: 'string'; value: string }
  | { type: 'number' | 'boolean' | 'null' | 'object' | 'array'; raw?: string };

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const COLON = 0x3a;
const COMMA = 0x2c;
const SHORT_STRING_BYTES = 48;
const NO_KEYS: readonly { name: string; bytes: Buffer }[] = [];
/** Deeper nesting is refused rather than risking the call stack. */
const MAX_DEPTH = 256;

class ScanError extends Error {
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(message);
  }
}

function isWhitespace(byte: number): boolean {
  return byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09;
}

/** The top-level keys a scan collects, prepared once so that most keys are rejected by length. */
export class WantedKeys {
  readonly names: ReadonlySet<string>;
  /** Key bytes by byte length. */
  readonly byLength = new Map<number, { name: string; bytes: Buffer }[]>();
  /** An escaped key takes at most 6 bytes per character (\uXXXX); longer keys are never wanted. */
  readonly longestEscaped: number;

  constructor(names: readonly string[]) {
    this.names = new Set(names);
    let longest = 0;
    for (const name of names) {
      const bytes = Buffer.from(name);
      const sameLength = this.byLength.get(bytes.length) ?? [];
      sameLength.push({ name, bytes });
      this.byLength.set(bytes.length, sameLength);
      longest = Math.max(longest, bytes.length * 6);
    }
    this.longestEscaped = longest;
  }
}

/** Scans `body`, which must be one JSON object, collecting the values of the `wanted` top-level keys. */
export function scanTopLevel(body: Buffer, wanted: WantedKeys): ScanResult {
  try {
    return { ok: true, values: new Scanner(body, wanted).run() };
  } catch (err) {
    if (err instanceof ScanError) return { ok: false, error: err.message, offset: err.offset };
    throw err;
  }
}

class Scanner {
  private pos = 0;
  private depth = 0;
  private readonly values = new Map<string, ScannedValue>();

  constructor(
    private readonly buf: Buffer,
    private readonly wanted: WantedKeys,
  ) {}

  run(): Map<string, ScannedValue> {
    this.skipWhitespace();
    if (this.buf[this.pos] !== OPEN_BRACE) this.fail('the body is not a JSON object');
    this.scanObject(true);
    this.skipWhitespace();
    if (this.pos !== this.buf.length) this.fail('unexpected data after the JSON object');
    return this.values;
  }

  private fail(message: string): never {
    throw new ScanError(`${message} (at byte ${this.pos})`, this.pos);
  }

  private skipWhitespace(): void {
    const buf = this.buf;
    let pos = this.pos;
    while (pos < buf.length && isWhitespace(buf[pos]!)) pos++;
    this.pos = pos;
  }

  /** Positioned on '{'. Top-level members whose key is wanted are recorded. */
  private scanObject(topLevel: boolean): void {
    this.pos++;
    this.skipWhitespace();
    if (this.buf[this.pos] === CLOSE_BRACE) {
      this.pos++;
      return;
    }
    for (;;) {
      if (this.buf[this.pos] !== QUOTE) this.fail('expected a string key');
      const keyStart = this.pos;
      const keyEnd = this.skipString();
      this.skipWhitespace();
      if (this.buf[this.pos] !== COLON) this.fail("expected ':' after a key");
      this.pos++;
      this.skipWhitespace();
      const key = topLevel ? this.wantedKey(keyStart, keyEnd) : undefined;
      if (key !== undefined) {
        this.values.set(key, this.scanWantedValue());
      } else {
        this.skipValue();
      }
      if (!this.anotherMember(CLOSE_BRACE, "expected ',' or '}' in an object")) return;
    }
  }

  private scanArray(): void {
    this.pos++;
    this.skipWhitespace();
    if (this.buf[this.pos] === CLOSE_BRACKET) {
      this.pos++;
      return;
    }
    do this.skipValue();
    while (this.anotherMember(CLOSE_BRACKET, "expected ',' or ']' in an array"));
  }

  /** After a member: consumes ',' (true: another follows) or the closing byte (false). */
  private anotherMember(close: number, error: string): boolean {
    this.skipWhitespace();
    const next = this.buf[this.pos];
    if (next === COMMA) {
      this.pos++;
      this.skipWhitespace();
      return true;
    }
    if (next !== close) this.fail(error);
    this.pos++;
    return false;
  }

  private scanWantedValue(): ScannedValue {
    const start = this.pos;
    const first = this.buf[start];
    if (first === QUOTE) {
      const end = this.skipString();
      return { type: 'string', value: this.decodeString(start, end) };
    }
    const type = this.skipValue();
    if (type === 'object' || type === 'array') return { type };
    return { type: type as 'number' | 'boolean' | 'null', raw: this.buf.toString('latin1', start, this.pos) };
  }

  /** Skips any JSON value; returns its type. */
  private skipValue(): ScannedValue['type'] {
    const byte = this.buf[this.pos];
    switch (byte) {
      case QUOTE:
        this.skipString();
        return 'string';
      case OPEN_BRACE:
        this.enter();
        this.scanObject(false);
        this.depth--;
        return 'object';
      case OPEN_BRACKET:
        this.enter();
        this.scanArray();
        this.depth--;
        return 'array';
      case 0x74: // t
        this.expectLiteral('true');
        return 'boolean';
      case 0x66: // f
        this.expectLiteral('false');
        return 'boolean';
      case 0x6e: // n
        this.expectLiteral('null');
        return 'null';
      default:
        if (byte === 0x2d || (byte !== undefined && byte >= 0x30 && byte <= 0x39)) {
          this.skipNumber();
          return 'number';
        }
        return this.fail(byte === undefined ? 'unexpected end of the body' : 'unexpected character');
    }
  }

  private enter(): void {
    if (++this.depth > MAX_DEPTH) this.fail(`nesting deeper than ${MAX_DEPTH} levels`);
  }

  private expectLiteral(literal: string): void {
    for (let i = 0; i < literal.length; i++) {
      if (this.buf[this.pos + i] !== literal.charCodeAt(i)) this.fail(`invalid literal, expected ${literal}`);
    }
    this.pos += literal.length;
  }

  /** JSON number grammar: -?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)? */
  private skipNumber(): void {
    const buf = this.buf;
    let pos = this.pos;
    const isDigit = (b: number | undefined) => b !== undefined && b >= 0x30 && b <= 0x39;
    if (buf[pos] === 0x2d) pos++;
    if (buf[pos] === 0x30) pos++;
    else if (isDigit(buf[pos])) while (isDigit(buf[pos])) pos++;
    else this.failAt(pos, 'invalid number');
    if (buf[pos] === 0x2e) {
      pos++;
      if (!isDigit(buf[pos])) this.failAt(pos, 'invalid number');
      while (isDigit(buf[pos])) pos++;
    }
    if (buf[pos] === 0x65 || buf[pos] === 0x45) {
      pos++;
      if (buf[pos] === 0x2b || buf[pos] === 0x2d) pos++;
      if (!isDigit(buf[pos])) this.failAt(pos, 'invalid number');
      while (isDigit(buf[pos])) pos++;
    }
    this.pos = pos;
  }

  private failAt(pos: number, message: string): never {
    this.pos = pos;
    return this.fail(message);
  }

  /** Positioned on the opening quote; leaves pos after the closing quote; returns its index. */
  private skipString(): number {
    const buf = this.buf;
    let search = this.pos + 1;
    for (;;) {
      const quote = this.nextQuote(search);
      if (quote === -1) this.failAt(buf.length, 'unterminated string');
      // The quote is escaped when an odd number of backslashes precede it.
      let backslashes = 0;
      while (buf[quote - 1 - backslashes] === BACKSLASH) backslashes++;
      if (backslashes % 2 === 0) {
        this.pos = quote + 1;
        return quote;
      }
      search = quote + 1;
    }
  }

  /**
   * Keys and short values end within a few bytes, where a JS loop beats the native call's fixed
   * cost; long strings (prompts) are left to Buffer.indexOf.
   */
  private nextQuote(from: number): number {
    const buf = this.buf;
    const end = Math.min(from + SHORT_STRING_BYTES, buf.length);
    for (let i = from; i < end; i++) if (buf[i] === QUOTE) return i;
    return end === buf.length ? -1 : buf.indexOf(QUOTE, end);
  }

  /** Decodes the string whose opening quote is at `start` and closing quote at `end`. */
  private decodeString(start: number, end: number): string {
    const buf = this.buf;
    let escaped = false;
    for (let i = start + 1; i < end; i++) {
      if (buf[i] === BACKSLASH) {
        escaped = true;
        break;
      }
    }
    if (!escaped) return buf.toString('utf8', start + 1, end);
    try {
      return JSON.parse(buf.toString('utf8', start, end + 1)) as string;
    } catch {
      return this.failAt(start, 'invalid escape in a string');
    }
  }

  /** The wanted key between the quotes at `start` and `end`, if it is one. */
  private wantedKey(start: number, end: number): string | undefined {
    const buf = this.buf;
    const length = end - start - 1;
    for (const { name, bytes } of this.wanted.byLength.get(length) ?? NO_KEYS) {
      let i = 0;
      while (i < length && buf[start + 1 + i] === bytes[i]) i++;
      if (i === length) return name;
    }
    // Only a key spelt with escapes (e.g. "mod\u0065l") can still be a wanted one.
    if (length > this.wanted.longestEscaped || buf.subarray(start + 1, end).indexOf(BACKSLASH) === -1) return undefined;
    const key = this.decodeString(start, end);
    return this.wanted.names.has(key) ? key : undefined;
  }
}
