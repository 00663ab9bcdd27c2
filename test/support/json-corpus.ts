/**
 * A deterministic corpus of JSON documents for testing the body scanner against JSON.parse:
 * random valid documents (escapes, unicode, numbers, nesting, wanted keys spelt with escapes,
 * repeated keys) and one-byte mutations of them, which are mostly invalid.
 *
 * Mutations only touch bytes outside string contents (quotes included), and documents use no
 * whitespace but spaces. So a mutated document never has an invalid escape or a raw control
 * character inside a string: when JSON.parse rejects it, its structure is broken, which is what
 * the scanner must notice too.
 */

import { seededRandom } from './random.js';

export interface CorpusDocument {
  text: string;
  /** The decoded top-level keys, in order, when the generator wrote them (not for mutations). */
  topKeys?: string[];
}

const STRING_PIECES = [
  'a',
  'Qwen',
  '/',
  ' ',
  'x y',
  '\u00e9',
  '\u4e2d',
  '\ud83d\ude00',
  '\\"',
  '\\\\',
  '\\/',
  '\\b',
  '\\f',
  '\\n',
  '\\r',
  '\\t',
  '\\u0041',
  '\\u00e9',
  '\\ud83d\\ude00',
  '\\ud800',
  '\\\\\\"',
  '{',
  ']',
  ',',
  ':',
];
const NUMBERS = ['0', '-0', '7', '12', '-3.25', '1e5', '2E-3', '0.5e+2', '123456789012345678901234567890', '-0.0e0'];
/** Raw key text and what it decodes to. */
const KEYS: readonly (readonly [string, string])[] = [
  ['model', 'model'],
  ['owned_by', 'owned_by'],
  ['engine', 'engine'],
  ['inference_server', 'inference_server'],
  ['mod\\u0065l', 'model'],
  ['\\u006d\\u006f\\u0064\\u0065\\u006c', 'model'],
  ['owned\\u005fby', 'owned_by'],
  ['model\\u0000', 'model\u0000'],
  ['model2', 'model2'],
  ['a', 'a'],
  ['messages', 'messages'],
  ['\\u0061', 'a'],
  ['', ''],
];
const MUTATION_BYTES = '{}[],:" 0123456789-+.eEtrufalsnx\\';

export function generateCorpus(seed: number, count: number): CorpusDocument[] {
  const next = seededRandom(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)]!;
  const space = () => (next() < 0.2 ? ' ' : '');

  // Each token is written with whether its bytes are string contents (which mutations avoid).
  type Piece = [text: string, inString: boolean];
  const commaSeparated = (parts: Piece[][]): Piece[] => parts.flatMap((part, i) => (i > 0 ? [[',', false] as Piece, ...part] : part));
  const stringPieces = (): Piece[] => {
    const content = Array.from({ length: Math.floor(next() * 5) }, () => pick(STRING_PIECES)).join('');
    return [
      ['"', false],
      [content, true],
      ['"', false],
    ];
  };
  const valuePieces = (depth: number): Piece[] => {
    const kind = next();
    if (kind < 0.3) return stringPieces();
    if (kind < 0.5) return [[pick(NUMBERS), false]];
    if (kind < 0.6) return [[pick(['true', 'false', 'null']), false]];
    if (depth >= 4) return [['[]', false]];
    if (kind < 0.8) {
      const items = Array.from({ length: Math.floor(next() * 4) }, (): Piece[] => [[space(), false], ...valuePieces(depth + 1)]);
      return [['[', false], ...commaSeparated(items), [']', false]];
    }
    return objectPieces(depth + 1, undefined);
  };
  const objectPieces = (depth: number, topKeys: string[] | undefined): Piece[] => {
    const members = Array.from({ length: Math.floor(next() * 6) }, (): Piece[] => {
      const [raw, decoded] = depth === 0 || next() < 0.5 ? pick(KEYS) : [`k${Math.floor(next() * 9)}`, ''];
      topKeys?.push(decoded);
      return [
        [space(), false],
        ['"', false],
        [raw, true],
        ['"', false],
        [space(), false],
        [':', false],
        [space(), false],
        ...valuePieces(depth),
        [space(), false],
      ];
    });
    return [['{', false], ...commaSeparated(members), ['}', false]];
  };

  const documents: CorpusDocument[] = [];
  for (let n = 0; n < count; n++) {
    // A few top-level arrays, which the scanner must refuse though JSON.parse accepts them.
    const topKeys = next() < 0.05 ? undefined : [];
    const top = topKeys === undefined ? ([['[', false], ...valuePieces(1), [']', false]] satisfies Piece[]) : objectPieces(0, topKeys);
    const pieces: Piece[] = [[space(), false], ...top, [space(), false]];
    const text = pieces.map(([piece]) => piece).join('');
    documents.push(topKeys === undefined ? { text } : { text, topKeys });
    // Offsets a mutation may touch: every byte outside string contents, and the end.
    const outside: number[] = [];
    let offset = 0;
    for (const [piece, inString] of pieces) {
      if (!inString) for (let i = 0; i < piece.length; i++) outside.push(offset + i);
      offset += piece.length;
    }
    outside.push(text.length);
    const at = pick(outside);
    const byte = pick([...MUTATION_BYTES]);
    const operation = next();
    const mutated =
      operation < 0.4
        ? text.slice(0, at) + text.slice(at + 1)
        : operation < 0.8
          ? text.slice(0, at) + byte + text.slice(at)
          : text.slice(0, at) + byte + text.slice(at + 1);
    documents.push({ text: mutated });
  }
  return documents;
}
