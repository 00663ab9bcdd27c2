import type { Logger } from 'pino';
import { parseStaticHost, type StaticHost } from './discovery/static.js';
import { type Simulator, startSimulator } from './simulator/simulator.js';

export interface DemoBackends {
  hosts: StaticHost[];
  close(): Promise<void>;
}

/**
 * `--demo`: two simulated vLLM and two simulated SGLang pods on loopback serving the same Qwen
 * model (one vLLM pod also serves a Llama model), so routing by model and owned_by can be tried
 * with no GPU.
 */
const DEMO_PODS = [
  { engine: 'vllm', host: '127.0.0.1', models: ['Qwen/Qwen2.5-0.5B-Instruct', 'meta-llama/Llama-3.2-1B-Instruct'] },
  { engine: 'vllm', host: '127.0.0.1', models: ['Qwen/Qwen2.5-0.5B-Instruct'] },
  { engine: 'sglang', host: '127.0.0.1', models: ['Qwen/Qwen2.5-0.5B-Instruct'] },
  { engine: 'sglang', host: '127.0.0.1', models: ['Qwen/Qwen2.5-0.5B-Instruct'] },
] as const;

export async function startDemoBackends(log: Logger): Promise<DemoBackends> {
  const simulators: Simulator[] = [];
  try {
    for (const pod of DEMO_PODS) {
      simulators.push(await startSimulator({ host: pod.host, port: 0, engine: pod.engine, models: [...pod.models] }));
    }
  } catch (err) {
    await Promise.all(simulators.map((simulator) => simulator.close()));
    throw err;
  }
  for (const simulator of simulators) {
    log.info({ backend: simulator.address, engine: simulator.engine }, 'demo backend started');
  }
  log.info('demo: run Envoy with envoy/envoy.yaml, then: curl localhost:8080/v1/models');
  return {
    hosts: simulators.map((simulator) => parseStaticHost(simulator.address)),
    close: async () => {
      await Promise.all(simulators.map((simulator) => simulator.close()));
    },
  };
}
