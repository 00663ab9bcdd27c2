/**
 * A cheap gRPC client on raw `node:http2` (no grpc-js), for the Envoy test double and as a load
 * generator. One {@link GrpcH2Connection} = one long-lived HTTP/2 connection, like one Envoy
 * worker's connection to the ext_proc cluster. Each {@link GrpcH2Stream} is one bidi call with
 * gRPC length-prefixed framing (5-byte header: 1 byte compressed flag = 0, 4 bytes big-endian
 * length), uncompressed only.
 *
 * Cost notes: outgoing messages are framed with one allocation (a 5-byte header + payload copy for
 * small messages, two corked writes for big ones); incoming DATA is sliced without copying unless a
 * message spans several DATA frames. A callback (`onMessage`) avoids a promise per message.
 */
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';

const {
  HTTP2_HEADER_METHOD,
  HTTP2_HEADER_PATH,
  HTTP2_HEADER_SCHEME,
  HTTP2_HEADER_AUTHORITY,
  HTTP2_HEADER_CONTENT_TYPE,
  HTTP2_HEADER_TE,
  NGHTTP2_CANCEL,
  NGHTTP2_REFUSED_STREAM,
  NGHTTP2_ENHANCE_YOUR_CALM,
  NGHTTP2_INADEQUATE_SECURITY,
  NGHTTP2_NO_ERROR,
} = http2.constants;

/** gRPC status codes used here (numeric, as on the wire). */
export const GrpcCode = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
} as const;

/** How a call ended, as far as the client can tell. */
export interface GrpcCallStatus {
  /** gRPC status code (from `grpc-status`, or derived from a reset / HTTP status). */
  code: number;
  /** `grpc-message`, percent-decoded; or a description of the reset. */
  message: string;
  /**
   * `trailers`: the server sent a status (normal end, incl. trailers-only responses);
   * `reset`: the stream was reset (by the server, or by us: see `localReset`) without a status;
   * `connection`: the connection failed / went away before a status arrived.
   */
  source: 'trailers' | 'reset' | 'connection';
  /** HTTP/2 RST_STREAM code when the stream ended by a reset (ours or the peer's). */
  rstCode?: number;
  /** True when this client reset the stream itself (reset() / closeLikeEnvoy()). */
  localReset: boolean;
  /** HTTP `:status` of the response headers, if any arrived. */
  httpStatus?: number;
  /** Raw trailers (or trailers-only headers) as received. */
  trailers?: http2.IncomingHttpHeaders;
}

/** Connection-level counters, so a test can assert "0 GOAWAY, 0 lost". */
export interface GrpcH2ConnectionStats {
  goawayCount: number;
  /** Error codes of the GOAWAY frames received, in order. */
  goawayCodes: number[];
  lastGoawayCode?: number;
  /** Session errors (`'error'` events and frame errors). */
  errors: Error[];
  streamsOpened: number;
  /** Streams that ended with a status from the server (any code). */
  streamsWithStatus: number;
  /** Streams that ended by a reset from the server or a connection failure (not by us). */
  streamsLost: number;
  /** Streams we reset ourselves (reset() / closeLikeEnvoy()) before the server's status. */
  streamsResetLocally: number;
}

export interface GrpcH2ConnectionOptions {
  /** `:authority` to send (Envoy: the ext_proc cluster name). Default: the target. */
  authority?: string;
  /** Extra headers on every call (Envoy: `grpc_service.initial_metadata`). */
  metadata?: Record<string, string>;
  /** `maxSessionMemory` of the client session in MB (Node default 10). Default 64. */
  maxSessionMemoryMb?: number;
  /** Connect timeout; default 5000 ms. */
  connectTimeoutMs?: number;
  /** Connect over TLS (Envoy's UpstreamTlsContext): CA, SNI (`servername`), client certificate. */
  tls?: tls.ConnectionOptions;
}

/** Maps an HTTP/2 RST_STREAM code to a gRPC status, like gRPC clients do. */
export function rstCodeToGrpc(rstCode: number): number {
  switch (rstCode) {
    case NGHTTP2_REFUSED_STREAM:
      return GrpcCode.UNAVAILABLE;
    case NGHTTP2_CANCEL:
      return GrpcCode.CANCELLED;
    case NGHTTP2_ENHANCE_YOUR_CALM:
      return GrpcCode.RESOURCE_EXHAUSTED;
    case NGHTTP2_INADEQUATE_SECURITY:
      return 7; // PERMISSION_DENIED
    default:
      return GrpcCode.INTERNAL;
  }
}

/** Wraps a serialized message in the 5-byte gRPC frame (uncompressed). */
export function grpcFrame(payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(5 + payload.length);
  out[0] = 0;
  out.writeUInt32BE(payload.length, 1);
  out.set(payload, 5);
  return out;
}

const EMPTY = Buffer.alloc(0);
/** Above this size a message is written as header + payload (corked) instead of copied. */
const COPY_LIMIT = 16 * 1024;

type Waiter = (m: Buffer | null) => void;

/**
 * One gRPC bidi call on a {@link GrpcH2Connection}. Receive either with `recv()` (promise per
 * message, `null` once the response stream is over) or by setting `onMessage` before data arrives
 * (then `recv()` is not used).
 */
export class GrpcH2Stream {
  /** The underlying HTTP/2 stream (for tests that need raw access). */
  readonly h2: http2.ClientHttp2Stream;
  /** Resolves once the call is over (status received, reset, or connection loss). Never rejects. */
  readonly status: Promise<GrpcCallStatus>;
  /** Called for every whole message; set it before data can arrive to bypass the queue. */
  onMessage: ((msg: Buffer) => void) | undefined;
  /** Called once when the call ends (after the last message). */
  onEnd: ((st: GrpcCallStatus) => void) | undefined;

  private readonly conn: GrpcH2Connection;
  private resolveStatus!: (s: GrpcCallStatus) => void;
  private finalStatus: GrpcCallStatus | undefined;
  private httpStatus: number | undefined;
  private trailerHeaders: http2.IncomingHttpHeaders | undefined;
  private localReset = false;
  private halfClosed = false;
  // Receive state: `partial` collects a message split over DATA frames.
  private partial: Buffer[] = [];
  private partialLen = 0;
  private partialNeed = -1;
  private queue: Buffer[] = [];
  private waiter: Waiter | undefined;
  private ended = false;

  constructor(conn: GrpcH2Connection, h2s: http2.ClientHttp2Stream) {
    this.conn = conn;
    this.h2 = h2s;
    this.status = new Promise<GrpcCallStatus>((res) => (this.resolveStatus = res));
    h2s.on('response', (headers) => {
      this.httpStatus = Number(headers[':status']);
      // Trailers-only response: grpc-status arrives with the headers.
      if (headers['grpc-status'] !== undefined) this.trailerHeaders = headers;
    });
    h2s.on('trailers', (trailers) => {
      this.trailerHeaders = trailers;
    });
    h2s.on('data', (chunk: Buffer) => this.onData(chunk));
    // The server's status ends the call even while our side is still open (half-closed remote):
    // 'end' comes after the last DATA and the trailers.
    h2s.on('end', () => {
      if (this.trailerHeaders?.['grpc-status'] !== undefined) this.onClose();
    });
    // Errors surface through 'close' (rstCode) below; swallow the event so it never throws.
    h2s.on('error', () => {});
    h2s.on('close', () => this.onClose());
  }

  /** True once END_STREAM was sent. */
  get isHalfClosed(): boolean {
    return this.halfClosed;
  }

  /** True once the call is over. */
  get isDone(): boolean {
    return this.finalStatus !== undefined;
  }

  /** The final status if the call is over, else undefined. */
  get finished(): GrpcCallStatus | undefined {
    return this.finalStatus;
  }

  /** Sends one serialized message. Returns false if the stream can no longer send (ignored). */
  send(payload: Uint8Array): boolean {
    const s = this.h2;
    if (this.halfClosed || s.destroyed || s.closed) return false;
    if (payload.length <= COPY_LIMIT) {
      s.write(grpcFrame(payload));
    } else {
      const hdr = Buffer.allocUnsafe(5);
      hdr[0] = 0;
      hdr.writeUInt32BE(payload.length, 1);
      s.cork();
      s.write(hdr);
      s.write(payload);
      s.uncork();
    }
    return true;
  }

  /** Half-closes: DATA with END_STREAM. */
  halfClose(): void {
    if (this.halfClosed) return;
    this.halfClosed = true;
    if (!this.h2.destroyed && !this.h2.closed) this.h2.end();
  }

  /** RST_STREAM with `code` (default CANCEL). */
  reset(code: number = NGHTTP2_CANCEL): void {
    if (this.finalStatus === undefined && !this.h2.closed) this.localReset = true;
    this.halfClosed = true;
    if (!this.h2.destroyed && !this.h2.closed) this.h2.close(code);
  }

  /**
   * What Envoy does at the end of an HTTP exchange (`ProcessorStreamImpl::close()`): END_STREAM,
   * then RST_STREAM(CANCEL) right behind it (§4.1). Node's `close()` would submit the RST before the
   * END_STREAM DATA frame is serialised (nghttp2 sends control frames ahead of queued DATA and then
   * drops the DATA), so the reset is submitted once the writable side has finished and the session
   * has flushed the END_STREAM — the two frames still go out back to back, nothing in between.
   */
  closeLikeEnvoy(): void {
    const s = this.h2;
    if (s.destroyed || s.closed) return;
    if (this.finalStatus === undefined) this.localReset = true;
    const rst = (): void => {
      if (!s.destroyed && !s.closed) s.close(NGHTTP2_CANCEL);
    };
    if (this.halfClosed) {
      if (s.writableFinished) setImmediate(rst);
      else s.once('finish', () => setImmediate(rst));
      return;
    }
    this.halfClosed = true;
    s.end(() => setImmediate(rst));
  }

  /**
   * Next whole message, or null when no more will come (the call ended). With `timeoutMs`, rejects
   * after that long without a message.
   */
  recv(timeoutMs?: number): Promise<Buffer | null> {
    const q = this.queue;
    if (q.length > 0) return Promise.resolve(q.shift()!);
    if (this.ended) return Promise.resolve(null);
    if (this.waiter) return Promise.reject(new Error('recv() already pending'));
    return new Promise<Buffer | null>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          this.waiter = undefined;
          reject(new Error(`no gRPC message within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this.waiter = (m) => {
        if (timer) clearTimeout(timer);
        resolve(m);
      };
    });
  }

  /** Messages already received and not yet taken by recv(). */
  get queued(): number {
    return this.queue.length;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Buffer> {
    for (;;) {
      const m = await this.recv();
      if (m === null) return;
      yield m;
    }
  }

  private deliver(m: Buffer): void {
    if (this.onMessage) {
      this.onMessage(m);
      return;
    }
    const w = this.waiter;
    if (w) {
      this.waiter = undefined;
      w(m);
    } else this.queue.push(m);
  }

  private onData(chunk: Buffer): void {
    let buf = chunk;
    if (this.partialLen > 0) {
      // A message is split across DATA frames: collect until it is whole, then copy once.
      this.partial.push(chunk);
      this.partialLen += chunk.length;
      if (this.partialNeed < 0) {
        if (this.partialLen < 5) return;
        const head = this.partial[0]!.length >= 5 ? this.partial[0]! : Buffer.concat(this.partial);
        this.partialNeed = 5 + head.readUInt32BE(1);
      }
      if (this.partialLen < this.partialNeed) return;
      buf = Buffer.concat(this.partial, this.partialLen);
      this.partial = [];
      this.partialLen = 0;
      this.partialNeed = -1;
    }
    let off = 0;
    const n = buf.length;
    while (n - off >= 5) {
      const len = buf.readUInt32BE(off + 1);
      if (n - off - 5 < len) break;
      // buf[off] is the compressed flag; we never negotiate compression.
      this.deliver(len === 0 ? EMPTY : buf.subarray(off + 5, off + 5 + len));
      off += 5 + len;
    }
    if (off < n) {
      const rest = buf.subarray(off);
      this.partial.push(rest);
      this.partialLen = rest.length;
      this.partialNeed = rest.length >= 5 ? 5 + rest.readUInt32BE(1) : -1;
    }
  }

  /** Ends the call: on the server's status ('end' with grpc-status), or when the stream closes. */
  private onClose(): void {
    if (this.finalStatus) return;
    const s = this.h2;
    const t = this.trailerHeaders;
    let st: GrpcCallStatus;
    if (t && t['grpc-status'] !== undefined) {
      const raw = t['grpc-message'];
      st = {
        code: Number(t['grpc-status']),
        message: typeof raw === 'string' ? decodeGrpcMessage(raw) : '',
        source: 'trailers',
        localReset: false,
        trailers: t,
      };
      this.conn.stats.streamsWithStatus++;
    } else if (this.localReset) {
      st = { code: GrpcCode.CANCELLED, message: 'cancelled by client', source: 'reset', rstCode: s.rstCode, localReset: true };
      this.conn.stats.streamsResetLocally++;
    } else if (s.rstCode !== undefined && s.rstCode !== NGHTTP2_NO_ERROR) {
      st = {
        code: rstCodeToGrpc(s.rstCode),
        message: `stream reset by server (RST_STREAM code ${s.rstCode})`,
        source: this.conn.isGone ? 'connection' : 'reset',
        rstCode: s.rstCode,
        localReset: false,
      };
      this.conn.stats.streamsLost++;
    } else if (this.httpStatus !== undefined && this.httpStatus !== 200) {
      st = { code: httpToGrpc(this.httpStatus), message: `HTTP status ${this.httpStatus}`, source: 'trailers', localReset: false };
      this.conn.stats.streamsWithStatus++;
    } else {
      st = { code: GrpcCode.INTERNAL, message: 'stream closed without gRPC status', source: 'connection', localReset: false };
      this.conn.stats.streamsLost++;
    }
    if (this.httpStatus !== undefined) st.httpStatus = this.httpStatus;
    this.finalStatus = st;
    this.ended = true;
    const w = this.waiter;
    if (w) {
      this.waiter = undefined;
      w(null);
    }
    this.resolveStatus(st);
    this.onEnd?.(st);
  }
}

function decodeGrpcMessage(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function httpToGrpc(status: number): number {
  switch (status) {
    case 400:
      return GrpcCode.INTERNAL;
    case 401:
      return 16;
    case 403:
      return 7;
    case 404:
      return GrpcCode.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return GrpcCode.UNAVAILABLE;
    default:
      return GrpcCode.UNKNOWN;
  }
}

/**
 * One HTTP/2 connection (prior-knowledge h2c) to a gRPC server. Create with
 * {@link GrpcH2Connection.connect}. Counts GOAWAY frames and session errors in `stats`.
 */
/** Counters of a connection that has seen nothing yet. */
export function zeroConnectionStats(): GrpcH2ConnectionStats {
  return { goawayCount: 0, goawayCodes: [], errors: [], streamsOpened: 0, streamsWithStatus: 0, streamsLost: 0, streamsResetLocally: 0 };
}

export class GrpcH2Connection {
  readonly target: string;
  readonly session: http2.ClientHttp2Session;
  readonly stats: GrpcH2ConnectionStats = zeroConnectionStats();
  private readonly baseHeaders: http2.OutgoingHttpHeaders;
  private gone = false;
  private readonly closedP: Promise<void>;

  private constructor(target: string, session: http2.ClientHttp2Session, opts: GrpcH2ConnectionOptions) {
    this.target = target;
    this.session = session;
    this.baseHeaders = {
      [HTTP2_HEADER_METHOD]: 'POST',
      [HTTP2_HEADER_SCHEME]: opts.tls ? 'https' : 'http',
      [HTTP2_HEADER_AUTHORITY]: opts.authority ?? target,
      [HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc',
      [HTTP2_HEADER_TE]: 'trailers',
      ...opts.metadata,
    };
    session.on('goaway', (errorCode: number) => {
      this.stats.goawayCount++;
      this.stats.goawayCodes.push(errorCode);
      this.stats.lastGoawayCode = errorCode;
      this.gone = true;
    });
    session.on('error', (err: Error) => {
      this.stats.errors.push(err);
      this.gone = true;
    });
    session.on('frameError', (type: number, code: number, id: number) => {
      this.stats.errors.push(new Error(`frameError type=${type} code=${code} stream=${id}`));
    });
    this.closedP = new Promise((res) =>
      session.once('close', () => {
        this.gone = true;
        res();
      }),
    );
  }

  /** Opens the connection (resolves once the HTTP/2 session is connected). */
  static connect(target: string, opts: GrpcH2ConnectionOptions = {}): Promise<GrpcH2Connection> {
    return new Promise((resolve, reject) => {
      const session = http2.connect(`${opts.tls ? 'https' : 'http'}://${target}`, {
        maxSessionMemory: opts.maxSessionMemoryMb ?? 64,
        settings: { enablePush: false },
        // Own socket so Nagle can be turned off (Envoy sets TCP_NODELAY on upstream connections).
        createConnection: () => {
          const i = target.lastIndexOf(':');
          const address = { host: target.slice(0, i), port: Number(target.slice(i + 1)), noDelay: true };
          return opts.tls ? tls.connect({ ...address, ALPNProtocols: ['h2'], ...opts.tls }) : net.connect(address);
        },
      });
      const conn = new GrpcH2Connection(target, session, opts);
      const timer = setTimeout(() => {
        session.destroy();
        reject(new Error(`HTTP/2 connect to ${target} timed out`));
      }, opts.connectTimeoutMs ?? 5000);
      const onErr = (err: Error): void => {
        clearTimeout(timer);
        reject(err);
      };
      session.once('error', onErr);
      session.once('connect', () => {
        clearTimeout(timer);
        session.off('error', onErr);
        resolve(conn);
      });
    });
  }

  /** True once the connection received GOAWAY, failed, or closed: open no new streams on it. */
  get isGone(): boolean {
    return this.gone || this.session.closed || this.session.destroyed;
  }

  /** Opens a gRPC call on `path` (e.g. EXT_PROC_METHOD_PATH). Extra headers are call metadata. */
  openStream(path: string, metadata?: Record<string, string>): GrpcH2Stream {
    const headers = metadata ? { ...this.baseHeaders, ...metadata, [HTTP2_HEADER_PATH]: path } : { ...this.baseHeaders, [HTTP2_HEADER_PATH]: path };
    const h2s = this.session.request(headers, { endStream: false });
    this.stats.streamsOpened++;
    return new GrpcH2Stream(this, h2s);
  }

  /** Resolves when the session has closed. */
  get closed(): Promise<void> {
    return this.closedP;
  }

  /** Graceful close (waits for open streams), bounded by `timeoutMs` then destroy. */
  async close(timeoutMs = 2000): Promise<void> {
    if (this.session.destroyed) return;
    const t = setTimeout(() => this.session.destroy(), timeoutMs);
    this.session.close();
    await this.closedP;
    clearTimeout(t);
  }

  /** Immediate teardown. */
  destroy(): void {
    this.session.destroy();
  }
}
