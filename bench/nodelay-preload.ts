/**
 * Experiment hook, loaded only with `bench/run.js --nodelay` (node --import into both server
 * processes): makes http2.createServer default to `noDelay: true` (TCP_NODELAY on accepted
 * sockets). grpc-js passes its own options to http2.createServer and sets no noDelay, and Node's
 * net.Server defaults to false, so by default both servers' replies go through Nagle's algorithm.
 * This answers "how much of the latency is Nagle + delayed ACK?"; it is not how llm-extproc runs.
 */
import http2 from 'node:http2';

const original = http2.createServer;
(http2 as { createServer: typeof http2.createServer }).createServer = function createServer(this: unknown, ...args: unknown[]) {
  if (typeof args[0] === 'object' && args[0] !== null) args[0] = { noDelay: true, ...(args[0] as object) };
  return (original as (...a: unknown[]) => http2.Http2Server).apply(this, args);
} as typeof http2.createServer;
