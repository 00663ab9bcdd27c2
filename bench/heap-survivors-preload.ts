/**
 * Diagnostic hook, loaded only with `bench/run.js --heap-survivors` (node --import into both
 * server processes). It samples allocations with V8's heap profiler, keeping only objects that
 * survived at least one scavenge: objects that died young are left out. Those survivors are what
 * makes scavenges long and fills the old generation. On SIGUSR2 it writes the profile to
 * $BENCH_HEAP_SURVIVORS_DIR/<pid>.heapprofile.
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { join } from 'node:path';

const dir = process.env.BENCH_HEAP_SURVIVORS_DIR ?? '.';
const session = new Session();
session.connect();
await session.post('HeapProfiler.enable');
await session.post('HeapProfiler.startSampling', { samplingInterval: 16384, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: false });
process.on('SIGUSR2', () => {
  void session.post('HeapProfiler.stopSampling').then(({ profile }) => writeFileSync(join(dir, `${process.pid}.heapprofile`), JSON.stringify(profile)));
});
