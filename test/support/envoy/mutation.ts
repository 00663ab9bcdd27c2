/**
 * Envoy's application of ext_proc header mutations (§1.6, §3.2), with the default
 * HeaderMutationRules (nothing configured): the behaviour of `MutationUtils::applyHeaderMutations`
 * and the mutation-rules `Checker`, re-implemented from the documented facts.
 */
import type { HeaderMutation__Output } from '../../../src/generated/envoy/service/ext_proc/v3/HeaderMutation.js';
import { type HeaderList, type HeaderValueField, readHeaderValue } from './codec.js';

/** A mutation Envoy rejects as an error (→ local reply with status_on_error). */
export class MutationError extends Error {}

export interface MutationStats {
  /** Mutations silently ignored by the rules (Envoy stat `rejected_header_mutations`). */
  rejected: number;
}

// HTTP/1 token characters (RFC 9110) for header names; pseudo-headers: ':' + lower-case token.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const PSEUDO = /^:[!#$%&'*+\-.^_`|~0-9a-z]+$/;
function headerNameIsValid(k: string): boolean {
  return k.startsWith(':') ? PSEUDO.test(k) : TOKEN.test(k);
}
// Envoy/nghttp2: a header value must not contain NUL, CR or LF.
function headerValueIsValid(v: string): boolean {
  return !/[\0\r\n]/.test(v);
}

/** §3.2 routing headers, refused unless allow_all_routing. */
const ROUTING = new Set(['host', ':authority', ':method', ':scheme']);

type Op = 'SET' | 'APPEND' | 'REMOVE';

function isAllowed(op: Op, name: string): boolean {
  // Removing `host` or any ':' header is always refused.
  if (op === 'REMOVE' && (name === 'host' || name.startsWith(':'))) return false;
  if (ROUTING.has(name)) return false;
  // ':' headers cannot take several values.
  if (name.startsWith(':') && op === 'APPEND') return false;
  if (name.startsWith('x-envoy')) return false;
  return true;
}

function isValidValue(name: string, value: string): boolean {
  if (!name.startsWith(':') && !headerValueIsValid(value)) return false;
  if (name === ':status') {
    if (!/^\d+$/.test(value)) return false;
    if (Number(value) < 200) return false;
  }
  return true;
}

/**
 * Applies `mutation` to `headers` in place, Envoy style: removals first, then set_headers in order.
 * - values read from `field` only (raw_value by default); `value` and `raw_value` both non-empty ⇒ MutationError (§1.6);
 * - `append` unset/false ⇒ overwrite (setCopy), true ⇒ add a value (addCopy); `append_action` ignored;
 * - default rules: host/:authority/:method/:scheme and x-envoy-* refused silently (§3.2);
 * - content-length skipped when `removeContentLength` (STREAMED / FULL_DUPLEX / BUFFERED+SKIP).
 */
export function applyHeaderMutation(
  mutation: HeaderMutation__Output | undefined,
  headers: HeaderList,
  opts: { removeContentLength: boolean; stats?: MutationStats; field?: HeaderValueField },
): void {
  if (!mutation) return;
  const stats = opts.stats ?? { rejected: 0 };
  for (const raw of mutation.remove_headers ?? []) {
    if (!headerNameIsValid(raw)) throw new MutationError('Invalid character in remove_headers mutation.');
    const name = raw.toLowerCase();
    if (isAllowed('REMOVE', name)) headers.delete(name);
    else stats.rejected++;
  }
  for (const sh of mutation.set_headers ?? []) {
    const hv = sh.header;
    if (!hv) continue;
    const key = hv.key ?? '';
    if (opts.removeContentLength && key.toLowerCase() === 'content-length') continue;
    const rawBytes = hv.raw_value;
    if ((hv.value ?? '') !== '' && rawBytes && rawBytes.length > 0) {
      stats.rejected++;
      throw new MutationError('Only one of value or raw_value in the HeaderValue message should be set.');
    }
    const value = readHeaderValue(hv, opts.field ?? 'raw_value');
    if (!headerNameIsValid(key) || !headerValueIsValid(value)) {
      stats.rejected++;
      throw new MutationError('Invalid character in set_headers mutation.');
    }
    const name = key.toLowerCase();
    const append = sh.append?.value ?? false;
    const cur = headers.get(name);
    const op: Op = append && cur && cur.length > 0 ? 'APPEND' : 'SET';
    if (!isAllowed(op, name) || !isValidValue(name, value)) {
      stats.rejected++;
      continue;
    }
    if (append && cur) cur.push(value);
    else headers.set(name, [value]);
  }
}
