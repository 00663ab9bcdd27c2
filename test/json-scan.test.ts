import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isDeepStrictEqual } from 'node:util';
import {
  type ScannedValue,
  type ScanOptions,
  type ScanResult,
  scanTopLevel,
  scanTopLevelSliced,
  TopLevelScanner,
  WantedKeys,
} from '../src/request/json-scan.js';
import { generateCorpus } from './support/json-corpus.js';

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
    const doc =
      '{"messages":[{"role":"user","content":"hi","model":"nested"}],"model":"Qwen/Qwen2.5-0.5B-Instruct","extra":{"owned_by":"deep"},"owned_by":"sglang"}';
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
      '',
      '{',
      '{"model":"m"',
      '{"model" "m"}',
      '{"model":"m",}',
      '{"a":[1,]}',
      '{"a":01}',
      '{"a":1.}',
      '{"a":.5}',
      '{"a":-}',
      '{"a":tru}',
      '{"a":nul}',
      '{model:"m"}',
      '{"a":1}}',
      '{"a":1} x',
      '{"a":"unterminated}',
      '{"a":[1 2]}',
      '{"a":1e}',
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

  it('accepts 256 levels of nesting below the top-level object, and no more', () => {
    const nested = (levels: number) => scan(`{"a":${'['.repeat(levels)}${']'.repeat(levels)},"model":"m"}`);
    assert.equal(nested(256).ok, true);
    const result = nested(257);
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

const ROUTING_NAMES = ['model', 'owned_by', 'engine', 'inference_server'] as const;
const ROUTING = new WantedKeys([...ROUTING_NAMES]);
const CORPUS = generateCorpus(0x5ca1ab1e, 1500);

/** A wanted value in a form that both JSON.parse's and the scanner's answers can be put in. */
interface Comparable {
  type: string;
  value?: unknown;
}

function comparable(value: unknown): Comparable {
  if (value === null || typeof value !== 'object') return { type: value === null ? 'null' : typeof value, value };
  return { type: Array.isArray(value) ? 'array' : 'object' };
}

function comparableScanned(value: ScannedValue): Comparable {
  if (value.type === 'string') return { type: 'string', value: value.value };
  if (value.type === 'string-too-long' || value.raw === undefined) return { type: value.type };
  return { type: value.type, value: JSON.parse(value.raw) };
}

function comparableValues(values: Map<string, ScannedValue>): Record<string, Comparable> {
  return Object.fromEntries([...values].map(([name, value]) => [name, comparableScanned(value)]));
}

/** The wanted values by JSON.parse, or undefined if it rejects the text or it is not an object. */
function valuesByJsonParse(text: string): Record<string, Comparable> | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return undefined;
  const members = doc as Record<string, unknown>;
  return Object.fromEntries(ROUTING_NAMES.filter((name) => Object.hasOwn(members, name)).map((name) => [name, comparable(members[name])]));
}

/** Where `scan` and JSON.parse disagree on the corpus: on validity, or on the wanted values. */
function disagreements(scan: (body: Buffer) => ScanResult): string[] {
  const found: string[] = [];
  for (const { text } of CORPUS) {
    const expected = valuesByJsonParse(text);
    const result = scan(Buffer.from(text));
    if (!result.ok) {
      if (expected !== undefined) found.push(`rejected valid ${JSON.stringify(text)}: ${result.error}`);
    } else if (expected === undefined) {
      found.push(`accepted invalid ${JSON.stringify(text)}`);
    } else if (!result.complete || !isDeepStrictEqual(comparableValues(result.values), expected)) {
      found.push(`wrong values for ${JSON.stringify(text)}`);
    }
  }
  return found;
}

/** Scans `body` with TopLevelScanner.advance(sliceBytes) until it finishes. */
function scanInSlices(body: Buffer, sliceBytes: number, options?: ScanOptions): { result: ScanResult; slices: number } {
  const scanner = new TopLevelScanner(body, ROUTING, options);
  for (let slices = 1; ; slices++) {
    const result = scanner.advance(sliceBytes);
    if (result !== undefined) return { result, slices };
  }
}

function scanPartial(body: Buffer): ScanResult {
  return scanTopLevel(body, ROUTING, { partial: true });
}

describe('scanTopLevel against JSON.parse on a generated corpus', () => {
  it('accepts what JSON.parse accepts, rejects what it rejects, and finds the same values', () => {
    const valid = CORPUS.filter(({ text }) => valuesByJsonParse(text) !== undefined).length;
    // Agreement proves little unless the corpus holds plenty of both.
    assert.ok(valid > 1000 && CORPUS.length - valid > 1000, `${valid} valid documents of ${CORPUS.length}`);
    assert.deepEqual(
      disagreements((body) => scanTopLevel(body, ROUTING)),
      [],
    );
  });

  it('control: the same check catches a scanner that tolerates a trailing comma', () => {
    const lenient = (body: Buffer) => scanTopLevel(Buffer.from(body.toString().replace(/,( ?[}\]])/g, '$1')), ROUTING);
    assert.ok(disagreements(lenient).some((problem) => problem.startsWith('accepted invalid')));
  });

  it('gives the same result in slices of any size as in one go', () => {
    for (const { text } of CORPUS) {
      const body = Buffer.from(text);
      const whole = scanTopLevel(body, ROUTING);
      for (const sliceBytes of [1, 2, 3, 5, 16, 61]) {
        assert.deepStrictEqual(scanInSlices(body, sliceBytes).result, whole, `${JSON.stringify(text)} in slices of ${sliceBytes}`);
      }
    }
  });

  it('scanTopLevelSliced resolves with the synchronous result, in slices of 1 byte too', async () => {
    for (const { text } of CORPUS.slice(0, 600)) {
      const body = Buffer.from(text);
      const whole = scanTopLevel(body, ROUTING);
      for (const sliceBytes of [1, 7, 4096]) {
        assert.deepStrictEqual(await scanTopLevelSliced(body, ROUTING, { sliceBytes }), whole, `${JSON.stringify(text)} in slices of ${sliceBytes}`);
      }
    }
  });
});

/** A document built member by member, so that the test knows where each value ends. */
function documentOf(members: readonly (readonly [key: string, value: string])[], gap = ''): { body: Buffer; needs: Map<string, number> } {
  let text = `{${gap}`;
  const needs = new Map<string, number>();
  members.forEach(([key, value], i) => {
    if (i > 0) text += `,${gap}`;
    text += `${key}${gap}:${gap}${value}`;
    // Bytes a prefix needs for the value to be whole; a number is whole once the byte after it is seen.
    needs.set(JSON.parse(key) as string, Buffer.byteLength(text) + (/^-?\d/.test(value) ? 1 : 0));
    text += gap;
  });
  return { body: Buffer.from(`${text}}`), needs };
}

const PARTIAL_DOCUMENTS = [
  documentOf([
    ['"messages"', '[{"role":"user","content":"say \\"hi\\" \\\\"}]'],
    ['"model"', '"Qwen/Qw\\u0065n-\u00e9"'],
    ['"n"', '12'],
    ['"owned_by"', '"vllm"'],
    ['"engine"', '-1.5e+3'],
    ['"inference_server"', 'true'],
  ]),
  documentOf(
    [
      ['"model"', '{"a":[1,"]}"],"b":null}'],
      ['"owned_by"', 'false'],
      ['"engine"', 'null'],
      ['"x"', '[[],{}]'],
      ['"inference_server"', '[0]'],
    ],
    ' ',
  ),
  documentOf(
    [
      ['"mod\\u0065l"', '"x\\"y"'],
      ['"a"', '[ ]'],
      ['"owned_by"', '0'],
    ],
    ' ',
  ),
  documentOf([
    ['"a"', '1'],
    ['"model"', '12'],
  ]),
];

/** What is wrong with partial scans (by `scan`) of every prefix of `body`, a valid document with no repeated key. */
function prefixProblems(body: Buffer, scan: (prefix: Buffer) => ScanResult): string[] {
  const whole = scanTopLevel(body, ROUTING);
  assert.ok(whole.ok);
  const objectEnd = Buffer.byteLength(body.toString().trimEnd());
  const problems: string[] = [];
  for (let length = 0; length <= body.length; length++) {
    const prefix = body.subarray(0, length);
    const result = scan(prefix);
    if (!result.ok) {
      problems.push(`rejected ${JSON.stringify(prefix.toString())}: ${result.error}`);
      continue;
    }
    if (result.complete !== length >= objectEnd) problems.push(`complete: ${result.complete} for ${JSON.stringify(prefix.toString())}`);
    for (const [name, value] of result.values) {
      if (!isDeepStrictEqual(value, whole.values.get(name)))
        problems.push(`recorded ${name} = ${JSON.stringify(value)} from ${JSON.stringify(prefix.toString())}`);
    }
  }
  return problems;
}

describe('scanTopLevel with partial: true', () => {
  it('records, for every prefix of a document, exactly the wanted values that end inside it', () => {
    for (const { body, needs } of PARTIAL_DOCUMENTS) {
      const whole = scanTopLevel(body, ROUTING);
      assert.ok(whole.ok);
      for (let length = 0; length <= body.length; length++) {
        const prefix = body.subarray(0, length);
        const values: Map<string, ScannedValue> = new Map([...whole.values].filter(([name]) => needs.get(name)! <= length));
        const expected: ScanResult = { ok: true, complete: length === body.length, values };
        assert.deepStrictEqual(scanPartial(prefix), expected, `prefix ${JSON.stringify(prefix.toString())}`);
        for (const sliceBytes of [1, 3]) assert.deepStrictEqual(scanInSlices(prefix, sliceBytes, { partial: true }).result, expected);
      }
    }
  });

  it('accepts every prefix of valid generated documents, recording only values of the whole document', () => {
    const documents = CORPUS.filter(
      ({ text, topKeys }) => topKeys !== undefined && new Set(topKeys).size === topKeys.length && valuesByJsonParse(text) !== undefined,
    );
    assert.ok(documents.length > 300);
    for (const { text } of documents) assert.deepEqual(prefixProblems(Buffer.from(text), scanPartial), []);
  });

  it('control: the same check catches a scan that records a value cut off at the end', () => {
    // Closing a string cut at the end turns `{"model":"Qwen/Qw` into a recorded "Qwen/Qw".
    const closesCutStrings = (prefix: Buffer) => scanPartial(Buffer.concat([prefix, Buffer.from('"')]));
    const problems = PARTIAL_DOCUMENTS.flatMap(({ body }) => prefixProblems(body, closesCutStrings));
    assert.ok(problems.some((problem) => problem.startsWith('recorded model')));
  });

  it('does not record a wanted value that the body cuts off', () => {
    const partial = (text: string) => scanPartial(Buffer.from(text));
    const modelA = new Map([['model', { type: 'string', value: 'a' }]]);
    assert.deepStrictEqual(partial('{"model":"Qwen/Qw'), { ok: true, complete: false, values: new Map() });
    assert.deepStrictEqual(partial('{"model":"a","owned_by":"vl'), { ok: true, complete: false, values: modelA });
    assert.deepStrictEqual(partial('{"model":"a", "n": 12'), { ok: true, complete: false, values: modelA });
    assert.deepStrictEqual(partial('{"model":tr'), { ok: true, complete: false, values: new Map() });
    assert.deepStrictEqual(partial('{"model":12'), { ok: true, complete: false, values: new Map() });
    // A repeated key: its last value counts, and that one is cut off.
    assert.deepStrictEqual(partial('{"model":"a","model":"b'), { ok: true, complete: false, values: new Map() });
    assert.deepStrictEqual(partial(''), { ok: true, complete: false, values: new Map() });
    // Without `partial`, the end of the body is an error; whole documents are complete.
    assert.equal(scanTopLevel(Buffer.from('{"model":"a",'), ROUTING).ok, false);
    assert.deepStrictEqual(scanTopLevel(Buffer.from('{"model":"a"}'), ROUTING), { ok: true, complete: true, values: modelA });
  });

  it('reports a structural error inside the prefix as a whole scan does; shorter prefixes are fine', () => {
    let checked = 0;
    for (const { text } of CORPUS) {
      const body = Buffer.from(text);
      const whole = scanTopLevel(body, ROUTING);
      // Errors at the end of the body lie in no shorter prefix. A bad escape is found only once
      // its string has ended (next test), so its offset does not say where it is noticed.
      if (whole.ok || whole.offset === body.length || whole.error.startsWith('invalid escape')) continue;
      checked++;
      for (let length = 0; length <= body.length; length++) {
        const result = scanPartial(body.subarray(0, length));
        if (length > whole.offset) assert.deepStrictEqual(result, whole, `prefix ${JSON.stringify(text.slice(0, length))}`);
        else assert.equal(result.ok, true, `prefix ${JSON.stringify(text.slice(0, length))}`);
      }
    }
    assert.ok(checked > 500);
  });

  it('checks the escapes of a wanted key or value once its string has ended', () => {
    for (const text of ['{"model":"\\u00zz', '{"\\u00zz']) {
      assert.deepStrictEqual(scanPartial(Buffer.from(text)), { ok: true, complete: false, values: new Map() }, text);
    }
    for (const text of ['{"model":"\\u00zz"', '{"\\u00zz"']) {
      const result = scanPartial(Buffer.from(text));
      assert.ok(!result.ok && /invalid escape/.test(result.error), text);
    }
  });
});

describe('scanTopLevel: keys spelt with escapes', () => {
  it('matches a wanted key spelt partly or wholly with escapes', () => {
    assert.deepEqual(strings('{"mod\\u0065l":"partly"}'), { model: 'partly' });
    assert.deepEqual(strings('{"\\u006d\\u006f\\u0064\\u0065\\u006c":"wholly"}'), { model: 'wholly' });
    assert.deepEqual(strings('{"\\u006D\\u006F\\u0064\\u0065\\u006C":"upper-case hex"}'), { model: 'upper-case hex' });
    assert.deepEqual(strings('{"owned\\u005fby":"x","engin\\u0065":"y"}'), { owned_by: 'x', engine: 'y' });
  });

  it('matches names beyond ASCII, surrogate pairs included, spelt raw or escaped', () => {
    const names = ['mod\u00e8le', 'm\ud83d\ude00'];
    const wanted = new WantedKeys(names);
    const found = (key: string) => {
      const result = scanTopLevel(Buffer.from(`{"${key}":1}`), wanted);
      assert.ok(result.ok);
      const byJsonParse = Object.keys(JSON.parse(`{"${key}":1}`) as object).filter((name) => names.includes(name));
      assert.deepEqual([...result.values.keys()], byJsonParse, key);
      return byJsonParse;
    };
    for (const key of ['mod\u00e8le', 'mod\\u00e8le', 'mod\\u00E8le', '\\u006dod\\u00e8l\\u0065']) assert.deepEqual(found(key), ['mod\u00e8le']);
    for (const key of ['m\ud83d\ude00', 'm\\ud83d\\ude00', '\\u006d\\uD83D\\uDE00']) assert.deepEqual(found(key), ['m\ud83d\ude00']);
    // A lone half of the pair, or the halves swapped, is another string (JSON.parse keeps lone surrogates).
    for (const key of ['m\\ud83d', 'm\\ude00', 'm\\ud83d\\u0041', 'm\\ude00\\ud83d', 'm\\ud83d\\n']) assert.deepEqual(found(key), []);
  });

  it('does not take a longer key for a wanted one', () => {
    assert.deepEqual(strings('{"model\\u0000":"nul","model\\u0020":"space","mode\\u006c\\u006c":"two l"}'), {});
    // control: the same spelling without the extra character is wanted
    assert.deepEqual(strings('{"mode\\u006c":"one l"}'), { model: 'one l' });
  });

  it('rejects an invalid escape in a key that could still be a wanted one', () => {
    for (const doc of ['{"\\u00zz":1}', '{"mod\\u00":1}', '{"mod\\x65l":1}', '{"\\u006d\\u006":1}']) {
      const result = scan(doc);
      assert.equal(result.ok, false, doc);
      assert.match(!result.ok ? result.error : '', /invalid escape/);
    }
  });

  it('skips, unread, a key that differs from every name before its bad escape or is too long for any', () => {
    for (const doc of ['{"x\\u00zz":1,"model":"m"}', `{"${'a'.repeat(100)}\\u00zz":1,"model":"m"}`, '{"a":{"\\u00zz":1},"model":"m"}']) {
      assert.deepEqual(strings(doc), { model: 'm' }, doc);
    }
  });

  it('rejects an invalid escape in a wanted value but not in a skipped one', () => {
    assert.equal(scan('{"model":"\\u00zz"}').ok, false);
    assert.deepEqual(strings('{"prompt":"\\u00zz \\q","model":"m"}'), { model: 'm' });
  });
});

describe('scanTopLevel: maxValueBytes', () => {
  it('reports a wanted string longer than the limit by its raw length, without reading it', () => {
    // The bad escape at its end would be an error if the value were read.
    const model = `${'m'.repeat(8 * 1024 * 1024)}\\u00zz`;
    const body = Buffer.from(`{"model":"${model}","owned_by":"vllm"}`);
    const values = new Map<string, ScannedValue>([
      ['model', { type: 'string-too-long', bytes: model.length }],
      ['owned_by', { type: 'string', value: 'vllm' }],
    ]);
    assert.deepStrictEqual(scanTopLevel(body, WANTED, { maxValueBytes: 1024 }), { ok: true, complete: true, values });
    // control: without a limit the value is read, and its bad escape found
    assert.equal(scanTopLevel(body, WANTED).ok, false);
  });

  it('accepts a value exactly at the limit, counting escapes as written', () => {
    const body = Buffer.from('{"model":"\\u0041bc"}');
    const limited = (maxValueBytes: number) => {
      const result = scanTopLevel(body, WANTED, { maxValueBytes });
      assert.ok(result.ok);
      return result.values.get('model');
    };
    assert.deepStrictEqual(limited(8), { type: 'string', value: 'Abc' });
    assert.deepStrictEqual(limited(7), { type: 'string-too-long', bytes: 8 });
  });

  it('limits wanted string values only', () => {
    const body = Buffer.from(`{"prompt":"${'p'.repeat(1000)}","model":"m","owned_by":12345678}`);
    const result = scanTopLevel(body, WANTED, { maxValueBytes: 4 });
    assert.ok(result.ok);
    assert.deepEqual(comparableValues(result.values), { model: { type: 'string', value: 'm' }, owned_by: { type: 'number', value: 12345678 } });
  });
});

describe('TopLevelScanner.advance', () => {
  it('scans exactly its budget per call, also inside a long string of escaped quotes or backslashes', () => {
    for (const content of ['\\"'.repeat(5000), `${'\\\\'.repeat(5000)}\\"`, 'x'.repeat(10_000)]) {
      const body = Buffer.from(`{"prompt":"${content}","model":"m"}`);
      for (const budget of [1, 2, 3, 100, 4096]) {
        const { result, slices } = scanInSlices(body, budget);
        assert.ok(result.ok && result.values.get('model')?.type === 'string');
        assert.equal(slices, Math.ceil(body.length / budget), `budget ${budget}`);
      }
    }
  });

  it('refuses a budget below one byte', () => {
    assert.throws(() => new TopLevelScanner(Buffer.from('{}'), ROUTING).advance(0), RangeError);
  });
});

describe('scanTopLevelSliced', () => {
  const SLICE = 4096;
  const manySlices = Buffer.from(`{"prompt":"${'\\"'.repeat(64 * 1024)}","model":"m"}`);

  it('lets a callback scheduled before it run before it resolves, when the body takes several slices', async () => {
    let ran = false;
    setImmediate(() => (ran = true));
    const result = await scanTopLevelSliced(manySlices, ROUTING, { sliceBytes: SLICE });
    assert.ok(result.ok);
    assert.equal(ran, true);
  });

  it('control: in a single slice it resolves before that callback runs', async () => {
    let ran = false;
    setImmediate(() => (ran = true));
    const result = await scanTopLevelSliced(manySlices, ROUTING, { sliceBytes: manySlices.length });
    assert.ok(result.ok);
    assert.equal(ran, false);
  });

  it('gives other callbacks a turn between every two slices', async () => {
    let turns = 0;
    let scanning = true;
    const tick = () => {
      turns++;
      if (scanning) setImmediate(tick);
    };
    setImmediate(tick);
    await scanTopLevelSliced(manySlices, ROUTING, { sliceBytes: SLICE });
    scanning = false;
    const slices = Math.ceil(manySlices.length / SLICE);
    assert.ok(turns >= slices - 1, `${turns} turns for ${slices} slices`);
  });

  it('stops when its signal aborts, rejecting with the reason', async () => {
    // The body's error is at its very end: a scan that went on would resolve with it.
    const body = Buffer.from(`{"prompt":"${'x'.repeat(100_000)}",}`);
    const controller = new AbortController();
    const reason = new Error('the client went away');
    setImmediate(() => controller.abort(reason));
    await assert.rejects(scanTopLevelSliced(body, ROUTING, { sliceBytes: SLICE, signal: controller.signal }), (err) => err === reason);
    // control: not aborted, the same scan resolves with the error
    const result = await scanTopLevelSliced(body, ROUTING, { sliceBytes: SLICE, signal: new AbortController().signal });
    assert.equal(result.ok, false);
  });

  it('refuses a slice below one byte', async () => {
    await assert.rejects(scanTopLevelSliced(Buffer.from('{}'), ROUTING, { sliceBytes: 0 }), RangeError);
  });

  it('rejects at once when its signal has already aborted', async () => {
    const reason = new Error('already gone');
    await assert.rejects(scanTopLevelSliced(Buffer.from('{}'), ROUTING, { sliceBytes: SLICE, signal: AbortSignal.abort(reason) }), (err) => err === reason);
  });
});
