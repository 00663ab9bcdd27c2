import { isIP } from 'node:net';

/** A DNS label (underscores allowed: Docker Compose service names carry them). */
const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/i;

/**
 * Why `host` is neither an IP literal nor a plausible host name, or undefined when it is one.
 * A name made of digits and dots only is a mistyped IPv4 address (`999.1.1.1`), not a name.
 */
export function hostProblem(host: string): string | undefined {
  if (isIP(host)) return undefined;
  if (/^[\d.]+$/.test(host)) return `"${host}" is not an IPv4 address, which is four numbers 0-255`;
  if (host.includes(':')) return `"${host}" is not an IPv6 address`;
  const labels = (host.endsWith('.') ? host.slice(0, -1) : host).split('.');
  if (host.length > 253 || !labels.every((label) => LABEL.test(label))) return `"${host}" is not an IP address or host name`;
  return undefined;
}

/** `10.0.0.1:8000`, `[::1]:8000`. */
export function joinHostPort(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}
