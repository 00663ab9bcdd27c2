import {
  BACKSLASH,
  CLOSE_BRACE,
  CLOSE_BRACKET,
  COLON,
  COMMA,
  isWhitespace,
  OPEN_BRACE,
  OPEN_BRACKET,
  oddBackslashesBefore,
  QUOTE,
} from '../request/json-scan.js';
import { compareWithName, EQUAL } from '../request/json-string.js';
import { readUsage, type SkipListener, type TokenUsage, type UsageReader } from './usage.js';

/** A top-level `usage` value longer than this is not read (OpenAI's, with its details, is under 1 KiB). */
const MAX_USAGE_BYTES = 64 * 1024;

const USAGE = Buffer.from('usage');
/** Escapes take at most 6 bytes per byte of the name, so a longer key cannot be `usage`. */
const MAX_KEY_BYTES = USAGE.length * 6;

/**
 * The top-level `usage` of a JSON response body fed in chunks, without keeping the body: it
 * follows only nesting depth and string boundaries (memchr over string contents, escapes across
 * chunk ends), collects the bytes of top-level keys up to `usage`'s longest spelling, and copies
 * the bytes of the top-level `usage` value (at most `maxUsageBytes`), which JSON.parse then reads.
 * It is no JSON validator: a body that is not an object is ignored, and what is counted is only
 * what the `usage` value says. (src/request/json-scan.ts validates, but it works on one buffer
 * holding the whole body.)
 */
export class JsonUsageReader implements UsageReader {
  usage: TokenUsage | undefined;
  private depth = 0;
  /** Gave up: not an object, or the top-level object ended. */
  private done = false;
  private inString = false;
  /** The chunk ended on a backslash inside a string: the next chunk's first byte is escaped. */
  private escapePending = false;
  /** The next string at depth 1 is a key (after '{' or ','). */
  private expectKey = false;
  /** Collecting a top-level key's bytes; over MAX_KEY_BYTES they are dropped (not `usage`). */
  private key: number[] | undefined;
  /** The top-level key just read was `usage`: its value follows the colon. */
  private usageKey = false;
  /** Copying the `usage` value: its bytes from earlier chunks, or undefined when not copying. */
  private value: Buffer[] | undefined;
  private valueBytes = 0;
  /** Where the `usage` value starts in the current chunk (0 when it began in an earlier one). */
  private valueStart = 0;

  constructor(
    private readonly skipped: SkipListener,
    private readonly maxUsageBytes = MAX_USAGE_BYTES,
  ) {}

  feed(chunk: Buffer): void {
    if (this.done) return;
    this.valueStart = 0;
    let pos = 0;
    while (pos < chunk.length && !this.done) {
      if (this.inString) {
        pos = this.key ? this.keyBytes(chunk, pos) : this.skipString(chunk, pos);
        continue;
      }
      this.structural(chunk, chunk[pos]!, pos);
      pos++;
    }
    if (this.value !== undefined && !this.done) this.keepValue(chunk.subarray(this.valueStart));
  }

  private structural(chunk: Buffer, byte: number, pos: number): void {
    if (this.depth === 0) {
      if (byte === OPEN_BRACE) {
        this.depth = 1;
        this.expectKey = true;
      } else if (!isWhitespace(byte)) {
        this.giveUp('the JSON response body is not an object');
      }
      return;
    }
    switch (byte) {
      case QUOTE:
        this.inString = true;
        if (this.depth === 1 && this.expectKey) {
          this.key = [];
          this.expectKey = false;
        }
        return;
      case OPEN_BRACE:
      case OPEN_BRACKET:
        this.depth++;
        return;
      case CLOSE_BRACE:
      case CLOSE_BRACKET:
        if (this.depth === 1) this.memberEnded(chunk, pos);
        if (--this.depth === 0) this.done = true;
        return;
      case COMMA:
        if (this.depth === 1) {
          this.memberEnded(chunk, pos);
          this.expectKey = true;
        }
        return;
      case COLON:
        if (this.usageKey) {
          this.usageKey = false;
          this.value = [];
          this.valueBytes = 0;
          this.valueStart = pos + 1;
        }
        return;
    }
  }

  /** Inside a top-level key: its bytes are kept (they are few) up to the closing quote. */
  private keyBytes(chunk: Buffer, pos: number): number {
    const key = this.key!;
    for (; pos < chunk.length; pos++) {
      const byte = chunk[pos]!;
      if (this.escapePending) this.escapePending = false;
      else if (byte === BACKSLASH) this.escapePending = true;
      else if (byte === QUOTE) {
        this.inString = false;
        this.key = undefined;
        const bytes = Buffer.from(key);
        this.usageKey = key.length <= MAX_KEY_BYTES && compareWithName(bytes, 0, bytes.length, USAGE) === EQUAL;
        return pos + 1;
      }
      if (key.length <= MAX_KEY_BYTES) key.push(byte);
    }
    return pos;
  }

  /** Inside any other string: straight to its closing quote, or to the chunk's end. */
  private skipString(chunk: Buffer, pos: number): number {
    let from = this.escapePending ? pos + 1 : pos;
    this.escapePending = false;
    for (;;) {
      const quote = chunk.indexOf(QUOTE, from);
      if (quote === -1) {
        this.escapePending = oddBackslashesBefore(chunk, chunk.length, from);
        return chunk.length;
      }
      if (!oddBackslashesBefore(chunk, quote, from)) {
        this.inString = false;
        return quote + 1;
      }
      from = quote + 1;
    }
  }

  /** A top-level member ended at `pos` (',' or '}'): the `usage` value, if it was one, is read. */
  private memberEnded(chunk: Buffer, pos: number): void {
    if (this.value === undefined) return;
    this.keepValue(chunk.subarray(this.valueStart, pos));
    const parts = this.value;
    this.value = undefined;
    if (parts === undefined) return; // over the cap
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.concat(parts, this.valueBytes).toString());
    } catch {
      this.skipped('the usage value of a JSON response body is not JSON');
      return;
    }
    // A repeated key: the last one counts, as with JSON.parse.
    this.usage = readUsage(parsed);
  }

  private keepValue(bytes: Buffer): void {
    if (this.value === undefined) return;
    this.valueStart = 0;
    if (this.valueBytes + bytes.length > this.maxUsageBytes) {
      this.value = undefined;
      this.skipped(`a usage value over ${this.maxUsageBytes} bytes was skipped`);
      return;
    }
    this.value.push(Buffer.from(bytes));
    this.valueBytes += bytes.length;
  }

  private giveUp(reason: string): void {
    this.done = true;
    this.skipped(reason);
  }
}
