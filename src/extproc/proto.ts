import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { Struct__Output } from '../generated/google/protobuf/Struct.js';
import type { Value__Output } from '../generated/google/protobuf/Value.js';

/** Directory holding llm-extproc's own copies of Envoy's protos. */
export const PROTO_DIR = fileURLToPath(new URL('../../../proto', import.meta.url));

export const EXT_PROC_PROTO = 'envoy/service/ext_proc/v3/external_processor.proto';
export const EXT_PROC_SERVICE = 'envoy.service.ext_proc.v3.ExternalProcessor';
export const EXT_PROC_METHOD_PATH = `/${EXT_PROC_SERVICE}/Process`;

/**
 * Options shared by the loader and the generated types (`npm run gen` passes the same flags):
 * snake_case field names as on the wire, enums as names, a virtual field naming the set oneof.
 */
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  oneofs: true,
  includeDirs: [PROTO_DIR],
};

let cached: protoLoader.PackageDefinition | undefined;

/** The ext_proc package definition (loaded once per process). */
export function extProcPackageDefinition(): protoLoader.PackageDefinition {
  cached ??= protoLoader.loadSync(EXT_PROC_PROTO, LOADER_OPTIONS);
  return cached;
}

/**
 * The ExternalProcessor service as grpc-js loads it: `.service` for a server, `new` for a client.
 * `T` narrows the constructor to a generated client type.
 */
export function extProcService<T = grpc.ServiceClientConstructor>(): T {
  const definition = grpc.loadPackageDefinition(extProcPackageDefinition()) as unknown as {
    envoy: { service: { ext_proc: { v3: { ExternalProcessor: T } } } };
  };
  return definition.envoy.service.ext_proc.v3.ExternalProcessor;
}

let statusByName: Map<string, number> | undefined;

/**
 * An `envoy.type.v3.StatusCode` as the loader hands it (an enum name, or a number the proto does
 * not list) as the numeric HTTP status; 0 when unset or unknown.
 */
export function httpStatusNumber(code: string | number | undefined): number {
  if (code === undefined) return 0;
  if (typeof code === 'number') return code;
  if (!statusByName) {
    const definition = extProcPackageDefinition()['envoy.type.v3.StatusCode'] as protoLoader.EnumTypeDefinition;
    const values = (definition.type as { value: { name: string; number: number }[] }).value;
    statusByName = new Map(values.map((value) => [value.name, value.number]));
  }
  return statusByName.get(code) ?? 0;
}

/** A google.protobuf.Struct as proto-loader gives it (camelCase kinds inside) → plain JS. */
export function structToJs(struct: Struct__Output | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(struct?.fields ?? {})) out[key] = valueToJs(value);
  return out;
}

function valueToJs(value: Value__Output): unknown {
  switch (value.kind) {
    case 'nullValue':
      return null;
    case 'numberValue':
      return value.numberValue;
    case 'stringValue':
      return value.stringValue;
    case 'boolValue':
      return value.boolValue;
    case 'structValue':
      return structToJs(value.structValue);
    case 'listValue':
      return (value.listValue?.values ?? []).map(valueToJs);
    default:
      return undefined;
  }
}
