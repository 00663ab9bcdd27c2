/**
 * Validates envoy/*.yaml against Envoy's own API protos (the copy in @grpc/grpc-js-xds), since
 * Envoy itself cannot run here.
 *
 * protobufjs' fromObject silently drops unknown keys, so the config is walked field by field
 * against the reflected types instead ("strict decode"): unknown field names, wrong JSON types,
 * bad enum names, malformed durations, unresolvable `@type` URLs, two members of one oneof, and
 * missing fields that Envoy's validation rules (protoc-gen-validate annotations) require are all
 * reported with their path. Every `typed_config` / Any is decoded recursively as the message its
 * `@type` names.
 *
 * The grpc-js-xds copy is older than the Envoy we target, so a small allow-list names the few
 * newer fields and enum values we may use, with the Envoy version that added them; anything else
 * unknown (including a misspelling of an allow-listed name) still fails.
 */

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { Enum, Field, MapField, Type } from 'protobufjs';
import protobuf from 'protobufjs';
import YAML from 'yaml';
import { parseConfig } from '../src/config/config.js';
import { ROUTE_NAME_ATTRIBUTE } from '../src/extproc/attributes.js';
import { STREAMED_CHUNK_BYTES } from '../src/extproc/responses.js';
import { validateRoutes } from '../src/routing/routes.js';
import { MAX_TIMEOUT_MS as MAX_EXTERNAL_FILTER_TIMEOUT_MS } from '../src/scheduling/filters/external-http-config.js';
import { SERVER_NAME } from './support/tls-certs.js';
import { fullName, ProtoSet, REPO_ROOT, XDS_INCLUDE_DIRS } from './support/xds-protos.js';

// ---------------------------------------------------------------------------------------------
// Allow-list: names newer than the grpc-js-xds copy (versions from ../shared/reference/envoy-extproc.md (the team's reference notes)).
// Each entry still has its value type-checked; a test below fails once the xds copy gains the
// name (then the entry is stale and must go).
// ---------------------------------------------------------------------------------------------

interface NewerField {
  /** Envoy release that added the field. */
  since: string;
  /** Scalar type name or full message/enum name, as in a .proto file. */
  type: string;
}

interface NewerEnumValue {
  since: string;
  number: number;
}

const NEWER_FIELDS: Readonly<Record<string, NewerField>> = {
  // Per-route / per-vhost body buffer limit, overrides the listener's per_connection_buffer_limit_bytes (ref §2.5).
  'envoy.config.route.v3.Route.request_body_buffer_limit': { since: '1.36', type: 'google.protobuf.UInt64Value' },
  'envoy.config.route.v3.VirtualHost.request_body_buffer_limit': { since: '1.36', type: 'google.protobuf.UInt64Value' },
  // STREAMED only: send body chunks before the headers answer (ref §3.1 #21).
  'envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor.send_body_without_waiting_for_header_response': {
    since: '1.32',
    type: 'bool',
  },
  // Keep content-length in STREAMED / FULL_DUPLEX_STREAMED modes (ref §3.1 #26).
  'envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor.allow_content_length_header': {
    since: '1.38',
    type: 'bool',
  },
};

const NEWER_ENUM_VALUES: Readonly<Record<string, NewerEnumValue>> = {
  // Implemented in 1.33 (hidden), public API in 1.34 (ref §2.1, §6).
  'envoy.extensions.filters.http.ext_proc.v3.ProcessingMode.BodySendMode.FULL_DUPLEX_STREAMED': {
    since: '1.34',
    number: 4,
  },
};

// ---------------------------------------------------------------------------------------------
// Strict decoder
// ---------------------------------------------------------------------------------------------

interface Issue {
  path: string;
  message: string;
}

interface FieldSpec {
  name: string;
  type: string;
  resolved: Type | Enum | null;
  repeated: boolean;
  keyType: string | undefined;
  options: Record<string, unknown>;
}

type JsonObject = Record<string, unknown>;

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const INT32: Record<string, [number, number]> = {
  int32: [-(2 ** 31), 2 ** 31 - 1],
  sint32: [-(2 ** 31), 2 ** 31 - 1],
  sfixed32: [-(2 ** 31), 2 ** 31 - 1],
  uint32: [0, 2 ** 32 - 1],
  fixed32: [0, 2 ** 32 - 1],
};
const INT64: Record<string, [bigint, bigint]> = {
  int64: [-(2n ** 63n), 2n ** 63n - 1n],
  sint64: [-(2n ** 63n), 2n ** 63n - 1n],
  sfixed64: [-(2n ** 63n), 2n ** 63n - 1n],
  uint64: [0n, 2n ** 64n - 1n],
  fixed64: [0n, 2n ** 64n - 1n],
};

const WRAPPERS = new Set(['Double', 'Float', 'Int64', 'UInt64', 'Int32', 'UInt32', 'Bool', 'String', 'Bytes'].map((w) => `google.protobuf.${w}Value`));

/** Well-known types whose proto3 JSON form is not an object (inside an Any: {"@type", "value"}). */
const SPECIAL_JSON = new Set([...WRAPPERS, ...['Duration', 'Timestamp', 'FieldMask', 'Struct', 'Value', 'ListValue'].map((w) => `google.protobuf.${w}`)]);

/** proto3 JSON for Duration: decimal seconds with up to 9 fractional digits and a trailing "s". */
const DURATION = /^-?(\d+)(\.\d{1,9})?s$/;
const MAX_DURATION_SECONDS = 315_576_000_000;

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0]!;
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = d[j]!;
      d[j] = Math.min(d[j]! + 1, d[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return d[b.length]!;
}

function durationSeconds(v: string): number {
  return Number(v.slice(0, -1));
}

/** Duration rule value `{seconds, nanos}` from flattened option keys, if present. */
function ruleDuration(options: Record<string, unknown>, key: string): number | undefined {
  const s = options[`(validate.rules).duration.${key}.seconds`];
  const n = options[`(validate.rules).duration.${key}.nanos`];
  if (s === undefined && n === undefined) return undefined;
  return Number(s ?? 0) + Number(n ?? 0) / 1e9;
}

class StrictDecoder {
  readonly issues: Issue[] = [];
  /** Paths of deprecated fields / enum values used. */
  readonly deprecated: string[] = [];
  /** Allow-listed newer names used, as "path (Envoy >= x)". */
  readonly newer: string[] = [];
  /** Full names of the messages that `@type` URLs resolved to. */
  readonly anyTypes = new Set<string>();

  private readonly camel = new WeakMap<Type, Map<string, Field>>();

  constructor(private readonly protos: ProtoSet) {}

  /** Decodes `value` as message `typeName`; returns this for chaining. */
  decode(typeName: string, value: unknown, path = ''): this {
    const type = this.protos.lookup(typeName);
    assert.ok(type instanceof protobuf.Type, `${typeName} is not a message in the loaded protos`);
    this.message(type, value, path);
    return this;
  }

  private issue(path: string, message: string): void {
    this.issues.push({ path: path || '(root)', message });
  }

  private fieldByName(type: Type, key: string): Field | undefined {
    const direct = type.fields[key];
    if (direct) return direct;
    let byJson = this.camel.get(type);
    if (!byJson) {
      byJson = new Map(type.fieldsArray.map((f) => [protobuf.util.camelCase(f.name), f]));
      this.camel.set(type, byJson);
    }
    return byJson.get(key);
  }

  private spec(field: Field): FieldSpec {
    const resolved = field.resolvedType;
    return {
      name: field.name,
      type: resolved ? fullName(resolved) : field.type,
      resolved: resolved instanceof protobuf.Type || resolved instanceof protobuf.Enum ? resolved : null,
      repeated: field.repeated,
      keyType: field.map ? (field as unknown as MapField).keyType : undefined,
      options: (field.options ?? {}) as Record<string, unknown>,
    };
  }

  private newerSpec(name: string, entry: NewerField): FieldSpec {
    const resolved = /^[a-z0-9]+$/.test(entry.type) ? null : this.protos.lookup(entry.type);
    if (!/^[a-z0-9]+$/.test(entry.type) && !resolved) {
      throw new Error(`allow-list type ${entry.type} does not resolve`);
    }
    return { name, type: entry.type, resolved, repeated: false, keyType: undefined, options: {} };
  }

  private message(type: Type, value: unknown, path: string): void {
    const name = fullName(type);
    if (name.startsWith('google.protobuf.') && this.wellKnown(name, type, value, path)) return;
    if (!isObject(value)) {
      this.issue(path, `expected an object for ${name}, got ${JSON.stringify(value)}`);
      return;
    }
    const present = new Set<string>();
    for (const [key, v] of Object.entries(value)) {
      const p = path ? `${path}.${key}` : key;
      const field = this.fieldByName(type, key);
      if (!field) {
        const newer = NEWER_FIELDS[`${name}.${key}`];
        if (newer) {
          this.newer.push(`${p} (Envoy >= ${newer.since})`);
          present.add(key);
          this.fieldValue(this.newerSpec(key, newer), v, p);
          continue;
        }
        const close = type.fieldsArray
          .map((f) => f.name)
          .filter((f) => editDistance(f, key) <= 2)
          .sort((a, b) => editDistance(a, key) - editDistance(b, key));
        this.issue(p, `unknown field "${key}" in ${name}${close.length > 0 ? ` (did you mean "${close[0]}"?)` : ''}`);
        continue;
      }
      if (present.has(field.name)) {
        this.issue(p, `field ${field.name} given twice (snake_case and camelCase)`);
        continue;
      }
      present.add(field.name);
      if (field.options?.deprecated === true) this.deprecated.push(p);
      this.fieldValue(this.spec(field), v, p);
    }

    for (const oneof of type.oneofsArray) {
      const set = oneof.oneof.filter((f) => present.has(f));
      if (set.length > 1) this.issue(path, `oneof ${oneof.name} of ${name} has several members set: ${set.join(', ')}`);
      if (set.length === 0 && oneof.options?.['(validate.required)'] === true) {
        this.issue(path, `${name} requires one of: ${oneof.oneof.join(', ')}`);
      }
    }
    // protoc-gen-validate rules that make an absent field an error.
    for (const field of type.fieldsArray) {
      if (present.has(field.name) || field.partOf) continue;
      const o = (field.options ?? {}) as Record<string, unknown>;
      const p = path ? `${path}.${field.name}` : field.name;
      if (o['(validate.rules).message.required'] === true || o['(validate.rules).duration.required'] === true) {
        this.issue(p, `required field ${field.name} of ${name} is missing`);
      }
      const minLen = o['(validate.rules).string.min_len'] ?? o['(validate.rules).string.min_bytes'];
      if (typeof minLen === 'number' && minLen > 0 && !field.repeated && field.type === 'string') {
        this.issue(p, `required field ${field.name} of ${name} is missing (min_len ${minLen})`);
      }
      const minItems = o['(validate.rules).repeated.min_items'] ?? o['(validate.rules).map.min_pairs'];
      if (typeof minItems === 'number' && minItems > 0 && (field.repeated || field.map)) {
        this.issue(p, `field ${field.name} of ${name} needs at least ${minItems} item(s)`);
      }
    }
  }

  private fieldValue(spec: FieldSpec, value: unknown, path: string): void {
    if (value === null && spec.type !== 'google.protobuf.Value') {
      this.issue(path, `null value for ${spec.name} (write {} or leave the field out)`);
      return;
    }
    if (spec.keyType !== undefined) {
      if (!isObject(value)) {
        this.issue(path, `expected a map (object) for ${spec.name}`);
        return;
      }
      for (const [k, v] of Object.entries(value)) {
        if (spec.keyType !== 'string') this.scalar(spec.keyType, /^(true|false)$/.test(k) ? k === 'true' : k, `${path}[${k}]`);
        this.single(spec, v, `${path}[${k}]`);
      }
      return;
    }
    if (spec.repeated) {
      if (!Array.isArray(value)) {
        this.issue(path, `expected a list for repeated field ${spec.name}`);
        return;
      }
      const min = spec.options['(validate.rules).repeated.min_items'];
      if (typeof min === 'number' && value.length < min) {
        this.issue(path, `field ${spec.name} needs at least ${min} item(s)`);
      }
      for (const [i, v] of value.entries()) this.single(spec, v, `${path}[${i}]`);
      return;
    }
    this.single(spec, value, path);
  }

  private single(spec: FieldSpec, value: unknown, path: string): void {
    if (value === null && spec.type !== 'google.protobuf.Value') {
      this.issue(path, `null element for ${spec.name}`);
      return;
    }
    const r = spec.resolved;
    if (r instanceof protobuf.Enum) {
      this.enumValue(r, value, path);
      return;
    }
    if (r instanceof protobuf.Type) {
      this.message(r, value, path);
      if (spec.type === 'google.protobuf.Duration' && typeof value === 'string' && DURATION.test(value)) {
        this.durationRules(spec, durationSeconds(value), path);
      }
      return;
    }
    this.scalar(spec.type, value, path);
    this.scalarRules(spec, value, path);
  }

  private enumValue(e: Enum, value: unknown, path: string): void {
    const name = fullName(e);
    if (typeof value === 'string') {
      if (e.values[value] !== undefined) {
        if (e.valuesOptions?.[value]?.deprecated === true) this.deprecated.push(path);
        return;
      }
      const newer = NEWER_ENUM_VALUES[`${name}.${value}`];
      if (newer) {
        this.newer.push(`${path}=${value} (Envoy >= ${newer.since})`);
        return;
      }
      this.issue(path, `"${value}" is not a value of enum ${name} (${Object.keys(e.values).join(', ')})`);
      return;
    }
    if (typeof value === 'number' && Number.isInteger(value)) {
      if (!Object.values(e.values).includes(value)) this.issue(path, `${value} is not a number of enum ${name}`);
      return;
    }
    this.issue(path, `expected an enum name of ${name}, got ${JSON.stringify(value)}`);
  }

  private scalar(type: string, value: unknown, path: string): void {
    const bad = (what: string): void => this.issue(path, `expected ${what} (${type}), got ${JSON.stringify(value)}`);
    if (type in INT32) {
      const [lo, hi] = INT32[type]!;
      const n = typeof value === 'string' && /^-?\d+$/.test(value) ? Number(value) : value;
      if (typeof n !== 'number' || !Number.isInteger(n) || n < lo || n > hi) bad('an integer in range');
      return;
    }
    if (type in INT64) {
      const [lo, hi] = INT64[type]!;
      let n: bigint | undefined;
      if (typeof value === 'number' && Number.isSafeInteger(value)) n = BigInt(value);
      else if (typeof value === 'string' && /^-?\d+$/.test(value)) n = BigInt(value);
      if (n === undefined || n < lo || n > hi) bad('an integer in range');
      return;
    }
    switch (type) {
      case 'double':
      case 'float':
        if (typeof value === 'number') return;
        if (typeof value === 'string' && /^(NaN|-?Infinity|-?\d+(\.\d+)?([eE][-+]?\d+)?)$/.test(value)) return;
        bad('a number');
        return;
      case 'bool':
        if (typeof value !== 'boolean') bad('true or false');
        return;
      case 'string':
        if (typeof value !== 'string') bad('a string');
        return;
      case 'bytes':
        if (typeof value !== 'string' || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(value)) bad('base64 text');
        return;
      default:
        this.issue(path, `unresolved type ${type}`);
    }
  }

  /** The numeric and string rules of protoc-gen-validate that are cheap to check. */
  private scalarRules(spec: FieldSpec, value: unknown, path: string): void {
    const o = spec.options;
    if (typeof value === 'string' && spec.type === 'string') {
      const min = o['(validate.rules).string.min_len'] ?? o['(validate.rules).string.min_bytes'];
      if (typeof min === 'number' && value.length < min) this.issue(path, `${spec.name} must be at least ${min} long`);
      return;
    }
    const n = typeof value === 'number' ? value : typeof value === 'string' ? Number(value) : NaN;
    if (Number.isNaN(n)) return;
    const rule = (op: string): number | undefined => {
      const v = o[`(validate.rules).${spec.type}.${op}`];
      return typeof v === 'number' ? v : typeof v === 'string' ? Number(v) : undefined;
    };
    const [gt, gte, lt, lte] = [rule('gt'), rule('gte'), rule('lt'), rule('lte')];
    if (gt !== undefined && !(n > gt)) this.issue(path, `${spec.name} must be > ${gt}`);
    if (gte !== undefined && !(n >= gte)) this.issue(path, `${spec.name} must be >= ${gte}`);
    if (lt !== undefined && !(n < lt)) this.issue(path, `${spec.name} must be < ${lt}`);
    if (lte !== undefined && !(n <= lte)) this.issue(path, `${spec.name} must be <= ${lte}`);
  }

  private durationRules(spec: FieldSpec, seconds: number, path: string): void {
    const o = spec.options;
    const gt = ruleDuration(o, 'gt');
    const gte = ruleDuration(o, 'gte');
    const lt = ruleDuration(o, 'lt');
    const lte = ruleDuration(o, 'lte');
    if (gt !== undefined && !(seconds > gt)) this.issue(path, `${spec.name} must be > ${gt}s`);
    if (gte !== undefined && !(seconds >= gte)) this.issue(path, `${spec.name} must be >= ${gte}s`);
    if (lt !== undefined && !(seconds < lt)) this.issue(path, `${spec.name} must be < ${lt}s`);
    if (lte !== undefined && !(seconds <= lte)) this.issue(path, `${spec.name} must be <= ${lte}s`);
  }

  /** proto3 JSON forms of the well-known types; returns false for a normal message. */
  private wellKnown(name: string, type: Type, value: unknown, path: string): boolean {
    if (WRAPPERS.has(name)) {
      const inner = type.fields.value!;
      this.scalar(inner.type, value, path);
      return true;
    }
    switch (name) {
      case 'google.protobuf.Duration':
        if (typeof value !== 'string' || !DURATION.test(value)) {
          this.issue(path, `expected a duration like "10s" or "0.5s", got ${JSON.stringify(value)}`);
        } else if (Math.abs(durationSeconds(value)) > MAX_DURATION_SECONDS) {
          this.issue(path, 'duration out of range');
        }
        return true;
      case 'google.protobuf.Timestamp':
        if (typeof value !== 'string' || Number.isNaN(Date.parse(value))) this.issue(path, 'expected an RFC 3339 timestamp');
        return true;
      case 'google.protobuf.FieldMask':
        if (typeof value !== 'string') this.issue(path, 'expected a field mask string');
        return true;
      case 'google.protobuf.Struct':
        if (!isObject(value)) this.issue(path, 'expected an object (Struct)');
        return true;
      case 'google.protobuf.ListValue':
        if (!Array.isArray(value)) this.issue(path, 'expected a list (ListValue)');
        return true;
      case 'google.protobuf.Value':
        return true;
      case 'google.protobuf.Any':
        this.any(value, path);
        return true;
      default:
        return false;
    }
  }

  private any(value: unknown, path: string): void {
    if (!isObject(value)) {
      this.issue(path, 'expected an object with "@type" (Any)');
      return;
    }
    const url = value['@type'];
    if (typeof url !== 'string' || !url.includes('/')) {
      this.issue(path, `Any needs "@type": "type.googleapis.com/<message>", got ${JSON.stringify(url)}`);
      return;
    }
    const typeName = url.slice(url.lastIndexOf('/') + 1);
    const type = this.protos.lookup(typeName);
    if (!(type instanceof protobuf.Type)) {
      this.issue(`${path}.@type`, `unknown type URL ${url}: no message ${typeName} in Envoy's protos`);
      return;
    }
    this.anyTypes.add(typeName);
    const rest: JsonObject = { ...value };
    delete rest['@type'];
    if (SPECIAL_JSON.has(typeName)) {
      // Well-known types with a non-object JSON form are wrapped as {"@type": ..., "value": ...}.
      const { value: inner, ...extra } = rest;
      for (const k of Object.keys(extra)) this.issue(`${path}.${k}`, `unexpected key next to "value" in Any of ${typeName}`);
      this.message(type, inner, `${path}.value`);
      return;
    }
    this.message(type, rest, path);
  }
}

// ---------------------------------------------------------------------------------------------
// Loading and navigation helpers
// ---------------------------------------------------------------------------------------------

const BOOTSTRAP = 'envoy.config.bootstrap.v3.Bootstrap';
const ENVOY_DIR = path.join(REPO_ROOT, 'envoy');
const CONFIG_FILES = readdirSync(ENVOY_DIR)
  .filter((f) => /\.ya?ml$/.test(f))
  .sort();

const protos = new ProtoSet(XDS_INCLUDE_DIRS).load(['envoy/config/bootstrap/v3/bootstrap.proto']);

function readConfig(file: string): JsonObject {
  const doc: unknown = YAML.parse(readFileSync(path.join(ENVOY_DIR, file), 'utf8'), { uniqueKeys: true });
  assert.ok(isObject(doc), `${file}: not a YAML mapping`);
  return doc;
}

function validate(config: unknown, typeName = BOOTSTRAP): StrictDecoder {
  return new StrictDecoder(protos).decode(typeName, config);
}

/** Follows keys / indexes; fails with the path when something is missing. */
function at(value: unknown, ...keys: (string | number)[]): unknown {
  let cur = value;
  const seen: (string | number)[] = [];
  for (const k of keys) {
    seen.push(k);
    const next = typeof k === 'number' ? (Array.isArray(cur) ? cur[k] : undefined) : isObject(cur) ? cur[k] : undefined;
    assert.ok(next !== undefined, `missing ${seen.join('.')}`);
    cur = next;
  }
  return cur;
}

function list(value: unknown, ...keys: (string | number)[]): unknown[] {
  const v = at(value, ...keys);
  assert.ok(Array.isArray(v), `${keys.join('.')} is not a list`);
  return v;
}

function named(items: unknown[], name: string): JsonObject {
  const hit = items.find((i) => isObject(i) && i.name === name);
  assert.ok(isObject(hit), `no item named ${name}`);
  return hit;
}

function cluster(cfg: unknown, name: string): JsonObject {
  return named(list(cfg, 'static_resources', 'clusters'), name);
}

function hcm(cfg: unknown): JsonObject {
  const listener = named(list(cfg, 'static_resources', 'listeners'), 'llm');
  const filter = named(list(listener, 'filter_chains', 0, 'filters'), 'envoy.filters.network.http_connection_manager');
  const tc = at(filter, 'typed_config');
  assert.ok(isObject(tc));
  return tc;
}

function httpFilters(cfg: unknown): JsonObject[] {
  return list(hcm(cfg), 'http_filters') as JsonObject[];
}

function extProc(cfg: unknown): JsonObject {
  const tc = at(named(httpFilters(cfg), 'envoy.filters.http.ext_proc'), 'typed_config');
  assert.ok(isObject(tc));
  return tc;
}

function socket(addr: unknown): string {
  return `${String(at(addr, 'socket_address', 'address'))}:${String(at(addr, 'socket_address', 'port_value'))}`;
}

function routes(cfg: unknown): JsonObject[] {
  return virtualHosts(cfg).flatMap((vh) => list(vh, 'routes') as JsonObject[]);
}

/** The request body Envoy buffers at most (BUFFERED): every route's request_body_buffer_limit if all set one, else the listener's. */
function bufferLimit(cfg: unknown): number {
  const listener = named(list(cfg, 'static_resources', 'listeners'), 'llm');
  const routeLimits = routes(cfg).map((r) => r.request_body_buffer_limit);
  if (routeLimits.every((v) => v !== undefined)) return Math.min(...routeLimits.map(Number));
  return Number(listener.per_connection_buffer_limit_bytes ?? MIB);
}

function virtualHosts(cfg: unknown): JsonObject[] {
  return list(hcm(cfg), 'route_config', 'virtual_hosts') as JsonObject[];
}

function seconds(v: unknown): number {
  assert.ok(typeof v === 'string' && DURATION.test(v), `not a duration: ${String(v)}`);
  return durationSeconds(v);
}

const MIB = 1024 * 1024;
/** llm-extproc's defaults (a backend is required): what a config must agree with when llm-extproc runs without other flags. */
const DEFAULTS = parseConfig(['--static-hosts=127.0.0.1:8000'], {})!;
/** Room a BUFFERED body's gRPC message needs above the body (framing, attributes): --grpc-max-receive-size's rule. */
const GRPC_HEADROOM = MIB;
/** The shipped routes file, whose names the Envoy routes share. */
const SHIPPED_ROUTES = validateRoutes(JSON.parse(readFileSync(path.join(REPO_ROOT, 'config', 'routes.json'), 'utf8')), 'config/routes.json');
const UPSTREAM_TLS = 'envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext';
const SAFE_RETRY_ON = new Set(['connect-failure', 'refused-stream', 'reset-before-request']);

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

describe('envoy configs decode strictly against Envoy protos', () => {
  it('finds the configs', () => {
    assert.ok(CONFIG_FILES.includes('envoy.yaml'), 'envoy/envoy.yaml missing');
    assert.ok(CONFIG_FILES.includes('envoy-full-duplex.yaml'), 'envoy/envoy-full-duplex.yaml missing');
    assert.ok(CONFIG_FILES.includes('envoy-tls.yaml'), 'envoy/envoy-tls.yaml missing');
    assert.ok(CONFIG_FILES.includes('envoy-service.yaml'), 'envoy/envoy-service.yaml missing');
  });

  for (const file of CONFIG_FILES) {
    it(`${file}: every field, enum and @type is known`, (t) => {
      const d = validate(readConfig(file));
      assert.deepEqual(d.issues, [], `${file} does not decode:\n${d.issues.map((i) => `  ${i.path}: ${i.message}`).join('\n')}`);
      assert.deepEqual(d.deprecated, [], `${file} uses deprecated fields`);
      t.diagnostic(`${file}: typed configs checked: ${[...d.anyTypes].sort().join(', ')}`);
      t.diagnostic(`${file}: names newer than the xds protos: ${d.newer.join('; ') || 'none'}`);
      for (const needed of [
        'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
        'envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor',
        'envoy.extensions.filters.http.router.v3.Router',
        'envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
      ]) {
        assert.ok(d.anyTypes.has(needed), `${file}: ${needed} was not decoded`);
      }
    });

    it(`${file}: important values`, () => {
      const cfg = readConfig(file);
      // Addresses.
      assert.equal(socket(at(cfg, 'admin', 'address')), '127.0.0.1:9901');
      const listener = named(list(cfg, 'static_resources', 'listeners'), 'llm');
      assert.equal(socket(at(listener, 'address')), '0.0.0.0:8080');

      // ext_proc cluster: llm-extproc's default --port (sidecar: STATIC loopback; Service: STRICT_DNS
      // by the short name, see envoy-service.yaml) over HTTP/2, recycled connections, big breakers, gRPC health.
      const ep = cluster(cfg, 'ext_proc');
      const eps = list(ep, 'load_assignment', 'endpoints', 0, 'lb_endpoints');
      const extProcHost = ep.type === 'STRICT_DNS' ? 'vllm-extproc' : '127.0.0.1';
      assert.ok(ep.type === 'STATIC' || ep.type === 'STRICT_DNS', `ext_proc cluster type ${String(ep.type)}`);
      assert.deepEqual(
        eps.map((e) => socket(at(e, 'endpoint', 'address'))),
        [`${extProcHost}:${DEFAULTS.port}`],
      );
      const hpoKey = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions';
      const hpo = at(ep, 'typed_extension_protocol_options', hpoKey);
      assert.equal(at(hpo, '@type'), `type.googleapis.com/${hpoKey}`);
      assert.ok(isObject(at(hpo, 'explicit_http_config', 'http2_protocol_options')), 'ext_proc cluster must use HTTP/2');
      const maxReq = Number(at(hpo, 'common_http_protocol_options', 'max_requests_per_connection'));
      assert.ok(maxReq > 0 && maxReq <= 900, `max_requests_per_connection ${maxReq} must stay under Node's ~1000 reset burst`);
      const hc = list(ep, 'health_checks');
      assert.equal(at(hc, 0, 'grpc_health_check', 'service_name'), 'envoy.service.ext_proc.v3.ExternalProcessor');

      for (const name of ['ext_proc', 'llm_original_dst']) {
        const th = list(cluster(cfg, name), 'circuit_breakers', 'thresholds');
        for (const key of ['max_connections', 'max_pending_requests', 'max_requests']) {
          assert.ok(Number(at(th, 0, key)) >= 10_000, `${name} circuit breaker ${key} not raised`);
        }
      }

      // Upstream: ORIGINAL_DST by llm-extproc's default --destination-header.
      const od = cluster(cfg, 'llm_original_dst');
      assert.equal(od.type, 'ORIGINAL_DST');
      assert.equal(od.lb_policy, 'CLUSTER_PROVIDED');
      assert.deepEqual(at(od, 'original_dst_lb_config'), {
        use_http_header: true,
        http_header_name: DEFAULTS.destinationHeader,
      });

      // Every route goes to a defined cluster, without a timeout, with only safe retries (its own or its virtual host's).
      const clusterNames = new Set(list(cfg, 'static_resources', 'clusters').map((c) => at(c, 'name')));
      for (const vh of virtualHosts(cfg)) {
        const rs = list(vh, 'routes') as JsonObject[];
        assert.ok(rs.length > 0);
        for (const r of rs) {
          assert.ok(clusterNames.has(at(r, 'route', 'cluster')), 'route to an unknown cluster');
          assert.equal(at(r, 'route', 'cluster'), 'llm_original_dst');
          assert.equal(seconds(at(r, 'route', 'timeout')), 0, 'route timeout must be disabled for streaming');
          assert.ok(seconds(at(r, 'route', 'idle_timeout')) >= 600);
          const retry = (at(r, 'route') as JsonObject).retry_policy ?? at(vh, 'retry_policy');
          const retryOn = String(at(retry, 'retry_on')).split(',');
          for (const cond of retryOn) assert.ok(SAFE_RETRY_ON.has(cond.trim()), `unsafe retry_on ${cond}`);
        }
      }
      assert.ok(seconds(at(hcm(cfg), 'stream_idle_timeout')) >= 600);

      // Filter chain: strip client header -> ext_proc -> router (last).
      const names = httpFilters(cfg).map((f) => f.name);
      assert.deepEqual(names, ['envoy.filters.http.header_mutation', 'envoy.filters.http.ext_proc', 'envoy.filters.http.router']);
      const removed = list(named(httpFilters(cfg), 'envoy.filters.http.header_mutation'), 'typed_config', 'mutations', 'request_mutations');
      assert.deepEqual(removed, [{ remove: DEFAULTS.destinationHeader }]);

      // ext_proc filter.
      const x = extProc(cfg);
      assert.equal(at(x, 'grpc_service', 'envoy_grpc', 'cluster_name'), 'ext_proc');
      assert.ok(clusterNames.has('ext_proc'));
      assert.equal(x.failure_mode_allow, false);
      assert.ok(seconds(at(x, 'message_timeout')) >= 5, 'message_timeout must be raised from 200ms');
      assert.ok(
        seconds(at(x, 'message_timeout')) * 1000 > MAX_EXTERNAL_FILTER_TIMEOUT_MS,
        "message_timeout must outlast llm-extproc's longest external filter timeout, so llm-extproc answers before Envoy's 504",
      );
      // Envoy's receive limit (unset = unlimited) must take llm-extproc's largest answer, a streamed body chunk.
      const maxReceive = (at(x, 'grpc_service', 'envoy_grpc') as JsonObject).max_receive_message_length;
      if (maxReceive !== undefined)
        assert.ok(Number(maxReceive) >= STREAMED_CHUNK_BYTES + 1024, `max_receive_message_length ${String(maxReceive)} is too small`);
      assert.deepEqual(at(x, 'metadata_options', 'receiving_namespaces', 'untyped'), ['envoy.lb']);
      assert.equal(x.mutation_rules, undefined, 'default mutation rules expected');
      const mode = at(x, 'processing_mode');
      assert.equal(at(mode, 'request_header_mode'), 'SEND');
      assert.equal(at(mode, 'response_header_mode'), 'SEND', 'x-routed-to needs the response headers');
      assert.equal(at(mode, 'response_body_mode'), 'NONE');
      for (const dir of ['request', 'response']) {
        const body = isObject(mode) ? mode[`${dir}_body_mode`] : undefined;
        if (body === 'FULL_DUPLEX_STREAMED') {
          assert.equal(at(mode, `${dir}_trailer_mode`), 'SEND', `FULL_DUPLEX_STREAMED ${dir} body needs ${dir}_trailer_mode SEND`);
        }
      }
      if (at(mode, 'request_body_mode') === 'BUFFERED') {
        // Envoy holds the whole body and sends it as one gRPC message: it must fit both of llm-extproc's limits.
        const limit = bufferLimit(cfg);
        assert.ok(limit >= DEFAULTS.maxBodyBytes, `BUFFERED needs a buffer limit >= --max-body-size (${DEFAULTS.maxBodyBytes}), got ${limit}`);
        assert.ok(
          limit + GRPC_HEADROOM <= DEFAULTS.grpcMaxReceiveBytes,
          `a ${limit}-byte body would exceed --grpc-max-receive-size (${DEFAULTS.grpcMaxReceiveBytes})`,
        );
      }

      // Runtime flags.
      const layers = list(cfg, 'layered_runtime', 'layers');
      const staticLayer = at(named(layers, 'static'), 'static_layer');
      assert.equal(at(staticLayer, 'envoy.reloadable_features.ext_proc_graceful_grpc_close'), true);
      assert.equal(at(staticLayer, 'envoy.reloadable_features.ext_proc_stream_close_optimization'), false);
    });

    it(`${file}: route names shared with the routes file, sent as xds.route_name`, () => {
      const cfg = readConfig(file);
      assert.deepEqual(list(extProc(cfg), 'request_attributes'), [ROUTE_NAME_ATTRIBUTE]);
      const shipped = new Map(SHIPPED_ROUTES.map((r) => [r.name, r]));
      for (const r of routes(cfg)) {
        const name = String(at(r, 'name'));
        const entry = shipped.get(name);
        assert.ok(entry, `Envoy route ${name} is not in config/routes.json (${[...shipped.keys()].join(', ')})`);
        // Same prefix, so an llm-extproc that gets no name (older Envoy) picks the same entry.
        assert.equal(at(r, 'match', 'prefix'), entry.path_prefix, `route ${name}: Envoy's prefix differs from path_prefix`);
      }
    });

    it(`${file}: access log on stdout shows the decision and why Envoy answered itself`, () => {
      const log = list(hcm(readConfig(file)), 'access_log');
      assert.equal(log.length, 1);
      assert.equal(at(log, 0, 'typed_config', '@type'), 'type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog');
      const fields = Object.values(at(log, 0, 'typed_config', 'log_format', 'json_format') as JsonObject).map(String);
      for (const command of [
        `%REQ(${DEFAULTS.destinationHeader})%`,
        '%REQ(x-request-id)%',
        '%UPSTREAM_HOST%',
        '%RESPONSE_FLAGS%',
        '%RESPONSE_CODE_DETAILS%',
        '%RESPONSE_CODE%',
        '%DURATION%',
        '%ROUTE_NAME%',
      ]) {
        assert.ok(fields.includes(command), `${file}: access log lacks ${command}`);
      }
    });
  }

  it('envoy.yaml buffers the request body with a 32 MiB limit', () => {
    const cfg = readConfig('envoy.yaml');
    const mode = at(extProc(cfg), 'processing_mode');
    assert.equal(at(mode, 'request_body_mode'), 'BUFFERED');
    const listener = named(list(cfg, 'static_resources', 'listeners'), 'llm');
    assert.ok(Number(at(listener, 'per_connection_buffer_limit_bytes')) >= DEFAULTS.maxBodyBytes);
  });

  it('envoy-full-duplex.yaml streams the request body full duplex with trailers SEND', () => {
    const cfg = readConfig('envoy-full-duplex.yaml');
    const mode = at(extProc(cfg), 'processing_mode');
    assert.equal(at(mode, 'request_body_mode'), 'FULL_DUPLEX_STREAMED');
    assert.equal(at(mode, 'request_trailer_mode'), 'SEND');
    assert.equal(at(mode, 'response_body_mode'), 'NONE');
  });

  it('the two configs differ only in the request body path', () => {
    const strip = (cfg: JsonObject): JsonObject => {
      const copy = structuredClone(cfg);
      const x = extProc(copy);
      delete (x.processing_mode as JsonObject).request_body_mode;
      delete (x.processing_mode as JsonObject).request_trailer_mode;
      delete named(list(copy, 'static_resources', 'listeners'), 'llm').per_connection_buffer_limit_bytes;
      return copy;
    };
    assert.deepEqual(strip(readConfig('envoy-full-duplex.yaml')), strip(readConfig('envoy.yaml')));
  });

  it('envoy-tls.yaml is envoy.yaml plus mTLS to the ext_proc cluster', () => {
    const cfg = readConfig('envoy-tls.yaml');
    const transport = at(cluster(cfg, 'ext_proc'), 'transport_socket');
    assert.equal(at(transport, 'name'), 'envoy.transport_sockets.tls');
    const tls = at(transport, 'typed_config');
    assert.equal(at(tls, '@type'), `type.googleapis.com/${UPSTREAM_TLS}`);
    assert.ok(validate(cfg).anyTypes.has(UPSTREAM_TLS), 'the UpstreamTlsContext was not decoded');
    // The name llm-extproc's certificate carries (as in the TLS tests), sent as SNI and required.
    assert.equal(at(tls, 'sni'), SERVER_NAME);
    const common = at(tls, 'common_tls_context');
    assert.deepEqual(at(common, 'validation_context', 'match_typed_subject_alt_names'), [{ san_type: 'DNS', matcher: { exact: SERVER_NAME } }]);
    assert.deepEqual(at(common, 'alpn_protocols'), ['h2'], "Node's HTTP/2 server needs ALPN h2");
    const files = [
      at(common, 'validation_context', 'trusted_ca', 'filename'),
      at(common, 'tls_certificates', 0, 'certificate_chain', 'filename'),
      at(common, 'tls_certificates', 0, 'private_key', 'filename'),
    ];
    for (const file of files) assert.match(String(file), /^\/etc\/llm-extproc\/tls\//);
    const plain = structuredClone(cfg);
    delete cluster(plain, 'ext_proc').transport_socket;
    assert.deepEqual(plain, readConfig('envoy.yaml'));
  });
});

describe('envoy-service.yaml (llm-extproc behind the Service vllm-extproc)', () => {
  const cfg = readConfig('envoy-service.yaml');
  const ep = cluster(cfg, 'ext_proc');

  it('resolves the short Service name with STRICT_DNS, so it works in whichever namespace Envoy and the Service share', () => {
    assert.equal(ep.type, 'STRICT_DNS');
    const address = String(at(ep, 'load_assignment', 'endpoints', 0, 'lb_endpoints', 0, 'endpoint', 'address', 'socket_address', 'address'));
    assert.equal(address, 'vllm-extproc');
    assert.ok(!address.includes('.'), 'a dotted name pins a namespace and walks every search domain first');
    assert.equal(ep.dns_lookup_family, 'V4_PREFERRED');
  });

  it('pings its HTTP/2 connections to llm-extproc pods', () => {
    const keepalive = at(
      ep,
      'typed_extension_protocol_options',
      'envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
      'explicit_http_config',
      'http2_protocol_options',
      'connection_keepalive',
    );
    assert.ok(seconds(at(keepalive, 'interval')) > 0 && seconds(at(keepalive, 'timeout')) > 0);
  });

  it('is envoy.yaml apart from the ext_proc cluster, whose settings are otherwise the same', () => {
    const local = readConfig('envoy.yaml');
    const service = structuredClone(cfg);
    const [localEp, serviceEp] = [cluster(local, 'ext_proc'), cluster(service, 'ext_proc')];
    for (const c of [localEp, serviceEp]) {
      delete c.type;
      delete c.load_assignment;
    }
    delete serviceEp.dns_lookup_family;
    const h2 = at(
      serviceEp,
      'typed_extension_protocol_options',
      'envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
      'explicit_http_config',
      'http2_protocol_options',
    ) as JsonObject;
    delete h2.connection_keepalive;
    assert.deepEqual(service, local);
  });
});

describe('strict decoder catches mistakes', () => {
  const base = (): JsonObject => readConfig('envoy.yaml');
  const extProcPath = 'static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[1].typed_config';

  it('reports a misspelt field with its path', () => {
    const cfg = base();
    const x = extProc(cfg);
    x.failure_mode_alow = x.failure_mode_allow;
    delete x.failure_mode_allow;
    const d = validate(cfg);
    assert.deepEqual(d.issues, [
      {
        path: `${extProcPath}.failure_mode_alow`,
        message: 'unknown field "failure_mode_alow" in envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor (did you mean "failure_mode_allow"?)',
      },
    ]);
  });

  it('reports a misspelt field at top level and deep inside a cluster', () => {
    const cfg = base();
    cfg.admn = cfg.admin;
    const od = cluster(cfg, 'llm_original_dst');
    (od.original_dst_lb_config as JsonObject).http_header = 'x';
    const paths = validate(cfg).issues.map((i) => i.path);
    assert.deepEqual(paths.sort(), ['admn', 'static_resources.clusters[0].original_dst_lb_config.http_header']);
  });

  it('still rejects a misspelling of an allow-listed newer field', () => {
    const cfg = base();
    const route = routes(cfg)[0]!;
    route.request_body_buffer_limit = 33554432; // allowed (Envoy >= 1.36)
    let d = validate(cfg);
    assert.deepEqual(d.issues, []);
    assert.equal(d.newer.length, 1);
    delete route.request_body_buffer_limit;
    route.request_body_buffer_limt = 33554432;
    d = validate(cfg);
    assert.equal(d.issues.length, 1);
    assert.match(d.issues[0]!.path, /routes\[0\]\.request_body_buffer_limt$/);
    // ... and type-checks the allow-listed field's value.
    delete route.request_body_buffer_limt;
    route.request_body_buffer_limit = '32Mi';
    assert.match(validate(cfg).issues[0]?.message ?? '', /integer/);
  });

  it('rejects bad enum names, durations, types and unknown @type URLs', () => {
    const cfg = base();
    const x = extProc(cfg);
    (x.processing_mode as JsonObject).request_body_mode = 'FULL_DUPLEX_STREAM';
    x.message_timeout = '10ms';
    x.failure_mode_allow = 'false';
    const router = named(httpFilters(cfg), 'envoy.filters.http.router');
    (router.typed_config as JsonObject)['@type'] = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Routr';
    const issues = validate(cfg).issues;
    const byPath = new Map(issues.map((i) => [i.path.replace(`${extProcPath}.`, ''), i.message]));
    assert.match(byPath.get('processing_mode.request_body_mode') ?? '', /not a value of enum/);
    assert.match(byPath.get('message_timeout') ?? '', /duration/);
    assert.match(byPath.get('failure_mode_allow') ?? '', /true or false/);
    assert.ok(
      issues.some((i) => i.path.endsWith('http_filters[2].typed_config.@type') && /unknown type URL/.test(i.message)),
      JSON.stringify(issues),
    );
    assert.equal(issues.length, 4);
  });

  it('rejects two members of a oneof and missing required fields', () => {
    const cfg = base();
    const route = routes(cfg)[0]!;
    // A copy: the route action is a YAML alias shared by every route.
    route.route = { ...(route.route as JsonObject), cluster_header: 'x-cluster' };
    const x = extProc(cfg);
    x.grpc_service = { envoy_grpc: {} };
    const issues = validate(cfg).issues;
    assert.ok(
      issues.some((i) => /oneof cluster_specifier .* cluster, cluster_header/.test(i.message)),
      JSON.stringify(issues),
    );
    assert.ok(
      issues.some((i) => i.path === `${extProcPath}.grpc_service.envoy_grpc.cluster_name`),
      JSON.stringify(issues),
    );
    assert.equal(issues.length, 2);
  });

  it("applies Envoy's required-field rules, rejects nulls, flags deprecated fields, accepts camelCase", () => {
    const cfg = base();
    delete hcm(cfg).stat_prefix;
    const ep = cluster(cfg, 'ext_proc');
    ep.max_requests_per_connection = 500; // deprecated in favour of HttpProtocolOptions
    const hpo = at(ep, 'typed_extension_protocol_options', 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions');
    (at(hpo, 'explicit_http_config') as JsonObject).http2_protocol_options = null;
    const od = cluster(cfg, 'llm_original_dst');
    od.connectTimeout = od.connect_timeout; // proto3 JSON name, accepted by Envoy
    delete od.connect_timeout;
    const d = validate(cfg);
    const paths = d.issues.map((i) => i.path).sort();
    assert.deepEqual(
      paths,
      [
        'static_resources.clusters[1].typed_extension_protocol_options[envoy.extensions.upstreams.http.v3.HttpProtocolOptions].explicit_http_config.http2_protocol_options',
        'static_resources.listeners[0].filter_chains[0].filters[0].typed_config.stat_prefix',
      ],
      JSON.stringify(d.issues, null, 1),
    );
    assert.deepEqual(d.deprecated, ['static_resources.clusters[1].max_requests_per_connection']);
  });

  it("decodes envoy-tls.yaml's UpstreamTlsContext field by field", () => {
    const cfg = readConfig('envoy-tls.yaml');
    const validation = at(cluster(cfg, 'ext_proc'), 'transport_socket', 'typed_config', 'common_tls_context', 'validation_context') as JsonObject;
    validation.trusted_cert = validation.trusted_ca;
    delete validation.trusted_ca;
    const issues = validate(cfg).issues;
    assert.equal(issues.length, 1, JSON.stringify(issues));
    assert.match(issues[0]!.message, /unknown field "trusted_cert" in envoy\.extensions\.transport_sockets\.tls\.v3\.CertificateValidationContext/);
  });

  it('rejects FULL_DUPLEX_STREAMED misspelt as a newer enum value, and values out of range', () => {
    const cfg = readConfig('envoy-full-duplex.yaml');
    const admin = at(cfg, 'admin', 'address', 'socket_address') as JsonObject;
    admin.port_value = 70000;
    (at(extProc(cfg), 'processing_mode') as JsonObject).request_body_mode = 'FULL_DUPLEX_STREAMING';
    const issues = validate(cfg).issues;
    assert.equal(issues.length, 2, JSON.stringify(issues));
    assert.ok(issues.some((i) => i.path === 'admin.address.socket_address.port_value'));
  });
});

describe('allow-list of names newer than the grpc-js-xds protos', () => {
  it('every entry is really absent from the xds copy, and its type resolves', (t) => {
    for (const [key, entry] of Object.entries(NEWER_FIELDS)) {
      const msg = key.slice(0, key.lastIndexOf('.'));
      const field = key.slice(key.lastIndexOf('.') + 1);
      const type = protos.lookup(msg);
      assert.ok(type instanceof protobuf.Type, `${msg} missing from the xds protos`);
      assert.equal(type.fields[field], undefined, `${key} now exists in the xds protos: drop it from the allow-list`);
      if (!/^[a-z0-9]+$/.test(entry.type)) assert.ok(protos.lookup(entry.type), `${entry.type} does not resolve`);
      t.diagnostic(`allowed field ${key} (${entry.type}, Envoy >= ${entry.since})`);
    }
    for (const [key, entry] of Object.entries(NEWER_ENUM_VALUES)) {
      const enumName = key.slice(0, key.lastIndexOf('.'));
      const value = key.slice(key.lastIndexOf('.') + 1);
      const e = protos.lookup(enumName);
      assert.ok(e instanceof protobuf.Enum, `${enumName} missing from the xds protos`);
      assert.equal(e.values[value], undefined, `${key} now exists in the xds protos: drop it from the allow-list`);
      assert.ok(!Object.values(e.values).includes(entry.number), `${key}: number ${entry.number} already used`);
      t.diagnostic(`allowed enum value ${key} = ${entry.number} (Envoy >= ${entry.since})`);
    }
  });
});

describe("docker-compose's Envoy", () => {
  const compose = YAML.parse(readFileSync(path.join(REPO_ROOT, 'docker-compose.yaml'), 'utf8'), { uniqueKeys: true, merge: true }) as unknown;

  it("runs in llm-extproc's network namespace with a config this file decodes (test/container-files.test.ts checks the rest)", () => {
    const envoy = at(compose, 'services', 'envoy');
    assert.equal(at(envoy, 'network_mode'), 'service:llm-extproc');
    const command = list(envoy, 'command').map(String);
    const configPath = command[command.indexOf('-c') + 1] ?? '';
    const file = path.basename(configPath.replace(/\$\{ENVOY_CONFIG:-([^}]+)\}/, '$1'));
    assert.ok(CONFIG_FILES.includes(file), `compose points Envoy at ${configPath}`);
    // --config-yaml is merged over the file by Envoy: it must be a valid Bootstrap fragment too.
    const i = command.indexOf('--config-yaml');
    if (i >= 0) {
      const fragment: unknown = YAML.parse(command[i + 1] ?? '');
      assert.deepEqual(validate(fragment).issues, []);
    }
  });
});
