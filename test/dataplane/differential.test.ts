// Case 12, differential: random policies × random packets. Each backend's kernel verdict, observed
// with real crafted packets (delivered to the VM for ingress, to the uplink side for egress), must
// equal `evaluate` from the policy compiler — at least 1,000 cases per backend per run, IPv4 and IPv6,
// with a fresh seed each run, printed (PALISADE_DIFF_SEED=<seed> replays it; PALISADE_DIFF_CASES
// raises the count; `npm run bench -- differential` runs 100,000).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BACKENDS } from './kit.js';
import { freshSeed, runDifferential } from './differential-kit.js';

const CASES = Math.max(1000, Number(process.env.PALISADE_DIFF_CASES ?? 1000));
const SEED = freshSeed();

test(`12. differential: kernel verdicts equal evaluate() (${CASES} cases per backend: ${BACKENDS.join(', ')}; seed ${SEED})`, { timeout: 900_000 }, async () => {
  console.log(`differential seed ${SEED} (replay: PALISADE_DIFF_SEED=${SEED})`);
  const res = await runDifferential({ backends: BACKENDS, cases: CASES, seed: SEED });
  for (const [backend, r] of Object.entries(res.perBackend)) {
    assert.ok(r.cases >= CASES, `${backend}: ${r.cases} cases`);
    assert.deepEqual(r.mismatches.slice(0, 20), [], `${backend}, seed ${SEED}: ${r.mismatches.length} mismatches`);
    // both verdicts must actually occur, or the comparison says little
    assert.ok(r.allowed > r.cases * 0.1 && r.allowed < r.cases * 0.9, `${backend}: allowed ${r.allowed} of ${r.cases}`);
  }
});
