// Case 11 and the apply contract: idempotent applies, drift observed and repaired, removal leaves nothing,
// foreign chains/rules/sets survive every apply and teardown, unknown taps fail closed, failures name the step.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createLab, ping, arping, type Lab, type Vm, type Host } from '../../src/lab/index.js';
import { DataplaneError } from '../../src/dataplane/backend.js';
import { HostFw, policyOf, instanceOf } from './kit.js';
import { rule } from './fixtures.js';

let lab: Lab;
let h1: Host;
let a: Vm, b: Vm, u: Vm;
let fw: HostFw;
const O4 = '198.51.100.1';

const sh = async (script: string) => (await h1.exec('sh', ['-ec', script])).stdout;
const kernel = () => sh('iptables-save; ip6tables-save; ipset list -n; ebtables-save');

before(async () => {
  lab = await createLab();
  h1 = await lab.addHost('h1');
  a = await lab.addVm({ host: h1, name: 'a', nics: [{ mac: '52:54:00:00:04:0a', ipv4: '198.51.100.80/24', ipv6: '2001:db8:ff::80/64' }] });
  b = await lab.addVm({ host: h1, name: 'b', nics: [{ mac: '52:54:00:00:04:0b', ipv4: '198.51.100.81/24', ipv6: '2001:db8:ff::81/64' }] });
  u = await lab.addVm({ host: h1, name: 'u', nics: [{ mac: '52:54:00:00:04:0c', ipv4: '198.51.100.82/24' }] }); // never in the desired state
  // Someone else's rules on the host.
  await sh(`
iptables -N FOREIGN
iptables -A FOREIGN -s 203.0.113.9/32 -j DROP
iptables -A FORWARD -j FOREIGN
iptables -t raw -A PREROUTING -s 203.0.113.8/32 -j ACCEPT
ip6tables -N FOREIGN6
ip6tables -A FORWARD -j FOREIGN6
ipset create foreign-set hash:ip
ipset create i-9-9-VM hash:ip
ebtables -t nat -N FOREIGN-EB
ebtables -t nat -A PREROUTING -j FOREIGN-EB
ebtables -A FORWARD -i foreign0 -j ACCEPT
`);
  fw = new HostFw(h1);
});

after(async () => { await lab?.destroy(); });

function assertForeignIntact(k: string) {
  for (const re of [/^:FOREIGN - /m, /^-A FOREIGN -s 203\.0\.113\.9\/32 -j DROP$/m, /^-A FORWARD -j FOREIGN$/m, /^-A PREROUTING -s 203\.0\.113\.8\/32 -j ACCEPT$/m,
    /^-A FORWARD -j FOREIGN6$/m, /^foreign-set$/m, /^i-9-9-VM$/m, /^:FOREIGN-EB ACCEPT$/m, /^-A PREROUTING -j FOREIGN-EB$/m, /^-A FORWARD -i foreign0 -j ACCEPT$/m]) {
    assert.match(k, re);
  }
}

test('apply twice writes nothing the second time; observe sees no drift', async () => {
  fw.set(policyOf(a, { ingress: [rule('icmp', ['0.0.0.0/0'], { icmp: [-1, -1] })] })).set(policyOf(b));
  const first = await fw.apply();
  assert.equal(first.changed, true);
  assert.deepEqual(first.steps.map((s) => s.tool), ['ipset restore', 'ebtables-restore', 'iptables-restore', 'ip6tables-restore']);
  const second = await fw.apply();
  assert.equal(second.changed, false);
  assert.deepEqual(second.steps, []);
  // a fresh backend (agent restart) reads the kernel and also finds nothing to do
  const fresh = new HostFw(h1);
  for (const p of fw.policies.values()) fresh.set(p);
  assert.equal((await fresh.dp.apply(await fresh.input())).changed, false);
  assert.deepEqual((await fw.dp.observe(await fw.input())).drift, []);
  assertForeignIntact(await kernel());
  const [toA, toB] = await Promise.all([ping(b, a.ipv4!, { timeoutMs: 3000 }), ping(a, b.ipv4!, { timeoutMs: 800 })]);
  assert.deepEqual([toA.ok, toB.ok], [true, false]);
});

test('a rule change shadows the old chain version at once; the old rules go later; verdicts follow the new rules', async () => {
  const chain = instanceOf(a); // the ingress chain (i-2-N-VM)
  const rulesOf = async () => (await sh('iptables-save -t filter')).split('\n').filter((l) => l.startsWith(`-A ${chain} `));
  fw.set(policyOf(a, { ingress: [rule('icmp', ['0.0.0.0/0'], { icmp: [-1, -1] })] })).set(policyOf(b));
  await fw.apply();
  const before = await rulesOf();
  // swap: ICMP from b's address no longer allowed; everything from the outside's /32 allowed instead
  fw.set(policyOf(a, { ingress: [rule('all', [`${O4}/32`], { id: 'out-all' })] }));
  const r = await fw.apply();
  assert.deepEqual(r.steps.map((s) => s.tool), ['iptables-restore']);
  const shadowed = await rulesOf();
  assert.equal(shadowed.length, 2 + before.length, shadowed.join('\n'));
  assert.match(shadowed[0], /pal:out-all\.c0 #/);
  assert.deepEqual((await fw.dp.observe(await fw.input())).drift, []);
  const [fromB, fromOut] = await Promise.all([ping(b, a.ipv4!, { timeoutMs: 800 }), ping(lab.outside.netns, a.ipv4!, { timeoutMs: 3000 })]);
  assert.deepEqual([fromB.ok, fromOut.ok], [false, true]);
  await fw.dp.collectGarbage();
  assert.equal((await rulesOf()).length, 2);
  assert.equal((await fw.apply()).changed, false);
  // a fresh backend reads the collected chain as up to date
  const fresh = new HostFw(h1);
  for (const p of fw.policies.values()) fresh.set(p);
  assert.equal((await fresh.dp.apply(await fresh.input())).changed, false);
  // back to the first policy for the tests below
  fw.set(policyOf(a, { ingress: [rule('icmp', ['0.0.0.0/0'], { icmp: [-1, -1] })] }));
  await fw.apply();
  await fw.dp.collectGarbage();
});

test('unknown tap-like ports on the bridge get no traffic (fail closed)', async () => {
  const [fromU, toU, fromA] = await Promise.all([
    ping(u, O4, { timeoutMs: 800 }),
    ping(lab.outside.netns, u.ipv4!, { timeoutMs: 800 }),
    ping(a, O4, { timeoutMs: 3000 }),
  ]);
  assert.deepEqual([fromU.ok, toU.ok, fromA.ok], [false, false, true]);
  assert.match(await sh('ebtables-save'), new RegExp(`-A PALISADE-PRE -i ${u.nics[0].tap} -j DROP`));
});

test('a new libvirt-named port Palisade does not know yet sends and receives nothing', async () => {
  // a VM namespace plugged after the last apply (its tap is neither a known NIC nor a listed unknown tap)
  const late = await lab.addVm({ host: h1, name: 'late', nics: [{ mac: '52:54:00:00:04:0e', ipv4: '198.51.100.84/24' }] });
  const [fromLate, toLate, arp, fromA] = await Promise.all([
    ping(late, O4, { timeoutMs: 800 }),
    ping(lab.outside.netns, late.ipv4!, { timeoutMs: 800 }),
    arping(late, O4, { timeoutMs: 800 }),
    ping(a, O4, { timeoutMs: 3000 }),
  ]);
  assert.deepEqual([fromLate.ok, toLate.ok, arp.ok, fromA.ok], [false, false, false, true]);
  const tap = late.nics[0].tap;
  await late.remove();
  // the tap goes with the namespace's cleanup (asynchronous in the kernel): later applies must not see it come and go
  for (let i = 0; i < 50 && (await h1.exec('ip', ['link', 'show', tap], { allowFail: true })).code === 0; i++) await new Promise((r) => setTimeout(r, 100));
});

test('drift is observed and repaired by the next apply', async () => {
  const bi = instanceOf(b);
  const def = bi.replace(/-VM$/, '-def');
  await sh(`
iptables -D ${def} 1
ipset del ${bi} ${b.ipv4}
ebtables -t nat -F ${bi}-in-ips
iptables -N i-9-9-VM-eg
iptables -A i-9-9-VM-eg -m comment --comment pal:stale -j RETURN
`);
  const drift = (await fw.dp.observe(await fw.input())).drift.map((d) => `${d.kind} ${d.what}`);
  assert.ok(drift.some((d) => d.startsWith(`missing iptables filter rule ${def} pal:n0.dhcpc`)), drift.join('\n'));
  assert.ok(drift.includes(`missing ipset ${bi} element ${b.ipv4}`), drift.join('\n'));
  assert.ok(drift.includes(`changed ebtables nat chain ${bi}-in-ips`), drift.join('\n'));
  assert.ok(drift.includes('unexpected iptables filter chain i-9-9-VM-eg'), drift.join('\n'));
  const res = await fw.apply();
  assert.equal(res.changed, true);
  assert.deepEqual((await fw.dp.observe(await fw.input())).drift, []);
  assertForeignIntact(await kernel());
});

test('tampering: a rule slipped into a Palisade chain or above its jumps is drift, and the next apply undoes it', async () => {
  const bi = instanceOf(b);
  // b is default-deny: an ACCEPT at the top of its ingress chain, or above the FORWARD jump, would open it.
  await sh(`
iptables -I ${bi} 1 -j ACCEPT
iptables -I FORWARD 1 -s 203.0.113.77/32 -j ACCEPT
ebtables -t nat -I PREROUTING 1 -i foreign1 -j ACCEPT
`);
  const drift = (await fw.dp.observe(await fw.input())).drift.map((d) => `${d.kind} ${d.what}`);
  assert.ok(drift.includes(`unexpected iptables filter chain ${bi}: 1 rule(s) without a Palisade id`), drift.join('\n'));
  assert.ok(drift.includes("changed iptables filter FORWARD: rules above Palisade's jumps"), drift.join('\n'));
  assert.ok(drift.includes("changed ebtables nat PREROUTING: rules above Palisade's jumps"), drift.join('\n'));
  assert.equal((await fw.apply()).changed, true);
  assert.deepEqual((await fw.dp.observe(await fw.input())).drift, []);
  const k = await kernel();
  assert.doesNotMatch(k, new RegExp(`^-A ${bi} -j ACCEPT$`, 'm'));
  // the foreign rules stay (above them now: Palisade's jumps), only the one inside Palisade's chain is gone
  const fwd = k.split('\n').filter((l) => l.startsWith('-A FORWARD'));
  assert.match(fwd[0], /pal:fwd/);
  assert.ok(fwd.some((l) => l === '-A FORWARD -s 203.0.113.77/32 -j ACCEPT'));
  assert.match(k, /^-A PREROUTING -j PALISADE-PRE\n-A PREROUTING -i foreign1 -j ACCEPT$/m);
  assert.equal((await ping(a, b.ipv4!, { timeoutMs: 800 })).ok, false);
  await sh('iptables -D FORWARD -s 203.0.113.77/32 -j ACCEPT; ebtables -t nat -D PREROUTING -i foreign1 -j ACCEPT');
});

test('a missing NIC port is reported per VM; other VMs are programmed', async () => {
  const ghost = { ...policyOf(a), vmId: 'ghost', instanceName: 'i-2-999-VM', nics: [{ ...policyOf(a).nics[0], nicId: 'ghost-nic', mac: '52:54:00:00:04:ff' }] };
  fw.set(ghost);
  const res = await fw.dp.apply(await fw.input());
  assert.equal(res.vms.ghost.ok, false);
  assert.match(res.vms.ghost.error!, /NIC port not found on host: ghost-nic/);
  assert.equal(res.vms[a.netns].ok, true);
  assert.doesNotMatch(await kernel(), /i-2-999/);
  fw.policies.delete('ghost');
});

test('a failing tool is an error naming the step; nothing is reported as applied', async () => {
  // A set of another type under the name Palisade needs for a new VM makes `ipset restore` fail.
  const c = await lab.addVm({ host: h1, name: 'c', nics: [{ mac: '52:54:00:00:04:0d', ipv4: '198.51.100.83/24' }] });
  const ci = instanceOf(c);
  await sh(`ipset create ${ci} hash:net family inet`);
  fw.set(policyOf(c));
  await assert.rejects(fw.apply(), (e: unknown) => e instanceof DataplaneError && e.step === 'ipset restore' && /ipset restore failed/.test(e.message));
  assert.doesNotMatch(await sh('iptables-save'), new RegExp(ci.replace(/-VM$/, '-def')));
  await sh(`ipset destroy ${ci}`);
  assert.equal((await fw.apply()).changed, true);
  assert.match(await sh('iptables-save'), new RegExp(`:${ci.replace(/-VM$/, '-def')} `));
});

test('11. removing a VM removes its chains, sets and ebtables rules; the last one leaves only the drop of its tap; foreign rules survive', async () => {
  const bi = instanceOf(b);
  fw.remove(b);
  assert.equal((await fw.apply()).changed, true);
  let k = await kernel();
  assert.doesNotMatch(k, new RegExp(bi.replace(/-VM$/, '')));
  // b's tap is still on the bridge: now an unknown port, it is dropped rather than left open
  assert.match(k, new RegExp(`-i ${b.nics[0].tap} -j DROP`));
  assert.equal((await ping(b, O4, { timeoutMs: 800 })).ok, false);
  assert.match(k, new RegExp(instanceOf(a)));
  assertForeignIntact(k);
  for (const v of [...fw.policies.values()]) fw.policies.delete(v.vmId);
  assert.equal((await fw.apply()).changed, true);
  k = await kernel();
  // no VM's chains or sets are left; the taps still on the bridge are unknown ports now, dropped
  assert.doesNotMatch(k, /i-2-|palisade-|pal-/);
  for (const v of [a, b]) assert.match(k, new RegExp(`-i ${v.nics[0].tap} -j DROP`));
  assert.equal((await ping(a, O4, { timeoutMs: 800 })).ok, false);
  assertForeignIntact(k);
  assert.equal((await fw.apply()).changed, false);
});

test('teardown removes everything Palisade owns and nothing else', async () => {
  fw.set(policyOf(a, {}, {}));
  fw.set({ ...policyOf(b, { ingress: [rule('all', ['0.0.0.0/0'])], egress: [rule('all', ['0.0.0.0/0'])], notrack: true }) });
  fw.sets = [{ id: 'sg1v4', family: 4, members: ['198.51.100.9'] }];
  fw.set(policyOf(u, { ingress: [rule('tcp', [], { ports: [1, 1], sets: ['sg1v4'] })] }));
  await fw.apply();
  assert.match(await kernel(), /--notrack/);
  await fw.dp.teardown();
  const k = await kernel();
  assert.doesNotMatch(k, /pal:|BF-|PALISADE|i-2-|palisade-|pal-/);
  assertForeignIntact(k);
});
