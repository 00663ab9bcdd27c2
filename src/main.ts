#!/usr/bin/env node
import { type Service, startService } from './app/service.js';
import { readConfiguration, settingRows, usage } from './config/config.js';
import { ConfigError } from './config/errors.js';
import { renderSettings } from './config/print.js';
import { type DemoBackends, startDemoBackends } from './demo.js';
import { logGrpcJsTo } from './extproc/grpc-log.js';
import { createLogger } from './log.js';

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const read = readConfiguration(argv);
  if (!read) {
    process.stdout.write(usage());
    return;
  }
  const { config, settings } = read;
  if (config.printConfig) {
    process.stdout.write(renderSettings(settingRows(settings, { redact: true }), config.schedulingSection));
    return;
  }
  const log = createLogger(config.logLevel);
  logGrpcJsTo(log);
  for (const warning of config.warnings) log.warn(warning);
  let demo: DemoBackends | undefined;
  let service: Service;
  try {
    demo = config.demo ? await startDemoBackends(log) : undefined;
    service = await startService(config, log, { staticHosts: demo?.hosts, reload: { argv, settings } });
  } catch (err) {
    await demo?.close();
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
  // An operator's mistake, found while parsing flags or starting: one line, exit 2.
  if (err instanceof ConfigError) {
    process.stderr.write(`llm-extproc: ${err.line}\n`);
    process.exit(2);
  }
  process.stderr.write(`llm-extproc: fatal: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
