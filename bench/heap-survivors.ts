/**
 * Reads a --heap-survivors profile (see heap-survivors-preload.ts): sampled bytes of objects that
 * survived a scavenge, by allocating call chain, largest first.
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: ProfileNode[];
}

export interface SurvivorSummary {
  totalBytes: number;
  /** `frame <- caller <- caller`, with the sampled bytes allocated there. */
  chains: { chain: string; bytes: number }[];
}

export function summarizeSurvivors(file: string, depth = 3, top = 12): SurvivorSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as { head: ProfileNode };
  const byChain = new Map<string, number>();
  let totalBytes = 0;
  const walk = (node: ProfileNode, callers: string[]): void => {
    const { functionName, url, lineNumber } = node.callFrame;
    const frame = `${functionName || '(anonymous)'} ${url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*?\/dist\//, '')}:${lineNumber + 1}`;
    const stack = [frame, ...callers];
    if (node.selfSize > 0) {
      totalBytes += node.selfSize;
      const chain = stack.slice(0, depth).join(' <- ');
      byChain.set(chain, (byChain.get(chain) ?? 0) + node.selfSize);
    }
    for (const child of node.children) walk(child, stack);
  };
  walk(profile.head, []);
  const chains = [...byChain].map(([chain, bytes]) => ({ chain, bytes })).sort((a, b) => b.bytes - a.bytes);
  return { totalBytes, chains: chains.slice(0, top) };
}
