import { Hono } from 'hono';
import { methodNotAllowed } from 'hono/method-not-allowed';
import type { Logger } from 'pino';
import { type ApiDependencies, apiRoutes } from './api-routes.js';
import { errorResponse, internalError, notFound } from './errors.js';
import { type ProbeDependencies, probeRoutes } from './probes.js';

export interface AdminDependencies extends ProbeDependencies, ApiDependencies {
  log: Logger;
  /** The status page and its feeds (src/admin/status). */
  status?: Hono;
}

/**
 * The admin port's routes. More may be mounted on the app returned (`app.route('/', statusApp)`);
 * the 404, 405 and 500 answers below cover them too.
 */
export function buildAdminApp(deps: AdminDependencies): Hono {
  const app = new Hono();
  // Registered first so it sees every answer; it reads the app's routes when the first 404 comes.
  app.use(
    methodNotAllowed({
      app,
      onMethodNotAllowed: (c, allowed) =>
        errorResponse(405, 'invalid_request_error', 'method_not_allowed', `${c.req.method} is not allowed on ${c.req.path}; use ${allowed.join(', ')}`, {
          allow: allowed.join(', '),
        }),
    }),
  );
  app.route('/', probeRoutes(deps));
  app.route('/', apiRoutes(deps));
  if (deps.status) app.route('/', deps.status);
  app.notFound((c) => notFound('not_found', `no admin route ${c.req.method} ${c.req.path}`));
  app.onError((err, c) => {
    deps.log.error({ err, method: c.req.method, path: c.req.path }, 'admin request failed');
    return internalError();
  });
  return app;
}
