import type { Endpoint } from '../../discovery/endpoint.js';
import type { SchedulingRequest } from '../types.js';

/**
 * The JSON of llm-extproc external filter protocol v1 (llm-d PR #183's filter call, seed 000):
 * the request body llm-extproc sends and the answer it accepts. docs/external-filters.md is the
 * specification; keep the two in step.
 */

/** What a plugin answers for each pod to keep. */
export interface KeptPod {
  name: string;
  namespace: string;
}

/** An answer larger than this is a failure: a broken plugin must not grow the router's memory. */
export const MAX_ANSWER_BYTES = 1024 * 1024;

/**
 * `{"sched_context": {"request": {...}, "pods": [all]}, "pods": [candidates]}`. Each endpoint's
 * JSON comes from podJson's cache, so a pod in both lists costs no second serialisation.
 * `omitHeader` (the destination header llm-extproc itself sets) is not sent.
 */
export function requestBody(request: SchedulingRequest, candidates: readonly Endpoint[], prompt: string, omitHeader: string): string {
  const list = (endpoints: readonly Endpoint[]): string => {
    let out = '[';
    for (let i = 0; i < endpoints.length; i++) out += i === 0 ? podJson(endpoints[i]!) : `,${podJson(endpoints[i]!)}`;
    return `${out}]`;
  };
  const sent = {
    target_model: request.routing.model,
    request_id: request.routing.requestId,
    // llm-extproc has no request criticality (GIE's InferenceModel `Critical`) yet.
    critical: false,
    prompt,
    headers: headerRecord(request, omitHeader),
  };
  return `{"sched_context":{"request":${JSON.stringify(sent)},"pods":${list(request.initialCandidates)}},"pods":${list(candidates)}}`;
}

/**
 * The request's headers as one object, pseudo-headers (`:path`, `:authority`...) included, as the
 * proposal's EPP sent what Envoy gave it. A name sent twice gets its values joined with ", "
 * (RFC 9110 §5.3; "; " for cookie).
 */
function headerRecord(request: SchedulingRequest, omitHeader: string): Record<string, string> {
  const record: Record<string, string> = Object.create(null);
  for (const [name, value] of request.headers.entries()) {
    if (name === '' || name === omitHeader) continue;
    const known = record[name];
    record[name] = known === undefined ? value : `${known}${name === 'cookie' ? '; ' : ', '}${value}`;
  }
  return record;
}

/**
 * One pod: `pod` (name, namespace, IP without port, labels); `metrics` and `update_time` from the
 * last good scrape (however old: the plugin judges by `update_time`), both left out when there is
 * none, as the proposal's Go struct leaves out nil metrics.
 */
function podJson(endpoint: Endpoint): string {
  // A pod's JSON changes only with a new scrape or new labels (both replace their objects), so it
  // is built once per scrape, not per request and plugin: the dates alone cost more than the rest.
  const cached = podJsonCache.get(endpoint);
  if (cached && cached.load === endpoint.load && cached.labels === endpoint.labels) return cached.json;
  const json = buildPodJson(endpoint);
  podJsonCache.set(endpoint, { load: endpoint.load, labels: endpoint.labels, json });
  return json;
}

/** Keyed by the Endpoint object: an entry goes with its endpoint. */
const podJsonCache = new WeakMap<Endpoint, { load: Endpoint['load']; labels: Endpoint['labels']; json: string }>();

function buildPodJson(endpoint: Endpoint): string {
  const pod = { namespaced_name: { name: endpoint.name, namespace: endpoint.namespace }, address: hostOf(endpoint.address), labels: endpoint.labels };
  const load = endpoint.load;
  if (load === undefined) return JSON.stringify({ pod });
  return JSON.stringify({ pod, metrics: { ...load.metrics, update_time: goDateTime(load.updateTime) }, update_time: rfc3339(load.updateTime) });
}

/** `10.0.0.1:8000` → `10.0.0.1`; `[fd00::1]:8000` → `fd00::1` (a pod IP, as Kubernetes reports it). */
export function hostOf(address: string): string {
  const host = address.slice(0, address.lastIndexOf(':'));
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

/** Go layout `2006-01-02 15:04:05`, in UTC: what the proposal's code wrote inside `metrics`. */
export function goDateTime(time: Date): string {
  return time.toISOString().slice(0, 19).replace('T', ' ');
}

/** RFC 3339 in UTC to the second (`2025-06-09T10:30:00Z`): what seed 000's README shows beside `metrics`. */
export function rfc3339(time: Date): string {
  return `${time.toISOString().slice(0, 19)}Z`;
}

/** Why an answer is not a list of pods to keep. */
export class AnswerError extends Error {}

/** The pods a 200 answer keeps. Throws AnswerError when it is not JSON or not `[{"name": string, "namespace": string}, ...]`. */
export function parseAnswer(body: Buffer): KeptPod[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new AnswerError(`the answer is not JSON (${(err as Error).message})`);
  }
  if (!Array.isArray(parsed)) throw new AnswerError(`the answer is not a JSON list but ${parsed === null ? 'null' : typeof parsed}`);
  for (let i = 0; i < parsed.length; i++) {
    const item = parsed[i] as { name?: unknown; namespace?: unknown } | null;
    if (typeof item !== 'object' || item === null || typeof item.name !== 'string' || typeof item.namespace !== 'string') {
      throw new AnswerError(`item ${i + 1} of the answer is not {"name": string, "namespace": string}`);
    }
  }
  return parsed as KeptPod[];
}
