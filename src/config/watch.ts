import { createHash } from 'node:crypto';
import { type FSWatcher, readFileSync, watch } from 'node:fs';
import { dirname, resolve } from 'node:path';

/** Editors and `kubectl` write a file in several steps; changes this close together make one reload. */
const SETTLE_MS = 200;

/**
 * Calls `onChange` when the content of any of `files` changes. It watches their directories, not
 * the files: editors replace a file by renaming over it, and a Kubernetes ConfigMap volume swaps a
 * `..data` symlink, neither of which a watch on the old file sees. Events are only a hint: the
 * contents are hashed, and only a real difference counts (a missing file hashes as "absent").
 */
export class FileChangeWatcher {
  private readonly watchers: FSWatcher[] = [];
  private readonly hashes = new Map<string, string>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    files: readonly string[],
    private readonly onChange: (changed: string[]) => void,
    private readonly onError: (err: Error, directory: string) => void,
    private readonly settleMs = SETTLE_MS,
  ) {
    const paths = [...new Set(files.map((file) => resolve(file)))];
    for (const path of paths) this.hashes.set(path, contentHash(path));
    for (const directory of new Set(paths.map((path) => dirname(path)))) {
      const watcher = watch(directory, { persistent: false }, () => this.changed());
      watcher.on('error', (err) => this.onError(err, directory));
      this.watchers.push(watcher);
    }
  }

  close(): void {
    clearTimeout(this.timer);
    for (const watcher of this.watchers) watcher.close();
  }

  private changed(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.compare(), this.settleMs);
    this.timer.unref();
  }

  private compare(): void {
    const changed: string[] = [];
    for (const [path, before] of this.hashes) {
      const now = contentHash(path);
      if (now === before) continue;
      this.hashes.set(path, now);
      changed.push(path);
    }
    if (changed.length > 0) this.onChange(changed);
  }
}

function contentHash(path: string): string {
  try {
    return createHash('sha256').update(readFileSync(path)).digest('hex');
  } catch {
    return 'absent';
  }
}
