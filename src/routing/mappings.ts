import { ConfigError } from '../config/errors.js';

/**
 * A manual mapping (seed 001's admin API shape): requests for `model` (on engine `owned_by`, or on
 * any engine when it is left out) go only to the ready endpoints of Kubernetes Service
 * `service_name`, resolved through its EndpointSlices.
 */
export interface ServiceMapping {
  model: string;
  owned_by?: string;
  service_name: string;
}

/** Kubernetes Service names are DNS-1035 labels. */
const SERVICE_NAME = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;
const FLAG = '--route-config';
const SHAPE_HINT =
  'each mapping is {model, owned_by?, service_name}, e.g. {"model": "meta-llama/Llama-3.2-1B-Instruct", "owned_by": "vllm", "service_name": "ms-llama-decode"}';

/** The mappings, looked up by (model, owned_by) without building anything per request. */
export class MappingTable {
  /** model → owned_by ('' = any engine) → the Services of a request naming that engine. */
  private readonly byEngine = new Map<string, Map<string, readonly string[]>>();
  /** model → every Service it is mapped to (a request naming no engine). */
  private readonly anyEngine = new Map<string, readonly string[]>();

  constructor(readonly mappings: readonly ServiceMapping[] = []) {
    for (const mapping of mappings) {
      let engines = this.byEngine.get(mapping.model);
      if (!engines) {
        engines = new Map();
        this.byEngine.set(mapping.model, engines);
      }
      engines.set(mapping.owned_by ?? '', [mapping.service_name]);
      const all = this.anyEngine.get(mapping.model) ?? [];
      if (!all.includes(mapping.service_name)) this.anyEngine.set(mapping.model, [...all, mapping.service_name]);
    }
  }

  /**
   * The Services a request is pinned to: the mapping of its (model, owned_by), else its model's
   * any-engine mapping; with no engine named, every mapping of the model. Undefined = not pinned.
   * The same array comes back for the same answer (a picker may key state on it).
   */
  servicesFor(model: string, ownedBy: string | undefined): readonly string[] | undefined {
    if (ownedBy === undefined) return this.anyEngine.get(model);
    const engines = this.byEngine.get(model);
    return engines?.get(ownedBy) ?? engines?.get('');
  }

  /** Every Service some mapping names (what discovery must watch). */
  services(): string[] {
    return [...new Set(this.mappings.map((mapping) => mapping.service_name))].sort();
  }
}

export function validateMappings(list: unknown, source: string): ServiceMapping[] {
  if (!Array.isArray(list)) throw new ConfigError(FLAG, `${source}: mappings must be an array`, SHAPE_HINT);
  const seen = new Set<string>();
  return list.map((entry: unknown, index) => {
    const where = `${source}: mappings[${index}]`;
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) throw new ConfigError(FLAG, `${where} must be an object`, SHAPE_HINT);
    const record = entry as Record<string, unknown>;
    for (const key of Object.keys(record)) {
      if (!['model', 'owned_by', 'service_name'].includes(key)) {
        throw new ConfigError(FLAG, `${where}.${key} is not a known mapping field (model, owned_by, service_name)`, SHAPE_HINT);
      }
    }
    const text = (key: string, required: boolean): string | undefined => {
      const value = record[key];
      if (value === undefined && !required) return undefined;
      if (typeof value !== 'string' || value === '') throw new ConfigError(FLAG, `${where}.${key} must be a non-empty string`, SHAPE_HINT);
      return value;
    };
    const mapping: ServiceMapping = { model: text('model', true)!, service_name: text('service_name', true)! };
    const ownedBy = text('owned_by', false);
    if (ownedBy !== undefined) mapping.owned_by = ownedBy;
    if (!SERVICE_NAME.test(mapping.service_name)) {
      throw new ConfigError(
        FLAG,
        `${where}.service_name "${mapping.service_name}" is not a Kubernetes Service name`,
        'lower-case letters, digits and "-", starting with a letter, at most 63',
      );
    }
    const key = `${mapping.model}\u0000${mapping.owned_by ?? ''}`;
    if (seen.has(key))
      throw new ConfigError(FLAG, `${where} maps ${mapping.model} (${mapping.owned_by ?? 'any engine'}) a second time`, 'one mapping per (model, owned_by)');
    seen.add(key);
    return mapping;
  });
}
