/**
 * An OpenAI-compatible model-server simulator that answers like vLLM or SGLang (no GPU, no model):
 * `/v1/models`, `/health`, Prometheus `/metrics` with the engine's own metric names, and
 * `/v1/chat/completions` + `/v1/completions` (unary or SSE), paced by a time-to-first-token and an
 * inter-token latency so load (running/waiting requests, KV-cache usage) is observable while
 * requests are in flight. Used by the tests, the benchmark and the demo.
 *
 * Wire shapes follow what the engines return (see the response samples in the project seeds);
 * fields no router reads are reproduced only approximately.
 */

import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export type Engine = 'vllm' | 'sglang';
export const ENGINES: readonly Engine[] = ['vllm', 'sglang'];

export function isEngine(value: unknown): value is Engine {
  return value === 'vllm' || value === 'sglang';
}

export interface SimulatorOptions {
  /** Address to listen on; default `127.0.0.1`. Give each simulated pod its own 127.0.0.x. */
  host?: string;
  /** Port; 0 (the default) picks an ephemeral port. */
  port?: number;
  engine: Engine;
  /** Served model ids (the first one labels the metrics, as a single-model engine does). */
  models: string[];
  /** Identity echoed in the `x-simulator-name` header; default `${engine}@${address}`. */
  name?: string;
  /** Delay from admission to the first token; default 5 ms. */
  timeToFirstTokenMs?: number;
  /** Delay between subsequent tokens; default 2 ms. */
  interTokenMs?: number;
  /** `max_model_len` reported by `/v1/models`; default 32768. Also caps generated tokens. */
  maxModelLen?: number;
  /** Requests generated concurrently (vLLM `max_num_seqs`, SGLang `max_running_requests`);
   *  further requests wait in a FIFO queue. Default 256. */
  maxRunning?: number;
  /** KV-cache capacity in tokens; default 65536 (vLLM: 4096 blocks of 16, SGLang: 65536 pages of 1). */
  kvCacheTokens?: number;
  /** Tokens generated when a request sets no `max_tokens` (finish_reason `stop`); default 16. */
  defaultMaxTokens?: number;
  /** Largest accepted request body; default 64 MiB (413 beyond). */
  maxBodyBytes?: number;
}

export interface SimulatorStats {
  /** Completion requests currently being generated. */
  running: number;
  /** Completion requests queued behind `maxRunning`. */
  waiting: number;
  /** Completion requests admitted for generation so far (200 answers, including ones later aborted). */
  served: number;
  /** Every HTTP request received so far, by URL path (any method, any status). */
  byPath: Record<string, number>;
}

export interface Simulator {
  /** `ip:port` (what an endpoint picker puts in `x-gateway-destination-endpoint`). */
  readonly address: string;
  /** `http://ip:port` */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly engine: Engine;
  readonly name: string;
  stats(): SimulatorStats;
  /** false → `/health` (and `/ping`, `/health_generate`), `/v1/models` and new completions answer 503. */
  setHealthy(ok: boolean): void;
  /** Replace the served model list (affects `/v1/models`, 404s and the metrics' `model_name`). */
  setModels(models: string[]): void;
  /** Stop listening, abort in-flight generations and close open connections. Idempotent. */
  close(): Promise<void>;
}

export const DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024;

/** Header naming the backend that answered (on every response). */
export const SIMULATOR_NAME_HEADER = 'x-simulator-name';
/** Header naming the engine that answered (on every response). */
export const SIMULATOR_ENGINE_HEADER = 'x-simulator-engine';

const VLLM_BLOCK_SIZE = 16;
const SGLANG_PAGE_SIZE = 1;
/** Qwen2.5's `<|im_end|>`, what SGLang reports as `matched_stop` on a natural stop. */
const SGLANG_EOS_TOKEN = 151645;
const WORDS = ['This', ' is', ' a', ' simulated', ' answer', ' from', ' a', ' fake', ' model', ' server', '.'];

type Kind = 'chat' | 'text';
type FinishReason = 'stop' | 'length';

interface ParsedRequest {
  kind: Kind;
  model: string;
  stream: boolean;
  includeUsage: boolean;
  /** vLLM's `stream_options.continuous_usage_stats`: running usage totals in every chunk. */
  continuousUsage: boolean;
  completionTokens: number;
  finishReason: FinishReason;
  promptTokens: number;
}

interface Generation {
  promptTokens: number;
  generated: number;
}

interface Waiter {
  resolve: (gen: Generation) => void;
  reject: (err: Error) => void;
  signal: AbortSignal;
  onAbort: () => void;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly param: string | null = null,
  ) {
    super(message);
  }
}

function nonNegative(value: number | undefined, fallback: number, what: string): number {
  const v = value ?? fallback;
  if (!Number.isFinite(v) || v < 0) throw new RangeError(`${what} must be a non-negative number, got ${v}`);
  return v;
}

function positiveInt(value: number | undefined, fallback: number, what: string): number {
  const v = value ?? fallback;
  if (!Number.isInteger(v) || v < 1) throw new RangeError(`${what} must be a positive integer, got ${v}`);
  return v;
}

function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Prometheus label value escaping (backslash, double quote, newline). */
function labelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function labels(l: Record<string, string>): string {
  const keys = Object.keys(l).sort();
  return `{${keys.map((k) => `${k}="${labelValue(l[k]!)}"`).join(',')}}`;
}

/** Sample value as the Python client prints it (`1.0`, `0.25`). */
function num(v: number): string {
  return Number.isInteger(v) ? v.toFixed(1) : String(v);
}

function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

function hexId(): string {
  return randomBytes(16).toString('hex');
}

/** Rough token estimate: ~4 characters per token. */
function tokensOfText(s: string): number {
  return Math.ceil(s.length / 4);
}

function textOfContent(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    let out = '';
    for (const part of content) {
      if (part && typeof part === 'object' && typeof (part as { text?: unknown }).text === 'string') {
        out += (part as { text: string }).text;
      }
    }
    return out;
  }
  return '';
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export async function startSimulator(opts: SimulatorOptions): Promise<Simulator> {
  if (!isEngine(opts.engine)) throw new TypeError(`engine must be 'vllm' or 'sglang', got ${String(opts.engine)}`);
  const engine = opts.engine;
  const host = opts.host ?? '127.0.0.1';
  const ttftMs = nonNegative(opts.timeToFirstTokenMs, 5, 'timeToFirstTokenMs');
  const itlMs = nonNegative(opts.interTokenMs, 2, 'interTokenMs');
  const maxModelLen = positiveInt(opts.maxModelLen, 32768, 'maxModelLen');
  const maxRunning = positiveInt(opts.maxRunning, 256, 'maxRunning');
  const kvCacheTokens = positiveInt(opts.kvCacheTokens, 65536, 'kvCacheTokens');
  const defaultMaxTokens = positiveInt(opts.defaultMaxTokens, 16, 'defaultMaxTokens');
  const maxBodyBytes = positiveInt(opts.maxBodyBytes, DEFAULT_MAX_BODY_BYTES, 'maxBodyBytes');

  let models = [...opts.models];
  let healthy = true;
  let name = opts.name ?? '';

  const active = new Set<Generation>();
  const queue: Waiter[] = [];
  const aborters = new Set<AbortController>();
  let served = 0;
  const byPath: Record<string, number> = {};
  let promptTokensTotal = 0;
  let generationTokensTotal = 0;
  const successByReason: Record<FinishReason | 'abort', number> = { stop: 0, length: 0, abort: 0 };

  // ---- admission (max running + FIFO queue) ----

  /** Resolves with the generation's slot (already counted in `active`) once it may run. */
  function admit(signal: AbortSignal): Promise<Generation> {
    if (signal.aborted) return Promise.reject(new Error('aborted'));
    if (active.size < maxRunning && queue.length === 0) {
      const gen: Generation = { promptTokens: 0, generated: 0 };
      active.add(gen);
      return Promise.resolve(gen);
    }
    return new Promise<Generation>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        signal,
        onAbort: () => {
          const i = queue.indexOf(waiter);
          if (i >= 0) queue.splice(i, 1);
          reject(new Error('aborted'));
        },
      };
      signal.addEventListener('abort', waiter.onAbort, { once: true });
      queue.push(waiter);
    });
  }

  /** Called after a generation left `active`: let queued requests in, oldest first. */
  function admitWaiting(): void {
    while (active.size < maxRunning && queue.length > 0) {
      const w = queue.shift()!;
      w.signal.removeEventListener('abort', w.onAbort);
      // Take the slot synchronously so a burst of releases does not over-admit.
      const gen: Generation = { promptTokens: 0, generated: 0 };
      active.add(gen);
      w.resolve(gen);
    }
  }

  // ---- helpers for responses ----

  function sendJson(res: http.ServerResponse, status: number, body: unknown, extra: http.OutgoingHttpHeaders = {}): void {
    if (res.headersSent || res.destroyed) return;
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...extra });
    res.end(text);
  }

  function sendError(res: http.ServerResponse, err: HttpError, extra: http.OutgoingHttpHeaders = {}): void {
    sendJson(res, err.status, { error: { message: err.message, type: err.type, param: err.param, code: err.status } }, extra);
  }

  function sendDetail(res: http.ServerResponse, status: number, detail: string): void {
    sendJson(res, status, { detail });
  }

  function sendHealth(res: http.ServerResponse): void {
    if (res.destroyed) return;
    res.writeHead(healthy ? 200 : 503, { 'content-length': 0 });
    res.end();
  }

  function modelsBody(): unknown {
    const created = nowSeconds();
    return {
      object: 'list',
      data: models.map((id) => ({
        id,
        object: 'model',
        created,
        owned_by: engine,
        root: id,
        parent: null,
        max_model_len: maxModelLen,
      })),
    };
  }

  function kvUsage(): number {
    let used = 0;
    for (const g of active) used += g.promptTokens + g.generated;
    if (engine === 'vllm') {
      // vLLM allocates whole blocks per sequence; approximate with the total.
      used = Math.ceil(used / VLLM_BLOCK_SIZE) * VLLM_BLOCK_SIZE;
    }
    return Math.min(1, used / kvCacheTokens);
  }

  function metricsText(): string {
    const model = models[0] ?? '';
    const lines: string[] = [];
    const metric = (n: string, type: 'gauge' | 'counter', help: string, samples: [Record<string, string>, number][]): void => {
      lines.push(`# HELP ${n} ${help}`, `# TYPE ${n} ${type}`);
      for (const [l, v] of samples) lines.push(`${n}${labels(l)} ${num(v)}`);
    };
    const running = active.size;
    const waiting = queue.length;
    const usage = kvUsage();
    if (engine === 'vllm') {
      const base = { engine: '0', model_name: model };
      metric('vllm:num_requests_running', 'gauge', 'Number of requests in model execution batches.', [[base, running]]);
      metric('vllm:num_requests_waiting', 'gauge', 'Number of requests waiting to be processed.', [[base, waiting]]);
      metric('vllm:kv_cache_usage_perc', 'gauge', 'KV-cache usage. 1 means 100 percent usage.', [[base, usage]]);
      metric('vllm:cache_config_info', 'gauge', 'Information of the LLMEngine CacheConfig', [
        [
          {
            block_size: String(VLLM_BLOCK_SIZE),
            cache_dtype: 'auto',
            enable_prefix_caching: 'True',
            engine: '0',
            gpu_memory_utilization: '0.9',
            num_cpu_blocks: 'None',
            num_gpu_blocks: String(Math.floor(kvCacheTokens / VLLM_BLOCK_SIZE)),
          },
          1,
        ],
      ]);
      metric('vllm:prompt_tokens_total', 'counter', 'Number of prefill tokens processed.', [[base, promptTokensTotal]]);
      metric('vllm:generation_tokens_total', 'counter', 'Number of generation tokens processed.', [[base, generationTokensTotal]]);
      metric(
        'vllm:request_success_total',
        'counter',
        'Count of successfully processed requests.',
        (['stop', 'length', 'abort'] as const).map((r) => [{ ...base, finished_reason: r }, successByReason[r]]),
      );
    } else {
      const base = { engine_type: 'unified', model_name: model, pp_rank: '0', tp_rank: '0' };
      metric('sglang:num_running_reqs', 'gauge', 'The number of running requests.', [[base, running]]);
      metric('sglang:num_queue_reqs', 'gauge', 'The number of requests in the waiting queue.', [[base, waiting]]);
      metric('sglang:token_usage', 'gauge', 'The token usage.', [[base, usage]]);
      metric('sglang:num_used_tokens', 'gauge', 'The number of used tokens.', [[base, Math.round(usage * kvCacheTokens)]]);
      metric('sglang:cache_config_info', 'gauge', 'Information about the cache configuration.', [
        [{ ...base, num_pages: String(Math.floor(kvCacheTokens / SGLANG_PAGE_SIZE)), page_size: String(SGLANG_PAGE_SIZE) }, 1],
      ]);
      metric('sglang:prompt_tokens_total', 'counter', 'Number of prefill tokens processed.', [[base, promptTokensTotal]]);
      metric('sglang:generation_tokens_total', 'counter', 'Number of generation tokens processed.', [[base, generationTokensTotal]]);
      metric('sglang:num_requests_total', 'counter', 'Number of requests processed.', [[base, served]]);
    }
    return `${lines.join('\n')}\n`;
  }

  // ---- request parsing ----

  function parseCompletion(kind: Kind, raw: Buffer): ParsedRequest {
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch (e) {
      throw new HttpError(400, `Invalid JSON in request body: ${(e as Error).message}`, 'BadRequestError');
    }
    if (!isRecord(body)) throw new HttpError(400, 'Request body must be a JSON object', 'BadRequestError');

    let model: string;
    if (body.model === undefined || body.model === null) {
      if (models.length === 0) throw new HttpError(404, 'No model is served', 'NotFoundError', 'model');
      model = models[0]!; // the engines default to their (first) served model
    } else if (typeof body.model !== 'string') {
      throw new HttpError(400, '`model` must be a string', 'BadRequestError', 'model');
    } else {
      model = body.model;
    }
    if (!models.includes(model)) throw new HttpError(404, `The model \`${model}\` does not exist.`, 'NotFoundError', 'model');

    let promptTokens: number;
    if (kind === 'chat') {
      const messages = body.messages;
      if (!Array.isArray(messages) || messages.length === 0) {
        throw new HttpError(400, '`messages` must be a non-empty array', 'BadRequestError', 'messages');
      }
      promptTokens = 2;
      for (const m of messages) {
        if (!isRecord(m) || typeof m.role !== 'string') {
          throw new HttpError(400, 'each message needs a string `role`', 'BadRequestError', 'messages');
        }
        promptTokens += 4 + tokensOfText(textOfContent(m.content));
      }
    } else {
      const prompt = body.prompt;
      if (typeof prompt === 'string') promptTokens = Math.max(1, tokensOfText(prompt));
      else if (Array.isArray(prompt) && prompt.length > 0 && prompt.every((t) => typeof t === 'number')) promptTokens = prompt.length;
      else if (Array.isArray(prompt) && prompt.length > 0 && prompt.every((t) => typeof t === 'string')) {
        promptTokens = Math.max(1, tokensOfText(prompt.join('')));
      } else throw new HttpError(400, '`prompt` must be a string, a list of strings or a list of token ids', 'BadRequestError', 'prompt');
    }

    const requested = kind === 'chat' ? (body.max_completion_tokens ?? body.max_tokens) : body.max_tokens;
    let completionTokens: number;
    let finishReason: FinishReason;
    if (requested === undefined || requested === null) {
      completionTokens = Math.min(defaultMaxTokens, maxModelLen);
      finishReason = 'stop';
    } else if (typeof requested === 'number' && Number.isInteger(requested) && requested >= 1) {
      completionTokens = Math.min(requested, maxModelLen);
      finishReason = 'length';
    } else {
      throw new HttpError(400, '`max_tokens` must be a positive integer', 'BadRequestError', 'max_tokens');
    }

    const stream = body.stream;
    if (stream !== undefined && stream !== null && typeof stream !== 'boolean') {
      throw new HttpError(400, '`stream` must be a boolean', 'BadRequestError', 'stream');
    }
    const so = body.stream_options;
    const includeUsage = stream === true && isRecord(so) && so.include_usage === true;
    const continuousUsage = engine === 'vllm' && includeUsage && isRecord(so) && so.continuous_usage_stats === true;
    return { kind, model, stream: stream === true, includeUsage, continuousUsage, completionTokens, finishReason, promptTokens };
  }

  // ---- response shapes ----

  function usageOf(p: ParsedRequest, completion: number): Record<string, unknown> {
    const u: Record<string, unknown> = {
      prompt_tokens: p.promptTokens,
      total_tokens: p.promptTokens + completion,
      completion_tokens: completion,
      prompt_tokens_details: null,
    };
    if (engine === 'sglang') u.reasoning_tokens = 0;
    return u;
  }

  function responseId(kind: Kind): string {
    if (engine === 'sglang') return hexId();
    return (kind === 'chat' ? 'chatcmpl-' : 'cmpl-') + hexId();
  }

  function unaryBody(p: ParsedRequest, id: string, created: number, text: string): unknown {
    const usage = usageOf(p, p.completionTokens);
    const matchedStop = p.finishReason === 'stop' ? SGLANG_EOS_TOKEN : null;
    if (p.kind === 'chat') {
      if (engine === 'vllm') {
        return {
          id,
          object: 'chat.completion',
          created,
          model: p.model,
          choices: [
            {
              index: 0,
              message: {
                role: 'assistant',
                content: text,
                refusal: null,
                annotations: null,
                audio: null,
                function_call: null,
                tool_calls: [],
                reasoning: null,
                reasoning_content: null,
              },
              logprobs: null,
              finish_reason: p.finishReason,
              stop_reason: null,
              token_ids: null,
            },
          ],
          service_tier: null,
          system_fingerprint: null,
          usage,
          prompt_logprobs: null,
          prompt_token_ids: null,
          kv_transfer_params: null,
        };
      }
      return {
        id,
        object: 'chat.completion',
        created,
        model: p.model,
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content: text, reasoning_content: null, tool_calls: null },
            logprobs: null,
            finish_reason: p.finishReason,
            matched_stop: matchedStop,
          },
        ],
        usage,
        metadata: { weight_version: 'default' },
      };
    }
    if (engine === 'vllm') {
      return {
        id,
        object: 'text_completion',
        created,
        model: p.model,
        choices: [
          { index: 0, text, logprobs: null, finish_reason: p.finishReason, stop_reason: null, token_ids: null, prompt_logprobs: null, prompt_token_ids: null },
        ],
        service_tier: null,
        system_fingerprint: null,
        usage,
        kv_transfer_params: null,
      };
    }
    return {
      id,
      object: 'text_completion',
      created,
      model: p.model,
      choices: [{ index: 0, text, logprobs: null, finish_reason: p.finishReason, matched_stop: matchedStop }],
      usage,
      metadata: { weight_version: 'default' },
    };
  }

  /** SSE chunks: `first` (chat role chunk, no content), one per token, `final` (finish), `usage`. */
  function chunkFor(
    p: ParsedRequest,
    id: string,
    created: number,
    part: { role: true } | { token: string; last: boolean } | { finish: true } | { usage: number },
  ): unknown {
    const object = p.kind === 'chat' ? 'chat.completion.chunk' : 'text_completion';
    const head = { id, object, created, model: p.model };
    if ('usage' in part) return { ...head, choices: [], usage: usageOf(p, part.usage) };
    const vllm = engine === 'vllm';
    let finish: FinishReason | null = null;
    if ('finish' in part) finish = p.finishReason;
    // vLLM puts finish_reason on the last content chunk; SGLang sends a separate empty final chunk.
    if ('token' in part && part.last && vllm) finish = p.finishReason;
    const extra = vllm ? { stop_reason: null } : { matched_stop: finish === 'stop' ? SGLANG_EOS_TOKEN : null };
    if (p.kind === 'chat') {
      let delta: Record<string, unknown>;
      if ('role' in part) delta = { role: 'assistant', content: '' };
      else if ('token' in part) delta = { content: part.token };
      else delta = {};
      if (!vllm && 'content' in delta) delta = { ...delta, reasoning_content: null, tool_calls: null };
      const choice = { index: 0, delta, logprobs: null, finish_reason: finish, ...extra };
      return vllm ? { ...head, choices: [choice] } : { ...head, choices: [choice], usage: null };
    }
    const text = 'token' in part ? part.token : '';
    const choice = { index: 0, text, logprobs: null, finish_reason: finish, ...extra };
    return vllm ? { ...head, choices: [choice] } : { ...head, choices: [choice], usage: null };
  }

  function tokenAt(i: number): string {
    const word = WORDS[i % WORDS.length]!;
    return i > 0 && i % WORDS.length === 0 ? ` ${word}` : word; // a space between repeated sentences
  }

  // ---- generation ----

  async function generate(p: ParsedRequest, gen: Generation, signal: AbortSignal, onToken: (token: string, index: number) => void): Promise<void> {
    promptTokensTotal += p.promptTokens;
    for (let i = 0; i < p.completionTokens; i++) {
      await sleep(i === 0 ? ttftMs : itlMs, undefined, { signal });
      gen.generated++;
      generationTokensTotal++;
      onToken(tokenAt(i), i);
    }
  }

  async function handleCompletion(kind: Kind, req: http.IncomingMessage, res: http.ServerResponse, raw: Buffer): Promise<void> {
    const p = parseCompletion(kind, raw);
    if (!healthy) throw new HttpError(503, 'Service is unhealthy', 'ServiceUnavailableError');
    if (res.destroyed || req.socket.destroyed) return;

    const ac = new AbortController();
    aborters.add(ac);
    res.on('close', () => {
      if (!res.writableFinished) ac.abort();
    });

    let gen: Generation;
    try {
      gen = await admit(ac.signal);
    } catch {
      aborters.delete(ac);
      return; // client went away (or close()) while queued
    }
    gen.promptTokens = p.promptTokens;
    served++;
    const id = responseId(kind);
    const created = nowSeconds();
    try {
      if (p.stream) {
        res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' });
        res.flushHeaders();
        const send = (obj: unknown): void => {
          // vLLM adds the totals so far to every chunk; the usage chunk has its own.
          if (p.continuousUsage && isRecord(obj) && !('usage' in obj)) obj.usage = usageOf(p, gen.generated);
          if (!res.destroyed) res.write(`data: ${JSON.stringify(obj)}\n\n`);
        };
        await generate(p, gen, ac.signal, (token, i) => {
          if (i === 0 && kind === 'chat') send(chunkFor(p, id, created, { role: true }));
          send(chunkFor(p, id, created, { token, last: i === p.completionTokens - 1 }));
        });
        if (engine === 'sglang') send(chunkFor(p, id, created, { finish: true }));
        if (p.includeUsage) send(chunkFor(p, id, created, { usage: gen.generated }));
        res.end('data: [DONE]\n\n');
      } else {
        let text = '';
        await generate(p, gen, ac.signal, (token) => {
          text += token;
        });
        sendJson(res, 200, unaryBody(p, id, created, text));
      }
      successByReason[p.finishReason]++;
    } catch (err) {
      if (!ac.signal.aborted) throw err;
      successByReason.abort++;
    } finally {
      aborters.delete(ac);
      active.delete(gen);
      admitWaiting();
    }
  }

  // ---- HTTP plumbing ----

  function readBody(req: http.IncomingMessage): Promise<Buffer | 'too-large'> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let tooLarge = false;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > maxBodyBytes) {
          tooLarge = true;
          chunks.length = 0;
        } else if (!tooLarge) chunks.push(c);
      });
      req.on('end', () => resolve(tooLarge ? 'too-large' : Buffer.concat(chunks, size)));
      req.on('error', reject);
      req.on('close', () => {
        if (!req.complete) reject(new Error('client went away while sending the body'));
      });
    });
  }

  const GET_PATHS = new Set(['/v1/models', '/health', '/metrics', engine === 'vllm' ? '/ping' : '/health_generate']);
  const POST_PATHS = new Map<string, Kind>([
    ['/v1/chat/completions', 'chat'],
    ['/v1/completions', 'text'],
  ]);

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    res.setHeader(SIMULATOR_NAME_HEADER, name);
    res.setHeader(SIMULATOR_ENGINE_HEADER, engine);
    const path = new URL(req.url ?? '/', 'http://simulator').pathname;
    byPath[path] = (byPath[path] ?? 0) + 1;
    const method = req.method ?? 'GET';

    const kind = POST_PATHS.get(path);
    if (kind !== undefined && method === 'POST') {
      const raw = await readBody(req);
      if (raw === 'too-large') {
        sendError(res, new HttpError(413, `Request body larger than ${maxBodyBytes} bytes`, 'RequestEntityTooLarge'), { connection: 'close' });
        return;
      }
      await handleCompletion(kind, req, res, raw);
      return;
    }
    const isGet = method === 'GET' || method === 'HEAD';
    if (GET_PATHS.has(path) && isGet) {
      req.resume();
      switch (path) {
        case '/v1/models':
          if (!healthy) sendError(res, new HttpError(503, 'Service is unhealthy', 'ServiceUnavailableError'));
          else sendJson(res, 200, modelsBody());
          return;
        case '/metrics': {
          const text = metricsText();
          res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8', 'content-length': Buffer.byteLength(text) });
          res.end(text);
          return;
        }
        default:
          sendHealth(res);
          return;
      }
    }
    if (path === '/ping' && engine === 'vllm' && method === 'POST') {
      req.resume();
      sendHealth(res);
      return;
    }
    req.resume();
    if (kind !== undefined || GET_PATHS.has(path)) sendDetail(res, 405, 'Method Not Allowed');
    else sendDetail(res, 404, 'Not Found');
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (err instanceof HttpError) sendError(res, err);
      else if (!res.headersSent) sendError(res, new HttpError(500, String(err), 'InternalServerError'));
      else res.destroy();
    });
  });
  // Slow clients streaming 20+ MiB bodies must not be cut off by the default request timeout.
  server.requestTimeout = 0;

  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const address = hostPort(host, port);
  if (name === '') name = `${engine}@${address}`;

  let closing: Promise<void> | undefined;
  return {
    address,
    url: `http://${address}`,
    host,
    port,
    engine,
    name,
    stats: () => ({ running: active.size, waiting: queue.length, served, byPath: { ...byPath } }),
    setHealthy(ok: boolean) {
      healthy = ok;
    },
    setModels(next: string[]) {
      models = [...next];
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const ac of aborters) ac.abort();
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
