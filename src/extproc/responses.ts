import type { HeaderValueOption } from '../generated/envoy/config/core/v3/HeaderValueOption.js';
import type { ProcessingResponse } from '../generated/envoy/service/ext_proc/v3/ProcessingResponse.js';
import type { StatusCode } from '../generated/envoy/type/v3/StatusCode.js';
import { LB_METADATA_NAMESPACE } from '../wire-names.js';
import { type EncodedResponse, encodeResponse } from './encoded.js';
import type { HeaderValueField } from './headers.js';
import type { Destination, LocalReply } from './types.js';

/** GIE's endpoint picker chunks echoed bodies at 62,000 bytes, safely under Envoy's 64 KiB advice. */
export const STREAMED_CHUNK_BYTES = 62_000;

/**
 * A header to overwrite (`append` false), its value in the one field this Envoy reads: setting
 * both is an error to Envoy, and the other one is read as empty.
 */
export function overwriteHeader(key: string, value: Buffer, field: HeaderValueField): HeaderValueOption {
  const header = field === 'raw_value' ? { key, raw_value: value } : { key, value: value.toString() };
  return { header, append: { value: false } };
}

export const CONTINUE_REQUEST_HEADERS = encodeResponse({ request_headers: {} });
export const CONTINUE_REQUEST_BODY = encodeResponse({ request_body: {} });
export const CONTINUE_REQUEST_TRAILERS = encodeResponse({ request_trailers: {} });
export const CONTINUE_RESPONSE_HEADERS = encodeResponse({ response_headers: {} });
export const CONTINUE_RESPONSE_BODY = encodeResponse({ response_body: {} });
export const CONTINUE_RESPONSE_TRAILERS = encodeResponse({ response_trailers: {} });

/**
 * The routing answer: the destination header (overwriting any client copy), clear_route_cache, and
 * the same value in `envoy.lb` dynamic metadata, on the request headers or request body response.
 */
export function routeResponse(
  phase: 'request_headers' | 'request_body',
  headerName: string,
  address: string,
  addressBytes: Buffer,
  field: HeaderValueField,
): ProcessingResponse {
  return {
    [phase]: {
      response: {
        header_mutation: { set_headers: [overwriteHeader(headerName, addressBytes, field)] },
        clear_route_cache: true,
      },
    },
    dynamic_metadata: {
      fields: {
        [LB_METADATA_NAMESPACE]: {
          structValue: { fields: { [headerName]: { stringValue: address } } },
        },
      },
    },
  };
}

/** The response-headers answer that tells the caller which backend served it. */
export function routedToResponse(headerName: string, addressBytes: Buffer, field: HeaderValueField): ProcessingResponse {
  return {
    response_headers: { response: { header_mutation: { set_headers: [overwriteHeader(headerName, addressBytes, field)] } } },
  };
}

export function immediateResponse(reply: LocalReply, field: HeaderValueField): ProcessingResponse {
  const headers = [['content-type', reply.contentType], ...(reply.headers ?? [])] as const;
  return {
    immediate_response: {
      // Envoy's StatusCode enum is open: any HTTP status number encodes.
      status: { code: reply.status as StatusCode },
      headers: { set_headers: headers.map(([key, value]) => overwriteHeader(key, Buffer.from(value), field)) },
      body: Buffer.from(reply.body),
      details: reply.reason,
    },
  };
}

/** FULL_DUPLEX_STREAMED echo of `body`, cut into chunks; the last one carries `endOfStream`. */
export function streamedBodyResponses(phase: 'request_body' | 'response_body', body: Buffer, endOfStream: boolean): ProcessingResponse[] {
  const responses: ProcessingResponse[] = [];
  let offset = 0;
  do {
    const end = Math.min(offset + STREAMED_CHUNK_BYTES, body.length);
    responses.push({
      [phase]: {
        response: {
          body_mutation: {
            streamed_response: { body: body.subarray(offset, end), end_of_stream: endOfStream && end === body.length },
          },
        },
      },
    });
    offset = end;
  } while (offset < body.length);
  return responses;
}

/**
 * The answers that depend only on the destination (the route on either phase, and the response
 * header naming it), encoded once per endpoint and header field. Bounded: endpoints come and go.
 */
export class DestinationAnswers {
  private readonly cache = new Map<string, Record<HeaderValueField, EncodedAnswers>>();

  constructor(
    private readonly destinationHeader: string,
    private readonly routedToHeader: string,
    private readonly maxEntries = 10_000,
  ) {}

  route(phase: 'request_headers' | 'request_body', destination: Destination, field: HeaderValueField): EncodedResponse {
    const answers = this.entry(destination.address)[field];
    answers[phase] ??= encodeResponse(routeResponse(phase, this.destinationHeader, destination.address, destination.addressBytes, field));
    return answers[phase];
  }

  routedTo(destination: Destination, field: HeaderValueField): EncodedResponse {
    const answers = this.entry(destination.address)[field];
    answers.routedTo ??= encodeResponse(routedToResponse(this.routedToHeader, destination.addressBytes, field));
    return answers.routedTo;
  }

  private entry(address: string): Record<HeaderValueField, EncodedAnswers> {
    let entry = this.cache.get(address);
    if (!entry) {
      if (this.cache.size >= this.maxEntries) this.cache.clear();
      entry = { raw_value: {}, value: {} };
      this.cache.set(address, entry);
    }
    return entry;
  }
}

interface EncodedAnswers {
  request_headers?: EncodedResponse;
  request_body?: EncodedResponse;
  routedTo?: EncodedResponse;
}
