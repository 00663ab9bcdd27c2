import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import type { Hono } from 'hono';
import { createHttpServer } from '../tls/http.js';
import type { CertificateWatcher } from '../tls/watcher.js';
import { type AdminDependencies, buildAdminApp } from './app.js';

export type { AdminDependencies } from './app.js';
export type { Readiness } from './probes.js';

/** The operators' HTTP port: probes, metrics and the admin API (see app.ts). */
export class AdminServer {
  readonly app: Hono;
  private server: Server | undefined;

  constructor(
    deps: AdminDependencies,
    /** HTTPS with this certificate (followed as it rotates); plain HTTP when absent. */
    private readonly tls?: CertificateWatcher,
  ) {
    this.app = buildAdminApp(deps);
  }

  /** Listens; the port bound (the one asked for, or the one chosen for 0). */
  async start(host: string, port: number): Promise<number> {
    this.server = await listen(this.app, host, port, this.tls);
    return (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/** The one place the HTTP(S) server is made. */
async function listen(app: Hono, host: string, port: number, tls: CertificateWatcher | undefined): Promise<Server> {
  // overrideGlobalObjects stays on (the default): hono/body-limit re-wraps the adapter's requests
  // with the global Request, which fails on Node's own class (measured: chunked DELETE → 500).
  const server = createHttpServer(getRequestListener(app.fetch), tls);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}
