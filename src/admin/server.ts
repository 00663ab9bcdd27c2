import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createAdaptorServer } from '@hono/node-server';
import type { Hono } from 'hono';
import { type AdminDependencies, buildAdminApp } from './app.js';

export type { AdminDependencies } from './app.js';
export type { Readiness } from './probes.js';

/** The operators' HTTP port: probes, metrics and the admin API (see app.ts). */
export class AdminServer {
  readonly app: Hono;
  private server: Server | undefined;

  constructor(deps: AdminDependencies) {
    this.app = buildAdminApp(deps);
  }

  /** Listens; the port bound (the one asked for, or the one chosen for 0). */
  async start(host: string, port: number): Promise<number> {
    this.server = await listen(this.app, host, port);
    return (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/** The one place the HTTP server is made (a TLS `createServer` option goes here). */
async function listen(app: Hono, host: string, port: number): Promise<Server> {
  // overrideGlobalObjects stays on (the default): hono/body-limit re-wraps the adapter's requests
  // with the global Request, which fails on Node's own class (measured: chunked DELETE → 500).
  const server = createAdaptorServer({ fetch: app.fetch, hostname: host, port }) as Server;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}
