/**
 * Is the top-level scanner worth having? Times scanTopLevel against JSON.parse(body.toString())
 * on chat bodies of several sizes and two kinds of prompt, in the same process, and prints the
 * ratio. The scanner's cost depends on how many quotes the prompt holds: it jumps from quote to
 * quote, so "quoted" text (an escaped quote every ~40 bytes, like code) is its worst case and plain
 * prose its best. Run: node dist/bench/json-scan.js
 */
import { WantedKeys, scanTopLevel } from '../src/request/json-scan.js';

const WANTED = new WantedKeys(['model', 'owned_by', 'engine', 'inference_server']);

const PROMPTS = {
  quoted: 'The quick brown fox jumps over the lazy dog. \\"Quoted\\" text, unicode \u00e9\u4e2d. ',
  prose: 'The quick brown fox jumps over the lazy dog, then walks home through the quiet town. ',
} as const;

function chatBody(bytes: number, filler: string): Buffer {
  const content = filler.repeat(Math.max(1, Math.ceil(bytes / filler.length)));
  return Buffer.from(
    JSON.stringify({ model: 'Qwen/Qwen2.5-0.5B-Instruct', messages: [{ role: 'system', content: 'You are helpful.' }, { role: 'user', content }], max_tokens: 64, stream: true, owned_by: 'sglang' }),
  );
}

function time(iterations: number, fn: () => void): number {
  for (let i = 0; i < Math.min(iterations, 20); i++) fn();
  const start = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) fn();
  return Number(process.hrtime.bigint() - start) / 1e3 / iterations;
}

export function runJsonScanBench(): string[] {
  const lines = ['prompt | body size | scanTopLevel µs | JSON.parse µs | parse/scan'];
  const sizes = [['1 KiB', 1024, 20000], ['64 KiB', 65536, 2000], ['1 MiB', 1 << 20, 100], ['8 MiB', 8 << 20, 12], ['20 MiB', 20 << 20, 5]] as const;
  for (const [prompt, filler] of Object.entries(PROMPTS)) for (const [label, size, iterations] of sizes) {
    const body = chatBody(size, filler);
    const scanUs = time(iterations, () => {
      const result = scanTopLevel(body, WANTED);
      if (!result.ok) throw new Error(result.error);
    });
    const parseUs = time(iterations, () => {
      const doc = JSON.parse(body.toString()) as { model?: unknown };
      if (typeof doc.model !== 'string') throw new Error('no model');
    });
    lines.push(`${prompt.padEnd(6)} | ${label.padEnd(9)} | ${scanUs.toFixed(1).padStart(15)} | ${parseUs.toFixed(1).padStart(13)} | ${(parseUs / scanUs).toFixed(2)}x`);
  }
  return lines;
}

if (import.meta.url === `file://${process.argv[1]}`) console.log(runJsonScanBench().join('\n'));
