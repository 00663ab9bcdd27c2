/** A request llm-extproc answers itself, with an OpenAI-style error body. */
export class RequestError extends Error {
  constructor(
    readonly status: number,
    /** OpenAI error `type`, e.g. invalid_request_error. */
    readonly type: string,
    /** Machine-readable `code`, e.g. model_not_found. */
    readonly code: string,
    message: string,
    /** Response headers the answer needs, e.g. `allow` on a 405. */
    readonly headers: readonly (readonly [string, string])[] = [],
  ) {
    super(message);
  }

  /** `{"error":{"message","type","param","code"}}` as OpenAI's API answers. */
  toBody(): string {
    return openAIErrorBody(this.message, this.type, this.code);
  }
}

export function openAIErrorBody(message: string, type: string, code: string): string {
  return JSON.stringify({ error: { message, type, param: null, code } });
}

export const badRequest = (code: string, message: string) => new RequestError(400, 'invalid_request_error', code, message);

export const notFound = (code: string, message: string) => new RequestError(404, 'invalid_request_error', code, message);

export const tooLarge = (limit: number) =>
  new RequestError(413, 'invalid_request_error', 'request_too_large', `The request body is larger than the limit of ${limit} bytes.`);

export const unavailable = (code: string, message: string, headers: readonly (readonly [string, string])[] = []) =>
  new RequestError(503, 'service_unavailable_error', code, message, headers);

export const internalError = () => new RequestError(500, 'internal_error', 'internal_error', 'llm-extproc failed to route the request.');

export const headersTooLarge = (message: string) => new RequestError(431, 'invalid_request_error', 'request_headers_too_large', message);

export const queryTooLong = (limit: number) =>
  new RequestError(414, 'invalid_request_error', 'query_too_long', `The query string is longer than the limit of ${limit} bytes.`);

/** 429 with `retry-after` in whole seconds, as OpenAI's API answers a rate limit. */
export const rateLimited = (message: string, retryAfterSeconds: number) =>
  new RequestError(429, 'rate_limit_error', 'rate_limit_exceeded', message, [['retry-after', String(retryAfterSeconds)]]);
