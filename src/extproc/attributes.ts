import type { ProcessingRequest__Output } from '../generated/envoy/service/ext_proc/v3/ProcessingRequest.js';

/**
 * Envoy evaluates the filter's `request_attributes` once per direction and sends the results in
 * the first message of that direction (request_headers here), under one map key: the filter's
 * name. Each Struct field is keyed by the attribute's full name, e.g. `xds.route_name`.
 */
export const EXT_PROC_FILTER_NAME = 'envoy.filters.http.ext_proc';
/** The name of the Envoy route the request matched (empty when the route has none). */
export const ROUTE_NAME_ATTRIBUTE = 'xds.route_name';

/** The matched Envoy route's name, when Envoy was asked for `xds.route_name` and the route is named. */
export function envoyRouteName(message: ProcessingRequest__Output): string | undefined {
  const value = message.attributes?.[EXT_PROC_FILTER_NAME]?.fields?.[ROUTE_NAME_ATTRIBUTE];
  return value?.kind === 'stringValue' && value.stringValue ? value.stringValue : undefined;
}
