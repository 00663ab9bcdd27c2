import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import { ConfigError } from './errors.js';

/**
 * Where settings come from besides the command line: `LLM_EXTPROC_*` environment variables and the
 * `--config` YAML file. Each value keeps its origin, so a mistake is reported where it was made
 * (`LLM_EXTPROC_PROBE_INTERVAL`, `llm-extproc.yaml: probe-interval`), not as a flag never written.
 */

export type SettingKind = 'string' | 'boolean';

/** A value as written, before validation, and where it was written. */
export interface SettingValue {
  value: string | boolean;
  /** `--probe-interval`, `LLM_EXTPROC_PROBE_INTERVAL` or `<file>: probe-interval`. */
  origin: string;
}

/** What the readers need to know of a setting. */
export interface SettingShape {
  kind: SettingKind;
  /** Settings that may be a YAML list in the file (joined with `,`, as on the command line). */
  list?: boolean;
}

export type SettingShapes = Readonly<Record<string, SettingShape>>;

const ENV_PREFIX = 'LLM_EXTPROC_';

/** The top-level key of the config file that holds the scheduling chain (--scheduling-config's format). */
export const SCHEDULING_KEY = 'scheduling';

/** `probe-interval` → `LLM_EXTPROC_PROBE_INTERVAL`. */
export function envName(setting: string): string {
  return ENV_PREFIX + setting.toUpperCase().replaceAll('-', '_');
}

export interface EnvSettings {
  values: Map<string, SettingValue>;
  /** `LLM_EXTPROC_*` variables that name no setting: reported as warnings (other tools share the prefix). */
  unknown: string[];
}

/** Reads the `LLM_EXTPROC_*` variables of `names`; empty values count as unset (an unset shell variable). */
export function readEnv(env: Readonly<Record<string, string | undefined>>, shapes: SettingShapes): EnvSettings {
  const byEnvName = new Map(Object.keys(shapes).map((name) => [envName(name), name]));
  const values = new Map<string, SettingValue>();
  const unknown: string[] = [];
  for (const [variable, raw] of Object.entries(env)) {
    if (!variable.startsWith(ENV_PREFIX) || raw === undefined || raw.trim() === '') continue;
    const name = byEnvName.get(variable);
    if (name === undefined) {
      unknown.push(variable);
      continue;
    }
    values.set(name, { value: shapes[name]!.kind === 'boolean' ? envBoolean(variable, raw) : raw, origin: variable });
  }
  return { values, unknown: unknown.sort() };
}

function envBoolean(variable: string, raw: string): boolean {
  const text = raw.trim().toLowerCase();
  if (['true', '1', 'yes'].includes(text)) return true;
  if (['false', '0', 'no'].includes(text)) return false;
  throw new ConfigError(variable, `"${raw}" is not a boolean`, 'write true or false');
}

export interface FileSettings {
  values: Map<string, SettingValue>;
  /** The `scheduling:` section, validated later by the plugin registry. */
  scheduling: { document: unknown; source: string } | undefined;
}

const FILE_HINT = 'the config file maps setting names (the flags without --) to values, plus an optional scheduling: section; see docs/configuration.md';

/**
 * Reads the config file: a YAML (or JSON) mapping of setting names to scalars. Flag-only settings
 * (`fileKeys` excludes them) and unknown keys are mistakes, reported with the file and key.
 */
export function readConfigFile(path: string, shapes: SettingShapes, fileKeys: ReadonlySet<string>): FileSettings {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(
      '--config',
      `cannot read ${path}: ${(err as Error).message}`,
      `check the path and its permissions; a relative path starts at ${process.cwd()}`,
    );
  }
  const document = parseDocument(text, { prettyErrors: false, uniqueKeys: true });
  const syntax = document.errors[0];
  if (syntax) throw new ConfigError('--config', `${path} is not valid YAML: ${syntax.message.split('\n', 1)[0]}`, 'fix the syntax');
  const root: unknown = document.toJS();
  if (root === null || root === undefined) return { values: new Map(), scheduling: undefined };
  if (typeof root !== 'object' || Array.isArray(root)) throw new ConfigError('--config', `${path}: expected a mapping of settings`, FILE_HINT);
  const values = new Map<string, SettingValue>();
  let scheduling: FileSettings['scheduling'];
  for (const [key, value] of Object.entries(root as Record<string, unknown>)) {
    const origin = `${path}: ${key}`;
    if (key === SCHEDULING_KEY) {
      scheduling = { document: value, source: origin };
      continue;
    }
    const shape = shapes[key];
    if (!shape || !fileKeys.has(key)) {
      const hint = shape ? 'it is a command-line flag only' : FILE_HINT;
      throw new ConfigError(origin, shape ? 'cannot be set in the config file' : 'is not a setting', hint);
    }
    if (value === null || value === undefined) continue; // `key:` with nothing = left at its default
    values.set(key, { value: fileValue(origin, shape, value), origin });
  }
  return { values, scheduling };
}

/** Scalars as the command line would carry them: numbers as decimal text, lists joined with `,`. */
function fileValue(origin: string, shape: SettingShape, value: unknown): string | boolean {
  if (shape.kind === 'boolean') {
    if (typeof value !== 'boolean') throw new ConfigError(origin, `must be true or false (got ${JSON.stringify(value)})`, 'write true or false, unquoted');
    return value;
  }
  if (typeof value === 'string') {
    if (value.trim() === '') throw new ConfigError(origin, 'is empty', 'give it a value or leave the key out');
    return value;
  }
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  if (shape.list && Array.isArray(value) && value.length > 0 && value.every((item) => typeof item === 'string' || typeof item === 'number')) {
    return value.map(String).join(',');
  }
  const expected = shape.list ? 'a string, a number or a list of strings' : 'a string or a number';
  throw new ConfigError(origin, `must be ${expected} (got ${Array.isArray(value) ? 'a list' : typeof value})`, FILE_HINT);
}
