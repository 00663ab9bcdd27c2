import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parsePromText } from '../src/discovery/load/prom-text.js';
import { type Cluster, chatBody, JSON_HEADERS, QWEN, startCluster } from './support/harness.js';

const GOLDEN = fileURLToPath(new URL('../../test/fixtures/metrics.golden.txt', import.meta.url));
const PROMTOOL = '/usr/bin/promtool';
/** prom-client's process metrics: which of their samples exist depends on the runtime (GC kinds seen so far). */
const RUNTIME_PREFIXES = ['llm_extproc_nodejs_', 'llm_extproc_process_'];

/**
 * The exposition's shape without its values: every family's HELP and TYPE lines, then each sample
 * name with the set of label names it carries (sorted, deduplicated). Families in name order.
 */
function expositionShape(text: string): string {
  const families = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const meta = /^# (HELP|TYPE) (\S+)/.exec(line);
    if (!meta) continue;
    const lines = families.get(meta[2]!) ?? [];
    lines.push(line);
    families.set(meta[2]!, lines);
  }
  const labelSets = new Map<string, Set<string>>();
  for (const [name, samples] of parsePromText(text)) {
    const sets = labelSets.get(name) ?? new Set();
    for (const sample of samples) sets.add(`${name}{${Object.keys(sample.labels).sort().join(',')}}`);
    labelSets.set(name, sets);
  }
  const out: string[] = [];
  for (const family of [...families.keys()].sort()) {
    out.push(...families.get(family)!);
    if (RUNTIME_PREFIXES.some((prefix) => family.startsWith(prefix))) continue;
    const names = [...labelSets.keys()].filter(
      (name) => name === family || (name.startsWith(family) && /^_(bucket|sum|count|total|created)$/.test(name.slice(family.length))),
    );
    for (const name of names.sort()) out.push(...[...labelSets.get(name)!].sort());
  }
  return `${out.join('\n')}\n`;
}

/**
 * promtool's findings about our own families. prom-client's runtime gauges carry names promtool
 * dislikes (nodejs_active_handles_total is a gauge): they are the library's, and left out.
 */
async function promtoolFindings(exposition: string): Promise<string[]> {
  const output = await new Promise<string>((resolve) => {
    const child = execFile(PROMTOOL, ['check', 'metrics'], { timeout: 60_000 }, (_err, stdout, stderr) => resolve(stdout + stderr));
    child.stdin!.end(exposition);
  });
  return output.split('\n').filter((line) => line.trim() !== '' && !RUNTIME_PREFIXES.some((prefix) => line.startsWith(prefix)));
}

describe('/metrics', () => {
  let cluster: Cluster;
  let exposition: string;

  before(async () => {
    cluster = await startCluster();
    // One of each answer, so the request families have samples.
    const ask = (body: string) => cluster.envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body });
    assert.equal((await ask(chatBody({ model: QWEN }))).status, 200);
    assert.equal((await ask(chatBody({ model: 'no/such-model' }))).status, 404);
    assert.equal((await ask('{"messages": [')).status, 400);
    await cluster.service.scraper.scrapeAll();
    const answer = await fetch(`http://127.0.0.1:${cluster.service.adminPort}/metrics`);
    assert.equal(answer.status, 200);
    assert.match(answer.headers.get('content-type')!, /^text\/plain; version=0\.0\.4/);
    exposition = await answer.text();
  });
  after(async () => cluster.close());

  it('has the names, HELP, TYPE and label sets of the golden file (UPDATE_GOLDEN=1 rewrites it)', async () => {
    const shape = expositionShape(exposition);
    if (process.env.UPDATE_GOLDEN === '1') await writeFile(GOLDEN, shape);
    assert.equal(
      shape,
      await readFile(GOLDEN, 'utf8'),
      'the exposition changed: check the diff, then UPDATE_GOLDEN=1 node --test dist/test/metrics-exposition.test.js',
    );
  });

  it('control: the shape shows a new label, a changed help text and a missing family', () => {
    const shape = expositionShape(exposition);
    const relabelled = exposition.replace(/^llm_extproc_endpoint_in_flight_requests\{/m, 'llm_extproc_endpoint_in_flight_requests{zone="a",');
    assert.notEqual(expositionShape(relabelled), shape);
    assert.notEqual(expositionShape(exposition.replace('# HELP llm_extproc_active_streams Open', '# HELP llm_extproc_active_streams Closed')), shape);
    const withoutFamily = exposition
      .split('\n')
      .filter((line) => !line.includes('llm_extproc_config_info'))
      .join('\n');
    assert.notEqual(expositionShape(withoutFamily), shape);
  });

  it('keeps every series under the llm_extproc_ prefix, with help text', () => {
    for (const line of exposition.split('\n').filter((text) => text.startsWith('# HELP '))) {
      assert.match(line, /^# HELP llm_extproc_\S+ \S/, line);
    }
  });

  it('passes promtool check metrics (the Prometheus naming and format lint)', async (t) => {
    if (!existsSync(PROMTOOL)) {
      const reason = `${PROMTOOL} is missing (Debian package prometheus; .ci/run installs it)`;
      console.error(`SKIPPED: promtool check metrics: ${reason}`);
      t.skip(reason);
      return;
    }
    assert.deepEqual(await promtoolFindings(exposition), []);
    // Control: a counter without _total is a finding.
    const bad = `${exposition}# HELP llm_extproc_bad_requests A counter misnamed.\n# TYPE llm_extproc_bad_requests counter\nllm_extproc_bad_requests 1\n`;
    assert.deepEqual(await promtoolFindings(bad), ['llm_extproc_bad_requests counter metrics should have "_total" suffix']);
  });
});
