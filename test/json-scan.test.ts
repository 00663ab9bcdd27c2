import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WantedKeys, scanTopLevel } from '../src/request/json-scan.js';

const WANTED = new WantedKeys(['model', 'owned_by', 'engine']);

function scan(text: string | Buffer) {
  return scanTopLevel(Buffer.isBuffer(text) ? text : Buffer.from(text), WANTED);
}

function strings(text: string): Record<string, unknown> {
  const result = scan(text);
  assert.ok(result.ok, `expected a valid document: ${!result.ok ? result.error : ''}`);
  return Object.fromEntries([...result.values].map(([key, value]) => [key, value.type === 'string' ? value.value : value.type]));
}

describe('scanTopLevel', () => {
  it('finds top-level string values and ignores nested keys of the same name', () => {
    const doc = '{"messages":[{"role":"user","content":"hi","model":"nested"}],"model":"Qwen/Qwen2.5-0.5B-Instruct","extra":{"owned_by":"deep"},"owned_by":"sglang"}';
    assert.deepEqual(strings(doc), { model: 'Qwen/Qwen2.5-0.5B-Instruct', owned_by: 'sglang' });
  });

  it('agrees with JSON.parse on escaped strings and unicode', () => {
    const value = 'a "quoted" \\ back\\slash \u00e9\u4e2d\ud83d\ude00 \n\t';
    const doc = JSON.stringify({ prompt: 'x\\"y"', model: value, engine: 'vllm' });
    assert.deepEqual(strings(doc), { model: value, engine: 'vllm' });
    assert.deepEqual(strings('{"model":"\\u0041\\u00e9"}'), { model: 'A\u00e9' });
  });

  it('matches a wanted key spelt with escapes, as JSON.parse would', () => {
    assert.deepEqual(strings('{"mod\\u0065l":"escaped","m\\u006fdel2":"x"}'), { model: 'escaped' });
    assert.deepEqual(strings('{"owned_byX":"no","ownedby":"no","owned_by":"yes"}'), { owned_by: 'yes' });
  });

  it('handles a string ending in escaped backslashes before the closing quote', () => {
    assert.deepEqual(strings('{"prompt":"ends with \\\\\\\\","model":"m"}'), { model: 'm' });
    assert.deepEqual(strings('{"prompt":"has \\\\\\" inside","model":"m2"}'), { model: 'm2' });
  });

  it('reports the JSON type of a wanted key that is not a string', () => {
    const result = scan('{"model": 12.5e3, "owned_by": null, "engine": {"a":[1,true,false]}}');
    assert.ok(result.ok);
    assert.deepEqual(result.values.get('model'), { type: 'number', raw: '12.5e3' });
    assert.equal(result.values.get('owned_by')?.type, 'null');
    assert.equal(result.values.get('engine')?.type, 'object');
  });

  it('accepts whitespace everywhere JSON allows it', () => {
    assert.deepEqual(strings(' \n{ "model" :\t"m" ,\r\n "x" : [ ] , "y" : { } }\n '), { model: 'm' });
  });

  it('accepts what JSON.parse accepts and rejects what it rejects (structure)', () => {
    const valid = ['{}', '{"a":-0.5e-3}', '{"a":[[],[{}],"s",1,true,null]}', '{"a":0}', '{"a":"\\""}'];
    const invalid = [
      '', '{', '{"model":"m"', '{"model" "m"}', '{"model":"m",}', '{"a":[1,]}', '{"a":01}',
      '{"a":1.}', '{"a":.5}', '{"a":-}', '{"a":tru}', '{"a":nul}', '{model:"m"}', '{"a":1}}', '{"a":1} x',
      '{"a":"unterminated}', '{"a":[1 2]}', '{"a":1e}',
    ];
    for (const doc of ['[]', '"model"', '12', 'null']) assert.equal(scan(doc).ok, false, `${doc} is not an object`);
    for (const doc of valid) {
      assert.doesNotThrow(() => JSON.parse(doc));
      assert.ok(scan(doc).ok, `scanner rejected valid ${doc}`);
    }
    for (const doc of invalid) {
      assert.throws(() => JSON.parse(doc));
      const result = scan(doc);
      assert.equal(result.ok, false, `scanner accepted invalid ${JSON.stringify(doc)}`);
    }
  });

  it('refuses nesting deeper than its limit instead of overflowing the stack', () => {
    const deep = `{"a":${'['.repeat(100_000)}${']'.repeat(100_000)}}`;
    const result = scan(deep);
    assert.equal(result.ok, false);
    assert.match(!result.ok ? result.error : '', /nesting/);
  });

  it('finds the model after a 20 MiB prompt', () => {
    const prompt = 'lorem ipsum \\"quoted\\" '.repeat(Math.ceil((20 * 1024 * 1024) / 20));
    const body = Buffer.from(`{"messages":[{"role":"user","content":"${prompt}"}],"model":"big","owned_by":"vllm"}`);
    assert.ok(body.length > 20 * 1024 * 1024);
    assert.deepEqual(strings(body.toString()), { model: 'big', owned_by: 'vllm' });
  });
});
