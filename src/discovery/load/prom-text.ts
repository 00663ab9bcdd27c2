/**
 * A strict reader of the Prometheus text exposition format, version 0.0.4, for what the load
 * scraper needs: the samples of a few named metrics. It is written for untrusted answers: it
 * reads line by line in one pass with no backtracking regular expressions, so its work is linear
 * in the size of the text (which the GET's byte limit bounds), and anything that is not the
 * format fails with the line number and the reason.
 *
 * Accepted: `# HELP` / `# TYPE` lines and other comments; blank lines; LF or CRLF line ends and a
 * missing final newline; metric names with `:`; label sets with blanks around the tokens, a
 * trailing comma and the escapes `\\`, `\"` and `\n` in values; values in decimal or exponent
 * notation, `NaN`, `+Inf`, `-Inf` (the spellings Go's ParseFloat takes, which Prometheus uses);
 * an optional integer timestamp in milliseconds.
 */

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

/** One sample line. */
export interface PromSample {
  /** Label names → unescaped values. Own properties only (a label may be called `__proto__`). */
  readonly labels: Readonly<Record<string, string>>;
  /** As written: NaN, +Inf and -Inf included; the caller decides what they mean. */
  readonly value: number;
  /** Milliseconds since the epoch, when the line carries a timestamp. */
  readonly timestampMs: number | undefined;
}

/** Metric name → its samples in the order they appeared; a name with no sample line is absent. */
export type PromSeries = Map<string, PromSample[]>;

export interface PromTextOptions {
  /**
   * Read only these metric names. Lines of other metrics are checked only for starting with a
   * valid metric name (which is what tells an HTML page or a JSON error from exposition text)
   * and are then skipped without looking at their labels and value: most of an engine's answer
   * is histograms the scraper does not use.
   */
  names?: ReadonlySet<string>;
}

/** The text is not Prometheus exposition text: `line 3: ...`. */
export class PromTextError extends Error {
  constructor(
    /** 1-based. */
    readonly line: number,
    readonly reason: string,
  ) {
    super(`line ${line}: ${reason}`);
    this.name = 'PromTextError';
  }
}

const METRIC_TYPES: ReadonlySet<string> = new Set<MetricType>(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

const CR = 0x0d;
const SPACE = 0x20;
const TAB = 0x09;
const HASH = 0x23;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const EQUALS = 0x3d;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;

/** Longest value or timestamp token accepted; real ones are under 30 characters. */
const MAX_NUMBER_TOKEN = 64;

/** Reads `text`; throws PromTextError on the first line that is not the format. */
export function parsePromText(text: string, options: PromTextOptions = {}): PromSeries {
  const reader = new Reader(text, options.names);
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf('\n', start);
    if (end === -1) end = text.length;
    reader.line(start, end > start && text.charCodeAt(end - 1) === CR ? end - 1 : end);
    start = end + 1;
  }
  return reader.series;
}

class Reader {
  readonly series: PromSeries = new Map();
  private readonly typed = new Set<string>();
  private lineNumber = 0;
  /** Position in `text` while a line is read, and where that line ends (exclusive, CR dropped). */
  private pos = 0;
  private end = 0;

  constructor(
    private readonly text: string,
    private readonly wanted: ReadonlySet<string> | undefined,
  ) {}

  line(start: number, end: number): void {
    this.lineNumber++;
    this.pos = start;
    this.end = end;
    this.skipBlanks();
    if (this.pos === end) return;
    if (this.text.charCodeAt(this.pos) === HASH) this.comment();
    else this.sample();
  }

  private comment(): void {
    this.pos++;
    this.skipBlanks();
    const keyword = this.token();
    if (keyword !== 'HELP' && keyword !== 'TYPE') return; // any other comment is free text
    this.skipBlanks();
    const name = this.metricName();
    if (name === '') this.fail(`# ${keyword} without a metric name`);
    if (this.pos < this.end && !this.atBlank()) this.fail(`# ${keyword}: ${this.describeFrom(this.pos)} is not part of a metric name`);
    this.skipBlanks();
    if (keyword === 'TYPE') {
      const type = this.token();
      if (type === '') this.fail(`# TYPE ${name} without a type`);
      if (!METRIC_TYPES.has(type)) this.fail(`# TYPE ${name}: ${JSON.stringify(clip(type))} is not one of ${[...METRIC_TYPES].join(', ')}`);
      this.skipBlanks();
      if (this.pos < this.end) this.fail(`# TYPE ${name} ${type}: unexpected ${this.describeFrom(this.pos)} after the type`);
      if (this.typed.has(name)) this.fail(`a second # TYPE line for ${name}`);
      this.typed.add(name);
    } else if (this.wanted === undefined || this.wanted.has(name)) {
      this.checkHelpEscapes(name);
    }
  }

  /** HELP text may escape only `\\` and `\n`. */
  private checkHelpEscapes(name: string): void {
    for (let i = this.text.indexOf('\\', this.pos); i !== -1 && i < this.end; i = this.text.indexOf('\\', i + 2)) {
      const next = i + 1 < this.end ? this.text[i + 1] : '';
      if (next !== '\\' && next !== 'n') this.fail(`# HELP ${name}: invalid escape ${JSON.stringify(`\\${next}`)} (only \\\\ and \\n)`);
    }
  }

  private sample(): void {
    const nameStart = this.pos;
    const name = this.metricName();
    if (name === '') this.fail(`expected a metric name or a comment, found ${this.describeFrom(nameStart)}`);
    const next = this.pos < this.end ? this.text.charCodeAt(this.pos) : -1;
    if (next !== OPEN_BRACE && next !== SPACE && next !== TAB) {
      if (next === -1) this.fail(`${name} has no value`);
      this.fail(`${this.describeFrom(nameStart)} is not a metric name followed by labels or a value`);
    }
    if (this.wanted !== undefined && !this.wanted.has(name)) return;
    this.skipBlanks(); // Go's reference parser allows blanks before the label set too
    const labels = this.pos < this.end && this.text.charCodeAt(this.pos) === OPEN_BRACE ? this.labelSet(name) : {};
    this.skipBlanks();
    const valueToken = this.token();
    if (valueToken === '') this.fail(`${name} has no value`);
    const value = parseValue(valueToken);
    if (value === undefined) this.fail(`${name}: the value ${JSON.stringify(clip(valueToken))} is not a number`);
    this.skipBlanks();
    let timestampMs: number | undefined;
    if (this.pos < this.end) {
      const stamp = this.token();
      timestampMs = parseTimestamp(stamp);
      if (timestampMs === undefined) this.fail(`${name}: the timestamp ${JSON.stringify(clip(stamp))} is not an integer of milliseconds`);
      this.skipBlanks();
      if (this.pos < this.end) this.fail(`${name}: unexpected ${this.describeFrom(this.pos)} after the timestamp`);
    }
    let samples = this.series.get(name);
    if (!samples) {
      samples = [];
      this.series.set(name, samples);
    }
    samples.push({ labels, value, timestampMs });
  }

  /** `{name="value",...}` starting at `{`; leaves `pos` after the `}`. */
  private labelSet(metric: string): Record<string, string> {
    const labels: Record<string, string> = {};
    this.pos++;
    for (;;) {
      this.skipBlanks();
      if (this.pos >= this.end) this.fail(`${metric}: the label set is not closed (no '}')`);
      if (this.text.charCodeAt(this.pos) === CLOSE_BRACE) break;
      const nameStart = this.pos;
      const name = this.labelName();
      if (name === '') this.fail(`${metric}: expected a label name or '}', found ${this.describeFrom(nameStart)}`);
      this.skipBlanks();
      if (this.pos >= this.end || this.text.charCodeAt(this.pos) !== EQUALS) this.fail(`${metric}: expected '=' after the label name ${name}`);
      this.pos++;
      this.skipBlanks();
      if (this.pos >= this.end || this.text.charCodeAt(this.pos) !== QUOTE) this.fail(`${metric}: the value of label ${name} does not start with '"'`);
      this.pos++;
      const value = this.labelValue(metric, name);
      if (Object.hasOwn(labels, name)) this.fail(`${metric}: label ${name} appears twice`);
      // defineProperty, not assignment: a label called __proto__ must become data, not a prototype.
      Object.defineProperty(labels, name, { value, enumerable: true, writable: true, configurable: true });
      this.skipBlanks();
      const after = this.pos < this.end ? this.text.charCodeAt(this.pos) : -1;
      if (after === COMMA) {
        this.pos++;
        continue;
      }
      if (after === CLOSE_BRACE) break;
      if (after === -1) this.fail(`${metric}: the label set is not closed (no '}')`);
      this.fail(`${metric}: expected ',' or '}' after the value of label ${name}, found ${this.describeFrom(this.pos)}`);
    }
    this.pos++;
    return labels;
  }

  /** The characters after an opening quote, unescaped; leaves `pos` after the closing quote. */
  private labelValue(metric: string, label: string): string {
    let value = '';
    let chunk = this.pos;
    for (;;) {
      if (this.pos >= this.end) this.fail(`${metric}: the value of label ${label} is not closed (the line ends inside quotes)`);
      const c = this.text.charCodeAt(this.pos);
      if (c === QUOTE) {
        value += this.text.slice(chunk, this.pos);
        this.pos++;
        return value;
      }
      if (c === BACKSLASH) {
        value += this.text.slice(chunk, this.pos);
        const escaped = this.pos + 1 < this.end ? this.text[this.pos + 1] : undefined;
        if (escaped === '\\' || escaped === '"') value += escaped;
        else if (escaped === 'n') value += '\n';
        else this.fail(`${metric}: invalid escape ${JSON.stringify(`\\${escaped ?? ''}`)} in the value of label ${label} (only \\\\, \\" and \\n)`);
        this.pos += 2;
        chunk = this.pos;
        continue;
      }
      this.pos++;
    }
  }

  /** `[a-zA-Z_:][a-zA-Z0-9_:]*`, or '' (pos unchanged) when none starts here. */
  private metricName(): string {
    const start = this.pos;
    while (this.pos < this.end) {
      const c = this.text.charCodeAt(this.pos);
      if (!(isLetter(c) || c === 0x5f || c === 0x3a || (this.pos > start && isDigit(c)))) break;
      this.pos++;
    }
    return this.text.slice(start, this.pos);
  }

  /** `[a-zA-Z_][a-zA-Z0-9_]*`, or ''. */
  private labelName(): string {
    const start = this.pos;
    while (this.pos < this.end) {
      const c = this.text.charCodeAt(this.pos);
      if (!(isLetter(c) || c === 0x5f || (this.pos > start && isDigit(c)))) break;
      this.pos++;
    }
    return this.text.slice(start, this.pos);
  }

  /** Characters up to the next blank or the end of the line. */
  private token(): string {
    const start = this.pos;
    while (this.pos < this.end && !this.atBlank()) this.pos++;
    return this.text.slice(start, this.pos);
  }

  private atBlank(): boolean {
    const c = this.text.charCodeAt(this.pos);
    return c === SPACE || c === TAB;
  }

  private skipBlanks(): void {
    while (this.pos < this.end && this.atBlank()) this.pos++;
  }

  /** The rest of the line from `from`, quoted and clipped, or `the end of the line`. */
  private describeFrom(from: number): string {
    if (from >= this.end) return 'the end of the line';
    return JSON.stringify(clip(this.text.slice(from, Math.min(this.end, from + 41))));
  }

  private fail(reason: string): never {
    throw new PromTextError(this.lineNumber, reason);
  }
}

function clip(s: string): string {
  return s.length > 40 ? `${s.slice(0, 40)}…` : s;
}

function isLetter(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a);
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

/** Decimal or exponent notation (no hex, no digit separators), NaN, [+-]Inf(inity), any case. */
export function parseValue(token: string): number | undefined {
  if (token.length > MAX_NUMBER_TOKEN) return undefined;
  const lower = token.toLowerCase();
  if (lower === 'nan') return Number.NaN;
  const sign = lower[0] === '-' || lower[0] === '+' ? 1 : 0;
  const unsigned = lower.slice(sign);
  if (unsigned === 'inf' || unsigned === 'infinity') return lower[0] === '-' ? -Infinity : Infinity;
  // Digits with at most one point, at least one digit, then an optional exponent.
  let i = sign;
  let digits = 0;
  let point = false;
  for (; i < lower.length; i++) {
    const c = lower.charCodeAt(i);
    if (isDigit(c)) digits++;
    else if (c === 0x2e && !point) point = true;
    else break;
  }
  if (digits === 0) return undefined;
  if (i < lower.length) {
    if (lower[i] !== 'e') return undefined;
    i++;
    if (lower[i] === '+' || lower[i] === '-') i++;
    const exponentStart = i;
    while (i < lower.length && isDigit(lower.charCodeAt(i))) i++;
    if (i === exponentStart || i < lower.length) return undefined;
  }
  return Number(token);
}

function parseTimestamp(token: string): number | undefined {
  if (token.length > MAX_NUMBER_TOKEN) return undefined;
  const start = token[0] === '-' ? 1 : 0;
  if (token.length === start) return undefined;
  for (let i = start; i < token.length; i++) if (!isDigit(token.charCodeAt(i))) return undefined;
  return Number(token);
}
