/**
 * The Envoy-like load generator, run as a child process of bench/run.ts (IPC, advanced
 * serialization). Each request is one ext_proc stream with one of Envoy's two lifecycles:
 *
 * BUFFERED (`requestMode: 'buffered'`):
 *   open stream + request_headers (protocol_config BUFFERED/NONE) → wait for the answer (CONTINUE)
 *   → request_body (whole body, end_of_stream) → wait for the answer carrying the destination
 *   → response_headers (:status 200) → wait → closeLikeEnvoy() (END_STREAM + RST_STREAM(CANCEL))
 *
 * FULL_DUPLEX_STREAMED (`requestMode: 'full_duplex'`):
 *   open stream + request_headers (protocol_config FULL_DUPLEX_STREAMED/NONE) and request_body
 *   (whole body, end_of_stream) back to back, without waiting → wait for the request_headers answer
 *   carrying the destination (sent by the server only once it has read the body) → the body echoed
 *   as request_body answers with body_mutation.streamed_response chunks (≤ 62,000 bytes, the last
 *   with end_of_stream), checked to re-assemble the body → response_headers → wait → closeLikeEnvoy()
 *
 * Streams are spread round-robin over several HTTP/2 connections (as Envoy's workers each hold
 * one). Closed loop: N requests in flight, a finished one starts the next at once. Open loop:
 * Poisson arrivals at a fixed rate, independent of completions.
 *
 * Decision latency = from opening the stream with request_headers to receiving the answer that
 * carries x-gateway-destination-endpoint: the request_body answer in BUFFERED (both round trips),
 * the request_headers answer in FULL_DUPLEX (one round trip, the body travelling with the headers).
 *
 * Every answer is checked cheaply (the oneof tag in its first byte, the destination header name in
 * the routing answer, the echoed chunks read off the wire and compared with the body); one routing
 * answer in VALIDATE_EVERY is fully decoded and its destination tallied (in FULL_DUPLEX, the first
 * echo answer of that request is fully decoded too, as a cross-check of the wire reader). The measured server's CPU time and our own are read from /proc at the exact window edges.
 */
import { performance } from 'node:perf_hooks';
import { EXT_PROC_METHOD_PATH } from '../src/extproc/proto.js';
import { type GrpcCallStatus, GrpcH2Connection, type GrpcH2Stream } from '../test/support/envoy/grpc-h2.js';
import {
  chatBody,
  DESTINATION_HEADER,
  decodedStreamedChunk,
  destinationOf,
  MAX_STREAMED_CHUNK_BYTES,
  RESPONSE_TAG,
  RequestHeadersTemplate,
  requestBodyMessage,
  responseHeadersMessage,
  streamedChunkOf,
} from './messages.js';
import { machineCpuMs, processCpuMs } from './proc.js';
import { Samples } from './stats.js';

export interface Scenario {
  name: string;
  /** host:port of the ext_proc server. */
  target: string;
  /** pid of the server process, for its CPU time. */
  serverPid: number;
  /** pids of the servers not under test (their idle CPU time, summed); may be empty. */
  idlePids: number[];
  connections: number;
  /** ping: HTTP/2 PING round trips only (answered inside nghttp2: the transport's floor). */
  mode: 'closed' | 'open' | 'ping';
  /** Envoy's request body mode: BUFFERED (two round trips to the decision) or FULL_DUPLEX_STREAMED
   *  (headers and body sent at once, the decision on the headers answer, the body echoed). */
  requestMode: 'buffered' | 'full_duplex';
  /** Closed loop: requests in flight. */
  concurrency: number;
  /** Open loop: arrivals per second (Poisson). */
  rate: number;
  warmupMs: number;
  durationMs: number;
  bodyBytes: number;
  /** A request not finished after this long is reset and counted as a timeout. */
  timeoutMs: number;
  clockTicks: number;
  seed: number;
}

export interface ScenarioResult {
  name: string;
  /** Requests that got all three answers inside the measurement window. */
  completed: number;
  /** Requests started inside the window (open loop: the offered load). */
  started: number;
  /** Requests that got all three answers during the whole run, warm-up included. */
  completedTotal: number;
  wallMs: number;
  serverCpuMs: number;
  loadgenCpuMs: number;
  /** CPU time of the idle servers (those not under test) during the window. */
  idleServerCpuMs: number;
  /** Whole machine (/proc/stat): busy CPU time and steal during the window. */
  machineBusyMs: number;
  machineStealMs: number;
  /** Decision latency samples (µs) of requests whose decision arrived inside the window
   *  (ping mode: PING round trips). */
  latencyUs: Float64Array;
  /** BUFFERED, first round trip only: request_headers sent (stream opened) → its answer (µs). */
  headersRtUs: Float64Array;
  /** FULL_DUPLEX: request_headers sent → the echoed body's last chunk (end_of_stream) received (µs),
   *  i.e. until Envoy would have the whole body back to send upstream. */
  echoUs: Float64Array;
  /** Open loop: how late each arrival was sent compared to its schedule (µs). */
  lagUs: Float64Array;
  errors: Record<string, number>;
  goaways: number;
  streamsLost: number;
  connectionErrors: number;
  /** Fully decoded routing answers and the destinations they named. */
  validated: number;
  destinations: Record<string, number>;
}

/** Odd, so the sample alternates between the vllm and sglang bodies. */
const VALIDATE_EVERY = 61;
const DEST_BYTES = Buffer.from(DESTINATION_HEADER);

/** mulberry32: a small seeded PRNG, so arrival sequences repeat across runs. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Active {
  stream: GrpcH2Stream;
  startedAt: number;
  /** 0: awaiting the request_headers answer; 1: the request_body answer (BUFFERED) or the echo
   *  (FULL_DUPLEX); 2: the response_headers answer; 3: done. */
  stage: number;
  done: boolean;
  onDone: (() => void) | undefined;
  /** The raw body sent (FULL_DUPLEX: what the echo must re-assemble) and how much came back. */
  body: Buffer;
  echoed: number;
  /** FULL_DUPLEX: cross-check the echo of this request with a full decode. */
  sampled: boolean;
}

class Run {
  private readonly conns: GrpcH2Connection[] = [];
  private readonly retired: GrpcH2Connection[] = [];
  private rr = 0;
  private readonly headers: RequestHeadersTemplate;
  private readonly fullDuplex: boolean;
  /** Per engine: the raw body and its serialized request_body message. */
  private readonly rawBodies: Buffer[];
  private readonly bodies: Buffer[];
  private readonly responseHeaders = responseHeadersMessage();
  private bodyTurn = 0;
  private measuring = false;
  private stopping = false;
  private readonly active = new Set<Active>();
  private completed = 0;
  private completedTotal = 0;
  private started = 0;
  private readonly latency = new Samples();
  private readonly headersRt = new Samples();
  private readonly echo = new Samples();
  private readonly lag = new Samples(1024);
  private readonly errors: Record<string, number> = {};
  private validated = 0;
  /** Routing answers received (the validation sample counts them). */
  private routed = 0;
  private readonly destinations: Record<string, number> = {};

  constructor(private readonly s: Scenario) {
    this.fullDuplex = s.requestMode === 'full_duplex';
    this.headers = new RequestHeadersTemplate(s.bodyBytes, s.seed, this.fullDuplex ? 'FULL_DUPLEX_STREAMED' : 'BUFFERED');
    // Alternate between the two engines so both (model, owned_by) pools are used.
    this.rawBodies = ['vllm', 'sglang'].map((engine) => chatBody(s.bodyBytes, engine));
    this.bodies = this.rawBodies.map(requestBodyMessage);
  }

  async execute(): Promise<ScenarioResult> {
    for (let i = 0; i < this.s.connections; i++) this.conns.push(await GrpcH2Connection.connect(this.s.target));
    if (this.s.mode === 'ping') return this.pings();
    const watchdog = setInterval(() => this.expire(), Math.min(500, this.s.timeoutMs / 2));
    let stopArrivals: () => void;
    if (this.s.mode === 'closed') {
      for (let i = 0; i < this.s.concurrency; i++) this.loop();
      stopArrivals = () => {};
    } else {
      stopArrivals = this.arrivals();
    }
    await sleep(this.s.warmupMs);

    const cpu0 = this.cpu();
    const t0 = performance.now();
    this.measuring = true;
    await sleep(this.s.durationMs);
    this.measuring = false;
    const t1 = performance.now();
    const cpu1 = this.cpu();

    this.stopping = true;
    stopArrivals();
    const deadline = Date.now() + this.s.timeoutMs + 1000;
    while (this.active.size > 0 && Date.now() < deadline) await sleep(20);
    for (const a of this.active) this.fail(a, 'unfinished at the end');
    clearInterval(watchdog);
    // Let the last RST_STREAMs go out before closing.
    await sleep(50);
    const all = [...this.conns, ...this.retired];
    await Promise.all(all.map((c) => c.close(2000)));
    const stats = all.map((c) => c.stats);
    return {
      name: this.s.name,
      completed: this.completed,
      started: this.started,
      completedTotal: this.completedTotal,
      wallMs: t1 - t0,
      serverCpuMs: cpu1.server - cpu0.server,
      loadgenCpuMs: cpu1.self - cpu0.self,
      idleServerCpuMs: cpu1.idle - cpu0.idle,
      machineBusyMs: cpu1.machine.busy - cpu0.machine.busy,
      machineStealMs: cpu1.machine.steal - cpu0.machine.steal,
      latencyUs: this.latency.toArray(),
      headersRtUs: this.headersRt.toArray(),
      echoUs: this.echo.toArray(),
      lagUs: this.lag.toArray(),
      errors: this.errors,
      goaways: stats.reduce((n, st) => n + st.goawayCount, 0),
      streamsLost: stats.reduce((n, st) => n + st.streamsLost, 0),
      connectionErrors: stats.reduce((n, st) => n + st.errors.length, 0),
      validated: this.validated,
      destinations: this.destinations,
    };
  }

  /** Sequential PINGs on one connection with random 0–2 ms pauses, for durationMs. */
  private async pings(): Promise<ScenarioResult> {
    const session = this.conns[0]!.session;
    const random = prng(this.s.seed);
    const t0 = performance.now();
    while (performance.now() - t0 < this.s.durationMs) {
      const rtt = await new Promise<number>((resolve, reject) => {
        session.ping((err, duration) => (err ? reject(err) : resolve(duration)));
      });
      this.latency.push(rtt * 1000);
      await sleep(random() * 2);
    }
    const wallMs = performance.now() - t0;
    await Promise.all(this.conns.map((c) => c.close(2000)));
    return {
      name: this.s.name,
      completed: this.latency.length,
      started: this.latency.length,
      completedTotal: 0,
      wallMs,
      serverCpuMs: 0,
      loadgenCpuMs: 0,
      idleServerCpuMs: 0,
      machineBusyMs: 0,
      machineStealMs: 0,
      latencyUs: this.latency.toArray(),
      headersRtUs: new Float64Array(0),
      echoUs: new Float64Array(0),
      lagUs: new Float64Array(0),
      errors: {},
      goaways: 0,
      streamsLost: 0,
      connectionErrors: 0,
      validated: 0,
      destinations: {},
    };
  }

  private cpu() {
    const ticks = this.s.clockTicks;
    return {
      server: processCpuMs(this.s.serverPid, ticks),
      self: processCpuMs(process.pid, ticks),
      idle: this.s.idlePids.reduce((sum, pid) => sum + processCpuMs(pid, ticks), 0),
      machine: machineCpuMs(ticks),
    };
  }

  /** Closed loop: one slot; each finished request starts the next. */
  private loop(): void {
    if (this.stopping) return;
    this.issue(() => this.loop());
  }

  /** Open loop: Poisson arrivals; returns a stop function. */
  private arrivals(): () => void {
    const random = prng(this.s.seed ^ 0x5eed);
    const meanGapMs = 1000 / this.s.rate;
    let next = performance.now();
    let timer: NodeJS.Timeout | undefined;
    const tick = () => {
      const now = performance.now();
      while (next <= now && !this.stopping) {
        if (this.measuring) this.lag.push((now - next) * 1000);
        this.issue(undefined);
        next += -Math.log(1 - random()) * meanGapMs;
      }
      if (!this.stopping) timer = setTimeout(tick, Math.max(0, next - performance.now()));
    };
    tick();
    return () => clearTimeout(timer);
  }

  private connection(): GrpcH2Connection {
    for (let tries = 0; tries < this.conns.length; tries++) {
      const i = this.rr++ % this.conns.length;
      const conn = this.conns[i]!;
      if (!conn.isGone) return conn;
      this.replace(i);
    }
    throw new Error('no usable HTTP/2 connection');
  }

  /** A connection got GOAWAY or failed: open a new one in its place (counted by its stats). */
  private replace(index: number): void {
    const old = this.conns[index]!;
    if ((old as unknown as { replacing?: boolean }).replacing) return;
    (old as unknown as { replacing?: boolean }).replacing = true;
    GrpcH2Connection.connect(this.s.target).then(
      (fresh) => {
        this.retired.push(old);
        this.conns[index] = fresh;
      },
      () => {
        (old as unknown as { replacing?: boolean }).replacing = false;
        this.count('reconnect failed');
      },
    );
  }

  private issue(onDone: (() => void) | undefined): void {
    let conn: GrpcH2Connection;
    try {
      conn = this.connection();
    } catch {
      this.count('no connection');
      if (onDone) setTimeout(onDone, 10);
      return;
    }
    if (this.measuring) this.started++;
    const startedAt = performance.now();
    const stream = conn.openStream(EXT_PROC_METHOD_PATH);
    const turn = this.bodyTurn++ & 1;
    const a: Active = { stream, startedAt, stage: 0, done: false, onDone, body: this.rawBodies[turn]!, echoed: 0, sampled: false };
    this.active.add(a);
    stream.onMessage = this.fullDuplex ? (m) => this.onFullDuplexAnswer(a, m) : (m) => this.onAnswer(a, m, turn);
    stream.onEnd = (st) => this.onEnd(a, st);
    stream.send(this.headers.next());
    // FULL_DUPLEX: Envoy streams the body right behind the headers, without waiting for an answer.
    if (this.fullDuplex) stream.send(this.bodies[turn]!);
  }

  /** BUFFERED: request_headers → CONTINUE, request_body → destination, response_headers. */
  private onAnswer(a: Active, m: Buffer, turn: number): void {
    switch (a.stage) {
      case 0:
        if (m[0] !== RESPONSE_TAG.request_headers) {
          this.fail(a, unexpected('request_headers', m));
          return;
        }
        if (this.measuring) this.headersRt.push((performance.now() - a.startedAt) * 1000);
        a.stage = 1;
        a.stream.send(this.bodies[turn]!);
        return;
      case 1: {
        if (m[0] !== RESPONSE_TAG.request_body || m.indexOf(DEST_BYTES) < 0) {
          this.fail(a, unexpected('request_body', m));
          return;
        }
        this.onDestination(a, m);
        a.stage = 2;
        a.stream.send(this.responseHeaders);
        return;
      }
      default:
        this.onResponseHeadersAnswer(a, m);
        return;
    }
  }

  /** FULL_DUPLEX: request_headers → destination (after the body), the body echoed, response_headers. */
  private onFullDuplexAnswer(a: Active, m: Buffer): void {
    switch (a.stage) {
      case 0:
        if (m[0] !== RESPONSE_TAG.request_headers || m.indexOf(DEST_BYTES) < 0) {
          this.fail(a, unexpected('request_headers', m));
          return;
        }
        a.sampled = this.onDestination(a, m);
        a.stage = 1;
        return;
      case 1: {
        if (m[0] !== RESPONSE_TAG.request_body) {
          this.fail(a, unexpected('request_body (echo)', m));
          return;
        }
        const chunk = streamedChunkOf(m);
        if (!chunk) {
          this.fail(a, 'request_body answer without body_mutation.streamed_response');
          return;
        }
        if (a.sampled) {
          // Once per sampled request: the codec must read the same chunk as the wire reader.
          a.sampled = false;
          const decoded = decodedStreamedChunk(m);
          if (!decoded?.body.equals(chunk.body) || decoded.endOfStream !== chunk.endOfStream) {
            this.fail(a, 'streamed_response read off the wire differs from the decoded one');
            return;
          }
        }
        const n = chunk.body.length;
        if (n > MAX_STREAMED_CHUNK_BYTES) {
          this.fail(a, `echoed chunk of ${n} bytes (> ${MAX_STREAMED_CHUNK_BYTES})`);
          return;
        }
        if (a.echoed + n > a.body.length || a.body.compare(chunk.body, 0, n, a.echoed, a.echoed + n) !== 0) {
          this.fail(a, 'echoed body differs from the body sent');
          return;
        }
        a.echoed += n;
        if (!chunk.endOfStream) return;
        if (a.echoed !== a.body.length) {
          this.fail(a, `echo ended (end_of_stream) after ${a.echoed} of ${a.body.length} bytes`);
          return;
        }
        if (this.measuring) this.echo.push((performance.now() - a.startedAt) * 1000);
        a.stage = 2;
        a.stream.send(this.responseHeaders);
        return;
      }
      default:
        this.onResponseHeadersAnswer(a, m);
        return;
    }
  }

  /** The answer carrying the destination arrived: record the decision latency; fully decode a sample. Returns whether `m` was sampled. */
  private onDestination(a: Active, m: Buffer): boolean {
    if (this.measuring) this.latency.push((performance.now() - a.startedAt) * 1000);
    if (++this.routed % VALIDATE_EVERY !== 1) return false;
    this.validate(m);
    return true;
  }

  private onResponseHeadersAnswer(a: Active, m: Buffer): void {
    switch (a.stage) {
      case 2:
        if (m[0] !== RESPONSE_TAG.response_headers) {
          this.fail(a, unexpected('response_headers', m));
          return;
        }
        a.stage = 3;
        a.stream.closeLikeEnvoy();
        if (this.measuring) this.completed++;
        this.completedTotal++;
        this.finish(a);
        return;
      default:
        this.count('answer after the last one');
    }
  }

  private validate(m: Buffer): void {
    const destination = destinationOf(m);
    if (destination === undefined) {
      this.count('routing answer without destination (decoded)');
      return;
    }
    this.validated++;
    this.destinations[destination] = (this.destinations[destination] ?? 0) + 1;
  }

  private onEnd(a: Active, st: GrpcCallStatus): void {
    if (a.stage < 3) {
      if (!a.done) this.fail(a, `stream ended before the last answer: ${st.source} code ${st.code} ${st.message}`);
      return;
    }
    if (!st.localReset && st.code !== 0) this.count(`non-OK status after the last answer: ${st.code} ${st.message}`);
  }

  private fail(a: Active, why: string): void {
    if (a.done) return;
    this.count(why);
    a.stream.reset();
    this.finish(a);
  }

  private finish(a: Active): void {
    if (a.done) return;
    a.done = true;
    this.active.delete(a);
    const next = a.onDone;
    // After an error, back off a little so a broken server does not turn into a busy loop.
    if (next) {
      if (a.stage === 3) next();
      else setTimeout(next, 5);
    }
  }

  private expire(): void {
    const limit = performance.now() - this.s.timeoutMs;
    for (const a of this.active) if (a.startedAt < limit) this.fail(a, `timeout (${this.s.timeoutMs} ms) at stage ${a.stage}`);
  }

  private count(key: string): void {
    this.errors[key] = (this.errors[key] ?? 0) + 1;
  }
}

function unexpected(expected: string, m: Buffer): string {
  if (m[0] === RESPONSE_TAG.immediate_response) return `immediate_response instead of the ${expected} answer`;
  return `unexpected answer to ${expected} (first byte 0x${(m[0] ?? 0).toString(16)})`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---- child process entry: one scenario per 'run' message ----

type Command = { type: 'run'; scenario: Scenario } | { type: 'exit' };

if (process.send) {
  // The orchestrator went away: do not linger.
  process.on('disconnect', () => process.exit(0));
  process.on('message', (command: Command) => {
    if (command.type === 'exit') process.exit(0);
    new Run(command.scenario).execute().then(
      (result) => process.send!({ type: 'result', result }),
      (err: unknown) => process.send!({ type: 'error', message: (err as Error).stack ?? String(err) }),
    );
  });
  process.send({ type: 'ready', pid: process.pid });
}
