/**
 * An engine's own `/metrics` series → the load figures pickers and external filter plugins see
 * (EngineMetrics). Metric names and labels are the ones vLLM and SGLang export and llm-d's
 * endpoint picker reads (docs: shared/reference/llm-routing-conventions.md §2).
 *
 * What an answer has to hold: the engine's running and waiting gauges and its KV-cache usage.
 * Without them it is not an answer we understand ("garbage"), never zero load: a zero would draw
 * every request to a pod that only failed to say how busy it is. LoRA and cache-size series are
 * optional; their figures are then 0 / {} (the "unknown" EngineMetrics documents).
 *
 * NaN in a required gauge means the engine does not know the figure. EngineMetrics has no way to
 * say "unknown" for it, and a NaN would make every comparison in a picker false, so such an
 * answer is garbage too: the scrape fails and `Endpoint.load` is cleared, leaving the picker on
 * our own in-flight counts. The same goes for a value that cannot be what the gauge means
 * (negative, infinite or fractional request counts, usage outside 0..1). NaN in an optional
 * series makes that series absent.
 */

import type { PromSample, PromSeries } from './prom-text.js';
import type { EngineMetrics } from './types.js';

export type EngineKind = 'vllm' | 'sglang';

interface EngineNames {
  running: string;
  waiting: string;
  /** KV-cache usage as a 0..1 fraction, then older names for it, newest first. */
  kvUsage: readonly string[];
  /** Info gauge whose labels give the cache size: blocks (pages) of some tokens each. */
  cacheConfig: { name: string; blockSize: string; blocks: string };
  /** vLLM's LoRA info gauge. */
  lora?: string;
}

export const ENGINE_NAMES: Readonly<Record<EngineKind, EngineNames>> = {
  vllm: {
    running: 'vllm:num_requests_running',
    waiting: 'vllm:num_requests_waiting',
    // vLLM renamed gpu_cache_usage_perc to kv_cache_usage_perc; older releases still serve the first.
    kvUsage: ['vllm:kv_cache_usage_perc', 'vllm:gpu_cache_usage_perc'],
    cacheConfig: { name: 'vllm:cache_config_info', blockSize: 'block_size', blocks: 'num_gpu_blocks' },
    lora: 'vllm:lora_requests_info',
  },
  sglang: {
    running: 'sglang:num_running_reqs',
    waiting: 'sglang:num_queue_reqs',
    kvUsage: ['sglang:token_usage'],
    cacheConfig: { name: 'sglang:cache_config_info', blockSize: 'page_size', blocks: 'num_pages' },
  },
};

const ENGINES = Object.keys(ENGINE_NAMES) as EngineKind[];

/** Every metric name read here: the name filter to hand the text reader. */
export const ENGINE_METRIC_NAMES: ReadonlySet<string> = new Set(
  ENGINES.flatMap((engine) => {
    const names = ENGINE_NAMES[engine];
    return [names.running, names.waiting, ...names.kvUsage, names.cacheConfig.name, ...(names.lora ? [names.lora] : [])];
  }),
);

export function isEngineKind(value: unknown): value is EngineKind {
  return value === 'vllm' || value === 'sglang';
}

export type EngineReading = { ok: true; engine: EngineKind; metrics: EngineMetrics } | { ok: false; reason: string };

/**
 * Reads the figures of whichever engine the series come from. `hint` (the pod's
 * `llm-d.ai/engine-type` label, or its models' owned_by) only settles an answer that carries
 * both engines' gauges; otherwise the answer itself says which engine it is.
 */
export function readEngineMetrics(series: PromSeries, hint?: string): EngineReading {
  const present = ENGINES.filter((engine) => loadGaugeNames(ENGINE_NAMES[engine]).some((name) => series.has(name)));
  let engine: EngineKind;
  if (present.length === 1) {
    engine = present[0]!;
  } else if (present.length === 0) {
    return { ok: false, reason: `no vLLM or SGLang load gauges (${ENGINES.map((e) => ENGINE_NAMES[e].running).join(', ')} ...)` };
  } else if (isEngineKind(hint)) {
    engine = hint;
  } else {
    return { ok: false, reason: `the answer has both ${present.join(' and ')} load gauges and the pod does not say which engine it runs` };
  }
  try {
    return { ok: true, engine, metrics: figures(series, ENGINE_NAMES[engine]) };
  } catch (err) {
    if (err instanceof Garbage) return { ok: false, reason: `${engine}: ${err.message}` };
    throw err;
  }
}

function loadGaugeNames(names: EngineNames): string[] {
  return [names.running, names.waiting, ...names.kvUsage];
}

class Garbage extends Error {}

function figures(series: PromSeries, names: EngineNames): EngineMetrics {
  const usageName = names.kvUsage.find((name) => series.has(name));
  if (usageName === undefined) throw new Garbage(`no ${names.kvUsage.join(' or ')} series`);
  const usage = maxOf(series, usageName);
  if (usage > 1) throw new Garbage(`${usageName} is ${usage}, not a 0..1 fraction`);
  const lora = names.lora ? latestLora(series.get(names.lora)) : undefined;
  return {
    active_models: lora?.running ?? {},
    waiting_models: lora?.waiting ?? {},
    max_active_models: lora?.max ?? 0,
    running_queue_size: requestCount(series, names.running),
    waiting_queue_size: requestCount(series, names.waiting),
    kv_cache_usage_percent: usage * 100,
    kv_cache_max_token_capacity: capacity(series.get(names.cacheConfig.name), names.cacheConfig),
  };
}

/** The values of `name`, each a known, finite, non-negative number. */
function values(series: PromSeries, name: string): number[] {
  const samples = series.get(name);
  if (!samples) throw new Garbage(`no ${name} series`);
  return samples.map(({ value, labels }) => {
    if (Number.isNaN(value)) throw new Garbage(`${name}${describeLabels(labels)} is NaN (unknown)`);
    if (!Number.isFinite(value) || value < 0) throw new Garbage(`${name}${describeLabels(labels)} is ${value}`);
    return value;
  });
}

/** Requests in a queue: one series per model (or per data-parallel engine) → their sum. */
function requestCount(series: PromSeries, name: string): number {
  let total = 0;
  for (const value of values(series, name)) {
    if (!Number.isInteger(value)) throw new Garbage(`${name} is ${value}, not a request count`);
    total += value;
  }
  return total;
}

/** Usage: several series → the fullest (a request may land on the fullest cache). */
function maxOf(series: PromSeries, name: string): number {
  let largest = 0;
  for (const value of values(series, name)) largest = Math.max(largest, value);
  return largest;
}

/**
 * vLLM re-labels its LoRA info gauge on every update and sets it to the time of that update, so
 * old label sets linger beside the current one: the series with the largest value is the latest.
 * The labels name adapters, comma-separated; each mention counts one.
 */
function latestLora(samples: readonly PromSample[] | undefined): { running: Record<string, number>; waiting: Record<string, number>; max: number } | undefined {
  let latest: PromSample | undefined;
  for (const sample of samples ?? []) {
    if (Number.isFinite(sample.value) && (latest === undefined || sample.value > latest.value)) latest = sample;
  }
  if (!latest) return undefined;
  return {
    running: adapterCounts(latest.labels.running_lora_adapters),
    waiting: adapterCounts(latest.labels.waiting_lora_adapters),
    max: positiveInteger(latest.labels.max_lora) ?? 0,
  };
}

function adapterCounts(list: string | undefined): Record<string, number> {
  const counts = new Map<string, number>();
  for (const part of (list ?? '').split(',')) {
    const adapter = part.trim();
    if (adapter) counts.set(adapter, (counts.get(adapter) ?? 0) + 1);
  }
  // fromEntries defines own properties, so an adapter called __proto__ is counted like any other.
  return Object.fromEntries(counts);
}

/**
 * Tokens the KV cache holds: block (page) size x number of blocks, from an info gauge's labels;
 * 0 when unknown (vLLM prints `None` before it has sized the cache). With several series (one per
 * data-parallel engine or per rank) the largest: a request is served by one engine's cache, and
 * tensor-parallel ranks report the same cache, which a sum would count several times.
 */
function capacity(samples: readonly PromSample[] | undefined, config: EngineNames['cacheConfig']): number {
  let largest = 0;
  for (const { labels } of samples ?? []) {
    const blockSize = positiveInteger(labels[config.blockSize]);
    const blocks = positiveInteger(labels[config.blocks]);
    if (blockSize !== undefined && blocks !== undefined) largest = Math.max(largest, blockSize * blocks);
  }
  return Number.isSafeInteger(largest) ? largest : 0;
}

function positiveInteger(text: string | undefined): number | undefined {
  if (text === undefined || !/^[0-9]{1,15}$/.test(text)) return undefined;
  const value = Number(text);
  return value > 0 ? value : undefined;
}

function describeLabels(labels: Readonly<Record<string, string>>): string {
  const names = Object.keys(labels);
  if (names.length === 0) return '';
  return `{${names.map((name) => `${name}=${JSON.stringify(labels[name]!.slice(0, 60))}`).join(',')}}`;
}
