import { ConfigError } from '../config/errors.js';

/** Where scheduling plugins are configured, for error messages. */
export const SCHEDULING_CONFIG_FLAG = '--scheduling-config';

/**
 * A plugin's `parameters`, read with one clear error per mistake: `where` names the plugin in the
 * file (e.g. `filters[1] (role)`), and unknown keys are refused so a typo is not silently ignored.
 */
export class PluginParameters {
  private readonly read = new Set<string>();

  constructor(
    private readonly values: Record<string, unknown>,
    private readonly where: string,
  ) {}

  string(key: string, fallback?: string): string {
    this.read.add(key);
    const value = this.values[key] ?? fallback;
    if (typeof value !== 'string' || value === '') throw this.error(key, 'must be a non-empty string');
    return value;
  }

  /** Every parameter as given, for a plugin that validates its own (all count as read). */
  all(): Record<string, unknown> {
    for (const key of Object.keys(this.values)) this.read.add(key);
    return this.values;
  }

  /** Call after reading: refuses keys the plugin does not know. */
  done(): void {
    const unknown = Object.keys(this.values).filter((key) => !this.read.has(key));
    if (unknown.length > 0) {
      throw new ConfigError(
        SCHEDULING_CONFIG_FLAG,
        `${this.where}: unknown parameter ${unknown.map((key) => `"${key}"`).join(', ')}`,
        `known: ${[...this.read].join(', ') || 'none'}`,
      );
    }
  }

  error(key: string, problem: string): ConfigError {
    return new ConfigError(
      SCHEDULING_CONFIG_FLAG,
      `${this.where}: parameters.${key} ${problem}`,
      "see the plugin's header comment in src/scheduling/ for its parameters",
    );
  }
}
