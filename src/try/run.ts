/**
 * One request played through llm-extproc as Envoy would: the ext_proc exchange, the admin port's
 * account of the decision, and with `forward` the upstream request and the response path. What
 * happens goes to a Reporter as it happens (text streams; JSON collects).
 */
import { AdminClient, adminFailure, type RouteExplanation } from './admin.js';
import { type Continued, EnvoyFilter, type FilterModes, type LocalReply, type TraceEvent } from './envoy-filter.js';
import { type ClientTls, ExtProcClient, GrpcStatusError } from './extproc-client.js';
import { type HeaderChange, type HeaderList, headerValue } from './headers.js';
import { parseDestination, responseHeaderList, sendUpstream } from './upstream.js';

export interface TryRequest {
  /** Request headers as Envoy sends them to ext_proc, pseudo-headers first. */
  headers: HeaderList;
  body: Buffer;
}

export interface TryOptions {
  target: string;
  tls?: ClientTls;
  /** Admin base URL; the explanation says so in one line when it cannot be reached. */
  admin: string;
  modes: FilterModes;
  destinationHeader: string;
  forward: boolean;
  request: TryRequest;
}

/** The route as Envoy applies it. */
export interface RouteView {
  /** The destination header's value; undefined when llm-extproc set none. */
  destination: string | undefined;
  /** Whether ORIGINAL_DST can use it (one literal `ip:port`). */
  destinationValid: boolean;
  changes: HeaderChange[];
  clearRouteCache: boolean;
  dynamicMetadata: Record<string, unknown>;
  upstreamBodyBytes: number;
}

export interface UpstreamHead {
  method: string;
  url: string;
  status: number;
  headers: HeaderList;
  /** What llm-extproc's response_headers answer changed. */
  changes: HeaderChange[];
}

export interface Reporter {
  /** llm-extproc answers at the target; the exchange starts. */
  connected(): void;
  trace(event: TraceEvent): void;
  routed(route: RouteView): void;
  explained(explanation: RouteExplanation | { unavailable: string }): void;
  localReply(reply: LocalReply): void;
  upstream(head: UpstreamHead): void;
  upstreamBody(chunk: Buffer): void;
  /** The upstream request failed (Envoy: 503 upstream connect error). */
  upstreamFailed(reason: string): void;
  problems(problems: readonly string[]): void;
}

/** Failures that end a run: `code` is the CLI's exit status. */
export class TryFailure extends Error {
  constructor(
    message: string,
    readonly code: 1 | 2,
  ) {
    super(message);
  }
}

const CONNECT_TIMEOUT_MS = 5000;

/** Plays the request; resolves once the exchange is over, rejects with TryFailure. */
export async function runTry(options: TryOptions, reporter: Reporter): Promise<void> {
  const admin = new AdminClient(options.admin);
  let adminDown: string | undefined;
  const routedBefore = await admin.routedTotal().catch((err: unknown) => {
    adminDown = adminFailure(err);
    return undefined;
  });
  const client = new ExtProcClient({ target: options.target, ...(options.tls ? { tls: options.tls } : {}) });
  try {
    await client.connect(CONNECT_TIMEOUT_MS);
  } catch (err) {
    client.close();
    throw failure(err, options.target);
  }
  reporter.connected();
  const stream = client.open();
  const filter = new EnvoyFilter(stream, options.modes, (event) => reporter.trace(event));
  try {
    const outcome = await filter.request(options.request.headers, options.request.body);
    if (outcome.kind === 'local_reply') {
      reporter.localReply(outcome.reply);
    } else {
      const route = routeView(outcome, options.destinationHeader);
      reporter.routed(route);
      if (route.destination && route.destinationValid) {
        reporter.explained(
          adminDown
            ? { unavailable: adminDown }
            : await admin.explain(route.destination, routedBefore).catch((err: unknown) => ({ unavailable: adminFailure(err) })),
        );
      }
      if (options.forward && route.destinationValid) await forward(outcome, route.destination!, options, filter, reporter);
    }
    reporter.problems(filter.problems);
    await filter.close();
  } catch (err) {
    stream.cancel();
    throw failure(err, options.target);
  } finally {
    client.close();
  }
}

function routeView(continued: Continued, destinationHeader: string): RouteView {
  const destination = headerValue(continued.headers, destinationHeader);
  return {
    destination,
    destinationValid: parseDestination(destination) !== undefined,
    changes: continued.changes,
    clearRouteCache: continued.clearRouteCache,
    dynamicMetadata: continued.dynamicMetadata,
    upstreamBodyBytes: continued.body.length,
  };
}

/** Envoy's upstream request to the destination, then the response path through the filter. */
async function forward(continued: Continued, destination: string, options: TryOptions, filter: EnvoyFilter, reporter: Reporter): Promise<void> {
  const address = parseDestination(destination)!;
  const method = headerValue(continued.headers, ':method') ?? 'GET';
  const url = `http://${destination}${headerValue(continued.headers, ':path') ?? '/'}`;
  let response: Awaited<ReturnType<typeof sendUpstream>>;
  try {
    response = await sendUpstream(address, { headers: continued.headers, body: continued.body, keepContentLength: options.modes.request === 'BUFFERED' });
  } catch (err) {
    reporter.upstreamFailed(`${method} ${url}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message} (Envoy answers 503, upstream connect error)`);
    return;
  }
  const status = response.statusCode ?? 0;
  const noBody = method === 'HEAD' || status === 204 || status === 304 || response.headers['content-length'] === '0';
  const head = await filter.responseHeaders(status, responseHeaderList(response), noBody);
  if ('status' in head) {
    response.destroy();
    reporter.localReply(head);
    return;
  }
  reporter.upstream({ method, url, status, headers: head.headers, changes: head.changes });
  const body = filter.responseBody((chunk) => reporter.upstreamBody(chunk));
  for await (const chunk of response) await body.chunk(chunk as Buffer);
  if (!noBody) await body.end();
}

function failure(err: unknown, target: string): TryFailure {
  if (err instanceof TryFailure) return err;
  if (err instanceof GrpcStatusError && err.unreachable) {
    const tls = /SSL routines:[^:]*:([^:]+)/.exec(err.details)?.[1];
    if (tls) return new TryFailure(`llm-extproc at ${target} refused the TLS handshake (${tls}); check --ca, --cert, --key and --server-name`, 2);
    const cause = /\b(E[A-Z]{3,})\b/.exec(err.details)?.[1] ?? err.details.replace(/^No connection established\. Last error: /, '').split(/\s+\(|\n/)[0];
    return new TryFailure(`llm-extproc is not reachable at ${target} (${cause}); start it with \`npm start -- --demo\`, or point --target at it`, 2);
  }
  if (err instanceof GrpcStatusError) {
    return new TryFailure(
      `llm-extproc ended the stream with gRPC ${err.message}; Envoy answers 500 (status_on_error), details ext_proc_error_gRPC_error_${err.code}`,
      1,
    );
  }
  return new TryFailure((err as Error).message, 1);
}
