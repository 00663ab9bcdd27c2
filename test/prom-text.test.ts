import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { type PromSeries, PromTextError, parsePromText, parseValue } from '../src/discovery/load/prom-text.js';

/** Fixture files live in the source tree (tests run from dist/test). */
function fixture(name: string): string {
  return readFileSync(new URL(`../../test/fixtures/metrics/${name}`, import.meta.url), 'utf8');
}

/** The samples as plain data: deepEqual then compares values, NaN included. */
function plain(series: PromSeries): Record<string, { labels: Record<string, string>; value: number; timestampMs?: number }[]> {
  const out: Record<string, { labels: Record<string, string>; value: number; timestampMs?: number }[]> = {};
  for (const [name, samples] of series) {
    out[name] = samples.map(({ labels, value, timestampMs }) =>
      timestampMs === undefined ? { labels: { ...labels }, value } : { labels: { ...labels }, value, timestampMs },
    );
  }
  return out;
}

function parseError(text: string, names?: string[]): PromTextError {
  try {
    parsePromText(text, names ? { names: new Set(names) } : {});
  } catch (err) {
    assert.ok(err instanceof PromTextError, `a PromTextError, not ${String(err)}`);
    return err;
  }
  assert.fail(`parsed without an error: ${JSON.stringify(text.slice(0, 80))}`);
}

describe('Prometheus text format 0.0.4', () => {
  it('reads comments, HELP/TYPE, names with colons, labels, timestamps and the special values', () => {
    const text = [
      '# A comment that is not HELP or TYPE: anything { goes " here',
      '# HELP vllm:num_requests_running Number of requests.\\nSecond line, a \\\\ backslash.',
      '# TYPE vllm:num_requests_running gauge',
      'vllm:num_requests_running{engine="0",model_name="m"} 3.0',
      '',
      '   ',
      '\t# indented comment',
      'plain_total 1.5e+3 1700000000123',
      'no_labels_exp 2E-2',
      'spaced { a = "1" , b="2", } 7',
      'nan_gauge NaN',
      'pos_inf +Inf',
      'neg_inf -Inf',
      'negative_ts 1 -5',
      'empty_set{} .5',
    ].join('\n');
    assert.deepEqual(plain(parsePromText(text)), {
      'vllm:num_requests_running': [{ labels: { engine: '0', model_name: 'm' }, value: 3 }],
      plain_total: [{ labels: {}, value: 1500, timestampMs: 1700000000123 }],
      no_labels_exp: [{ labels: {}, value: 0.02 }],
      spaced: [{ labels: { a: '1', b: '2' }, value: 7 }],
      nan_gauge: [{ labels: {}, value: Number.NaN }],
      pos_inf: [{ labels: {}, value: Infinity }],
      neg_inf: [{ labels: {}, value: -Infinity }],
      negative_ts: [{ labels: {}, value: 1, timestampMs: -5 }],
      empty_set: [{ labels: {}, value: 0.5 }],
    });
  });

  it('unescapes \\", \\\\ and \\n in label values; \\\\" is an escaped backslash, then the closing quote', () => {
    const text = 'm{quoted="say \\"hi\\"",path="C:\\\\dir\\\\",lines="a\\nb",after="x"} 1\n';
    const [sample] = parsePromText(text).get('m')!;
    assert.deepEqual({ ...sample!.labels }, { quoted: 'say "hi"', path: 'C:\\dir\\', lines: 'a\nb', after: 'x' });
    // Control: a reader that took the first quote after a backslash as escaped would run `path`
    // on into `,lines=...` and either fail or lose the labels after it.
    assert.equal(Object.keys(sample!.labels).length, 4);
  });

  it('takes CRLF line ends and a missing final newline; every line of a sample counts', () => {
    const crlf = 'a 1\r\nb{x="y"} 2\r\n\r\nc 3';
    assert.deepEqual(plain(parsePromText(crlf)), { a: [{ labels: {}, value: 1 }], b: [{ labels: { x: 'y' }, value: 2 }], c: [{ labels: {}, value: 3 }] });
    assert.deepEqual(plain(parsePromText('')), {});
  });

  it('keeps every series of a name in order', () => {
    const series = parsePromText('g{m="a"} 1\ng{m="b"} 2\nother 0\ng{m="c"} 3\n');
    assert.deepEqual(
      series.get('g')!.map((s) => [s.labels.m, s.value]),
      [
        ['a', 1],
        ['b', 2],
        ['c', 3],
      ],
    );
  });

  it('a label called __proto__ is data, not a prototype', () => {
    const [sample] = parsePromText('m{__proto__="x",constructor="y"} 1').get('m')!;
    assert.equal(Object.getPrototypeOf(sample!.labels), Object.prototype);
    assert.deepEqual(Object.entries(sample!.labels), [
      ['__proto__', 'x'],
      ['constructor', 'y'],
    ]);
  });

  it('with a name filter, returns only those names and skips the other lines after their name', () => {
    const text = 'wanted{a="1"} 1\nunwanted{broken="no closing quote} 1\nunwanted_too not-a-number\nwanted{a="2"} 2\n';
    const series = parsePromText(text, { names: new Set(['wanted']) });
    assert.deepEqual([...series.keys()], ['wanted']);
    assert.deepEqual(
      series.get('wanted')!.map((s) => s.value),
      [1, 2],
    );
    // Control: the same text without the filter is refused at the broken line.
    assert.equal(parseError(text).message, 'line 2: unwanted: the value of label broken is not closed (the line ends inside quotes)');
  });

  it('the hand-written engine answers are valid throughout, histograms and counters included', () => {
    for (const name of ['vllm.txt', 'vllm-v0.txt', 'sglang.txt']) {
      const series = parsePromText(fixture(name));
      assert.ok(series.size > 5, `${name}: ${series.size} names`);
    }
    const buckets = parsePromText(fixture('vllm.txt')).get('vllm:time_to_first_token_seconds_bucket')!;
    assert.deepEqual(buckets.at(-1)!.labels.le, '+Inf');
    assert.equal(buckets.at(-1)!.value, 1745);
  });
});

describe('Prometheus text format: what is not the format fails with the line and the reason', () => {
  const cases: [string, string, string][] = [
    ['an HTML page', fixture('login.html'), 'line 1: expected a metric name or a comment, found "<!DOCTYPE html>"'],
    ['a JSON error', '{"detail":"Not Found"}', 'line 1: expected a metric name or a comment, found "{\\"detail\\":\\"Not Found\\"}"'],
    [
      'a truncated label set',
      'ok 1\nvllm:num_requests_running{engine="0",model_name="m"',
      "line 2: vllm:num_requests_running: the label set is not closed (no '}')",
    ],
    ['a label set cut inside a value', 'm{a="open', 'line 1: m: the value of label a is not closed (the line ends inside quotes)'],
    ['a non-number value', 'm{a="1"} 12abc', 'line 1: m: the value "12abc" is not a number'],
    ['a hex value', 'm 0x10', 'line 1: m: the value "0x10" is not a number'],
    ['a name with no value', 'lonely_metric', 'line 1: lonely_metric has no value'],
    ['labels and no value', 'm{a="1"}   ', 'line 1: m has no value'],
    ['a fractional timestamp', 'm 1 17.5', 'line 1: m: the timestamp "17.5" is not an integer of milliseconds'],
    ['text after the timestamp', 'm 1 17 extra', 'line 1: m: unexpected "extra" after the timestamp'],
    ['an unknown escape', 'm{a="\\t"} 1', 'line 1: m: invalid escape "\\\\t" in the value of label a (only \\\\, \\" and \\n)'],
    ['a label twice', 'm{a="1",a="2"} 1', 'line 1: m: label a appears twice'],
    ['a missing =', 'm{a "1"} 1', "line 1: m: expected '=' after the label name a"],
    ['an unquoted label value', 'm{a=1} 1', "line 1: m: the value of label a does not start with '\"'"],
    ['a missing comma', 'm{a="1" b="2"} 1', 'line 1: m: expected \',\' or \'}\' after the value of label a, found "b=\\"2\\"} 1"'],
    ['a lone comma', 'm{,} 1', 'line 1: m: expected a label name or \'}\', found ",} 1"'],
    ['a bad character in a name', 'vllm-num 1', 'line 1: "vllm-num 1" is not a metric name followed by labels or a value'],
    ['an unknown TYPE', '# TYPE m gauges', 'line 1: # TYPE m: "gauges" is not one of counter, gauge, histogram, summary, untyped'],
    ['a TYPE without a name', '# TYPE', 'line 1: # TYPE without a metric name'],
    ['a TYPE without a type', '# TYPE m ', 'line 1: # TYPE m without a type'],
    ['a second TYPE line', '# TYPE m gauge\n# TYPE m counter', 'line 2: a second # TYPE line for m'],
    ['a bad HELP escape', '# HELP m a \\q b', 'line 1: # HELP m: invalid escape "\\\\q" (only \\\\ and \\n)'],
  ];
  for (const [what, text, message] of cases) {
    it(what, () => {
      const err = parseError(text);
      assert.equal(err.message, message);
      assert.equal(err.line, Number(/^line (\d+)/.exec(message)![1]));
    });
  }

  it('the line number counts CRLF lines, blank ones and comments', () => {
    assert.equal(parseError('# c\r\n\r\na 1\r\nb{x="1" 2\r\n').line, 4);
  });

  it('an HTML page fails even when only some names are wanted', () => {
    assert.equal(parseError(fixture('login.html'), ['vllm:num_requests_running']).line, 1);
  });

  it('ends promptly on huge hostile lines (no backtracking, no quadratic work)', () => {
    const started = performance.now();
    const digits = '9'.repeat(4 * 1024 * 1024);
    assert.match(parseError(`m ${digits}x`).message, /^line 1: m: the value "9{40}…" is not a number$/);
    assert.match(parseError(`m{a="${'\\\\'.repeat(1024 * 1024)}`).message, /the value of label a is not closed/);
    const manyLabels = Array.from({ length: 200_000 }, (_, i) => `l${i}="v"`).join(',');
    assert.match(parseError(`m{${manyLabels}`).message, /^line 1: m: the label set is not closed/);
    const manyLines = 'x 1\n'.repeat(500_000);
    assert.equal(parsePromText(manyLines, { names: new Set(['y']) }).size, 0);
    assert.equal(parsePromText(manyLines).get('x')!.length, 500_000);
    // Generous: all of the above takes well under a second; a backtracking reader takes hours.
    assert.ok(performance.now() - started < 20_000);
  });
});

describe('sample values', () => {
  it('takes the spellings Go ParseFloat takes and nothing else', () => {
    const good: [string, number][] = [
      ['0', 0],
      ['-0.5', -0.5],
      ['+3', 3],
      ['1.', 1],
      ['.25', 0.25],
      ['1e3', 1000],
      ['1.5E-2', 0.015],
      ['7e+0', 7],
      ['Inf', Infinity],
      ['+inf', Infinity],
      ['-Infinity', -Infinity],
      ['nan', Number.NaN],
    ];
    for (const [token, value] of good) assert.deepEqual(parseValue(token), value, token);
    for (const token of ['', '.', '-', 'e3', '1e', '1e+', '1.2.3', '0x1p3', '1_000', '+NaN', 'Infx', ' 1', '1,5']) {
      assert.equal(parseValue(token), undefined, JSON.stringify(token));
    }
  });
});
