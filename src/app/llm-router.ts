import type { Logger } from 'pino';
import type { DecisionSink } from '../admin/status/decision-log.js';
import type { EndpointRegistry } from '../discovery/registry.js';
import type { HttpRequestHead, HttpRequestView, LocalReply, RequestRouter, RouteDecision } from '../extproc/types.js';
import type { Metrics } from '../metrics.js';
import type { RateLimiter } from '../protection/rate-limit.js';
import { internalError, notFound, RequestError, tooLarge, unavailable } from '../request/errors.js';
import type { ScanResult } from '../request/json-scan.js';
import { clip, DEFAULT_INPUT_LIMITS, type InputLimits } from '../request/limits.js';
import {
  needsSlicedScan,
  type RoutingRequest,
  readRoutingRequest,
  scanRoutingKeys,
  scanRoutingKeysSliced,
  screenRequestHead,
} from '../request/routing-request.js';
import { UnknownRouteNames } from '../routing/route-names.js';
import type { RouteTable } from '../routing/routes.js';
import type { Scheduler } from '../scheduling/scheduler.js';
import type { ScheduleResult } from '../scheduling/types.js';
import { UsageAccounting } from '../usage/meter.js';
import { modelsReply } from './models-reply.js';

/** Bounds on client input, checked on the head and on the body; rate limits once the model is known to be served. */
export interface RouterProtection {
  inputLimits: InputLimits;
  /** Swapped at run time by its reconfigure(). */
  rateLimiter?: RateLimiter;
}

export interface LlmRouterDependencies {
  /** The route table in force (a config reload replaces it). */
  routes: () => RouteTable;
  scheduler: Scheduler;
  endpoints: EndpointRegistry;
  metrics: Metrics;
  log: Logger;
  /** The `retry-after` of a 503 when nothing usable serves the model: about when a probe may bring something back. Default 1. */
  retryAfterSeconds?: number;
  /** Input limits and rate limits; default: the default input limits, no rate limits. */
  protection?: RouterProtection;
  /** The status page's recent decisions and refusals. */
  decisions?: DecisionSink;
}

/**
 * The LLM side of a decision: answers `/v1/models` itself, reads model and engine from the
 * request, and asks the scheduler for an endpoint; every refusal becomes an OpenAI-style error,
 * logged and counted.
 */
export class LlmRouter implements RequestRouter {
  private readonly routes: () => RouteTable;
  private readonly scheduler: Scheduler;
  private readonly endpoints: EndpointRegistry;
  private readonly metrics: Metrics;
  private readonly log: Logger;
  private readonly retryAfterSeconds: number;
  private readonly protection: RouterProtection;
  private readonly decisions: DecisionSink | undefined;
  private readonly usage: UsageAccounting;
  private readonly unknownRouteNames: UnknownRouteNames;

  constructor(deps: LlmRouterDependencies) {
    this.routes = deps.routes;
    this.scheduler = deps.scheduler;
    this.endpoints = deps.endpoints;
    this.metrics = deps.metrics;
    this.log = deps.log;
    this.retryAfterSeconds = deps.retryAfterSeconds ?? 1;
    this.protection = deps.protection ?? { inputLimits: DEFAULT_INPUT_LIMITS };
    this.decisions = deps.decisions;
    this.usage = new UsageAccounting(deps.metrics, deps.log);
    this.unknownRouteNames = new UnknownRouteNames(deps.metrics.routeNameUnknown, deps.log);
  }

  screen(request: HttpRequestHead): LocalReply | undefined {
    // Here, on the head, so that every request with a name the routes file lacks counts, whatever its outcome.
    this.unknownRouteNames.check(request.routeName, this.routes());
    try {
      screenRequestHead(request.headers, this.protection.inputLimits);
      return undefined;
    } catch (err) {
      if (!(err instanceof RequestError)) throw err;
      return this.refuse(err, request, undefined, undefined);
    }
  }

  decide(request: HttpRequestView): RouteDecision | Promise<RouteDecision> {
    try {
      const models = modelsReply(request, this.endpoints);
      if (models) return { kind: 'reply', reply: models };
    } catch (err) {
      if (!(err instanceof RequestError)) throw err;
      return { kind: 'reply', reply: this.refuse(err, request, undefined, undefined) };
    }
    const { body } = request;
    if (body === undefined || body.length === 0) return this.route(request, undefined);
    // A large body is scanned a slice per event-loop turn: other requests' decisions go on meanwhile.
    if (needsSlicedScan(body)) return scanRoutingKeysSliced(body, request.bodyPartial, request.signal).then((scan) => this.route(request, scan));
    return this.route(request, scanRoutingKeys(body, request.bodyPartial));
  }

  private route(request: HttpRequestView, scan: ScanResult | undefined): RouteDecision | Promise<RouteDecision> {
    let routing: RoutingRequest;
    try {
      routing = readRoutingRequest(request.headers, scan, this.routes(), request.requestId, this.protection.inputLimits, request.routeName);
    } catch (err) {
      if (!(err instanceof RequestError)) throw err;
      return { kind: 'reply', reply: this.refuse(err, request, undefined, undefined) };
    }
    // Logged at debug: a client over its limit would otherwise write a line per request.
    const limited = this.protection.rateLimiter?.admit(routing.model, routing.ownedBy, request.headers);
    if (limited) return { kind: 'reply', reply: this.refuse(limited, request, routing.model, routing.ownedBy, 'debug') };
    const result = this.scheduler.schedule({ routing, http: request });
    if (result instanceof Promise) return result.then((settled) => this.answer(request, routing, settled, scan));
    return this.answer(request, routing, result, scan);
  }

  private answer(request: HttpRequestView, routing: RoutingRequest, result: ScheduleResult, scan: ScanResult | undefined): RouteDecision {
    const { model, ownedBy } = routing;
    if (result.kind !== 'picked') return { kind: 'reply', reply: this.refuse(this.refusal(result, routing), request, model, ownedBy) };
    const { lease } = result;
    this.metrics.routed(model, ownedBy ?? '');
    this.decisions?.routed(model, ownedBy, lease.endpoint, this.scheduler.pickerName);
    if (this.log.isLevelEnabled('debug')) {
      this.log.debug(
        {
          requestId: request.requestId,
          model,
          ownedBy,
          ownedBySource: routing.ownedBySource,
          route: routing.routeName,
          endpoint: lease.address,
          partialBody: scan?.ok && !scan.complete ? true : undefined,
        },
        'routed',
      );
    }
    // Token usage is read only where Envoy will show the response body.
    if (!request.responseBodyVisible) return { kind: 'route', destination: lease };
    return { kind: 'route', destination: lease, response: this.usage.meter(model, ownedBy ?? '', request.requestId) };
  }

  /** Why scheduling found no endpoint, as the client is told: 404 for what is never served, 503 for what is not now. */
  private refusal(result: Exclude<ScheduleResult, { kind: 'picked' }>, routing: RoutingRequest): RequestError {
    const model = `\`${clip(routing.model)}\``;
    const retry: [string, string][] = [['retry-after', String(this.retryAfterSeconds)]];
    switch (result.kind) {
      case 'unknown_model':
        return notFound('model_not_found', `The model ${model} does not exist or is not served by any backend.`);
      case 'unknown_engine':
        return notFound(
          'model_not_found',
          `The model ${model} is not served by engine \`${clip(routing.ownedBy)}\` (served by: ${result.engines.join(', ')}).`,
        );
      case 'none_healthy': {
        const where = result.services ? ` of Service ${result.services.map((service) => `\`${service}\``).join(', ')}` : '';
        const engine = routing.ownedBy && !result.services ? ` on engine \`${clip(routing.ownedBy)}\`` : '';
        return unavailable('no_healthy_backend', `No healthy backend${where} is available for model ${model}${engine}; try again later.`, retry);
      }
      case 'all_filtered':
        return unavailable('no_matching_backend', `No backend for model ${model} passed the scheduling filter \`${result.filter}\`; try again later.`, retry);
      case 'plugin_failed':
        return unavailable('scheduling_plugin_failed', `The scheduling plugin \`${result.plugin}\` failed: ${result.reason}`, retry);
    }
  }

  bodyTooLarge(request: HttpRequestHead, limitBytes: number): LocalReply {
    return this.refuse(tooLarge(limitBytes), request, undefined, undefined);
  }

  failed(request: HttpRequestHead, err: unknown): LocalReply {
    this.log.error({ err, requestId: request.requestId }, 'routing failed unexpectedly');
    return this.refuse(internalError(), request, undefined, undefined);
  }

  private refuse(
    err: RequestError,
    request: HttpRequestHead,
    model: string | undefined,
    ownedBy: string | undefined,
    level: 'info' | 'debug' = 'info',
  ): LocalReply {
    // Only models and engines the registry knows become label values, so bad input cannot grow the series.
    const knownModel = model !== undefined && this.endpoints.lookup(model, undefined).kind === 'found' ? model : '';
    const knownEngine = ownedBy !== undefined && this.endpoints.hasEngine(ownedBy) ? ownedBy : '';
    this.metrics.requests.inc({ outcome: err.code, status: String(err.status), model: knownModel, owned_by: knownEngine });
    this.decisions?.refused(model, ownedBy, err.status, err.code);
    this.log[level](
      {
        requestId: request.requestId,
        status: err.status,
        code: err.code,
        model: clip(model),
        ownedBy: clip(ownedBy),
        method: clip(request.headers.get(':method')),
        path: clip(request.headers.get(':path')),
      },
      `request refused: ${err.message}`,
    );
    return { status: err.status, body: err.toBody(), contentType: 'application/json', headers: err.headers, reason: `llm_extproc_${err.code}` };
  }
}
