import { parseArgs } from 'node:util';
import { parseStaticHosts, type StaticHost } from '../discovery/static.js';
import type { BodySendMode } from '../extproc/types.js';
import { hostProblem } from '../net-address.js';
import { type BucketSettings, type RateLimits, TENANT_HEADER } from '../protection/rate-limit.js';
import { type InputLimits, MAX_NAME_LIMIT_BYTES } from '../request/limits.js';
import { ROUTING_LOGICS, type RoutingLogic } from '../scheduling/pickers.js';
import type { TlsFiles } from '../tls/material.js';
import { DESTINATION_HEADER, HEADER_NAME, ROUTED_TO_HEADER } from '../wire-names.js';
import { ConfigError } from './errors.js';
import { envName, type FileSettings, readConfigFile, readEnv, type SettingShapes, type SettingValue } from './sources.js';

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
  // --- protection ---
  /** Open ext_proc streams beyond which new ones are shed; 0 = no limit. */
  maxOpenStreams: number;
  inputLimits: InputLimits;
  rateLimits: RateLimits;
  /** --config: the YAML file the settings were read from (watched for changes). */
  configFile: string | undefined;
  /** The config file's scheduling: section; --scheduling-config, when given, wins. */
  schedulingSection: { document: unknown; source: string } | undefined;
  printConfig: boolean;
  /** Not mistakes, but worth a log line at start (e.g. an LLM_EXTPROC_* variable that names no setting). */
  warnings: string[];
  // --- admin API ---
  /** --admin-token; --admin-token-file and LLM_EXTPROC_ADMIN_TOKEN are read at start (admin/auth.ts). */
  adminToken: string | undefined;
  adminTokenFile: string | undefined;
  adminInsecureWrites: boolean;
  /** Where admin-added mappings are kept across restarts; undefined = not kept. */
  stateFile: string | undefined;
  // --- TLS ---
  /** The gRPC port's certificate (and client CA for mTLS); plaintext when undefined. */
  tls: TlsFiles | undefined;
  /** The admin port's certificate; plain HTTP when undefined. */
  adminTls: TlsFiles | undefined;
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
const MAX_OPEN_STREAMS: Range = { min: 0, max: 10_000_000 };
const MAX_HEADER_COUNT: Range = { min: 1, max: 10_000 };
const MAX_NAME_LENGTH: Range = { min: 1, max: MAX_NAME_LIMIT_BYTES };
/** Requests a second of a --rate-limit-* flag, and its burst. */
const RATE: Range = { min: 0, max: 1_000_000 };

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
  // --- protection ---
  'max-open-streams': ['string', '10000', 'open ext_proc streams beyond which a new one is ended with RESOURCE_EXHAUSTED (0 = no limit)'],
  'max-header-count': ['string', '100', `most request headers accepted, pseudo-headers included, ${MAX_HEADER_COUNT.min}..${MAX_HEADER_COUNT.max} (431 above)`],
  'max-header-bytes': ['string', '64KiB', 'largest total size of request header names and values (431 above)'],
  'max-query-length': ['string', '8KiB', 'longest query string accepted, in bytes (414 above)'],
  'max-model-name-length': ['string', '256', `longest model name accepted, in bytes, ${MAX_NAME_LENGTH.min}..${MAX_NAME_LENGTH.max} (400 above)`],
  'max-owned-by-length': ['string', '128', `longest engine selector (owned_by) accepted, in bytes, ${MAX_NAME_LENGTH.min}..${MAX_NAME_LENGTH.max} (400 above)`],
  'rate-limit-model': ['string', undefined, 'requests a second per model, <rate>[/<burst>], e.g. 50/100 (burst default max(1, rate)); 429 above'],
  'rate-limit-owned-by': ['string', undefined, 'requests a second per engine a request selects (owned_by), <rate>[/<burst>]; 429 above'],
  'rate-limit-tenant': ['string', undefined, 'requests a second per value of --tenant-header, <rate>[/<burst>]; 429 above'],
  'tenant-header': ['string', TENANT_HEADER, 'request header naming the tenant of --rate-limit-tenant (requests without it are not tenant-limited)'],
  // --- admin API ---
  'admin-token': [
    'string',
    undefined,
    'bearer token the admin API writes (POST, DELETE) need; a flag shows in ps: prefer --admin-token-file or env LLM_EXTPROC_ADMIN_TOKEN',
  ],
  'admin-token-file': ['string', undefined, 'file holding the admin token (surrounding white space trimmed)'],
  'admin-insecure-writes': ['boolean', false, 'accept admin writes without a token when none is configured (else they answer 403)'],
  'state-file': ['string', undefined, 'JSON file where mappings added through the admin API survive restarts (written atomically)'],
  // --- TLS ---
  'tls-cert': ['string', undefined, 'PEM certificate (chain) of the gRPC port: ext_proc over TLS; reloaded when the file changes'],
  'tls-key': ['string', undefined, 'PEM private key of --tls-cert'],
  'tls-client-ca': ['string', undefined, 'PEM CA certificate(s): the gRPC port requires a client certificate issued by them (mTLS with Envoy)'],
  'admin-tls-cert': ['string', undefined, 'PEM certificate (chain) of the admin port: HTTPS; reloaded when the file changes'],
  'admin-tls-key': ['string', undefined, 'PEM private key of --admin-tls-cert'],
  demo: ['boolean', false, 'start built-in simulated vLLM and SGLang backends and route to them'],
  config: [
    'string',
    undefined,
    `YAML config file: every setting below by name (without --), plus a scheduling: chain; watched and reloaded (docs/configuration.md)`,
  ],
  'print-config': ['boolean', false, 'print the effective configuration as config-file YAML, each value with its origin, and exit'],
  help: ['boolean', false, 'print this help'],
} as const;

type FlagName = keyof typeof FLAGS;

/** Settings of the command line only: neither a config-file key nor (except --config) an env var. */
const FLAG_ONLY: ReadonlySet<FlagName> = new Set(['config', 'print-config', 'help']);
/**
 * Settings a config reload applies while running (in-flight requests keep their state); a change to
 * any other setting is logged as needing a restart, and the running value stays.
 */
export const LIVE_SETTINGS: ReadonlySet<string> = new Set<FlagName>([
  'log-level',
  'routing-logic',
  'probe-interval',
  'probe-timeout',
  'unhealthy-threshold',
  'healthy-threshold',
  'models-interval',
  'passive-ejection',
  'passive-ejection-time',
  'metrics-interval',
  'metrics-staleness',
  'max-header-count',
  'max-header-bytes',
  'max-query-length',
  'max-model-name-length',
  'max-owned-by-length',
  'rate-limit-model',
  'rate-limit-owned-by',
  'rate-limit-tenant',
  'tenant-header',
]);

/** How a value is written, for the JSON Schema and docs/configuration.md. */
export type ValueKind = 'text' | 'boolean' | 'duration' | 'size' | 'count' | 'port' | 'list' | readonly string[];
const VALUE_KINDS: Partial<Record<FlagName, ValueKind>> = {
  port: 'port',
  'admin-port': 'port',
  'k8s-port': 'port',
  'service-discovery': SERVICE_DISCOVERIES,
  'static-hosts': 'list',
  'static-models': 'list',
  'static-owned-by': 'list',
  'routing-logic': ROUTING_LOGICS,
  'log-level': LOG_LEVELS,
  'max-body-size': 'size',
  'grpc-max-receive-size': 'size',
  'request-body-mode': BODY_MODES,
  'response-body-mode': BODY_MODES,
  'probe-interval': 'duration',
  'probe-timeout': 'duration',
  'unhealthy-threshold': 'count',
  'healthy-threshold': 'count',
  'models-interval': 'duration',
  'passive-ejection': 'count',
  'passive-ejection-time': 'duration',
  'metrics-interval': 'duration',
  'metrics-staleness': 'duration',
  'drain-timeout': 'duration',
  'max-open-streams': 'count',
  'max-header-count': 'count',
  'max-header-bytes': 'size',
  'max-query-length': 'size',
  'max-model-name-length': 'count',
  'max-owned-by-length': 'count',
};

/** One setting as the docs and the JSON Schema describe it. */
export interface SettingDoc {
  name: string;
  /** Its LLM_EXTPROC_* variable; undefined for command-line-only flags. */
  env: string | undefined;
  /** Whether the config file may set it. */
  fileKey: boolean;
  kind: ValueKind;
  default: string | boolean | undefined;
  help: string;
  live: boolean;
}

/** The settings table as data: the one source of --help, the JSON Schema and docs/configuration.md. */
export function settingDocs(): SettingDoc[] {
  return (Object.entries(FLAGS) as [FlagName, (typeof FLAGS)[FlagName]][]).map(([name, [type, fallback, help]]) => ({
    name,
    env: FLAG_ONLY.has(name) && name !== 'config' ? undefined : envName(name),
    fileKey: FILE_KEYS.has(name),
    kind: type === 'boolean' ? 'boolean' : (VALUE_KINDS[name] ?? 'text'),
    default: fallback,
    help,
    live: LIVE_SETTINGS.has(name),
  }));
}

/** Settings whose file value may be a YAML list. */
const LIST_SETTINGS: ReadonlySet<FlagName> = new Set(['static-hosts', 'static-models', 'static-owned-by']);

const SHAPES: SettingShapes = Object.fromEntries(Object.entries(FLAGS).map(([name, [kind]]) => [name, { kind, list: LIST_SETTINGS.has(name as FlagName) }]));
const FILE_KEYS: ReadonlySet<string> = new Set(Object.keys(FLAGS).filter((name) => !FLAG_ONLY.has(name as FlagName)));

/** Every setting's value after flags > env > file > default, and where it came from. */
export interface EffectiveSettings {
  values: Map<FlagName, SettingValue>;
  /** The config file's scheduling: section. */
  scheduling: FileSettings['scheduling'];
  configFile: string | undefined;
  /** `LLM_EXTPROC_*` variables that name no setting. */
  unknownEnv: string[];
}

export function usage(): string {
  const lines = Object.entries(FLAGS).map(([name, [type, fallback, help]]) => {
    const flag = type === 'boolean' ? `--${name}` : `--${name}=<value>`;
    return `  ${flag.padEnd(34)} ${help}${fallback !== undefined && type !== 'boolean' ? ` (default ${fallback})` : ''}`;
  });
  const footer = [
    'Every flag is also an env var LLM_EXTPROC_<NAME> (e.g. LLM_EXTPROC_PROBE_INTERVAL) and, except --config,',
    '--print-config and --help, a key of the --config file; flags win over env vars, env vars over the file.',
    'Reference, reload behaviour and the JSON Schema: docs/configuration.md',
  ];
  return `Usage: llm-extproc [flags]\n\n${lines.join('\n')}\n\n${footer.join('\n')}\n`;
}

/**
 * Parses argv, then the env and the config file; `undefined` means --help was asked for. Every
 * mistake is a ConfigError naming where it was made (flag, env var or file key).
 */
export function parseConfig(argv: readonly string[], env: Readonly<Record<string, string | undefined>> = process.env): Config | undefined {
  return readConfiguration(argv, env)?.config;
}

/** parseConfig, with the settings the Config was validated from (--print-config and reloads start from them). */
export function readConfiguration(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>> = process.env,
): { config: Config; settings: EffectiveSettings } | undefined {
  const settings = effectiveSettings(argv, env);
  if (settings.values.get('help')?.value === true) return undefined;
  return { config: validateSettings(settings), settings };
}

/** Validates settings read by effectiveSettings into a Config (a ConfigError names where a value came from). */
export function validateSettings(settings: EffectiveSettings): Config {
  try {
    return validate(settings);
  } catch (err) {
    throw relocated(err, settings.values);
  }
}

/**
 * The validators below name the flag (`--probe-interval`); a value that came from the env or the
 * file is reported there instead, so the operator edits the right place.
 */
function relocated(err: unknown, values: ReadonlyMap<FlagName, SettingValue>): unknown {
  if (!(err instanceof ConfigError) || !err.flag.startsWith('--')) return err;
  const origin = values.get(err.flag.slice(2) as FlagName)?.origin;
  return origin === undefined || origin === err.flag ? err : new ConfigError(origin, err.message, err.hint);
}

function validate(settings: EffectiveSettings): Config {
  const given = (name: FlagName) => settings.values.get(name)?.value as string | undefined;
  const text = (name: FlagName) => (given(name) ?? defaultOf(name)) as string;
  const isSet = (name: FlagName) => settings.values.has(name);
  const origin = (name: FlagName) => settings.values.get(name)?.origin ?? `--${name}`;
  const flag = (name: FlagName) => settings.values.get(name)?.value === true;

  const serviceDiscovery = oneOf('service-discovery', text('service-discovery'), SERVICE_DISCOVERIES);
  const demo = flag('demo');
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
      isSet('metrics-staleness') ? '--metrics-staleness' : '--metrics-interval',
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
    maxOpenStreams: parseCount('max-open-streams', text('max-open-streams'), MAX_OPEN_STREAMS),
    inputLimits: {
      maxHeaderCount: parseCount('max-header-count', text('max-header-count'), MAX_HEADER_COUNT),
      maxHeaderBytes: parseBytes('max-header-bytes', text('max-header-bytes')),
      maxQueryBytes: parseBytes('max-query-length', text('max-query-length')),
      maxModelBytes: parseCount('max-model-name-length', text('max-model-name-length'), MAX_NAME_LENGTH),
      maxOwnedByBytes: parseCount('max-owned-by-length', text('max-owned-by-length'), MAX_NAME_LENGTH),
    },
    rateLimits: rateLimits(given),
    configFile: settings.configFile,
    schedulingSection: settings.scheduling,
    printConfig: flag('print-config'),
    warnings: settings.unknownEnv.map((variable) => `${variable} is not a setting: ignored (settings: docs/configuration.md)`),
    ...adminApi(given, flag('admin-insecure-writes')),
    tls: tlsFiles(given, origin, 'tls-cert', 'tls-key', 'tls-client-ca'),
    adminTls: tlsFiles(given, origin, 'admin-tls-cert', 'admin-tls-key'),
  };
}

/** The --rate-limit-* flags, each optional, and --tenant-header (which needs --rate-limit-tenant). */
function rateLimits(given: (name: FlagName) => string | undefined): RateLimits {
  const tenant = given('rate-limit-tenant');
  const header = given('tenant-header');
  if (header !== undefined && tenant === undefined) {
    throw new ConfigError('--tenant-header', 'applies to --rate-limit-tenant only', 'add --rate-limit-tenant=<rate>[/<burst>] or drop the flag');
  }
  const limits: RateLimits = { tenantHeader: header === undefined ? TENANT_HEADER : requestHeaderName('tenant-header', header) };
  const model = given('rate-limit-model');
  const ownedBy = given('rate-limit-owned-by');
  if (model !== undefined) limits.model = parseRate('rate-limit-model', model);
  if (ownedBy !== undefined) limits.owned_by = parseRate('rate-limit-owned-by', ownedBy);
  if (tenant !== undefined) limits.tenant = parseRate('rate-limit-tenant', tenant);
  return limits;
}

/** `50` (burst 50), `0.5` (burst 1), `50/100`: a positive rate a second, and a whole burst of at least 1. */
function parseRate(flag: FlagName, value: string): BucketSettings {
  const match = /^(\d+(?:\.\d+)?)(?:\/(\d+))?$/.exec(value.trim());
  const hint = `write <requests a second>[/<burst>], e.g. 50/100 or 0.5, rate and burst at most ${RATE.max}; leave the flag out for no limit`;
  if (!match) throw new ConfigError(`--${flag}`, `"${value}" is not a rate`, hint);
  const rate = Number(match[1]);
  if (!(rate > RATE.min && rate <= RATE.max)) throw new ConfigError(`--${flag}`, `the rate of "${value}" is not above 0 and at most ${RATE.max}`, hint);
  const burst = match[2] === undefined ? Math.max(1, rate) : Number(match[2]);
  if (!(burst >= 1 && burst <= RATE.max)) throw new ConfigError(`--${flag}`, `the burst of "${value}" is not 1..${RATE.max}`, hint);
  return { rate, burst };
}

const HELP_HINT = 'run llm-extproc --help to list the flags';

/**
 * parseArgs in its strict mode throws messages naming no flag in our format, so the tokens are
 * checked here: unknown flags, missing or empty values (an unset shell variable), stray arguments.
 */
function readFlags(argv: readonly string[]): Map<FlagName, SettingValue> {
  const options = Object.fromEntries(Object.entries(FLAGS).map(([name, [type]]) => [name, { type }])) as Record<string, { type: 'string' | 'boolean' }>;
  const { values, tokens } = parseArgs({ args: [...argv], options, strict: false, allowPositionals: true, tokens: true });
  const given = new Map<FlagName, SettingValue>();
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
    given.set(token.name as FlagName, { value: values[token.name]!, origin: token.rawName });
  }
  return given;
}

/** Reads the command line, then the env and the file it names, into one value per setting. */
export function effectiveSettings(argv: readonly string[], env: Readonly<Record<string, string | undefined>> = process.env): EffectiveSettings {
  const flags = readFlags(argv);
  if (flags.has('help')) return { values: flags, scheduling: undefined, configFile: undefined, unknownEnv: [] };
  const fromEnv = readEnv(env, SHAPES);
  const configFile = (flags.get('config') ?? fromEnv.values.get('config'))?.value as string | undefined;
  const file = configFile === undefined ? undefined : readConfigFile(configFile, SHAPES, FILE_KEYS);
  const values = new Map<FlagName, SettingValue>();
  for (const name of Object.keys(FLAGS) as FlagName[]) {
    const value = flags.get(name) ?? (FLAG_ONLY.has(name) && name !== 'config' ? undefined : (fromEnv.values.get(name) ?? file?.values.get(name)));
    if (value) values.set(name, value);
  }
  return { values, scheduling: file?.scheduling, configFile, unknownEnv: fromEnv.unknown };
}

/** The value a setting has when nothing sets it. */
function defaultOf(name: FlagName): string | boolean | undefined {
  return FLAGS[name][1];
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

/**
 * A certificate needs its key and the reverse; a client CA needs both. The files are read at start
 * (src/tls/material.ts), whose errors name where each path was set (`origin`).
 */
function tlsFiles(
  given: (name: FlagName) => string | undefined,
  origin: (name: FlagName) => string,
  cert: FlagName,
  key: FlagName,
  clientCa?: FlagName,
): TlsFiles | undefined {
  const [certPath, keyPath, caPath] = [given(cert), given(key), clientCa && given(clientCa)];
  if (certPath === undefined && keyPath === undefined) {
    if (caPath !== undefined)
      throw new ConfigError(`--${clientCa}`, `needs --${cert} and --${key}`, `give the port's certificate and key too, or drop --${clientCa}`);
    return undefined;
  }
  if (certPath === undefined) throw new ConfigError(`--${key}`, `needs --${cert}`, `give the certificate file of the key, or drop --${key}`);
  if (keyPath === undefined) throw new ConfigError(`--${cert}`, `needs --${key}`, `give the private key file of the certificate, or drop --${cert}`);
  return {
    cert: { path: certPath, flag: origin(cert) },
    key: { path: keyPath, flag: origin(key) },
    clientCa: caPath === undefined || clientCa === undefined ? undefined : { path: caPath, flag: origin(clientCa) },
  };
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

/** A header llm-extproc only reads: any valid name, lower-cased as Envoy sends it. */
function requestHeaderName(flag: FlagName, value: string): string {
  const name = value.trim().toLowerCase();
  if (!HEADER_NAME.test(name)) throw new ConfigError(`--${flag}`, `"${value}" is not a valid header name`, `e.g. the default ${FLAGS[flag][1]}`);
  return name;
}

/** A header llm-extproc sets: Envoy refuses ext_proc mutations of x-envoy-* ones. */
function headerName(flag: FlagName, value: string): string {
  const name = requestHeaderName(flag, value);
  if (name.startsWith('x-envoy-')) {
    throw new ConfigError(`--${flag}`, `"${value}": Envoy refuses ext_proc mutations of x-envoy-* headers`, `e.g. the default ${FLAGS[flag][1]}`);
  }
  return name;
}

/** One row of --print-config: a setting's effective value and where it came from. */
export interface SettingRow {
  name: string;
  value: string | boolean | undefined;
  /** `default`, or the flag, env var or file key that set it. */
  origin: string;
}

/** Settings whose value is never printed or logged (--print-config, reload messages). */
export const SECRET_SETTINGS: ReadonlySet<string> = new Set<FlagName>(['admin-token']);

/** Every file-settable setting with its effective value (secrets redacted), in --help's order. */
export function settingRows(settings: EffectiveSettings, { redact = false } = {}): SettingRow[] {
  return [...FILE_KEYS].map((name) => {
    const set = settings.values.get(name as FlagName);
    const value = set && redact && SECRET_SETTINGS.has(name) ? '<redacted>' : (set?.value ?? defaultOf(name as FlagName));
    return { name, value, origin: set?.origin ?? 'default' };
  });
}
