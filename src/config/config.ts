import { parseArgs } from 'node:util';
import type { BodySendMode } from '../extproc/types.js';
import { ROUTING_LOGICS, type RoutingLogic } from '../scheduling/pickers.js';
import { parseStaticHost, type StaticHost } from '../discovery/static.js';
import { DESTINATION_HEADER, ROUTED_TO_HEADER } from '../wire-names.js';

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const BODY_MODES = ['NONE', 'STREAMED', 'BUFFERED', 'BUFFERED_PARTIAL', 'FULL_DUPLEX_STREAMED'] as const;

/** Everything llm-extproc is told at start, validated. */
export interface Config {
  host: string;
  port: number;
  adminHost: string;
  adminPort: number;
  serviceDiscovery: 'static';
  staticHosts: StaticHost[];
  staticModels: string | undefined;
  staticOwnedBy: string | undefined;
  routingLogic: RoutingLogic;
  routeConfig: string | undefined;
  logLevel: LogLevel;
  maxBodyBytes: number;
  grpcMaxReceiveBytes: number;
  destinationHeader: string;
  routedToHeader: string;
  requestBodyMode: BodySendMode;
  responseBodyMode: BodySendMode;
  probeIntervalMs: number;
  probeTimeoutMs: number;
  unhealthyThreshold: number;
  drainTimeoutMs: number;
  demo: boolean;
}

export class ConfigError extends Error {}

const MiB = 1024 * 1024;

/** Flag name → [type, default, help]. The names of seed 004's router are kept as they are. */
const FLAGS = {
  port: ['string', '50051', 'gRPC port of the ext_proc service'],
  host: ['string', '0.0.0.0', 'address the gRPC server binds'],
  'admin-port': ['string', '8081', 'HTTP port for /health, /ready, /metrics'],
  'admin-host': ['string', '0.0.0.0', 'address the admin HTTP server binds'],
  'service-discovery': ['string', 'static', 'how backends are found: static'],
  'static-hosts': ['string', undefined, 'comma-separated backends, host:port or http://host:port'],
  'static-models': ['string', undefined, 'models per static host (comma-separated, one entry per host or one for all; ";" between several models of a host); skips the /v1/models probe'],
  'static-owned-by': ['string', undefined, 'engine (owned_by) per static host, same layout as --static-models (default vllm)'],
  'routing-logic': ['string', 'least_outstanding_requests', `picker: ${ROUTING_LOGICS.join(' | ')}`],
  'route-config': ['string', undefined, 'routes file (JSON or YAML): [{name, path_prefix, model?, owned_by?}]'],
  'log-level': ['string', 'info', LOG_LEVELS.join(' | ')],
  'max-body-size': ['string', '32MiB', 'largest request body accepted (413 above)'],
  'grpc-max-receive-size': ['string', '64MiB', 'largest gRPC message accepted from Envoy'],
  'destination-header': ['string', DESTINATION_HEADER, 'header Envoy\'s ORIGINAL_DST cluster reads'],
  'routed-to-header': ['string', ROUTED_TO_HEADER, 'response header telling the caller which backend served it'],
  'request-body-mode': ['string', 'BUFFERED', 'request body mode assumed when Envoy sends no protocol_config (Envoy < 1.34)'],
  'response-body-mode': ['string', 'NONE', 'response body mode assumed when Envoy sends no protocol_config'],
  'probe-interval': ['string', '5s', 'time between backend probes'],
  'probe-timeout': ['string', '2s', 'timeout of one probe'],
  'unhealthy-threshold': ['string', '2', 'consecutive failed probes before a backend leaves rotation'],
  'drain-timeout': ['string', '25s', 'on SIGTERM, SIGINT or SIGHUP, how long open streams may finish'],
  demo: ['boolean', false, 'start built-in simulated vLLM and SGLang backends and route to them'],
  help: ['boolean', false, 'print this help'],
} as const;

export function usage(): string {
  const lines = Object.entries(FLAGS).map(([name, [type, fallback, help]]) => {
    const flag = type === 'boolean' ? `--${name}` : `--${name}=<value>`;
    return `  ${flag.padEnd(34)} ${help}${fallback !== undefined && type !== 'boolean' ? ` (default ${fallback})` : ''}`;
  });
  return `Usage: llm-extproc [flags]\n\n${lines.join('\n')}\n`;
}

/** Parses argv; `undefined` means --help was asked for. */
export function parseConfig(argv: readonly string[]): Config | undefined {
  const options = Object.fromEntries(
    Object.entries(FLAGS).map(([name, [type, fallback]]) => [
      name,
      fallback === undefined ? { type } : { type, default: fallback },
    ]),
  ) as Record<string, { type: 'string' | 'boolean'; default?: string | boolean }>;
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ args: [...argv], options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  if (values.help) return undefined;
  const text = (name: keyof typeof FLAGS) => values[name] as string;
  const optional = (name: keyof typeof FLAGS) => (values[name] as string | undefined) || undefined;

  const serviceDiscovery = oneOf('service-discovery', text('service-discovery'), ['static'] as const);
  const demo = values.demo === true;
  const hostsFlag = optional('static-hosts');
  if (!demo && !hostsFlag) {
    throw new ConfigError('--static-hosts is required with --service-discovery=static (or run with --demo)');
  }
  if (demo && hostsFlag) throw new ConfigError('--demo starts its own backends: drop --static-hosts');
  const staticHosts = hostsFlag ? hostsFlag.split(',').filter((h) => h.trim()).map(parseStaticHost) : [];

  const maxBodyBytes = parseBytes('max-body-size', text('max-body-size'));
  const grpcMaxReceiveBytes = parseBytes('grpc-max-receive-size', text('grpc-max-receive-size'));
  if (grpcMaxReceiveBytes < maxBodyBytes) {
    throw new ConfigError('--grpc-max-receive-size must be at least --max-body-size (a BUFFERED body arrives as one message)');
  }
  return {
    host: text('host'),
    port: parsePort('port', text('port'), true),
    adminHost: text('admin-host'),
    adminPort: parsePort('admin-port', text('admin-port'), true),
    serviceDiscovery,
    staticHosts,
    staticModels: optional('static-models'),
    staticOwnedBy: optional('static-owned-by'),
    routingLogic: oneOf('routing-logic', text('routing-logic'), ROUTING_LOGICS),
    routeConfig: optional('route-config'),
    logLevel: oneOf('log-level', text('log-level').toLowerCase(), LOG_LEVELS),
    maxBodyBytes,
    grpcMaxReceiveBytes,
    destinationHeader: headerName('destination-header', text('destination-header')),
    routedToHeader: headerName('routed-to-header', text('routed-to-header')),
    requestBodyMode: oneOf('request-body-mode', text('request-body-mode').toUpperCase(), BODY_MODES),
    responseBodyMode: oneOf('response-body-mode', text('response-body-mode').toUpperCase(), BODY_MODES),
    probeIntervalMs: parseDuration('probe-interval', text('probe-interval')),
    probeTimeoutMs: parseDuration('probe-timeout', text('probe-timeout')),
    unhealthyThreshold: parseCount('unhealthy-threshold', text('unhealthy-threshold')),
    drainTimeoutMs: parseDuration('drain-timeout', text('drain-timeout')),
    demo,
  };
}

function oneOf<T extends string>(flag: string, value: string, allowed: readonly T[]): T {
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw new ConfigError(`--${flag}: "${value}" is not one of ${allowed.join(', ')}`);
}

function parsePort(flag: string, value: string, allowZero: boolean): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < (allowZero ? 0 : 1) || port > 65535) {
    throw new ConfigError(`--${flag}: "${value}" is not a port number`);
  }
  return port;
}

function parseCount(flag: string, value: string): number {
  const count = Number(value);
  if (!Number.isInteger(count) || count < 1) throw new ConfigError(`--${flag}: "${value}" is not a positive integer`);
  return count;
}

const BYTE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1000, kb: 1000, ki: 1024, kib: 1024, m: 1e6, mb: 1e6, mi: MiB, mib: MiB, g: 1e9, gb: 1e9, gi: 1024 * MiB, gib: 1024 * MiB };

/** `33554432`, `32MiB`, `32Mi`, `10MB`. */
export function parseBytes(flag: string, value: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(value.trim());
  const unit = match ? BYTE_UNITS[match[2]!.toLowerCase()] : undefined;
  if (!match || unit === undefined) throw new ConfigError(`--${flag}: "${value}" is not a size like 33554432 or 32MiB`);
  const bytes = Math.floor(Number(match[1]) * unit);
  if (bytes < 1) throw new ConfigError(`--${flag}: must be at least 1 byte`);
  return bytes;
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** `500ms`, `5s`, `2m`; a bare number is seconds. */
export function parseDuration(flag: string, value: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(value.trim());
  if (!match) throw new ConfigError(`--${flag}: "${value}" is not a duration like 500ms, 5s or 2m`);
  const ms = Number(match[1]) * DURATION_UNITS[match[2] ?? 's']!;
  if (ms <= 0) throw new ConfigError(`--${flag}: must be positive`);
  return ms;
}

function headerName(flag: string, value: string): string {
  const name = value.trim().toLowerCase();
  if (!/^[a-z0-9!#$%&'*+.^_`|~-]+$/.test(name)) throw new ConfigError(`--${flag}: "${value}" is not a valid header name`);
  if (name.startsWith('x-envoy-')) throw new ConfigError(`--${flag}: Envoy refuses ext_proc mutations of x-envoy-* headers`);
  return name;
}
