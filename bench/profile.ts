/**
 * Top frames of a V8 .cpuprofile (as written by `node --cpu-prof`), by self time and by total
 * (inclusive) time. Run alone: node dist/bench/profile.js <file.cpuprofile> [count]
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface Frame {
  frame: string;
  selfPercent: number;
  totalPercent: number;
}

function frameName(node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame;
  const file = url
    ? url
        .replace(/^file:\/\//, '')
        .replace(/^.*\/node_modules\//, '')
        .replace(/^.*\/dist\//, '')
    : '';
  return `${functionName || '(anonymous)'}${file ? ` ${file}:${lineNumber + 1}` : ''}`;
}

export function topFrames(file: string, count = 25): { totalMs: number; bySelf: Frame[]; byTotal: Frame[] } {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const selfUs = new Map<number, number>();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const dt = profile.timeDeltas[i] ?? 0;
    selfUs.set(id, (selfUs.get(id) ?? 0) + dt);
    total += dt;
  });
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const node = byId.get(id)!;
    const name = frameName(node);
    self.set(name, (self.get(name) ?? 0) + us);
    // Inclusive: every distinct frame name on the stack once.
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const n = frameName(byId.get(cur)!);
      if (seen.has(n)) continue;
      seen.add(n);
      inclusive.set(n, (inclusive.get(n) ?? 0) + us);
    }
  }
  const pct = (us: number) => (total ? (us / total) * 100 : 0);
  const ranked = (m: Map<string, number>) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, count)
      .map(([frame]) => ({ frame, selfPercent: pct(self.get(frame) ?? 0), totalPercent: pct(inclusive.get(frame) ?? 0) }));
  return {
    totalMs: total / 1000,
    bySelf: ranked(self),
    byTotal: ranked(new Map([...inclusive].filter(([name]) => !/^\((root|program|idle)\)/.test(name)))),
  };
}

/** Where a frame's code comes from, for a per-component breakdown of self time. */
export function category(node: ProfileNode): string {
  const { functionName, url } = node.callFrame;
  if (functionName === '(garbage collector)') return 'garbage collector';
  if (functionName === '(program)') return '(program): native, unattributed';
  if (functionName === '(idle)') return '(idle)';
  if (functionName === '(root)') return '(root)';
  if (url.includes('/dist/src/')) return 'llm-extproc code (dist/src)';
  if (url.includes('/dist/bench/')) return 'bench code';
  if (url.includes('@grpc/grpc-js')) return 'grpc-js';
  if (url.includes('protobufjs') || url.includes('@grpc/proto-loader') || /\$(decode|encode|fromObject|toObject|verify)$/.test(functionName))
    return 'protobuf codec (proto-loader/protobufjs)';
  if (url.includes('prom-client')) return 'prom-client';
  if (url.includes('pino')) return 'pino';
  if (url.includes('node:internal/http2')) return 'node http2';
  if (/node:(internal\/streams|events|internal\/process\/task_queues|internal\/stream_base_commons)/.test(url)) return 'node streams/events/ticks';
  if (url.startsWith('node:')) return 'node other';
  if (!url) return 'native/builtins (no script)';
  return 'other';
}

/** Self and inclusive time per frame name, in ms, idle excluded. */
export function frameTimes(file: string): { self: Map<string, number>; inclusive: Map<string, number>; category: Map<string, string> } {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const categories = new Map<string, string>();
  profile.samples.forEach((id, i) => {
    const node = byId.get(id)!;
    if (node.callFrame.functionName === '(idle)') return;
    const ms = (profile.timeDeltas[i] ?? 0) / 1000;
    const name = frameName(node);
    self.set(name, (self.get(name) ?? 0) + ms);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const n = byId.get(cur)!;
      const fn = frameName(n);
      if (seen.has(fn)) continue;
      seen.add(fn);
      categories.set(fn, category(n));
      inclusive.set(fn, (inclusive.get(fn) ?? 0) + ms);
    }
  });
  return { self, inclusive, category: categories };
}

/** Self time per category, in ms. */
export function categoryBreakdown(file: string): Map<string, number> {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const out = new Map<string, number>();
  profile.samples.forEach((id, i) => {
    const c = category(byId.get(id)!);
    out.set(c, (out.get(c) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000);
  });
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const file = process.argv[2];
  if (!file) throw new Error('usage: profile.js <file.cpuprofile> [count]');
  const { totalMs, bySelf, byTotal } = topFrames(file, Number(process.argv[3] ?? 25));
  console.log(`${totalMs.toFixed(0)} ms sampled\n\nself%  total%  frame (by self time)`);
  for (const f of bySelf) console.log(`${f.selfPercent.toFixed(1).padStart(5)}  ${f.totalPercent.toFixed(1).padStart(6)}  ${f.frame}`);
  console.log('\nself%  total%  frame (by inclusive time)');
  for (const f of byTotal) console.log(`${f.selfPercent.toFixed(1).padStart(5)}  ${f.totalPercent.toFixed(1).padStart(6)}  ${f.frame}`);
}
