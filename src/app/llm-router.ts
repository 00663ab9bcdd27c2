import type { Logger } from 'pino';
import type { EndpointRegistry } from '../discovery/registry.js';
import type { HttpRequestView, LocalReply, RequestRouter, RouteDecision } from '../extproc/types.js';
import type { Metrics } from '../metrics.js';
import { RequestError, badRequest } from '../request/errors.js';
import { readRoutingRequest } from '../request/routing-request.js';
import type { RouteTable } from '../routing/routes.js';
import type { Scheduler } from '../scheduling/scheduler.js';

const MODELS_PATH = '/v1/models';

/**
 * The LLM side of a decision: answers `GET /v1/models` itself, reads model and engine from the
 * request, and asks the scheduler for an endpoint; every refusal becomes an OpenAI-style error.
 */
export class LlmRouter implements RequestRouter {
  constructor(
    private readonly routes: () => RouteTable,
    private readonly scheduler: Scheduler,
    private readonly endpoints: EndpointRegistry,
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {}

  decide(request: HttpRequestView): RouteDecision {
    const models = this.modelsReply(request);
    if (models) return { kind: 'reply', reply: models };
    let model: string | undefined;
    let ownedBy: string | undefined;
    try {
      const routing = readRoutingRequest(request.headers, request.body, this.routes(), request.requestId);
      model = routing.model;
      ownedBy = routing.ownedBy;
      const lease = this.scheduler.schedule(routing);
      this.metrics.routed(model, ownedBy ?? '');
      if (this.log.isLevelEnabled('debug')) {
        this.log.debug(
          { requestId: request.requestId, model, ownedBy, ownedBySource: routing.ownedBySource, route: routing.routeName, endpoint: lease.address },
          'routed',
        );
      }
      return { kind: 'route', destination: lease };
    } catch (err) {
      if (!(err instanceof RequestError)) throw err;
      return { kind: 'reply', reply: this.refuse(err, request, model, ownedBy) };
    }
  }

  private refuse(err: RequestError, request: HttpRequestView, model: string | undefined, ownedBy: string | undefined): LocalReply {
    // Only models and engines the registry knows become label values, so bad input cannot grow the series.
    const knownModel = model !== undefined && this.endpoints.lookup(model, undefined).kind === 'found' ? model : '';
    const knownEngine = ownedBy !== undefined && this.endpoints.hasEngine(ownedBy) ? ownedBy : '';
    this.metrics.requests.inc({ outcome: err.code, status: String(err.status), model: knownModel, owned_by: knownEngine });
    this.log.info(
      { requestId: request.requestId, status: err.status, code: err.code, model, ownedBy, path: request.headers.get(':path') },
      `request refused: ${err.message}`,
    );
    return { status: err.status, body: err.toBody(), contentType: 'application/json', reason: `llm_extproc_${err.code}` };
  }

  /** `GET /v1/models` (and `/v1/models/{id}`) aggregated across every backend and engine. */
  private modelsReply(request: HttpRequestView): LocalReply | undefined {
    if (request.headers.get(':method') !== 'GET') return undefined;
    const fullPath = request.headers.get(':path') ?? '';
    const path = fullPath.split('?', 1)[0]!;
    if (path !== MODELS_PATH && !path.startsWith(`${MODELS_PATH}/`)) return undefined;
    const cards = this.endpoints.modelCards();
    if (path === MODELS_PATH || path === `${MODELS_PATH}/`) {
      return { status: 200, body: JSON.stringify({ object: 'list', data: cards }), contentType: 'application/json', reason: 'llm_extproc_models' };
    }
    let id: string;
    try {
      id = decodeURIComponent(path.slice(MODELS_PATH.length + 1));
    } catch {
      return this.refuse(badRequest('invalid_path', 'The model id in the path is not valid percent-encoding.'), request, undefined, undefined);
    }
    const matches = cards.filter((card) => card.id === id);
    if (matches.length === 0) {
      const err = new RequestError(404, 'invalid_request_error', 'model_not_found', `The model \`${id}\` does not exist.`);
      return this.refuse(err, request, id, undefined);
    }
    return { status: 200, body: JSON.stringify(matches[0]), contentType: 'application/json', reason: 'llm_extproc_models' };
  }
}
