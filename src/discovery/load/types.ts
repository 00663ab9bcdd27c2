/**
 * What an engine says about its own load, in the shape llm-d's scheduler and its external filter
 * plugins use (seed 000's per-pod `metrics` object, `update_time` beside it).
 */
export interface EngineMetrics {
  /** LoRA adapters (or models) running now → count; {} when the engine reports none. */
  active_models: Record<string, number>;
  /** LoRA adapters waiting for a slot → count. */
  waiting_models: Record<string, number>;
  /** Adapter slots (vLLM `max_lora`); 0 when unknown. */
  max_active_models: number;
  /** Requests the engine is running (vLLM `num_requests_running`, SGLang `num_running_reqs`). */
  running_queue_size: number;
  /** Requests queued in the engine (vLLM `num_requests_waiting`, SGLang `num_queue_reqs`). */
  waiting_queue_size: number;
  /** KV-cache in use, 0..100 (engines report a 0..1 fraction). */
  kv_cache_usage_percent: number;
  /** KV-cache capacity in tokens (blocks x block size); 0 when unknown. */
  kv_cache_max_token_capacity: number;
}

/** The last good scrape of an endpoint's `/metrics`. */
export interface EngineLoad {
  metrics: EngineMetrics;
  /** Wall-clock time of the scrape (seed 000's `update_time`). */
  updateTime: Date;
  /**
   * `performance.now()` after which the figures are stale and must not steer picks
   * (scrape time + --metrics-staleness). The scraper sets `Endpoint.load` undefined on a failed scrape.
   */
  freshUntil: number;
  /**
   * Our own in-flight count for the endpoint when the scrape answered. The engine's queues then
   * already held those requests; a picker compares it with the in-flight count now to see what
   * changed since (see the load-aware picker).
   */
  inFlightAtScrape: number;
}
