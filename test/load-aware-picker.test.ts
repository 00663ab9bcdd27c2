import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Endpoint } from '../src/discovery/endpoint.js';
import { Lease } from '../src/scheduling/ledger.js';
import { KV_PENALTY_AT_FULL, LoadAwarePicker, WAITING_PENALTY } from '../src/scheduling/load-aware-picker.js';
import { createPicker, LeastOutstandingPicker, type Picker } from '../src/scheduling/pickers.js';
import { healthyEndpoints, OK_OUTCOME } from './support/endpoints.js';
import { seededRandom } from './support/random.js';

const GROUP = {};

interface Figures {
  running?: number;
  waiting?: number;
  kv?: number;
  /** Our in-flight count when the scrape answered; by default the endpoint's count now. */
  atScrape?: number;
  /** performance.now() ms (or the injected clock's); by default a minute from now. */
  freshUntil?: number;
}

/** A scrape's answer: a new EngineLoad object each time, as the scraper writes them. */
function scrape(endpoint: Endpoint, figures: Figures = {}): void {
  endpoint.load = {
    metrics: {
      active_models: {},
      waiting_models: {},
      max_active_models: 0,
      running_queue_size: figures.running ?? 0,
      waiting_queue_size: figures.waiting ?? 0,
      kv_cache_usage_percent: figures.kv ?? 0,
      kv_cache_max_token_capacity: 0,
    },
    updateTime: new Date(),
    freshUntil: figures.freshUntil ?? performance.now() + 60_000,
    inFlightAtScrape: figures.atScrape ?? endpoint.inFlight,
  };
}

/** `n` picks whose leases stay open until all are made (a burst between two scrapes); picks per endpoint. */
function burst(picker: Picker, list: Endpoint[], n: number): number[] {
  const before = list.map((e) => e.inFlight);
  const leases = Array.from({ length: n }, () => new Lease(picker.pick(list, GROUP), undefined));
  const got = list.map((e, i) => e.inFlight - before[i]!);
  for (const lease of leases) lease.release(OK_OUTCOME);
  return got;
}

/** `n` independent picks (each lease released at once); picks per endpoint. */
function tally(picker: Picker, list: Endpoint[], n: number): number[] {
  const counts = list.map(() => 0);
  for (let i = 0; i < n; i++) counts[list.indexOf(picker.pick(list, GROUP))]!++;
  return counts;
}

/**
 * Control: the least running + waiting as last scraped, ties at random, and nothing else: what a
 * load-aware picker without the in-flight term does. Used to show the burst test can fail.
 */
class ScrapeOnlyPicker implements Picker {
  readonly name = 'scrape_only';
  constructor(private readonly random: () => number) {}
  pick(candidates: readonly Endpoint[]): Endpoint {
    const score = (e: Endpoint) => (e.load ? e.load.metrics.running_queue_size + e.load.metrics.waiting_queue_size : 0);
    const least = Math.min(...candidates.map(score));
    const ties = candidates.filter((e) => score(e) === least);
    return ties[Math.floor(this.random() * ties.length)]!;
  }
}

describe('LoadAwarePicker', () => {
  it('is what --routing-logic load_aware creates', () => {
    const picker = createPicker('load_aware');
    assert.ok(picker instanceof LoadAwarePicker);
    assert.equal(picker.name, 'load_aware');
  });

  it('prefers the endpoint whose engine reports the shorter queue', () => {
    const list = healthyEndpoints(3);
    scrape(list[0]!, { running: 4, waiting: 3 });
    scrape(list[1]!, { running: 4, waiting: 1 });
    scrape(list[2]!, { running: 4, waiting: 2 });
    assert.deepEqual(tally(new LoadAwarePicker(seededRandom(1)), list, 100), [0, 100, 0]);
  });

  it('weighs waiting above running: of two engines holding as many requests, the one with no queue wins', () => {
    const list = healthyEndpoints(2);
    scrape(list[0]!, { running: 6, waiting: 2 });
    scrape(list[1]!, { running: 8, waiting: 0 });
    // random() = 0 would take the first of a tie: only the waiting penalty sends every pick to pod-1.
    assert.deepEqual(tally(new LoadAwarePicker(() => 0), list, 20), [0, 20]);
  });

  it('follows a change in the figures at once', () => {
    const list = healthyEndpoints(2);
    const picker = new LoadAwarePicker(seededRandom(2));
    scrape(list[0]!, { running: 9 });
    scrape(list[1]!, { running: 1 });
    assert.equal(picker.pick(list), list[1]);
    scrape(list[0]!, { running: 1 });
    scrape(list[1]!, { running: 9 });
    assert.equal(picker.pick(list), list[0]);
    scrape(list[0]!, { running: 1, waiting: 4 });
    assert.equal(picker.pick(list), list[1]);
  });

  it('counts our requests as they are now, not as the scrape saw them', () => {
    const list = healthyEndpoints(2);
    const ours = Array.from({ length: 5 }, () => new Lease(list[0]!, undefined));
    scrape(list[0]!, { running: 5 }); // all five ours
    scrape(list[1]!, { running: 3 }); // another replica's
    const picker = new LoadAwarePicker(seededRandom(3));
    assert.equal(picker.pick(list), list[1], '5 of ours vs 3 of theirs');
    for (const lease of ours.slice(0, 3)) lease.release(OK_OUTCOME);
    assert.equal(picker.pick(list), list[0], 'three of ours ended since the scrape: 2 vs 3');
  });

  it('does not count our own requests twice (they are in the engine figures and in in-flight)', () => {
    const list = healthyEndpoints(2);
    for (let i = 0; i < 5; i++) new Lease(list[0]!, undefined);
    scrape(list[0]!, { running: 5, atScrape: 5 }); // ours: 5, others: 0 → 5
    scrape(list[1]!, { running: 7, atScrape: 0 }); // ours: 0, others: 7 → 7
    // Counting in-flight on top of the engine's figures would score pod-0 at 10 and send it all to pod-1.
    assert.deepEqual(tally(new LoadAwarePicker(seededRandom(4)), list, 20), [20, 0]);
  });

  it('never counts others as negative when ours had not reached the engine at the scrape', () => {
    const list = healthyEndpoints(2);
    for (let i = 0; i < 6; i++) new Lease(list[0]!, undefined);
    scrape(list[0]!, { running: 2, atScrape: 6 }); // 4 of ours still on their way: others = 0, not -4 → 6
    const picker = new LoadAwarePicker(seededRandom(5));
    scrape(list[1]!, { running: 4, atScrape: 0 }); // → 4
    assert.equal(picker.pick(list), list[1], 'others at -4 would score pod-0 at 2');
    scrape(list[1]!, { running: 7, atScrape: 0 }); // → 7
    assert.equal(picker.pick(list), list[0], 'pod-0 keeps its figures (6), it does not become unknown');
  });

  describe('stale and absent figures', () => {
    it('ignores stale figures (freshUntil in the past)', () => {
      const list = healthyEndpoints(2);
      new Lease(list[1]!, undefined);
      scrape(list[0]!, { waiting: 50, freshUntil: performance.now() - 1 });
      scrape(list[1]!, { running: 1 });
      // Read, the stale queue of 50 would send everything to pod-1; ignored, pod-0 has 0 in flight against 1.
      assert.deepEqual(tally(new LoadAwarePicker(seededRandom(6)), list, 20), [20, 0]);
    });

    it('ignores absent figures the same way', () => {
      const list = healthyEndpoints(2);
      new Lease(list[1]!, undefined);
      scrape(list[1]!, { running: 1 });
      assert.equal(list[0]!.load, undefined);
      assert.deepEqual(tally(new LoadAwarePicker(seededRandom(7)), list, 20), [20, 0]);
    });

    it('figures are fresh up to freshUntil inclusive, read from one clock reading per pick', () => {
      const list = healthyEndpoints(2);
      let now = 1000;
      let readings = 0;
      const picker = new LoadAwarePicker(
        () => 0,
        () => {
          readings++;
          return now;
        },
      );
      new Lease(list[1]!, undefined);
      scrape(list[0]!, { waiting: 50, freshUntil: 1000 });
      scrape(list[1]!, { running: 1, freshUntil: 5000 });
      assert.equal(picker.pick(list), list[1], 'at freshUntil: still fresh');
      now = 1000.001;
      assert.equal(picker.pick(list), list[0], 'past freshUntil: stale');
      assert.equal(readings, 2);
    });

    it('an endpoint without figures is neither starved nor flooded: it counts as an average pod of the set', () => {
      // Three pods each run 10 requests of another replica's; the fourth cannot be scraped.
      const list = healthyEndpoints(4);
      for (const endpoint of list.slice(1)) scrape(endpoint, { running: 10, atScrape: 0 });
      const got = burst(new LoadAwarePicker(seededRandom(8)), list, 40);
      // Judged by in-flight alone as if idle, it would take (40 + 30) / 4 = 17 or 18; as if full, 0.
      assert.deepEqual(got, [10, 10, 10, 10]);
    });

    it('with no figures anywhere it balances in-flight counts exactly as least_outstanding_requests', () => {
      const list = healthyEndpoints(4);
      scrape(list[2]!, { running: 0, freshUntil: performance.now() - 1 });
      const got = burst(new LoadAwarePicker(seededRandom(9)), list, 43);
      assert.ok(Math.max(...got) - Math.min(...got) <= 1, `picks ${got}`);
    });
  });

  describe('between two scrapes, our in-flight count moves the choice', () => {
    // One pod looked idle at the scrape; the three others ran 8 requests each, none of them ours.
    // The design's answer for a burst of 40 held requests: fill to the level where all four carry
    // the same load, (40 + 3 x 8) / 4 = 16, so 16 on the idle-looking pod and 8 on each other.
    // More than 16 there means the picker let the stale picture outweigh what it has sent since.
    const IDLE_LOOKING_BOUND = 16;
    const frozenScrape = () => {
      const list = healthyEndpoints(4);
      scrape(list[0]!, { running: 0 });
      for (const endpoint of list.slice(1)) scrape(endpoint, { running: 8, atScrape: 0 });
      return list;
    };

    it('a burst spreads over every pod', () => {
      const got = burst(new LoadAwarePicker(seededRandom(10)), frozenScrape(), 40);
      assert.ok(got[0]! <= IDLE_LOOKING_BOUND, `picks ${got}`);
      assert.deepEqual(got, [16, 8, 8, 8]);
    });

    it('control: a picker reading only the scrape figures herds the whole burst onto the idle-looking pod', () => {
      const got = burst(new ScrapeOnlyPicker(seededRandom(10)), frozenScrape(), 40);
      assert.equal(got[0], 40);
      assert.ok(got[0]! > IDLE_LOOKING_BOUND, 'the bound above would catch it');
    });
  });

  describe('waiting queues', () => {
    it('on an engine that had a queue, every request we add waits too and costs more', () => {
      const list = healthyEndpoints(2);
      scrape(list[0]!, { running: 4, waiting: 2, atScrape: 0 }); // full at 4: each of ours adds 1 + WAITING_PENALTY
      scrape(list[1]!, { running: 11, waiting: 0, atScrape: 0 }); // no queue: each of ours adds 1
      const got = burst(new LoadAwarePicker(seededRandom(11)), list, 12);
      // Scores: pod-0 10 + 3a, pod-1 11 + b with a + b = 12: a is 3 or 4. A queue penalty frozen at
      // the scrape (10 + a) would give pod-0 6 or 7.
      assert.equal(WAITING_PENALTY, 2);
      assert.ok(got[0]! >= 3 && got[0]! <= 4, `picks ${got}`);
    });

    it('ours ending on a saturated engine lowers its queue before the next scrape', () => {
      const list = healthyEndpoints(2);
      const ours = [new Lease(list[0]!, undefined), new Lease(list[0]!, undefined)];
      scrape(list[0]!, { running: 4, waiting: 2 }); // 2 ours + 4 others; queued 2 → 6 + 2 x 2 = 10
      scrape(list[1]!, { running: 5, atScrape: 0 }); // → 5
      const picker = new LoadAwarePicker(seededRandom(12));
      assert.equal(picker.pick(list), list[1]);
      for (const lease of ours) lease.release(OK_OUTCOME);
      // Ours gone: 4 others fill the 4 running slots, nothing waits → 4 < 5.
      assert.equal(picker.pick(list), list[0]);
    });
  });

  describe('KV-cache pressure', () => {
    it('a nearly full cache steers picks away', () => {
      const list = healthyEndpoints(2);
      scrape(list[0]!, { running: 3, kv: 95 });
      scrape(list[1]!, { running: 3, kv: 50 });
      assert.deepEqual(tally(new LoadAwarePicker(seededRandom(13)), list, 50), [0, 50]);
    });

    it('costs nothing below the knee', () => {
      const list = healthyEndpoints(2);
      scrape(list[0]!, { running: 3, kv: 79 });
      scrape(list[1]!, { running: 3, kv: 0 });
      const got = tally(new LoadAwarePicker(seededRandom(14)), list, 400);
      assert.ok(got[0]! > 150 && got[1]! > 150, `a tie expected: ${got}`);
    });

    it('rises steeply above it: 4 requests at 90 %, 16 when full', () => {
      const at = (kv: number) => {
        const list = healthyEndpoints(2);
        scrape(list[0]!, { kv });
        scrape(list[1]!, { kv: 0 });
        return burst(new LoadAwarePicker(seededRandom(15)), list, 20)[0];
      };
      const at85 = at(85); // penalty 1: 21 to share, so levels 10 and 11, either way round
      assert.ok(at85 === 9 || at85 === 10, `at 85 %: ${at85}`);
      assert.equal(at(90), 8); // penalty 4: levels 12 → 8 / 12
      assert.equal(at(100), 2); // penalty 16: levels 18 → 2 / 18
      assert.equal(at(120), 2, 'a figure above 100 counts as full');
      assert.equal(KV_PENALTY_AT_FULL, 16);
    });
  });

  describe('ties', () => {
    it('are broken uniformly at random', () => {
      const list = healthyEndpoints(4);
      for (const endpoint of list) scrape(endpoint, { running: 2, waiting: 1, kv: 90 });
      const got = tally(new LoadAwarePicker(seededRandom(16)), list, 4000);
      for (const count of got) assert.ok(count > 850 && count < 1150, `unfair tie-break: ${got}`);
    });

    it('take one random number per decision, none without a tie, and span known and unknown endpoints', () => {
      const list = healthyEndpoints(3);
      scrape(list[0]!, { running: 2, atScrape: 0 }); // 2
      // pod-1: no figures, 0 in flight + the mean of the known (2 + 5) / 2 = 3.5
      scrape(list[2]!, { running: 5, atScrape: 0 }); // 5
      let draws = 0;
      let next = 0;
      const picker = new LoadAwarePicker(() => {
        draws++;
        return next;
      });
      assert.equal(picker.pick(list), list[0]);
      assert.equal(draws, 0, 'no tie, no random number');
      scrape(list[2]!, { running: 2, atScrape: 0 }); // now pod-0 2, pod-1 0 + 2, pod-2 2: a three-way tie
      next = 0;
      assert.equal(picker.pick(list), list[0]);
      next = 0.5;
      assert.equal(picker.pick(list), list[1]);
      next = 0.999;
      assert.equal(picker.pick(list), list[2]);
      assert.equal(draws, 3);
    });
  });

  it('one picker serves candidate sets of any size, one after another', () => {
    const picker = new LoadAwarePicker(seededRandom(19));
    const small = healthyEndpoints(3);
    const large = Array.from({ length: 300 }, (_, i) => {
      const endpoint = new Endpoint({ address: `10.0.1.${i}:8000`, name: `big-${i}`, namespace: 'ns', labels: {} });
      scrape(endpoint, { running: i === 250 ? 1 : 2, atScrape: 0 });
      return endpoint;
    });
    for (const [i, endpoint] of small.entries()) scrape(endpoint, { running: i === 2 ? 0 : 1, atScrape: 0 });
    assert.equal(picker.pick(small), small[2]);
    assert.equal(picker.pick(large), large[250]);
    assert.equal(picker.pick(small), small[2]);
  });

  describe('several replicas', () => {
    it("others' load steers us away: a pod busy with a second replica's requests gets none of ours until the rest catch up", () => {
      // The second replica has 8 requests on pod-1; ours are on none.
      const list = healthyEndpoints(4);
      for (const endpoint of list) scrape(endpoint, { running: endpoint === list[1] ? 8 : 0, atScrape: 0 });
      const picker = new LoadAwarePicker(seededRandom(17));
      assert.deepEqual(burst(picker, list, 24), [8, 0, 8, 8]);
      assert.deepEqual(burst(picker, list, 28), [9, 1, 9, 9]);
      // Control: in-flight alone cannot see the other replica.
      const blind = burst(new LeastOutstandingPicker(seededRandom(17)), list, 24);
      assert.ok(blind[1]! >= 5, `least outstanding: ${blind}`);
    });
  });
});
