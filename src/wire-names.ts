/**
 * Every header, query and metadata name llm-extproc reads or writes on the wire, in one place.
 * The destination and routed-to headers are defaults: `--destination-header` / `--routed-to-header`.
 */

/** Envoy's ORIGINAL_DST cluster reads the chosen `ip:port` from this request header (GIE's name). */
export const DESTINATION_HEADER = 'x-gateway-destination-endpoint';
/** Response header naming the backend that served the request (seed 002's `routed_to`). */
export const ROUTED_TO_HEADER = 'x-routed-to';
/** Dynamic metadata namespace Envoy's load balancers read the destination from. */
export const LB_METADATA_NAMESPACE = 'envoy.lb';
/** Envoy's request id, carried into every request-scoped log line. */
export const REQUEST_ID_HEADER = 'x-request-id';
/** Engine selector as a header (seed 001). */
export const OWNED_BY_HEADER = 'x-owned-by';
/** Engine selector as a query parameter (seed 001). */
export const OWNED_BY_QUERY = 'owned_by';
/** Model named in a header, for requests routed without reading the body (GIE's body-based router sets it). */
export const MODEL_HEADER = 'x-gateway-model-name';

/** An HTTP header name (RFC 9110 token), lower case as Envoy hands them to ext_proc. */
export const HEADER_NAME = /^[a-z0-9!#$%&'*+.^_`|~-]+$/;
