import type { RequestHeaders } from '../extproc/headers.js';
import type { RouteTable } from '../routing/routes.js';
import { MODEL_HEADER, OWNED_BY_HEADER, OWNED_BY_QUERY } from '../wire-names.js';
import { badRequest, headersTooLarge, queryTooLong, RequestError } from './errors.js';
import { SCAN_SLICE_BYTES, type ScannedValue, type ScanResult, scanTopLevel, scanTopLevelSliced, WantedKeys } from './json-scan.js';
import { DEFAULT_INPUT_LIMITS, type InputLimits, MAX_NAME_LIMIT_BYTES } from './limits.js';

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
 * A wanted value longer than this (raw, escapes included) is refused without being decoded: six
 * raw bytes (`\\uXXXX`) decode to at most three, so no name within any configurable limit is cut.
 */
const MAX_RAW_VALUE_BYTES = 6 * MAX_NAME_LIMIT_BYTES;

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
 * The checks that need only the request's head, made when Envoy sends the headers, before any body
 * is waited for. Throws RequestError: 431 for too many or too large headers, 414 for a long query
 * string, 400 for an over-long model or engine selector in a header or the query.
 */
export function screenRequestHead(headers: RequestHeaders, limits: InputLimits): void {
  if (headers.count > limits.maxHeaderCount) {
    throw headersTooLarge(`The request has ${headers.count} headers, more than the limit of ${limits.maxHeaderCount}.`);
  }
  const headerBytes = headers.byteLength();
  if (headerBytes > limits.maxHeaderBytes) {
    throw headersTooLarge(`The request headers are ${headerBytes} bytes, more than the limit of ${limits.maxHeaderBytes} bytes.`);
  }
  const fullPath = headers.get(':path') ?? '/';
  const queryStart = fullPath.indexOf('?');
  // Sliced only when it may be too long: most queries are short or absent.
  if (queryStart !== -1 && fullPath.length - queryStart - 1 > limits.maxQueryBytes / 3 && longerThan(fullPath.slice(queryStart + 1), limits.maxQueryBytes)) {
    throw queryTooLong(limits.maxQueryBytes);
  }
  modelHeader(headers, limits);
  headEngine(headers, fullPath, queryStart, limits);
}

/**
 * Builds the RoutingRequest from the headers and, when there is a body, its scan. The route is the
 * one Envoy named (`envoyRouteName`, attribute `xds.route_name`) if the table has it, else the
 * longest path prefix match. Throws
 * RequestError: 400 for a body that is not a JSON object or names no usable model; 413 for a
 * partial body (BUFFERED_PARTIAL at Envoy's buffer limit) whose part names no model.
 */
export function readRoutingRequest(
  headers: RequestHeaders,
  scan: ScanResult | undefined,
  routes: RouteTable,
  requestId: string,
  limits: InputLimits = DEFAULT_INPUT_LIMITS,
  envoyRouteName?: string,
): RoutingRequest {
  const method = headers.get(':method') ?? 'GET';
  const fullPath = headers.get(':path') ?? '/';
  const queryStart = fullPath.indexOf('?');
  const path = queryStart === -1 ? fullPath : fullPath.slice(0, queryStart);
  const route = routes.resolve(envoyRouteName, path);

  let model: string | undefined;
  let ownedBy: string | undefined;
  let ownedBySource: OwnedBySource | undefined;

  if (scan !== undefined) {
    if (!scan.ok) throw badRequest('invalid_json', `The request body is not valid JSON: ${scan.error}.`);
    model = stringValue(scan.values.get('model'), 'model', limits.maxModelBytes, 'invalid_model');
    for (const [key, source] of ENGINE_KEYS) {
      const value = stringValue(scan.values.get(key), key, limits.maxOwnedByBytes, 'invalid_owned_by');
      if (!value) continue;
      ownedBy = value;
      ownedBySource = source;
      break;
    }
  }

  model ||= modelHeader(headers, limits) || route?.model;

  if (ownedBy === undefined) {
    const head = headEngine(headers, fullPath, queryStart, limits);
    ownedBy = head?.value;
    ownedBySource = head?.source;
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

function modelHeader(headers: RequestHeaders, limits: InputLimits): string | undefined {
  return bounded(headers.get(MODEL_HEADER), `header ${MODEL_HEADER}`, limits.maxModelBytes, 'invalid_model');
}

/** The engine selector of the header, else of the query (`queryStart` -1: none), and which; undefined when neither names one. */
function headEngine(
  headers: RequestHeaders,
  fullPath: string,
  queryStart: number,
  limits: InputLimits,
): { value: string; source: 'header' | 'query' } | undefined {
  const header = headers.get(OWNED_BY_HEADER);
  if (header) return { value: bounded(header, `header ${OWNED_BY_HEADER}`, limits.maxOwnedByBytes, 'invalid_owned_by'), source: 'header' };
  if (queryStart === -1) return undefined;
  const query = new URLSearchParams(fullPath.slice(queryStart + 1)).get(OWNED_BY_QUERY);
  return query ? { value: bounded(query, `query ${OWNED_BY_QUERY}`, limits.maxOwnedByBytes, 'invalid_owned_by'), source: 'query' } : undefined;
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
  if (value !== undefined && longerThan(value, limit)) throw tooLong(what, limit, code);
  return value;
}

/** Whether `value` is over `limit` UTF-8 bytes; a string of n UTF-16 units is at most 3n bytes, so short ones need no count. */
function longerThan(value: string, limit: number): boolean {
  return value.length > limit / 3 && Buffer.byteLength(value) > limit;
}

function tooLong(what: string, limit: number, code: string): RequestError {
  return badRequest(code, `\`${what}\` is longer than the limit of ${limit} bytes.`);
}
