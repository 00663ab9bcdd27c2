/** Latency samples, percentiles and the report's number formatting. */

/** A growable array of float samples (µs). */
export class Samples {
  private data: Float64Array;
  private n = 0;

  constructor(capacity = 1 << 16) {
    this.data = new Float64Array(capacity);
  }

  push(value: number): void {
    if (this.n === this.data.length) {
      const bigger = new Float64Array(this.data.length * 2);
      bigger.set(this.data);
      this.data = bigger;
    }
    this.data[this.n++] = value;
  }

  get length(): number {
    return this.n;
  }

  /** A compact copy (for IPC). */
  toArray(): Float64Array {
    return this.data.slice(0, this.n);
  }
}

export interface Percentiles {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

/** Percentiles (nearest rank) of the concatenation of several sample arrays. */
export function percentiles(...parts: Float64Array[]): Percentiles {
  const total = parts.reduce((sum, p) => sum + p.length, 0);
  const all = new Float64Array(total);
  let offset = 0;
  for (const p of parts) {
    all.set(p, offset);
    offset += p.length;
  }
  all.sort();
  const at = (q: number) => (total === 0 ? NaN : all[Math.min(total - 1, Math.max(0, Math.ceil(q * total) - 1))]!);
  let sum = 0;
  for (let i = 0; i < total; i++) sum += all[i]!;
  return { count: total, p50: at(0.5), p90: at(0.9), p99: at(0.99), p999: at(0.999), max: total ? all[total - 1]! : NaN, mean: total ? sum / total : NaN };
}

export function fmt(value: number, digits = 1): string {
  if (!Number.isFinite(value)) return '-';
  return value.toFixed(digits);
}

export function fmtInt(value: number): string {
  if (!Number.isFinite(value)) return '-';
  return Math.round(value).toLocaleString('en-US');
}

export function ratio(a: number, b: number): string {
  if (!Number.isFinite(a) || !Number.isFinite(b) || b === 0) return '-';
  return `${(a / b).toFixed(2)}x`;
}

/** A plain-text table: the first row is the header; text columns left-aligned, numbers right-aligned. */
export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  // A column is numeric when every body cell looks like a figure ("1,234", "1.22x", "0/0/0", "-").
  const figure = /^[\d.,x/%–-]*$/;
  const textColumn = rows[0]!.map((_, c) => rows.slice(1).some((r) => !figure.test(r[c] ?? '')));
  const line = (r: string[]) =>
    r
      .map((cell, c) => (textColumn[c] ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!)))
      .join('  ')
      .trimEnd();
  const out = [line(rows[0]!), widths.map((w) => '-'.repeat(w)).join('  ')];
  for (const r of rows.slice(1)) out.push(line(r));
  return out.join('\n');
}
