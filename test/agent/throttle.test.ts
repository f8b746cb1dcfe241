// How long a throttled agent connection is not read (sessions.ts throttlePauseMs), with the host's real
// handling budget (TimeBudget) on a simulated clock: an honest host in debt from one resync is read again
// within THROTTLE_MAX_MS each time, while a host whose every read frame costs more than the budget earns
// in THROTTLE_MAX_MS still gets no more than HANDLING_MS_PER_SECOND of the server's time on average.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HANDLING_BURST_MS, HANDLING_MS_PER_SECOND, throttlePauseMs } from '../../src/control/sessions.js';
import { TimeBudget } from '../../src/control/time-budget.js';

const THROTTLE_MAX_MS = 10_000;

/**
 * A connection read whenever it is not paused, with a frame costing `frameMs` always waiting (an agent
 * sending them without pause); returns the server time it took per second of the run and the longest pause.
 */
function run(frameMs: number, runMs: number): { msPerSecond: number; longestPauseMs: number } {
  let now = 0;
  const budget = new TimeBudget(HANDLING_MS_PER_SECOND, HANDLING_BURST_MS, () => now);
  let spent = 0;
  let longestPauseMs = 0;
  while (now < runMs) {
    now += frameMs;                               // the frame read at once when resumed
    spent += frameMs;
    const waitMs = budget.charge(frameMs);
    if (waitMs === 0) continue;
    const pause = throttlePauseMs(waitMs);
    longestPauseMs = Math.max(longestPauseMs, pause);
    now += pause;
  }
  return { msPerSecond: spent / (now / 1000), longestPauseMs };
}

test('a host whose every frame read costs 0.6, 2 or 5 s (a valid 16 MB hits frame takes ~3 s to decode) gets no more than its 50 ms a second over an hour', () => {
  for (const frameMs of [600, 2000, 5000]) {
    const r = run(frameMs, 3_600_000);
    assert.ok(r.msPerSecond <= HANDLING_MS_PER_SECOND * 1.1, `${frameMs} ms frames: ${r.msPerSecond.toFixed(1)} ms of server time a second`);
  }
});

test('an honest host in debt from one resync (a whole burst charged to an empty budget) is read again within THROTTLE_MAX_MS, each time until paid back', () => {
  let now = 0;
  const budget = new TimeBudget(HANDLING_MS_PER_SECOND, HANDLING_BURST_MS, () => now);
  budget.charge(HANDLING_BURST_MS);               // its budget used up (its frames, the first resync)
  let waitMs = budget.charge(HANDLING_BURST_MS);  // one more resync: 40 s of debt
  assert.ok(waitMs >= 39_000, String(waitMs));
  for (let reads = 0; waitMs > 0; reads++) {
    assert.ok(reads < 100);
    const pause = throttlePauseMs(waitMs);
    assert.ok(pause <= THROTTLE_MAX_MS, `paused ${pause} ms for ${waitMs} ms of debt`);
    now += pause;
    waitMs = budget.charge(1);                    // then only acks and pings, 1 ms each
  }
});
