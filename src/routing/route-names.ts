import type { Logger } from 'pino';
import { clip } from '../request/limits.js';
import type { RouteTable } from './routes.js';

/** Distinct unknown names logged per route table; more are only counted. */
const MAX_LOGGED_UNKNOWN_ROUTE_NAMES = 64;

/**
 * Notices route names Envoy sends (attribute `xds.route_name`) that the routes file lacks: a
 * mismatch between the two configs, so the request falls back to path_prefix matching. Every such
 * request is counted; each name is logged once per route table (a reload starts afresh), for at
 * most `maxLogged` names, so a flood of names cannot grow memory or the log.
 */
export class UnknownRouteNames {
  private table: RouteTable | undefined;
  private readonly logged = new Set<string>();

  constructor(
    private readonly counter: { inc(): void },
    private readonly log: Logger,
    private readonly maxLogged = MAX_LOGGED_UNKNOWN_ROUTE_NAMES,
  ) {}

  check(name: string | undefined, routes: RouteTable): void {
    if (name === undefined || routes.byName(name) !== undefined) return;
    this.counter.inc();
    if (routes !== this.table) {
      this.table = routes;
      this.logged.clear();
    }
    if (this.logged.has(name) || this.logged.size >= this.maxLogged) return;
    this.logged.add(name);
    const last = this.logged.size === this.maxLogged ? `; further unknown names are only counted until the routes file changes` : '';
    this.log.warn(
      { routeName: clip(name), knownRoutes: routes.list().map((route) => route.name) },
      `Envoy's route name is not in the routes file (--route-config): matching by path_prefix instead${last}`,
    );
  }
}
