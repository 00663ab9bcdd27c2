/**
 * A bounded map from string keys to values, least recently written first out, whose entries
 * expire a fixed time after they were last written (a sliding TTL).
 *
 * One Map holds everything: its iteration order is insertion order, and every write deletes and
 * re-inserts its key, so the first entry is always the least recently written and, since every
 * entry lives the same `ttlMs` on a monotonic clock, also the first to expire. Hence, all O(1):
 * - get: one lookup; an expired entry is dropped and reads as absent. Reads do not refresh (the
 *   owner refreshes with set when the entry is used).
 * - set: drops expired entries from the front (each entry is dropped once, so amortised O(1)),
 *   then the oldest one while the map is full. `size` never exceeds `maxEntries`.
 * Entry objects are reused when a key is written again, so refreshing allocates nothing.
 *
 * Times are whatever `now` the caller passes (performance.now() milliseconds in production, a
 * test's fake clock in tests); they must not go backwards.
 */
interface Entry<V> {
  value: V;
  expiresAt: number;
}

export class TtlLru<V> {
  private readonly entries = new Map<string, Entry<V>>();

  constructor(
    readonly maxEntries: number,
    readonly ttlMs: number,
  ) {
    if (!Number.isInteger(maxEntries) || maxEntries < 1) throw new RangeError(`maxEntries must be a positive integer, not ${maxEntries}`);
    if (!(ttlMs > 0)) throw new RangeError(`ttlMs must be positive, not ${ttlMs}`);
  }

  get size(): number {
    return this.entries.size;
  }

  /** The value written for `key` less than ttlMs before `now`, or undefined. */
  get(key: string, now: number): V | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    if (now < entry.expiresAt) return entry.value;
    this.entries.delete(key);
    return undefined;
  }

  /** Writes `value` for `key`, to expire ttlMs after `now`, as the most recent entry. */
  set(key: string, value: V, now: number): void {
    const entries = this.entries;
    const expiresAt = now + this.ttlMs;
    const entry = entries.get(key);
    if (entry !== undefined) {
      // Re-inserted to move it to the end, the most recent place.
      entries.delete(key);
      entry.value = value;
      entry.expiresAt = expiresAt;
      entries.set(key, entry);
      return;
    }
    this.dropExpired(now);
    if (entries.size >= this.maxEntries) {
      const oldest = entries.keys().next();
      if (!oldest.done) entries.delete(oldest.value);
    }
    entries.set(key, { value, expiresAt });
  }

  /** Drops the expired entries, which are all at the front. */
  private dropExpired(now: number): void {
    const entries = this.entries;
    for (const [key, entry] of entries) {
      if (now < entry.expiresAt) return;
      entries.delete(key);
    }
  }
}
