// A table made dormant (`nft add table … { flags dormant; }`): the kernel unhooks all its base chains,
// so none of its rules run, while every rule, set and comment still reads back as written. With the
// nftables backend that is Palisade's own two tables; with the iptables backend on the nft-based tools
// (iptables-nft, ebtables-nft), the nf_tables tables they keep Palisade's chains in. The drift check
// reports it and the next apply wakes the table. With real packets: what the dormant tables let through
// (c, which a's group does not admit) is blocked again after the repair; what a's group admits (b)
// passes throughout. Needs root.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { ping, type Lab, type Host, type Vm } from '../../src/lab/index.js';
import { HostFw, policyOf, BACKENDS, closeAll, oneHostThreeVms } from './kit.js';
import { rule } from './fixtures.js';

for (const backend of BACKENDS) describe(backend, () => {
  let lab: Lab;
  let h1: Host;
  let a: Vm, b: Vm, c: Vm;
  let fw: HostFw;
  const BLOCK = { timeoutMs: 800 };
  let sh: (script: string) => Promise<string>;
  const tables = backend === 'nftables' ? ['inet palisade', 'bridge palisade'] : ['ip filter', 'ip raw', 'bridge nat', 'bridge filter'];

  before(async () => {
    ({ lab, h1, a, b, c, sh } = await oneHostThreeVms('0e', 110));
    fw = new HostFw(h1, backend);
    fw.set(policyOf(a, { ingress: [rule('icmp', [`${b.ipv4}/32`], { icmp: [-1, -1], id: 'from-b' })] })).set(policyOf(b)).set(policyOf(c));
    await fw.apply();
  });
  after(async () => { await closeAll(); await lab?.destroy(); });

  test('tables made dormant let everything through until the drift check wakes them; an untouched host is quiet', async () => {
    const input = await fw.input();
    assert.deepEqual((await fw.dp.observe(input)).drift, []);
    assert.equal((await fw.dp.apply(input)).changed, false);
    assert.equal((await ping(b, a.ipv4!, BLOCK)).ok, true, 'b may ping a');
    assert.equal((await ping(c, a.ipv4!, BLOCK)).ok, false, 'c may not');
    await sh(tables.map((t) => `nft 'add table ${t} { flags dormant; }'`).join('\n'));
    assert.equal((await ping(c, a.ipv4!, BLOCK)).ok, true, 'dormant: c gets through (shown)');
    const obs = await fw.dp.observe(input);
    for (const t of tables) assert.ok(obs.drift.some((d) => d.kind === 'changed' && d.what.startsWith(`nft table ${t}`) && /dormant/.test(d.what)), `${t}: ${JSON.stringify(obs.drift)}`);
    assert.equal((await fw.dp.apply(input)).changed, true, 'repaired');
    assert.doesNotMatch(await sh('nft list tables; for t in ' + tables.map((t) => `'${t}'`).join(' ') + '; do nft list table $t | head -3; done'), /dormant/);
    assert.equal((await ping(c, a.ipv4!, BLOCK)).ok, false, 'c is blocked again');
    assert.equal((await ping(b, a.ipv4!, BLOCK)).ok, true, 'b still passes');
    assert.deepEqual((await fw.dp.observe(input)).drift, []);
    assert.equal((await fw.dp.apply(input)).changed, false);
  });
});
