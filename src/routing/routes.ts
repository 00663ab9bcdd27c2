import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from '../config/errors.js';
import { type ServiceMapping, validateMappings } from './mappings.js';

/**
 * One entry of the route file (seed 004's routes.json): requests whose path starts with
 * `path_prefix` use `model` when their body names none, and `owned_by` when they name no engine.
 */
export interface Route {
  name: string;
  path_prefix: string;
  model?: string;
  owned_by?: string;
}

const FLAG = '--route-config';
const ROUTE_SHAPE_HINT = 'each route is {name, path_prefix, model?, owned_by?}, as in config/routes.json';

/** A mistake in the route file, named by file and field path. */
function routeError(message: string, hint = ROUTE_SHAPE_HINT): ConfigError {
  return new ConfigError(FLAG, message, hint);
}

/**
 * The routes by name, and ordered so that the longest matching prefix wins. A route's name is the
 * contract with Envoy: a named Envoy route (sent as attribute `xds.route_name`) selects the entry of
 * the same name; the path prefix is the fallback when Envoy sends no name or one this table lacks.
 */
export class RouteTable {
  private readonly routes: readonly Route[];
  private readonly named: ReadonlyMap<string, Route>;

  constructor(routes: readonly Route[] = []) {
    this.routes = [...routes].sort((a, b) => b.path_prefix.length - a.path_prefix.length);
    this.named = new Map(routes.map((route) => [route.name, route]));
  }

  match(path: string): Route | undefined {
    for (const route of this.routes) {
      if (path.startsWith(route.path_prefix)) return route;
    }
    return undefined;
  }

  byName(name: string): Route | undefined {
    return this.named.get(name);
  }

  /** The route named `envoyRouteName` if this table has it, else the one `path` matches. */
  resolve(envoyRouteName: string | undefined, path: string): Route | undefined {
    return (envoyRouteName === undefined ? undefined : this.named.get(envoyRouteName)) ?? this.match(path);
  }

  list(): readonly Route[] {
    return this.routes;
  }
}

/** What a route file holds: path routes and (model, owned_by) → Service mappings. */
export interface RouteConfig {
  routes: RouteTable;
  mappings: readonly ServiceMapping[];
}

/** Loads a route file: a JSON or YAML array of routes, or an object with `routes` and/or `mappings`. */
export async function loadRouteConfig(file: string): Promise<RouteConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw routeError(`cannot read ${file}: ${(err as Error).message}`, `check the path and its permissions; a relative path starts at ${process.cwd()}`);
  }
  const format = ['.yaml', '.yml'].includes(extname(file)) ? 'YAML' : 'JSON';
  let document: unknown;
  try {
    document = format === 'YAML' ? parseYaml(text) : JSON.parse(text);
  } catch (err) {
    // YAML's message goes on with a code frame; its first line says what and where.
    const reason = (err as Error).message.split('\n', 1)[0];
    throw routeError(`${file} is not valid ${format}: ${reason}`, 'fix the syntax; .yaml and .yml files are read as YAML, any other as JSON');
  }
  if (document !== null && typeof document === 'object' && !Array.isArray(document)) {
    const record = document as Record<string, unknown>;
    const unknown = Object.keys(record).find((key) => key !== 'routes' && key !== 'mappings');
    if (unknown !== undefined) throw routeError(`${file}: "${unknown}" is not a known section (routes, mappings)`);
    return {
      routes: new RouteTable(record.routes === undefined ? [] : validateRoutes(record.routes, file)),
      mappings: record.mappings === undefined ? [] : validateMappings(record.mappings, file),
    };
  }
  return { routes: new RouteTable(validateRoutes(document, file)), mappings: [] };
}

export function validateRoutes(list: unknown, source: string): Route[] {
  if (!Array.isArray(list)) throw routeError(`${source}: expected an array of routes`);
  const names = new Set<string>();
  return list.map((entry: unknown, index) => {
    const where = `${source}: routes[${index}]`;
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
      throw routeError(`${where} must be an object`);
    }
    const record = entry as Record<string, unknown>;
    for (const key of Object.keys(record)) {
      if (!['name', 'path_prefix', 'model', 'owned_by'].includes(key)) {
        throw routeError(`${where}.${key} is not a known route field (name, path_prefix, model, owned_by)`);
      }
    }
    const field = (key: string, required: boolean): string | undefined => {
      const value = record[key];
      if (value === undefined && !required) return undefined;
      if (typeof value !== 'string' || value === '') {
        throw routeError(`${where}.${key} must be a non-empty string`);
      }
      return value;
    };
    const route: Route = { name: field('name', true)!, path_prefix: field('path_prefix', true)! };
    if (!route.path_prefix.startsWith('/')) throw routeError(`${where}.path_prefix must start with '/'`, 'write an absolute path prefix, e.g. "/v1/chat"');
    if (names.has(route.name)) throw routeError(`${where}.name "${route.name}" is used twice`, 'give each route a name of its own');
    names.add(route.name);
    const model = field('model', false);
    const ownedBy = field('owned_by', false);
    if (model !== undefined) route.model = model;
    if (ownedBy !== undefined) route.owned_by = ownedBy;
    return route;
  });
}
