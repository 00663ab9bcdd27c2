/**
 * Envoy's router and ORIGINAL_DST cluster for the one request: the destination header names the
 * upstream `ip:port`, and the request goes there over HTTP/1.1 as ext_proc left it.
 */
import http from 'node:http';
import { isIP } from 'node:net';
import type { HeaderList } from './headers.js';

/** `ip:port` as ORIGINAL_DST accepts it (a literal IP, no name), or undefined. */
export function parseDestination(value: string | undefined): { host: string; port: number } | undefined {
  const match = value === undefined ? null : /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
  if (!match) return undefined;
  const host = match[1] ?? match[2]!;
  const port = Number(match[3]);
  if (isIP(host) === 0 || (match[1] !== undefined && isIP(host) !== 6) || port < 1 || port > 65535) return undefined;
  return { host, port };
}

export interface UpstreamRequest {
  /** Request headers after ext_proc, pseudo-headers included. */
  headers: HeaderList;
  body: Buffer;
  /** Envoy drops content-length in the streamed body modes and sends the body chunked. */
  keepContentLength: boolean;
}

/** Sends the request to `destination`; resolves with the response once its headers are in. */
export function sendUpstream(destination: { host: string; port: number }, request: UpstreamRequest): Promise<http.IncomingMessage> {
  const pseudo = new Map(request.headers.filter(([name]) => name.startsWith(':')));
  const headers: [string, string][] = [];
  for (const [name, value] of request.headers) {
    if (name.startsWith(':') || name === 'host' || name === 'content-length' || name === 'transfer-encoding') continue;
    headers.push([name, value]);
  }
  headers.unshift(['host', pseudo.get(':authority') ?? `${destination.host}:${destination.port}`]);
  if (request.keepContentLength) headers.push(['content-length', String(request.body.length)]);
  return new Promise((resolve, reject) => {
    const outgoing = http.request({
      host: destination.host,
      port: destination.port,
      method: pseudo.get(':method') ?? 'GET',
      path: pseudo.get(':path') ?? '/',
      headers: headers.flat(),
      // One request, one connection, as a fresh ORIGINAL_DST host would have.
      agent: false,
    });
    outgoing.once('response', resolve);
    outgoing.once('error', reject);
    outgoing.end(request.body.length > 0 ? request.body : undefined);
  });
}

/** Connection-level headers, which Envoy's HTTP/1 codec keeps out of the header map ext_proc sees. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);

/** The response's headers as Envoy hands them to ext_proc: lower-case, in order, without hop-by-hop ones. */
export function responseHeaderList(response: http.IncomingMessage): HeaderList {
  const list: HeaderList = [];
  for (let i = 0; i < response.rawHeaders.length; i += 2) {
    const name = response.rawHeaders[i]!.toLowerCase();
    if (!HOP_BY_HOP.has(name)) list.push([name, response.rawHeaders[i + 1]!]);
  }
  return list;
}
