import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { ConfigError } from '../config/errors.js';
import type { EndpointIdentity, ModelCard } from './endpoint.js';

export interface StaticHost {
  /** As configured: `host:port` or a URL. */
  spec: string;
  host: string;
  port: number;
}

const FLAG = '--static-hosts';
const FORMAT_HINT = 'write host:port or http://host:port, e.g. 10.0.0.1:8000';

/** Parses `10.0.0.1:8000` or `http://vllm-0:8000` (a URL's path is ignored; http only). */
export function parseStaticHost(spec: string): StaticHost {
  const trimmed = spec.trim();
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(trimmed) ? trimmed : `http://${trimmed}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new ConfigError(FLAG, `"${spec}" is not host:port or a URL`, FORMAT_HINT);
  }
  if (url.protocol !== 'http:') throw new ConfigError(FLAG, `"${spec}": only http backends are supported`, 'write http://host:port or host:port; backends are probed over plain HTTP');
  if (!url.port) throw new ConfigError(FLAG, `"${spec}" has no port`, `write host:port, e.g. ${url.hostname}:8000`);
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  return { spec: trimmed, host, port: Number(url.port) };
}

/**
 * Envoy's ORIGINAL_DST cluster needs an IP, so host names are resolved once here.
 * (Kubernetes discovery reports pod IPs directly.)
 */
export async function resolveStaticHosts(hosts: readonly StaticHost[]): Promise<EndpointIdentity[]> {
  return Promise.all(
    hosts.map(async (host) => {
      let ip = host.host;
      if (!isIP(ip)) {
        try {
          ip = (await lookup(host.host)).address;
        } catch (err) {
          throw new ConfigError(FLAG, `cannot resolve "${host.host}": ${(err as Error).message}`, `check the name, or give the backend's IP address`);
        }
      }
      const address = isIP(ip) === 6 ? `[${ip}]:${host.port}` : `${ip}:${host.port}`;
      return { address, name: host.spec, namespace: 'static', labels: {} };
    }),
  );
}

/**
 * `--static-models` / `--static-owned-by`: one entry per host, in the order of `--static-hosts`
 * (a single entry applies to every host); several models of one host are separated by `;`.
 */
export function staticModelCards(
  hostCount: number,
  modelsFlag: string | undefined,
  ownedByFlag: string | undefined,
): (ModelCard[] | undefined)[] {
  if (modelsFlag === undefined) {
    if (ownedByFlag !== undefined) throw new ConfigError('--static-owned-by', 'is only read with --static-models', 'add --static-models, or drop --static-owned-by (engines then come from /v1/models)');
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
