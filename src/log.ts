import { type Logger, pino } from 'pino';
import type { LogLevel } from './config/config.js';

/** JSON logs on stdout; `requestId` carries Envoy's x-request-id on request-scoped lines. */
export function createLogger(level: LogLevel | 'silent', destination?: NodeJS.WritableStream): Logger {
  const options = { name: 'llm-extproc', level, base: { pid: process.pid } };
  return destination ? pino(options, destination) : pino(options);
}
