import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { parseBytes, parseConfig, parseDuration } from '../src/config/config.js';
import { ConfigError } from '../src/config/errors.js';
import { parseStaticHost, staticModelCards } from '../src/discovery/static.js';
import { loadRouteTable } from '../src/routing/routes.js';

const HOSTS = '--static-hosts=10.0.0.1:8000';

/** Asserts a ConfigError about `flag` whose message matches and which carries a hint. */
function isConfigError(flag: string, message: RegExp, hint = /./): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    assert.equal(err.flag, flag, err.line);
    assert.match(err.message, message, err.line);
    assert.match(err.hint, hint, err.line);
    return true;
  };
}

function refuses(argv: string[], flag: string, message: RegExp, hint?: RegExp): void {
  assert.throws(() => parseConfig(argv), isConfigError(flag, message, hint), argv.join(' '));
}

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
    refuses([HOSTS, '--routing-logic=random'], '--routing-logic', /"random" is not a choice/, /least_outstanding_requests, round_robin/);
    refuses([HOSTS, '--port=70000'], '--port', /is not a port number/);
    refuses([HOSTS, '--max-body-size=lots'], '--max-body-size', /is not a size/, /32MiB/);
    refuses([HOSTS, '--destination-header=x-envoy-original-dst-host'], '--destination-header', /x-envoy/, /x-gateway-destination-endpoint/);
    refuses([HOSTS, '--max-body-size=128MiB'], '--grpc-max-receive-size', /must be at least --max-body-size/);
    refuses([], '--static-hosts', /is required/, /--demo/);
    refuses(['--demo', HOSTS], '--static-hosts', /cannot be used with --demo/);
  });
  it('prints as one line: flag, message, hint', () => {
    assert.throws(
      () => parseConfig(['--static-hosts=10.0.0.1']),
      (err: unknown) => err instanceof ConfigError && err.line === '--static-hosts: "10.0.0.1" has no port (hint: write host:port, e.g. 10.0.0.1:8000)',
    );
    assert.equal(new ConfigError('--x', 'a\n  b', 'c').line, '--x: a b (hint: c)', 'a quoted multi-line message still prints as one line');
  });

  it('an unknown flag, a stray argument, a missing or empty value: one error naming it', () => {
    refuses([HOSTS, '--bogus'], '--bogus', /unknown flag/, /--help/);
    refuses([HOSTS, '--bogus=1'], '--bogus', /unknown flag/, /--help/);
    refuses([HOSTS, '-p', '1'], '-p', /unknown flag/);
    refuses([HOSTS, 'serve'], '"serve"', /is not a flag/, /--name=value/);
    refuses([HOSTS, '--demo=yes'], '--demo', /takes no value/);
    refuses([HOSTS, '--port'], '--port', /needs a value/);
    refuses([HOSTS, '--port', '--demo'], '--port', /needs a value/);
    refuses([HOSTS, '--route-config='], '--route-config', /is empty/, /shell variable/);
    refuses(['--static-hosts='], '--static-hosts', /is empty/);
  });

  it('--help returns nothing to run', () => assert.equal(parseConfig(['--help']), undefined));
  it('parses sizes and durations', () => {
    assert.equal(parseBytes('max-body-size', '32MiB'), 33554432);
    assert.equal(parseBytes('max-body-size', '1000'), 1000);
    assert.equal(parseDuration('probe-interval', '500ms'), 500);
    assert.equal(parseDuration('probe-interval', '2m'), 120000);
    assert.equal(parseDuration('probe-interval', '3'), 3000);
  });
});

describe('static hosts', () => {
  it('accepts host:port and URLs', () => {
    assert.deepEqual(parseStaticHost('http://10.0.0.2:8000/v1'), { spec: 'http://10.0.0.2:8000/v1', host: '10.0.0.2', port: 8000 });
    assert.deepEqual(parseStaticHost('[::1]:9000'), { spec: '[::1]:9000', host: '::1', port: 9000 });
    assert.throws(() => parseStaticHost('10.0.0.1'), isConfigError('--static-hosts', /"10\.0\.0\.1" has no port/, /10\.0\.0\.1:8000/));
    assert.throws(() => parseStaticHost('https://a:1'), isConfigError('--static-hosts', /only http/));
  });
  it('spreads --static-models and --static-owned-by over the hosts', () => {
    const cards = staticModelCards(2, 'qwen;llama,qwen', 'vllm,sglang');
    assert.deepEqual(cards.map((list) => list!.map((c) => `${c.id}/${c.owned_by}`)), [['qwen/vllm', 'llama/vllm'], ['qwen/sglang']]);
    assert.deepEqual(staticModelCards(2, 'm', undefined).map((l) => l![0]!.owned_by), ['vllm', 'vllm']);
    assert.throws(() => staticModelCards(3, 'a,b', undefined), isConfigError('--static-models', /has 2 entries but --static-hosts has 3/, /one entry per host/));
    assert.throws(() => staticModelCards(2, 'a', 'x,y,z'), isConfigError('--static-owned-by', /has 3 entries/));
    assert.throws(() => staticModelCards(1, undefined, 'vllm'), isConfigError('--static-owned-by', /only read with --static-models/, /add --static-models/));
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

  it('a bad file is a --route-config error naming the file and the field path', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'routes-'));
    const cases: [string, string, RegExp][] = [
      ['bad.json', '[{"name":"a"}]', /bad\.json: routes\[0\]\.path_prefix must be a non-empty string/],
      ['bad.json', '[{"name":"a","path_prefix":"/","modle":"x"}]', /bad\.json: routes\[0\]\.modle is not a known route field/],
      ['bad.json', '[{"name":"a","path_prefix":"/"},{"name":"b","path_prefix":"v1"}]', /routes\[1\]\.path_prefix must start with '\/'/],
      ['bad.json', '[{"name":"a","path_prefix":"/"},{"name":"a","path_prefix":"/b"}]', /routes\[1\]\.name "a" is used twice/],
      ['bad.json', '{"name":"a"}', /bad\.json: expected an array/],
      ['bad.json', '[{"name": ', /bad\.json is not valid JSON/],
      ['bad.txt', '[{"name": ', /bad\.txt is not valid JSON/],
      ['bad.yaml', 'routes:\n  - name: a\n   path_prefix: /\n', /bad\.yaml is not valid YAML: .*line 3/],
    ];
    for (const [name, text, message] of cases) {
      await writeFile(join(dir, name), text);
      await assert.rejects(loadRouteTable(join(dir, name)), isConfigError('--route-config', message));
    }
    await assert.rejects(loadRouteTable(join(dir, 'missing.json')), isConfigError('--route-config', /cannot read .*missing\.json: ENOENT/, /check the path/));
    await writeFile(join(dir, 'bad.yaml'), 'routes:\n  - name: a\n   path_prefix: /\n');
    await assert.rejects(loadRouteTable(join(dir, 'bad.yaml')), (err: unknown) => err instanceof ConfigError && !err.message.includes('\n'), "YAML's code frame is left out");
  });
});
