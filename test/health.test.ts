import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import type { Endpoint, ModelCard } from '../src/discovery/endpoint.js';
import { PassiveHealth } from '../src/discovery/health/passive.js';
import { Prober, type ProberOptions } from '../src/discovery/health/prober.js';
import { EndpointRegistry } from '../src/discovery/registry.js';
import type { RequestOutcome } from '../src/extproc/types.js';
import { createLogger } from '../src/log.js';
import { Metrics } from '../src/metrics.js';
import { Lease } from '../src/scheduling/ledger.js';
import { card, OK_OUTCOME } from './support/endpoints.js';

const silent = createLogger('silent');
const MODELS = JSON.stringify({ object: 'list', data: [{ id: 'm', object: 'model', created: 1, owned_by: 'vllm' }] });

/** A backend whose every answer `status()` decides; it records the paths asked for. */
async function backend(host: string) {
  const paths: string[] = [];
  const state = { status: 200 };
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    paths.push(req.url ?? '');
    res.writeHead(state.status, { 'content-type': 'application/json' });
    res.end(req.url === '/v1/models' ? MODELS : '{}');
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  servers.push(server);
  return { address: `${host}:${(server.address() as AddressInfo).port}`, paths, state };
}
const servers: Server[] = [];
after(async () => {
  for (const server of servers) server.closeAllConnections();
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
});

function proberFor(address: string, options: Partial<ProberOptions> = {}, fixedModels?: ModelCard[]) {
  const registry = new EndpointRegistry();
  registry.upsert({ address, name: 'pod', namespace: 'ns', labels: {}, fixedModels });
  const prober = new Prober(
    registry,
    { intervalMs: 60_000, timeoutMs: 2000, unhealthyThreshold: 2, healthyThreshold: 1, modelsIntervalMs: 60_000, ...options },
    new Metrics(registry, () => 0),
    silent,
  );
  return { registry, prober, endpoint: registry.get(address)! };
}

describe('active health', () => {
  it('reads /v1/models first, then /health until --models-interval has passed', async () => {
    const pod = await backend('127.0.0.81');
    const { prober, endpoint } = proberFor(pod.address);
    await prober.probeAll();
    await prober.probeAll();
    await prober.probeAll();
    assert.deepEqual(pod.paths, ['/v1/models', '/health', '/health']);
    assert.equal(endpoint.healthy, true);
    endpoint.health.modelsReadAt = performance.now() - 60_001; // the models interval has run out
    await prober.probeAll();
    assert.deepEqual(pod.paths.slice(3), ['/v1/models']);
  });

  it('--static-models endpoints are only ever asked for /health', async () => {
    const pod = await backend('127.0.0.82');
    const { prober, endpoint } = proberFor(pod.address, {}, [card('fixed')]);
    await prober.probeAll();
    await prober.probeAll();
    assert.deepEqual(pod.paths, ['/health', '/health']);
    assert.deepEqual(
      endpoint.models.map((m) => m.id),
      ['fixed'],
    );
  });

  it('a healthy endpoint goes out after --unhealthy-threshold failures in a row, not before', async () => {
    const pod = await backend('127.0.0.83');
    const { prober, endpoint } = proberFor(pod.address, { unhealthyThreshold: 3 });
    await prober.probeAll();
    pod.state.status = 500;
    await prober.probeAll();
    await prober.probeAll();
    assert.equal(endpoint.healthy, true, 'two failures of three');
    pod.state.status = 200;
    await prober.probeAll();
    pod.state.status = 500;
    await prober.probeAll();
    await prober.probeAll();
    assert.equal(endpoint.healthy, true, 'a success in between starts the count again');
    await prober.probeAll();
    assert.equal(endpoint.healthy, false);
    assert.equal(endpoint.lastError, 'GET /health: answered 500');
  });

  it('tells state listeners of health flips and the end of an ejection, not of probes that confirm the state', async () => {
    const pod = await backend('127.0.0.86');
    const { registry, prober, endpoint } = proberFor(pod.address, { unhealthyThreshold: 1 });
    const told: string[] = [];
    registry.onStateChange((changed) => told.push(`${changed.address} ${changed.usable ? 'usable' : 'out'}`));
    await prober.probeAll();
    await prober.probeAll();
    assert.deepEqual(told, [`${pod.address} usable`], 'the first pass changes health; the second confirms it');
    pod.state.status = 503;
    await prober.probeAll();
    await prober.probeAll();
    assert.deepEqual(told.slice(1), [`${pod.address} out`]);
    pod.state.status = 200;
    await prober.probeAll();
    endpoint.health.ejected = true;
    endpoint.health.ejectedUntil = performance.now() - 1;
    await prober.probeAll();
    assert.deepEqual(told.slice(2), [`${pod.address} usable`, `${pod.address} usable`], 'back to healthy, then the ejection over');
  });

  it('an unhealthy endpoint returns after --healthy-threshold successes in a row (no flapping)', async () => {
    const pod = await backend('127.0.0.84');
    const { prober, endpoint } = proberFor(pod.address, { unhealthyThreshold: 1, healthyThreshold: 2 });
    pod.state.status = 503;
    await prober.probeAll();
    pod.state.status = 200;
    await prober.probeAll();
    assert.equal(endpoint.healthy, false, 'one success of two');
    pod.state.status = 503;
    await prober.probeAll();
    pod.state.status = 200;
    await prober.probeAll();
    assert.equal(endpoint.healthy, false, 'a failure in between starts the count again');
    await prober.probeAll();
    assert.equal(endpoint.healthy, true);
  });

  it('a passing probe ends an ejection only once its back-off has run out', async () => {
    const pod = await backend('127.0.0.85');
    const { registry, prober, endpoint } = proberFor(pod.address);
    await prober.probeAll();
    endpoint.health.ejected = true;
    endpoint.health.ejectedUntil = performance.now() + 60_000;
    registry.usabilityChanged(endpoint);
    await prober.probeAll();
    assert.equal(endpoint.usable, false, 'still within the back-off');
    endpoint.health.ejectedUntil = performance.now() - 1;
    await prober.probeAll();
    assert.equal(endpoint.usable, true);
    assert.deepEqual(
      (registry.lookup('m', undefined) as { healthy: readonly Endpoint[] }).healthy.map((e) => e.address),
      [pod.address],
      'and the candidate set has it again',
    );
  });
});

describe('passive health', () => {
  function passive(threshold = 3, baseEjectionMs = 1000) {
    const registry = new EndpointRegistry();
    registry.upsert({ address: '10.0.0.1:8000', name: 'pod', namespace: 'ns', labels: {}, fixedModels: [card('m')] });
    const endpoint = registry.get('10.0.0.1:8000')!;
    registry.update(endpoint, { healthy: true });
    const ejected: Endpoint[] = [];
    const health = new PassiveHealth(registry, { threshold, baseEjectionMs }, (e) => ejected.push(e), silent);
    const record = (...outcomes: RequestOutcome[]) => {
      for (const outcome of outcomes) health.record(endpoint, outcome);
    };
    return { registry, endpoint, ejected, record };
  }
  const status = (code: number): RequestOutcome => ({ kind: 'response', status: code });
  const NO_RESPONSE: RequestOutcome = { kind: 'no_response' };
  const ABANDONED: RequestOutcome = { kind: 'abandoned' };

  it('--passive-ejection 5xx answers in a row eject the endpoint; fewer, or a success between, do not', () => {
    const { endpoint, ejected, record, registry } = passive(3);
    record(status(500), status(503), status(200), status(502), status(500));
    assert.equal(endpoint.usable, true);
    record(status(504));
    assert.equal(endpoint.usable, false);
    assert.deepEqual(ejected, [endpoint]);
    const lookup = registry.lookup('m', undefined);
    assert.equal(lookup.kind === 'found' && lookup.healthy.length, 0, 'the candidate set lost it at once');
  });

  it('4xx answers are the client’s: never held against the backend', () => {
    const { endpoint, record } = passive(2);
    record(status(400), status(404), status(429), status(413));
    assert.equal(endpoint.usable, true);
  });

  it('a stream ended without response headers counts only once Envoy has shown it sends them', () => {
    const { endpoint, record } = passive(2);
    record(NO_RESPONSE, NO_RESPONSE, NO_RESPONSE);
    assert.equal(endpoint.usable, true, 'response_header_mode SKIP: no stream ever carries them');
    record(status(200), NO_RESPONSE, NO_RESPONSE);
    assert.equal(endpoint.usable, false);
  });

  it('abandoned requests (client gone mid-body, our own stream failure) never count', () => {
    const { endpoint, record } = passive(2);
    record(status(200), ABANDONED, ABANDONED, ABANDONED, status(500));
    assert.equal(endpoint.usable, true, 'one failure of two: abandoned ones neither count nor reset');
    record(ABANDONED, status(500));
    assert.equal(endpoint.usable, false);
  });

  it('each further ejection doubles the back-off, up to 10x; serving well as long forgives', () => {
    const { endpoint, record } = passive(1, 1000);
    const ejectionMs = () => endpoint.health.ejectedUntil - performance.now();
    const lengths: number[] = [];
    for (let i = 0; i < 6; i++) {
      record(status(500));
      lengths.push(Math.round(ejectionMs() / 1000));
      // The probe returns it at once (as the prober does after the back-off).
      endpoint.health.ejected = false;
      endpoint.health.returnedAt = performance.now();
    }
    assert.deepEqual(lengths, [1, 2, 4, 8, 10, 10]);
    endpoint.health.returnedAt = performance.now() - 10_001;
    record(status(500));
    assert.equal(Math.round(ejectionMs() / 1000), 1);
  });

  it('outcomes of requests to an endpoint that has left the registry are ignored', () => {
    const { endpoint, registry, record } = passive(1);
    registry.remove(endpoint.address);
    record(status(500));
    assert.equal(endpoint.health.ejected, false);
  });

  it('--passive-ejection=0 turns it off', () => {
    const { endpoint, record } = passive(0);
    record(status(500), status(500), status(500));
    assert.equal(endpoint.usable, true);
  });
});

describe('registry membership', () => {
  const identity = (labels: Record<string, string> = {}) => ({ address: '10.0.0.9:8000', name: 'pod-9', namespace: 'ns', labels });

  it('in-flight counts stay exact across removal and return (the same Endpoint object comes back)', () => {
    const registry = new EndpointRegistry();
    registry.upsert(identity());
    const first = registry.get('10.0.0.9:8000')!;
    const leases = [new Lease(first, undefined), new Lease(first, undefined)];
    registry.remove(first.address);
    assert.equal(registry.get(first.address), undefined);
    assert.equal(registry.departedCount, 1);
    registry.upsert(identity());
    const back = registry.get('10.0.0.9:8000')!;
    assert.equal(back, first);
    assert.equal(back.inFlight, 2);
    for (const lease of leases) lease.release(OK_OUTCOME);
    assert.equal(back.inFlight, 0);
    // Control: with a fresh object on return (the bug this guards), the count would read 0 while
    // two requests were still running, and go to -2 as they ended.
  });

  it('a removed endpoint is kept only while its requests run, and forgets what it was told', () => {
    const registry = new EndpointRegistry();
    registry.upsert(identity());
    const endpoint = registry.get('10.0.0.9:8000')!;
    registry.update(endpoint, { models: [card('m')], healthy: true });
    const lease = new Lease(endpoint, undefined);
    registry.remove(endpoint.address);
    assert.equal(endpoint.healthy, false);
    assert.deepEqual(endpoint.models, []);
    lease.release(OK_OUTCOME);
    registry.upsert({ ...identity(), address: '10.0.0.10:8000' });
    assert.equal(registry.departedCount, 0, 'swept on the next membership change');
    registry.upsert(identity());
    assert.notEqual(registry.get('10.0.0.9:8000'), endpoint, 'nothing held it: a new object');
  });

  it('removal takes an endpoint out of every candidate set at once', () => {
    const registry = new EndpointRegistry();
    registry.upsert(identity());
    registry.update(registry.get('10.0.0.9:8000')!, { models: [card('m')], healthy: true });
    assert.equal(registry.lookup('m', undefined).kind, 'found');
    registry.remove('10.0.0.9:8000');
    assert.equal(registry.lookup('m', undefined).kind, 'unknown_model');
  });

  it('pod labels llm-d.ai/model and llm-d.ai/engine-type stand in until the first probe answers', () => {
    const registry = new EndpointRegistry();
    registry.upsert(identity({ 'llm-d.ai/model': 'qwen', 'llm-d.ai/engine-type': 'sglang' }));
    const lookup = registry.lookup('qwen', 'sglang');
    assert.equal(lookup.kind, 'found');
    assert.equal(lookup.kind === 'found' && lookup.healthy.length, 0, 'known (503, not 404) but not usable before a probe');
    const endpoint = registry.get('10.0.0.9:8000')!;
    registry.update(endpoint, { models: [card('llama')], healthy: true });
    assert.equal(registry.lookup('qwen', undefined).kind, 'unknown_model', 'the probe answer replaces the stand-in');
    registry.upsert(identity({ 'llm-d.ai/model': 'other' }));
    assert.equal(registry.lookup('llama', undefined).kind, 'found', 'labels never override what the pod said');
  });

  it('listeners hear of each join and departure once', () => {
    const registry = new EndpointRegistry();
    const events: string[] = [];
    registry.onMembership({ added: (e) => events.push(`+${e.address}`), removed: (e) => events.push(`-${e.address}`) });
    registry.upsert(identity());
    registry.upsert(identity({ a: 'b' }));
    registry.remove('10.0.0.9:8000');
    registry.remove('10.0.0.9:8000');
    assert.deepEqual(events, ['+10.0.0.9:8000', '-10.0.0.9:8000']);
  });
});
