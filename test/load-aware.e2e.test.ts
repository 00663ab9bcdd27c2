import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Simulator } from '../src/simulator/simulator.js';
import { type Cluster, chatBody, JSON_HEADERS, type PodSpec, QWEN, withCluster } from './support/harness.js';
import { until } from './support/wait.js';

const PODS: PodSpec[] = [
  { engine: 'vllm', models: [QWEN], host: '127.0.0.31' },
  { engine: 'sglang', models: [QWEN], host: '127.0.0.32' },
];
// Scrapes only when the test asks (scrapeAll), figures fresh until the next: the test decides when the picture changes.
const FLAGS = ['--metrics-interval=1h', '--metrics-staleness=1h'];

/**
 * Another llm-extproc replica's traffic: `count` long generations sent straight to the pod, so
 * its engine reports them while our in-flight count for it stays 0.
 */
async function otherReplicasLoad(pod: Simulator, count: number): Promise<() => Promise<void>> {
  const controller = new AbortController();
  const body = JSON.stringify({ model: QWEN, stream: true, max_tokens: 30_000, messages: [{ role: 'user', content: 'long' }] });
  const streams = Array.from({ length: count }, () =>
    fetch(`${pod.url}/v1/chat/completions`, { method: 'POST', headers: JSON_HEADERS, body, signal: controller.signal })
      .then((response) => response.body?.pipeTo(new WritableStream()))
      .catch(() => undefined),
  );
  await until(
    `${count} generations running on ${pod.address}`,
    () => pod.stats().running,
    (n) => n === count,
  );
  return async () => {
    controller.abort();
    await Promise.all(streams);
    await until(
      `${pod.address} idle again`,
      () => pod.stats().running,
      (n) => n === 0,
    );
  };
}

/** Where `count` requests in a row (each finished before the next) were routed. */
async function destinations(cluster: Cluster, count: number): Promise<string[]> {
  const seen: string[] = [];
  for (let i = 0; i < count; i++) {
    const response = await cluster.envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody({ model: QWEN }) });
    assert.equal(response.status, 200);
    seen.push(response.upstream!);
  }
  return seen;
}

describe('load_aware through Envoy, against the engines’ own /metrics', () => {
  it('prefers the pod whose engine reports the shorter queue, and follows a change at the next scrape', async () => {
    await withCluster({ pods: PODS, flags: ['--routing-logic=load_aware', ...FLAGS] }, async (cluster) => {
      const [a, b] = cluster.pods as [Simulator, Simulator];
      const releaseA = await otherReplicasLoad(a, 6);
      await cluster.service.scraper.scrapeAll();
      assert.equal(cluster.service.endpoints.get(a.address)!.load?.metrics.running_queue_size, 6, 'the scrape read the engine');
      assert.deepEqual(new Set(await destinations(cluster, 10)), new Set([b.address]), 'all to the idle engine');

      await releaseA();
      const releaseB = await otherReplicasLoad(b, 6);
      assert.deepEqual(new Set(await destinations(cluster, 4)), new Set([b.address]), 'until the next scrape, the old picture stands');
      await cluster.service.scraper.scrapeAll();
      assert.deepEqual(new Set(await destinations(cluster, 10)), new Set([a.address]), 'one scrape later, all to the other');
      await releaseB();
      await cluster.settled();
    });
  });

  it('control: least_outstanding_requests, blind to the engines, splits the same traffic between both', async () => {
    await withCluster({ pods: PODS, flags: FLAGS }, async (cluster) => {
      const [a] = cluster.pods as [Simulator, Simulator];
      const releaseA = await otherReplicasLoad(a, 6);
      await cluster.service.scraper.scrapeAll();
      assert.equal(new Set(await destinations(cluster, 20)).size, 2);
      await releaseA();
    });
  });
});
