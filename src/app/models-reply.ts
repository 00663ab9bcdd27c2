import type { EndpointRegistry } from '../discovery/registry.js';
import type { HttpRequestHead, LocalReply } from '../extproc/types.js';
import { badRequest, notFound, RequestError } from '../request/errors.js';
import { clip } from '../request/limits.js';

const MODELS_PATH = '/v1/models';
/** llm-extproc answers these paths itself, so only reads make sense on them. */
const ALLOWED_METHODS = 'GET, HEAD';

/**
 * `/v1/models` and `/v1/models/{id}`, aggregated across every backend and engine (seed 003's
 * answer). `undefined` for any other path. HEAD is answered like GET (Envoy drops the body of a
 * local reply to HEAD); other methods get 405 with `allow`. Refusals are thrown as RequestError.
 */
export function modelsReply(request: HttpRequestHead, endpoints: EndpointRegistry): LocalReply | undefined {
  const fullPath = request.headers.get(':path') ?? '';
  // Most requests are completions: leave at once, before building any string.
  if (!fullPath.startsWith(MODELS_PATH)) return undefined;
  const path = fullPath.split('?', 1)[0]!;
  if (path !== MODELS_PATH && !path.startsWith(`${MODELS_PATH}/`)) return undefined;
  const method = request.headers.get(':method');
  if (method !== 'GET' && method !== 'HEAD') {
    throw new RequestError(405, 'invalid_request_error', 'method_not_allowed', `${clip(method ?? '')} is not allowed on ${MODELS_PATH}; use GET.`, [
      ['allow', ALLOWED_METHODS],
    ]);
  }
  const cards = endpoints.modelCards();
  if (path === MODELS_PATH || path === `${MODELS_PATH}/`) return json({ object: 'list', data: cards });
  let id: string;
  try {
    id = decodeURIComponent(path.slice(MODELS_PATH.length + 1));
  } catch {
    throw badRequest('invalid_path', 'The model id in the path is not valid percent-encoding.');
  }
  const card = cards.find((candidate) => candidate.id === id);
  if (!card) throw notFound('model_not_found', `The model \`${clip(id)}\` does not exist.`);
  return json(card);
}

function json(document: unknown): LocalReply {
  return { status: 200, body: JSON.stringify(document), contentType: 'application/json', reason: 'llm_extproc_models' };
}
