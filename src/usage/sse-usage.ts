import { readUsage, type SkipListener, type TokenUsage, type UsageReader } from './usage.js';

/** An SSE event's data longer than this is dropped, not buffered (a usage chunk is a few hundred bytes). */
const MAX_EVENT_BYTES = 1024 * 1024;

const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;
const DATA_FIELD = Buffer.from('data:');
const USAGE_KEY = Buffer.from('"usage"');

/**
 * The usage of an OpenAI-style SSE stream (`data: {...}` events, `data: [DONE]`): the `usage` of
 * the last event that has one. With `stream_options.include_usage` that is the final chunk; with
 * vLLM's `continuous_usage_stats` every chunk carries the running totals, and the last one wins
 * (never a sum). Works on bytes: chunks may split anywhere (a UTF-8 sequence, `data:`, a CRLF),
 * and only the current line and event are kept, up to `maxEventBytes`. Only events whose bytes
 * contain `"usage"` are decoded and parsed.
 */
export class SseUsageReader implements UsageReader {
  usage: TokenUsage | undefined;
  /** The current line's bytes from earlier chunks (copies: Envoy's buffers are not kept). */
  private line: Buffer[] = [];
  private lineBytes = 0;
  /** The current event's data lines (views into the chunk while it is being read). */
  private data: Buffer[] = [];
  private dataBytes = 0;
  /** The current event went over the cap: the rest of it is dropped until it ends. */
  private oversized = false;
  /** The current line went over the cap: its bytes are dropped until it ends. */
  private skippingLine = false;
  /** The last chunk ended in CR: an LF opening the next one ends no second line. */
  private afterCr = false;

  constructor(
    private readonly skipped: SkipListener,
    private readonly maxEventBytes = MAX_EVENT_BYTES,
  ) {}

  feed(chunk: Buffer): void {
    let pos = this.afterCr && chunk[0] === LF ? 1 : 0;
    this.afterCr = false;
    // Next LF and CR at or after pos; -1 once the chunk has none left (each byte searched once).
    let lf = -2;
    let cr = -2;
    while (pos < chunk.length) {
      if (lf !== -1 && lf < pos) lf = chunk.indexOf(LF, pos);
      if (cr !== -1 && cr < pos) cr = chunk.indexOf(CR, pos);
      const end = lf === -1 ? cr : cr === -1 ? lf : Math.min(lf, cr);
      if (end === -1) {
        this.keepPartialLine(chunk.subarray(pos));
        break;
      }
      this.lineEnded(chunk.subarray(pos, end));
      pos = end + 1;
      if (chunk[end] === CR) {
        if (pos === chunk.length) this.afterCr = true;
        else if (chunk[pos] === LF) pos++;
      }
    }
    // An event still open keeps its data as a copy, not the chunk it points into.
    if (this.data.length > 0) this.data = [Buffer.concat(this.data, this.dataBytes)];
  }

  private keepPartialLine(rest: Buffer): void {
    if (this.skippingLine) return;
    if (this.lineBytes + rest.length + this.dataBytes > this.maxEventBytes) {
      this.dropEvent();
      this.skippingLine = true;
      return;
    }
    this.line.push(Buffer.from(rest));
    this.lineBytes += rest.length;
  }

  private lineEnded(tail: Buffer): void {
    if (this.skippingLine) {
      this.skippingLine = false;
      return;
    }
    let line = tail;
    if (this.line.length > 0) {
      this.line.push(tail);
      line = Buffer.concat(this.line, this.lineBytes + tail.length);
      this.line = [];
      this.lineBytes = 0;
    }
    if (line.length === 0) {
      this.dispatch();
      return;
    }
    if (this.oversized || !startsWith(line, DATA_FIELD)) return; // comments, event:, id:, retry:
    const value = line.subarray(line[DATA_FIELD.length] === SPACE ? DATA_FIELD.length + 1 : DATA_FIELD.length);
    // The spec joins an event's data lines with LF; count that byte too.
    const bytes = this.dataBytes + (this.data.length > 0 ? 1 : 0) + value.length;
    if (bytes > this.maxEventBytes) {
      this.dropEvent();
      return;
    }
    if (this.data.length > 0) this.data.push(NEWLINE);
    this.data.push(value);
    this.dataBytes = bytes;
  }

  private dropEvent(): void {
    this.skipped(`an SSE event over ${this.maxEventBytes} bytes was skipped`);
    this.oversized = true;
    this.data = [];
    this.dataBytes = 0;
    this.line = [];
    this.lineBytes = 0;
  }

  /** A blank line: the event is complete. */
  private dispatch(): void {
    const parts = this.data;
    this.data = [];
    this.dataBytes = 0;
    this.oversized = false;
    if (parts.length === 0) return;
    const data = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    if (data.indexOf(USAGE_KEY) === -1) return; // token chunks, [DONE]
    let event: unknown;
    try {
      event = JSON.parse(data.toString());
    } catch {
      this.skipped('an SSE event that mentions usage is not JSON');
      return;
    }
    const usage = readUsage((event as { usage?: unknown } | null)?.usage);
    if (usage) this.usage = usage;
  }
}

const NEWLINE = Buffer.from('\n');

function startsWith(buf: Buffer, prefix: Buffer): boolean {
  return buf.length >= prefix.length && buf.compare(prefix, 0, prefix.length, 0, prefix.length) === 0;
}
