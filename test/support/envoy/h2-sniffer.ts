/**
 * A loopback TCP relay that decodes the HTTP/2 frame headers flowing client → server, so a test can
 * see exactly which frames a client put on the wire and in which order (e.g. END_STREAM then
 * RST_STREAM(CANCEL) for Envoy's stream close, §4.1). Prior-knowledge h2c only (no TLS).
 */
import net from 'node:net';

export const H2FrameType = {
  DATA: 0,
  HEADERS: 1,
  PRIORITY: 2,
  RST_STREAM: 3,
  SETTINGS: 4,
  PUSH_PROMISE: 5,
  PING: 6,
  GOAWAY: 7,
  WINDOW_UPDATE: 8,
  CONTINUATION: 9,
} as const;

export interface SniffedFrame {
  type: number;
  flags: number;
  streamId: number;
  length: number;
  /** RST_STREAM / GOAWAY error code. */
  errorCode?: number;
  /** Index in the client → server sequence. */
  seq: number;
}

const PREFACE_LEN = 24; // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

/** Incremental decoder of HTTP/2 frame headers (client side, after the connection preface). */
class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);
  private prefaceLeft = PREFACE_LEN;
  private seq = 0;
  constructor(private readonly sink: (f: SniffedFrame) => void) {}

  push(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    if (this.prefaceLeft > 0) {
      const n = Math.min(this.prefaceLeft, this.buf.length);
      this.buf = this.buf.subarray(n);
      this.prefaceLeft -= n;
    }
    while (this.buf.length >= 9) {
      const length = this.buf.readUIntBE(0, 3);
      if (this.buf.length < 9 + length) return;
      const type = this.buf[3]!;
      const flags = this.buf[4]!;
      const streamId = this.buf.readUInt32BE(5) & 0x7fffffff;
      const f: SniffedFrame = { type, flags, streamId, length, seq: this.seq++ };
      if (type === H2FrameType.RST_STREAM && length >= 4) f.errorCode = this.buf.readUInt32BE(9);
      if (type === H2FrameType.GOAWAY && length >= 8) f.errorCode = this.buf.readUInt32BE(13);
      this.sink(f);
      this.buf = this.buf.subarray(9 + length);
    }
  }
}

export interface H2Sniffer {
  /** `127.0.0.1:port` to point the client at. */
  target: string;
  /** Frames sent by clients, in wire order (all connections appended in arrival order). */
  frames: SniffedFrame[];
  close(): Promise<void>;
}

/** Starts a relay on 127.0.0.1:<ephemeral> forwarding to `upstream` (`host:port`). */
export async function startH2Sniffer(upstream: string): Promise<H2Sniffer> {
  const frames: SniffedFrame[] = [];
  const sockets = new Set<net.Socket>();
  const [uhost, uport] = splitHostPort(upstream);
  const server = net.createServer((down) => {
    const up = net.connect(uport, uhost);
    sockets.add(down);
    sockets.add(up);
    const dec = new FrameDecoder((f) => frames.push(f));
    down.on('data', (d: Buffer) => {
      dec.push(d);
      up.write(d);
    });
    up.on('data', (d: Buffer) => down.write(d));
    const end = (): void => {
      down.destroy();
      up.destroy();
      sockets.delete(down);
      sockets.delete(up);
    };
    down.on('close', end);
    up.on('close', end);
    down.on('error', end);
    up.on('error', end);
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  const port = (server.address() as net.AddressInfo).port;
  return {
    target: `127.0.0.1:${port}`,
    frames,
    close: () =>
      new Promise<void>((res) => {
        for (const s of sockets) s.destroy();
        server.close(() => res());
      }),
  };
}

function splitHostPort(hp: string): [string, number] {
  const i = hp.lastIndexOf(':');
  return [hp.slice(0, i), Number(hp.slice(i + 1))];
}
