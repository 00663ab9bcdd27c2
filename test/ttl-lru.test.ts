import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TtlLru } from '../src/scheduling/filters/lru.js';

describe('TtlLru', () => {
  it('returns what was set, and undefined for what was not', () => {
    const lru = new TtlLru<string>(10, 1000);
    lru.set('a', 'A', 0);
    assert.equal(lru.get('a', 1), 'A');
    assert.equal(lru.get('b', 1), undefined);
    lru.set('a', 'A2', 2);
    assert.equal(lru.get('a', 3), 'A2');
    assert.equal(lru.size, 1);
  });

  it('expires an entry ttl after its last set, not after its first', () => {
    const lru = new TtlLru<string>(10, 1000);
    lru.set('a', 'A', 0);
    assert.equal(lru.get('a', 999), 'A');
    assert.equal(lru.get('a', 1000), undefined, 'expired at exactly ttl');
    assert.equal(lru.size, 0, 'an expired entry that is read is dropped');

    lru.set('b', 'B', 0);
    lru.set('b', 'B', 800);
    assert.equal(lru.get('b', 1500), 'B', 'the second set restarted the ttl');
    assert.equal(lru.get('b', 1800), undefined);
  });

  it('reading does not refresh an entry', () => {
    const lru = new TtlLru<string>(10, 1000);
    lru.set('a', 'A', 0);
    assert.equal(lru.get('a', 900), 'A');
    assert.equal(lru.get('a', 1000), undefined);
  });

  it('never holds more than maxEntries, dropping the least recently set', () => {
    const lru = new TtlLru<number>(3, 1_000_000);
    for (let i = 0; i < 100; i++) {
      lru.set(`k${i}`, i, i);
      assert.ok(lru.size <= 3, `size ${lru.size} after ${i + 1} sets`);
    }
    assert.equal(lru.size, 3);
    assert.deepEqual(
      [97, 98, 99].map((i) => lru.get(`k${i}`, 100)),
      [97, 98, 99],
    );
    assert.equal(lru.get('k96', 100), undefined);
  });

  it('a set refreshes recency: the refreshed key outlives later ones at eviction', () => {
    const lru = new TtlLru<string>(2, 1_000_000);
    lru.set('a', 'A', 0);
    lru.set('b', 'B', 1);
    lru.set('a', 'A', 2); // a is now the most recent
    lru.set('c', 'C', 3); // evicts b, not a
    assert.equal(lru.get('a', 4), 'A');
    assert.equal(lru.get('b', 4), undefined);
    assert.equal(lru.get('c', 4), 'C');
  });

  it('drops expired entries from the front on a new key, without waiting for a read', () => {
    const lru = new TtlLru<string>(100, 1000);
    for (let i = 0; i < 50; i++) lru.set(`old${i}`, 'x', i);
    lru.set('keep', 'x', 600);
    lru.set('new', 'x', 1100); // old0..old49 expired at 1000..1049
    assert.equal(lru.size, 2);
    assert.equal(lru.get('keep', 1100), 'x');
  });

  it('refuses a non-positive size or ttl', () => {
    assert.throws(() => new TtlLru(0, 1000), RangeError);
    assert.throws(() => new TtlLru(1.5, 1000), RangeError);
    assert.throws(() => new TtlLru(1, 0), RangeError);
    assert.throws(() => new TtlLru(1, Number.NaN), RangeError);
  });
});
