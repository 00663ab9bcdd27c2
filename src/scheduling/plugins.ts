import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from '../config/errors.js';
import { type ExternalFilterConfig, parseExternalFilterEntry } from './filters/external-http-config.js';
import { LabelSelectorFilter } from './filters/label-selector.js';
import { RoleFilter } from './filters/role.js';
import { ServedFilter } from './filters/served.js';
import { createSessionAffinity } from './filters/session-affinity.js';
import { LoadAwarePicker } from './load-aware-picker.js';
import { MaxScorePicker } from './pickers/max-score.js';
import { RandomPicker } from './pickers/random.js';
import { createPicker, LeastOutstandingPicker, type Picker, RoundRobinPicker, type RoutingLogic } from './pickers.js';
import { PluginParameters, SCHEDULING_CONFIG_FLAG } from './plugin-params.js';
import type { Chain } from './scheduler.js';
import { inFlightScorer } from './scorers/in-flight.js';
import { kvCacheScorer } from './scorers/kv-cache.js';
import { queueScorer } from './scorers/queue.js';
import type { Filter, Scorer } from './types.js';

/** One plugin as the scheduling config names it. */
export interface PluginSpec {
  type: string;
  /** Instance name for logs and metrics; default the type. */
  name?: string;
  /** Scorers only: how much this score counts (default 1). */
  weight?: number;
  parameters?: Record<string, unknown>;
}

/** A chain as configured: filters in order, scorers, and a picker (default: --routing-logic's). */
export interface ChainSpec {
  filters: PluginSpec[];
  scorers: PluginSpec[];
  picker?: PluginSpec;
}

/** Plugin types by kind: what a configuration is validated against. */
const FILTERS: Record<string, (name: string, params: PluginParameters) => Filter> = {
  model: (name, params) => new ServedFilter('model', name, params),
  owned_by: (name, params) => new ServedFilter('owned_by', name, params),
  healthy: (name, params) => new ServedFilter('healthy', name, params),
  'label-selector': (name, params) => new LabelSelectorFilter(name, params),
  role: (name, params) => new RoleFilter(name, params),
  'session-affinity': (name, params) => createSessionAffinity(params.all(), name),
};
const SCORERS: Record<string, (name: string, weight: number, params: PluginParameters) => Scorer> = {
  'in-flight': inFlightScorer,
  queue: queueScorer,
  'kv-cache': kvCacheScorer,
};
const PICKERS: Record<string, () => Picker> = {
  'max-score': () => new MaxScorePicker(),
  'least-outstanding': () => new LeastOutstandingPicker(),
  'round-robin': () => new RoundRobinPicker(),
  random: () => new RandomPicker(),
  'load-aware': () => new LoadAwarePicker(),
};

/** The plugin type names, by kind (for docs, errors and the shared plugin tests). */
export const PLUGIN_TYPES = { filters: Object.keys(FILTERS), scorers: Object.keys(SCORERS), pickers: Object.keys(PICKERS) };

/** Filters calling out over HTTP (docs/external-filters.md); made by ExternalFilters, not a factory here. */
export const EXTERNAL_HTTP_TYPE = 'external-http';

/** `--routing-logic` values are presets: no filters or scorers beyond the registry's, their picker. */
export const PRESET_CHAIN: ChainSpec = { filters: [], scorers: [] };

/**
 * External HTTP filters, from EXTERNAL_HTTP_FILTERS and from `type: external-http` entries of the
 * scheduling config, made in one go (they share their metric series).
 */
export interface ExternalFilters {
  /** From the environment: they run after the configured filters. */
  fromEnv: readonly ExternalFilterConfig[];
  create(configs: readonly ExternalFilterConfig[]): Filter[];
}

/** Builds the plugins of a chain; every unknown type or bad parameter is a ConfigError naming it. */
export function buildChain(spec: ChainSpec, routingLogic: RoutingLogic, external?: ExternalFilters): Chain {
  const names = new Set<string>();
  const instance = (kind: string, index: number, plugin: PluginSpec) => {
    const name = plugin.name ?? plugin.type;
    if (names.has(name))
      throw new ConfigError(SCHEDULING_CONFIG_FLAG, `${kind}[${index}]: the name "${name}" is used twice`, 'give each plugin a name of its own');
    names.add(name);
    return { name, params: new PluginParameters(plugin.parameters ?? {}, `${kind}[${index}] (${name})`) };
  };
  // An external filter's place in the chain is kept as its index among the external configs.
  const externalConfigs: ExternalFilterConfig[] = [];
  const slots = spec.filters.map((plugin, index): Filter | number => {
    if (plugin.type === EXTERNAL_HTTP_TYPE) {
      const { name, params } = instance('filters', index, plugin);
      externalConfigs.push(parseExternalFilterEntry(SCHEDULING_CONFIG_FLAG, { name, ...params.all() }, `filters[${index}]`));
      return externalConfigs.length - 1;
    }
    const factory = FILTERS[plugin.type] ?? unknownType('filters', index, plugin.type, { ...FILTERS, [EXTERNAL_HTTP_TYPE]: true });
    const { name, params } = instance('filters', index, plugin);
    return factory(name, params);
  });
  const fromFile = externalConfigs.length;
  for (const config of external?.fromEnv ?? []) {
    if (names.has(config.name)) {
      throw new ConfigError(
        'EXTERNAL_HTTP_FILTERS',
        `the name "${config.name}" is also a plugin of ${SCHEDULING_CONFIG_FLAG}`,
        'give each filter a name of its own',
      );
    }
    names.add(config.name);
    externalConfigs.push(config);
  }
  if (externalConfigs.length > 0 && !external) throw new Error('buildChain: external filters are configured but no factory was given');
  const made = externalConfigs.length > 0 ? external!.create(externalConfigs) : [];
  const filters = [...slots.map((slot) => (typeof slot === 'number' ? made[slot]! : slot)), ...made.slice(fromFile)];
  const scorers = spec.scorers.map((plugin, index) => {
    const factory = SCORERS[plugin.type] ?? unknownType('scorers', index, plugin.type, SCORERS);
    const { name, params } = instance('scorers', index, plugin);
    const weight = plugin.weight ?? 1;
    if (!(typeof weight === 'number' && weight > 0 && weight <= 1000)) {
      throw new ConfigError(SCHEDULING_CONFIG_FLAG, `scorers[${index}] (${name}): weight must be a number in (0, 1000]`, 'e.g. weight: 2');
    }
    return factory(name, weight, params);
  });
  let picker: Picker;
  if (spec.picker) {
    const factory = PICKERS[spec.picker.type] ?? unknownType('picker', 0, spec.picker.type, PICKERS);
    new PluginParameters(spec.picker.parameters ?? {}, `picker (${spec.picker.type})`).done();
    picker = factory();
  } else {
    picker = createPicker(routingLogic);
  }
  return { filters, scorers, picker };
}

function unknownType(kind: string, index: number, type: string, known: Record<string, unknown>): never {
  throw new ConfigError(SCHEDULING_CONFIG_FLAG, `${kind}[${index}]: no plugin of type "${type}"`, `${kind} types: ${Object.keys(known).join(', ')}`);
}

/** Reads a scheduling config file (YAML or JSON): `{filters?: [...], scorers?: [...], picker?: {...}}`. */
export async function loadChainSpec(file: string): Promise<ChainSpec> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError(SCHEDULING_CONFIG_FLAG, `cannot read ${file}: ${(err as Error).message}`, 'check the path and its permissions');
  }
  let document: unknown;
  try {
    document = ['.yaml', '.yml'].includes(extname(file)) ? parseYaml(text) : JSON.parse(text);
  } catch (err) {
    throw new ConfigError(SCHEDULING_CONFIG_FLAG, `${file} is not valid YAML/JSON: ${(err as Error).message.split('\n', 1)[0]}`, 'fix the syntax');
  }
  return validateChainSpec(document, file);
}

export function validateChainSpec(document: unknown, source: string): ChainSpec {
  const hint = 'the file is {filters: [{type, name?, parameters?}], scorers: [{type, weight?, parameters?}], picker: {type}}';
  if (document === null || typeof document !== 'object' || Array.isArray(document))
    throw new ConfigError(SCHEDULING_CONFIG_FLAG, `${source}: expected an object`, hint);
  const record = document as Record<string, unknown>;
  const stray = Object.keys(record).find((key) => !['filters', 'scorers', 'picker'].includes(key));
  if (stray) throw new ConfigError(SCHEDULING_CONFIG_FLAG, `${source}: "${stray}" is not a known section (filters, scorers, picker)`, hint);
  const plugin = (value: unknown, where: string, allowed: readonly string[]): PluginSpec => {
    if (value === null || typeof value !== 'object' || Array.isArray(value))
      throw new ConfigError(SCHEDULING_CONFIG_FLAG, `${source}: ${where} must be an object`, hint);
    const entry = value as Record<string, unknown>;
    const extra = Object.keys(entry).find((key) => !allowed.includes(key));
    if (extra) throw new ConfigError(SCHEDULING_CONFIG_FLAG, `${source}: ${where}.${extra} is not a known field (${allowed.join(', ')})`, hint);
    if (typeof entry.type !== 'string' || entry.type === '')
      throw new ConfigError(SCHEDULING_CONFIG_FLAG, `${source}: ${where}.type must be a non-empty string`, hint);
    if (entry.name !== undefined && (typeof entry.name !== 'string' || entry.name === '')) {
      throw new ConfigError(SCHEDULING_CONFIG_FLAG, `${source}: ${where}.name must be a non-empty string`, hint);
    }
    if (entry.parameters !== undefined && (entry.parameters === null || typeof entry.parameters !== 'object' || Array.isArray(entry.parameters))) {
      throw new ConfigError(SCHEDULING_CONFIG_FLAG, `${source}: ${where}.parameters must be an object`, hint);
    }
    return entry as unknown as PluginSpec;
  };
  const list = (key: 'filters' | 'scorers', allowed: readonly string[]): PluginSpec[] => {
    const value = record[key];
    if (value === undefined) return [];
    if (!Array.isArray(value)) throw new ConfigError(SCHEDULING_CONFIG_FLAG, `${source}: ${key} must be a list`, hint);
    return value.map((entry, index) => plugin(entry, `${key}[${index}]`, allowed));
  };
  const spec: ChainSpec = { filters: list('filters', ['type', 'name', 'parameters']), scorers: list('scorers', ['type', 'name', 'weight', 'parameters']) };
  if (record.picker !== undefined) spec.picker = plugin(record.picker, 'picker', ['type', 'parameters']);
  return spec;
}
