import type { RouteTable } from '../routing/routes.js';
import { badRequest } from './errors.js';
import type { RequestHeaders } from '../extproc/headers.js';
import { MODEL_HEADER, OWNED_BY_HEADER, OWNED_BY_QUERY } from '../wire-names.js';
import { WantedKeys, scanTopLevel } from './json-scan.js';
import { MAX_MODEL_BYTES, MAX_OWNED_BY_BYTES } from './limits.js';

/** Where the engine selector came from, in the order they are consulted. */
export type OwnedBySource = 'body.owned_by' | 'body.engine' | 'body.inference_server' | 'header' | 'query' | 'route';

/** What routing needs to know about one HTTP request. */
export interface RoutingRequest {
  method: string;
  /** Path without the query string. */
  path: string;
  model: string;
  ownedBy: string | undefined;
  ownedBySource: OwnedBySource | undefined;
  /** Name of the matching route of the route table, if any. */
  routeName: string | undefined;
  requestId: string;
}

const BODY_KEYS = new WantedKeys(['model', 'owned_by', 'engine', 'inference_server']);
const ENGINE_KEYS = [
  ['owned_by', 'body.owned_by'],
  ['engine', 'body.engine'],
  ['inference_server', 'body.inference_server'],
] as const;

/**
 * Builds the RoutingRequest from the headers and, when there is one, the whole body.
 * Throws RequestError (400) for a body that is not a JSON object or names no usable model.
 */
export function readRoutingRequest(
  headers: RequestHeaders,
  body: Buffer | undefined,
  routes: RouteTable,
  requestId: string,
): RoutingRequest {
  const method = headers.get(':method') ?? 'GET';
  const fullPath = headers.get(':path') ?? '/';
  const queryStart = fullPath.indexOf('?');
  const path = queryStart === -1 ? fullPath : fullPath.slice(0, queryStart);
  const route = routes.match(path);

  let model: string | undefined;
  let ownedBy: string | undefined;
  let ownedBySource: OwnedBySource | undefined;

  if (body !== undefined && body.length > 0) {
    const scan = scanTopLevel(body, BODY_KEYS);
    if (!scan.ok) throw badRequest('invalid_json', `The request body is not valid JSON: ${scan.error}.`);
    const modelValue = scan.values.get('model');
    if (modelValue !== undefined && modelValue.type !== 'null') {
      if (modelValue.type !== 'string') throw badRequest('invalid_model', '`model` must be a string.');
      model = bounded(modelValue.value, 'model', MAX_MODEL_BYTES, 'invalid_model');
    }
    for (const [key, source] of ENGINE_KEYS) {
      const value = scan.values.get(key);
      if (value === undefined || value.type === 'null') continue;
      if (value.type !== 'string') throw badRequest('invalid_owned_by', `\`${key}\` must be a string.`);
      if (value.value === '') continue;
      ownedBy = bounded(value.value, key, MAX_OWNED_BY_BYTES, 'invalid_owned_by');
      ownedBySource = source;
      break;
    }
  }

  model ||= bounded(headers.get(MODEL_HEADER), `header ${MODEL_HEADER}`, MAX_MODEL_BYTES, 'invalid_model') || route?.model;

  if (ownedBy === undefined) {
    const header = headers.get(OWNED_BY_HEADER);
    if (header) {
      ownedBy = bounded(header, `header ${OWNED_BY_HEADER}`, MAX_OWNED_BY_BYTES, 'invalid_owned_by');
      ownedBySource = 'header';
    }
  }
  if (ownedBy === undefined && queryStart !== -1) {
    const query = new URLSearchParams(fullPath.slice(queryStart + 1)).get(OWNED_BY_QUERY);
    if (query) {
      ownedBy = bounded(query, `query ${OWNED_BY_QUERY}`, MAX_OWNED_BY_BYTES, 'invalid_owned_by');
      ownedBySource = 'query';
    }
  }
  if (ownedBy === undefined && route?.owned_by) {
    ownedBy = route.owned_by;
    ownedBySource = 'route';
  }

  if (!model) {
    throw badRequest(
      'missing_model',
      'The request names no model: set "model" in the JSON body (or configure a route that gives one for this path).',
    );
  }
  return { method, path, model, ownedBy, ownedBySource, routeName: route?.name, requestId };
}

/** `value` unless it is longer than `limit` bytes (then a 400 that does not echo it). */
function bounded<T extends string | undefined>(value: T, what: string, limit: number, code: string): T {
  if (value !== undefined && value.length > limit / 3 && Buffer.byteLength(value) > limit) {
    throw badRequest(code, `\`${what}\` is ${Buffer.byteLength(value)} bytes long; the limit is ${limit}.`);
  }
  return value;
}
