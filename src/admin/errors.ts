import { openAIErrorBody } from '../request/errors.js';

/** Every error answer of the admin port: the router's OpenAI-style body (src/request/errors.ts). */
export function errorResponse(status: number, type: string, code: string, message: string, headers: Record<string, string> = {}): Response {
  return new Response(openAIErrorBody(message, type, code), { status, headers: { 'content-type': 'application/json', ...headers } });
}

export const badRequest = (code: string, message: string) => errorResponse(400, 'invalid_request_error', code, message);

export const notFound = (code: string, message: string) => errorResponse(404, 'invalid_request_error', code, message);

export const conflict = (code: string, message: string) => errorResponse(409, 'invalid_request_error', code, message);

export const internalError = (message = 'the admin request failed; see the logs') => errorResponse(500, 'internal_error', 'internal_error', message);
