import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import YAML from 'yaml';
import { parseConfig } from '../src/config/config.js';
import { parseCli } from '../src/simulator/cli.js';
import { REPO_ROOT } from './support/xds-protos.js';

/**
 * No Docker engine runs here: the Dockerfile and the compose file are parsed and cross-checked
 * against each other, the repository and llm-extproc's own flag parser.
 */

const dockerfile = readFileSync(path.join(REPO_ROOT, 'Dockerfile'), 'utf8');
const dockerignore = readFileSync(path.join(REPO_ROOT, '.dockerignore'), 'utf8')
  .split('\n')
  .map((line) => line.trim())
  .filter((line) => line && !line.startsWith('#'));
const compose = YAML.parse(readFileSync(path.join(REPO_ROOT, 'docker-compose.yaml'), 'utf8'), { uniqueKeys: true, merge: true }) as {
  services: Record<string, Service>;
};

interface Service {
  build?: string;
  image?: string;
  entrypoint?: string[];
  command?: string[];
  volumes?: string[];
  ports?: string[];
  network_mode?: string;
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
}

/** Joins continuation lines, so each instruction is one line. */
const instructions = dockerfile.replace(/\\\n/g, ' ').split('\n');
const args = Object.fromEntries(
  instructions.flatMap((line) => {
    const arg = /^ARG\s+(\w+)=(\S+)/.exec(line);
    return arg ? [[arg[1]!, arg[2]!]] : [];
  }),
);
const stages = dockerfile.split(/^(?=FROM\s)/m).filter((stage) => stage.startsWith('FROM'));
const runtime = stages.at(-1)!;

/** The runtime stage's `ENV name=value` lines, as the container's environment. */
function imageEnv(): Record<string, string> {
  return Object.fromEntries([...runtime.matchAll(/^ENV\s+([A-Z_][A-Z0-9_]*)=(\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
}

/** The image's ENTRYPOINT as a list. */
function entrypoint(): string[] {
  const line = instructions.findLast((text) => text.startsWith('ENTRYPOINT'));
  return JSON.parse(line!.slice('ENTRYPOINT'.length)) as string[];
}

/** llm-extproc's command line in the compose file, as the image runs it. */
function extprocArgv(): string[] {
  const service = compose.services['llm-extproc']!;
  assert.equal(service.entrypoint, undefined, 'llm-extproc runs the image entrypoint');
  return service.command ?? [];
}

describe('Dockerfile', () => {
  it('builds on a pinned Node 24 LTS image, in two stages', () => {
    const base = args.NODE_IMAGE;
    assert.match(base ?? '', /^node:24\.\d+\.\d+-\w+-slim$/, `NODE_IMAGE ${base}: a full version, not a moving tag`);
    const fromArg = '$' + '{NODE_IMAGE}'; // Docker's syntax, not a template
    assert.deepEqual(
      stages.map((stage) => /^FROM\s+(\S+)/.exec(stage)![1]),
      [fromArg, fromArg],
    );
  });

  it('runs non-root under tini, with the production dependencies only and OCI labels', () => {
    assert.match(runtime, /npm ci --omit=dev/);
    assert.match(runtime, /^USER\s+node\b/m);
    assert.match(runtime, /apt-get install -y --no-install-recommends tini/);
    assert.deepEqual(entrypoint().slice(0, 2), ['/usr/bin/tini', '--'], 'signals reach node through an init');
    assert.deepEqual(entrypoint().slice(2), ['node', 'dist/src/main.js']);
    for (const label of ['title', 'description', 'version', 'licenses']) assert.match(runtime, new RegExp(`org\\.opencontainers\\.image\\.${label}=`));
  });

  it('exposes the ports llm-extproc listens on by default, with the admin port open in the image', () => {
    const config = parseConfig(['--demo'], imageEnv())!;
    assert.match(runtime, new RegExp(`^EXPOSE\\s+${config.port}\\s+${config.adminPort}$`, 'm'));
    assert.equal(config.adminHost, '0.0.0.0', "the image's env opens the admin port to kubelet and Prometheus");
    const healthcheck = instructions.find((line) => line.startsWith('HEALTHCHECK')) ?? '';
    assert.ok(healthcheck.includes(`127.0.0.1:${config.adminPort}/health`), healthcheck);
  });

  it('copies only files that exist and that .dockerignore lets through', () => {
    const copies = [...dockerfile.matchAll(/^COPY\s+(?!--from)(.+)\s+\S+$/gm)].flatMap((m) => m[1]!.split(/\s+/));
    assert.ok(copies.length >= 4, copies.join(' '));
    for (const source of copies) {
      assert.ok(existsSync(path.join(REPO_ROOT, source)), `COPY ${source}: missing`);
      assert.ok(!dockerignore.includes(source), `COPY ${source}: excluded by .dockerignore`);
    }
  });

  it('control: a moving tag would be refused', () => {
    assert.doesNotMatch('node:24-slim', /^node:24\.\d+\.\d+-\w+-slim$/);
  });
});

describe('docker-compose.yaml', () => {
  const simulators = Object.entries(compose.services).filter(([, service]) => service.entrypoint?.includes('dist/src/simulator/cli.js'));

  it('runs one simulated vLLM and one simulated SGLang backend, from the image, with working health checks', () => {
    const engines = simulators.map(([, service]) => parseCli(service.command ?? [])![0]!);
    assert.deepEqual(engines.map((options) => options.engine).sort(), ['sglang', 'vllm']);
    for (const [name, service] of simulators) {
      const [options] = parseCli(service.command ?? [])!;
      assert.equal(options!.host, '0.0.0.0', `${name} listens beyond its own loopback`);
      assert.ok(service.healthcheck?.test.join(' ').includes(`127.0.0.1:${options!.port}/health`), `${name}'s health check asks its own port`);
      assert.equal(service.image, compose.services['llm-extproc']!.image, `${name} runs the llm-extproc image`);
    }
  });

  it("llm-extproc's flags parse, name exactly the simulators, and keep ext_proc on loopback", () => {
    const config = parseConfig(extprocArgv(), imageEnv())!;
    assert.equal(config.host, '127.0.0.1', 'ext_proc listens on loopback only: Envoy shares the namespace (docs/trust-boundary.md)');
    const expected = simulators.map(([name, service]) => `${name}:${parseCli(service.command ?? [])![0]!.port}`).sort();
    assert.deepEqual(config.staticHosts.map((host) => host.spec).sort(), expected);
    for (const [name] of simulators) assert.equal(compose.services['llm-extproc']!.depends_on?.[name]?.condition, 'service_healthy');
  });

  it('mounts the route file it names, from the repository', () => {
    const config = parseConfig(extprocArgv(), imageEnv())!;
    const mount = compose.services['llm-extproc']!.volumes?.map((volume) => volume.split(':')).find(([, target]) => target === config.routeConfig);
    assert.ok(mount, `a volume mounts ${config.routeConfig}`);
    assert.ok(existsSync(path.join(REPO_ROOT, mount[0]!)), `${mount[0]} exists`);
  });

  it("publishes Envoy's listener and keeps both admin ports on the host's loopback", () => {
    const ports = compose.services['llm-extproc']!.ports ?? [];
    assert.ok(ports.includes('8080:8080'));
    assert.ok(ports.includes('127.0.0.1:9901:9901'));
    assert.ok(ports.includes(`127.0.0.1:${parseConfig(extprocArgv(), imageEnv())!.adminPort}:8081`));
    assert.equal(compose.services.envoy!.network_mode, 'service:llm-extproc');
  });

  it('pins the Envoy image to a release that has the graceful ext_proc close (1.34+)', () => {
    const match = /^envoyproxy\/envoy:v1\.(\d+)\.\d+$/.exec(compose.services.envoy!.image ?? '');
    assert.ok(match, `envoy image ${compose.services.envoy!.image}: a full version, not -latest`);
    assert.ok(Number(match[1]) >= 34);
  });
});
