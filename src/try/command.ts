/** `llm-extproc-try`: flags, the request they describe, and the exit status. */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { DESTINATION_HEADER, HEADER_NAME, MODEL_HEADER } from '../wire-names.js';
import { adminBase } from './admin.js';
import { REQUEST_BODY_MODES, RESPONSE_BODY_MODES, type RequestBodyMode, type ResponseBodyMode } from './envoy-filter.js';
import type { ClientTls } from './extproc-client.js';
import { type HeaderList, headerValue } from './headers.js';
import { JsonReporter, type Output, TextReporter } from './report.js';
import { runTry, TryFailure, type TryOptions } from './run.js';

const NAME = 'llm-extproc-try';

/** The demo's model on its SGLang pods (`npm start -- --demo`). */
export const DEFAULT_BODY = '{"model":"Qwen/Qwen2.5-0.5B-Instruct","owned_by":"sglang","messages":[{"role":"user","content":"Hello!"}]}';

const OPTIONS = {
  data: { type: 'string', short: 'd' },
  header: { type: 'string', short: 'H', multiple: true },
  path: { type: 'string', default: '/v1/chat/completions' },
  method: { type: 'string' },
  target: { type: 'string', default: '127.0.0.1:50051' },
  admin: { type: 'string', default: '127.0.0.1:8081' },
  mode: { type: 'string', default: 'BUFFERED' },
  'response-mode': { type: 'string', default: 'NONE' },
  forward: { type: 'boolean', default: false },
  json: { type: 'boolean', default: false },
  'destination-header': { type: 'string', default: DESTINATION_HEADER },
  authority: { type: 'string', default: 'localhost:8080' },
  ca: { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  'server-name': { type: 'string' },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

export const USAGE = `Usage: npm run try -- [flags]   (or ${NAME} [flags])

Plays Envoy's side of ext_proc for one request against a running llm-extproc and prints what Envoy
would do: the route (destination, headers, why that endpoint) or the local reply.

  -d, --data BODY            request body, or @file (default: a chat completion for the demo's model)
  -H, --header 'name: value' request header (repeatable)
  --path P                   default /v1/chat/completions
  --method M                 default POST (GET for /v1/models)
  --target host:port         llm-extproc's gRPC port (default 127.0.0.1:50051)
  --admin host:port|URL      its admin port, for the endpoint and the decision (default 127.0.0.1:8081)
  --mode M                   request body mode: ${REQUEST_BODY_MODES.join(', ')} (default BUFFERED)
  --response-mode M          response body mode: ${RESPONSE_BODY_MODES.join(', ')} (default NONE)
  --forward                  then send the request to the chosen backend and show its answer
  --json                     one JSON document instead of text
  --destination-header NAME  as llm-extproc's --destination-header (default ${DESTINATION_HEADER})
  --authority HOST           the client's Host / :authority (default localhost:8080)
  --ca FILE, --cert FILE, --key FILE, --server-name NAME
                             TLS (mTLS with --cert and --key) to a llm-extproc started with --tls-cert
`;

/** A flag the user got wrong: one line, exit 2. */
class FlagError extends Error {}

export interface CommandIo {
  stdout: Output;
  stderr: Output;
}

/** Runs the command; resolves with the exit status (0 explained, 1 llm-extproc misbehaved, 2 usage or unreachable). */
export async function tryCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  let options: TryOptions | undefined;
  let json = false;
  try {
    const parsed = parseFlags(argv);
    if (!parsed) {
      io.stdout.write(USAGE);
      return 0;
    }
    ({ options, json } = parsed);
  } catch (err) {
    if (!(err instanceof FlagError)) throw err;
    io.stderr.write(`${NAME}: ${err.message} (see --help)\n`);
    return 2;
  }
  const head = {
    target: options.target,
    modes: { request_body: options.modes.request, response_body: options.modes.response },
    request: { headers: Object.fromEntries(options.request.headers), body_bytes: options.request.body.length },
  };
  const reporter = json ? new JsonReporter(io.stdout, head) : new TextReporter(io.stdout, intro(options));
  try {
    await runTry(options, reporter);
    if (reporter instanceof JsonReporter) reporter.finish();
    return 0;
  } catch (err) {
    if (!(err instanceof TryFailure)) throw err;
    if (reporter instanceof JsonReporter) reporter.finish(err.message);
    io.stderr.write(`${NAME}: ${err.message}\n`);
    return err.code;
  }
}

function intro(options: TryOptions): string[] {
  const { headers } = options.request;
  const { request, response } = options.modes;
  const lines = [
    `${headerValue(headers, ':method')} ${headerValue(headers, ':path')} through llm-extproc at ${options.target}, as Envoy with request body ${request}, response headers SEND, response body ${response}:`,
  ];
  if (request === 'STREAMED' && headerValue(headers, MODEL_HEADER) === undefined) {
    lines.push(`  (STREAMED: llm-extproc routes on the headers alone; name the model with -H '${MODEL_HEADER}: ...')`);
  }
  return lines;
}

function parseFlags(argv: readonly string[]): { options: TryOptions; json: boolean } | undefined {
  let values: ReturnType<typeof parseArgs<{ args: string[]; options: typeof OPTIONS; strict: true }>>['values'];
  try {
    ({ values } = parseArgs({ args: [...argv], options: OPTIONS, strict: true, allowPositionals: false }));
  } catch (err) {
    // Node's message goes on with advice about '--'; its first sentence is the mistake.
    throw new FlagError((err as Error).message.split(/(?<=\.) /)[0]!);
  }
  if (values.help) return undefined;
  if (!/^(\[[0-9a-fA-F:.]+\]|[^:[\]\s]+):\d{1,5}$/.test(values.target)) throw new FlagError(`--target: expected host:port, got "${values.target}"`);
  const modes = {
    request: oneOf('--mode', values.mode, REQUEST_BODY_MODES) as RequestBodyMode,
    response: oneOf('--response-mode', values['response-mode'], RESPONSE_BODY_MODES) as ResponseBodyMode,
  };
  const destinationHeader = values['destination-header'].toLowerCase();
  if (!HEADER_NAME.test(destinationHeader)) throw new FlagError(`--destination-header: "${values['destination-header']}" is not a header name`);
  const tls = tlsOptions(values);
  return {
    json: values.json,
    options: {
      target: values.target,
      ...(tls ? { tls } : {}),
      admin: adminBase(values.admin),
      modes,
      destinationHeader,
      forward: values.forward,
      request: buildRequest(values),
    },
  };
}

function oneOf(flag: string, value: string, allowed: readonly string[]): string {
  const upper = value.toUpperCase();
  if (!allowed.includes(upper)) throw new FlagError(`${flag}: expected one of ${allowed.join(', ')}, got "${value}"`);
  return upper;
}

/** The headers Envoy would send to ext_proc for this request (it adds x-request-id and x-forwarded-proto). */
function buildRequest(values: { data?: string | undefined; header?: string[] | undefined; path: string; method?: string | undefined; authority: string }): {
  headers: HeaderList;
  body: Buffer;
} {
  if (!values.path.startsWith('/')) throw new FlagError(`--path: must start with /, got "${values.path}"`);
  const method = (values.method ?? (values.path.startsWith('/v1/models') ? 'GET' : 'POST')).toUpperCase();
  if (!HEADER_NAME.test(method.toLowerCase())) throw new FlagError(`--method: "${values.method}" is not an HTTP method`);
  const body = bodyOf(values.data, method);
  const extra = (values.header ?? []).map(headerFlag);
  const has = (name: string) => extra.some(([key]) => key === name);
  const headers: HeaderList = [[':authority', values.authority], [':path', values.path], [':method', method], [':scheme', 'http'], ...extra];
  if (body.length > 0 && !has('content-type')) headers.push(['content-type', 'application/json']);
  if (body.length > 0) headers.push(['content-length', String(body.length)]);
  if (!has('x-forwarded-proto')) headers.push(['x-forwarded-proto', 'http']);
  if (!has('x-request-id')) headers.push(['x-request-id', randomUUID()]);
  return { headers, body };
}

function bodyOf(data: string | undefined, method: string): Buffer {
  if (data === undefined) return method === 'POST' ? Buffer.from(DEFAULT_BODY) : Buffer.alloc(0);
  if (!data.startsWith('@')) return Buffer.from(data);
  try {
    return readFileSync(data.slice(1));
  } catch (err) {
    throw new FlagError(`--data: cannot read ${data.slice(1)} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}

function headerFlag(text: string): [string, string] {
  const colon = text.indexOf(':', 1);
  const name = colon < 0 ? '' : text.slice(0, colon).trim().toLowerCase();
  if (!HEADER_NAME.test(name)) throw new FlagError(`--header: expected 'name: value', got "${text}"`);
  return [name, text.slice(colon + 1).trim()];
}

function tlsOptions(values: {
  ca?: string | undefined;
  cert?: string | undefined;
  key?: string | undefined;
  'server-name'?: string | undefined;
}): ClientTls | undefined {
  if (!values.ca && !values.cert && !values.key) {
    if (values['server-name']) throw new FlagError('--server-name: only with TLS (--ca, or --cert and --key)');
    return undefined;
  }
  if (!values.cert !== !values.key) throw new FlagError(values.cert ? '--cert: needs --key' : '--key: needs --cert');
  const read = (flag: string, path: string | undefined) => {
    if (path === undefined) return undefined;
    try {
      return readFileSync(path);
    } catch (err) {
      throw new FlagError(`${flag}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
  };
  const tls: ClientTls = {};
  const ca = read('--ca', values.ca);
  const cert = read('--cert', values.cert);
  const key = read('--key', values.key);
  if (ca) tls.ca = ca;
  if (cert) tls.cert = cert;
  if (key) tls.key = key;
  if (values['server-name']) tls.serverName = values['server-name'];
  return tls;
}
