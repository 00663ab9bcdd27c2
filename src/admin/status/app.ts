import { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import { openAIErrorBody } from '../../request/errors.js';
import { DEFAULT_EVENTS_OPTIONS, StatusEvents, type StatusEventsOptions } from './events.js';
import { STATUS_PAGE } from './page.js';
import { type StatusDependencies, statusSnapshot, timed } from './snapshot.js';

export { DecisionLog, type DecisionSink } from './decision-log.js';
export type { MappingView, StatusDependencies } from './snapshot.js';

export const STATUS_API = '/admin/api/status';
const EVENTS = `${STATUS_API}/events`;

/**
 * The live status page: `GET /` (the page), `GET /admin/api/status` (the JSON snapshot it renders)
 * and `GET /admin/api/status/events` (the same snapshots as server-sent events). Read-only and
 * without secrets, so it needs no token.
 */
export function statusApp(deps: StatusDependencies, options: Partial<StatusEventsOptions> = {}): Hono {
  const body = () => JSON.stringify(statusSnapshot(deps));
  const settings = { ...DEFAULT_EVENTS_OPTIONS, ...options };
  const events = new StatusEvents({ body, subscribe: (onChange) => deps.decisions.subscribe(onChange) }, settings);
  // Joins, departures, health and ejections are announced (load and in-flight counts come with the
  // tick); the registry has no way to unsubscribe, and with no client a change costs a check.
  deps.endpoints.onMembership({ added: events.changed, removed: events.changed });
  deps.endpoints.onStateChange(events.changed);

  const app = new Hono();
  // Answers of this app are OpenAI-style JSON errors like every other admin answer.
  const json = { 'content-type': 'application/json' };
  app.onError((err, c) => {
    deps.log.error({ err, path: c.req.path }, 'status page request failed');
    return c.body(openAIErrorBody('internal error', 'internal_error', 'internal_error'), 500, json);
  });
  app.notFound((c) => c.body(openAIErrorBody(`no admin route ${c.req.method} ${c.req.path}`, 'invalid_request_error', 'not_found'), 404, json));
  app.get('/', (c) => c.body(STATUS_PAGE.html, 200, STATUS_PAGE.headers));
  app.get(STATUS_API, (c) => c.body(timed(body()), 200, { ...json, 'cache-control': 'no-store' }));
  app.get(EVENTS, (c) => {
    if (events.full) {
      const message = `Too many status page connections (at most ${settings.maxClients}); the page falls back to polling ${STATUS_API}.`;
      return c.body(openAIErrorBody(message, 'service_unavailable_error', 'too_many_status_clients'), 503, json);
    }
    return streamSSE(c, (stream) => {
      const leave = events.join({
        send: (data) => stream.writeSSE({ event: 'snapshot', data }),
        heartbeat: () => stream.write(': heartbeat\n\n').then(() => undefined),
      });
      return new Promise<void>((resolve) => {
        stream.onAbort(() => {
          leave?.();
          resolve();
        });
      });
    });
  });
  return app;
}
