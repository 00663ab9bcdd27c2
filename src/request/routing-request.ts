import type { RequestHeaders } from '../extproc/headers.js';
import type { RouteTable } from '../routing/routes.js';
import { MODEL_HEADER, OWNED_BY_HEADER, OWNED_BY_QUERY } from '../wire-names.js';
import { badRequest, RequestError } from './errors.js';
import { SCAN_SLICE_BYTES, type ScannedValue, type ScanResult, scanTopLevel, scanTopLevelSliced, WantedKeys } from './json-scan.js';
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

/** A wanted value longer than this (raw, escapes included) is refused without being decoded. */
const MAX_RAW_VALUE_BYTES = 6 * Math.max(MAX_MODEL_BYTES, MAX_OWNED_BY_BYTES);

/**
 * Scans a request body for the keys routing reads. `partial`: the body may be only the first part
 * of a larger one (BUFFERED_PARTIAL), so running out of bytes is not an error.
 */
export function scanRoutingKeys(body: Buffer, partial: boolean): ScanResult {
  return scanTopLevel(body, BODY_KEYS, partial ? PARTIAL_SCAN : WHOLE_SCAN);
}

const WHOLE_SCAN = { partial: false, maxValueBytes: MAX_RAW_VALUE_BYTES } as const;
const PARTIAL_SCAN = { partial: true, maxValueBytes: MAX_RAW_VALUE_BYTES } as const;

/** Bodies larger than one slice are scanned one slice per event-loop turn, so no body holds up other requests. */
export function needsSlicedScan(body: Buffer): boolean {
  return body.length > SCAN_SLICE_BYTES;
}

/** scanRoutingKeys in slices; rejects with the signal's reason when it aborts. */
export function scanRoutingKeysSliced(body: Buffer, partial: boolean, signal: AbortSignal): Promise<ScanResult> {
  return scanTopLevelSliced(body, BODY_KEYS, { ...(partial ? PARTIAL_SCAN : WHOLE_SCAN), sliceBytes: SCAN_SLICE_BYTES, signal });
}

/**
 * Builds the RoutingRequest from the headers and, when there is a body, its scan. Throws
 * RequestError: 400 for a body that is not a JSON object or names no usable model; 413 for a
 * partial body (BUFFERED_PARTIAL at Envoy's buffer limit) whose part names no model.
 */
export function readRoutingRequest(headers: RequestHeaders, scan: ScanResult | undefined, routes: RouteTable, requestId: string): RoutingRequest {
  const method = headers.get(':method') ?? 'GET';
  const fullPath = headers.get(':path') ?? '/';
  const queryStart = fullPath.indexOf('?');
  const path = queryStart === -1 ? fullPath : fullPath.slice(0, queryStart);
  const route = routes.match(path);

  let model: string | undefined;
  let ownedBy: string | undefined;
  let ownedBySource: OwnedBySource | undefined;

  if (scan !== undefined) {
    if (!scan.ok) throw badRequest('invalid_json', `The request body is not valid JSON: ${scan.error}.`);
    model = stringValue(scan.values.get('model'), 'model', MAX_MODEL_BYTES, 'invalid_model');
    for (const [key, source] of ENGINE_KEYS) {
      const value = stringValue(scan.values.get(key), key, MAX_OWNED_BY_BYTES, 'invalid_owned_by');
      if (!value) continue;
      ownedBy = value;
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

  if (!model && scan?.ok && !scan.complete) {
    throw new RequestError(
      413,
      'invalid_request_error',
      'request_too_large',
      'The request body is larger than the proxy\'s buffer, and the part it forwarded names no "model": put "model" (and "owned_by") before the prompt.',
    );
  }
  if (!model) {
    throw badRequest('missing_model', 'The request names no model: set "model" in the JSON body (or configure a route that gives one for this path).');
  }
  return { method, path, model, ownedBy, ownedBySource, routeName: route?.name, requestId };
}

/** A wanted body key's string (undefined when absent or null); 400 for another type or one over `limit` bytes. */
function stringValue(value: ScannedValue | undefined, key: string, limit: number, code: string): string | undefined {
  if (value === undefined || value.type === 'null') return undefined;
  if (value.type === 'string-too-long') throw tooLong(key, limit, code);
  if (value.type !== 'string') throw badRequest(code, `\`${key}\` must be a string.`);
  return bounded(value.value, key, limit, code);
}

/** `value` unless it is longer than `limit` bytes (then a 400 that does not echo it). */
function bounded<T extends string | undefined>(value: T, what: string, limit: number, code: string): T {
  // A string of n UTF-16 units is at most 3n UTF-8 bytes, so short ones need no count.
  if (value !== undefined && value.length > limit / 3 && Buffer.byteLength(value) > limit) throw tooLong(what, limit, code);
  return value;
}

function tooLong(what: string, limit: number, code: string): RequestError {
  return badRequest(code, `\`${what}\` is longer than the limit of ${limit} bytes.`);
}
