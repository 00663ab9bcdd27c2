import { ConfigError } from '../config/errors.js';
import { GROUP_NAME_HINT, groupNameProblem } from '../discovery/names.js';

/**
 * A manual mapping (seed 001's admin API shape): requests for `model` (on engine `owned_by`, or on
 * any engine when it is left out) go only to the ready endpoints of `service_name`: a Kubernetes
 * Service, resolved through its EndpointSlices, or with static discovery an endpoint group.
 */
export interface ServiceMapping {
  model: string;
  owned_by?: string;
  service_name: string;
}

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
    if (groupNameProblem(mapping.service_name)) {
      throw new ConfigError(FLAG, `${where}.service_name "${mapping.service_name}" is not a Kubernetes Service name`, GROUP_NAME_HINT);
    }
    const key = mappingKey(mapping.model, mapping.owned_by);
    if (seen.has(key))
      throw new ConfigError(FLAG, `${where} maps ${mapping.model} (${mapping.owned_by ?? 'any engine'}) a second time`, 'one mapping per (model, owned_by)');
    seen.add(key);
    return mapping;
  });
}

/** Where a mapping came from: the routes file (--route-config) or the admin API. */
export type MappingSource = 'routes-file' | 'admin';

export interface SourcedMapping extends ServiceMapping {
  source: MappingSource;
}

/** One string per (model, owned_by); '' stands for any engine. */
export function mappingKey(model: string, ownedBy: string | undefined): string {
  return `${model}\u0000${ownedBy ?? ''}`;
}

/**
 * The routes file's mappings merged with those added through the admin API. Each change builds a
 * new MappingTable and swaps it in whole, so a request, which reads it once, never sees half a
 * change. One mapping per (model, owned_by) across both sources; file mappings cannot be removed.
 */
export class LiveMappings {
  private added: readonly ServiceMapping[] = [];
  private current: MappingTable;

  constructor(private fromFile: readonly ServiceMapping[]) {
    this.current = new MappingTable(fromFile);
  }

  /** The routes file's mappings in force. */
  get file(): readonly ServiceMapping[] {
    return this.fromFile;
  }

  /** The routes file changed (a reload); the caller has checked that no key collides with an admin mapping. */
  replaceFile(mappings: readonly ServiceMapping[]): void {
    this.fromFile = mappings;
    this.swap(this.added);
  }

  /** See MappingTable.servicesFor; answered from the table in force now. */
  servicesFor(model: string, ownedBy: string | undefined): readonly string[] | undefined {
    return this.current.servicesFor(model, ownedBy);
  }

  /** The mappings added through the admin API, in the order they were added (what the state file keeps). */
  get admin(): readonly ServiceMapping[] {
    return this.added;
  }

  list(): SourcedMapping[] {
    return [
      ...this.fromFile.map((mapping): SourcedMapping => ({ ...mapping, source: 'routes-file' })),
      ...this.added.map((mapping): SourcedMapping => ({ ...mapping, source: 'admin' })),
    ];
  }

  find(model: string, ownedBy: string | undefined): SourcedMapping | undefined {
    const key = mappingKey(model, ownedBy);
    return this.list().find((mapping) => mappingKey(mapping.model, mapping.owned_by) === key);
  }

  /** Adds an admin mapping, unless its (model, owned_by) is mapped already: that mapping is returned then. */
  add(mapping: ServiceMapping): SourcedMapping | undefined {
    const existing = this.find(mapping.model, mapping.owned_by);
    if (existing) return existing;
    this.swap([...this.added, mapping]);
    return undefined;
  }

  /** Removes the admin mapping of (model, owned_by); undefined when there is none. */
  remove(model: string, ownedBy: string | undefined): ServiceMapping | undefined {
    const key = mappingKey(model, ownedBy);
    const removed = this.added.find((mapping) => mappingKey(mapping.model, mapping.owned_by) === key);
    if (removed) this.swap(this.added.filter((mapping) => mapping !== removed));
    return removed;
  }

  private swap(added: readonly ServiceMapping[]): void {
    this.added = added;
    this.current = new MappingTable([...this.fromFile, ...added]);
  }
}
