import * as grpc from '@grpc/grpc-js';
import { HealthImplementation, type ServingStatusMap } from 'grpc-health-check';
import type { Logger } from 'pino';
import type { ExternalProcessorHandlers } from '../generated/envoy/service/ext_proc/v3/ExternalProcessor.js';
import { joinHostPort } from '../net-address.js';
import { serializeOutgoing } from './encoded.js';
import { EXT_PROC_SERVICE, extProcService } from './proto.js';
import { DestinationAnswers } from './responses.js';
import { type ExtProcCall, ExtProcStream, type StreamObserver, type StreamSettings } from './stream.js';
import type { RequestRouter } from './types.js';

export interface ExtProcServerOptions extends StreamSettings {
  host: string;
  /** Request header Envoy's ORIGINAL_DST cluster reads the destination from. */
  destinationHeader: string;
  /** Response header telling the caller which backend served it. */
  routedToHeader: string;
  port: number;
  /** grpc-js refuses larger messages; a BUFFERED body arrives as one message. */
  maxReceiveMessageBytes: number;
  /** How long a stop waits for open streams before cutting them. */
  drainTimeoutMs: number;
  /** TLS (src/tls/grpc.ts); plaintext when absent. */
  credentials?: grpc.ServerCredentials | undefined;
}

/** Decides whether a new ext_proc stream may open beside the open ones (load shedding). */
export interface StreamAdmission {
  admit(openStreams: number): boolean;
}

/** Names the standard gRPC health service answers for (the endpoint picker's set, plus ""). */
export const HEALTH_SERVICES = ['', 'liveness', 'readiness', EXT_PROC_SERVICE] as const;

/**
 * Node's HTTP/2 server sends GOAWAY when a peer resets streams faster than ~33/s after a burst of
 * 1000; Envoy resets every ext_proc stream at its end by default, so a busy Envoy connection would
 * be torn down with every request on it. Node 22 and 24 let a server raise that limit (nodejs/node#54875);
 * grpc-js does not expose the option, so it is added to the options grpc-js passes to
 * http2.createServer. Older Node ignores unknown options; the Envoy configs also recycle
 * connections (max_requests_per_connection) and enable Envoy's graceful close.
 */
const STREAM_RESET_LIMITS = { streamResetBurst: 1_000_000, streamResetRate: 1_000_000 };

export class ExtProcServer {
  private readonly server: grpc.Server;
  private readonly health: HealthImplementation;
  private readonly openStreams = new Set<grpc.ServerDuplexStream<unknown, unknown>>();
  private boundPort = 0;
  private stopping = false;

  constructor(
    private readonly options: ExtProcServerOptions,
    router: RequestRouter,
    observer: StreamObserver,
    private readonly log: Logger,
    admission?: StreamAdmission,
  ) {
    this.server = new grpc.Server({
      'grpc.max_receive_message_length': options.maxReceiveMessageBytes,
      'grpc.max_send_message_length': -1,
      // Pings find Envoy connections that died without a reset, so their streams end and their
      // in-flight requests are released instead of being counted forever.
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
    });
    if (!raiseStreamResetLimits(this.server)) {
      log.warn('this grpc-js version hides its HTTP/2 server options: Envoy-style stream resets may trigger GOAWAY');
    }
    const answers = new DestinationAnswers(options.destinationHeader, options.routedToHeader);
    const handlers: ExternalProcessorHandlers = {
      Process: (call) => {
        // A shed stream ends at once with RESOURCE_EXHAUSTED; Envoy then applies failure_mode_allow.
        if (admission && !admission.admit(this.openStreams.size)) {
          call.emit('error', { code: grpc.status.RESOURCE_EXHAUSTED, details: 'llm-extproc: too many open ext_proc streams' });
          return;
        }
        this.openStreams.add(call);
        call.on('close', () => this.openStreams.delete(call));
        // The serializer registered below also takes pre-encoded answers, hence the wider type.
        new ExtProcStream(call as unknown as ExtProcCall, router, options, answers, observer, log);
      },
    };
    const service = extProcService().service;
    // Answers encoded ahead of time are written as they are (see encoded.ts).
    const process = { ...service.Process!, responseSerialize: serializeOutgoing };
    this.server.addService({ ...service, Process: process }, handlers);
    const statuses: ServingStatusMap = {};
    for (const name of HEALTH_SERVICES) statuses[name] = 'NOT_SERVING';
    this.health = new HealthImplementation(statuses);
    this.health.addToServer(this.server);
  }

  /** Rejects with a BindError when the address cannot be bound. */
  async start(): Promise<number> {
    this.boundPort = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync(
        joinHostPort(this.options.host, this.options.port),
        this.options.credentials ?? grpc.ServerCredentials.createInsecure(),
        (err, port) => (err ? reject(bindError(err)) : resolve(port)),
      );
    });
    this.setServing('liveness', true);
    this.setServing('', true);
    return this.boundPort;
  }

  get port(): number {
    return this.boundPort;
  }

  get activeStreams(): number {
    return this.openStreams.size;
  }

  /** True from the start of stop(): not ready, finishing the open streams. */
  get draining(): boolean {
    return this.stopping;
  }

  /**
   * Readiness (discovery has run) is reported on `readiness` and the ext_proc service name; never
   * again once draining (a first probe round may end during the drain).
   */
  setReady(ready: boolean): void {
    const serving = ready && !this.stopping;
    this.setServing('readiness', serving);
    this.setServing(EXT_PROC_SERVICE, serving);
  }

  private setServing(service: string, serving: boolean): void {
    this.health.setStatus(service, serving ? 'SERVING' : 'NOT_SERVING');
  }

  /**
   * Not ready at once (`readiness`, the ext_proc name and ""; open Watch calls see it), then stops
   * taking new streams, lets open ones finish for up to drainTimeoutMs and cuts the rest.
   * `liveness` stays SERVING: the process is leaving, not broken. From here on new connections, and
   * new calls on open ones (GOAWAY, so Envoy moves to another replica), are refused, so liveness
   * probes belong on the admin port's /health, which answers until the drain is over.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    this.setReady(false);
    this.setServing('', false);
    const drained = new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), this.options.drainTimeoutMs);
    });
    const outcome = await Promise.race([drained.then(() => 'drained' as const), timedOut]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      this.log.warn({ openStreams: this.openStreams.size }, 'drain timeout: cancelling the remaining ext_proc streams');
      this.server.forceShutdown();
    }
  }
}

function raiseStreamResetLimits(server: grpc.Server): boolean {
  const internals = server as unknown as { commonServerOptions?: Record<string, unknown> };
  if (!internals.commonServerOptions) return false;
  Object.assign(internals.commonServerOptions, STREAM_RESET_LIMITS);
  return true;
}

/** A failed bind, with the system error code (EADDRINUSE, EADDRNOTAVAIL, ENOTFOUND) when known. */
export interface BindError extends Error {
  code?: string;
}

/** grpc-js reports a failed bind as text only; the code is read back out of it. */
function bindError(err: Error): BindError {
  const code = /\blisten (E[A-Z]+)\b/.exec(err.message)?.[1] ?? (err.message.startsWith('Name resolution failed') ? 'ENOTFOUND' : undefined);
  return code === undefined ? err : Object.assign(err, { code });
}
