import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { ConfigError, parseBytes, parseConfig, parseDuration } from '../src/config/config.js';
import { StaticConfigError, parseStaticHost, staticModelCards } from '../src/discovery/static.js';
import { RouteConfigError, loadRouteTable } from '../src/routing/routes.js';

describe('parseConfig', () => {
  it("accepts seed 004's flags as written", () => {
    const config = parseConfig([
      '--service-discovery=static', '--static-hosts=localhost:8000', '--routing-logic=least_outstanding_requests',
      '--route-config=config/routes.json', '--log-level=info', '--port=50051',
    ])!;
    assert.equal(config.port, 50051);
    assert.equal(config.routingLogic, 'least_outstanding_requests');
    assert.equal(config.routeConfig, 'config/routes.json');
    assert.deepEqual(config.staticHosts, [{ spec: 'localhost:8000', host: 'localhost', port: 8000 }]);
  });
  it('has production defaults', () => {
    const config = parseConfig(['--static-hosts', '10.0.0.1:8000'])!;
    assert.equal(config.adminPort, 8081);
    assert.equal(config.maxBodyBytes, 32 * 1024 * 1024);
    assert.ok(config.grpcMaxReceiveBytes >= 32 * 1024 * 1024);
    assert.equal(config.destinationHeader, 'x-gateway-destination-endpoint');
    assert.equal(config.requestBodyMode, 'BUFFERED');
  });
  it('names the bad flag', () => {
    const cases: [string[], RegExp][] = [
      [['--static-hosts=a:1', '--routing-logic=random'], /--routing-logic: "random"/],
      [['--static-hosts=a:1', '--port=70000'], /--port/],
      [['--static-hosts=a:1', '--max-body-size=lots'], /--max-body-size/],
      [['--static-hosts=a:1', '--destination-header=x-envoy-original-dst-host'], /x-envoy/],
      [['--static-hosts=a:1', '--max-body-size=128MiB'], /--grpc-max-receive-size must be at least/],
      [[], /--static-hosts is required/],
      [['--static-hosts=a:1', '--bogus'], /bogus/],
    ];
    for (const [argv, message] of cases) assert.throws(() => parseConfig(argv), (err: unknown) => err instanceof ConfigError && message.test(err.message));
  });
  it('--help returns nothing to run', () => assert.equal(parseConfig(['--help']), undefined));
  it('parses sizes and durations', () => {
    assert.equal(parseBytes('x', '32MiB'), 33554432);
    assert.equal(parseBytes('x', '1000'), 1000);
    assert.equal(parseDuration('x', '500ms'), 500);
    assert.equal(parseDuration('x', '2m'), 120000);
    assert.equal(parseDuration('x', '3'), 3000);
  });
});

describe('static hosts', () => {
  it('accepts host:port and URLs', () => {
    assert.deepEqual(parseStaticHost('http://10.0.0.2:8000/v1'), { spec: 'http://10.0.0.2:8000/v1', host: '10.0.0.2', port: 8000 });
    assert.deepEqual(parseStaticHost('[::1]:9000'), { spec: '[::1]:9000', host: '::1', port: 9000 });
    assert.throws(() => parseStaticHost('10.0.0.1'), StaticConfigError);
    assert.throws(() => parseStaticHost('https://a:1'), /only http/);
  });
  it('spreads --static-models and --static-owned-by over the hosts', () => {
    const cards = staticModelCards(2, 'qwen;llama,qwen', 'vllm,sglang');
    assert.deepEqual(cards.map((list) => list!.map((c) => `${c.id}/${c.owned_by}`)), [['qwen/vllm', 'llama/vllm'], ['qwen/sglang']]);
    assert.deepEqual(staticModelCards(2, 'm', undefined).map((l) => l![0]!.owned_by), ['vllm', 'vllm']);
    assert.throws(() => staticModelCards(3, 'a,b', undefined), /one per host/);
    assert.throws(() => staticModelCards(1, undefined, 'vllm'), /needs --static-models/);
  });
});

describe('route config files', () => {
  it("loads seed 004's routes.json as-is, and YAML", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'routes-'));
    const seed = [
      { name: 'chat-route', model: 'gpt-3.5-turbo', path_prefix: '/v1/chat' },
      { name: 'completion-route', model: 'text-davinci-003', path_prefix: '/v1/completions' },
    ];
    await writeFile(join(dir, 'routes.json'), JSON.stringify(seed, null, 2));
    await writeFile(join(dir, 'routes.yaml'), 'routes:\n  - name: r\n    path_prefix: /v1\n    owned_by: sglang\n');
    assert.equal((await loadRouteTable(join(dir, 'routes.json'))).match('/v1/chat/completions')?.model, 'gpt-3.5-turbo');
    assert.equal((await loadRouteTable(join(dir, 'routes.yaml'))).match('/v1/x')?.owned_by, 'sglang');
  });
  it('the example config/routes.json shipped with the project loads', async () => {
    const table = await loadRouteTable(fileURLToPath(new URL('../../config/routes.json', import.meta.url)));
    assert.equal(table.match('/v1/completions')?.owned_by, 'vllm');
  });

  it('rejects bad files naming the field', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'routes-'));
    const cases: [string, RegExp][] = [
      ['[{"name":"a"}]', /routes\[0\]\.path_prefix must be a non-empty string/],
      ['[{"name":"a","path_prefix":"/","modle":"x"}]', /routes\[0\]\.modle is not a known route field/],
      ['[{"name":"a","path_prefix":"v1"}]', /must start with '\/'/],
      ['[{"name":"a","path_prefix":"/"},{"name":"a","path_prefix":"/b"}]', /used twice/],
      ['{"name":"a"}', /expected an array/],
      ['[{"name": ', /not valid JSON/],
    ];
    for (const [text, message] of cases) {
      await writeFile(join(dir, 'bad.json'), text);
      await assert.rejects(loadRouteTable(join(dir, 'bad.json')), (err: unknown) => err instanceof RouteConfigError && message.test(err.message));
    }
    await assert.rejects(loadRouteTable(join(dir, 'missing.json')), /cannot read/);
  });
});
