/**
 * HTTP headers as Envoy hands them to ext_proc and applies the answers: an ordered list of
 * lower-case names and byte-string values (latin1, so raw_value bytes round-trip exactly).
 */
import type { HeaderMap } from '../generated/envoy/config/core/v3/HeaderMap.js';
import type { HeaderValue__Output } from '../generated/envoy/config/core/v3/HeaderValue.js';
import type { HeaderMutation__Output } from '../generated/envoy/service/ext_proc/v3/HeaderMutation.js';

export type HeaderList = [name: string, value: string][];

/** One change a mutation asked for, as shown to the reader. */
export type HeaderChange = { op: 'set' | 'append'; name: string; value: string } | { op: 'remove'; name: string };

/** Values in `raw_value` only, `value` left empty: what Envoy 1.27+ sends. */
export function toHeaderMap(headers: HeaderList): HeaderMap {
  return { headers: headers.map(([key, value]) => ({ key, raw_value: Buffer.from(value, 'latin1') })) };
}

export function headerValue(headers: HeaderList, name: string): string | undefined {
  return headers.find(([key]) => key === name)?.[1];
}

/** Envoy's routing headers, which the default mutation_rules do not let ext_proc change. */
const ROUTING_HEADERS = new Set(['host', ':authority', ':method', ':scheme']);

/** Why Envoy's default mutation_rules ignore this change, or undefined when it is applied. */
function refusal(change: HeaderChange): string | undefined {
  const { name } = change;
  if (change.op === 'remove' && (name === 'host' || name.startsWith(':'))) return 'removing host or a pseudo-header is always refused';
  if (ROUTING_HEADERS.has(name)) return 'a routing header (allow_all_routing is off)';
  if (change.op === 'append' && name.startsWith(':')) return 'a pseudo-header takes one value';
  if (name.startsWith('x-envoy')) return 'an x-envoy-* header (allow_envoy is off)';
  return undefined;
}

/** The value Envoy reads from a header it is told to set: `raw_value` only (envoy#31555). */
function settingValue(header: HeaderValue__Output, problems: string[]): string {
  const raw = header.raw_value && header.raw_value.length > 0 ? header.raw_value.toString('latin1') : '';
  if (raw && header.value) problems.push(`${header.key}: both value and raw_value are set; Envoy rejects the mutation (500)`);
  else if (!raw && header.value) problems.push(`${header.key}: set in \`value\`, which Envoy ignores; it reads raw_value, so the header would be empty`);
  return raw;
}

/**
 * Applies `mutation` to `headers` in place as Envoy does (removals first, then sets in order;
 * `append` unset = overwrite; the default mutation_rules) and returns what it asked for. Changes
 * Envoy would ignore or reject are named in `problems`.
 */
export function applyHeaderMutation(headers: HeaderList, mutation: HeaderMutation__Output | undefined, problems: string[]): HeaderChange[] {
  const changes: HeaderChange[] = [];
  for (const name of mutation?.remove_headers ?? []) changes.push({ op: 'remove', name: name.toLowerCase() });
  for (const option of mutation?.set_headers ?? []) {
    const header = option.header;
    if (!header?.key) continue;
    const value = settingValue(header, problems);
    changes.push({ op: option.append?.value ? 'append' : 'set', name: header.key.toLowerCase(), value });
  }
  for (const change of changes) {
    const why = refusal(change);
    if (why) {
      problems.push(`${change.op} ${change.name}: ignored by Envoy's default mutation_rules (${why})`);
      continue;
    }
    if (change.op !== 'append') removeAll(headers, change.name);
    if (change.op !== 'remove') headers.push([change.name, change.value]);
  }
  return changes;
}

function removeAll(headers: HeaderList, name: string): void {
  for (let i = headers.length - 1; i >= 0; i--) if (headers[i]![0] === name) headers.splice(i, 1);
}
