#!/usr/bin/env node
import { startService, type Service } from './app/service.js';
import { ConfigError, parseConfig, usage, type Config } from './config/config.js';
import { startDemoBackends, type DemoBackends } from './demo.js';
import { StaticConfigError } from './discovery/static.js';
import { createLogger } from './log.js';
import { RouteConfigError } from './routing/routes.js';

async function main(): Promise<void> {
  let config: Config | undefined;
  try {
    config = parseConfig(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`llm-extproc: ${err.message}\n\n${usage()}`);
    process.exit(2);
  }
  if (!config) {
    process.stdout.write(usage());
    return;
  }
  const log = createLogger(config.logLevel);
  let demo: DemoBackends | undefined;
  let service: Service;
  try {
    demo = config.demo ? await startDemoBackends(log) : undefined;
    service = await startService(config, log, demo?.hosts ?? config.staticHosts);
  } catch (err) {
    await demo?.close();
    if (err instanceof StaticConfigError || err instanceof RouteConfigError) {
      log.fatal(err.message);
      process.exit(2);
    }
    throw err;
  }

  let stopping = false;
  const shutdown = async (signal: NodeJS.Signals) => {
    if (stopping) {
      // The drain timeout bounds the wait; a repeated or relayed signal must not cut the open
      // requests. SIGQUIT (Ctrl-\) or SIGKILL stop at once.
      log.warn({ signal }, 'already draining: signal ignored');
      return;
    }
    stopping = true;
    log.info({ signal, drainTimeoutMs: config.drainTimeoutMs }, 'shutting down: draining open streams');
    await service.stop();
    await demo?.close();
    log.info('stopped');
    process.exit(0);
  };
  // SIGHUP too (a closed terminal, some supervisors): its default would kill open requests.
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, () => void shutdown(signal));
}

main().catch((err: unknown) => {
  process.stderr.write(`llm-extproc: fatal: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
