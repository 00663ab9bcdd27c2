/**
 * Is the top-level scanner worth having? Times scanTopLevel against JSON.parse(body.toString())
 * on chat bodies of several sizes and two kinds of prompt, in the same process, and prints the
 * ratio. The scanner's cost depends on how many quotes the prompt holds: it jumps from quote to
 * quote, so "quoted" text (an escaped quote every ~40 bytes, like code) is its worst case and plain
 * prose its best.
 *
 * Then the hostile bodies of bench/json-scan-shapes.ts, just under the 32 MiB body limit: the
 * same two timings, and the scan in slices of SCAN_SLICE_BYTES as scanTopLevelSliced runs it, with
 * the longest slice (how long the event loop is blocked at once) and the slices' total.
 * Run: node dist/bench/json-scan.js
 */
import { SCAN_SLICE_BYTES, type ScanResult, scanTopLevel, TopLevelScanner, WantedKeys } from '../src/request/json-scan.js';
import { HOSTILE_SHAPES } from './json-scan-shapes.js';

const WANTED = new WantedKeys(['model', 'owned_by', 'engine', 'inference_server']);

const PROMPTS = {
  quoted: 'The quick brown fox jumps over the lazy dog. \\"Quoted\\" text, unicode \u00e9\u4e2d. ',
  prose: 'The quick brown fox jumps over the lazy dog, then walks home through the quiet town. ',
} as const;

function chatBody(bytes: number, filler: string): Buffer {
  const content = filler.repeat(Math.max(1, Math.ceil(bytes / filler.length)));
  return Buffer.from(
    JSON.stringify({
      model: 'Qwen/Qwen2.5-0.5B-Instruct',
      messages: [
        { role: 'system', content: 'You are helpful.' },
        { role: 'user', content },
      ],
      max_tokens: 64,
      stream: true,
      owned_by: 'sglang',
    }),
  );
}

function time(iterations: number, fn: () => void): number {
  for (let i = 0; i < Math.min(iterations, 20); i++) fn();
  const start = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) fn();
  return Number(process.hrtime.bigint() - start) / 1e3 / iterations;
}

function check(result: ScanResult): void {
  if (!result.ok) throw new Error(result.error);
}

/** Median of `runs` timings of fn, in ms, after `warmups` untimed calls. */
function medianMs(warmups: number, runs: number, fn: () => void): number {
  for (let i = 0; i < warmups; i++) fn();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const start = process.hrtime.bigint();
    fn();
    times.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  return times.sort((a, b) => a - b)[runs >> 1]!;
}

/** The scan in slices, as scanTopLevelSliced does it minus the waits: the longest slice and the total, in ms. */
function slicedMs(body: Buffer): { longest: number; total: number } {
  const scanner = new TopLevelScanner(body, WANTED);
  let longest = 0;
  let total = 0;
  for (;;) {
    const start = process.hrtime.bigint();
    const result = scanner.advance(SCAN_SLICE_BYTES);
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    longest = Math.max(longest, ms);
    total += ms;
    if (result !== undefined) {
      check(result);
      return { longest, total };
    }
  }
}

function hostileRows(): string[] {
  const bodies = HOSTILE_SHAPES.map((shape) => ({ name: shape.name, body: shape.build() }));
  // All scanner timings first: JSON.parse of these bodies leaves GBs of garbage, whose GC pauses
  // would land in the scanner's slices.
  const scans = bodies.map(({ body }) => {
    const scanMs = medianMs(2, 5, () => check(scanTopLevel(body, WANTED)));
    slicedMs(body);
    // The worst of three runs: the longest slice is a worst case, not a typical one.
    const runs = [slicedMs(body), slicedMs(body), slicedMs(body)];
    return { scanMs, longest: Math.max(...runs.map((run) => run.longest)), total: runs.map((run) => run.total).sort((a, b) => a - b)[1]! };
  });
  const lines = [`hostile body (32 MiB) | scanTopLevel ms | JSON.parse ms | parse/scan | longest ${SCAN_SLICE_BYTES >> 10} KiB slice ms | slices total ms`];
  bodies.forEach(({ name, body }, i) => {
    const { scanMs, longest, total } = scans[i]!;
    const parseMs = medianMs(1, 3, () => JSON.parse(body.toString()));
    lines.push(
      `${name.padEnd(36)} | ${scanMs.toFixed(1).padStart(8)} | ${parseMs.toFixed(1).padStart(8)} | ${(parseMs / scanMs).toFixed(2).padStart(6)}x | ${longest.toFixed(2).padStart(6)} | ${total.toFixed(1).padStart(7)}`,
    );
  });
  return lines;
}

export function runJsonScanBench(): string[] {
  // Before the rows below, whose JSON.parse garbage would otherwise be collected during its slices.
  const hostile = hostileRows();
  const lines = ['prompt | body size | scanTopLevel µs | JSON.parse µs | parse/scan'];
  const sizes = [
    ['1 KiB', 1024, 20000],
    ['64 KiB', 65536, 2000],
    ['1 MiB', 1 << 20, 100],
    ['8 MiB', 8 << 20, 12],
    ['20 MiB', 20 << 20, 5],
  ] as const;
  for (const [prompt, filler] of Object.entries(PROMPTS))
    for (const [label, size, iterations] of sizes) {
      const body = chatBody(size, filler);
      const scanUs = time(iterations, () => {
        const result = scanTopLevel(body, WANTED);
        if (!result.ok) throw new Error(result.error);
      });
      const parseUs = time(iterations, () => {
        const doc = JSON.parse(body.toString()) as { model?: unknown };
        if (typeof doc.model !== 'string') throw new Error('no model');
      });
      lines.push(
        `${prompt.padEnd(6)} | ${label.padEnd(9)} | ${scanUs.toFixed(1).padStart(15)} | ${parseUs.toFixed(1).padStart(13)} | ${(parseUs / scanUs).toFixed(2)}x`,
      );
    }
  return [...lines, '', ...hostile];
}

if (import.meta.url === `file://${process.argv[1]}`) console.log(runJsonScanBench().join('\n'));
