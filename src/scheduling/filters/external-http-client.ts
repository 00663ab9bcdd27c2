import http from 'node:http';
import https from 'node:https';
import { MAX_ANSWER_BYTES } from './external-http-wire.js';

/**
 * POSTs to one plugin over keep-alive connections. node:http rather than fetch: fetch's pool is
 * undici's global dispatcher, shared with the probes and unbounded per origin, and undici is not a
 * dependency to configure it with; an http.Agent per plugin bounds its connections (`maxSockets`;
 * calls beyond wait for one, within their time budget) and keeps them open between calls.
 */

/** Kinds of failure, for bounded metric labels. */
export type CallFailure = 'timeout' | 'http_status' | 'too_large' | 'transport';

/** Why a call failed, worded for logs and PluginError: `POST http://p/filter: answered 500: oops`. */
export class CallError extends Error {
  constructor(
    readonly failure: CallFailure,
    message: string,
  ) {
    super(message);
  }
}

export interface ClientOptions {
  /** Connections to the plugin at most (in use or idle). */
  maxSockets: number;
  /** An idle connection is closed after this, below the usual 5 s of servers' keep-alive timeouts. */
  idleMs: number;
}

export const DEFAULT_CLIENT: ClientOptions = { maxSockets: 64, idleMs: 4000 };

/** Transport errors a reused idle connection gives when the server closed it just before the call. */
const STALE_CONNECTION = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);

const TRANSPORT_CODES: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  EPIPE: 'connection closed',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ENOTFOUND: 'unknown host',
  EAI_AGAIN: 'host name lookup failed',
  ETIMEDOUT: 'connection timed out',
};

export class PluginClient {
  private readonly agent: http.Agent;
  private readonly request: typeof http.request;
  private readonly what: string;

  constructor(
    private readonly url: URL,
    options: ClientOptions = DEFAULT_CLIENT,
  ) {
    const secure = url.protocol === 'https:';
    const agentOptions = {
      keepAlive: true,
      maxSockets: options.maxSockets,
      maxFreeSockets: options.maxSockets,
      timeout: options.idleMs,
      scheduling: 'lifo' as const,
    };
    this.agent = secure ? new https.Agent(agentOptions) : new http.Agent(agentOptions);
    this.request = secure ? https.request : http.request;
    this.what = `POST ${url.href}`;
  }

  /**
   * The body of a 200 answer to the POST. Rejects with CallError on failure (any other status, no
   * answer within `timeoutMs`, a transport error, an answer over MAX_ANSWER_BYTES), or with the
   * signal's reason when it aborts first (the call is then torn down). A reused idle connection that
   * turns out closed is retried once on a new one, within the same time budget.
   */
  post(body: string, requestId: string, timeoutMs: number, signal: AbortSignal): Promise<Buffer> {
    if (signal.aborted) return Promise.reject(signal.reason);
    const payload = Buffer.from(body);
    const headers = {
      'content-type': 'application/json',
      'content-length': String(payload.length),
      'user-agent': 'llm-extproc',
      'x-request-id': requestId,
    };
    return new Promise<Buffer>((resolve, reject) => {
      let settled = false;
      let current: http.ClientRequest | undefined;
      const finish = (error: unknown, value?: Buffer): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        if (error === undefined) resolve(value!);
        else {
          reject(error);
          current?.destroy();
        }
      };
      const onAbort = () => finish(signal.reason);
      let statusFailure: CallError | undefined;
      const timer = setTimeout(() => finish(statusFailure ?? new CallError('timeout', `${this.what}: no answer within ${timeoutMs} ms`)), timeoutMs);
      signal.addEventListener('abort', onAbort, { once: true });

      const attempt = (retryStale: boolean): void => {
        let answered = false;
        const req = this.request(this.url, { method: 'POST', agent: this.agent, headers }, (res) => {
          answered = true;
          const declared = Number(res.headers['content-length'] ?? NaN);
          if (res.statusCode === 200 && declared > MAX_ANSWER_BYTES) {
            finish(new CallError('too_large', `${this.what}: the answer is ${declared} bytes, over the limit of ${MAX_ANSWER_BYTES}`));
            return;
          }
          if (res.statusCode !== 200) statusFailure = new CallError('http_status', `${this.what}: answered ${res.statusCode}`);
          const chunks: Buffer[] = [];
          let total = 0;
          res.on('data', (chunk: Buffer) => {
            total += chunk.length;
            if (total > MAX_ANSWER_BYTES) {
              finish(statusFailure ?? new CallError('too_large', `${this.what}: the answer is over the limit of ${MAX_ANSWER_BYTES} bytes`));
              return;
            }
            // Of an error answer, only the start is kept, for the message.
            if (statusFailure === undefined || total - chunk.length < 200) chunks.push(chunk);
          });
          res.on('end', () => {
            // The exchange is complete: the connection goes back to the pool, not torn down.
            current = undefined;
            const text = Buffer.concat(chunks);
            finish(statusFailure === undefined ? undefined : withSnippet(statusFailure, text), text);
          });
          res.on('error', (err) => finish(statusFailure ?? new CallError('transport', `${this.what}: ${describe(err)} while reading the answer`)));
        });
        current = req;
        req.on('error', (err: NodeJS.ErrnoException) => {
          if (settled) return;
          if (!answered && retryStale && req.reusedSocket && STALE_CONNECTION.has(err.code ?? '')) {
            attempt(false);
            return;
          }
          finish(statusFailure ?? new CallError('transport', `${this.what}: ${describe(err)}`));
        });
        req.end(payload);
      };
      attempt(true);
    });
  }

  /** Closes the idle connections and refuses new ones (shutdown, tests). */
  close(): void {
    this.agent.destroy();
  }
}

/** `answered 500: <the start of the body>`, on one line. */
function withSnippet(error: CallError, body: Buffer): CallError {
  const snippet = body.subarray(0, 200).toString('utf8').replace(/\s+/g, ' ').trim();
  return snippet ? new CallError(error.failure, `${error.message}: ${snippet}`) : error;
}

function describe(err: NodeJS.ErrnoException): string {
  const code = err.code;
  if (code && TRANSPORT_CODES[code]) return `${TRANSPORT_CODES[code]} (${code})`;
  return code ? `${err.message} (${code})` : err.message;
}
