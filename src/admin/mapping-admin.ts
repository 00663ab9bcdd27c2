import type { Logger } from 'pino';
import type { MappedServices } from '../app/discovery.js';
import { ConfigError } from '../config/errors.js';
import { type LiveMappings, mappingKey, type ServiceMapping, type SourcedMapping } from '../routing/mappings.js';
import type { StateFile } from './state-file.js';

/** What an add or a remove came to; the routes turn each kind into an answer. */
export type MappingChange =
  | { kind: 'done'; mapping: SourcedMapping }
  /** The service_name resolves to nothing; `message` says why. */
  | { kind: 'unknown_service'; message: string }
  /** Whether it exists cannot be known now (e.g. the EndpointSlice list is refused). */
  | { kind: 'unavailable'; message: string }
  /** (model, owned_by) is mapped already (add), or its mapping is the routes file's (remove). */
  | { kind: 'conflict'; existing: SourcedMapping }
  | { kind: 'not_found' };

/**
 * Admin mappings: each follows its service (a Kubernetes Service is watched while mapped), lives
 * in the LiveMappings the scheduler reads, and is kept in the --state-file when there is one. A
 * change is answered once it is saved; a failed save undoes it.
 */
export class MappingAdmin {
  constructor(
    private readonly live: LiveMappings,
    private readonly services: MappedServices,
    private readonly state: StateFile | undefined,
    private readonly log: Logger,
  ) {}

  list(): SourcedMapping[] {
    return this.live.list();
  }

  async add(mapping: ServiceMapping): Promise<MappingChange> {
    const before = this.live.find(mapping.model, mapping.owned_by);
    if (before) return { kind: 'conflict', existing: before };
    const resolved = await this.follow(mapping);
    if (resolved) return resolved;
    // Another add of the same (model, owned_by) may have won while the service was looked up.
    const existing = this.live.add(mapping);
    if (existing) {
      this.services.release(mapping.service_name);
      return { kind: 'conflict', existing };
    }
    try {
      await this.save();
    } catch (err) {
      this.live.remove(mapping.model, mapping.owned_by);
      this.services.release(mapping.service_name);
      throw err;
    }
    this.log.info({ ...mapping }, 'admin mapping added');
    return { kind: 'done', mapping: { ...mapping, source: 'admin' } };
  }

  async remove(model: string, ownedBy: string | undefined): Promise<MappingChange> {
    const existing = this.live.find(model, ownedBy);
    if (!existing) return { kind: 'not_found' };
    if (existing.source !== 'admin') return { kind: 'conflict', existing };
    const removed = this.live.remove(model, ownedBy)!;
    try {
      await this.save();
    } catch (err) {
      this.live.add(removed);
      throw err;
    }
    this.services.release(removed.service_name);
    this.log.info({ ...removed }, 'admin mapping removed');
    return { kind: 'done', mapping: existing };
  }

  /**
   * The routes file's mappings (at start, and after each change): follows their services and
   * returns the function that swaps them in (and releases the old ones' services). Rejects with a
   * ConfigError, following nothing, when one collides with an admin mapping or names an endpoint
   * group that does not exist; a Kubernetes Service that does not exist (yet) is only logged.
   */
  async prepareFileMappings(mappings: readonly ServiceMapping[], source: string): Promise<() => void> {
    const admin = new Set(this.live.admin.map((mapping) => mappingKey(mapping.model, mapping.owned_by)));
    const taken = mappings.findIndex((mapping) => admin.has(mappingKey(mapping.model, mapping.owned_by)));
    if (taken >= 0) {
      const { model, owned_by } = mappings[taken]!;
      throw new ConfigError(
        '--route-config',
        `${source}: mappings[${taken}] maps ${model} (${owned_by ?? 'any engine'}), which the admin API has mapped`,
        'DELETE /admin/api/routing that mapping first, or leave it out of the file',
      );
    }
    // Followed all at once (each waits for its Service's first list); every follow is released on failure.
    const followed = await Promise.allSettled(mappings.map((mapping) => this.services.follow(mapping.service_name)));
    const releaseAll = (list: readonly ServiceMapping[]) => {
      for (const mapping of list) this.services.release(mapping.service_name);
    };
    const fail = (err: ConfigError): never => {
      releaseAll(mappings.filter((_, index) => followed[index]!.status === 'fulfilled'));
      throw err;
    };
    for (const [index, outcome] of followed.entries()) {
      const mapping = mappings[index]!;
      if (outcome.status === 'rejected') {
        const err = outcome.reason as Error;
        fail(
          err instanceof ConfigError
            ? err
            : new ConfigError('--route-config', `${source}: cannot follow the mappings' Services: ${err.message}`, 'check the API server and RBAC'),
        );
      }
      const problem = (outcome as PromiseFulfilledResult<string | undefined>).value;
      if (problem === undefined) continue;
      const what = `mapping of ${mapping.model} (${mapping.owned_by ?? 'any engine'})`;
      if (this.services.kind === 'endpoint group') {
        fail(
          new ConfigError(
            '--route-config',
            `${source}: the ${what}: ${problem}`,
            `prefix its backends in --static-hosts, e.g. ${mapping.service_name}=10.0.0.1:8000`,
          ),
        );
      }
      // A Service may be created after llm-extproc: its requests answer 503 until then.
      this.log.warn({ model: mapping.model, owned_by: mapping.owned_by, service: mapping.service_name }, `routes-file ${what}: ${problem} (yet)`);
    }
    return () => {
      const before = this.live.file;
      this.live.replaceFile(mappings);
      releaseAll(before);
    };
  }

  /**
   * At start: the state file's mappings, each whose service still resolves and whose key the
   * routes file does not map; the others are logged and skipped (and leave the file on its next save).
   */
  async restore(): Promise<void> {
    if (!this.state) return;
    const saved = await this.state.load();
    for (const mapping of saved) {
      const change = await this.add(mapping).catch((err: unknown) => ({ kind: 'unavailable', message: (err as Error).message }) as const);
      if (change.kind === 'done') continue;
      const why =
        change.kind === 'conflict'
          ? `(model, owned_by) is mapped already, by the ${change.existing.source}`
          : 'message' in change
            ? change.message
            : change.kind;
      this.log.warn({ stateFile: this.state.path, ...mapping, reason: why }, 'state file mapping skipped');
    }
    if (saved.length > 0) this.log.info({ stateFile: this.state.path, mappings: this.live.admin.length }, 'admin mappings restored from the state file');
  }

  /** Follows the mapping's service; undefined when it resolves (the follow then stands), else the answer. */
  private async follow(mapping: ServiceMapping): Promise<MappingChange | undefined> {
    const name = mapping.service_name;
    let problem: string | undefined;
    try {
      problem = await this.services.follow(name);
    } catch (err) {
      return {
        kind: 'unavailable',
        message: `cannot tell whether ${this.services.kind} "${name}" exists: ${(err as ConfigError).line ?? (err as Error).message}`,
      };
    }
    if (problem === undefined) return undefined;
    this.services.release(name);
    return { kind: 'unknown_service', message: problem };
  }

  private async save(): Promise<void> {
    await this.state?.save(this.live.admin);
  }
}
