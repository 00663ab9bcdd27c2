import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

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
