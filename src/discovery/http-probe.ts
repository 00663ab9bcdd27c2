/**
 * One GET against a backend, as probes make them: bounded in time and in bytes, never following a
 * redirect (a backend would otherwise be credited with another server's models and get their
 * traffic), and failing with a reason an operator can act on.
 */

export interface ProbeRequest {
  timeoutMs: number;
  /** Larger answers fail: a broken or hostile backend must not grow the router's memory. */
  maxBytes: number;
}

/** What kind of failure a ProbeError is, for bounded metric labels. */
export type ProbeFailure = 'http_status' | 'timeout' | 'refused' | 'too_large' | 'transport';

/** Why a probe failed, worded for `/ready` and the logs, e.g. `GET /v1/models: connection refused (ECONNREFUSED)`. */
export class ProbeError extends Error {
  constructor(
    message: string,
    readonly failure: ProbeFailure = 'transport',
  ) {
    super(message);
  }
}

/** The body of a 2xx answer to `GET baseUrl + path`. */
export async function probeGet(baseUrl: string, path: string, request: ProbeRequest): Promise<Buffer> {
  const what = `GET ${path}`;
  let response: Response;
  try {
    response = await fetch(baseUrl + path, { signal: AbortSignal.timeout(request.timeoutMs), redirect: 'manual' });
  } catch (err) {
    throw new ProbeError(`${what}: ${transportFailure(err, request.timeoutMs)}`, failureOf(err));
  }
  if (response.status < 200 || response.status > 299) {
    await response.body?.cancel().catch(() => undefined);
    const redirect = response.status >= 300 && response.status < 400;
    throw new ProbeError(`${what}: answered ${response.status}${redirect ? ' (redirects are not followed)' : ''}`, 'http_status');
  }
  try {
    return await readCapped(response, request.maxBytes, what);
  } catch (err) {
    if (err instanceof ProbeError) throw err;
    throw new ProbeError(`${what}: ${transportFailure(err, request.timeoutMs)} while reading the answer`, failureOf(err));
  }
}

async function readCapped(response: Response, maxBytes: number, what: string): Promise<Buffer> {
  const declared = Number(response.headers.get('content-length') ?? NaN);
  if (declared > maxBytes) {
    await response.body?.cancel().catch(() => undefined);
    throw new ProbeError(`${what}: the answer is ${declared} bytes, over the limit of ${maxBytes}`, 'too_large');
  }
  if (!response.body) return Buffer.alloc(0);
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw new ProbeError(`${what}: the answer is over the limit of ${maxBytes} bytes`, 'too_large');
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks, total);
}

function failureOf(err: unknown): ProbeFailure {
  const error = err as Error & { cause?: { code?: string } };
  if (error.name === 'TimeoutError' || error.name === 'AbortError') return 'timeout';
  return error.cause?.code === 'ECONNREFUSED' ? 'refused' : 'transport';
}

/** `connection refused (ECONNREFUSED)`, `no answer within 2000 ms`, ... from fetch's error. */
function transportFailure(err: unknown, timeoutMs: number): string {
  const error = err as Error & { cause?: { code?: string; message?: string } };
  if (error.name === 'TimeoutError' || error.name === 'AbortError') return `no answer within ${timeoutMs} ms`;
  const code = error.cause?.code;
  const known = code ? TRANSPORT_CODES[code] : undefined;
  if (known) return `${known} (${code})`;
  if (code) return `${error.cause?.message ?? error.message} (${code})`;
  return error.cause?.message ?? error.message;
}

const TRANSPORT_CODES: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ETIMEDOUT: 'connection timed out',
  EPIPE: 'connection closed',
  UND_ERR_SOCKET: 'connection closed by the backend',
  HPE_INVALID_CONSTANT: 'not an HTTP answer',
};
