import { createHash } from 'node:crypto';

/*
 * The status page: one static document with its CSS and script inline, so it works offline in a
 * cluster. The script builds every cell with textContent (never HTML), because model names,
 * engine names and probe errors come from clients and backends.
 */

const STYLE = `
:root { color-scheme: light dark; --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; --muted: #6e7781; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 1rem 1.5rem; }
h1 { font-size: 1.3rem; margin: 0 0 .25rem; }
h2 { font-size: 1.05rem; margin: 1.5rem 0 .4rem; }
#summary, .muted, .sub { color: var(--muted); }
.sub { font-size: 12px; display: block; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25rem .6rem .25rem 0; border-bottom: 1px solid #8884; vertical-align: top; }
th { font-weight: 600; white-space: nowrap; }
td.num { font-variant-numeric: tabular-nums; }
.badge { font-weight: 600; }
.healthy { color: var(--ok); } .unhealthy, .ejected { color: var(--bad); } .pending { color: var(--warn); }
meter { width: 5rem; height: .8rem; vertical-align: middle; }
#mode { float: right; font-size: 12px; padding: .1rem .5rem; border: 1px solid currentColor; border-radius: 1rem; }
#mode.live { color: var(--ok); } #mode.polling { color: var(--warn); } #mode.offline { color: var(--bad); }
`;

const SCRIPT = `
'use strict';
const POLL_MS = 2000;
let snapshot = null;
let clockOffset = 0; // server clock minus ours
const $ = (id) => document.getElementById(id);

function cell(content, className) {
  const td = document.createElement('td');
  if (className) td.className = className;
  for (const part of [].concat(content)) {
    if (part instanceof Node) td.append(part);
    else if (part !== null && part !== undefined) td.append(document.createTextNode(String(part)));
  }
  return td;
}
function span(text, className) {
  const s = document.createElement('span');
  s.textContent = String(text);
  if (className) s.className = className;
  return s;
}
function meter(value, max, title) {
  const m = document.createElement('meter');
  m.min = 0; m.max = Math.max(max, 1); m.value = value; m.title = title;
  return m;
}
function fill(id, rows, empty) {
  const body = $(id);
  body.replaceChildren(...rows);
  if (rows.length === 0) {
    const tr = document.createElement('tr');
    const td = cell(empty, 'muted');
    td.colSpan = body.parentElement.querySelectorAll('th').length;
    tr.append(td);
    body.append(tr);
  }
}
function row(cells, data) {
  const tr = document.createElement('tr');
  tr.append(...cells);
  if (data) Object.assign(tr.dataset, data);
  return tr;
}
function clock(at) {
  return new Date(at).toLocaleTimeString(undefined, { hour12: false }) + '.' + String(at % 1000).padStart(3, '0');
}
function age(at) {
  const s = Math.max(0, Math.round((Date.now() + clockOffset - at) / 1000));
  return s < 120 ? s + ' s ago' : Math.round(s / 60) + ' min ago';
}
function ageSpan(at) {
  const s = span(age(at), 'age');
  s.dataset.at = String(at);
  return s;
}

function render(next) {
  snapshot = next;
  clockOffset = next.now - Date.now();
  const eps = next.endpoints;
  const usable = eps.filter((e) => e.health.state === 'healthy').length;
  const departed = next.departed_endpoints ? ', ' + next.departed_endpoints + ' removed but still finishing requests' : '';
  $('summary').textContent = eps.length + ' endpoints, ' + usable + ' healthy' + departed + ' · ' + next.totals.routed + ' routed, ' + next.totals.refused + ' refused since start';
  const queueMax = Math.max(1, ...eps.map((e) => (e.load ? Math.max(e.load.waiting, e.load.running) : 0)));
  fill('endpoints', eps.map((e) => row([
    cell([e.address, span([e.name === e.address ? '' : e.name, e.namespace].filter(Boolean).join(' · '), 'sub')], 'address'),
    cell(e.engines.join(', '), 'engine'),
    cell(e.models.flatMap((m, i) => (i ? [document.createElement('br'), m] : [m])), 'models'),
    cell([span(e.health.state, 'badge ' + e.health.state), e.health.reason ? span(e.health.reason, 'sub reason') : null], 'health'),
    cell(e.in_flight, 'num in-flight'),
    e.load
      ? cell([meter(e.load.waiting, queueMax, 'waiting'), ' ' + e.load.waiting + ' waiting', document.createElement('br'),
          meter(e.load.running, queueMax, 'running'), ' ' + e.load.running + ' running'], 'num queue')
      : cell('—', 'muted queue'),
    e.load ? cell([meter(e.load.kv_cache_percent, 100, 'KV-cache use'), ' ' + e.load.kv_cache_percent.toFixed(0) + ' %'], 'num kv') : cell('—', 'muted kv'),
    e.load ? cell([ageSpan(e.load.scraped_at), e.load.fresh ? null : span('stale', 'sub')], 'scraped') : cell('never / failed', 'muted scraped'),
  ], { address: e.address })), 'no endpoints discovered');
  fill('mappings', next.mappings.map((m) => row([cell(m.model), cell(m.owned_by || 'any'), cell(m.service_name), cell(m.source)])), 'no mappings');
  fill('decisions', next.decisions.map((d) => row([
    cell(clock(d.at), 'num'), cell(d.model, 'model'), cell(d.owned_by || '—'), cell(d.endpoint, 'endpoint'),
    cell(d.picker + ': ' + d.in_flight + ' in flight there' + (d.engine_queue === null ? '' : ', engine queue ' + d.engine_queue), 'why'),
  ])), 'no requests routed yet');
  fill('refusals', next.refusals.map((r) => row([
    cell(clock(r.at), 'num'), cell(r.model === null ? '—' : r.model, 'model'), cell(r.owned_by || '—'), cell(r.status, 'num status'), cell(r.code, 'code'),
  ])), 'no requests refused');
}

function setMode(mode) {
  const badge = $('mode');
  badge.textContent = mode;
  badge.className = mode;
  document.body.dataset.mode = mode;
}

function poll() {
  fetch('/admin/api/status', { cache: 'no-store' })
    .then((res) => res.json())
    .then((next) => { setMode('polling'); render(next); })
    .catch(() => setMode('offline'))
    .finally(() => setTimeout(poll, POLL_MS));
}

function connect() {
  if (typeof EventSource !== 'function') return poll();
  const events = new EventSource('/admin/api/status/events');
  events.addEventListener('snapshot', (event) => { setMode('live'); render(JSON.parse(event.data)); });
  // EventSource retries a dropped connection itself; it gives up (CLOSED) on an answer it cannot use, e.g. 503 when full.
  events.onerror = () => {
    if (events.readyState === EventSource.CLOSED) poll();
    else setMode('reconnecting');
  };
}

setInterval(() => { for (const s of document.querySelectorAll('.age')) s.textContent = age(Number(s.dataset.at)); }, 1000);
connect();
`;

const HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>llm-extproc status</title>
<style>${STYLE}</style>
</head>
<body data-mode="connecting">
<span id="mode">connecting</span>
<h1>llm-extproc</h1>
<div id="summary">loading…</div>
<h2>Endpoints</h2>
<table><thead><tr><th>Endpoint</th><th>Engine</th><th>Models</th><th>Health</th><th>In flight</th><th>Engine queue</th><th>KV cache</th><th>Scraped</th></tr></thead><tbody id="endpoints"></tbody></table>
<h2>Mappings</h2>
<table><thead><tr><th>Model</th><th>owned_by</th><th>Service</th><th>Source</th></tr></thead><tbody id="mappings"></tbody></table>
<h2>Recent decisions</h2>
<table><thead><tr><th>Time</th><th>Model</th><th>owned_by</th><th>Endpoint</th><th>Why</th></tr></thead><tbody id="decisions"></tbody></table>
<h2>Recent refusals</h2>
<table><thead><tr><th>Time</th><th>Model</th><th>owned_by</th><th>Status</th><th>Code</th></tr></thead><tbody id="refusals"></tbody></table>
<script>${SCRIPT}</script>
</body>
</html>
`;

const sha256 = (text: string) => `'sha256-${createHash('sha256').update(text).digest('base64')}'`;

/** The page is static, so its CSP names the inline script and style by hash: nothing else may run or apply. */
const CSP = [
  "default-src 'none'",
  `script-src ${sha256(SCRIPT)}`,
  `style-src ${sha256(STYLE)}`,
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export const STATUS_PAGE = {
  html: HTML,
  headers: {
    'content-type': 'text/html; charset=utf-8',
    'content-security-policy': CSP,
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    'cache-control': 'no-store',
  },
} as const;
