import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { EnvoyResponse } from './support/envoy/envoy-double.js';
import { type Cluster, captureLogs, chatBody, JSON_HEADERS, type PodSpec, QWEN, withCluster } from './support/harness.js';
import { until } from './support/wait.js';

const PODS: PodSpec[] = [
  { engine: 'vllm', models: [QWEN], host: '127.0.0.21' },
  { engine: 'vllm', models: [QWEN], host: '127.0.0.22' },
  { engine: 'sglang', models: [QWEN], host: '127.0.0.23' },
];

interface Sent {
  /** Set when the request was sent after the test's mark (e.g. "the dead pod is out"). */
  afterMark: boolean;
  response: EnvoyResponse;
}

/**
 * `workers` clients sending requests back to back until stopped, as live traffic does.
 * `mark()` flags every request sent from then on.
 */
function liveTraffic(cluster: Cluster, body: string, workers = 4) {
  const sent: Sent[] = [];
  let marked = false;
  let running = true;
  const loops = Array.from({ length: workers }, async () => {
    while (running) {
      const afterMark = marked;
      const response = await cluster.envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body });
      sent.push({ afterMark, response });
    }
  });
  return {
    sent,
    mark: () => {
      marked = true;
    },
    /** Resolves once `count` requests have completed in total. */
    completed: (count: number) =>
      until(
        `${count} requests completed`,
        () => sent.length,
        (n) => n >= count,
        { timeoutMs: 20_000 },
      ),
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
}

describe('failover under live traffic', () => {
  it('a backend killed mid-run is out after --unhealthy-threshold probes and gets no request afterwards', async () => {
    await withCluster({ pods: PODS, flags: ['--passive-ejection=0', '--unhealthy-threshold=2'] }, async (cluster) => {
      const traffic = liveTraffic(cluster, chatBody({ model: QWEN }));
      await traffic.completed(20);
      const victim = cluster.pods[1]!;
      await victim.close();
      await cluster.service.prober.probeAll();
      assert.equal(cluster.service.endpoints.get(victim.address)!.usable, true, 'one failed probe of two: still in');
      await cluster.service.prober.probeAll();
      assert.equal(cluster.service.endpoints.get(victim.address)!.usable, false);
      traffic.mark();
      await traffic.completed(traffic.sent.length + 60);
      await traffic.stop();

      const afterOut = traffic.sent.filter((s) => s.afterMark);
      assert.ok(afterOut.length >= 60);
      assert.deepEqual(
        afterOut.filter((s) => s.response.upstream === victim.address || s.response.status !== 200).map((s) => [s.response.upstream, s.response.status]),
        [],
        'every request after detection went to a live pod and succeeded',
      );
      const survivors = new Set(afterOut.map((s) => s.response.upstream));
      assert.deepEqual([...survivors].sort(), [cluster.pods[0]!.address, cluster.pods[2]!.address].sort());
      await cluster.settled();
    });
  });

  it('passive health: --passive-ejection failed requests in a row eject a backend before any probe runs; it returns after the back-off once a probe passes', async () => {
    const logs = captureLogs();
    await withCluster({ pods: PODS, flags: ['--passive-ejection=5', '--passive-ejection-time=1s'], logs: logs.stream }, async (cluster) => {
      const sick = cluster.pods[2]!; // the only SGLang pod
      const toSick = () =>
        cluster.envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody({ model: QWEN, owned_by: 'sglang' }) });
      sick.setHealthy(false); // it answers 503 (the probes would notice too, but none runs: --probe-interval=60s)
      for (let i = 0; i < 4; i++) assert.equal((await toSick()).upstream, sick.address);
      assert.equal(cluster.service.endpoints.get(sick.address)!.usable, true, 'four failures of five');
      const fifth = await toSick();
      assert.equal(fifth.status, 503);
      assert.equal(fifth.localReply, false, 'the fifth still reached the backend');
      const refused = await toSick();
      assert.equal(refused.status, 503);
      assert.equal(refused.localReply, true, 'now llm-extproc answers: no usable SGLang backend');
      assert.equal(JSON.parse(refused.body.toString()).error.code, 'no_healthy_backend');
      assert.equal(refused.headers['retry-after'], '60', 'retry-after: the probe interval');
      assert.equal(logs.lines.filter((line) => String(line.msg).includes('ejected')).length, 1, 'the ejection is logged once');
      const metrics = await (await fetch(`http://127.0.0.1:${cluster.service.adminPort}/metrics`)).text();
      assert.match(metrics, /^llm_extproc_endpoint_ejections_total 1$/m);
      assert.match(metrics, new RegExp(`^llm_extproc_endpoint_ejected\\{endpoint="${sick.address}",name="${sick.address}"\\} 1$`, 'm'));

      sick.setHealthy(true);
      await cluster.service.prober.probeAll();
      assert.equal(cluster.service.endpoints.get(sick.address)!.usable, false, 'a passing probe within the back-off does not end it');
      const endpoint = cluster.service.endpoints.get(sick.address)!;
      await until('the back-off has run out', () => performance.now() >= endpoint.health.ejectedUntil, Boolean, { timeoutMs: 5000 });
      await cluster.service.prober.probeAll();
      const back = await toSick();
      assert.equal(back.status, 200);
      assert.equal(back.upstream, sick.address);
      await cluster.settled();
    });
  });

  it('control: with --passive-ejection=0 the same failures never eject', async () => {
    await withCluster({ pods: PODS, flags: ['--passive-ejection=0'] }, async (cluster) => {
      const sick = cluster.pods[2]!;
      sick.setHealthy(false);
      for (let i = 0; i < 8; i++) {
        const response = await cluster.envoy.request({
          method: 'POST',
          path: '/v1/chat/completions',
          headers: JSON_HEADERS,
          body: chatBody({ model: QWEN, owned_by: 'sglang' }),
        });
        assert.equal(response.localReply, false);
        assert.equal(response.upstream, sick.address);
      }
    });
  });
});
