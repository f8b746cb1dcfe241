// Palisade's ipsets swapped for sets of the same type with other options (iptables backend): `ipset
// swap` exchanges two hash:ip sets whatever their netmask, timeout or extensions, so another tool can
// put a `netmask 16` set under a group set's name (every address of the /16 is then a member) with the
// members' texts nearly unchanged. The drift check tells it by the set's options and rebuilds the set
// as Palisade creates it (swapped in under its name), after which the same pass is quiet; a scratch
// set left by such a rebuild cut short is destroyed first rather than blocking the next one. With real
// packets: what the forged set opens (c, not a member) is blocked again after the repair; what the
// group allows (b, a member) passes throughout. Likewise an ebtables chain of Palisade's given another
// policy (its frames dropped until the drift check declares it again). Needs root.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ping, type Lab, type Host, type Vm } from '../../src/lab/index.js';
import { type HostFw, closeAll, icmpFromGroup, oneHostThreeVms, policyOf } from './kit.js';
import { ipsetHeader, scratchSet } from '../../src/dataplane/iptables/kernel.js';

let lab: Lab;
let h1: Host;
let a: Vm, b: Vm, c: Vm;
let fw: HostFw;
const BLOCK = { timeoutMs: 800 };
let sh: (script: string) => Promise<string>;

before(async () => {
  ({ lab, h1, a, b, c, sh } = await oneHostThreeVms('07', 70));
  fw = await icmpFromGroup(h1, { a, b, c }, 'iptables', 'sgfv4');
});

after(async () => { await closeAll(); await lab?.destroy(); });

/** Swaps a set of pal-sgfv4's type with `netmask 16` in for it (b a member): every b's /16 then matches. */
const FORGE_NETMASK_16 = () => `ipset create forged hash:ip family inet netmask 16 comment
ipset add forged ${b.ipv4}
ipset swap pal-sgfv4 forged
ipset destroy forged`;

test('set options: sizing is left out, the rest in one order', () => {
  assert.equal(ipsetHeader('hash:ip family inet hashsize 1024 maxelem 65536 comment bucketsize 12 initval 0x1'.split(' ')), 'hash:ip comment family inet');
  assert.equal(ipsetHeader('hash:ip family inet comment -exist'.split(' ')), 'hash:ip comment family inet');
  assert.equal(ipsetHeader('hash:ip family inet hashsize 1024 maxelem 65536 netmask 16 comment'.split(' ')), 'hash:ip comment family inet netmask 16');
  assert.equal(ipsetHeader('hash:net,iface family inet hashsize 64 maxelem 65536 skbinfo comment'.split(' ')), 'hash:net,iface comment family inet skbinfo');
});

test('a group set swapped for a netmask one opens its /16 until the drift check rebuilds it; an untouched host is quiet', async () => {
  const input = await fw.input();
  assert.deepEqual((await fw.dp.observe(input)).drift, [], 'untouched: no drift');
  assert.equal((await fw.dp.apply(input)).changed, false, 'untouched: nothing written');
  assert.equal((await ping(b, a.ipv4!, BLOCK)).ok, true, 'b (a member) may ping a');
  assert.equal((await ping(c, a.ipv4!, BLOCK)).ok, false, 'c (no member) may not ping a');

  await sh(FORGE_NETMASK_16());
  assert.equal((await ping(c, a.ipv4!, BLOCK)).ok, true, 'the forged set lets c in (shown)');

  const obs = await fw.dp.observe(input);
  assert.ok(obs.drift.some((d) => d.kind === 'changed' && /ipset pal-sgfv4: .*netmask 16/.test(d.what)), JSON.stringify(obs.drift));
  assert.equal((await fw.dp.apply(input)).changed, true, 'repaired');
  assert.doesNotMatch(await sh('ipset save pal-sgfv4'), /netmask/);
  assert.doesNotMatch(await sh('ipset list -n'), /pal-swap-/, 'no scratch set left');
  assert.equal((await ping(c, a.ipv4!, BLOCK)).ok, false, 'c is blocked again');
  assert.equal((await ping(b, a.ipv4!, BLOCK)).ok, true, 'b still passes');
  assert.deepEqual((await fw.dp.observe(input)).drift, [], 'repaired: no drift');
  assert.equal((await fw.dp.apply(input)).changed, false, 'repaired: nothing written the pass after');
});

test('a scratch set left by a rebuild cut short (after its swap, holding the forged set) does not block the next rebuild, and is gone after it', async () => {
  const input = await fw.input();
  const tmp = scratchSet('pal-sgfv4');
  // what a restore stopped between `swap` and `destroy` leaves: the scratch name holding a forged set
  await sh(`ipset create ${tmp} hash:ip family inet netmask 16 comment
ipset add ${tmp} ${b.ipv4}
${FORGE_NETMASK_16()}`);
  assert.equal((await ping(c, a.ipv4!, BLOCK)).ok, true, 'the forged set lets c in (shown)');
  assert.ok((await fw.dp.observe(input)).drift.some((d) => /ipset pal-sgfv4: .*netmask 16/.test(d.what)));
  assert.equal((await fw.dp.apply(input)).changed, true, 'repaired, the leftover in the way');
  assert.doesNotMatch(await sh('ipset save pal-sgfv4'), /netmask/);
  assert.doesNotMatch(await sh('ipset list -n'), /pal-swap-/, 'the leftover and the forged set are gone');
  assert.equal((await ping(c, a.ipv4!, BLOCK)).ok, false, 'c is blocked again');
  assert.equal((await ping(b, a.ipv4!, BLOCK)).ok, true, 'b still passes');
  assert.deepEqual((await fw.dp.observe(input)).drift, []);
  assert.equal((await fw.dp.apply(input)).changed, false);
  // a leftover alone (the set itself Palisade's) is removed too, by the next write
  await sh(`ipset create ${tmp} hash:ip family inet netmask 16
ipset add ${tmp} ${c.ipv4}`);
  await sh('ipset del pal-sgfv4 ' + b.ipv4);
  assert.ok((await fw.dp.observe(input)).drift.length > 0);
  assert.equal((await fw.dp.apply(input)).changed, true);
  assert.doesNotMatch(await sh('ipset list -n'), /pal-swap-/);
  assert.equal((await ping(b, a.ipv4!, BLOCK)).ok, true, 'b a member again');
});

test('a leftover scratch set the kernel will not destroy (another tool\'s rule uses it) blocks no rebuild and no other write', async () => {
  const input = await fw.input();
  const tmp = scratchSet('pal-sgfv4');
  await sh(`ipset create ${tmp} hash:ip family inet netmask 16 comment
iptables -I INPUT -m set --match-set ${tmp} src -j ACCEPT
${FORGE_NETMASK_16()}`);
  assert.equal((await ping(c, a.ipv4!, BLOCK)).ok, true, 'the forged set lets c in (shown)');
  assert.ok((await fw.dp.observe(input)).drift.some((d) => /ipset pal-sgfv4: .*netmask 16/.test(d.what)));
  try {
    assert.equal((await fw.dp.apply(input)).changed, true, 'rebuilt all the same');
  } catch (e) {
    await sh(`iptables -D INPUT -m set --match-set ${tmp} src -j ACCEPT`); // (the later tests need a dataplane that writes)
    throw e;
  }
  assert.doesNotMatch(await sh('ipset save pal-sgfv4'), /netmask/);
  assert.equal((await ping(c, a.ipv4!, BLOCK)).ok, false, 'c is blocked again');
  assert.equal((await ping(b, a.ipv4!, BLOCK)).ok, true, 'b still passes');
  assert.match(await sh('ipset list -n'), new RegExp(`^${tmp}$`, 'm'), 'the set in use is left');
  assert.deepEqual((await fw.dp.observe(input)).drift, [], 'and is no drift (else a repair every pass that cannot repair it)');
  assert.equal((await fw.dp.apply(input)).changed, false);
  // once its user is gone, the next write removes it
  await sh(`iptables -D INPUT -m set --match-set ${tmp} src -j ACCEPT
ipset del pal-sgfv4 ${b.ipv4}`);
  assert.ok((await fw.dp.observe(input)).drift.length > 0);
  assert.equal((await fw.dp.apply(input)).changed, true);
  assert.doesNotMatch(await sh('ipset list -n'), /pal-swap-/);
  assert.equal((await ping(b, a.ipv4!, BLOCK)).ok, true, 'b a member again');
  assert.deepEqual((await fw.dp.observe(input)).drift, []);
});

test('a VM\'s own-address set swapped for one whose members expire is rebuilt too (no apply every pass)', async () => {
  const input = await fw.input();
  const own = (await sh('ipset list -n')).split('\n').find((n) => n === `${policyOf(a).instanceName}`)!;
  assert.ok(own, 'a has its own-address set');
  await sh(`ipset create forged hash:ip family inet timeout 600 comment
ipset add forged ${a.ipv4}
ipset swap ${own} forged
ipset destroy forged`);
  const obs = await fw.dp.observe(input);
  assert.ok(obs.drift.some((d) => d.kind === 'changed' && d.what.startsWith(`ipset ${own}: `)), JSON.stringify(obs.drift));
  assert.equal((await fw.dp.apply(input)).changed, true);
  assert.doesNotMatch(await sh(`ipset save ${own}`), /timeout/);
  assert.deepEqual((await fw.dp.observe(input)).drift, []);
  assert.equal((await fw.dp.apply(input)).changed, false);
  assert.equal((await ping(b, a.ipv4!, BLOCK)).ok, true, 'a still answers b (its own address kept)');
  assert.equal((await ping(c, a.ipv4!, BLOCK)).ok, false, 'c still blocked');
});

test('an ebtables chain of Palisade\'s given another policy (ebtables -P … DROP) is rewritten at the next drift check', async () => {
  const input = await fw.input();
  const chain = `${policyOf(a).instanceName}-in`;
  assert.match(await sh('ebtables-save -t nat'), new RegExp(`^:${chain} ACCEPT$`, 'm'));
  await sh(`ebtables -t nat -P ${chain} DROP`);
  assert.equal((await ping(b, a.ipv4!, BLOCK)).ok, false, 'a\'s frames are dropped (shown)');
  const obs = await fw.dp.observe(input);
  assert.ok(obs.drift.some((d) => d.kind === 'changed' && d.what === `ebtables nat chain ${chain}`), JSON.stringify(obs.drift));
  assert.equal((await fw.dp.apply(input)).changed, true);
  assert.match(await sh('ebtables-save -t nat'), new RegExp(`^:${chain} ACCEPT$`, 'm'));
  assert.equal((await ping(b, a.ipv4!, { timeoutMs: 3000 })).ok, true, 'b pings a again');
  assert.equal((await ping(c, a.ipv4!, BLOCK)).ok, false, 'c still blocked');
  assert.deepEqual((await fw.dp.observe(input)).drift, []);
  assert.equal((await fw.dp.apply(input)).changed, false);
});
