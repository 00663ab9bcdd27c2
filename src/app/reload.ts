import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { type Config, type EffectiveSettings, effectiveSettings, LIVE_SETTINGS, SECRET_SETTINGS, settingRows, validateSettings } from '../config/config.js';
import { ConfigError } from '../config/errors.js';
import { FileChangeWatcher } from '../config/watch.js';
import type { Metrics } from '../metrics.js';
import { loadRouteConfig, type RouteConfig, RouteTable } from '../routing/routes.js';
import { type ChainSpec, loadChainSpec, PRESET_CHAIN, validateChainSpec } from '../scheduling/plugins.js';

/** What the files named by the settings hold. */
export interface LoadedFiles {
  routes: RouteConfig;
  chainSpec: ChainSpec;
}

/** One loaded configuration: the settings, the files they name, and each value as text for comparing. */
export interface ConfigSnapshot {
  config: Config;
  files: LoadedFiles;
  /** Setting name (plus `routes`, `mappings`, `scheduling` for file contents) → its value as JSON. */
  values: ReadonlyMap<string, string>;
}

/** File contents a reload applies, next to LIVE_SETTINGS. */
const LIVE_CONTENTS: ReadonlySet<string> = new Set(['routes', 'mappings', 'scheduling']);

export type ReloadOutcome = 'applied' | 'unchanged' | 'rejected';

/**
 * What a reload changes in the running service. `prepare` builds everything that can fail (a new
 * plugin chain) and throws a ConfigError to reject; the function it returns applies the change and
 * must not fail, so a reload is all or nothing.
 */
export interface LiveTargets {
  prepare(next: ConfigSnapshot, changed: ReadonlySet<string>): (() => void) | Promise<() => void>;
}

/** Reads the route file and the scheduling chain the settings name. */
export async function loadFiles(config: Config): Promise<LoadedFiles> {
  const routes = config.routeConfig ? await loadRouteConfig(config.routeConfig) : { routes: new RouteTable(), mappings: [] };
  let chainSpec = PRESET_CHAIN;
  if (config.schedulingConfig) chainSpec = await loadChainSpec(config.schedulingConfig);
  else if (config.schedulingSection) chainSpec = validateChainSpec(config.schedulingSection.document, config.schedulingSection.source);
  return { routes, chainSpec };
}

/**
 * Loads everything argv and env point at: the settings (validated) and their files, read from the
 * paths of `filesOf` when given (a reload keeps the running paths: they need a restart).
 */
async function loadSnapshot(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  filesOf?: Pick<Config, 'routeConfig' | 'schedulingConfig'>,
): Promise<ConfigSnapshot> {
  const settings = effectiveSettings(argv, env);
  const parsed = validateSettings(settings);
  const config = filesOf ? { ...parsed, routeConfig: filesOf.routeConfig, schedulingConfig: filesOf.schedulingConfig } : parsed;
  return snapshotOf(settings, config, await loadFiles(config));
}

/** The snapshot of settings already read and validated (`config`) and the files they name. */
export function snapshotOf(settings: EffectiveSettings, config: Config, files: LoadedFiles): ConfigSnapshot {
  const values = new Map(settingRows(settings).map((row) => [row.name, JSON.stringify(row.value ?? null)]));
  values.set('routes', JSON.stringify(files.routes.routes.list()));
  values.set('mappings', JSON.stringify(files.routes.mappings));
  values.set('scheduling', JSON.stringify(files.chainSpec));
  return { config, files, values };
}

/** A short fingerprint of a snapshot, exported as llm_extproc_config_info{hash}. */
export function snapshotHash(snapshot: ConfigSnapshot): string {
  return createHash('sha256')
    .update(JSON.stringify([...snapshot.values]))
    .digest('hex')
    .slice(0, 12);
}

/**
 * Watches the config file, the route file and the scheduling file, and applies a valid change
 * without a restart: live settings and file contents take effect, settings that need a restart are
 * logged and keep their running value. An invalid change is rejected whole (a log line and
 * llm_extproc_config_reloads_total{result="failed"}) and the last good configuration stays.
 */
export class ConfigReloader {
  private running: ConfigSnapshot;
  private watcher: FileChangeWatcher | undefined;
  /** Reloads run one at a time, in order. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly argv: readonly string[],
    private readonly env: Readonly<Record<string, string | undefined>>,
    initial: ConfigSnapshot,
    private readonly targets: LiveTargets,
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {
    this.running = initial;
    metrics.configLoaded(snapshotHash(initial));
  }

  /** The files a change to which triggers a reload. */
  static watchedFiles(config: Config): string[] {
    return [config.configFile, config.routeConfig, config.schedulingConfig].filter((file) => file !== undefined);
  }

  start(): void {
    const files = ConfigReloader.watchedFiles(this.running.config);
    if (files.length === 0) return;
    this.watcher = new FileChangeWatcher(
      files,
      (changed) => {
        this.log.info({ files: changed }, 'configuration files changed: reloading');
        // Only a bug gets here (mistakes are ConfigErrors, answered in reloadNow): kept, not fatal.
        this.reload().catch((err: unknown) => {
          this.metrics.configReloads.inc({ result: 'failed' });
          this.log.error({ err }, 'configuration reload failed unexpectedly: the running configuration stays');
        });
      },
      (err, directory) => this.log.warn({ err, directory }, 'cannot watch configuration files any more: changes need a restart'),
    );
    this.log.info({ files }, 'watching configuration files for changes');
  }

  stop(): void {
    this.watcher?.close();
  }

  /** Reads everything again and applies what changed; resolves with what happened. */
  reload(): Promise<ReloadOutcome> {
    const next = this.queue.then(() => this.reloadNow());
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async reloadNow(): Promise<ReloadOutcome> {
    let next: ConfigSnapshot;
    let apply: () => void;
    let changed: Set<string>;
    try {
      next = this.keepRestartOnly(await loadSnapshot(this.argv, this.env, this.running.config));
      changed = new Set([...next.values].filter(([name, value]) => this.running.values.get(name) !== value).map(([name]) => name));
      if (changed.size === 0) return 'unchanged';
      apply = await this.targets.prepare(next, changed);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      this.metrics.configReloads.inc({ result: 'failed' });
      this.log.error({ reason: err.line }, 'configuration change rejected: the last good configuration stays');
      return 'rejected';
    }
    apply();
    this.running = next;
    this.metrics.configReloads.inc({ result: 'ok' });
    this.metrics.configLoaded(snapshotHash(next));
    this.log.info({ changed: [...changed].sort() }, 'configuration reloaded');
    return 'applied';
  }

  /**
   * A snapshot whose restart-only values are the running ones (each change logged), so the
   * comparison sees only what a reload can change.
   */
  private keepRestartOnly(next: ConfigSnapshot): ConfigSnapshot {
    const values = new Map(next.values);
    for (const [name, value] of next.values) {
      const before = this.running.values.get(name);
      if (before === value || LIVE_SETTINGS.has(name) || LIVE_CONTENTS.has(name)) continue;
      const shown = SECRET_SETTINGS.has(name) ? {} : { running: JSON.parse(before ?? 'null'), configured: JSON.parse(value) };
      this.log.warn({ setting: name, ...shown }, `${name} changed: it needs a restart, the running value stays`);
      values.set(name, before ?? 'null');
    }
    return { ...next, values };
  }
}
