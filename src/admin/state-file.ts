import { randomUUID } from 'node:crypto';
import { open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { ConfigError } from '../config/errors.js';
import type { ServiceMapping } from '../routing/mappings.js';
import { parseWith, stateFileSchema } from './schemas.js';

const FLAG = '--state-file';

/**
 * --state-file: the mappings added through the admin API, as `{"version":1,"mappings":[...]}`.
 * Each save writes a temporary file in the same directory, fsyncs it, renames it over the old one
 * and fsyncs the directory: a crash leaves the old file or the new one, never half of one.
 */
export class StateFile {
  /** Saves run one after another, in call order. */
  private queue: Promise<void> = Promise.resolve();

  constructor(
    readonly path: string,
    private readonly log: Logger,
  ) {}

  /**
   * The saved mappings; none when there is no file yet. A file that is not a state file is
   * logged, moved aside to `<path>.corrupt-<timestamp>` and read as none. A directory that is
   * missing or a file that cannot be read is a ConfigError.
   */
  async load(): Promise<ServiceMapping[]> {
    const directory = dirname(this.path);
    const isDirectory = await stat(directory).then(
      (stats) => stats.isDirectory(),
      () => false,
    );
    if (!isDirectory) throw new ConfigError(FLAG, `${directory} is not a directory`, 'create it, or point --state-file into an existing writable directory');
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new ConfigError(FLAG, `cannot read ${this.path}: ${(err as Error).message}`, 'check its permissions');
    }
    let document: unknown;
    let problem: string | undefined;
    try {
      document = JSON.parse(text);
    } catch (err) {
      problem = `not JSON: ${(err as Error).message}`;
    }
    if (problem === undefined) {
      const parsed = parseWith(stateFileSchema, document, 'the file');
      if (parsed.ok) return parsed.value.mappings;
      problem = parsed.message;
    }
    const aside = `${this.path}.corrupt-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    await rename(this.path, aside);
    this.log.warn({ stateFile: this.path, movedTo: aside, problem }, 'the state file is corrupt: moved aside; starting from the configuration alone');
    return [];
  }

  /** Replaces the file's mappings with `mappings`; resolves once they are on disk. */
  save(mappings: readonly ServiceMapping[]): Promise<void> {
    const text = `${JSON.stringify({ version: 1, mappings }, null, 2)}\n`;
    const saved = this.queue.then(() => this.write(text));
    this.queue = saved.catch(() => {});
    return saved;
  }

  private async write(text: string): Promise<void> {
    const directory = dirname(this.path);
    const temporary = join(directory, `.${basename(this.path)}.${randomUUID()}.tmp`);
    try {
      const file = await open(temporary, 'w', 0o600);
      try {
        await file.writeFile(text);
        await file.sync();
      } finally {
        await file.close();
      }
      await rename(temporary, this.path);
    } catch (err) {
      await unlink(temporary).catch(() => {});
      throw err;
    }
    // The rename itself is durable once the directory is synced.
    const dir = await open(directory, 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }
}
