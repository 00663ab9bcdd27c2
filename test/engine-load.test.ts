import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { ENGINE_METRIC_NAMES, type EngineReading, readEngineMetrics } from '../src/discovery/load/engines.js';
import { parsePromText } from '../src/discovery/load/prom-text.js';
import type { EngineMetrics } from '../src/discovery/load/types.js';
import { type Engine, type Simulator, startSimulator } from '../src/simulator/simulator.js';
import { until } from './support/wait.js';

/** Fixture files live in the source tree (tests run from dist/test). */
function fixture(name: string): string {
  return readFileSync(new URL(`../../test/fixtures/metrics/${name}`, import.meta.url), 'utf8');
}

/** An answer as the scraper reads it: the engine names only, then the figures. */
function read(text: string, hint?: string): EngineReading {
  return readEngineMetrics(parsePromText(text, { names: ENGINE_METRIC_NAMES }), hint);
}

function figures(text: string, hint?: string): EngineMetrics & { engine: string } {
  const reading = read(text, hint);
  assert.ok(reading.ok, `understood, but: ${reading.ok ? '' : reading.reason}`);
  return { engine: reading.engine, ...reading.metrics };
}

function garbage(text: string, hint?: string): string {
  const reading = read(text, hint);
  assert.ok(!reading.ok, `refused, but read as ${JSON.stringify(reading)}`);
  return reading.reason;
}

const IDLE = { active_models: {}, waiting_models: {}, max_active_models: 0 };

/** A minimal vLLM answer with the three load gauges. */
function vllm(running: string, waiting: string, usage: string, extra = ''): string {
  return `vllm:num_requests_running{model_name="m"} ${running}\nvllm:num_requests_waiting{model_name="m"} ${waiting}\nvllm:kv_cache_usage_perc{model_name="m"} ${usage}\n${extra}`;
}

describe('engine answers → load figures', () => {
  it('vLLM: queues, KV-cache usage as 0..100, the latest LoRA series, cache size from block_size x num_gpu_blocks', () => {
    assert.deepEqual(figures(fixture('vllm.txt')), {
      engine: 'vllm',
      // The fixture's three LoRA series: the one with the largest value (the latest update) is
      // neither the first nor the last, so reading either of those would fail here.
      active_models: { 'sql-lora': 1, 'chat-lora': 1 },
      waiting_models: { 'sql-lora': 1 },
      max_active_models: 4,
      running_queue_size: 3,
      waiting_queue_size: 2,
      kv_cache_usage_percent: 43.75,
      kv_cache_max_token_capacity: 16 * 27423,
    });
  });

  it('older vLLM: usage from vllm:gpu_cache_usage_perc when vllm:kv_cache_usage_perc is absent', () => {
    const text = fixture('vllm-v0.txt');
    // Control: the fixture really lacks the current name, so only the fallback can give 12.5.
    assert.doesNotMatch(text, /kv_cache_usage_perc/);
    assert.deepEqual(figures(text), {
      engine: 'vllm',
      ...IDLE,
      running_queue_size: 5,
      waiting_queue_size: 1,
      kv_cache_usage_percent: 12.5,
      kv_cache_max_token_capacity: 16 * 2048,
    });
  });

  it('vLLM: the current usage name wins over the old one when both are served', () => {
    const text = vllm('0', '0', '0.5', 'vllm:gpu_cache_usage_perc{model_name="m"} 0.25\n');
    assert.equal(figures(text).kv_cache_usage_percent, 50);
  });

  it('SGLang: queues, token usage as 0..100, cache size from page_size x num_pages', () => {
    assert.deepEqual(figures(fixture('sglang.txt')), {
      engine: 'sglang',
      ...IDLE,
      running_queue_size: 7,
      waiting_queue_size: 4,
      kv_cache_usage_percent: 62,
      kv_cache_max_token_capacity: 182656,
    });
  });

  it('several series of a gauge (per model, per data-parallel engine): queues summed, usage the largest, capacity the largest', () => {
    const text = [
      'vllm:num_requests_running{engine="0",model_name="a"} 2',
      'vllm:num_requests_running{engine="1",model_name="b"} 5',
      'vllm:num_requests_waiting{engine="0",model_name="a"} 1',
      'vllm:num_requests_waiting{engine="1",model_name="b"} 3',
      'vllm:kv_cache_usage_perc{engine="0",model_name="a"} 0.75',
      'vllm:kv_cache_usage_perc{engine="1",model_name="b"} 0.25',
      'vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="100"} 1',
      'vllm:cache_config_info{block_size="16",engine="1",num_gpu_blocks="300"} 1',
    ].join('\n');
    const got = figures(text);
    assert.equal(got.running_queue_size, 7);
    assert.equal(got.waiting_queue_size, 4);
    assert.equal(got.kv_cache_usage_percent, 75);
    assert.equal(got.kv_cache_max_token_capacity, 4800);
  });

  it('LoRA: adapters counted per mention, blanks trimmed; a NaN series is skipped; no series → none known', () => {
    const lora = [
      'vllm:lora_requests_info{max_lora="2",running_lora_adapters="a, b,a",waiting_lora_adapters=" c ,"} 20',
      'vllm:lora_requests_info{max_lora="8",running_lora_adapters="stale",waiting_lora_adapters=""} NaN',
      'vllm:lora_requests_info{max_lora="2",running_lora_adapters="old",waiting_lora_adapters=""} 10',
    ].join('\n');
    const got = figures(vllm('1', '0', '0', lora));
    assert.deepEqual([got.active_models, got.waiting_models, got.max_active_models], [{ a: 2, b: 1 }, { c: 1 }, 2]);
    const none = figures(vllm('1', '0', '0'));
    assert.deepEqual([none.active_models, none.waiting_models, none.max_active_models], [{}, {}, 0]);
  });

  it('an adapter called __proto__ is counted like any other', () => {
    const got = figures(vllm('1', '0', '0', 'vllm:lora_requests_info{max_lora="1",running_lora_adapters="__proto__",waiting_lora_adapters=""} 1\n'));
    assert.deepEqual(Object.entries(got.active_models), [['__proto__', 1]]);
  });

  it('cache size unknown (vLLM says None before sizing its cache, or no info series) → 0', () => {
    assert.equal(figures(vllm('0', '0', '0', 'vllm:cache_config_info{block_size="16",num_gpu_blocks="None"} 1\n')).kv_cache_max_token_capacity, 0);
    assert.equal(figures(vllm('0', '0', '0')).kv_cache_max_token_capacity, 0);
  });
});

describe('what is not a load answer is garbage, never zero load', () => {
  it('no engine gauges at all: an unknown engine, an exporter, an empty answer', () => {
    const reason = 'no vLLM or SGLang load gauges (vllm:num_requests_running, sglang:num_running_reqs ...)';
    assert.equal(garbage('trtllm_num_requests_running 3\ntrtllm_num_requests_waiting 0\ntrtllm_kv_cache_utilization 0.5\n'), reason);
    assert.equal(garbage('# HELP process_cpu_seconds_total CPU\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 12.5\n'), reason);
    assert.equal(garbage(''), reason);
  });

  it('an engine answer missing a required gauge', () => {
    assert.equal(garbage('vllm:num_requests_running 1\nvllm:kv_cache_usage_perc 0.1\n'), 'vllm: no vllm:num_requests_waiting series');
    assert.equal(
      garbage('vllm:num_requests_running 1\nvllm:num_requests_waiting 0\n'),
      'vllm: no vllm:kv_cache_usage_perc or vllm:gpu_cache_usage_perc series',
    );
    assert.equal(garbage('sglang:num_running_reqs 1\nsglang:token_usage 0.1\n'), 'sglang: no sglang:num_queue_reqs series');
  });

  it('NaN (unknown) in a required gauge, even in one series of several', () => {
    assert.equal(garbage(vllm('NaN', '0', '0.1')), 'vllm: vllm:num_requests_running{model_name="m"} is NaN (unknown)');
    assert.equal(garbage(vllm('1', '0', 'NaN')), 'vllm: vllm:kv_cache_usage_perc{model_name="m"} is NaN (unknown)');
    assert.equal(
      garbage(`${vllm('1', '0', '0.1')}vllm:num_requests_waiting{model_name="other"} NaN\n`),
      'vllm: vllm:num_requests_waiting{model_name="other"} is NaN (unknown)',
    );
  });

  it('values that cannot be what the gauge means', () => {
    assert.equal(garbage(vllm('+Inf', '0', '0.1')), 'vllm: vllm:num_requests_running{model_name="m"} is Infinity');
    assert.equal(garbage(vllm('1', '-1', '0.1')), 'vllm: vllm:num_requests_waiting{model_name="m"} is -1');
    assert.equal(garbage(vllm('1.5', '0', '0.1')), 'vllm: vllm:num_requests_running is 1.5, not a request count');
    // A 0..100 percentage where a 0..1 fraction belongs would otherwise read as 4200 %.
    assert.equal(garbage(vllm('1', '0', '42')), 'vllm: vllm:kv_cache_usage_perc is 42, not a 0..1 fraction');
  });

  it('both engines in one answer: the pod label or owned_by decides; without either it is ambiguous', () => {
    const both = `${vllm('1', '0', '0.1')}sglang:num_running_reqs 9\nsglang:num_queue_reqs 9\nsglang:token_usage 0.9\n`;
    assert.equal(figures(both, 'vllm').running_queue_size, 1);
    assert.equal(figures(both, 'sglang').running_queue_size, 9);
    assert.equal(garbage(both), 'the answer has both vllm and sglang load gauges and the pod does not say which engine it runs');
    assert.equal(garbage(both, 'trtllm-serve'), 'the answer has both vllm and sglang load gauges and the pod does not say which engine it runs');
  });

  it('the hint only settles ties: a pod labelled sglang that answers like vLLM is read as vLLM', () => {
    assert.equal(figures(fixture('vllm.txt'), 'sglang').engine, 'vllm');
    assert.equal(figures(fixture('sglang.txt'), 'vllm').engine, 'sglang');
  });
});

describe("our simulator's /metrics", () => {
  const sims: Simulator[] = [];
  const requests: AbortController[] = [];
  after(async () => {
    for (const request of requests) request.abort();
    await Promise.all(sims.map((sim) => sim.close()));
  });

  async function metricsOf(sim: Simulator): Promise<string> {
    const response = await fetch(`${sim.url}/metrics`, { signal: AbortSignal.timeout(5000) });
    assert.equal(response.status, 200);
    return response.text();
  }

  /** Sends a completion the simulator holds (its first token is a minute away). */
  function hold(sim: Simulator, promptChars: number): void {
    const controller = new AbortController();
    requests.push(controller);
    fetch(`${sim.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', prompt: 'x'.repeat(promptChars), max_tokens: 1 }),
      signal: controller.signal,
    }).catch(() => undefined);
  }

  const cases: [Engine, string, number][] = [
    // 100 prompt tokens in a 1024-token cache; vLLM rounds up to whole 16-token blocks (112).
    ['vllm', '127.0.0.100', (112 / 1024) * 100],
    ['sglang', '127.0.0.101', (100 / 1024) * 100],
  ];
  for (const [engine, host, usagePercent] of cases) {
    it(`${engine}: idle, then one running and two waiting, as the simulator counts them`, async () => {
      const sim = await startSimulator({ engine, host, models: ['m'], maxRunning: 1, kvCacheTokens: 1024, timeToFirstTokenMs: 60_000 });
      sims.push(sim);
      const idle = { engine, ...IDLE, running_queue_size: 0, waiting_queue_size: 0, kv_cache_usage_percent: 0, kv_cache_max_token_capacity: 1024 };
      assert.deepEqual(figures(await metricsOf(sim)), idle);
      for (let i = 0; i < 3; i++) hold(sim, 400);
      await until(
        'the simulator to hold three requests',
        () => sim.stats(),
        (stats) => stats.running === 1 && stats.waiting === 2,
      );
      assert.deepEqual(figures(await metricsOf(sim)), { ...idle, running_queue_size: 1, waiting_queue_size: 2, kv_cache_usage_percent: usagePercent });
    });
  }
});
