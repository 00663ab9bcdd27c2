import type { Logger } from 'pino';
import type { HeaderLookup, ResponseObserver } from '../extproc/types.js';
import type { Metrics, UsageSeries } from '../metrics.js';
import { JsonUsageReader } from './json-usage.js';
import { SseUsageReader } from './sse-usage.js';
import type { UsageReader } from './usage.js';

/** Makes one UsageMeter per routed request whose response body Envoy shows llm-extproc. */
export class UsageAccounting {
  /** An encoded (e.g. gzip) response is logged once per process: it is a setting, not an event. */
  private encodingLogged = false;

  constructor(
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {}

  meter(model: string, ownedBy: string, requestId: string): UsageMeter {
    return new UsageMeter(this, this.metrics.usageSeries(model, ownedBy), model, ownedBy, requestId);
  }

  /** @internal the meters' way to log. */
  debug(fields: Record<string, unknown>, message: string): void {
    if (this.log.isLevelEnabled('debug')) this.log.debug(fields, message);
  }

  /** @internal */
  encodedResponse(encoding: string): void {
    if (this.encodingLogged) return;
    this.encodingLogged = true;
    this.debug({ contentEncoding: encoding }, 'token usage is not counted for encoded response bodies (logged once)');
  }
}

/**
 * Counts the tokens one response reports, once, when it ends: a 2xx `application/json` body's
 * top-level `usage`, or the last `usage` of a `text/event-stream`. Anything else (errors, other
 * types, encoded bodies) is not read. A 2xx JSON or SSE body seen to its end without usage counts
 * as usage missing (a stream without `stream_options.include_usage`, or an engine that omits it).
 */
export class UsageMeter implements ResponseObserver {
  private reader: UsageReader | undefined;
  private ended = false;

  constructor(
    private readonly accounting: UsageAccounting,
    private readonly series: UsageSeries,
    private readonly model: string,
    private readonly ownedBy: string,
    private readonly requestId: string,
  ) {}

  headers(status: number, headers: HeaderLookup): void {
    if (status < 200 || status > 299) return;
    const encoding = headers.get('content-encoding')?.trim().toLowerCase();
    if (encoding && encoding !== 'identity') {
      this.accounting.encodedResponse(encoding);
      return;
    }
    const skipped = (reason: string) => this.accounting.debug({ requestId: this.requestId }, `token usage: ${reason}`);
    const type = mediaType(headers.get('content-type'));
    if (type === 'text/event-stream') this.reader = new SseUsageReader(skipped);
    else if (type === 'application/json') this.reader = new JsonUsageReader(skipped);
  }

  body(chunk: Buffer, endOfStream: boolean): void {
    if (!this.reader || this.ended) return;
    this.reader.feed(chunk);
    if (endOfStream) this.end(true);
  }

  end(complete: boolean): void {
    if (this.ended || !this.reader) return;
    this.ended = true;
    const usage = this.reader.usage;
    this.reader = undefined;
    if (!usage) {
      // A response cut short may simply not have reached its usage yet.
      if (complete) this.series.missing.inc();
      return;
    }
    this.series.prompt.inc(usage.prompt);
    this.series.completion.inc(usage.completion);
    this.accounting.debug(
      { requestId: this.requestId, model: this.model, ownedBy: this.ownedBy || undefined, promptTokens: usage.prompt, completionTokens: usage.completion },
      'response usage counted',
    );
  }
}

/** `text/event-stream; charset=utf-8` -> `text/event-stream`. */
function mediaType(contentType: string | undefined): string {
  if (contentType === undefined) return '';
  const semicolon = contentType.indexOf(';');
  return (semicolon === -1 ? contentType : contentType.slice(0, semicolon)).trim().toLowerCase();
}
