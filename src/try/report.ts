/** The explanation, as text that streams (the default) or one JSON document at the end (`--json`). */
import type { RouteExplanation } from './admin.js';
import type { LocalReply, TraceEvent } from './envoy-filter.js';
import type { HeaderChange, HeaderList } from './headers.js';
import type { Reporter, RouteView, UpstreamHead } from './run.js';

export interface Output {
  write(chunk: string | Buffer): unknown;
}

/** Reads as the exchange happens; the response body streams through unchanged. */
export class TextReporter implements Reporter {
  private bodyEndsWithNewline = true;
  private readonly responseBodyMessages = { sent: 0, received: 0 };

  constructor(
    private readonly out: Output,
    private readonly intro: string[],
  ) {}

  connected(): void {
    for (const line of this.intro) this.line(line);
  }

  trace(event: TraceEvent): void {
    // Body chunks of the response are counted, not listed: they would cut through the body.
    if (event.message === 'response_body') {
      this.responseBodyMessages[event.direction]++;
      return;
    }
    this.line(`  ${event.direction === 'sent' ? '→' : '←'} ${event.message.padEnd(18)} ${event.summary}`);
  }

  routed(route: RouteView): void {
    this.line('');
    if (!route.destination) {
      this.line('Continued without a destination: llm-extproc set no destination header, so ORIGINAL_DST has no host (Envoy answers 503).');
    } else if (!route.destinationValid) {
      this.line(`Continued with destination "${route.destination}", which is not one ip:port: ORIGINAL_DST rejects it (Envoy answers 503).`);
    } else {
      this.line(`Routed: Envoy's ORIGINAL_DST cluster sends the request to ${route.destination}`);
    }
    for (const change of route.changes) this.line(`  ${changeText(change)}`);
    if (route.clearRouteCache) this.line('  clear_route_cache: Envoy matches the route again against the new headers');
    for (const [namespace, value] of Object.entries(route.dynamicMetadata)) this.line(`  dynamic metadata ${namespace}: ${JSON.stringify(value)}`);
  }

  explained(explanation: RouteExplanation | { unavailable: string }): void {
    if ('unavailable' in explanation) {
      this.line(`  (the admin port cannot be reached: ${explanation.unavailable}; no endpoint details, see --admin)`);
      return;
    }
    const { endpoint, decision } = explanation;
    if (endpoint) {
      const models = endpoint.models.map((card) => `${card.id} (${card.owned_by})`).join(', ');
      const name = endpoint.name === endpoint.address ? '' : ` ${endpoint.name}`;
      this.line(`  endpoint${name}${endpoint.group ? ` in group ${endpoint.group}` : ''}: engine ${endpoint.engines.join('+') || 'unknown'}, serves ${models}`);
    }
    if (decision) {
      const queue = decision.engine_queue === null ? '' : `, engine queue ${decision.engine_queue}`;
      const whose = explanation.decisionIsOurs ? '' : ' (the newest decision for this endpoint; other requests were routed meanwhile)';
      this.line(
        `  why: ${decision.picker} picked it among the healthy endpoints serving ${decision.model}${decision.owned_by ? ` on ${decision.owned_by}` : ' (any engine)'}, with ${decision.in_flight} request(s) in flight there${queue}${whose}`,
      );
      const others = explanation.candidates.map((c) => `${c.address} ${c.engines.join('+')} ${c.usable ? `${c.in_flight} in flight` : 'not in rotation'}`);
      if (others.length > 0) this.line(`  candidates now (this request counted while its stream is open): ${others.join('; ')}`);
    }
  }

  localReply(reply: LocalReply): void {
    this.line('');
    this.line(`Local reply: Envoy answers the client itself with llm-extproc's immediate_response`);
    this.line(`  HTTP ${reply.status}`);
    for (const [name, value] of reply.headers) this.line(`  ${name}: ${value}`);
    if (reply.details) this.line(`  details: ${reply.details} (Envoy's %RESPONSE_CODE_DETAILS%)`);
    this.line('');
    this.body(reply.body);
    this.finishBody();
  }

  upstream(head: UpstreamHead): void {
    this.line('');
    this.line(`Forwarded: ${head.method} ${head.url}; the backend answered`);
    this.line(`  HTTP ${head.status}`);
    const changed = new Set(head.changes.map((change) => change.name));
    for (const [name, value] of head.headers) this.line(`  ${name}: ${value}${changed.has(name) ? '   (set by llm-extproc on response_headers)' : ''}`);
    this.line('');
  }

  upstreamBody(chunk: Buffer): void {
    this.body(chunk);
  }

  upstreamFailed(reason: string): void {
    this.line('');
    this.line(`Forwarding failed: ${reason}`);
  }

  problems(problems: readonly string[]): void {
    this.finishBody();
    const { sent, received } = this.responseBodyMessages;
    if (sent > 0) this.line(`  (response body: ${sent} response_body messages sent to llm-extproc, ${received} answers)`);
    for (const problem of problems) this.line(`warning: ${problem}`);
  }

  private body(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.out.write(chunk);
    this.bodyEndsWithNewline = chunk[chunk.length - 1] === 0x0a;
  }

  private finishBody(): void {
    if (!this.bodyEndsWithNewline) this.out.write('\n');
    this.bodyEndsWithNewline = true;
  }

  private line(text: string): void {
    this.out.write(`${text}\n`);
  }
}

/** Collects everything and writes one JSON document when told. */
export class JsonReporter implements Reporter {
  private readonly result: Record<string, unknown>;
  private readonly trace_: TraceEvent[] = [];
  private readonly body_: Buffer[] = [];

  constructor(
    private readonly out: Output,
    head: Record<string, unknown>,
  ) {
    this.result = { ...head, trace: this.trace_, outcome: null };
  }

  connected(): void {}

  trace(event: TraceEvent): void {
    this.trace_.push(event);
  }

  routed(route: RouteView): void {
    this.result.outcome = route.destinationValid ? 'routed' : 'no_valid_destination';
    this.result.route = {
      destination: route.destination ?? null,
      header_changes: route.changes,
      clear_route_cache: route.clearRouteCache,
      dynamic_metadata: route.dynamicMetadata,
      upstream_body_bytes: route.upstreamBodyBytes,
    };
  }

  explained(explanation: RouteExplanation | { unavailable: string }): void {
    this.result.admin =
      'unavailable' in explanation
        ? { reachable: false, error: explanation.unavailable }
        : {
            reachable: true,
            endpoint: explanation.endpoint ?? null,
            decision: explanation.decision ?? null,
            decision_is_ours: explanation.decisionIsOurs,
            candidates: explanation.candidates,
          };
  }

  localReply(reply: LocalReply): void {
    this.result.outcome = 'local_reply';
    this.result.local_reply = { status: reply.status, headers: headerRecord(reply.headers), body: reply.body.toString(), details: reply.details };
  }

  upstream(head: UpstreamHead): void {
    this.result.upstream = { method: head.method, url: head.url, status: head.status, headers: headerRecord(head.headers), header_changes: head.changes };
  }

  upstreamBody(chunk: Buffer): void {
    this.body_.push(chunk);
  }

  upstreamFailed(reason: string): void {
    this.result.upstream = { error: reason };
  }

  problems(problems: readonly string[]): void {
    this.result.problems = problems;
  }

  /** Writes the document; `error` when the run failed. */
  finish(error?: string): void {
    if (this.result.upstream && !('error' in (this.result.upstream as object)))
      (this.result.upstream as Record<string, unknown>).body = Buffer.concat(this.body_).toString();
    if (error !== undefined) this.result.error = error;
    this.out.write(`${JSON.stringify(this.result, null, 2)}\n`);
  }
}

function changeText(change: HeaderChange): string {
  return change.op === 'remove' ? `header removed: ${change.name}` : `header ${change.op === 'set' ? 'set' : 'appended'}: ${change.name}: ${change.value}`;
}

/** Headers as a record; a repeated one becomes an array. */
function headerRecord(headers: HeaderList): Record<string, string | string[]> {
  const record: Record<string, string | string[]> = {};
  for (const [name, value] of headers) {
    const seen = record[name];
    record[name] = seen === undefined ? value : [...(Array.isArray(seen) ? seen : [seen]), value];
  }
  return record;
}
