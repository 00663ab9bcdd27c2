import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Cluster, chatBody, JSON_HEADERS, QWEN, startCluster } from './support/harness.js';

/** Two vLLM pods serving the same model, each its own endpoint group. */
const PODS = [
  { engine: 'vllm' as const, models: [QWEN], host: '127.0.0.61', group: 'qwen-a' },
  { engine: 'vllm' as const, models: [QWEN], host: '127.0.0.62', group: 'qwen-b' },
];

const routesFile = (mappings: { model: string; owned_by?: string; service_name: string }[]) => JSON.stringify({ routes: [], mappings });

describe("a reload applies the route file's mappings", () => {
  let cluster: Cluster;
  let file: string;

  /** The groups the next requests for QWEN (on `ownedBy`, or any engine) land in. */
  const groupsHit = async (ownedBy?: string): Promise<string[]> => {
    const groups = new Set<string>();
    for (let i = 0; i < 6; i++) {
      const answer = await cluster.envoy.request({
        method: 'POST',
        path: '/v1/chat/completions',
        headers: JSON_HEADERS,
        body: chatBody({ model: QWEN, owned_by: ownedBy }),
      });
      assert.equal(answer.status, 200);
      groups.add(PODS[cluster.pods.findIndex((pod) => pod.address === answer.upstream)]!.group);
    }
    return [...groups].sort();
  };
  /**
   * Reloads now. The file watcher may have applied the change already (then this finds nothing
   * new): what the requests do afterwards is what the tests check.
   */
  const reloaded = async () => assert.ok(['applied', 'unchanged'].includes(await cluster.service.reload()));
  const admin = (method: string, path: string, body?: unknown) =>
    fetch(`http://127.0.0.1:${cluster.service.adminPort}${path}`, {
      method,
      headers: { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });

  before(async () => {
    file = join(await mkdtemp(join(tmpdir(), 'llm-extproc-mappings-')), 'routes.json');
    await writeFile(file, routesFile([{ model: QWEN, owned_by: 'vllm', service_name: 'qwen-a' }]));
    cluster = await startCluster({ pods: PODS, flags: [`--route-config=${file}`, '--admin-insecure-writes'] });
  });
  after(async () => cluster.close());

  it('control: the starting mapping pins (model, vllm) to qwen-a', async () => {
    assert.deepEqual(await groupsHit('vllm'), ['qwen-a']);
  });

  it('a changed mapping pins new requests to the new group, and the API lists it', async () => {
    await writeFile(file, routesFile([{ model: QWEN, owned_by: 'vllm', service_name: 'qwen-b' }]));
    await reloaded();
    assert.deepEqual(await groupsHit('vllm'), ['qwen-b']);
    const listed = (await (await admin('GET', '/admin/api/routing')).json()) as { mappings: { service_name: string; source: string }[] };
    assert.deepEqual(
      listed.mappings.filter((mapping) => mapping.source === 'routes-file').map((mapping) => mapping.service_name),
      ['qwen-b'],
    );
  });

  it('a mapping naming an endpoint group that does not exist rejects the reload; the running mapping stays', async () => {
    await writeFile(file, routesFile([{ model: QWEN, owned_by: 'vllm', service_name: 'qwen-c' }]));
    assert.equal(await cluster.service.reload(), 'rejected');
    assert.deepEqual(await groupsHit('vllm'), ['qwen-b']);
  });

  it('a mapping for a key the admin API has mapped rejects the reload; an empty file unpins', async () => {
    await writeFile(file, routesFile([]));
    await reloaded();
    assert.equal((await admin('POST', '/admin/api/routing', { model: QWEN, service_name: 'qwen-a' })).status, 201);
    assert.deepEqual(await groupsHit(), ['qwen-a'], 'the admin any-engine mapping pins');
    await writeFile(file, routesFile([{ model: QWEN, service_name: 'qwen-b' }]));
    assert.equal(await cluster.service.reload(), 'rejected');
    assert.deepEqual(await groupsHit(), ['qwen-a'], 'the admin mapping still pins');
    assert.equal((await admin('DELETE', `/admin/api/routing?model=${encodeURIComponent(QWEN)}`)).status, 200);
    // No mapping: both pods are candidates. Two requests held open land on both (least outstanding).
    const held = [];
    for (let i = 0; i < 2; i++)
      held.push(
        await cluster.envoy.open({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody({ model: QWEN, owned_by: 'vllm' }) }),
      );
    assert.deepEqual(held.map((exchange) => exchange.upstream).sort(), cluster.pods.map((pod) => pod.address).sort(), 'no mapping: both pods serve it');
    await Promise.all(held.map((exchange) => exchange.finish()));
    await cluster.settled();
  });
});
