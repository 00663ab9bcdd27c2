import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { chatBody, JSON_HEADERS, type PodSpec, QWEN, withCluster } from './support/harness.js';

const PODS: PodSpec[] = [
  { engine: 'vllm', models: [QWEN], host: '127.0.0.61' },
  { engine: 'sglang', models: [QWEN], host: '127.0.0.62' },
];

async function chainFile(yaml: string): Promise<string> {
  const file = join(await mkdtemp(join(tmpdir(), 'chain-')), 'chain.yaml');
  await writeFile(file, yaml);
  return file;
}

describe('--scheduling-config through Envoy', () => {
  it('a filter that keeps nothing is a 503 naming it; its time is in /metrics', async () => {
    // Static backends have no labels: a selector on one filters every candidate out.
    const file = await chainFile('filters:\n  - {type: label-selector, name: gpu-a100, parameters: {selector: gpu=a100}}\n');
    await withCluster({ pods: PODS, flags: [`--scheduling-config=${file}`] }, async (cluster) => {
      const response = await cluster.envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody({ model: QWEN }) });
      assert.equal(response.status, 503);
      const error = JSON.parse(response.body.toString()).error;
      assert.equal(error.code, 'no_matching_backend');
      assert.match(error.message, /scheduling filter `gpu-a100`/);
      assert.ok(response.headers['retry-after']);
      const metrics = await (await fetch(`http://127.0.0.1:${cluster.service.adminPort}/metrics`)).text();
      assert.match(metrics, /^llm_extproc_scheduling_plugin_duration_seconds_count\{plugin="gpu-a100",type="label-selector",outcome="emptied"\} 1$/m);
    });
  });

  it('scorers and max-score route by the engines’ figures; a filter keeps its subset', async () => {
    const file = await chainFile('filters:\n  - {type: role}\nscorers:\n  - {type: in-flight}\npicker: {type: max-score}\n');
    await withCluster({ pods: PODS, flags: [`--scheduling-config=${file}`] }, async (cluster) => {
      const seen = new Set<string>();
      for (let i = 0; i < 16; i++) {
        const response = await cluster.envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody({ model: QWEN }) });
        assert.equal(response.status, 200);
        seen.add(response.upstream!);
      }
      assert.equal(seen.size, 2, 'unlabelled pods pass `role: decode`, and equal scores spread');
    });
  });

  it('session affinity keeps a session on its pod, and moves it when the pod goes', async () => {
    const file = await chainFile('filters:\n  - {type: session-affinity}\n');
    await withCluster({ pods: PODS, flags: [`--scheduling-config=${file}`] }, async (cluster) => {
      const send = (session: string) =>
        cluster.envoy.request({
          method: 'POST',
          path: '/v1/chat/completions',
          headers: { ...JSON_HEADERS, 'x-session-id': session },
          body: chatBody({ model: QWEN }),
        });
      const first = (await send('conversation-1')).upstream!;
      for (let i = 0; i < 8; i++) assert.equal((await send('conversation-1')).upstream, first, 'the same pod every turn');
      const others = new Set<string>();
      for (let i = 0; i < 16; i++) others.add((await send(`other-${i}`)).upstream!);
      assert.equal(others.size, 2, 'new sessions still spread');

      cluster.podByAddress(first)!.setHealthy(false);
      await cluster.service.prober.probeAll();
      await cluster.service.prober.probeAll();
      const moved = (await send('conversation-1')).upstream!;
      assert.notEqual(moved, first);
      for (let i = 0; i < 4; i++) assert.equal((await send('conversation-1')).upstream, moved, 'and stays on the new pod');
    });
  });
});
