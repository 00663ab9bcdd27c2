import { format } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';

/**
 * grpc-js writes its own errors to stderr, a failed bind among them (which ExtProcServer.start()
 * reports itself); this sends them to our JSON log instead, so stderr carries only our own line.
 */
export function logGrpcJsTo(log: Logger): void {
  grpc.setLogger({
    error: (...args: unknown[]) => log.error(`grpc-js: ${format(...args)}`),
    info: (...args: unknown[]) => log.info(`grpc-js: ${format(...args)}`),
    debug: (...args: unknown[]) => log.debug(`grpc-js: ${format(...args)}`),
  });
}
