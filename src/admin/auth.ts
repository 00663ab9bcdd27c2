import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { getConnInfo } from '@hono/node-server/conninfo';
import type { MiddlewareHandler } from 'hono';
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import { ConfigError } from '../config/errors.js';
import { envName } from '../config/sources.js';
import type { Metrics } from '../metrics.js';
import { errorResponse } from './errors.js';

/** Who may write: holders of the token, anyone (--admin-insecure-writes), or no one (no token configured). */
export type WritePolicy = { kind: 'token'; digest: Buffer } | { kind: 'anyone' } | { kind: 'no_one' };

/** --admin-token's env var (src/config/sources.ts), named in messages. */
const TOKEN_ENV = envName('admin-token');
const REALM = 'Bearer realm="llm-extproc-admin"';

/** The token from --admin-token-file (trimmed) or --admin-token (or its env var); mistakes are ConfigErrors. */
export async function writePolicy(config: Config): Promise<WritePolicy> {
  let token = config.adminToken;
  const file = config.adminTokenFile;
  if (file !== undefined) {
    try {
      token = (await readFile(file, 'utf8')).trim();
    } catch (err) {
      throw new ConfigError('--admin-token-file', `cannot read ${file}: ${(err as Error).message}`, 'check the path and its permissions');
    }
    if (token === '') throw new ConfigError('--admin-token-file', `${file} is empty`, 'write the token into it');
  }
  if (token === undefined) return config.adminInsecureWrites ? { kind: 'anyone' } : { kind: 'no_one' };
  if (config.adminInsecureWrites) {
    throw new ConfigError(
      '--admin-insecure-writes',
      `cannot be used with an admin token (--admin-token, --admin-token-file or ${TOKEN_ENV})`,
      'drop one of them',
    );
  }
  return { kind: 'token', digest: sha256(token) };
}

/** Digests have one length whatever was sent, so timingSafeEqual applies and the time taken tells nothing of the token. */
export function tokenMatches(presented: string, digest: Buffer): boolean {
  return timingSafeEqual(sha256(presented), digest);
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

type WriteResult = 'ok' | 'rejected' | 'unauthorized' | 'forbidden';

/**
 * The gate of one write route (`POST /admin/api/routing`): the policy, then the answer counted in
 * llm_extproc_admin_writes_total{route,result}. Refusals are logged without what was presented.
 */
export function guardWrite(policy: WritePolicy, metrics: Metrics, log: Logger, route: string): MiddlewareHandler {
  const count = (result: WriteResult) => metrics.adminWrites.inc({ route, result });
  return async (c, next) => {
    if (policy.kind !== 'anyone') {
      const refusal = refuse(policy, c.req.header('authorization'));
      if (refusal) {
        count(refusal.result);
        log.warn({ route, remote: getConnInfo(c).remote.address, reason: refusal.reason }, 'admin write refused');
        return refusal.response;
      }
    }
    await next();
    count(c.res.status < 300 ? 'ok' : 'rejected');
  };
}

function refuse(
  policy: Exclude<WritePolicy, { kind: 'anyone' }>,
  authorization: string | undefined,
): { result: WriteResult; reason: string; response: Response } | undefined {
  if (policy.kind === 'no_one') {
    const message = `admin writes are off: no admin token is configured (--admin-token-file, --admin-token or ${TOKEN_ENV}; or --admin-insecure-writes)`;
    return { result: 'forbidden', reason: 'no token configured', response: errorResponse(403, 'permission_error', 'admin_writes_disabled', message) };
  }
  const presented = /^Bearer[ \t]+(.*)$/i.exec(authorization ?? '')?.[1]?.trim();
  if (presented && tokenMatches(presented, policy.digest)) return undefined;
  const reason = presented ? 'wrong token' : authorization === undefined ? 'no authorization header' : 'not a Bearer authorization';
  const message = presented ? 'the admin token is wrong' : 'admin writes need "Authorization: Bearer <token>"';
  return {
    result: 'unauthorized',
    reason,
    response: errorResponse(401, 'authentication_error', presented ? 'invalid_admin_token' : 'missing_admin_token', message, { 'www-authenticate': REALM }),
  };
}
