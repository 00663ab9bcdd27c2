import type { ProcessingResponse } from '../generated/envoy/service/ext_proc/v3/ProcessingResponse.js';
import { EXT_PROC_SERVICE, extProcPackageDefinition } from './proto.js';

/**
 * A ProcessingResponse already in wire form. Most answers are one of a handful of messages
 * (CONTINUE, or the route to one of the known endpoints), so they are encoded once and written as
 * bytes: no per-request object building, protobuf conversion or garbage.
 */
export type EncodedResponse = Buffer & { readonly __brand: 'EncodedResponse' };

/** What the gRPC layer writes: a message object, or bytes encoded earlier. */
export type OutgoingResponse = ProcessingResponse | EncodedResponse;

type Serialize = (value: ProcessingResponse) => Buffer;

function responseSerializer(): Serialize {
  const method = extProcPackageDefinition()[EXT_PROC_SERVICE] as unknown as { Process: { responseSerialize: Serialize } };
  return method.Process.responseSerialize;
}

const serialize = responseSerializer();

export function encodeResponse(response: ProcessingResponse): EncodedResponse {
  return serialize(response) as EncodedResponse;
}

/** The server's response serializer: encoded answers pass through, objects are encoded. */
export function serializeOutgoing(value: OutgoingResponse): Buffer {
  return value instanceof Uint8Array ? value : serialize(value);
}
