import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { JsonUsageReader } from '../src/usage/json-usage.js';
import { SseUsageReader } from '../src/usage/sse-usage.js';
import { readUsage, type TokenUsage, type UsageReader } from '../src/usage/usage.js';

const sse = (skipped: string[] = [], cap?: number) => new SseUsageReader((why) => skipped.push(why), cap);
const json = (skipped: string[] = [], cap?: number) => new JsonUsageReader((why) => skipped.push(why), cap);

function feedAll(reader: UsageReader, chunks: (string | Buffer)[]): TokenUsage | undefined {
  for (const chunk of chunks) reader.feed(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
  return reader.usage;
}

/** Every way of cutting `body` in two, and byte by byte. */
function everySplit(body: Buffer): Buffer[][] {
  const splits: Buffer[][] = [];
  for (let at = 0; at <= body.length; at++) splits.push([body.subarray(0, at), body.subarray(at)]);
  splits.push(Array.from(body, (_, i) => body.subarray(i, i + 1)));
  return splits;
}

const event = (data: unknown) => `data: ${JSON.stringify(data)}\n\n`;
const DONE = 'data: [DONE]\n\n';
const head = { id: 'chatcmpl-1', object: 'chat.completion.chunk', created: 1, model: 'Qwen/Qwen2.5-0.5B-Instruct' };
const delta = (content: string, usage?: unknown) => ({
  ...head,
  choices: [{ index: 0, delta: { content }, logprobs: null, finish_reason: null }],
  ...(usage === undefined ? {} : { usage }),
});
const usageOf = (prompt: number, completion: number) => ({ prompt_tokens: prompt, total_tokens: prompt + completion, completion_tokens: completion });

/** A vLLM chat stream with stream_options.include_usage, with multi-byte UTF-8 and escapes in its text. */
const RECORDED = [
  event({ ...head, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }] }),
  event(delta('Hé')),
  event(delta(' 中文 😀')),
  event(delta(' "usage": {"prompt_tokens": 999} \\ ')),
  event({ ...head, choices: [{ index: 0, delta: { content: '.' }, logprobs: null, finish_reason: 'length' }] }),
  event({ ...head, choices: [], usage: usageOf(12, 4) }),
  DONE,
].join('');

describe('readUsage', () => {
  it('takes non-negative integer counts, an absent one as 0, and nothing else', () => {
    assert.deepEqual(readUsage(usageOf(3, 5)), { prompt: 3, completion: 5 });
    assert.deepEqual(readUsage({ prompt_tokens: 7, total_tokens: 7 }), { prompt: 7, completion: 0 });
    for (const bad of [null, 3, 'x', [], {}, { prompt_tokens: -1 }, { prompt_tokens: 1.5 }, { completion_tokens: '4' }]) {
      assert.equal(readUsage(bad), undefined, JSON.stringify(bad));
    }
  });
});

describe('SseUsageReader', () => {
  it('reads the final usage chunk of an include_usage stream, split at every byte position', () => {
    for (const chunks of everySplit(Buffer.from(RECORDED))) {
      assert.deepEqual(feedAll(sse(), chunks), { prompt: 12, completion: 4 }, `split into ${chunks.map((c) => c.length).join('+')}`);
    }
  });

  it('reads CRLF and CR line ends, split at every byte position', () => {
    for (const lineEnd of ['\r\n', '\r']) {
      const body = Buffer.from(RECORDED.replaceAll('\n', lineEnd));
      for (const chunks of everySplit(body)) {
        assert.deepEqual(feedAll(sse(), chunks), { prompt: 12, completion: 4 }, `${JSON.stringify(lineEnd)} split ${chunks.map((c) => c.length).join('+')}`);
      }
    }
  });

  it('takes the last of continuous usage totals, never their sum', () => {
    const body = [...[1, 2, 3, 4].map((n) => event(delta('x', usageOf(12, n)))), event({ ...head, choices: [], usage: usageOf(12, 4) }), DONE].join('');
    assert.deepEqual(feedAll(sse(), [body]), { prompt: 12, completion: 4 });
    // vLLM with continuous_usage_stats but a stream cut before the usage chunk: the last totals.
    assert.deepEqual(feedAll(sse(), [body.slice(0, body.indexOf('"completion_tokens":4'))]), { prompt: 12, completion: 3 });
  });

  it("ignores OpenAI's null usage on intermediate chunks", () => {
    const body = [event(delta('a', null)), event({ ...head, choices: [], usage: usageOf(2, 1) }), event(delta('', null)), DONE].join('');
    assert.deepEqual(feedAll(sse(), [body]), { prompt: 2, completion: 1 });
  });

  it('has no usage for a stream without it', () => {
    assert.equal(feedAll(sse(), [event(delta('a')), event(delta('b')), DONE]), undefined);
  });

  it('joins the data lines of one event and ignores comments and other fields, with any line end split anywhere', () => {
    const body =
      ': keep-alive\n\nevent: message\nid: 7\nretry: 10\ndata: {"choices":[],\ndata:"usage":{"prompt_tokens":5,"completion_tokens":6}}\n\ndata: [DONE]\n\n';
    for (const lineEnd of ['\n', '\r\n', '\r']) {
      for (const chunks of everySplit(Buffer.from(body.replaceAll('\n', lineEnd)))) {
        assert.deepEqual(feedAll(sse(), chunks), { prompt: 5, completion: 6 }, `${JSON.stringify(lineEnd)} split ${chunks.map((c) => c.length).join('+')}`);
      }
    }
  });

  it('drops an event that is not complete when the stream ends', () => {
    assert.equal(feedAll(sse(), [`data: ${JSON.stringify({ usage: usageOf(1, 1) })}\n`]), undefined);
  });

  it('skips an event line over the cap without buffering it, and reads the events after it', () => {
    const skipped: string[] = [];
    const reader = sse(skipped, 1024);
    reader.feed(Buffer.from('data: {"usage":'));
    const held = () => {
      const state = reader as unknown as { lineBytes: number; dataBytes: number };
      return state.lineBytes + state.dataBytes;
    };
    for (let i = 0; i < 100; i++) {
      reader.feed(Buffer.alloc(512, 'x'));
      assert.ok(held() <= 1024, `holds ${held()} bytes`);
    }
    reader.feed(Buffer.from(`\n\n${event({ choices: [], usage: usageOf(9, 8) })}`));
    assert.deepEqual(reader.usage, { prompt: 9, completion: 8 });
    assert.equal(skipped.length, 1, skipped.join('; '));
    // A long line within one chunk, and one over the cap made of many data lines.
    const long = `data: {"pad":"${'y'.repeat(2000)}","usage":${JSON.stringify(usageOf(1, 1))}}\n\n`;
    const many = `${'data: zzzzzzzzzzzzzzzzzzzzzzzz\n'.repeat(100)}\n`;
    assert.deepEqual(feedAll(reader, [long, many]), { prompt: 9, completion: 8 });
    assert.equal(skipped.length, 3);
  });

  it('survives garbage: non-JSON data that mentions usage, binary bytes, a lone [DONE]', () => {
    const skipped: string[] = [];
    const garbage = Buffer.concat([
      Buffer.from('data: {"usage": {"prompt_tokens": 1, \n\n'),
      Buffer.from([0xff, 0xfe, 0x00, 0x0a, 0x0a, 0xc3]),
      Buffer.from('\ndata: "usage"\n\ndata: [DONE]\n\n'),
    ]);
    assert.equal(feedAll(sse(skipped), [garbage]), undefined);
    assert.equal(skipped.length, 1);
  });
});

/** A vLLM non-streaming chat answer: usage near the end, other members after it. */
const VLLM_JSON = JSON.stringify({
  id: 'chatcmpl-2',
  object: 'chat.completion',
  created: 1,
  model: 'Qwen/Qwen2.5-0.5B-Instruct',
  choices: [
    {
      index: 0,
      message: { role: 'assistant', content: 'Hé 中文 😀 "usage": {"prompt_tokens": 999}, a \\ and }}]] {', tool_calls: [], usage: usageOf(999, 999) },
      logprobs: { content: [{ token: 'x', logprob: -0.5e-3, bytes: [120] }] },
      finish_reason: 'length',
    },
  ],
  service_tier: null,
  usage: { ...usageOf(21, 7), prompt_tokens_details: { cached_tokens: 0 } },
  prompt_logprobs: null,
  kv_transfer_params: null,
});

describe('JsonUsageReader', () => {
  it('reads the top-level usage of a JSON answer, split at every byte position', () => {
    for (const chunks of everySplit(Buffer.from(VLLM_JSON))) {
      assert.deepEqual(feedAll(json(), chunks), { prompt: 21, completion: 7 }, `split into ${chunks.map((c) => c.length).join('+')}`);
    }
  });

  it('finds usage wherever it is among the members, spelt with escapes, and the last of a repeated key', () => {
    assert.deepEqual(feedAll(json(), [`{"usage":${JSON.stringify(usageOf(1, 2))},"choices":[]}`]), { prompt: 1, completion: 2 });
    assert.deepEqual(feedAll(json(), [`{ "us\\u0061ge" : ${JSON.stringify(usageOf(3, 4))} }`]), { prompt: 3, completion: 4 });
    assert.deepEqual(feedAll(json(), [`{"usage":${JSON.stringify(usageOf(1, 2))},"usage":${JSON.stringify(usageOf(5, 6))}}`]), { prompt: 5, completion: 6 });
    assert.equal(feedAll(json(), [`{"usage":${JSON.stringify(usageOf(1, 2))},"usage":null}`]), undefined);
  });

  it('ignores usage that is nested or inside strings, and keys that only start like it', () => {
    const body = JSON.stringify({
      choices: [{ usage: usageOf(9, 9) }],
      note: '}, "usage": {"prompt_tokens": 9, "completion_tokens": 9}, "x": {',
      usages: usageOf(9, 9),
      'usage\\': usageOf(9, 9),
      metadata: { usage: usageOf(9, 9) },
    });
    assert.equal(feedAll(json(), [body]), undefined);
  });

  it('has no usage for a body that is not an object, and says why', () => {
    for (const body of ['[{"usage":{"prompt_tokens":1}}]', '<html>usage</html>', '']) {
      const skipped: string[] = [];
      assert.equal(feedAll(json(skipped), [body]), undefined);
      assert.equal(skipped.length, body === '' ? 0 : 1, body);
    }
  });

  it('skips a usage value over the cap and bad JSON inside it', () => {
    const skipped: string[] = [];
    const big = `{"usage":{"prompt_tokens":1,"completion_tokens":2,"pad":"${'p'.repeat(200)}"}}`;
    assert.equal(feedAll(json(skipped, 100), [big.slice(0, 50), big.slice(50)]), undefined);
    assert.equal(feedAll(json(skipped), ['{"usage":{"prompt_tokens":1 2}}']), undefined);
    assert.equal(skipped.length, 2, skipped.join('; '));
  });

  it('keeps no more than the usage value while reading a large body', () => {
    const reader = json();
    reader.feed(Buffer.from('{"choices":[{"message":{"content":"'));
    for (let i = 0; i < 64; i++) reader.feed(Buffer.alloc(64 * 1024, 'a'));
    reader.feed(Buffer.from(`"}}],"usage":${JSON.stringify(usageOf(100, 200))}}`));
    assert.deepEqual(reader.usage, { prompt: 100, completion: 200 });
    const { value } = reader as unknown as { value: unknown };
    assert.equal(value, undefined);
  });
});
