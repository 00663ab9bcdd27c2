import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runNode } from './support/child.js';

describe('test/support/child.ts', () => {
  it('collects what a child writes and its exit code', async () => {
    const outcome = await runNode(['-e', "process.stdout.write('out'); process.stderr.write('err'); process.exit(3)"]);
    assert.deepEqual(outcome, { code: 3, stdout: 'out', stderr: 'err' });
  });

  it('kills a child that outlives its timeout, so a hung child fails its test', async () => {
    const outcome = await runNode(['-e', 'setTimeout(() => {}, 60_000)'], { timeoutMs: 300 });
    assert.equal(outcome.code, null, 'ended by the signal, not by itself');
  });
});
