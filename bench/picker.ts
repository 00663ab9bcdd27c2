/**
 * Cost of one scheduling decision: Scheduler.schedule() (registry lookup, health filter, picker,
 * Lease) + Lease.release(), against an EndpointRegistry holding 1, 100 or 10,000 healthy
 * endpoints that all serve one model on one engine. In-process, single-threaded.
 *
 * For least_outstanding_requests and load_aware two states are timed:
 *   idle  every endpoint has the same in-flight count (each lease is released at once), so every
 *         candidate ties and the second pass walks to a random one of them, on average half the
 *         list: worst case;
 *   busy  in-flight counts are spread 0..15 by leases held for the whole run (about 1 in 16 tie).
 * load_aware gets fresh engine figures on every endpoint (freshUntil an hour ahead): in `idle` the
 * same on all (a waiting queue and 85 % KV cache, so every term of the score is computed), in
 * `busy` spread like the in-flight counts, with inFlightAtScrape = the held leases. Its rows are
 * also reported against least_outstanding_requests in the same state and run.
 * round_robin does not look at the candidates, so one state.
 *
 * Run alone: node dist/bench/picker.js
 */

import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { Endpoint, ModelCard } from '../src/discovery/endpoint.js';
import { EndpointRegistry } from '../src/discovery/registry.js';
import type { RoutingRequest } from '../src/request/routing-request.js';
import { Lease } from '../src/scheduling/ledger.js';
import { createPicker, type RoutingLogic } from '../src/scheduling/pickers.js';
import { Scheduler } from '../src/scheduling/scheduler.js';
import { leaseOf, OK_OUTCOME, pickerOnly, upsertAll } from '../test/support/endpoints.js';
import { MODEL } from './messages.js';

export interface PickerRow {
  endpoints: number;
  picker: string;
  state: 'idle' | 'busy' | '-';
  nsPerDecision: number;
  decisions: number;
}

function registryWith(count: number): EndpointRegistry {
  const registry = new EndpointRegistry();
  const identities = Array.from({ length: count }, (_, i) => ({
    address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:8000`,
    name: `vllm-${i}`,
    namespace: 'bench',
    labels: {},
  }));
  upsertAll(registry, identities);
  const card: ModelCard = { id: MODEL, object: 'model', created: 0, owned_by: 'vllm', root: MODEL, parent: null };
  for (const identity of identities) registry.update(registry.get(identity.address)!, { models: [card], healthy: true });
  return registry;
}

/**
 * Requests as the body scanner hands them over: fresh string objects per request (never literals,
 * which the JIT could fold into constants with precomputed hashes), cycled through.
 */
const REQUESTS: RoutingRequest[] = Array.from({ length: 16 }, (_, i) => ({
  method: 'POST',
  path: '/v1/chat/completions',
  model: Buffer.from(MODEL).toString('latin1'),
  ownedBy: Buffer.from('vllm').toString('latin1'),
  ownedBySource: 'body.owned_by',
  routeName: undefined,
  requestId: `bench-${i}`,
}));

/** ns per schedule()+release(), timed in batches until `budgetMs` has passed (after a warm-up). */
function time(scheduler: Scheduler, budgetMs: number): { ns: number; decisions: number } {
  let sink = 0;
  const batch = (n: number) => {
    for (let i = 0; i < n; i++) {
      const lease = leaseOf(scheduler.schedule({ routing: REQUESTS[i & 15]! }));
      sink += lease.endpoint.inFlight;
      lease.release(OK_OUTCOME);
    }
  };
  // Warm-up, and size the batch to ~5 ms.
  let n = 1;
  for (;;) {
    const t = process.hrtime.bigint();
    batch(n);
    if (Number(process.hrtime.bigint() - t) > 5e6 || n > 1 << 24) break;
    n *= 2;
  }
  let decisions = 0;
  const start = process.hrtime.bigint();
  let elapsed = 0n;
  const budget = BigInt(Math.round(budgetMs * 1e6));
  while (elapsed < budget) {
    batch(n);
    decisions += n;
    elapsed = process.hrtime.bigint() - start;
  }
  if (sink < 0) console.log(sink);
  return { ns: Number(elapsed) / decisions, decisions };
}

type State = PickerRow['state'];

const CASES: [number, RoutingLogic, State][] = [];
for (const count of [1, 100, 10_000]) {
  for (const logic of ['least_outstanding_requests', 'load_aware'] as const) {
    CASES.push([count, logic, 'idle']);
    if (count > 1) CASES.push([count, logic, 'busy']);
  }
  CASES.push([count, 'round_robin', '-']);
}

/** A fresh scrape's figures (fresh for an hour), as the engine-metrics scraper writes them. */
function setLoad(endpoint: Endpoint, running: number, waiting: number, kvPercent: number): void {
  endpoint.load = {
    metrics: {
      active_models: {},
      waiting_models: {},
      max_active_models: 0,
      running_queue_size: running,
      waiting_queue_size: waiting,
      kv_cache_usage_percent: kvPercent,
      kv_cache_max_token_capacity: 0,
    },
    updateTime: new Date(),
    freshUntil: performance.now() + 3_600_000,
    inFlightAtScrape: endpoint.inFlight,
  };
}

/** One case, in this process. */
export function timeCase(count: number, logic: RoutingLogic, state: State, budgetMs: number): PickerRow {
  const picker = createPicker(logic);
  const registry = registryWith(count);
  const scheduler = new Scheduler(registry, pickerOnly(picker));
  const held: Lease[] = [];
  let i = 0;
  for (const endpoint of registry.all()) {
    const spread = (Math.imul(i++, 2654435761) >>> 0) % 16;
    // busy: spread in-flight counts 0..15 with leases kept open during the timing.
    if (state === 'busy') for (let k = 0; k < spread; k++) held.push(new Lease(endpoint, undefined));
    if (logic === 'load_aware') {
      if (state === 'busy') setLoad(endpoint, spread + (spread >> 1), spread % 3, 40 + ((spread * 37) % 60));
      else setLoad(endpoint, 4, 1, 85);
    }
  }
  const { ns, decisions } = time(scheduler, budgetMs);
  for (const lease of held) lease.release(OK_OUTCOME);
  return { endpoints: count, picker: picker.name, state, nsPerDecision: ns, decisions };
}

/** load_aware's cost against least_outstanding_requests with the same endpoints and state, in one run. */
export function ratioToLeastOutstanding(row: PickerRow, rows: readonly PickerRow[]): number {
  if (row.picker !== 'load_aware') return Number.NaN;
  const base = rows.find((r) => r.picker === 'least_outstanding_requests' && r.endpoints === row.endpoints && r.state === row.state);
  return base ? row.nsPerDecision / base.nsPerDecision : Number.NaN;
}

/**
 * Every case, each in a fresh Node process: a production process has one picker class, so its call
 * sites stay monomorphic; timing several pickers in one process would charge them for that.
 */
export function runPickerBench(budgetMs = 400): PickerRow[] {
  const script = fileURLToPath(import.meta.url);
  return CASES.map(([count, logic, state]) => {
    const out = execFileSync(process.execPath, [script, `--case=${count}:${logic}:${state}`, `--budget-ms=${budgetMs}`], { encoding: 'utf8' });
    return JSON.parse(out) as PickerRow;
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { case: { type: 'string' }, 'budget-ms': { type: 'string', default: '400' } } });
  const budgetMs = Number(values['budget-ms']);
  if (values.case) {
    const [count, logic, state] = values.case.split(':') as [string, RoutingLogic, State];
    process.stdout.write(JSON.stringify(timeCase(Number(count), logic, state, budgetMs)));
  } else {
    const rows = runPickerBench(budgetMs);
    for (const row of rows) {
      const vs = ratioToLeastOutstanding(row, rows);
      console.log(
        `${String(row.endpoints).padStart(6)} endpoints  ${row.picker.padEnd(27)} ${row.state.padEnd(4)} ${row.nsPerDecision.toFixed(0).padStart(8)} ns/decision${Number.isNaN(vs) ? '' : `  ${vs.toFixed(2)}x least_outstanding_requests`}`,
      );
    }
  }
}
