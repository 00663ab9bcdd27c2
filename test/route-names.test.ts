/**
 * The route-name contract with Envoy (seed 004: "route names match in both Envoy and ExtProc
 * configs"): Envoy sends the matched route's name as request attribute `xds.route_name`;
 * llm-extproc picks the routes-file entry of that name, and matches by path_prefix only when no
 * name arrives or the name is not in the file (then it counts and logs the mismatch once).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { UnknownRouteNames } from '../src/routing/route-names.js';
import { RouteTable } from '../src/routing/routes.js';
import { type Cluster, captureLogs, JSON_HEADERS, LLAMA, QWEN, startCluster } from './support/harness.js';
import { REPO_ROOT } from './support/xds-protos.js';

/** The shipped routes file: chat-route (/v1/chat → Qwen), completion-route (/v1/completions → Llama on vllm). */
const SHIPPED_ROUTES = join(REPO_ROOT, 'config', 'routes.json');

describe('route names from Envoy (attribute xds.route_name)', () => {
  let cluster: Cluster;
  const logs = captureLogs();
  // One model per pod, so the pod a request reached tells which route gave its model.
  const llamaPod = '127.0.0.11';
  const qwenPod = '127.0.0.12';
  before(async () => {
    cluster = await startCluster({
      pods: [
        { engine: 'vllm', models: [LLAMA], host: llamaPod },
        { engine: 'vllm', models: [QWEN], host: qwenPod },
      ],
      flags: [`--route-config=${SHIPPED_ROUTES}`],
      logs: logs.stream,
    });
  });
  after(async () => cluster.close());

  /** A chat request naming no model: its route gives it. `/v1/chat/...` prefix-matches chat-route. */
  const chat = (attributes?: Record<string, string>) =>
    cluster.envoy.request({
      method: 'POST',
      path: '/v1/chat/completions',
      headers: JSON_HEADERS,
      body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }] }),
      attributes,
    });
  const host = (upstream: string | undefined) => upstream?.split(':')[0];
  const unknownCount = async () => {
    const text = await cluster.service.metrics.registry.metrics();
    return Number(/^llm_extproc_route_name_unknown_total (\d+)$/m.exec(text)?.[1]);
  };
  const unknownLogs = (name: string) => logs.lines.filter((line) => line.routeName === name && /not in the routes file/.test(String(line.msg)));

  it('no attribute: the path prefix picks the route (chat-route → Qwen)', async () => {
    const response = await chat();
    assert.equal(response.status, 200);
    assert.equal(host(response.upstream), qwenPod);
  });

  it("Envoy's route name beats a path that prefix-matches another route", async () => {
    const response = await chat({ 'xds.route_name': 'completion-route' });
    assert.equal(response.status, 200);
    assert.equal(host(response.upstream), llamaPod, 'completion-route gives Llama although /v1/chat matches chat-route');
    assert.equal(await unknownCount(), 0);
  });

  it('a name the routes file lacks is counted every time, logged once, and falls back to the prefix', async () => {
    for (let i = 0; i < 3; i++) {
      const response = await chat({ 'xds.route_name': 'legacy-route' });
      assert.equal(response.status, 200);
      assert.equal(host(response.upstream), qwenPod, 'fell back to chat-route by path_prefix');
    }
    assert.equal(await unknownCount(), 3);
    assert.equal(unknownLogs('legacy-route').length, 1);
  });

  it('an empty route name (an unnamed Envoy route) is no name', async () => {
    const before = await unknownCount();
    const response = await chat({ 'xds.route_name': '' });
    assert.equal(host(response.upstream), qwenPod);
    assert.equal(await unknownCount(), before);
  });
});

describe('UnknownRouteNames', () => {
  const table = new RouteTable([{ name: 'chat-route', path_prefix: '/v1/chat' }]);
  const setup = (maxLogged: number) => {
    const warnings: unknown[][] = [];
    let count = 0;
    const log = { warn: (...args: unknown[]) => warnings.push(args) } as unknown as ConstructorParameters<typeof UnknownRouteNames>[1];
    const check = new UnknownRouteNames({ inc: () => count++ }, log, maxLogged);
    return { check, warnings, count: () => count };
  };

  it('remembers at most maxLogged names, counts every unknown request, ignores known names and none', () => {
    const { check, warnings, count } = setup(2);
    for (const name of ['a', 'b', 'c', 'a', 'd', 'chat-route', undefined]) check.check(name, table);
    assert.equal(count(), 5);
    assert.equal(warnings.length, 2, 'names beyond the bound are only counted');
    assert.match(String(warnings[1]![1]), /only counted/);
  });

  it('a new route table (a reload) logs a still-unknown name again', () => {
    const { check, warnings } = setup(8);
    check.check('a', table);
    check.check('a', table);
    check.check('a', new RouteTable([{ name: 'chat-route', path_prefix: '/v1/chat' }]));
    assert.equal(warnings.length, 2);
  });
});
