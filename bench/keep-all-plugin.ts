/**
 * An external filter plugin for the benchmark's chain section (a child process of bench/run.ts):
 * it keeps every pod it is sent, so no request is filtered to nothing, at the least work a
 * plugin can do (parse the request, echo the names).
 *
 *   POST /keep-alive/filter   answers over the kept-alive connection (llm-extproc's default)
 *   POST /close/filter        answers with `connection: close`: the server closes the connection
 *                             after the answer, so llm-extproc's keep-alive agent opens a new
 *                             connection for every call (llm-extproc has no flag to turn keep-alive off)
 *   GET  /stats               calls and new connections per path so far, as JSON
 *
 * Prints one JSON line `{"listening": PORT}` on stdout once it listens on 127.0.0.1.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

interface Counts {
  calls: number;
  failed: number;
  connections: number;
}

const paths = { '/keep-alive/filter': 'keepAlive', '/close/filter': 'close' } as const;
const stats: Record<(typeof paths)[keyof typeof paths], Counts> = {
  keepAlive: { calls: 0, failed: 0, connections: 0 },
  close: { calls: 0, failed: 0, connections: 0 },
};

const server = createServer({ keepAliveTimeout: 10_000 }, (req, res) => {
  if (req.method === 'GET' && req.url === '/stats') {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(stats));
    return;
  }
  const kind = paths[req.url as keyof typeof paths];
  if (req.method !== 'POST' || kind === undefined) {
    res.writeHead(404).end();
    return;
  }
  const counts = stats[kind];
  // A connection's first request: counted once per socket, per path.
  const socket = req.socket as typeof req.socket & { benchSeen?: boolean };
  if (!socket.benchSeen) {
    socket.benchSeen = true;
    counts.connections++;
  }
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    counts.calls++;
    let answer: string;
    try {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { pods: { pod: { namespaced_name: unknown } }[] };
      answer = JSON.stringify(body.pods.map((p) => p.pod.namespaced_name));
    } catch {
      counts.failed++;
      res.writeHead(400).end();
      return;
    }
    const headers: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(answer) };
    if (kind === 'close') headers.connection = 'close';
    res.writeHead(200, headers).end(answer);
  });
});

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ listening: (server.address() as AddressInfo).port })}\n`);
});
process.on('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
});
