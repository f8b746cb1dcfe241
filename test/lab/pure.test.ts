// Pure helpers of the lab: naming/addressing conventions, drop attribution, argument parsing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tapMac, linkLocalFromMac, v4Network, v6Network, randomPrefix, checkPrefix, randomGuestMac } from '../../src/lab/names.js';
import { parseDropCounters, parseNftDropCounters, dropDelta, explainDrops } from '../../src/lab/verdict.js';
import { parseLabArgs } from '../../src/lab/command.js';

test('libvirt tap MAC convention and EUI-64 link-local', () => {
  assert.equal(tapMac('52:54:00:AB:cd:01'), 'fe:54:00:ab:cd:01');
  assert.throws(() => tapMac('52:54:00:ab:cd'), /invalid MAC/);
  assert.equal(linkLocalFromMac('52:54:00:00:00:0a'), 'fe80::5054:ff:fe00:a');
  assert.match(randomGuestMac(), /^52:54:00(:[0-9a-f]{2}){3}$/);
});

test('networks of CIDRs', () => {
  assert.equal(v4Network('10.1.0.77/24'), '10.1.0.0/24');
  assert.equal(v4Network('10.1.0.77/32'), '10.1.0.77/32');
  assert.equal(v4Network('10.255.3.4/9'), '10.128.0.0/9');
  assert.equal(v6Network('2001:db8:1::a/64'), '2001:db8:1:0:0:0:0:0/64');
  assert.equal(v6Network('2001:db8:1:ff::a/56'), '2001:db8:1:0:0:0:0:0/56');
  assert.throws(() => v4Network('10.1.0/24'), /invalid IPv4/);
});

test('prefixes', () => {
  assert.match(randomPrefix(), /^pl[0-9a-f]{4}$/);
  assert.equal(checkPrefix('plab'), 'plab');
  assert.throws(() => checkPrefix('-rf'), /invalid lab prefix/);
  assert.throws(() => checkPrefix(''), /invalid lab prefix/);
});

const SAVE = (deny: number, eg: number, spoof: number) => `*filter
:FORWARD DROP [0:0]
:i-2-7-def - [0:0]
:i-2-7-VM-eg - [0:0]
:i-2-8-def - [0:0]
[0:0] -A i-2-7-def -m physdev --physdev-in vnet0 --physdev-is-bridged -m set ! --match-set i-2-7-VM4 src -m comment --comment "pal:n0.spoof" -j DROP
[${spoof}:0] -A i-2-7-def -m physdev --physdev-in vnet0 --physdev-is-bridged -p udp -m udp --sport 67 -m comment --comment "pal:n0.dhcps" -j DROP
[${eg}:0] -A i-2-7-VM-eg -m comment --comment "pal:deny" -j DROP
[${deny}:0] -A i-2-8-def -m physdev --physdev-out vnet1 --physdev-is-bridged -m comment --comment "pal:n0.deny" -j DROP
[5:300] -A i-2-8-def -m physdev --physdev-out vnet1 --physdev-is-bridged -j ACCEPT
COMMIT
`;

test('drop attribution: destination ingress, source egress, source anti-spoofing, nothing', () => {
  const a = { name: 'web', instanceName: 'i-2-7-VM' };
  const b = { name: 'db', instanceName: 'i-2-8-VM' };
  const base = parseDropCounters(SAVE(3, 0, 0));
  assert.equal(base.size, 5, 'four DROP rules and one DROP policy');
  const ingress = dropDelta(base, parseDropCounters(SAVE(5, 0, 0)));
  assert.deepEqual(ingress.map((d) => [d.chain, d.side, d.packets]), [['filter:i-2-8-def', 'to', 2]]);
  assert.equal(explainDrops(ingress, a, b), "dropped by db's ingress rules (i-2-8-def pal:n0.deny)");
  assert.equal(explainDrops(dropDelta(base, parseDropCounters(SAVE(3, 1, 0))), a, b), "dropped by web's egress rules (i-2-7-VM-eg pal:deny)");
  assert.equal(explainDrops(dropDelta(base, parseDropCounters(SAVE(3, 0, 1))), a, b), "dropped by web's anti-spoofing rules (i-2-7-def pal:n0.dhcps)");
  assert.equal(explainDrops(dropDelta(base, parseDropCounters(SAVE(3, 0, 0))), a, b), 'no firewall rule counted a drop (nothing answered)');
  assert.equal(explainDrops(ingress, { name: 'outside', instanceName: null }, { name: 'x', instanceName: 'i-9-9-VM' }), 'dropped by chain i-2-8-def pal:n0.deny');
});

test('drop attribution with the drop log on: the jump into a log chain is the drop point; the log chain\'s own drop is not counted twice', () => {
  const ipt = (n: number) => `*filter
:PDL-t-ingress-default-deny - [0:0]
[${n}:0] -A i-2-8-def -m physdev --physdev-out vnet1 --physdev-is-bridged -m comment --comment "pal:n0.deny" -j PDL-t-ingress-default-deny
[${n}:0] -A PDL-t-ingress-default-deny -j DROP
[7:0] -A i-2-8-def -j ACCEPT
COMMIT
`;
  const a = { name: 'web', instanceName: 'i-2-7-VM' };
  const b = { name: 'db', instanceName: 'i-2-8-VM' };
  assert.equal(explainDrops(dropDelta(parseDropCounters(ipt(1)), parseDropCounters(ipt(3))), a, b), "dropped by db's ingress rules (i-2-8-def pal:n0.deny)");
  assert.equal(explainDrops(dropDelta(parseDropCounters(ipt(1)), parseDropCounters(ipt(1))), a, b), 'no firewall rule counted a drop (nothing answered)');
  const nft = (n: number) => [{ family: 'inet', json: JSON.stringify({ nftables: [
    { rule: { family: 'inet', table: 'palisade', chain: 'to-i-2-8-VM', handle: 7, comment: 'pal:deny !ingress-default-deny', expr: [{ counter: { packets: n, bytes: 0 } }, { goto: { target: 'dl-t-ingress-default-deny' } }] } },
    { rule: { family: 'inet', table: 'palisade', chain: 'dl-t-ingress-default-deny', handle: 9, comment: 'pal:drop', expr: [{ counter: { packets: n, bytes: 0 } }, { drop: null }] } },
    { rule: { family: 'inet', table: 'palisade', chain: 'to-i-2-8-VM', handle: 8, comment: 'pal:r1.i4.c0', expr: [{ counter: { packets: 50, bytes: 0 } }, { goto: { target: 'accept-x' } }] } },
  ] }) }];
  const delta = dropDelta(parseNftDropCounters(nft(1)), parseNftDropCounters(nft(4)));
  assert.deepEqual(delta.map((d) => [d.chain, d.packets]), [['inet:to-i-2-8-VM', 3]]);
  assert.equal(explainDrops(delta, a, b), "dropped by db's ingress rules (to-i-2-8-VM ingress-default-deny)");
});

test('lab argument parsing', () => {
  assert.deepEqual(parseLabArgs(['vm', 'add', 'web1', 'host=h1', 'groups=a,b', '--state-dir', '/x', '--json'], ['state-dir']), {
    pos: ['vm', 'add', 'web1'], kv: { host: 'h1', groups: 'a,b' }, flags: { 'state-dir': '/x', json: true },
  });
  assert.deepEqual(parseLabArgs(['up', '--port=0'], ['port']).flags, { port: '0' });
  assert.throws(() => parseLabArgs(['up', '--port'], ['port']), /--port needs a value/);
});

test('drop attribution on the nftables backend: per-VM chains by instance, shared bridge chains by side, reasons from comments', async () => {
  const { parseNftDropCounters } = await import('../../src/lab/verdict.js');
  const table = (family: string, drops: [string, string, number][]) => ({ family, json: JSON.stringify({ nftables: drops.map(([chain, comment, packets], handle) => (
    { rule: { family, table: 'palisade', chain, handle, comment, expr: [{ counter: { packets, bytes: 0 } }, { drop: null }] } })) }) });
  const at = (n: number, m: number, o: number) => parseNftDropCounters([
    table('inet', [['to-i-2-8-VM', 'pal:deny !ingress-default-deny', n], ['from-i-2-7-VM', 'pal:deny !egress-default-deny', m]]),
    table('bridge', [['vm-ip4', 'pal:spoof !spoof-ip', o]]),
  ]);
  const base = at(1, 1, 1);
  const web = { name: 'web', instanceName: 'i-2-7-VM' };
  const db = { name: 'db', instanceName: 'i-2-8-VM' };
  assert.equal(explainDrops(dropDelta(base, at(2, 1, 1)), web, db), "dropped by db's ingress rules (to-i-2-8-VM ingress-default-deny)");
  assert.equal(explainDrops(dropDelta(base, at(1, 3, 1)), web, db), "dropped by web's egress rules (from-i-2-7-VM egress-default-deny)");
  assert.equal(explainDrops(dropDelta(base, at(1, 1, 2)), web, db), "dropped by web's anti-spoofing rules (vm-ip4 spoof-ip)");
  assert.equal(explainDrops(dropDelta(base, at(1, 1, 1)), web, db), 'no firewall rule counted a drop (nothing answered)');
});
