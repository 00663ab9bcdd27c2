/**
 * A gRPC client of llm-extproc's ext_proc service that plays the transport half of Envoy's side:
 * one bidi stream per HTTP request, answers read one at a time, closed the way Envoy's graceful
 * close does it (half-close, wait for the server's status, reset after a grace period).
 * It knows nothing of HTTP or body modes (see envoy-filter.ts), and nothing of the test double.
 */
import * as grpc from '@grpc/grpc-js';
import { extProcService } from '../extproc/proto.js';
import type { ExternalProcessorClient } from '../generated/envoy/service/ext_proc/v3/ExternalProcessor.js';
import type { ProcessingRequest } from '../generated/envoy/service/ext_proc/v3/ProcessingRequest.js';
import type { ProcessingResponse__Output } from '../generated/envoy/service/ext_proc/v3/ProcessingResponse.js';

export interface ClientTls {
  /** PEM CA certificates that issued the server's certificate; the system's when absent. */
  ca?: Buffer;
  /** PEM client certificate and key, for mTLS. */
  cert?: Buffer;
  key?: Buffer;
  /** The name the server's certificate carries, when it is not the target's host (Envoy's SNI). */
  serverName?: string;
}

export interface ExtProcClientOptions {
  /** `host:port` of the ext_proc server. */
  target: string;
  /** TLS; plaintext when absent. */
  tls?: ClientTls;
}

/** The server ended the stream with a non-OK gRPC status (Envoy: status_on_error, 500). */
export class GrpcStatusError extends Error {
  constructor(
    readonly code: grpc.status,
    readonly details: string,
  ) {
    super(`${grpc.status[code] ?? 'UNKNOWN'} (${code}): ${details}`);
  }

  /** The call never reached a server: nothing listens there, TLS does not match, ... */
  get unreachable(): boolean {
    return this.code === grpc.status.UNAVAILABLE;
  }
}

/** No answer within the time Envoy's `message_timeout` would allow (Envoy: 504). */
export class AnswerTimeoutError extends Error {}

type ExternalProcessorConstructor = new (target: string, credentials: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => ExternalProcessorClient;

export class ExtProcClient {
  private readonly client: ExternalProcessorClient;

  constructor(options: ExtProcClientOptions) {
    const { tls } = options;
    const credentials = tls ? grpc.credentials.createSsl(tls.ca ?? null, tls.key ?? null, tls.cert ?? null) : grpc.credentials.createInsecure();
    const channelOptions: grpc.ChannelOptions = {
      // Envoy sets no receive limit of its own; a large echoed body must not fail here.
      'grpc.max_receive_message_length': -1,
      'grpc.max_send_message_length': -1,
      ...(tls?.serverName ? { 'grpc.ssl_target_name_override': tls.serverName, 'grpc.default_authority': tls.serverName } : {}),
    };
    const ExternalProcessor = extProcService<ExternalProcessorConstructor>();
    this.client = new ExternalProcessor(options.target, credentials, channelOptions);
  }

  /**
   * Resolves once the channel is connected; rejects with an unreachable GrpcStatusError when the
   * connection fails (refused, TLS mismatch) or is not made within `timeoutMs`.
   */
  async connect(timeoutMs: number): Promise<void> {
    const channel = this.client.getChannel();
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const state = channel.getConnectivityState(true);
      if (state === grpc.connectivityState.READY) return;
      if (state === grpc.connectivityState.TRANSIENT_FAILURE || state === grpc.connectivityState.SHUTDOWN) break;
      const changed = await new Promise<boolean>((resolve) => channel.watchConnectivityState(state, deadline, (err) => resolve(!err)));
      if (!changed) throw new GrpcStatusError(grpc.status.UNAVAILABLE, `no connection within ${timeoutMs} ms`);
    }
    // grpc-js tells why only to a call; one that is not wait-for-ready fails at once, saying it.
    const probe = this.client.Process();
    const ended = await new Promise<grpc.ServiceError | undefined>((resolve) => {
      probe.on('error', resolve);
      probe.on('status', () => resolve(undefined));
      probe.on('data', () => undefined);
      probe.end();
    });
    if (ended) throw new GrpcStatusError(ended.code, ended.details);
  }

  /** Opens one ext_proc stream (one HTTP request). */
  open(): ProcessingStream {
    return new ProcessingStream(this.client.Process());
  }

  close(): void {
    this.client.close();
  }
}

/** How the stream ended once we half-closed it. */
export interface CloseOutcome {
  /** The server's status; undefined when it sent none within the grace period and was reset. */
  status: { code: grpc.status; details: string } | undefined;
}

type Waiter = { resolve: (answer: ProcessingResponse__Output | undefined) => void; reject: (err: Error) => void };

/** One ext_proc stream: send requests, read answers in order, close like Envoy. */
export class ProcessingStream {
  private readonly answers: ProcessingResponse__Output[] = [];
  private waiter: Waiter | undefined;
  /** The server's side is over; `failure` says how when it was not OK. */
  private ended = false;
  private failure: GrpcStatusError | undefined;
  private readonly status: Promise<grpc.StatusObject>;

  constructor(private readonly call: grpc.ClientDuplexStream<ProcessingRequest, ProcessingResponse__Output>) {
    this.status = new Promise((resolve) => call.on('status', resolve));
    call.on('data', (answer: ProcessingResponse__Output) => {
      const waiter = this.waiter;
      this.waiter = undefined;
      if (waiter) waiter.resolve(answer);
      else this.answers.push(answer);
    });
    call.on('end', () => this.finish(undefined));
    call.on('error', (err: grpc.ServiceError) => this.finish(new GrpcStatusError(err.code, err.details)));
  }

  send(request: ProcessingRequest): void {
    if (!this.ended) this.call.write(request);
  }

  /**
   * The next answer; undefined when the server ended the stream with OK first (Envoy then continues
   * unprocessed). Throws GrpcStatusError for a non-OK end and AnswerTimeoutError after `timeoutMs`.
   */
  next(timeoutMs: number, what: string): Promise<ProcessingResponse__Output | undefined> {
    const queued = this.answers.shift();
    if (queued) return Promise.resolve(queued);
    if (this.failure) return Promise.reject(this.failure);
    if (this.ended) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new AnswerTimeoutError(`no answer to ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      const settle =
        <T>(fn: (value: T) => void) =>
        (value: T) => {
          clearTimeout(timer);
          fn(value);
        };
      this.waiter = { resolve: settle(resolve), reject: settle(reject) };
    });
  }

  /**
   * Envoy's graceful close (runtime `ext_proc_graceful_grpc_close`, as envoy/*.yaml set it):
   * half-close, then wait up to `graceMs` for the server to end the call; reset it after that.
   */
  async halfClose(graceMs = 1000): Promise<CloseOutcome> {
    this.call.end();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), graceMs);
    });
    const status = await Promise.race([this.status, timedOut]);
    clearTimeout(timer);
    if (!status) {
      this.cancel();
      return { status: undefined };
    }
    return { status: { code: status.code, details: status.details } };
  }

  /** A reset, as Envoy sends when the HTTP exchange is cut. */
  cancel(): void {
    this.call.cancel();
  }

  private finish(failure: GrpcStatusError | undefined): void {
    if (this.ended) return;
    this.ended = true;
    // Our own reset after the grace period is not the server's doing.
    if (failure && failure.code !== grpc.status.CANCELLED) this.failure = failure;
    const waiter = this.waiter;
    this.waiter = undefined;
    if (!waiter) return;
    if (this.failure) waiter.reject(this.failure);
    else waiter.resolve(undefined);
  }
}
