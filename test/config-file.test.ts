import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { parse as parseYaml } from 'yaml';
import { type Config, parseConfig, settingDocs } from '../src/config/config.js';
import { ConfigError } from '../src/config/errors.js';
import { configJsonSchema } from '../src/config/json-schema.js';
import { REFERENCE_FILE, SCHEMA_FILE, schemaText, withSettingsTable } from '../src/config/reference.js';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const MAIN = join(ROOT, 'dist/src/main.js');

async function configFile(text: string, name = 'llm-extproc.yaml'): Promise<string> {
  const path = join(await mkdtemp(join(tmpdir(), 'llm-extproc-config-')), name);
  await writeFile(path, text);
  return path;
}

/** The ConfigError that parsing throws, asserting it is one. */
function refusal(argv: string[], env: Record<string, string> = {}): ConfigError {
  try {
    parseConfig(argv, env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return err;
  }
  assert.fail(`accepted: ${argv.join(' ')} ${JSON.stringify(env)}`);
}

const parse = (argv: string[], env: Record<string, string> = {}): Config => parseConfig(argv, env)!;

describe('the config file', () => {
  it('holds the settings by name, with YAML lists, numbers and booleans', async () => {
    const path = await configFile(`
static-hosts:
  - 10.0.0.1:8000
  - 10.0.0.2:8000
probe-interval: 10
passive-ejection: 0
unhealthy-threshold: 3
log-level: debug
routing-logic: load_aware
demo: false
scheduling:
  filters:
    - type: label-selector
      parameters: { selector: tier=gold }
`);
    const config = parse([`--config=${path}`]);
    assert.deepEqual(
      config.staticHosts.map((host) => host.spec),
      ['10.0.0.1:8000', '10.0.0.2:8000'],
    );
    assert.equal(config.probeIntervalMs, 10_000, 'a bare number is seconds, as on the command line');
    assert.equal(config.passiveEjection, 0);
    assert.equal(config.unhealthyThreshold, 3);
    assert.equal(config.logLevel, 'debug');
    assert.equal(config.routingLogic, 'load_aware');
    assert.equal(config.configFile, path);
    assert.deepEqual(config.schedulingSection, {
      document: { filters: [{ type: 'label-selector', parameters: { selector: 'tier=gold' } }] },
      source: `${path}: scheduling`,
    });
  });

  it('flags override env vars, which override the file, which overrides the defaults', async () => {
    const path = await configFile('static-hosts: 10.0.0.1:8000\nprobe-interval: 10s\nprobe-timeout: 3s\nmodels-interval: 40s\n');
    const env = { LLM_EXTPROC_PROBE_INTERVAL: '20s', LLM_EXTPROC_PROBE_TIMEOUT: '4s' };
    const config = parse([`--config=${path}`, '--probe-interval=30s'], env);
    assert.equal(config.probeIntervalMs, 30_000, 'flag over env and file');
    assert.equal(config.probeTimeoutMs, 4_000, 'env over file');
    assert.equal(config.modelsIntervalMs, 40_000, 'file over default');
    assert.equal(config.metricsIntervalMs, 1_000, 'default');
  });

  it('LLM_EXTPROC_CONFIG names the file too, and env alone configures everything', async () => {
    const path = await configFile('static-hosts: 10.0.0.3:8000\n');
    assert.equal(parse([], { LLM_EXTPROC_CONFIG: path }).staticHosts[0]!.spec, '10.0.0.3:8000');
    const config = parse([], { LLM_EXTPROC_STATIC_HOSTS: '10.0.0.4:8000', LLM_EXTPROC_DEMO: 'false', LLM_EXTPROC_ADMIN_PORT: '9090' });
    assert.equal(config.staticHosts[0]!.spec, '10.0.0.4:8000');
    assert.equal(config.adminPort, 9090);
  });

  it('warns about LLM_EXTPROC_* variables that name no setting, without refusing them', () => {
    const config = parse(['--static-hosts=10.0.0.1:8000'], { LLM_EXTPROC_PROBE_INTERVALL: '5s', LLM_EXTPROC_NODE_CACHE: '/tmp' });
    assert.deepEqual(config.warnings.length, 2);
    assert.match(config.warnings[0]!, /^LLM_EXTPROC_NODE_CACHE is not a setting/);
    assert.match(config.warnings[1]!, /^LLM_EXTPROC_PROBE_INTERVALL is not a setting/);
  });

  describe('reports each mistake where it was made', () => {
    it('a bad value in the file names the file and the key, not a flag nobody wrote', async () => {
      const path = await configFile('static-hosts: 10.0.0.1:8000\nprobe-interval: 5x\n');
      const err = refusal([`--config=${path}`]);
      assert.equal(err.flag, `${path}: probe-interval`);
      assert.match(err.message, /"5x" is not a duration/);
    });
    it('a bad env value names the variable', () => {
      const err = refusal(['--static-hosts=10.0.0.1:8000'], { LLM_EXTPROC_PROBE_TIMEOUT: '20s' });
      assert.equal(err.flag, 'LLM_EXTPROC_PROBE_TIMEOUT');
      assert.match(err.message, /longer than --probe-interval/);
      assert.equal(refusal([], { LLM_EXTPROC_STATIC_HOSTS: '10.0.0.1' }).flag, 'LLM_EXTPROC_STATIC_HOSTS', 'errors of the static-hosts parser too');
      assert.equal(refusal(['--static-hosts=10.0.0.1:8000'], { LLM_EXTPROC_DEMO: 'maybe' }).flag, 'LLM_EXTPROC_DEMO');
    });
    it('a flag keeps its own name when the file has a good value for it', async () => {
      const path = await configFile('static-hosts: 10.0.0.1:8000\nprobe-interval: 5s\n');
      assert.equal(refusal([`--config=${path}`, '--probe-interval=5x']).flag, '--probe-interval');
    });
    it('unknown keys, flag-only keys, wrong types, bad YAML, a missing file', async () => {
      const cases: [string, RegExp, RegExp][] = [
        ['static-hosts: 10.0.0.1:8000\nprobe-intervall: 5s\n', /: probe-intervall$/, /is not a setting/],
        ['static-hosts: 10.0.0.1:8000\nprint-config: true\n', /: print-config$/, /cannot be set in the config file/],
        ['static-hosts: 10.0.0.1:8000\nconfig: other.yaml\n', /: config$/, /cannot be set in the config file/],
        ['static-hosts: 10.0.0.1:8000\nprobe-interval: { seconds: 5 }\n', /: probe-interval$/, /must be a string or a number \(got object\)/],
        ['static-hosts: 10.0.0.1:8000\nlog-level: [info]\n', /: log-level$/, /got a list/],
        ['static-hosts: 10.0.0.1:8000\ndemo: "yes"\n', /: demo$/, /must be true or false/],
        ['static-hosts: 10.0.0.1:8000\nlog-level: ""\n', /: log-level$/, /is empty/],
        ['static-hosts: [10.0.0.1:8000\n', /^--config$/, /is not valid YAML/],
        ['probe-interval: 5s\nprobe-interval: 6s\n', /^--config$/, /not valid YAML: Map keys must be unique/],
        ['- 10.0.0.1:8000\n', /^--config$/, /expected a mapping of settings/],
      ];
      for (const [text, flag, message] of cases) {
        const err = refusal([`--config=${await configFile(text)}`]);
        assert.match(err.flag, flag, text);
        assert.match(err.message, message, text);
      }
      const missing = refusal(['--config=/nonexistent/llm-extproc.yaml']);
      assert.equal(missing.flag, '--config');
      assert.match(missing.message, /cannot read \/nonexistent\/llm-extproc.yaml/);
    });
    it('an empty file or a key with no value leaves the defaults', async () => {
      assert.equal(parse([`--config=${await configFile('')}`, '--static-hosts=10.0.0.1:8000']).probeIntervalMs, 5000);
      assert.equal(parse([`--config=${await configFile('probe-interval:\n')}`, '--static-hosts=10.0.0.1:8000']).probeIntervalMs, 5000);
    });
  });
});

describe('--print-config', () => {
  it('prints the effective settings with their origins, as a file that reads back to the same config', async () => {
    const path = await configFile('static-hosts: [127.0.0.1:8000, 127.0.0.2:8000]\nlog-level: warn\nscheduling:\n  picker: { type: random }\n');
    const argv = [`--config=${path}`, '--port=50999', '--print-config'];
    const env = { ...process.env, LLM_EXTPROC_METRICS_INTERVAL: '2s' };
    const { stdout } = await run(process.execPath, [MAIN, ...argv], { env, timeout: 60_000 });
    assert.match(stdout, /^port: "50999" {2}# --port$/m);
    assert.match(stdout, /^log-level: warn {2}# .*llm-extproc\.yaml: log-level$/m);
    assert.match(stdout, /^metrics-interval: 2s {2}# LLM_EXTPROC_METRICS_INTERVAL$/m);
    assert.match(stdout, /^# probe-interval: 5s {2}# default$/m, 'defaults are listed commented out');
    assert.match(stdout, /^# static-models:$/m, 'unset settings are listed commented out');
    // Read back as a config file (with the env var's value now in it), it gives the same Config.
    const printed = await configFile(stdout, 'printed.yaml');
    const again = parse([`--config=${printed}`]);
    const original = parse(
      argv.filter((arg) => arg !== '--print-config'),
      { LLM_EXTPROC_METRICS_INTERVAL: '2s' },
    );
    const comparable = (config: Config) => ({ ...config, configFile: undefined, printConfig: false, schedulingSection: config.schedulingSection?.document });
    assert.deepEqual(comparable(again), comparable(original));
    assert.deepEqual(parseYaml(stdout).scheduling, { picker: { type: 'random' } });
  });

  it('never prints the admin token', async () => {
    const env = { ...process.env, LLM_EXTPROC_ADMIN_TOKEN: 'tok-s3cret-value' };
    const { stdout } = await run(process.execPath, [MAIN, '--demo', '--print-config'], { env, timeout: 60_000 });
    assert.match(stdout, /^admin-token: <redacted> {2}# LLM_EXTPROC_ADMIN_TOKEN$/m);
    assert.doesNotMatch(stdout, /tok-s3cret-value/);
  });

  it('refuses a broken configuration instead of printing it (exit 2, one line)', async () => {
    const path = await configFile('static-hosts: 10.0.0.1:8000\nprobe-interval: 5x\n');
    const failure = await run(process.execPath, [MAIN, `--config=${path}`, '--print-config'], { timeout: 60_000 }).then(
      () => assert.fail('printed a broken configuration'),
      (err: { code: number; stderr: string; stdout: string }) => err,
    );
    assert.equal(failure.code, 2);
    assert.equal(failure.stdout, '');
    assert.equal(failure.stderr.trim().split('\n').length, 1);
    assert.match(failure.stderr, /llm-extproc\.yaml: probe-interval: "5x" is not a duration/);
  });
});

describe('the generated reference', () => {
  it(`${SCHEMA_FILE} and ${REFERENCE_FILE} match the settings table (npm run config-docs regenerates them)`, async () => {
    assert.equal(await readFile(join(ROOT, SCHEMA_FILE), 'utf8'), schemaText(), `${SCHEMA_FILE} is stale: run npm run config-docs`);
    const reference = await readFile(join(ROOT, REFERENCE_FILE), 'utf8');
    assert.equal(reference, withSettingsTable(reference), `${REFERENCE_FILE} is stale: run npm run config-docs`);
  });

  it('the drift check can fail: a changed help text shows up in the table', async () => {
    const reference = await readFile(join(ROOT, REFERENCE_FILE), 'utf8');
    const changed = settingDocs().map((setting) => (setting.name === 'port' ? { ...setting, help: 'something else' } : setting));
    const { settingsTable } = await import('../src/config/reference.js');
    assert.notEqual(withSettingsTable(reference, settingsTable(changed)), reference);
  });

  it('the JSON Schema accepts what the parser accepts and refuses what it refuses', async () => {
    const ajv = new Ajv2020({ strict: true, allErrors: true });
    const validate = ajv.compile(configJsonSchema(settingDocs()));
    const good = parseYaml(`
static-hosts: [10.0.0.1:8000]
probe-interval: 10
probe-timeout: 500ms
max-body-size: 16MiB
admin-port: 9000
port: "50051"
routing-logic: round_robin
log-level: debug
demo: false
scheduling:
  filters: [{ type: label-selector, parameters: { selector: a=b } }]
  scorers: [{ type: queue, weight: 2 }]
  picker: { type: max-score }
`);
    assert.ok(validate(good), JSON.stringify(validate.errors));
    parse([`--config=${await configFile(JSON.stringify(good))}`]);
    // Every default is valid for its own setting.
    const defaults = Object.fromEntries(
      settingDocs().flatMap((setting) => (setting.fileKey && setting.default !== undefined ? [[setting.name, setting.default]] : [])),
    );
    assert.ok(validate(defaults), JSON.stringify(validate.errors));
    for (const bad of [
      { 'probe-intervall': '5s' },
      { 'probe-interval': '5x' },
      { 'routing-logic': 'fastest' },
      { port: 70000 },
      { demo: 'yes' },
      { help: true },
      { scheduling: { picker: { type: 'nope' } } },
    ]) {
      assert.equal(validate(bad), false, JSON.stringify(bad));
    }
  });
});
