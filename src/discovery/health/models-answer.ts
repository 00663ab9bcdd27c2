import type { ModelCard } from '../endpoint.js';
import { ProbeError } from '../http-probe.js';

/** A `/v1/models` body → model cards; ProbeError when it is not JSON or not a model list. */
export function parseModelsAnswer(body: Buffer): ModelCard[] {
  let document: unknown;
  try {
    document = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new ProbeError(`GET /v1/models: the answer is not JSON (${(err as Error).message.slice(0, 80)})`);
  }
  try {
    return parseModelList(document);
  } catch (err) {
    throw new ProbeError(`GET /v1/models: ${(err as Error).message}`);
  }
}

/** Validates a `/v1/models` answer into model cards (owned_by defaults to "unknown"). */
export function parseModelList(document: unknown): ModelCard[] {
  const data = (document as { data?: unknown } | null)?.data;
  if (!Array.isArray(data)) throw new Error('the answer has no data array');
  return data.map((entry: unknown, index) => {
    const item = entry as Partial<Record<keyof ModelCard, unknown>> | null;
    if (!item || typeof item.id !== 'string' || item.id === '') throw new Error(`data[${index}] has no id`);
    const card: ModelCard = {
      id: item.id,
      object: 'model',
      created: typeof item.created === 'number' ? item.created : 0,
      owned_by: typeof item.owned_by === 'string' && item.owned_by ? item.owned_by : 'unknown',
      root: typeof item.root === 'string' ? item.root : null,
      parent: typeof item.parent === 'string' ? item.parent : null,
    };
    if (typeof item.max_model_len === 'number') card.max_model_len = item.max_model_len;
    return card;
  });
}
