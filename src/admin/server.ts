import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import type { Hono } from 'hono';
import type { Logger } from 'pino';
import type { EndpointRegistry } from '../discovery/registry.js';
import type { Metrics } from '../metrics.js';
import { createHttpServer } from '../tls/http.js';
import type { CertificateWatcher } from '../tls/watcher.js';
import { isStatusPath } from './status/app.js';

export interface AdminDependencies {
  metrics: Metrics;
  endpoints: EndpointRegistry;
  readiness: () => Readiness;
  /** When discovery lost contact (its picture may be out of date); undefined while current. */
  discoveryStaleSince: () => Date | undefined;
  log: Logger;
  /** The status page app (src/admin/status), served beside the routes here. */
  status?: Hono;
  /** HTTPS with this certificate (followed as it rotates); plain HTTP when absent. */
  tls?: CertificateWatcher | undefined;
}

/** `starting` until the first discovery/probe round has finished; `draining` from the stop signal on. */
export type Readiness = 'starting' | 'ready' | 'draining';

/** The operators' HTTP port: liveness, readiness and Prometheus metrics. */
export class AdminServer {
  private readonly server: Server;
  private readonly status: ((req: IncomingMessage, res: ServerResponse) => Promise<void>) | undefined;

  constructor(private readonly deps: AdminDependencies) {
    // Not overriding the process's global Request/Response: other parts (fetch clients) use them.
    this.status = deps.status && getRequestListener(deps.status.fetch, { overrideGlobalObjects: false });
    this.server = createHttpServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        deps.log.error({ err, path: req.url }, 'admin request failed');
        if (!res.headersSent) sendJson(res, 500, { error: { message: 'internal error', type: 'internal_error', code: 'internal_error' } });
        else res.destroy();
      });
    }, deps.tls);
  }

  async start(host: string, port: number): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    return (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?', 1)[0];
    const route = `${req.method} ${path}`;
    if (this.status && isStatusPath(path)) return this.status(req, res);
    switch (route) {
      case 'GET /health':
        return sendJson(res, 200, { status: 'ok' });
      case 'GET /ready': {
        const readiness = this.deps.readiness();
        const endpoints = this.deps.endpoints.all();
        const unhealthy = endpoints.filter((endpoint) => !endpoint.usable);
        const staleSince = this.deps.discoveryStaleSince();
        return sendJson(res, readiness === 'ready' ? 200 : 503, {
          status: readiness,
          // Stale discovery keeps serving the last known endpoints: ready, with a note.
          ...(staleSince ? { discovery: `stale since ${staleSince.toISOString()}` } : {}),
          endpoints: endpoints.length,
          healthy_endpoints: endpoints.length - unhealthy.length,
          // Why each backend is out of rotation, so an operator need not search the logs.
          unhealthy: unhealthy.map((endpoint) => ({
            endpoint: endpoint.address,
            name: endpoint.name,
            error: endpoint.health.ejected ? 'ejected after failed requests' : (endpoint.lastError ?? null),
          })),
        });
      }
      case 'GET /metrics': {
        const body = await this.deps.metrics.registry.metrics();
        res.writeHead(200, { 'content-type': this.deps.metrics.registry.contentType });
        res.end(body);
        return;
      }
      default:
        return sendJson(res, 404, { error: { message: `no admin route ${route}`, type: 'invalid_request_error', code: 'not_found' } });
    }
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
