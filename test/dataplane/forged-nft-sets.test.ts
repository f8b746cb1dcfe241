// A set of Palisade's nftables tables deleted and declared again otherwise, its elements and the rules
// that use it put back as they were (one transaction: every rule, comment and element reads back as
// written): here with `flags timeout; timeout 2s`, so the group's members expire and what the group
// admits is dropped. The drift check compares each set's declaration with the kernel's form of
// Palisade's (learned in the scratch namespace with the chains) and the next apply declares it again.
// With real packets: b (a member) is dropped once the forged members expire (shown) and passes again
// after the repair; c (no member) stays blocked. Needs root.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ping, type Lab, type Host, type Vm } from '../../src/lab/index.js';
import { type HostFw, closeAll, icmpFromGroup, oneHostThreeVms } from './kit.js';

let lab: Lab;
let h1: Host;
let a: Vm, b: Vm, c: Vm;
let fw: HostFw;
const BLOCK = { timeoutMs: 800 };
let sh: (script: string) => Promise<string>;

before(async () => {
  ({ lab, h1, a, b, c, sh } = await oneHostThreeVms('0f', 120));
  fw = await icmpFromGroup(h1, { a, b, c }, 'nftables', 'sgnv4');
});

after(async () => { await closeAll(); await lab?.destroy(); });

test('a set declared again with a timeout (rules and elements put back as they were) is declared as Palisade declares it again', async () => {
  const input = await fw.input();
  assert.deepEqual((await fw.dp.observe(input)).drift, [], 'untouched: no drift');
  assert.equal((await fw.dp.apply(input)).changed, false);
  assert.equal((await ping(b, a.ipv4!, BLOCK)).ok, true, 'b (a member) may ping a');
  assert.equal((await ping(c, a.ipv4!, BLOCK)).ok, false, 'c may not');

  const table = await sh('nft list table inet palisade');
  const set = /set (g-\S+) \{/.exec(table)![1];
  // the chains using the set, their rules as nft prints them (handles left out)
  const chains = [...table.matchAll(/\tchain (\S+) \{\n([\s\S]*?)\n\t\}/g)].filter((m) => m[2].includes(`@${set}`));
  assert.ok(chains.length > 0);
  const rules = chains.flatMap((m) => m[2].split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('type ') && !l.startsWith('policy')).map((l) => `add rule inet palisade ${m[1]} ${l}`));
  await sh(`nft -f - <<'EOF'
${chains.map((m) => `flush chain inet palisade ${m[1]}`).join('\n')}
delete set inet palisade ${set}
add set inet palisade ${set} { type ipv4_addr; flags timeout; timeout 2s; }
add element inet palisade ${set} { ${b.ipv4} }
${rules.join('\n')}
EOF`);
  await new Promise((r) => setTimeout(r, 2500));
  assert.equal((await ping(b, a.ipv4!, BLOCK)).ok, false, 'the forged set\'s member expired: b is dropped (shown)');

  const obs = await fw.dp.observe(input);
  assert.ok(obs.drift.some((d) => d.kind === 'changed' && d.what === `nft inet set ${set}: not declared as Palisade declares it`), JSON.stringify(obs.drift));
  assert.equal((await fw.dp.apply(input)).changed, true, 'repaired');
  assert.doesNotMatch(await sh(`nft list set inet palisade ${set}`), /timeout/);
  assert.equal((await ping(b, a.ipv4!, { timeoutMs: 3000 })).ok, true, 'b passes again');
  assert.equal((await ping(c, a.ipv4!, BLOCK)).ok, false, 'c still blocked');
  assert.deepEqual((await fw.dp.observe(input)).drift, [], 'repaired: no drift');
  assert.equal((await fw.dp.apply(input)).changed, false, 'repaired: nothing written the pass after');
});
