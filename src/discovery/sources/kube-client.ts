import { existsSync, readFileSync } from 'node:fs';
import { isIPv6 } from 'node:net';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import { ApiException, type ConfigurationOptions, KubeConfig, Observable, type ObservableMiddleware } from '@kubernetes/client-node';
import { Counter, type Registry } from 'prom-client';
import { ConfigError } from '../../config/errors.js';

/**
 * What the Kubernetes sources share: finding and checking the client configuration, the namespace,
 * the wording of failures (one actionable line at start-up, a short detail in logs) and the metrics.
 */

/** Where the service account's files are mounted in a pod (client-node's in-cluster paths). */
export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** Where the process looks for its configuration; the real machine unless a test says otherwise. */
export interface KubeEnvironment {
  env: Record<string, string | undefined>;
  /** The home directory whose .kube/config is read; undefined = none. */
  home: string | undefined;
  /** Prefixed to the service account paths (client-node's `pathPrefix`); '' on a real machine. */
  root: string;
}

export function realEnvironment(): KubeEnvironment {
  return { env: process.env, home: homedir() || undefined, root: '' };
}

/** A checked client configuration and how to talk about where it came from. */
export interface KubeConnection {
  kubeConfig: KubeConfig;
  /** The API server's URL, for messages. */
  server: string;
  /** `in-cluster`: the pod's service account; `kubeconfig`: a file; `given`: a KubeConfig passed in. */
  origin: 'in-cluster' | 'kubeconfig' | 'given';
  /** For messages: `the pod's service account`, `kube config /home/me/.kube/config (context kind-dev, user admin)`. */
  describe: string;
}

/**
 * The client configuration: `given` if passed; else the file(s) KUBECONFIG names when set; else the
 * pod's service account when running in a pod; else ~/.kube/config. Throws a ConfigError when there
 * is none, or it cannot be used.
 */
export function loadKubeConnection(given: KubeConfig | undefined, environment: KubeEnvironment = realEnvironment()): KubeConnection {
  if (given) return checked(given, 'given', 'the given KubeConfig');
  const { env, home, root } = environment;
  const files = (env.KUBECONFIG ?? '').split(delimiter).filter(Boolean);
  if (files.length > 0) return checked(fromFiles(files, 'KUBECONFIG'), 'kubeconfig', describeFiles(files));
  const token = `${root}${SERVICE_ACCOUNT_DIR}/token`;
  if (existsSync(token)) {
    if (!env.KUBERNETES_SERVICE_HOST || !env.KUBERNETES_SERVICE_PORT) {
      throw new ConfigError(
        '--service-discovery',
        `k8s: a service account token is mounted (${token}) but KUBERNETES_SERVICE_HOST / KUBERNETES_SERVICE_PORT are not set, so the API server is unknown`,
        'run in a pod whose environment Kubernetes sets up (enableServiceLinks is not needed for these two), or set KUBECONFIG',
      );
    }
    return checked(inCluster(env.KUBERNETES_SERVICE_HOST, env.KUBERNETES_SERVICE_PORT, root), 'in-cluster', "the pod's service account");
  }
  const file = home ? join(home, '.kube', 'config') : undefined;
  if (file && existsSync(file)) return checked(fromFiles([file], '--service-discovery'), 'kubeconfig', describeFiles([file]));
  throw new ConfigError(
    '--service-discovery',
    `k8s: found no Kubernetes configuration: not in a pod (no service account token at ${token}), KUBECONFIG is not set and ${file ?? '~/.kube/config'} does not exist`,
    'run llm-extproc in a pod with a service account (see k8s/rbac.yaml), or set KUBECONFIG to a kube config file',
  );
}

/**
 * What client-node's loadFromCluster builds, from the given environment rather than process.env:
 * the service account's CA and token (a tokenFile provider, which re-reads the rotated token).
 */
function inCluster(host: string, port: string, root: string): KubeConfig {
  const scheme = port === '80' || port === '8080' || port === '8001' ? 'http' : 'https';
  const kc = new KubeConfig();
  // The context names no namespace: every call passes one (resolveNamespace reads the service account's).
  kc.loadFromOptions({
    clusters: [
      {
        name: 'inCluster',
        server: `${scheme}://${isIPv6(host) ? `[${host}]` : host}:${port}`,
        caFile: `${root}${SERVICE_ACCOUNT_DIR}/ca.crt`,
        skipTLSVerify: false,
      },
    ],
    users: [{ name: 'inClusterUser', authProvider: { name: 'tokenFile', config: { tokenFile: `${root}${SERVICE_ACCOUNT_DIR}/token` } } }],
    contexts: [{ name: 'inClusterContext', cluster: 'inCluster', user: 'inClusterUser' }],
    currentContext: 'inClusterContext',
  });
  return kc;
}

function fromFiles(files: string[], flag: string): KubeConfig {
  const kc = new KubeConfig();
  files.forEach((file, index) => {
    try {
      if (index === 0) kc.loadFromFile(file);
      else {
        const more = new KubeConfig();
        more.loadFromFile(file);
        kc.mergeConfig(more, true);
      }
    } catch (err) {
      throw new ConfigError(
        flag,
        `k8s: cannot use the kube config ${file}: ${errorText(err)}`,
        'point KUBECONFIG at a readable kube config file (kubectl config view checks it)',
      );
    }
  });
  return kc;
}

function describeFiles(files: string[]): string {
  return `kube config ${files.join(delimiter)}`;
}

function checked(kc: KubeConfig, origin: KubeConnection['origin'], where: string): KubeConnection {
  const context = kc.getCurrentContext();
  const cluster = kc.getCurrentCluster();
  if (!cluster?.server) {
    throw new ConfigError(
      origin === 'kubeconfig' ? 'KUBECONFIG' : '--service-discovery',
      `k8s: ${where} has no usable current context (current-context: ${context ? `"${context}"` : 'none'}, or its cluster has no server)`,
      'select a context whose cluster has a server: kubectl config use-context NAME',
    );
  }
  // client-node refuses plain HTTP unless TLS verification is off for the cluster (and says so only on the first request).
  if (cluster.server.startsWith('http:') && !cluster.skipTLSVerify && !cluster.proxyUrl) {
    throw new ConfigError(
      origin === 'kubeconfig' ? 'KUBECONFIG' : '--service-discovery',
      `k8s: the cluster "${cluster.name}" of ${where} uses plain HTTP (${cluster.server}), which the Kubernetes client refuses unless insecure-skip-tls-verify is set`,
      'use the https:// address of the API server, or set insecure-skip-tls-verify: true on that cluster (kubectl proxy, local test servers)',
    );
  }
  const user = kc.getCurrentUser();
  const detail = origin === 'kubeconfig' ? ` (context ${context}, user ${user?.name ?? 'none'})` : '';
  return { kubeConfig: kc, server: cluster.server, origin, describe: `${where}${detail}` };
}

/** Where a namespace came from, for messages. */
export interface ResolvedNamespace {
  namespace: string;
  origin: 'flag' | 'service account' | 'default';
}

/** --k8s-namespace, else the namespace llm-extproc's own pod runs in (service account), else `default`. */
export function resolveNamespace(flag: string | undefined, environment: KubeEnvironment = realEnvironment()): ResolvedNamespace {
  if (flag) return { namespace: flag, origin: 'flag' };
  try {
    const own = readFileSync(`${environment.root}${SERVICE_ACCOUNT_DIR}/namespace`, 'utf8').trim();
    if (own) return { namespace: own, origin: 'service account' };
  } catch {
    // not in a pod
  }
  return { namespace: 'default', origin: 'default' };
}

// --- failures ----------------------------------------------------------------------------------

/** What a failed list or watch means; `transient` ones are retried at start-up, all are retried later. */
export interface KubeFailure {
  kind: FailureKind;
  /** The HTTP status, when the server answered. */
  status: number | undefined;
  /** Short, one line: `403 Forbidden: pods is forbidden: User "..." cannot list ...`, `connect ECONNREFUSED 10.0.0.1:443`. */
  detail: string;
  transient: boolean;
}

/** Bounded: these are metric label values. */
export const FAILURE_KINDS = [
  'unreachable',
  'tls',
  'unauthorized',
  'forbidden',
  'bad_request',
  'not_found',
  'expired',
  'server_error',
  'malformed',
  'other',
] as const;
export type FailureKind = (typeof FAILURE_KINDS)[number];

const TLS_CODES = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|ERR_SSL|EPROTO/;

/** An answer that is not what the API server sends (a list without items: a proxy's page, another service). */
export class MalformedAnswer extends Error {
  override readonly name = 'MalformedAnswer';
}

/** Sorts an error from the generated client, the watch or undici into a KubeFailure. */
export function classifyFailure(err: unknown): KubeFailure {
  if (err instanceof MalformedAnswer) return { kind: 'malformed', status: undefined, detail: err.message, transient: true };
  const status = statusOf(err);
  if (status !== undefined) {
    const detail = `${status}${STATUS_TEXT[status] ? ` ${STATUS_TEXT[status]}` : ''}${serverMessage(err)}`;
    if (status === 401) return { kind: 'unauthorized', status, detail, transient: false };
    if (status === 403) return { kind: 'forbidden', status, detail, transient: false };
    if (status === 400) return { kind: 'bad_request', status, detail, transient: false };
    if (status === 404) return { kind: 'not_found', status, detail, transient: false };
    if (status === 410) return { kind: 'expired', status, detail, transient: true };
    if (status === 429 || status >= 500) return { kind: 'server_error', status, detail, transient: true };
    return { kind: 'other', status, detail, transient: false };
  }
  const code = causeCode(err);
  const detail = errorText(err);
  if (code && TLS_CODES.test(code)) return { kind: 'tls', status: undefined, detail, transient: false };
  if (err instanceof SyntaxError || /mediaType|not supported by ObjectSerializer|Unexpected token|JSON/.test(detail)) {
    return { kind: 'malformed', status: undefined, detail, transient: true };
  }
  if (code || (err instanceof Error && (err.name === 'AbortError' || err.name === 'TimeoutError' || /fetch failed|terminated|socket/i.test(err.message)))) {
    return { kind: 'unreachable', status: undefined, detail, transient: true };
  }
  return { kind: 'other', status: undefined, detail, transient: true };
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  410: 'Gone',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

function statusOf(err: unknown): number | undefined {
  if (err instanceof ApiException) return err.code;
  // The watch throws a plain Error carrying `statusCode` for a non-200 answer.
  const statusCode = (err as { statusCode?: unknown } | null)?.statusCode;
  return typeof statusCode === 'number' ? statusCode : undefined;
}

/** `: <the Status message>` when the server sent one (the generated client keeps the body as text). */
function serverMessage(err: unknown): string {
  if (!(err instanceof ApiException)) return '';
  const body: unknown = err.body;
  let message: unknown;
  if (typeof body === 'string') {
    try {
      message = (JSON.parse(body) as { message?: unknown }).message;
    } catch {
      message = body;
    }
  } else if (body && typeof body === 'object') {
    message = (body as { message?: unknown }).message;
  }
  return typeof message === 'string' && message.trim() ? `: ${clip(message.trim())}` : '';
}

function causeCode(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    const inner = (e as { errors?: unknown }).errors;
    if (Array.isArray(inner) && inner.length > 0) return causeCode(inner[0]);
  }
  return undefined;
}

/** An error as one short line, with undici's hidden cause (`fetch failed` says nothing by itself). */
export function errorText(err: unknown): string {
  if (!(err instanceof Error)) return clip(String(err));
  if (err instanceof ApiException) return `HTTP ${err.code}${serverMessage(err)}`;
  const causes: string[] = [];
  for (let e: unknown = err.cause, depth = 0; e instanceof Error && depth < 3; e = e.cause, depth++) {
    const inner = (e as { errors?: unknown }).errors;
    causes.push(e.message || (Array.isArray(inner) && inner[0] instanceof Error ? inner[0].message : e.name));
  }
  return clip([err.message, ...causes].filter(Boolean).join(': '));
}

function clip(text: string): string {
  const line = text.replace(/\s+/g, ' ');
  return line.length > 300 ? `${line.slice(0, 297)}...` : line;
}

/** What was being done when a failure happened, for the start-up message. */
export interface RequestScope {
  connection: KubeConnection;
  verb: 'list' | 'watch';
  /** `pods`, `endpointslices`. */
  resource: string;
  /** `''` for the core group. */
  group: string;
  namespace: ResolvedNamespace;
  labelSelector: string;
}

/** The one-line start-up error for a failure, naming what and where and what to do. */
export function startupError(failure: KubeFailure, scope: RequestScope, attempts: number): ConfigError {
  const { connection, verb, resource, group, namespace, labelSelector } = scope;
  const what = `${resource}${group ? ` (API group ${group})` : ''} in namespace "${namespace.namespace}"`;
  const server = `the Kubernetes API server at ${connection.server}`;
  switch (failure.kind) {
    case 'unreachable':
    case 'server_error':
    case 'malformed':
    case 'expired':
    case 'other': {
      const tries = attempts > 1 ? `; ${attempts} attempts` : '';
      const reason =
        failure.kind === 'malformed'
          ? `answered the ${resource} ${verb} with something that is not a Kubernetes list (${failure.detail}${tries})`
          : failure.kind === 'unreachable'
            ? `cannot be reached (${failure.detail}${tries})`
            : `failed to ${verb} ${what} (${failure.detail}${tries})`;
      return new ConfigError(
        '--service-discovery',
        `k8s: ${server} ${reason}`,
        connection.origin === 'in-cluster'
          ? 'check that the pod can reach the API server (KUBERNETES_SERVICE_HOST, network policies) and that the control plane is up'
          : `check the server of ${connection.describe} and that the cluster is up (kubectl get --raw /readyz)`,
      );
    }
    case 'tls':
      return new ConfigError(
        '--service-discovery',
        `k8s: the TLS certificate of ${server} is not trusted (${failure.detail})`,
        connection.origin === 'in-cluster'
          ? `check the CA mounted at ${SERVICE_ACCOUNT_DIR}/ca.crt`
          : `check certificate-authority(-data) of the cluster in ${connection.describe}`,
      );
    case 'unauthorized':
      return new ConfigError(
        '--service-discovery',
        `k8s: ${server} rejected the credentials of ${connection.describe} (${failure.detail})`,
        connection.origin === 'in-cluster'
          ? "the service account token is invalid or expired: check the pod's serviceAccountName and that its token is mounted"
          : 'log in again or fix the user of that context (kubectl auth whoami shows who you are)',
      );
    case 'forbidden':
      return new ConfigError(
        '--service-discovery',
        `k8s: RBAC does not allow ${connection.describe} to ${verb} ${what} (${failure.detail})`,
        `grant get, list and watch on ${resource}${group ? ` in API group ${group}` : ''} in namespace "${namespace.namespace}": kubectl apply -n ${namespace.namespace} -f k8s/rbac.yaml and run the pod as serviceAccountName: llm-extproc`,
      );
    case 'bad_request':
      if (labelSelector && resource === 'pods') {
        return new ConfigError(
          '--k8s-label-selector',
          `"${labelSelector}" is not a valid label selector (${failure.detail})`,
          'write key=value, key!=value, key, !key, key in (a,b) or key notin (a,b), joined by commas, e.g. llm-d.ai/role=decode',
        );
      }
      return new ConfigError(
        '--service-discovery',
        `k8s: ${server} refused to ${verb} ${what} (${failure.detail})`,
        'check --k8s-namespace and the names given',
      );
    case 'not_found': {
      const from = namespace.origin === 'flag' ? '' : namespace.origin === 'service account' ? " (llm-extproc's own namespace)" : ' (the default)';
      const maybeGroup = group ? ` or the server does not serve ${group}` : '';
      return new ConfigError(
        '--k8s-namespace',
        `namespace "${namespace.namespace}"${from} was not found${maybeGroup} (${failure.detail} listing ${resource} at ${connection.server})`,
        'give the namespace the backend pods run in with --k8s-namespace (kubectl get namespaces lists them)',
      );
    }
  }
}

// --- requests ----------------------------------------------------------------------------------

/** Request options that abort a call on `signal` (the generated client has no timeout of its own). */
export function withSignal(signal: AbortSignal): ConfigurationOptions<ObservableMiddleware> {
  return {
    middleware: [
      {
        pre: (context) => {
          context.setSignal(signal);
          return new Observable(Promise.resolve(context));
        },
        post: (context) => new Observable(Promise.resolve(context)),
      },
    ],
    middlewareMergeStrategy: 'append',
  };
}

// --- metrics -----------------------------------------------------------------------------------

export interface KubeMetrics {
  /** Watches started again, by resource and why the last one ended. */
  restarts: Counter<'resource' | 'cause'>;
  /** Failed lists and watches, by resource and FailureKind. */
  errors: Counter<'resource' | 'kind'>;
  /** Watch events and list items that made no sense, by resource and reason (malformed, unknown_object). */
  anomalies: Counter<'resource' | 'reason'>;
}

/** Restart causes (metric label values). */
export type RestartCause = 'error' | 'closed' | 'timeout' | 'expired';

const metricsByRegistry = new WeakMap<Registry, KubeMetrics>();

/** The Kubernetes metrics on `registry`, created once however many sources share it. */
export function kubeMetrics(registry: Registry): KubeMetrics {
  let metrics = metricsByRegistry.get(registry);
  if (!metrics) {
    metrics = {
      restarts: new Counter({
        name: 'llm_extproc_k8s_watch_restarts_total',
        help: 'Kubernetes watches started again, by resource and cause (error: after a failed list or watch, with backoff; closed: the server ended the stream; timeout: no data for 30 s; expired: 410 Gone, relisted).',
        labelNames: ['resource', 'cause'] as const,
        registers: [registry],
      }),
      errors: new Counter({
        name: 'llm_extproc_k8s_watch_errors_total',
        help: 'Failed Kubernetes lists and watches, by resource and kind (unreachable, forbidden, expired, ...).',
        labelNames: ['resource', 'kind'] as const,
        registers: [registry],
      }),
      anomalies: new Counter({
        name: 'llm_extproc_k8s_watch_anomalies_total',
        help: 'Kubernetes watch events and list items that made no sense, by resource and reason: malformed ones (no object, no metadata, unknown type) are dropped; a DELETED event for an object never seen is dropped, a MODIFIED one is taken as added.',
        labelNames: ['resource', 'reason'] as const,
        registers: [registry],
      }),
    };
    metricsByRegistry.set(registry, metrics);
  }
  return metrics;
}
