/**
 * `--trace-gc`: both servers run with V8's --trace-gc and the report counts their collections and
 * pauses per 1,000 requests, to tell GC pauses from other sources of a latency tail.
 */

const GC_LINE = /^\[\d+:0x[0-9a-f]+\]\s+\d+ ms: (Scavenge|Minor Mark-Sweep|Mark-Compact|Mark-Sweep)\b.*?, ([\d.]+) \/ ([\d.]+) ms/;

export interface GcSummary {
  scavenges: number;
  fullCollections: number;
  /** Pause time, summed and longest, in ms. */
  pauseMs: number;
  longestPauseMs: number;
}

export function isGcLine(line: string): boolean {
  return GC_LINE.test(line);
}

export function summarizeGc(lines: readonly string[]): GcSummary {
  const summary: GcSummary = { scavenges: 0, fullCollections: 0, pauseMs: 0, longestPauseMs: 0 };
  for (const line of lines) {
    const match = GC_LINE.exec(line);
    if (!match) continue;
    if (match[1] === 'Scavenge' || match[1] === 'Minor Mark-Sweep') summary.scavenges++;
    else summary.fullCollections++;
    const pause = Number(match[2]);
    summary.pauseMs += pause;
    summary.longestPauseMs = Math.max(summary.longestPauseMs, pause);
  }
  return summary;
}
