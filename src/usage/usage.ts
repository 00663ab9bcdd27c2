/** The token counts a backend reports for one response (OpenAI's `usage` object). */
export interface TokenUsage {
  prompt: number;
  completion: number;
}

/**
 * Reads a parsed `usage` value: `prompt_tokens` and `completion_tokens`, each a non-negative
 * integer (an absent one counts 0: embeddings report no completion tokens). Undefined when the
 * value is not such an object (e.g. the `"usage": null` of OpenAI's intermediate chunks).
 */
export function readUsage(value: unknown): TokenUsage | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const { prompt_tokens: prompt, completion_tokens: completion } = value as Record<string, unknown>;
  if (!isCount(prompt) && !isCount(completion)) return undefined;
  return { prompt: isCount(prompt) ? prompt : 0, completion: isCount(completion) ? completion : 0 };
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** Finds the usage in a response body fed chunk by chunk, keeping only bounded state. */
export interface UsageReader {
  feed(chunk: Buffer): void;
  /** The final figures so far: the last usage the body reported. */
  readonly usage: TokenUsage | undefined;
}

/** Told why part of a body was not read (debug logs): nothing is thrown at the stream. */
export type SkipListener = (reason: string) => void;
