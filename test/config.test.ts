import assert from 'node:assert/strict';
import { lookup } from 'node:dns/promises';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startService } from '../src/app/service.js';
import { type Config, parseConfig } from '../src/config/config.js';
import { ConfigError } from '../src/config/errors.js';
import { parseStaticHost, resolveStaticHosts, staticModelCards } from '../src/discovery/static.js';
import { createLogger } from '../src/log.js';
import { MappingTable } from '../src/routing/mappings.js';
import { loadRouteConfig } from '../src/routing/routes.js';
import { startSimulator } from '../src/simulator/simulator.js';
import { EnvoyDouble, type EnvoyResponse } from './support/envoy/envoy-double.js';
import { chatBody, JSON_HEADERS, QWEN } from './support/harness.js';

const MiB = 1024 * 1024;
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

const parsed = (...argv: string[]): Config => parseConfig([HOSTS, ...argv])!;

describe('parseConfig', () => {
  it("accepts seed 004's flags as written", () => {
    const config = parseConfig([
      '--service-discovery=static',
      '--static-hosts=localhost:8000',
      '--routing-logic=least_outstanding_requests',
      '--route-config=config/routes.json',
      '--log-level=info',
      '--port=50051',
    ])!;
    assert.equal(config.port, 50051);
    assert.equal(config.routingLogic, 'least_outstanding_requests');
    assert.equal(config.routeConfig, 'config/routes.json');
    assert.deepEqual(config.staticHosts, [{ spec: 'localhost:8000', host: 'localhost', port: 8000 }]);
  });
  it('takes every routing logic', () => {
    for (const logic of ['least_outstanding_requests', 'round_robin', 'load_aware']) assert.equal(parsed(`--routing-logic=${logic}`).routingLogic, logic);
  });
  it('has production defaults', () => {
    const config = parseConfig(['--static-hosts', '10.0.0.1:8000'])!;
    assert.equal(config.adminPort, 8081);
    assert.equal(config.maxBodyBytes, 32 * MiB);
    assert.equal(config.grpcMaxReceiveBytes, 64 * MiB);
    assert.equal(config.destinationHeader, 'x-gateway-destination-endpoint');
    assert.equal(config.requestBodyMode, 'BUFFERED');
    assert.deepEqual([config.probeIntervalMs, config.probeTimeoutMs, config.unhealthyThreshold, config.drainTimeoutMs], [5000, 2000, 2, 25_000]);
  });
  it('--help returns nothing to run', () => assert.equal(parseConfig(['--help']), undefined));

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

  it('ports are decimal digits 0-65535; 0 means any free port', () => {
    for (const [text, port] of [
      ['0', 0],
      ['8000', 8000],
      ['65535', 65535],
    ] as const) {
      assert.equal(parsed(`--port=${text}`).port, port);
      assert.equal(parsed(`--admin-port=${text}`).adminPort, port);
    }
    refuses([HOSTS, '--port='], '--port', /is empty/);
    for (const bad of ['0x1f90', '+80', '-1', '80.0', '1e3', ' 80', '65536', '70000', '080000']) {
      refuses([HOSTS, `--port=${bad}`], '--port', /is not a port number/, /decimal digits 0-65535/);
      refuses([HOSTS, `--admin-port=${bad}`], '--admin-port', /is not a port number/, /0 = any free port/);
    }
  });

  it('listen hosts are IP literals or plausible host names', () => {
    for (const good of ['0.0.0.0', '127.0.0.1', '::', '::1', 'localhost', 'llm-extproc.ns.svc.cluster.local', 'compose_service']) {
      assert.equal(parsed(`--host=${good}`).host, good);
      assert.equal(parsed(`--admin-host=${good}`).adminHost, good);
    }
    refuses([HOSTS, '--host=999.1.1.1'], '--host', /"999\.1\.1\.1" is not an IPv4 address/, /127\.0\.0\.1/);
    refuses([HOSTS, '--admin-host=999.1.1.1'], '--admin-host', /is not an IPv4 address/);
    refuses([HOSTS, '--host=1.2.3'], '--host', /is not an IPv4 address/);
    refuses([HOSTS, '--host=::zz'], '--host', /is not an IPv6 address/);
    refuses([HOSTS, '--host=[::1]'], '--host', /is not an IPv6 address/);
    refuses([HOSTS, '--host=my host'], '--host', /is not an IP address or host name/);
    refuses([HOSTS, '--host=-bad.example'], '--host', /is not an IP address or host name/);
    refuses([HOSTS, '--admin-host='], '--admin-host', /is empty/);
  });

  it('durations keep their syntax and stay in range', () => {
    assert.equal(parsed('--probe-interval=500ms').probeIntervalMs, 500);
    assert.equal(parsed('--probe-interval=2m').probeIntervalMs, 120_000);
    assert.equal(parsed('--probe-interval=1h').probeIntervalMs, 3_600_000);
    assert.equal(parsed('--probe-interval=3').probeIntervalMs, 3000, 'a bare number is seconds');
    assert.equal(parsed('--probe-interval=100ms', '--probe-timeout=10ms').probeTimeoutMs, 10);
    assert.equal(parsed('--drain-timeout=0').drainTimeoutMs, 0, '0 = exit at once');
    assert.equal(parsed('--drain-timeout=1h').drainTimeoutMs, 3_600_000);
    assert.equal(parsed('--drain-timeout=1.5s').drainTimeoutMs, 1500);

    // Beyond 2^31-1 ms Node fires a timer after 1 ms: 600h would be a probe storm, an instant drain.
    refuses([HOSTS, '--probe-interval=600h'], '--probe-interval', /600h is outside 100ms\.\.1h/, /5s/);
    refuses([HOSTS, '--probe-interval=99ms'], '--probe-interval', /outside 100ms\.\.1h/);
    refuses([HOSTS, '--probe-interval=0'], '--probe-interval', /outside 100ms\.\.1h/);
    refuses([HOSTS, '--probe-timeout=600h'], '--probe-timeout', /outside 10ms\.\.1h/);
    refuses([HOSTS, '--probe-timeout=9ms'], '--probe-timeout', /outside 10ms\.\.1h/);
    refuses([HOSTS, '--drain-timeout=600h'], '--drain-timeout', /outside 0s\.\.1h/);
    refuses([HOSTS, '--drain-timeout=3600.001s'], '--drain-timeout', /outside 0s\.\.1h/);
    refuses([HOSTS, '--probe-timeout=10s'], '--probe-timeout', /10s is longer than --probe-interval \(5s\)/, /shorten --probe-timeout/);
    assert.equal(parsed('--probe-interval=500ms').probeTimeoutMs, 500, 'left out, the 2s timeout shrinks to a shorter interval');
    assert.equal(parsed('--probe-interval=1s', '--probe-timeout=1s').probeTimeoutMs, 1000, 'as long as the interval is allowed');
    refuses([HOSTS, '--probe-interval=1s', '--probe-timeout=2s'], '--probe-timeout', /longer than --probe-interval/);
    for (const bad of ['-5s', '5 sec', '5d', 'soon'])
      refuses([HOSTS, `--probe-interval=${bad}`], '--probe-interval', /is not a duration/, /500ms, 5s, 2m or 1h/);
  });

  it('--unhealthy-threshold is decimal digits, 1..100', () => {
    assert.equal(parsed('--unhealthy-threshold=1').unhealthyThreshold, 1);
    assert.equal(parsed('--unhealthy-threshold=100').unhealthyThreshold, 100);
    for (const bad of ['0', '101', '1.5', '0x2', '-1', '+3']) {
      refuses([HOSTS, `--unhealthy-threshold=${bad}`], '--unhealthy-threshold', /is not a whole number in 1\.\.100/, /decimal digits/);
    }
  });

  it('sizes: bytes or units', () => {
    assert.equal(parsed('--max-body-size=1000').maxBodyBytes, 1000);
    assert.equal(parsed('--max-body-size=2MiB').maxBodyBytes, 2 * MiB);
    assert.equal(parsed('--max-body-size=10MB').maxBodyBytes, 10_000_000);
    refuses([HOSTS, '--max-body-size=lots'], '--max-body-size', /is not a size/, /32MiB/);
    refuses([HOSTS, '--max-body-size=0'], '--max-body-size', /less than 1 byte/);
  });

  it('--grpc-max-receive-size leaves 1 MiB above --max-body-size for the gRPC framing', () => {
    assert.equal(parsed('--max-body-size=1MiB').grpcMaxReceiveBytes, 64 * MiB, 'the default is 64 MiB...');
    assert.equal(parsed('--max-body-size=64MiB').grpcMaxReceiveBytes, 65 * MiB, '...or more when the body limit needs it');
    assert.equal(parsed('--max-body-size=128MiB').grpcMaxReceiveBytes, 129 * MiB);
    assert.equal(parsed('--max-body-size=1MiB', '--grpc-max-receive-size=2MiB').grpcMaxReceiveBytes, 2 * MiB, 'the least allowed');
    refuses(
      [HOSTS, '--max-body-size=1MiB', '--grpc-max-receive-size=1MiB'],
      '--grpc-max-receive-size',
      /1MiB is below --max-body-size \+ 1MiB/,
      /at least 2MiB/,
    );
    refuses([HOSTS, '--max-body-size=128MiB', '--grpc-max-receive-size=128MiB'], '--grpc-max-receive-size', /below --max-body-size/, /at least 129MiB/);
    refuses([HOSTS, '--max-body-size=1000', '--grpc-max-receive-size=1048575'], '--grpc-max-receive-size', /below/, /at least 1049576 bytes/);
  });

  it('names the flag of every other bad value', () => {
    refuses([HOSTS, '--routing-logic=random'], '--routing-logic', /"random" is not a choice/, /least_outstanding_requests, round_robin, load_aware/);
    refuses([HOSTS, '--log-level=loud'], '--log-level', /is not a choice/, /debug/);
    refuses([HOSTS, '--request-body-mode=CHUNKED'], '--request-body-mode', /is not a choice/, /BUFFERED/);
    refuses([HOSTS, '--destination-header=x-envoy-original-dst-host'], '--destination-header', /x-envoy/, /x-gateway-destination-endpoint/);
    refuses([HOSTS, '--routed-to-header=bad header'], '--routed-to-header', /not a valid header name/, /x-routed-to/);
    refuses([], '--static-hosts', /is required/, /--demo/);
    refuses(['--demo', HOSTS], '--static-hosts', /cannot be used with --demo/);
  });
});

describe('discovery, health and engine-load flags', () => {
  it('defaults: k8s pods labelled llm-d.ai/role=decode on port 8000; probes, models, ejection and metrics as documented', () => {
    const k8s = parseConfig(['--service-discovery=k8s'])!;
    assert.deepEqual(k8s.k8s, { namespace: undefined, labelSelector: 'llm-d.ai/role=decode', port: { number: 8000 } });
    assert.deepEqual(k8s.staticHosts, []);
    const config = parsed();
    assert.equal(config.k8s, undefined);
    assert.deepEqual(
      [config.healthyThreshold, config.modelsIntervalMs, config.passiveEjection, config.passiveEjectionMs, config.metricsIntervalMs, config.metricsStalenessMs],
      [1, 30_000, 5, 30_000, 1000, 5000],
    );
  });

  it('--k8s-port-name, --k8s-namespace and --k8s-label-selector are taken as given', () => {
    const config = parseConfig(['--service-discovery=k8s', '--k8s-port-name=http', '--k8s-namespace=llm-d', '--k8s-label-selector=app=vllm,tier!=cpu'])!;
    assert.deepEqual(config.k8s, { namespace: 'llm-d', labelSelector: 'app=vllm,tier!=cpu', port: { name: 'http' } });
  });

  it('refuses k8s flags without k8s discovery, static flags with it, and a port given twice', () => {
    refuses([HOSTS, '--k8s-port=8000'], '--k8s-port', /--service-discovery=k8s only/);
    refuses(['--service-discovery=k8s', HOSTS], '--static-hosts', /static only/);
    refuses(['--service-discovery=k8s', '--static-models=m'], '--static-models', /static only/);
    refuses(['--service-discovery=k8s', '--demo'], '--demo', /cannot be used/);
    refuses(['--service-discovery=k8s', '--k8s-port=8000', '--k8s-port-name=http'], '--k8s-port-name', /cannot be used with --k8s-port/);
    refuses(['--service-discovery=k8s', '--k8s-port=0'], '--k8s-port', /must not be 0/);
    refuses(['--service-discovery=k8s', '--k8s-port-name=HTTP'], '--k8s-port-name', /not a container port name/);
    refuses(['--service-discovery=k8s', '--k8s-port-name=8000'], '--k8s-port-name', /not a container port name/);
    refuses(['--service-discovery=k8s', '--k8s-namespace=Prod_1'], '--k8s-namespace', /not a Kubernetes namespace name/);
    refuses(['--service-discovery=consul'], '--service-discovery', /not a choice/, /static, k8s/);
  });

  it('health and metrics numbers stay in range; figures may not go stale before the next scrape', () => {
    refuses([HOSTS, '--healthy-threshold=0'], '--healthy-threshold', /1\.\.100/);
    refuses([HOSTS, '--passive-ejection=-1'], '--passive-ejection', /0\.\.1000/);
    assert.equal(parsed('--passive-ejection=0').passiveEjection, 0, '0 turns passive health off');
    refuses([HOSTS, '--models-interval=500ms'], '--models-interval', /outside 1s\.\.24h/);
    refuses([HOSTS, '--passive-ejection-time=100ms'], '--passive-ejection-time', /outside 1s\.\.1h/);
    refuses([HOSTS, '--metrics-interval=10ms'], '--metrics-interval', /outside 50ms\.\.1h/);
    refuses([HOSTS, '--metrics-staleness=500ms'], '--metrics-staleness', /shorter than --metrics-interval/);
    refuses([HOSTS, '--metrics-interval=10s'], '--metrics-interval', /shorter than --metrics-interval/, /at least --metrics-interval/);
  });
});

describe('--static-hosts', () => {
  it('accepts host:port, [IPv6]:port and http URLs', () => {
    assert.deepEqual(parseStaticHost('http://10.0.0.2:8000/v1'), { spec: 'http://10.0.0.2:8000/v1', host: '10.0.0.2', port: 8000 });
    assert.deepEqual(parseStaticHost('HTTP://vllm-0:8000'), { spec: 'HTTP://vllm-0:8000', host: 'vllm-0', port: 8000 });
    assert.deepEqual(parseStaticHost('[::1]:9000'), { spec: '[::1]:9000', host: '::1', port: 9000 });
    assert.deepEqual(parseStaticHost(' 10.0.0.1:1 '), { spec: '10.0.0.1:1', host: '10.0.0.1', port: 1 });
    assert.equal(parsed().staticHosts.length, 1);
    assert.equal(parseConfig(['--static-hosts=10.0.0.1:1,,10.0.0.2:2,'])!.staticHosts.length, 2, 'empty entries are skipped');
  });

  it('refuses a host without port, a bad port, https, no backends and duplicates', () => {
    const flag = '--static-hosts';
    refuses(['--static-hosts=10.0.0.1'], flag, /^"10\.0\.0\.1" has no port$/, /^write host:port, e.g\. 10\.0\.0\.1:8000$/);
    refuses(['--static-hosts=http://vllm-0'], flag, /has no port/, /vllm-0:8000/);
    refuses(['--static-hosts=[::1]'], flag, /has no port/, /\[::1\]:8000/);
    refuses(['--static-hosts=10.0.0.1:70000'], flag, /port "70000" is not 1-65535/, /decimal digits/);
    for (const port of ['0', '0x50', '80a', '', '-1']) refuses([`--static-hosts=10.0.0.1:${port}`], flag, /is not 1-65535/);
    refuses(['--static-hosts=https://vllm-0:8443'], flag, /only http backends/, /http:\/\/host:port/);
    refuses(['--static-hosts=grpc://vllm-0:8443'], flag, /only http backends/);
    refuses(['--static-hosts=,'], flag, /"," names no backend/, /host:port/);
    refuses(['--static-hosts= , '], flag, /names no backend/);
    refuses(['--static-hosts=a:1,a:1'], flag, /a:1 is listed twice/, /each backend once/);
    refuses(['--static-hosts=vllm-0:1,http://VLLM-0:1/v1'], flag, /vllm-0:1 is listed twice/);
    refuses(['--static-hosts=999.1.1.1:80'], flag, /"999\.1\.1\.1" is not an IPv4 address/);
    refuses(['--static-hosts=:80'], flag, /has no host/);
    refuses(['--static-hosts=::1:80'], flag, /is not host:port or a URL/, /brackets/);
    refuses(['--static-hosts=[vllm-0]:80'], flag, /brackets hold IPv6 addresses only/);
    refuses(['--static-hosts=10.0.0.1:80:81'], flag, /is not 1-65535/);
  });

  it('a name that does not resolve, or two that resolve to one address, is refused at start', async () => {
    await assert.rejects(
      resolveStaticHosts([parseStaticHost('no-such-backend.invalid:8000')]),
      isConfigError('--static-hosts', /cannot resolve "no-such-backend\.invalid"/, /IP address/),
    );
    const { address } = await lookup('localhost');
    const hosts = [parseStaticHost('localhost:8000'), parseStaticHost(`${address.includes(':') ? `[${address}]` : address}:8000`)];
    await assert.rejects(resolveStaticHosts(hosts), isConfigError('--static-hosts', /"localhost:8000" and ".+" are both/, /each backend once/));
  });

  it('spreads --static-models and --static-owned-by over the hosts', () => {
    const cards = staticModelCards(2, 'qwen;llama,qwen', 'vllm,sglang');
    assert.deepEqual(
      cards.map((list) => list!.map((c) => `${c.id}/${c.owned_by}`)),
      [['qwen/vllm', 'llama/vllm'], ['qwen/sglang']],
    );
    assert.deepEqual(
      staticModelCards(2, 'm', undefined).map((l) => l![0]!.owned_by),
      ['vllm', 'vllm'],
    );
    assert.throws(
      () => staticModelCards(3, 'a,b', undefined),
      isConfigError('--static-models', /has 2 entries but --static-hosts has 3/, /one entry per host/),
    );
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
    assert.equal((await loadRouteConfig(join(dir, 'routes.json'))).routes.match('/v1/chat/completions')?.model, 'gpt-3.5-turbo');
    assert.equal((await loadRouteConfig(join(dir, 'routes.yaml'))).routes.match('/v1/x')?.owned_by, 'sglang');
  });
  it("seed 001's mappings: (model, owned_by) → service_name, looked up by engine or for any engine", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'routes-'));
    await writeFile(
      join(dir, 'routes.yaml'),
      [
        'mappings:',
        '  - {model: meta-llama/Llama-3.2-1B-Instruct, owned_by: vllm, service_name: ms-llama-32-1b-llm-d-modelservice-decode}',
        '  - {model: meta-llama/Llama-3.2-1B-Instruct, owned_by: sglang, service_name: llama-sglang}',
        '  - {model: qwen, service_name: qwen-any}',
      ].join('\n'),
    );
    const loaded = await loadRouteConfig(join(dir, 'routes.yaml'));
    const { routes } = loaded;
    const mappings = new MappingTable(loaded.mappings);
    assert.equal(routes.list().length, 0);
    assert.deepEqual(mappings.servicesFor('meta-llama/Llama-3.2-1B-Instruct', 'vllm'), ['ms-llama-32-1b-llm-d-modelservice-decode']);
    assert.deepEqual(mappings.servicesFor('meta-llama/Llama-3.2-1B-Instruct', undefined), ['ms-llama-32-1b-llm-d-modelservice-decode', 'llama-sglang']);
    assert.equal(mappings.servicesFor('meta-llama/Llama-3.2-1B-Instruct', 'trtllm'), undefined, 'no mapping for that engine: not pinned');
    assert.deepEqual(mappings.servicesFor('qwen', 'sglang'), ['qwen-any'], 'an any-engine mapping covers every engine');
    assert.equal(mappings.servicesFor('other', undefined), undefined);
    assert.deepEqual([...new Set(loaded.mappings.map((mapping) => mapping.service_name))].sort(), [
      'llama-sglang',
      'ms-llama-32-1b-llm-d-modelservice-decode',
      'qwen-any',
    ]);
  });
  it('the example config/routes.json shipped with the project loads', async () => {
    const { routes: table } = await loadRouteConfig(fileURLToPath(new URL('../../config/routes.json', import.meta.url)));
    assert.equal(table.match('/v1/completions')?.owned_by, 'vllm');
  });

  it('a bad file is a --route-config error naming the file and the field path', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'routes-'));
    const cases: [string, string, RegExp][] = [
      ['bad.json', '[{"name":"a"}]', /bad\.json: routes\[0\]\.path_prefix must be a non-empty string/],
      ['bad.json', '[{"name":"a","path_prefix":"/","modle":"x"}]', /bad\.json: routes\[0\]\.modle is not a known route field/],
      ['bad.json', '[{"name":"a","path_prefix":"/"},{"name":"b","path_prefix":"v1"}]', /routes\[1\]\.path_prefix must start with '\/'/],
      ['bad.json', '[{"name":"a","path_prefix":"/"},{"name":"a","path_prefix":"/b"}]', /routes\[1\]\.name "a" is used twice/],
      ['bad.json', '{"name":"a"}', /bad\.json: "name" is not a known section \(routes, mappings\)/],
      ['bad.json', '{"routes":{}}', /bad\.json: expected an array/],
      ['bad.json', '{"mappings":[{"model":"m"}]}', /mappings\[0\]\.service_name must be a non-empty string/],
      ['bad.json', '{"mappings":[{"model":"m","service_name":"My_Svc"}]}', /mappings\[0\]\.service_name "My_Svc" is not a Kubernetes Service name/],
      ['bad.json', '{"mappings":[{"model":"m","service_name":"s","engine":"vllm"}]}', /mappings\[0\]\.engine is not a known mapping field/],
      [
        'bad.json',
        '{"mappings":[{"model":"m","owned_by":"vllm","service_name":"a"},{"model":"m","owned_by":"vllm","service_name":"b"}]}',
        /mappings\[1\] maps m \(vllm\) a second time/,
      ],
      ['bad.json', '[{"name": ', /bad\.json is not valid JSON/],
      ['bad.txt', '[{"name": ', /bad\.txt is not valid JSON/],
      ['bad.yaml', 'routes:\n  - name: a\n   path_prefix: /\n', /bad\.yaml is not valid YAML: .*line 3/],
    ];
    for (const [name, text, message] of cases) {
      await writeFile(join(dir, name), text);
      await assert.rejects(loadRouteConfig(join(dir, name)), isConfigError('--route-config', message));
    }
    await assert.rejects(loadRouteConfig(join(dir, 'missing.json')), isConfigError('--route-config', /cannot read .*missing\.json: ENOENT/, /check the path/));
    await writeFile(join(dir, 'bad.yaml'), 'routes:\n  - name: a\n   path_prefix: /\n');
    await assert.rejects(
      loadRouteConfig(join(dir, 'bad.yaml')),
      (err: unknown) => err instanceof ConfigError && !err.message.includes('\n'),
      "YAML's code frame is left out",
    );
  });
});

describe('a BUFFERED body of exactly --max-body-size (1 MiB), end to end', () => {
  /** A chat body padded to exactly `bytes`. */
  function chatBodyOf(bytes: number): string {
    const unpadded = Buffer.byteLength(chatBody({ model: QWEN, padding: '' }));
    const body = chatBody({ model: QWEN, padding: 'x'.repeat(bytes - unpadded) });
    assert.equal(Buffer.byteLength(body), bytes);
    return body;
  }

  /**
   * Sends `body` through the Envoy double (its own buffer limit well above) to llm-extproc started
   * from `--max-body-size=1MiB`; `grpcMaxReceiveBytes` replaces the parsed gRPC limit, which no flag
   * can set that low any more, so the control gets there by building the Config by hand.
   */
  async function send(body: string, grpcMaxReceiveBytes?: number): Promise<EnvoyResponse> {
    const pod = await startSimulator({ engine: 'vllm', models: [QWEN], host: '127.0.0.51', port: 0 });
    try {
      const config = parseConfig([
        `--static-hosts=${pod.address}`,
        '--host=127.0.0.1',
        '--port=0',
        '--admin-host=127.0.0.1',
        '--admin-port=0',
        '--probe-interval=60s',
        '--max-body-size=1MiB',
      ])!;
      const service = await startService(grpcMaxReceiveBytes === undefined ? config : { ...config, grpcMaxReceiveBytes }, createLogger('silent'));
      const envoy = new EnvoyDouble({
        extProcTarget: `127.0.0.1:${service.grpcPort}`,
        processingMode: { requestBodyMode: 'BUFFERED' },
        bufferLimitBytes: 4 * MiB,
        messageTimeoutMs: 10_000,
      });
      try {
        await service.prober.probeAll();
        await envoy.connect();
        return await envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body });
      } finally {
        await envoy.close();
        await service.stop();
      }
    } finally {
      await pod.close();
    }
  }

  it('is routed (200 from the backend); one byte more is 413 from llm-extproc', async () => {
    const exact = await send(chatBodyOf(MiB));
    assert.equal(exact.status, 200, exact.details);
    assert.equal(exact.localReply, false);
    assert.equal(exact.requestBodySentUpstream?.length, MiB, 'the whole body reached the backend');

    const over = await send(chatBodyOf(MiB + 1));
    assert.equal(over.status, 413);
    assert.equal(JSON.parse(over.body.toString()).error.code, 'request_too_large', "llm-extproc's answer, not Envoy's buffer overflow");
  });

  it('control: with the old rule (gRPC limit = body limit) the same body fails in grpc-js and Envoy answers 500', async () => {
    const exact = await send(chatBodyOf(MiB), MiB);
    assert.equal(exact.status, 500);
    assert.equal(exact.grpcStatus?.code, 8, `RESOURCE_EXHAUSTED: ${exact.grpcStatus?.message}`);
  });
});
