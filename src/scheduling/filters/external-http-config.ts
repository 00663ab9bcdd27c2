import { ConfigError } from '../../config/errors.js';

/**
 * The environment variables of llm-d's external HTTP plugin proposal (PR #183) that llm-extproc
 * reads; see docs/external-filters.md. The proposal logs and ignores a bad value; llm-extproc
 * refuses to start (exit 2) instead, like every other bad configuration value.
 */
export const FILTERS_ENV = 'EXTERNAL_HTTP_FILTERS';
/** The prefill scheduler's filters: refused when it lists any, since llm-extproc has no prefill scheduler. */
export const PREFILL_FILTERS_ENV = 'EXTERNAL_HTTP_PREFILL_FILTERS';

/** Per-call time budget by default: the filter is on every request's path. */
export const DEFAULT_TIMEOUT_MS = 50;
export const MAX_TIMEOUT_MS = 10_000;

/** One external filter, as configured. */
export interface ExternalFilterConfig {
  /** Unique among the filters; used in logs, errors and metric labels. */
  name: string;
  /** The base URL as configured (`http://plugins:80/external/sample`). */
  url: string;
  /** `<url>/filter`, joined as a URL (the base is a directory whether or not it ends in `/`). */
  filterUrl: URL;
  /** The proposal's `weight`: read and checked, unused (only scorers would use it). */
  weight: number | undefined;
  /** The whole call (queueing for a connection, sending, the answer) must end within this. */
  timeoutMs: number;
  /** On failure keep every candidate (true) or fail the request (false). */
  failOpen: boolean;
  /** Send the prompt (parsing the body for it), or `""`. */
  sendPrompt: boolean;
}

const KEYS = ['name', 'url', 'weight', 'timeout_ms', 'fail_open', 'send_prompt'];
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const EXAMPLE = `${FILTERS_ENV}='[{"name":"load","url":"http://plugins:80/external/sample"}]'`;

/**
 * The external filters of `env` (EXTERNAL_HTTP_FILTERS), in order; [] when unset or empty. Throws
 * ConfigError, naming the variable, for a value that is not such a list, and when
 * EXTERNAL_HTTP_PREFILL_FILTERS lists any filter.
 */
export function parseExternalFilters(env: Readonly<Record<string, string | undefined>>): ExternalFilterConfig[] {
  const prefill = parseList(PREFILL_FILTERS_ENV, env[PREFILL_FILTERS_ENV]);
  if (prefill.length > 0) {
    throw new ConfigError(
      PREFILL_FILTERS_ENV,
      `lists ${prefill.map((config) => `"${config.name}"`).join(', ')}, but llm-extproc has no prefill scheduler (no prefill/decode disaggregation), so these filters would never run`,
      `to filter every request, move the entries to ${FILTERS_ENV}; otherwise unset ${PREFILL_FILTERS_ENV}`,
    );
  }
  return parseList(FILTERS_ENV, env[FILTERS_ENV]);
}

function parseList(variable: string, value: string | undefined): ExternalFilterConfig[] {
  if (value === undefined || value.trim() === '') return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch (err) {
    throw new ConfigError(variable, `is not valid JSON: ${(err as Error).message}`, `write a JSON list, e.g. ${EXAMPLE}`);
  }
  if (!Array.isArray(parsed)) throw new ConfigError(variable, 'is not a JSON list', `write a JSON list, e.g. ${EXAMPLE}`);
  const configs = parsed.map((entry, index) => parseExternalFilterEntry(variable, entry, `entry ${index + 1}`));
  const seen = new Set<string>();
  for (const config of configs) {
    if (seen.has(config.name)) throw new ConfigError(variable, `the name "${config.name}" is used twice`, 'give each filter its own name');
    seen.add(config.name);
  }
  return configs;
}

/** One filter's settings, from the env list or a `--scheduling-config` plugin; `where` names it in errors. */
export function parseExternalFilterEntry(variable: string, entry: unknown, label: string): ExternalFilterConfig {
  let where = label;
  const fail = (message: string, hint: string): never => {
    throw new ConfigError(variable, `${where}: ${message}`, hint);
  };
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
    return fail('is not a JSON object', `write {"name": ..., "url": ...}, e.g. ${EXAMPLE}`);
  }
  const fields = entry as Record<string, unknown>;
  const { name, url } = fields;
  if (typeof name !== 'string' || !NAME.test(name)) {
    return fail(
      name === undefined ? 'has no "name"' : `"name" ${JSON.stringify(name)} is not a name`,
      'give a name of 1-63 letters, digits, ".", "_" or "-", starting with a letter or digit',
    );
  }
  where += ` ("${name}")`;
  for (const key of Object.keys(fields)) {
    if (!KEYS.includes(key)) fail(`unknown key ${JSON.stringify(key)}`, `the keys are ${KEYS.join(', ')}`);
  }
  const urlHint = 'write the base URL the plugin serves /filter under, e.g. http://plugins:80/external/sample';
  if (typeof url !== 'string' || url === '') return fail(url === undefined ? 'has no "url"' : '"url" is not a non-empty string', urlHint);
  let base: URL;
  try {
    base = new URL(url);
  } catch {
    return fail(`"url" ${JSON.stringify(url)} is not a URL`, urlHint);
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:') fail(`"url" ${JSON.stringify(url)} is not http or https`, urlHint);
  if (base.username || base.password) fail(`"url" ${JSON.stringify(url)} holds credentials`, 'remove user:password@ from the URL');
  if (base.search || base.hash || url.includes('?') || url.includes('#')) {
    fail(`"url" ${JSON.stringify(url)} has a query or fragment`, `${urlHint} (the plugin is called at <url>/filter)`);
  }
  const weight = optional(fields.weight, (v) => typeof v === 'number' && Number.isInteger(v) && v >= 0);
  if (weight === null) fail('"weight" is not a non-negative integer', 'write e.g. "weight": 1, or leave it out (filters do not use it)');
  const timeoutMs = optional(fields.timeout_ms, (v) => typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= MAX_TIMEOUT_MS);
  if (timeoutMs === null)
    fail(`"timeout_ms" is not an integer from 1 to ${MAX_TIMEOUT_MS}`, `write e.g. "timeout_ms": 100, or leave it out (${DEFAULT_TIMEOUT_MS})`);
  const failOpen = optional(fields.fail_open, (v) => typeof v === 'boolean');
  if (failOpen === null) fail('"fail_open" is not true or false', 'write "fail_open": false to fail requests when the plugin fails, or leave it out (true)');
  const sendPrompt = optional(fields.send_prompt, (v) => typeof v === 'boolean');
  if (sendPrompt === null) fail('"send_prompt" is not true or false', 'write "send_prompt": false to send "" as the prompt, or leave it out (true)');
  return {
    name,
    url,
    filterUrl: filterUrl(base),
    weight: weight as number | undefined,
    timeoutMs: (timeoutMs as number | undefined) ?? DEFAULT_TIMEOUT_MS,
    failOpen: (failOpen as boolean | undefined) ?? true,
    sendPrompt: (sendPrompt as boolean | undefined) ?? true,
  };
}

/** The value when `ok`, undefined when absent (or JSON null), null when present and not ok. */
function optional(value: unknown, ok: (value: unknown) => boolean): unknown {
  if (value === undefined || value === null) return undefined;
  return ok(value) ? value : null;
}

/**
 * `<base>/filter` with URL semantics: the base's path is a directory with or without a trailing
 * slash (`/external/sample` and `/external/sample/` both give `/external/sample/filter`; no path
 * gives `/filter`). Go's `path.Join`, which the proposal used, would also collapse `http://`.
 */
export function filterUrl(base: URL): URL {
  const directory = new URL(base.href);
  if (!directory.pathname.endsWith('/')) directory.pathname += '/';
  return new URL('filter', directory);
}
