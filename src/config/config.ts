import { parseArgs } from 'node:util';
import { parseStaticHosts, type StaticHost } from '../discovery/static.js';
import type { BodySendMode } from '../extproc/types.js';
import { hostProblem } from '../net-address.js';
import { ROUTING_LOGICS, type RoutingLogic } from '../scheduling/pickers.js';
import { DESTINATION_HEADER, HEADER_NAME, ROUTED_TO_HEADER } from '../wire-names.js';
import { ConfigError } from './errors.js';

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const BODY_MODES = ['NONE', 'STREAMED', 'BUFFERED', 'BUFFERED_PARTIAL', 'FULL_DUPLEX_STREAMED'] as const;

/** Everything llm-extproc is told at start, validated. */
export interface Config {
  host: string;
  port: number;
  adminHost: string;
  adminPort: number;
  serviceDiscovery: ServiceDiscovery;
  /** Set with --service-discovery=k8s. */
  k8s: KubernetesDiscoveryConfig | undefined;
  staticHosts: StaticHost[];
  staticModels: string | undefined;
  staticOwnedBy: string | undefined;
  routingLogic: RoutingLogic;
  routeConfig: string | undefined;
  schedulingConfig: string | undefined;
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
  healthyThreshold: number;
  modelsIntervalMs: number;
  /** Consecutive failed requests that eject an endpoint; 0 = passive health off. */
  passiveEjection: number;
  passiveEjectionMs: number;
  metricsIntervalMs: number;
  metricsStalenessMs: number;
  drainTimeoutMs: number;
  demo: boolean;
  // --- admin API ---
  /** --admin-token; --admin-token-file and LLM_EXTPROC_ADMIN_TOKEN are read at start (admin/auth.ts). */
  adminToken: string | undefined;
  adminTokenFile: string | undefined;
  adminInsecureWrites: boolean;
  /** Where admin-added mappings are kept across restarts; undefined = not kept. */
  stateFile: string | undefined;
}

export const SERVICE_DISCOVERIES = ['static', 'k8s'] as const;
export type ServiceDiscovery = (typeof SERVICE_DISCOVERIES)[number];

/** Which pods are backends, with --service-discovery=k8s. */
export interface KubernetesDiscoveryConfig {
  /** --k8s-namespace; undefined = the pod's own namespace (service account), else `default`. */
  namespace: string | undefined;
  labelSelector: string;
  /** The backend port: a number, or a named container port looked up in each pod. */
  port: { number: number } | { name: string };
}

const MiB = 1024 * 1024;

/**
 * A BUFFERED body reaches llm-extproc as ONE gRPC message: the body plus its protobuf framing and
 * whatever Envoy attaches (metadata_context, attributes). The gRPC limit keeps this much room above
 * --max-body-size so that a body of exactly --max-body-size gets our answer, not a grpc-js
 * RESOURCE_EXHAUSTED (which Envoy turns into a 500).
 */
const GRPC_HEADROOM_BYTES = MiB;
const DEFAULT_GRPC_MAX_RECEIVE_BYTES = 64 * MiB;

/** Inclusive bounds of a numeric flag (milliseconds for durations). */
interface Range {
  min: number;
  max: number;
}

// Node's timers hold at most 2^31-1 ms (a longer delay fires after 1 ms), so durations stay far below.
const HOUR_MS = 3_600_000;
/** Duration suffixes in ms (a bare number is seconds); declared before FLAGS, whose help text uses them. */
const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: HOUR_MS };
const PROBE_INTERVAL: Range = { min: 100, max: HOUR_MS };
const PROBE_TIMEOUT: Range = { min: 10, max: HOUR_MS };
const DRAIN_TIMEOUT: Range = { min: 0, max: HOUR_MS };
const UNHEALTHY_THRESHOLD: Range = { min: 1, max: 100 };
const HEALTHY_THRESHOLD: Range = { min: 1, max: 100 };
const MODELS_INTERVAL: Range = { min: 1000, max: 24 * HOUR_MS };
const PASSIVE_EJECTION: Range = { min: 0, max: 1000 };
const PASSIVE_EJECTION_TIME: Range = { min: 1000, max: HOUR_MS };
const METRICS_INTERVAL: Range = { min: 50, max: HOUR_MS };
const METRICS_STALENESS: Range = { min: 100, max: HOUR_MS };
const DEFAULT_K8S_PORT = '8000';

/** Flag name → [type, default, help]. The names of seed 004's router are kept as they are. */
const FLAGS = {
  port: ['string', '50051', 'gRPC port of the ext_proc service (0 = any free port)'],
  host: ['string', '0.0.0.0', 'address the gRPC server binds'],
  'admin-port': ['string', '8081', 'HTTP port for /health, /ready, /metrics (0 = any free port)'],
  'admin-host': ['string', '127.0.0.1', 'address the admin HTTP server binds (0.0.0.0 for kubelet probes and Prometheus from outside the pod)'],
  'service-discovery': ['string', 'static', `how backends are found: ${SERVICE_DISCOVERIES.join(' | ')}`],
  'static-hosts': ['string', undefined, 'comma-separated backends, host:port or http://host:port'],
  'static-models': [
    'string',
    undefined,
    'models per static host (comma-separated, one entry per host or one for all; ";" between several models of a host); skips the /v1/models probe',
  ],
  'static-owned-by': ['string', undefined, 'engine (owned_by) per static host, same layout as --static-models (default vllm)'],
  'k8s-namespace': ['string', undefined, "namespace of the backend pods (default: llm-extproc's own namespace, else default)"],
  'k8s-label-selector': ['string', 'llm-d.ai/role=decode', 'label selector of the backend pods'],
  'k8s-port': ['string', undefined, `backend port on each pod (default ${DEFAULT_K8S_PORT} unless --k8s-port-name is given)`],
  'k8s-port-name': ['string', undefined, 'named container port of the backend, looked up in each pod (instead of --k8s-port)'],
  'routing-logic': ['string', 'least_outstanding_requests', `picker: ${ROUTING_LOGICS.join(' | ')}`],
  'scheduling-config': [
    'string',
    undefined,
    'scheduling chain file (YAML or JSON): {filters, scorers, picker}; its picker replaces --routing-logic (docs/scheduling.md)',
  ],
  'route-config': ['string', undefined, 'routes file (JSON or YAML): [{name, path_prefix, model?, owned_by?}]'],
  'log-level': ['string', 'info', LOG_LEVELS.join(' | ')],
  'max-body-size': ['string', '32MiB', 'largest request body accepted (413 above)'],
  'grpc-max-receive-size': [
    'string',
    undefined,
    `largest gRPC message accepted from Envoy, at least --max-body-size + ${formatBytes(GRPC_HEADROOM_BYTES)} (default the larger of ${formatBytes(DEFAULT_GRPC_MAX_RECEIVE_BYTES)} and that)`,
  ],
  'destination-header': ['string', DESTINATION_HEADER, "header Envoy's ORIGINAL_DST cluster reads"],
  'routed-to-header': ['string', ROUTED_TO_HEADER, 'response header telling the caller which backend served it'],
  'request-body-mode': ['string', 'BUFFERED', 'request body mode assumed when Envoy sends no protocol_config (Envoy < 1.34)'],
  'response-body-mode': ['string', 'NONE', 'response body mode assumed when Envoy sends no protocol_config'],
  'probe-interval': ['string', '5s', `time between backend probes, ${rangeText(PROBE_INTERVAL)}`],
  'probe-timeout': ['string', '2s', `timeout of one probe, ${rangeText(PROBE_TIMEOUT)}, at most --probe-interval (left out: capped at it)`],
  'unhealthy-threshold': ['string', '2', `consecutive failed probes before a backend leaves rotation, ${UNHEALTHY_THRESHOLD.min}..${UNHEALTHY_THRESHOLD.max}`],
  'healthy-threshold': ['string', '1', `consecutive passed probes before a backend returns to rotation, ${HEALTHY_THRESHOLD.min}..${HEALTHY_THRESHOLD.max}`],
  'models-interval': ['string', '30s', `time between re-reads of each backend's /v1/models, ${rangeText(MODELS_INTERVAL)}`],
  'passive-ejection': [
    'string',
    '5',
    `consecutive failed requests (5xx, or no response) that eject a backend for a back-off, ${PASSIVE_EJECTION.min}..${PASSIVE_EJECTION.max} (0 = off)`,
  ],
  'passive-ejection-time': [
    'string',
    '30s',
    `how long the first passive ejection lasts (each further one doubles, up to 10x), ${rangeText(PASSIVE_EJECTION_TIME)}`,
  ],
  'metrics-interval': ['string', '1s', `time between scrapes of each backend's /metrics (engine load), ${rangeText(METRICS_INTERVAL)}`],
  'metrics-staleness': ['string', '5s', `engine figures older than this do not steer picks, ${rangeText(METRICS_STALENESS)}`],
  'drain-timeout': ['string', '25s', `on SIGTERM, SIGINT or SIGHUP, how long open streams may finish, ${rangeText(DRAIN_TIMEOUT)} (0 = exit at once)`],
  // --- admin API ---
  'admin-token': [
    'string',
    undefined,
    'bearer token the admin API writes (POST, DELETE) need; a flag shows in ps: prefer --admin-token-file or env LLM_EXTPROC_ADMIN_TOKEN',
  ],
  'admin-token-file': ['string', undefined, 'file holding the admin token (surrounding white space trimmed)'],
  'admin-insecure-writes': ['boolean', false, 'accept admin writes without a token when none is configured (else they answer 403)'],
  'state-file': ['string', undefined, 'JSON file where mappings added through the admin API survive restarts (written atomically)'],
  demo: ['boolean', false, 'start built-in simulated vLLM and SGLang backends and route to them'],
  help: ['boolean', false, 'print this help'],
} as const;

type FlagName = keyof typeof FLAGS;
/** parseArgs' values (defaults filled in) and the flags actually on the command line. */
interface Flags {
  values: Record<string, string | boolean | undefined>;
  given: ReadonlySet<string>;
}

export function usage(): string {
  const lines = Object.entries(FLAGS).map(([name, [type, fallback, help]]) => {
    const flag = type === 'boolean' ? `--${name}` : `--${name}=<value>`;
    return `  ${flag.padEnd(34)} ${help}${fallback !== undefined && type !== 'boolean' ? ` (default ${fallback})` : ''}`;
  });
  return `Usage: llm-extproc [flags]\n\n${lines.join('\n')}\n`;
}

/** Parses argv; `undefined` means --help was asked for. Every mistake is a ConfigError. */
export function parseConfig(argv: readonly string[]): Config | undefined {
  const { values, given: onCommandLine } = readFlags(argv);
  if (values.help) return undefined;
  const text = (name: FlagName) => values[name] as string;
  const given = (name: FlagName) => (onCommandLine.has(name) ? text(name) : undefined);

  const serviceDiscovery = oneOf('service-discovery', text('service-discovery'), SERVICE_DISCOVERIES);
  const demo = values.demo === true;
  const hostsFlag = given('static-hosts');
  if (demo && hostsFlag !== undefined) {
    throw new ConfigError('--static-hosts', 'cannot be used with --demo, which starts its own backends', 'drop --static-hosts or --demo');
  }
  const k8s = kubernetesDiscovery(serviceDiscovery, given);
  if (serviceDiscovery === 'k8s') {
    if (demo) throw new ConfigError('--demo', 'cannot be used with --service-discovery=k8s', 'drop --demo, or use --service-discovery=static');
    for (const flag of ['static-hosts', 'static-models', 'static-owned-by'] as const) {
      if (given(flag) !== undefined) {
        throw new ConfigError(`--${flag}`, 'applies to --service-discovery=static only', 'drop it: Kubernetes pods are found by --k8s-label-selector');
      }
    }
  } else if (!demo && hostsFlag === undefined) {
    throw new ConfigError(
      '--static-hosts',
      'is required with --service-discovery=static',
      'list the backends, e.g. --static-hosts=10.0.0.1:8000,10.0.0.2:8000, or run with --demo',
    );
  }
  const maxBodyBytes = parseBytes('max-body-size', text('max-body-size'));
  const metricsIntervalMs = parseDuration('metrics-interval', text('metrics-interval'), METRICS_INTERVAL);
  const metricsStalenessMs = parseDuration('metrics-staleness', text('metrics-staleness'), METRICS_STALENESS);
  if (metricsStalenessMs < metricsIntervalMs) {
    throw new ConfigError(
      onCommandLine.has('metrics-staleness') ? '--metrics-staleness' : '--metrics-interval',
      `--metrics-staleness (${text('metrics-staleness')}) is shorter than --metrics-interval (${text('metrics-interval')}): every figure would be stale`,
      'make --metrics-staleness at least --metrics-interval; a few intervals is usual',
    );
  }
  const probeIntervalMs = parseDuration('probe-interval', text('probe-interval'), PROBE_INTERVAL);
  const probeTimeoutMs = probeTimeout(given('probe-timeout'), probeIntervalMs, text('probe-interval'));
  return {
    host: listenHost('host', text('host')),
    port: parsePort('port', text('port')),
    adminHost: listenHost('admin-host', text('admin-host')),
    adminPort: parsePort('admin-port', text('admin-port')),
    serviceDiscovery,
    k8s,
    staticHosts: hostsFlag === undefined ? [] : parseStaticHosts(hostsFlag),
    staticModels: given('static-models'),
    staticOwnedBy: given('static-owned-by'),
    routingLogic: oneOf('routing-logic', text('routing-logic'), ROUTING_LOGICS),
    routeConfig: given('route-config'),
    schedulingConfig: given('scheduling-config'),
    logLevel: oneOf('log-level', text('log-level').toLowerCase(), LOG_LEVELS),
    maxBodyBytes,
    grpcMaxReceiveBytes: grpcReceiveLimit(maxBodyBytes, given('grpc-max-receive-size')),
    destinationHeader: headerName('destination-header', text('destination-header')),
    routedToHeader: headerName('routed-to-header', text('routed-to-header')),
    requestBodyMode: oneOf('request-body-mode', text('request-body-mode').toUpperCase(), BODY_MODES),
    responseBodyMode: oneOf('response-body-mode', text('response-body-mode').toUpperCase(), BODY_MODES),
    probeIntervalMs,
    probeTimeoutMs,
    unhealthyThreshold: parseCount('unhealthy-threshold', text('unhealthy-threshold'), UNHEALTHY_THRESHOLD),
    healthyThreshold: parseCount('healthy-threshold', text('healthy-threshold'), HEALTHY_THRESHOLD),
    modelsIntervalMs: parseDuration('models-interval', text('models-interval'), MODELS_INTERVAL),
    passiveEjection: parseCount('passive-ejection', text('passive-ejection'), PASSIVE_EJECTION),
    passiveEjectionMs: parseDuration('passive-ejection-time', text('passive-ejection-time'), PASSIVE_EJECTION_TIME),
    metricsIntervalMs,
    metricsStalenessMs,
    drainTimeoutMs: parseDuration('drain-timeout', text('drain-timeout'), DRAIN_TIMEOUT),
    demo,
    ...adminApi(given, values['admin-insecure-writes'] === true),
  };
}

const HELP_HINT = 'run llm-extproc --help to list the flags';

/**
 * parseArgs in its strict mode throws messages naming no flag in our format, so the tokens are
 * checked here: unknown flags, missing or empty values (an unset shell variable), stray arguments.
 */
function readFlags(argv: readonly string[]): Flags {
  const options = Object.fromEntries(
    Object.entries(FLAGS).map(([name, [type, fallback]]) => [name, fallback === undefined ? { type } : { type, default: fallback }]),
  ) as Record<string, { type: 'string' | 'boolean'; default?: string | boolean }>;
  const { values, tokens } = parseArgs({ args: [...argv], options, strict: false, allowPositionals: true, tokens: true });
  const given = new Set<string>();
  for (const token of tokens) {
    if (token.kind === 'positional') throw new ConfigError(`"${token.value}"`, 'is not a flag', `flags are written --name=value; ${HELP_HINT}`);
    if (token.kind !== 'option') continue;
    if (!Object.hasOwn(FLAGS, token.name)) throw new ConfigError(token.rawName, 'unknown flag', HELP_HINT);
    const [type] = FLAGS[token.name as FlagName];
    if (type === 'boolean') {
      if (token.value !== undefined) throw new ConfigError(token.rawName, `takes no value (got "${token.value}")`, `write ${token.rawName} alone`);
    } else if (token.value === undefined || (!token.inlineValue && token.value.startsWith('-'))) {
      throw new ConfigError(token.rawName, 'needs a value', `write ${token.rawName}=<value>; ${HELP_HINT}`);
    } else if (token.value.trim() === '') {
      throw new ConfigError(token.rawName, 'is empty', 'give it a value or leave the flag out; is a shell variable unset?');
    }
    given.add(token.name);
  }
  return { values, given };
}

/** The admin API's flags; the token's file and environment variable are read at start. */
function adminApi(
  given: (name: FlagName) => string | undefined,
  adminInsecureWrites: boolean,
): Pick<Config, 'adminToken' | 'adminTokenFile' | 'adminInsecureWrites' | 'stateFile'> {
  const adminToken = given('admin-token')?.trim();
  const adminTokenFile = given('admin-token-file');
  if (adminToken !== undefined && adminTokenFile !== undefined) {
    throw new ConfigError('--admin-token-file', 'cannot be used with --admin-token', 'give the token one way: the file, the flag or LLM_EXTPROC_ADMIN_TOKEN');
  }
  return { adminToken, adminTokenFile, adminInsecureWrites, stateFile: given('state-file') };
}

/** The --k8s-* flags: refused with static discovery, validated and defaulted with k8s. */
function kubernetesDiscovery(discovery: ServiceDiscovery, given: (name: FlagName) => string | undefined): KubernetesDiscoveryConfig | undefined {
  const k8sFlags = ['k8s-namespace', 'k8s-label-selector', 'k8s-port', 'k8s-port-name'] as const;
  if (discovery !== 'k8s') {
    const stray = k8sFlags.find((flag) => given(flag) !== undefined);
    if (stray) throw new ConfigError(`--${stray}`, 'applies to --service-discovery=k8s only', 'add --service-discovery=k8s or drop the flag');
    return undefined;
  }
  const namespace = given('k8s-namespace');
  if (namespace !== undefined && !/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(namespace)) {
    throw new ConfigError('--k8s-namespace', `"${namespace}" is not a Kubernetes namespace name`, 'lower-case letters, digits and "-", at most 63 characters');
  }
  const portNumber = given('k8s-port');
  const portName = given('k8s-port-name');
  if (portNumber !== undefined && portName !== undefined) {
    throw new ConfigError('--k8s-port-name', 'cannot be used with --k8s-port', 'give the port by number or by name, not both');
  }
  let port: KubernetesDiscoveryConfig['port'];
  if (portName !== undefined) {
    if (!/^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$/.test(portName) || !/[a-z]/.test(portName)) {
      throw new ConfigError(
        '--k8s-port-name',
        `"${portName}" is not a container port name`,
        'a port name has at most 15 lower-case letters, digits and "-", e.g. http',
      );
    }
    port = { name: portName };
  } else {
    const number = parsePort('k8s-port', portNumber ?? DEFAULT_K8S_PORT);
    if (number === 0) throw new ConfigError('--k8s-port', 'must not be 0', 'give the port the engines listen on, e.g. 8000');
    port = { number };
  }
  return { namespace, labelSelector: (given('k8s-label-selector') ?? FLAGS['k8s-label-selector'][1]).trim(), port };
}

function oneOf<T extends string>(flag: FlagName, value: string, allowed: readonly T[]): T {
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw new ConfigError(`--${flag}`, `"${value}" is not a choice`, `use one of ${allowed.join(', ')}`);
}

/** Ports are decimal digits only: `0x1f90`, `+80`, `80.0` and ` 80` are mistakes, not ports. */
function parsePort(flag: FlagName, value: string): number {
  const port = /^\d{1,5}$/.test(value) ? Number(value) : NaN;
  if (!(port <= 65535)) throw new ConfigError(`--${flag}`, `"${value}" is not a port number`, 'write decimal digits 0-65535; 0 = any free port');
  return port;
}

function listenHost(flag: FlagName, value: string): string {
  const problem = hostProblem(value);
  if (problem)
    throw new ConfigError(`--${flag}`, problem, 'give an IP address or host name of this machine, e.g. 0.0.0.0 for all IPv4 addresses, 127.0.0.1 or ::');
  return value;
}

function parseCount(flag: FlagName, value: string, range: Range): number {
  const count = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!(count >= range.min && count <= range.max)) {
    throw new ConfigError(
      `--${flag}`,
      `"${value}" is not a whole number in ${range.min}..${range.max}`,
      `write decimal digits, e.g. the default ${FLAGS[flag][1]}`,
    );
  }
  return count;
}

/** The gRPC message limit must hold the largest body plus its framing (GRPC_HEADROOM_BYTES). */
function grpcReceiveLimit(maxBodyBytes: number, flagValue: string | undefined): number {
  const least = maxBodyBytes + GRPC_HEADROOM_BYTES;
  if (flagValue === undefined) return Math.max(DEFAULT_GRPC_MAX_RECEIVE_BYTES, least);
  const bytes = parseBytes('grpc-max-receive-size', flagValue);
  if (bytes < least) {
    throw new ConfigError(
      '--grpc-max-receive-size',
      `${flagValue} is below --max-body-size + ${formatBytes(GRPC_HEADROOM_BYTES)}: a BUFFERED body arrives as one gRPC message, framing included`,
      `set at least ${formatBytes(least)}, or leave it out: the default fits --max-body-size`,
    );
  }
  return bytes;
}

/** A probe ends before the next one starts; left out, the timeout shrinks to a short interval. */
function probeTimeout(flagValue: string | undefined, intervalMs: number, intervalText: string): number {
  const timeoutMs = parseDuration('probe-timeout', flagValue ?? FLAGS['probe-timeout'][1], PROBE_TIMEOUT);
  if (flagValue === undefined) return Math.min(timeoutMs, intervalMs);
  if (timeoutMs > intervalMs) {
    throw new ConfigError(
      '--probe-timeout',
      `${flagValue} is longer than --probe-interval (${intervalText})`,
      'a probe must end before the next one starts: shorten --probe-timeout or lengthen --probe-interval',
    );
  }
  return timeoutMs;
}

const BYTE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1000,
  kb: 1000,
  ki: 1024,
  kib: 1024,
  m: 1e6,
  mb: 1e6,
  mi: MiB,
  mib: MiB,
  g: 1e9,
  gb: 1e9,
  gi: 1024 * MiB,
  gib: 1024 * MiB,
};

/** `33554432`, `32MiB`, `32Mi`, `10MB`. */
function parseBytes(flag: FlagName, value: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(value.trim());
  const unit = match ? BYTE_UNITS[match[2]!.toLowerCase()] : undefined;
  if (!match || unit === undefined) throw new ConfigError(`--${flag}`, `"${value}" is not a size`, 'write bytes or a size like 32MiB, 10MB or 512KiB');
  const bytes = Math.floor(Number(match[1]) * unit);
  if (bytes < 1) throw new ConfigError(`--${flag}`, `"${value}" is less than 1 byte`, 'write a size like 32MiB');
  return bytes;
}

/** `33MiB` when whole, else bytes. */
function formatBytes(bytes: number): string {
  return bytes % MiB === 0 ? `${bytes / MiB}MiB` : `${bytes} bytes`;
}

/** `500ms`, `5s`, `2m`, `1h`; a bare number is seconds. */
function parseDuration(flag: FlagName, value: string, range: Range): number {
  const ms = durationMs(value);
  if (ms === undefined)
    throw new ConfigError(`--${flag}`, `"${value}" is not a duration`, `write e.g. 500ms, 5s, 2m or 1h, within ${rangeText(range)}; a bare number is seconds`);
  if (ms < range.min || ms > range.max) throw new ConfigError(`--${flag}`, `${value} is outside ${rangeText(range)}`, `e.g. the default ${FLAGS[flag][1]}`);
  return ms;
}

/** `500ms`, `5s`, `2m`, `1h` or a bare number of seconds → milliseconds; undefined when it is none of these. */
export function durationMs(text: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(text.trim());
  return match ? Number(match[1]) * DURATION_UNITS[match[2] ?? 's']! : undefined;
}

function rangeText(range: Range): string {
  return `${formatDuration(range.min)}..${formatDuration(range.max)}`;
}

/** The largest unit that writes `ms` whole: 3600000 → `1h`, 100 → `100ms`, 0 → `0s`. */
function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  const [unit, size] = Object.entries(DURATION_UNITS)
    .sort((a, b) => b[1] - a[1])
    .find(([, size]) => ms % size === 0)!;
  return `${ms / size}${unit}`;
}

function headerName(flag: FlagName, value: string): string {
  const name = value.trim().toLowerCase();
  const hint = `e.g. the default ${FLAGS[flag][1]}`;
  if (!HEADER_NAME.test(name)) throw new ConfigError(`--${flag}`, `"${value}" is not a valid header name`, hint);
  if (name.startsWith('x-envoy-')) throw new ConfigError(`--${flag}`, `"${value}": Envoy refuses ext_proc mutations of x-envoy-* headers`, hint);
  return name;
}
