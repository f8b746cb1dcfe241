// Differential check at scale (issue 10): random policies × random packets through each backend's real
// kernel rules, compared with `evaluate`; 100,000 cases per backend by default, IPv4 and IPv6, a fresh
// seed printed for replay; a new random policy every 1,000 cases. Needs root. Time limit: 3600 s.
// Run: node --import tsx bench/differential.ts [--cases N] [--seed S] [--backends nftables,iptables]
import { runDifferential, freshSeed } from '../test/dataplane/differential-kit.js';
import { BACKENDS, type BackendName } from '../src/dataplane/choose.js';
import { summary } from './summary.js';

const arg = (name: string) => { const i = process.argv.indexOf(`--${name}`); return i > 0 ? process.argv[i + 1] : undefined; };
const cases = Number(arg('cases') ?? 100_000);
const seed = arg('seed') ? Number(arg('seed')) : freshSeed();
const backends = (arg('backends')?.split(',') ?? [...BACKENDS]) as BackendName[];

console.log(`Palisade differential benchmark — ${new Date().toISOString()}: ${cases} cases per backend (${backends.join(', ')}), seed ${seed} (replay: --seed ${seed})`);
const t0 = Date.now();
const res = await runDifferential({ backends, cases, seed, perRound: Math.min(500, Math.ceil(cases / 2)), log: (l) => console.log(`${((Date.now() - t0) / 1000).toFixed(0)} s ${l}`) });
let bad = 0;
for (const [backend, r] of Object.entries(res.perBackend)) {
  summary('differential', `${backend}: cases checked (seed ${seed})`, r.cases, 'cases');
  summary('differential', `${backend}: kernel ≠ evaluate`, r.mismatches.length, 'cases', '0');
  console.log(`${backend}: ${r.cases} cases, ${r.allowed} allowed, ${r.mismatches.length} mismatches`);
  for (const m of r.mismatches.slice(0, 10)) console.log(`  ${m}`);
  bad += r.mismatches.length;
}
console.log(`${((Date.now() - t0) / 1000).toFixed(0)} s in all`);
process.exitCode = bad ? 1 : 0;
