import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { startSamplePlugin } from '../plugins/sample/server.js';
import type { Service } from '../src/app/service.js';
import { createLogger } from '../src/log.js';
import { type Simulator, startSimulator } from '../src/simulator/simulator.js';
import type { EnvoyDouble } from './support/envoy/envoy-double.js';
import { chatBody, JSON_HEADERS, QWEN, startBehindEnvoy } from './support/harness.js';

/** A simulator on `host` at a port whose last digit is `digit`: the sample plugin keeps names ending in 2. */
async function simulatorEndingIn(host: string, digit: number): Promise<Simulator> {
  for (let port = 20_000 + digit; port < 60_000; port += 10) {
    try {
      return await startSimulator({ engine: 'vllm', models: [QWEN], host, port, timeToFirstTokenMs: 1, interTokenMs: 1 });
    } catch {
      // in use: the next one
    }
  }
  throw new Error(`no free port ending in ${digit} on ${host}`);
}

describe("seed 000's external filter, end to end: llm-extproc → the sample plugin server, through Envoy", () => {
  let sims: Simulator[];
  let plugin: { url: string; close(): Promise<void> };
  let pluginClosed = false;
  let service: Service;
  let envoy: EnvoyDouble;

  before(async () => {
    sims = [await simulatorEndingIn('127.0.0.67', 2), await simulatorEndingIn('127.0.0.68', 3)];
    plugin = await startSamplePlugin({ port: 0, host: '127.0.0.69', log: createLogger('silent') });
    const env = { EXTERNAL_HTTP_FILTERS: JSON.stringify([{ name: 'sample', url: `${plugin.url}/external/sample`, timeout_ms: 2000 }]) };
    ({ service, envoy } = await startBehindEnvoy([`--static-hosts=${sims.map((sim) => sim.address).join(',')}`], { env }));
  });
  after(async () => {
    await envoy.close();
    await service.stop();
    if (!pluginClosed) await plugin.close();
    await Promise.all(sims.map((sim) => sim.close()));
  });

  it('every request goes to the pod the plugin keeps (its name ends in 2)', async () => {
    for (let i = 0; i < 10; i++) {
      const response = await envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody({ model: QWEN }) });
      assert.equal(response.status, 200);
      assert.equal(response.upstream, sims[0]!.address);
    }
    const metrics = await (await fetch(`http://127.0.0.1:${service.adminPort}/metrics`)).text();
    assert.match(metrics, /^llm_extproc_external_filter_calls_total\{plugin="sample",result="success"\} 10$/m);
  });

  it('the plugin gone: fail-open (the default) routes as if it were not there', async () => {
    await plugin.close();
    pluginClosed = true;
    const seen = new Set<string>();
    for (let i = 0; i < 12; i++) {
      const response = await envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody({ model: QWEN }) });
      assert.equal(response.status, 200);
      seen.add(response.upstream!);
    }
    assert.equal(seen.size, 2);
  });
});

describe('misbehaving external filters through Envoy: fail-open routes around them, fail-closed answers 503 naming them', () => {
  let sim: Simulator;
  let pluginServer: Server;
  let service: Service;
  let envoy: EnvoyDouble;
  /** How the fake plugin answers the next calls. */
  let behaviour: 'garbage' | 'error' | 'hang' | 'reset' = 'garbage';

  before(async () => {
    sim = await startSimulator({ engine: 'vllm', models: [QWEN], host: '127.0.0.70', port: 0, timeToFirstTokenMs: 1, interTokenMs: 1 });
    pluginServer = createServer((req, res) => {
      req.resume();
      if (behaviour === 'garbage') res.end('<html>not json</html>');
      else if (behaviour === 'error') res.writeHead(500).end('boom');
      else if (behaviour === 'reset') req.socket.destroy();
      // 'hang': never answers; the call's timeout ends it
    });
    await new Promise<void>((resolve) => pluginServer.listen(0, '127.0.0.71', resolve));
    const url = `http://127.0.0.71:${(pluginServer.address() as AddressInfo).port}/ext`;
    const env = {
      EXTERNAL_HTTP_FILTERS: JSON.stringify([
        { name: 'lenient', url, timeout_ms: 300 },
        { name: 'strict', url, timeout_ms: 300, fail_open: false },
      ]),
    };
    ({ service, envoy } = await startBehindEnvoy([`--static-hosts=${sim.address}`], { env }));
  });
  after(async () => {
    await envoy.close();
    await service.stop();
    pluginServer.closeAllConnections();
    await new Promise((resolve) => pluginServer.close(resolve));
    await sim.close();
  });

  for (const kind of ['garbage', 'error', 'hang', 'reset'] as const) {
    it(`a plugin that answers ${kind}: the fail-closed one is a 503 naming it, after the fail-open one let the request through`, async () => {
      behaviour = kind;
      const response = await envoy.request({ method: 'POST', path: '/v1/chat/completions', headers: JSON_HEADERS, body: chatBody({ model: QWEN }) });
      assert.equal(response.status, 503);
      assert.equal(response.localReply, true);
      const error = JSON.parse(response.body.toString()).error;
      assert.equal(error.code, 'scheduling_plugin_failed');
      assert.match(error.message, /`strict`/);
      assert.doesNotMatch(error.message, /`lenient`/, 'the fail-open plugin did not stop the request');
      assert.deepEqual(
        Object.values(Object.fromEntries(service.endpoints.all().map((endpoint) => [endpoint.address, endpoint.inFlight]))),
        [0],
        'nothing stays counted in flight',
      );
    });
  }
});
