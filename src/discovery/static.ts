import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { ConfigError } from '../config/errors.js';
import { hostProblem, joinHostPort } from '../net-address.js';
import type { EndpointIdentity, ModelCard } from './endpoint.js';
import { GROUP_NAME_HINT, groupNameProblem } from './names.js';

export interface StaticHost {
  /** As configured, without the group prefix: `host:port` or a URL. */
  spec: string;
  host: string;
  port: number;
  /** The `group=` prefix: the endpoint group admin and routes-file mappings name. */
  group?: string;
}

const FLAG = '--static-hosts';
const FORMAT_HINT = 'write host:port or http://host:port, e.g. 10.0.0.1:8000';
/** `group=` before the host: an `=` ahead of any `:`, `/` or `[` (a URL's query may hold `=` later). */
const GROUP_PREFIX = /^([^=:/[\]]*)=(.*)$/s;

/** `--static-hosts`: comma-separated backends, at least one, each once (empty entries are skipped). */
export function parseStaticHosts(flagValue: string): StaticHost[] {
  const hosts = flagValue
    .split(',')
    .filter((entry) => entry.trim())
    .map(parseStaticHost);
  if (hosts.length === 0) throw new ConfigError(FLAG, `"${flagValue}" names no backend`, FORMAT_HINT);
  const seen = new Set<string>();
  for (const host of hosts) {
    const key = joinHostPort(host.host.toLowerCase(), host.port);
    if (seen.has(key)) throw new ConfigError(FLAG, `${key} is listed twice`, 'list each backend once');
    seen.add(key);
  }
  return hosts;
}

/**
 * Parses `10.0.0.1:8000`, `[::1]:8000` or `http://vllm-0:8000` (a URL's path is ignored; http
 * only), each optionally after `group=` (`llama-vllm=10.0.0.1:8000`).
 */
export function parseStaticHost(entry: string): StaticHost {
  const prefixed = GROUP_PREFIX.exec(entry.trim());
  if (!prefixed) return parseHost(entry.trim());
  const group = prefixed[1]!.trim();
  const problem = group === '' ? `"${entry.trim()}" has an empty group before "="` : groupNameProblem(group);
  if (problem) throw new ConfigError(FLAG, problem, GROUP_NAME_HINT);
  return { ...parseHost(prefixed[2]!.trim()), group };
}

function parseHost(trimmed: string): StaticHost {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(trimmed);
  if (scheme && scheme[1]!.toLowerCase() !== 'http') {
    throw new ConfigError(FLAG, `"${trimmed}": only http backends are supported`, 'write http://host:port or host:port; backends are probed over plain HTTP');
  }
  const authority = trimmed.slice(scheme?.[0].length ?? 0).split(/[/?#]/, 1)[0]!;
  const unbracketedIPv6 = !authority.startsWith('[') && (isIP(authority) === 6 || isIP(authority.slice(0, authority.lastIndexOf(':'))) === 6);
  const parts = unbracketedIPv6 ? null : /^(?:\[([^\]]*)\]|([^:[\]]*))(?::(.*))?$/.exec(authority);
  if (!parts) {
    const hint = unbracketedIPv6 ? 'put an IPv6 address in brackets, e.g. [::1]:8000' : FORMAT_HINT;
    throw new ConfigError(FLAG, `"${trimmed}" is not host:port or a URL`, hint);
  }
  const host = parts[1] ?? parts[2]!;
  const portText = parts[3];
  const problem =
    host === ''
      ? `"${trimmed}" has no host`
      : parts[1] !== undefined && isIP(host) !== 6
        ? `"[${host}]": brackets hold IPv6 addresses only`
        : hostProblem(host);
  if (problem) throw new ConfigError(FLAG, problem, FORMAT_HINT);
  if (portText === undefined) {
    throw new ConfigError(FLAG, `"${trimmed}" has no port`, `write host:port, e.g. ${joinHostPort(host, 8000)}`);
  }
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 1 && port <= 65535)) {
    throw new ConfigError(FLAG, `"${trimmed}": port "${portText}" is not 1-65535`, `write the port in decimal digits, e.g. ${joinHostPort(host, 8000)}`);
  }
  return { spec: trimmed, host, port };
}

/**
 * Envoy's ORIGINAL_DST cluster needs an IP, so host names are resolved once here.
 * (Kubernetes discovery reports pod IPs directly.)
 */
export async function resolveStaticHosts(hosts: readonly StaticHost[]): Promise<EndpointIdentity[]> {
  const identities = await Promise.all(
    hosts.map(async (host) => {
      let ip = host.host;
      if (!isIP(ip)) {
        try {
          ip = (await lookup(host.host)).address;
        } catch (err) {
          throw new ConfigError(FLAG, `cannot resolve "${host.host}": ${(err as Error).message}`, `check the name, or give the backend's IP address`);
        }
      }
      const identity: EndpointIdentity = { address: joinHostPort(ip, host.port), name: host.spec, namespace: 'static', labels: {} };
      if (host.group !== undefined) identity.group = host.group;
      return identity;
    }),
  );
  // Two names for one address would silently become a single backend.
  const byAddress = new Map<string, string>();
  for (const identity of identities) {
    const other = byAddress.get(identity.address);
    if (other !== undefined) throw new ConfigError(FLAG, `"${other}" and "${identity.name}" are both ${identity.address}`, 'list each backend once');
    byAddress.set(identity.address, identity.name);
  }
  return identities;
}

/**
 * `--static-models` / `--static-owned-by`: one entry per host, in the order of `--static-hosts`
 * (a single entry applies to every host); several models of one host are separated by `;`.
 */
export function staticModelCards(hostCount: number, modelsFlag: string | undefined, ownedByFlag: string | undefined): (ModelCard[] | undefined)[] {
  if (modelsFlag === undefined) {
    if (ownedByFlag !== undefined)
      throw new ConfigError(
        '--static-owned-by',
        'is only read with --static-models',
        'add --static-models, or drop --static-owned-by (engines then come from /v1/models)',
      );
    return Array.from({ length: hostCount }, () => undefined);
  }
  const models = perHost(splitList(modelsFlag), hostCount, '--static-models');
  const engines = perHost(ownedByFlag === undefined ? ['vllm'] : splitList(ownedByFlag), hostCount, '--static-owned-by');
  const created = Math.floor(Date.now() / 1000);
  return models.map((entry, index) =>
    entry
      .split(';')
      .map((id) => id.trim())
      .filter(Boolean)
      .map((id) => ({ id, object: 'model' as const, created, owned_by: engines[index]!, root: id, parent: null })),
  );
}

function splitList(value: string): string[] {
  return value.split(',').map((entry) => entry.trim());
}

function perHost(entries: string[], hostCount: number, flag: string): string[] {
  if (entries.length === 1) return Array.from({ length: hostCount }, () => entries[0]!);
  if (entries.length !== hostCount) {
    throw new ConfigError(flag, `has ${entries.length} entries but --static-hosts has ${hostCount}`, 'give one entry per host, or one for all');
  }
  return entries;
}
