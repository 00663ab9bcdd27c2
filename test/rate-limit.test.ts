import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RequestHeaders } from '../src/extproc/headers.js';
import { type LimitKind, RateLimiter, type RateLimits, TENANT_HEADER } from '../src/protection/rate-limit.js';
import type { RequestError } from '../src/request/errors.js';

function headers(record: Record<string, string> = {}): RequestHeaders {
  return new RequestHeaders(Object.entries(record).map(([key, value]) => ({ key, raw_value: Buffer.from(value), value: '' })));
}

const NO_TENANT = headers();
const tenant = (id: string) => headers({ [TENANT_HEADER]: id });

/** A limiter on a fake clock that serves models m1, m2 on engines vllm, sglang, and records what it refused. */
function limiter(limits: Omit<RateLimits, 'tenantHeader'> & { tenantHeader?: string }, maxKeys?: number) {
  const clock = { ms: 0 };
  const refused: LimitKind[] = [];
  const served = (model: string, ownedBy: string | undefined) =>
    ['m1', 'm2'].includes(model) && (ownedBy === undefined || ['vllm', 'sglang'].includes(ownedBy));
  const rl = new RateLimiter({ tenantHeader: TENANT_HEADER, ...limits }, { served, limited: (kind) => refused.push(kind), now: () => clock.ms, maxKeys });
  const advance = (seconds: number) => {
    clock.ms += seconds * 1000;
  };
  return { rl, refused, advance };
}

/** How many of `n` requests in a row are admitted. */
function admitted(rl: RateLimiter, n: number, model = 'm1', ownedBy?: string, h = NO_TENANT): number {
  let count = 0;
  for (let i = 0; i < n; i++) if (rl.admit(model, ownedBy, h) === undefined) count++;
  return count;
}

describe('RateLimiter: token buckets', () => {
  it('admits a burst, then refills at the rate', () => {
    const { rl, advance } = limiter({ model: { rate: 2, burst: 5 } });
    assert.equal(admitted(rl, 10), 5, 'the burst');
    advance(1);
    assert.equal(admitted(rl, 10), 2, 'one second refills `rate` tokens');
    advance(100);
    assert.equal(admitted(rl, 10), 5, 'never more than the burst, however long idle');
  });

  it('fractional rates: 0.5/s lets one request in every two seconds', () => {
    const { rl, advance } = limiter({ model: { rate: 0.5, burst: 1 } });
    assert.equal(admitted(rl, 3), 1);
    advance(1.9);
    assert.equal(admitted(rl, 1), 0);
    advance(0.1);
    assert.equal(admitted(rl, 1), 1);
  });

  it('a refusal is a 429 with retry-after in whole seconds (at least 1) from the refill time, and an OpenAI body', () => {
    const { rl, advance, refused } = limiter({ model: { rate: 0.25, burst: 1 } });
    assert.equal(rl.admit('m1', undefined, NO_TENANT), undefined);
    const first = rl.admit('m1', undefined, NO_TENANT)!;
    assert.equal(first.status, 429);
    assert.deepEqual(first.headers, [['retry-after', '4']]);
    const body = JSON.parse(first.toBody()).error;
    assert.equal(body.code, 'rate_limit_exceeded');
    assert.equal(body.type, 'rate_limit_error');
    assert.match(body.message, /model `m1` \(0\.25 requests\/s, burst 1\); retry after 4 s/);
    advance(2.5);
    assert.deepEqual(rl.admit('m1', undefined, NO_TENANT)!.headers, [['retry-after', '2']], '1.5 s left: rounded up');
    advance(1.4);
    assert.deepEqual(rl.admit('m1', undefined, NO_TENANT)!.headers, [['retry-after', '1']], '0.1 s left: at least 1');
    assert.deepEqual(refused, ['model', 'model', 'model']);
  });

  it('each key has a bucket of its own', () => {
    const { rl } = limiter({ model: { rate: 1, burst: 2 }, owned_by: { rate: 1, burst: 3 }, tenant: { rate: 1, burst: 1 } });
    assert.equal(admitted(rl, 5, 'm1'), 2);
    assert.equal(admitted(rl, 5, 'm2'), 2, 'another model');
    const { rl: engines } = limiter({ owned_by: { rate: 1, burst: 3 } });
    assert.equal(admitted(engines, 5, 'm1', 'vllm'), 3);
    assert.equal(admitted(engines, 5, 'm2', 'vllm'), 0, 'the engine bucket is shared by its models');
    assert.equal(admitted(engines, 5, 'm1', 'sglang'), 3, 'another engine');
    assert.equal(admitted(engines, 5, 'm1'), 5, 'a request naming no engine is not engine-limited');
    const { rl: tenants } = limiter({ tenant: { rate: 1, burst: 1 } });
    assert.equal(admitted(tenants, 3, 'm1', undefined, tenant('a')), 1);
    assert.equal(admitted(tenants, 3, 'm1', undefined, tenant('b')), 1, 'another tenant');
    assert.equal(admitted(tenants, 3, 'm1', undefined, NO_TENANT), 3, 'no tenant header: not tenant-limited');
    assert.equal(admitted(tenants, 3, 'm1', undefined, tenant('')), 3, 'an empty one neither');
  });

  it('the tenant header name is configurable', () => {
    const { rl } = limiter({ tenant: { rate: 1, burst: 1 }, tenantHeader: 'x-team' });
    assert.equal(admitted(rl, 3, 'm1', undefined, headers({ 'x-team': 't' })), 1);
    assert.equal(admitted(rl, 3, 'm1', undefined, tenant('t')), 3, 'the default header is not read');
  });

  it('what is not served is neither limited nor stored: an unknown model stays a 404', () => {
    const { rl, refused } = limiter({ model: { rate: 1, burst: 1 }, tenant: { rate: 1, burst: 1 } });
    assert.equal(admitted(rl, 5, 'unknown', undefined, tenant('a')), 5);
    assert.equal(admitted(rl, 5, 'm1', 'no-such-engine', tenant('a')), 5);
    assert.deepEqual(refused, []);
    assert.equal(admitted(rl, 1, 'm1', undefined, tenant('a')), 1, "the tenant's token was not spent on them");
  });
});

describe('RateLimiter: several limits on one request', () => {
  it('takes a token from every bucket only if all have one: a refusal by one costs the others nothing', () => {
    const { rl, refused } = limiter({ model: { rate: 1, burst: 10 }, tenant: { rate: 1, burst: 1 } });
    assert.equal(rl.admit('m1', undefined, tenant('a')), undefined);
    for (let i = 0; i < 5; i++) assert.equal(rl.admit('m1', undefined, tenant('a'))?.status, 429);
    assert.deepEqual(refused, ['tenant', 'tenant', 'tenant', 'tenant', 'tenant']);
    // The model bucket lost one token (the admitted request), not six.
    assert.equal(admitted(rl, 20, 'm1'), 9);
  });

  it('retry-after and the counted limit are those of the bucket that frees last', () => {
    const { rl, refused } = limiter({ model: { rate: 1, burst: 1 }, owned_by: { rate: 0.1, burst: 1 } });
    assert.equal(rl.admit('m1', 'vllm', NO_TENANT), undefined);
    const error = rl.admit('m1', 'vllm', NO_TENANT) as RequestError;
    assert.deepEqual(error.headers, [['retry-after', '10']]);
    assert.match(error.message, /engine `vllm`/);
    assert.deepEqual(refused, ['owned_by']);
  });

  it('a long tenant value is echoed cut short', () => {
    const { rl } = limiter({ tenant: { rate: 1, burst: 1 } });
    const long = tenant('t'.repeat(5000));
    assert.equal(rl.admit('m1', undefined, long), undefined);
    const error = rl.admit('m1', undefined, long)!;
    assert.ok(error.message.length < 300, error.message);
  });
});

describe('RateLimiter: bounded memory', () => {
  it('a flood of tenant values keeps at most maxKeys buckets: the least recently used are forgotten (and start full)', () => {
    const { rl } = limiter({ tenant: { rate: 0.001, burst: 1 } }, 3);
    for (const id of ['a', 'b', 'c']) assert.equal(admitted(rl, 2, 'm1', undefined, tenant(id)), 1);
    assert.equal(admitted(rl, 1, 'm1', undefined, tenant('a')), 0, 'a is remembered, empty');
    assert.equal(admitted(rl, 1, 'm1', undefined, tenant('d')), 1, 'd pushes out the least recently used: a');
    assert.equal(admitted(rl, 1, 'm1', undefined, tenant('b')), 0, 'b and c are still remembered');
    assert.equal(admitted(rl, 1, 'm1', undefined, tenant('a')), 1, 'a was forgotten');
  });

  it('an idle bucket is remembered until it would be full again (forgetting it then changes nothing)', () => {
    const { rl, advance } = limiter({ tenant: { rate: 1, burst: 4 } });
    assert.equal(admitted(rl, 5, 'm1', undefined, tenant('a')), 4);
    advance(3.5);
    assert.equal(admitted(rl, 5, 'm1', undefined, tenant('a')), 3, 'refilled 3.5 tokens, not forgotten and full');
    advance(100);
    assert.equal(admitted(rl, 5, 'm1', undefined, tenant('a')), 4);
  });
});

describe('RateLimiter.reconfigure', () => {
  it('keeps the buckets of a limit whose settings did not change, and starts a changed or new one afresh', () => {
    const { rl } = limiter({ model: { rate: 1, burst: 2 }, tenant: { rate: 1, burst: 1 } });
    assert.equal(admitted(rl, 5, 'm1', undefined, tenant('a')), 1, 'the tenant bucket refuses after one');
    assert.equal(admitted(rl, 5, 'm1'), 1, 'one model token left');
    rl.reconfigure({ tenantHeader: TENANT_HEADER, model: { rate: 1, burst: 2 }, tenant: { rate: 1, burst: 3 }, owned_by: { rate: 1, burst: 1 } });
    assert.equal(admitted(rl, 5, 'm1'), 0, 'model limit unchanged: its bucket (empty) was kept');
    assert.equal(admitted(rl, 5, 'm2', undefined, tenant('a')), 2, 'tenant limit changed: a fresh bucket of the new burst (and m2 has 2)');
    assert.equal(admitted(rl, 5, 'm2', 'vllm'), 0, 'm2 spent');
    rl.reconfigure({ tenantHeader: TENANT_HEADER });
    assert.equal(admitted(rl, 50, 'm1', 'vllm', tenant('a')), 50, 'no limits: everything goes');
  });

  it('another tenant header starts the tenant buckets afresh', () => {
    const { rl } = limiter({ tenant: { rate: 1, burst: 1 } });
    assert.equal(admitted(rl, 2, 'm1', undefined, headers({ [TENANT_HEADER]: 'a', 'x-team': 'a' })), 1);
    rl.reconfigure({ tenantHeader: 'x-team', tenant: { rate: 1, burst: 1 } });
    assert.equal(admitted(rl, 2, 'm1', undefined, headers({ 'x-team': 'a' })), 1);
  });
});
