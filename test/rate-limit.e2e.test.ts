import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Service } from '../src/app/service.js';
import { parseConfig } from '../src/config/config.js';
import { ConfigError } from '../src/config/errors.js';
import { createLogger } from '../src/log.js';
import { TENANT_HEADER } from '../src/protection/rate-limit.js';
import type { EnvoyDouble } from './support/envoy/envoy-double.js';
import { type Cluster, captureLogs, chatBody, JSON_HEADERS, QWEN, startCluster } from './support/harness.js';

describe('rate limits, end to end through the Envoy double', () => {
  const clock = { ms: 0 };
  const logs = captureLogs();
  let cluster: Cluster;
  let service: Service;
  let envoy: EnvoyDouble;

  before(async () => {
    cluster = await startCluster({
      pods: [{ engine: 'vllm', models: [QWEN], host: '127.0.0.182' }],
      flags: ['--rate-limit-model=1/2', '--rate-limit-tenant=0.25'],
      log: createLogger('debug', logs.stream),
      now: () => clock.ms,
    });
    ({ service, envoy } = cluster);
  });
  after(async () => cluster.close());

  const post = (model: string, tenant?: string) =>
    envoy.request({
      method: 'POST',
      path: '/v1/chat/completions',
      headers: { ...JSON_HEADERS, ...(tenant === undefined ? {} : { [TENANT_HEADER]: tenant }) },
      body: chatBody({ model }),
    });

  async function limited(): Promise<{ labels: Record<string, unknown>; value: number }[]> {
    return (await service.metrics.rateLimited.get()).values.map(({ labels, value }) => ({ labels, value }));
  }
  async function refusals429(): Promise<number> {
    const { values } = await service.metrics.requests.get();
    return values.filter((v) => v.labels.status === '429').reduce((sum, v) => sum + v.value, 0);
  }

  it('answers 429 with retry-after and an OpenAI body, counts it by limit, and spends no token of a limit that did not refuse', async () => {
    assert.equal((await post(QWEN, 'team-a')).status, 200, 'model 2 -> 1, team-a 1 -> 0');

    const byTenant = await post(QWEN, 'team-a');
    assert.equal(byTenant.status, 429);
    assert.equal(byTenant.localReply, true);
    assert.equal(byTenant.upstream, undefined, 'not sent to a backend');
    assert.equal(byTenant.headers['retry-after'], '4', 'a token every 4 s');
    assert.equal(byTenant.headers['content-type'], 'application/json');
    const error = JSON.parse(byTenant.body.toString()).error;
    assert.equal(error.code, 'rate_limit_exceeded');
    assert.equal(error.type, 'rate_limit_error');
    assert.match(error.message, /tenant `team-a`/);

    assert.equal((await post(QWEN)).status, 200, "the tenant's refusal cost the model bucket nothing: its last token");
    const byModel = await post(QWEN, 'team-b');
    assert.equal(byModel.status, 429);
    assert.equal(byModel.headers['retry-after'], '1');
    assert.match(JSON.parse(byModel.body.toString()).error.message, /model `Qwen\/Qwen2.5-0.5B-Instruct` \(1 requests\/s, burst 2\)/);

    assert.deepEqual(await limited(), [
      { labels: { limit: 'tenant' }, value: 1 },
      { labels: { limit: 'model' }, value: 1 },
    ]);
    assert.equal(await refusals429(), 2, 'counted as refusals');
    const { values } = await service.metrics.requests.get();
    assert.ok(
      values.filter((v) => v.labels.status === '429').every((v) => v.labels.model === QWEN && v.labels.outcome === 'rate_limit_exceeded'),
      'model label: a served model',
    );

    const lines = logs.lines.filter((line) => line.code === 'rate_limit_exceeded');
    assert.equal(lines.length, 2);
    assert.ok(
      lines.every((line) => line.level === 20 && /^request refused: Rate limit exceeded/.test(line.msg as string)),
      'logged at debug, with the reason',
    );
  });

  it('an unknown model stays a 404 and spends nothing; a second later the model bucket has a token again', async () => {
    const before = await refusals429();
    assert.equal((await post('no-such-model', 'team-b')).status, 404);
    assert.equal(await refusals429(), before);
    clock.ms += 1000;
    assert.equal((await post(QWEN, 'team-b')).status, 200, 'team-b spent nothing on the 404 (nor on its 429)');
    assert.equal((await post(QWEN, 'team-c')).status, 429, 'one token a second');
  });
});

describe('--rate-limit-* and --tenant-header flags', () => {
  const HOSTS = '--static-hosts=10.0.0.1:8000';
  const parse = (...argv: string[]) => parseConfig([HOSTS, ...argv])!;
  const refuses = (flag: string, message: RegExp) => (err: unknown) => err instanceof ConfigError && err.flag === flag && message.test(err.message);

  it('are off by default, the tenant header is llm-d fairness id', () => {
    assert.deepEqual(parse().rateLimits, { tenantHeader: 'x-llm-d-inference-fairness-id' });
  });

  it('take <rate>[/<burst>]; the burst defaults to max(1, rate); rates may be fractional', () => {
    const { rateLimits } = parse('--rate-limit-model=50/100', '--rate-limit-owned-by=20', '--rate-limit-tenant=0.5', '--tenant-header=X-Team');
    assert.deepEqual(rateLimits, {
      tenantHeader: 'x-team',
      model: { rate: 50, burst: 100 },
      owned_by: { rate: 20, burst: 20 },
      tenant: { rate: 0.5, burst: 1 },
    });
  });

  it('refuse what is not a rate, with the flag named', () => {
    for (const bad of ['0', '0/5', 'fast', '-1', '5/0', '5/1.5', '1e3', '2000000']) {
      assert.throws(() => parse(`--rate-limit-model=${bad}`), refuses('--rate-limit-model', /rate|burst/), bad);
    }
    assert.throws(() => parse('--rate-limit-tenant=1', '--tenant-header=bad header'), refuses('--tenant-header', /not a valid header name/));
    assert.throws(() => parse('--tenant-header=x-team'), refuses('--tenant-header', /applies to --rate-limit-tenant only/));
  });
});
