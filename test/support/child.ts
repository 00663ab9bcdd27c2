import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type Server } from 'node:net';

/** Generous: a child starts in ~100 ms, but CI machines are slow and tests run side by side. */
export const CHILD_TIMEOUT_MS = 20_000;

export interface NodeChild {
  /** What the child wrote so far. */
  stdout(): string;
  stderr(): string;
  /** Resolves when the child has exited and its streams have ended. */
  closed: Promise<{ code: number | null }>;
  kill(signal: NodeJS.Signals): void;
}

/**
 * `node <args>` with stdout and stderr collected. Node kills it with SIGKILL after `timeoutMs`
 * (spawn's own timeout), so a hung child fails its test instead of holding up the suite.
 */
export function spawnNode(args: readonly string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): NodeChild {
  const child = spawn(process.execPath, [...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: options.env ?? process.env,
    timeout: options.timeoutMs ?? CHILD_TIMEOUT_MS,
    killSignal: 'SIGKILL',
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const closed = once(child, 'close').then(([code]) => ({ code: code as number | null }));
  return { stdout: () => stdout, stderr: () => stderr, closed, kill: (signal) => child.kill(signal) };
}

/** Runs `node <args>` until it exits (see spawnNode). */
export async function runNode(
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawnNode(args, options);
  const { code } = await child.closed;
  return { code, stdout: child.stdout(), stderr: child.stderr() };
}

/** A node:net server on `host` (port 0 = any free one), holding the port so nobody else can have it. */
export async function occupy(host: string, port = 0): Promise<{ server: Server; port: number }> {
  const server = createServer();
  server.listen(port, host);
  await once(server, 'listening');
  return { server, port: (server.address() as { port: number }).port };
}

export async function release(server: Server): Promise<void> {
  await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
}

/** A port nothing listens on (the kernel's pick, released again). */
export async function freePort(host: string): Promise<number> {
  const { server, port } = await occupy(host);
  await release(server);
  return port;
}
