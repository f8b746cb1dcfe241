// Unit tests of the pure iptables renderer, names, kernel-state parsing/diff and port discovery.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { render, protoMatch, assignPorts, portTree } from '../../src/dataplane/iptables/render.js';
import { vmNames, ebBase, groupSetName } from '../../src/dataplane/iptables/names.js';
import { linkLocalFromMac, tapMac } from '../../src/dataplane/iptables/addr.js';
import { expectedState, gcPlan, lineDigest, parseIptSave, parseIpsetSave, parseEbSave, plan, planIsEmpty, drift } from '../../src/dataplane/iptables/kernel.js';
import { portsFromLinks } from '../../src/dataplane/ports.js';
import type { HostPorts } from '../../src/dataplane/backend.js';
import { hostState, nic, rule, vm } from './fixtures.js';

const ports = (nics: Record<string, [string, string]>, bridges: HostPorts['bridges'] = {}): HostPorts => ({
  nics: Object.fromEntries(Object.entries(nics).map(([k, [device, bridge]]) => [k, { device, bridge }])),
  bridges: { cloudbr0: { uplinks: ['eth0'], unknownTaps: [] }, ...bridges },
});

const A = vm('vm-a', 'i-2-7-VM', [nic('nic-a', '02:00:4c:5f:00:01', ['10.1.1.55', '10.1.1.56'], ['fd00::55'])],
  { ingress: [rule('tcp', ['10.0.0.0/8', '192.168.1.5/32'], { ports: [80, 443], id: 'web' }), rule('icmp', ['0.0.0.0/0'], { icmp: [8, -1], id: 'ping' })] },
  { ingress: [rule('icmp', ['::/0'], { icmp: [128, 0], id: 'ping6' })], egress: [rule('udp', ['::/0'], { ports: [123, 123], id: 'ntp6' })] });

test('CloudStack names and truncation', () => {
  assert.deepEqual(vmNames('i-2-7-VM'), { vm: 'i-2-7-VM', eg: 'i-2-7-VM-eg', def: 'i-2-7-def', set4: 'i-2-7-VM', set6: 'i-2-7-VM-6' });
  const long = vmNames('i-1234567-123456789-abcdefghij');
  assert.equal(long.vm, 'i-1234567-123456789-abcd'); // >25 chars → first 24
  assert.ok(long.eg.length <= 28 && long.def.length <= 28 && long.set4.length <= 31 && long.set6.length <= 31);
  assert.equal(ebBase('i-2-7-VM', 0), 'i-2-7-VM');
  assert.equal(ebBase('i-2-7-VM', 1), 'i-2-7-VM-1');
  assert.ok(ebBase('i-1234567-123456789-abcdefghij', 1).length <= 22);
  assert.equal(groupSetName('sg12v4'), 'pal-sg12v4');
  assert.ok(groupSetName('x'.repeat(40)).length <= 31);
  assert.notEqual(groupSetName('a b'), 'pal-a b');
});

test('port numbers are stable, distinct and avoid the reserved values', () => {
  const devs = Array.from({ length: 600 }, (_, i) => `vnet${i}`);
  const m = assignPorts(devs);
  const vals = [...m.values()];
  assert.equal(new Set(vals).size, 600);
  assert.ok(vals.every((v) => v >= 1 && v <= 0x7fc));
  // adding a device keeps the others' numbers unless it collides
  const m2 = assignPorts([...devs, 'vnet999']);
  const moved = devs.filter((d) => m.get(d) !== m2.get(d));
  assert.ok(moved.length <= 1, moved.join());
});

test('EUI-64 link-local and tap MAC', () => {
  assert.equal(linkLocalFromMac('02:00:4c:5f:00:01'), 'fe80::4cff:fe5f:1');
  assert.equal(linkLocalFromMac('52:54:00:12:34:56'), 'fe80::5054:ff:fe12:3456');
  assert.equal(tapMac('52:54:00:12:34:56'), 'fe:54:00:12:34:56');
});

test('protocol matches: ports, ICMP(v6) type/code, all, numbers', () => {
  assert.equal(protoMatch(4, rule('tcp', [], { ports: [80, 80] })), '-p tcp -m tcp --dport 80');
  assert.equal(protoMatch(4, rule('udp', [], { ports: [1000, 2000] })), '-p udp -m udp --dport 1000:2000');
  assert.equal(protoMatch(4, rule('tcp', [], { ports: [0, 65535] })), '-p tcp');
  assert.equal(protoMatch(4, rule('icmp', [], { icmp: [8, 0] })), '-p icmp -m icmp --icmp-type 8/0');
  assert.equal(protoMatch(4, rule('icmp', [], { icmp: [3, -1] })), '-p icmp -m icmp --icmp-type 3');
  assert.equal(protoMatch(4, rule('icmp', [], { icmp: [-1, -1] })), '-p icmp');
  assert.equal(protoMatch(6, rule('icmp', [], { icmp: [128, 0] })), '-p ipv6-icmp -m icmp6 --icmpv6-type 128/0');
  assert.equal(protoMatch(6, rule('icmp', [], { icmp: [-1, -1] })), '-p ipv6-icmp');
  assert.equal(protoMatch(4, rule('all', [])), '');
  assert.equal(protoMatch(4, rule(47, [])), '-p 47');
});

test('render: chains, dispatch, hooks and comments on every rule', () => {
  const out = render({ state: hostState([A]), ports: ports({ 'nic-a': ['vnet3', 'cloudbr0'] }) });
  assert.deepEqual(out.vmErrors, {});
  assert.deepEqual(out.programmed, ['vm-a']);
  const v4 = out.iptables;
  for (const c of ['i-2-7-def', 'i-2-7-VM', 'i-2-7-VM-eg', 'BF-cloudbr0', 'BF-cloudbr0-IN', 'BF-cloudbr0-OUT']) assert.match(v4, new RegExp(`^:${c} - \\[0:0\\]$`, 'm'));
  assert.match(v4, /^-I FORWARD 1 -i cloudbr0 -m physdev --physdev-is-bridged -m comment --comment "pal:fwd\.cloudbr0\.[0-9a-f]+" -j BF-cloudbr0$/m);
  // dispatch by port marks set in mangle from hash:net,iface sets keyed on the bridge port
  const k = assignPorts(['vnet3']).get('vnet3')!;
  assert.match(v4, new RegExp(`^-A BF-cloudbr0-IN -m mark --mark 0x${(k << 16).toString(16)}/0x7ff0000 -m comment --comment "pal:vm\\.vnet3" -g i-2-7-def$`, 'm'));
  assert.match(v4, new RegExp(`^-A BF-cloudbr0-OUT -m mark --mark 0x${k.toString(16)}/0x7ff .*-j i-2-7-def$`, 'm'));
  assert.match(v4, /^-A BF-cloudbr0 -m mark --mark 0x7fd\/0x7ff .*-j ACCEPT$/m);
  assert.match(v4, /^-A BF-cloudbr0-IN -m mark --mark 0x0\/0x7ff0000 .*-j DROP$/m); // unmarked port: fail closed
  // marks come from ebtables (native interface matches): in-port in nat PREROUTING, out-port in filter FORWARD
  assert.match(out.ebtables, new RegExp(`^-A i-2-7-VM-in -j mark --mark-or 0x${(k << 16).toString(16)} --mark-target CONTINUE$`, 'm'));
  assert.match(out.ebtables, new RegExp(`^-A PALISADE-FWD -o vnet3 -j mark --mark-or 0x${k.toString(16)} --mark-target RETURN$`, 'm'));
  assert.match(out.ebtables, /^-A PALISADE-PRE -i eth0 -j PALISADE-ZU-cloudbr0$/m);
  assert.match(out.ebtables, /^-A PALISADE-ZU-cloudbr0 -j mark --mark-or 0x7fd0000 --mark-target CONTINUE$/m);
  // conntrack zones: from the VM, the bridge's zone when straight to a VM on it, else the port's;
  // from the uplink, the destination VM port's (by MAC); raw PREROUTING turns the mark into the zone
  assert.match(out.ebtables, /^-A i-2-7-VM-in -j PALISADE-ZL-cloudbr0$/m);
  assert.match(out.ebtables, new RegExp(`^-A i-2-7-VM-in --mark 0x0/0xfff -j mark --mark-or 0x${k.toString(16)} --mark-target CONTINUE$`, 'm'));
  assert.match(out.ebtables, /^-A PALISADE-ZL-cloudbr0 --among-dst 2:0:4c:5f:0:1 -j mark --mark-or 0x[89a-f][0-9a-f]{2} --mark-target RETURN$/m);
  assert.match(out.ebtables, new RegExp(`^-A PZ-cloudbr0 -d 02:00:4c:5f:00:01 -j mark --mark-or 0x${k.toString(16)} --mark-target RETURN$`, 'm'));
  assert.match(v4, /^-A PALISADE-RAW -m mark ! --mark 0x0\/0xfff -m addrtype ! --dst-type LOCAL .*-j CT --zone mark$/m);
  assert.match(out.ip6tables, /^-I PREROUTING 1 -m comment --comment "pal:raw\.[0-9a-f]+" -j PALISADE-RAW$/m);
  assert.match(out.ebtables, /^\*filter\n:PALISADE-FWD ACCEPT$/m);
  assert.match(out.ebtables, /^-I FORWARD 1 -j PALISADE-FWD$/m);
  assert.match(v4, /^-A i-2-7-VM -s 10\.0\.0\.0\/8 -p tcp -m tcp --dport 80:443 -m comment --comment "pal:web\.c0 #[0-9a-f]{12}" -j ACCEPT$/m);
  assert.match(v4, /^-A i-2-7-VM -s 192\.168\.1\.5\/32 -p tcp -m tcp --dport 80:443 -m comment --comment "pal:web\.c1" -j ACCEPT$/m);
  // egress open in v4: the egress chain returns; no NOTRACK anywhere
  assert.match(v4, /^-A i-2-7-VM-eg -m comment --comment "pal:open #[0-9a-f]+" -j RETURN$/m);
  assert.doesNotMatch(v4, /--notrack/);
  // from-VM rules never ACCEPT (the destination's ingress must still decide)
  for (const l of v4.split('\n').filter((x) => x.includes('--physdev-in vnet3') && x.startsWith('-A i-2-7-def'))) assert.doesNotMatch(l, /-j ACCEPT/);
  // every -A/-I line carries a pal: comment
  for (const text of [out.iptables, out.ip6tables]) {
    for (const l of text.split('\n').filter((x) => /^-[AI] /.test(x))) assert.match(l, /--comment "pal:[^"]+"/, l);
  }
  // v6: restricted egress ends in DROP, ICMPv6 rule, ND and link-local handling
  assert.match(out.ip6tables, /^-A i-2-7-VM-eg -d ::\/0 -p udp -m udp --dport 123 .*-j RETURN$/m);
  assert.match(out.ip6tables, /^-A i-2-7-VM-eg -m comment --comment "pal:deny" -j DROP$/m);
  assert.match(out.ip6tables, /^-A i-2-7-VM -s ::\/0 -p ipv6-icmp -m icmp6 --icmpv6-type 128\/0 /m);
  // the IPv6 baseline is shared up to what needs the NIC's own addresses (no RAs from VMs); verdicts come back as a mark
  assert.match(out.ip6tables, /^-A i-2-7-def -m physdev --physdev-in vnet3 .*-j PALISADE-V6-PRE$/m);
  assert.match(out.ip6tables, /^-A i-2-7-def -m physdev --physdev-in vnet3 -m mark --mark 0x8000000\/0x8000000 .*-j RETURN$/m);
  // DAD from :: only for the NIC's own addresses (the target read by u32, one rule per address), else dropped
  assert.match(out.ip6tables, /^-A i-2-7-def -m physdev --physdev-in vnet3 -s ::\/128 -p ipv6-icmp -m icmp6 --icmpv6-type 135 -m hl --hl-eq 255 -m u32 --u32 "0x4&0xff00=0x3a00&&0x30=0xfd000000&&0x34=0x0&&0x38=0x0&&0x3c=0x55" .*-j RETURN$/m);
  assert.match(out.ip6tables, /^-A i-2-7-def -m physdev --physdev-in vnet3 -s ::\/128 -p ipv6-icmp -m icmp6 --icmpv6-type 135 .*pal:n0.dadx.*-j DROP$/m);
  assert.match(out.ip6tables, /^-A PALISADE-V6-PRE -p ipv6-icmp -m icmp6 --icmpv6-type 134 .*-j DROP$/m);
  // own-address sets, incl. secondary and EUI-64 link-local
  assert.match(out.ipset, /^create i-2-7-VM hash:ip family inet comment -exist$/m);
  assert.match(out.ipset, /^add i-2-7-VM 10\.1\.1\.56 -exist$/m);
  assert.match(out.ipset, /^add i-2-7-VM-6 fe80::4cff:fe5f:1 -exist$/m);
  assert.match(out.ipset, /^add i-2-7-VM-6 fd00::55 -exist$/m);
  // ebtables: MAC pin, ARP per own IPv4, hooks
  assert.match(out.ebtables, /^-A i-2-7-VM-in -s ! 02:00:4c:5f:00:01 -j DROP$/m);
  assert.match(out.ebtables, /^-A i-2-7-VM-in -j PALISADE-L2-IN$/m);
  assert.match(out.ebtables, /^-A PALISADE-L2-IN -p IPv6 --ip6-proto ipv6-icmp --ip6-icmp-type router-advertisement -j DROP$/m);
  assert.match(out.ebtables, /^-A i-2-7-VM-in-ips -p ARP --arp-ip-src 10\.1\.1\.56 --arp-mac-src 02:00:4c:5f:00:01 -j RETURN$/m);
  assert.match(out.ebtables, /^-A PALISADE-PRE -i vnet3 -j i-2-7-VM-in$/m);
  assert.match(out.ebtables, /^-I PREROUTING 1 -j PALISADE-PRE$/m);
});

test('render: referenced groups use shared sets; missing ones are created empty (fail closed)', () => {
  const B = vm('vm-b', 'i-2-8-VM', [nic('nic-b', '02:00:00:00:00:08', ['10.1.1.8'])],
    { ingress: [rule('tcp', [], { ports: [5432, 5432], sets: ['sg3v4', 'sg9v4'], id: 'db' })] });
  const out = render({ state: hostState([B], [{ id: 'sg3v4', family: 4, members: ['10.2.0.2', '10.2.0.1'] }]), ports: ports({ 'nic-b': ['vnet0', 'cloudbr0'] }) });
  assert.match(out.iptables, /^-A i-2-8-VM -m set --match-set pal-sg3v4 src -p tcp -m tcp --dport 5432 .*-j ACCEPT$/m);
  assert.match(out.ipset, /^create pal-sg3v4 hash:ip family inet comment -exist\nadd pal-sg3v4 10\.2\.0\.1 -exist\nadd pal-sg3v4 10\.2\.0\.2 -exist$/m);
  assert.match(out.ipset, /^create pal-sg9v4 hash:ip family inet comment -exist$/m);
});

test('render: missing NIC port is an error for that VM, not a guess; unknown taps fail closed', () => {
  const B = vm('vm-b', 'i-2-8-VM', [nic('nic-b', '02:00:00:00:00:08', ['10.1.1.8'])]);
  const out = render({ state: hostState([A, B]), ports: ports({ 'nic-a': ['vnet3', 'cloudbr0'] }, { cloudbr0: { uplinks: ['eth0'], unknownTaps: ['vnet9'] } }) });
  assert.match(out.vmErrors['vm-b'], /NIC port not found on host: nic-b/);
  assert.equal(out.vmErrors['vm-a'], undefined);
  assert.doesNotMatch(out.iptables, /i-2-8/);
  assert.match(out.ebtables, /^-A PALISADE-FWD -o vnet9 -j mark --mark-or 0x7ff --mark-target RETURN$/m);
  assert.match(out.iptables, /^-A BF-cloudbr0-IN -m mark --mark 0x7ff0000\/0x7ff0000 .*-j DROP$/m);
  assert.match(out.iptables, /^-A BF-cloudbr0-OUT -m mark --mark 0x7ff\/0x7ff .*-j DROP$/m);
  assert.match(out.ebtables, /^-A PALISADE-PRE -i vnet9 -j DROP$/m);
});

test('render: NOTRACK only for families with notrack, excluding tracked local VMs', () => {
  const N = vm('vm-n', 'i-2-9-VM', [nic('nic-n', '02:00:00:00:00:09', ['10.1.1.9'], ['fd00::9'])],
    { ingress: [rule('all', ['0.0.0.0/0'])], egress: [rule('all', ['0.0.0.0/0'])], notrack: true });
  const out = render({ state: hostState([A, N]), ports: ports({ 'nic-a': ['vnet3', 'cloudbr0'], 'nic-n': ['vnet4', 'cloudbr0'] }) });
  assert.match(out.iptables, /^\*raw$/m);
  assert.match(out.iptables, /^-A PALISADE-RAW -m set --match-set palisade-nt4 src -m set ! --match-set palisade-tr4 dst .*-j CT --notrack$/m);
  assert.match(out.iptables, /^-I PREROUTING 1 -m comment --comment "pal:raw\.[0-9a-f]+" -j PALISADE-RAW$/m);
  // NOTRACK comes before the zone (the first CT target wins)
  assert.match(out.iptables, /pal:nt\.dst[^\n]*\n-A PALISADE-RAW [^\n]*pal:zone/);
  assert.doesNotMatch(out.ip6tables, /--notrack/);
  assert.match(out.ipset, /^add palisade-nt4 10\.1\.1\.9 -exist$/m);
  assert.match(out.ipset, /^add palisade-tr4 10\.1\.1\.55 -exist$/m);
});

test('render is deterministic; an empty host renders only the fail-closed ebtables baseline for unknown taps', () => {
  const input = { state: hostState([A]), ports: ports({ 'nic-a': ['vnet3', 'cloudbr0'] }) };
  assert.deepEqual(render(input), render(input));
  const empty = render({ state: hostState([]), ports: { nics: {}, bridges: {} } });
  assert.equal(empty.iptables + empty.ip6tables + empty.ipset, '');
  assert.match(empty.ebtables, /^-A PALISADE-PRE -i vnet\+ --mark 0x0\/0x7ff0000 -j DROP$/m);
  assert.match(empty.ebtables, /^-A PALISADE-FWD -o vnet\+ --mark 0x0\/0x7ff -j DROP$/m);
  assert.match(empty.ebtables, /^-I PREROUTING 1 -j PALISADE-PRE$/m);
  assert.match(empty.ebtables, /^-I FORWARD 1 -j PALISADE-FWD$/m);
  // a bridge carrying only unknown taps (no VM placed yet) is hooked and fails closed
  const lone = render({ state: hostState([]), ports: { nics: {}, bridges: { cloudbr0: { uplinks: ['eth0'], unknownTaps: ['vnet0'] } } } });
  assert.match(lone.iptables, /^-I FORWARD 1 -i cloudbr0 -m physdev --physdev-is-bridged .*-j BF-cloudbr0$/m);
  assert.match(lone.iptables, /^-A BF-cloudbr0-IN -m mark --mark 0x0\/0x7ff0000 .*-j DROP$/m);
  assert.match(lone.ebtables, /^-A PALISADE-PRE -i vnet0 -j DROP$/m);
});

test('render: BF-<br>-IN dispatches by goto and ends in DROP; routed and INPUT paths are hooked', () => {
  const out = render({ state: hostState([A]), ports: ports({ 'nic-a': ['vnet3', 'cloudbr0'] }) });
  assert.match(out.iptables, /^-A BF-cloudbr0-IN -m mark --mark 0x[0-9a-f]+\/0x7ff0000 .*-g i-2-7-def$/m);
  assert.match(out.iptables, /^-A BF-cloudbr0-IN -m mark --mark 0x7fd0000\/0x7ff0000 .*-j RETURN$/m);
  assert.match(out.iptables, /^-A BF-cloudbr0-IN -m comment --comment "pal:end" -j DROP$/m);
  assert.match(out.iptables, /^-A BF-cloudbr0-OUT -m comment --comment "pal:end" -j RETURN$/m);
  assert.match(out.iptables, /^-I FORWARD 1 -i cloudbr0 -m physdev ! --physdev-is-bridged .*-j BF-cloudbr0-IN$/m);
  assert.match(out.iptables, /^-I FORWARD 1 -o cloudbr0 -m physdev ! --physdev-is-bridged .*-j DROP$/m);
  assert.match(out.iptables, /^-I INPUT 1 -i cloudbr0 .*-j BF-cloudbr0-IN$/m);
  // DHCP client: only 0.0.0.0 → broadcast before the anti-spoofing rule
  assert.match(out.iptables, /^-A i-2-7-def -m physdev --physdev-in vnet3 -s 0\.0\.0\.0\/32 -d 255\.255\.255\.255\/32 -p udp -m udp --sport 68 --dport 67 .*-j RETURN$/m);
  // IPv6 NA only for the NIC's own addresses (u32 on the target), others dropped
  assert.match(out.ip6tables, /pal:n0\.na0" -j RETURN$/m);
  assert.match(out.ip6tables, /--u32 "0x4&0xff00=0x3a00&&0x30=0xfe800000&&0x34=0x0&&/);
  assert.match(out.ip6tables, /^-A i-2-7-def -m physdev --physdev-in vnet3 -p ipv6-icmp -m icmp6 --icmpv6-type 136 .*pal:n0\.nax" -j DROP$/m);
  assert.doesNotMatch(out.ip6tables, /PALISADE-V6-POST .*--icmpv6-type 136/);
});

test('plan: nothing to write when the kernel matches; one chain when one rule changes; elements only on membership change', () => {
  const sets = [{ id: 'sg3v4', family: 4 as const, members: ['10.2.0.1'] }];
  const B = (rules: ReturnType<typeof rule>[]) => vm('vm-b', 'i-2-8-VM', [nic('nic-b', '02:00:00:00:00:08', ['10.1.1.8'])], { ingress: rules });
  const p = { 'nic-b': ['vnet0', 'cloudbr0'] as [string, string] };
  const base = render({ state: hostState([B([rule('tcp', [], { ports: [22, 22], sets: ['sg3v4'], id: 'ssh' })])], sets), ports: ports(p) });
  const k = expectedState(base.program);
  assert.ok(planIsEmpty(plan(base.program, k)));
  const changed = render({ state: hostState([B([rule('tcp', [], { ports: [23, 23], sets: ['sg3v4'], id: 'telnet' })])], sets), ports: ports(p) });
  const pl = plan(changed.program, k);
  assert.equal(pl.ipsetPre + pl.ebtables + pl.iptables[6] + pl.ipsetPost, '');
  // the changed chain is rewritten by inserting the new version above the old one (no deletions on
  // the change's path); the old rules, unreachable below the new catch-all, are garbage for gcPlan
  assert.deepEqual(pl.iptables[4].split('\n').filter((l) => l.startsWith(':')), []);
  assert.deepEqual(pl.iptables[4].split('\n').filter((l) => l.startsWith('-')).map((l) => l.split(' -m comment')[0].replace(/ -p .*/, '')),
    ['-I i-2-8-VM 1', '-I i-2-8-VM 1 -m set --match-set pal-sg3v4 src']);
  assert.match(pl.iptables[4], /-I i-2-8-VM 1 -m comment --comment "pal:end" -j RETURN\n-I i-2-8-VM 1 .*"pal:telnet\.s0 #[0-9a-f]{12}"/);
  assert.deepEqual([...pl.shadowed[4]], [['filter/i-2-8-VM', 2]]);
  const k2 = expectedState(changed.program, pl.shadowed);
  assert.ok(planIsEmpty(plan(changed.program, k2)));
  // later, off the change's path: the chain is flushed and written again (no positions involved)
  const gc = gcPlan(k2, changed.program);
  assert.deepEqual(gc.done, ['4/filter/i-2-8-VM']);
  assert.match(gc.texts[4], /^\*filter\n:i-2-8-VM - \[0:0\]\n-A i-2-8-VM .*"pal:telnet\.s0 #[0-9a-f]{12}" -j ACCEPT\n-A i-2-8-VM -m comment --comment "pal:end" -j RETURN\nCOMMIT\n$/);
  assert.equal(gc.texts[6], '');
  assert.deepEqual(gcPlan(k2, base.program).done, [], 'only chains whose live rules are the program\'s');
  // read back: the second rule carrying a chain hash starts the garbage
  const saved = parseIptSave(['*filter', ':i-2-8-VM - [0:0]',
    '-A i-2-8-VM -p tcp -m comment --comment "pal:telnet.s0 #aaaaaaaaaaaa" -j ACCEPT', '-A i-2-8-VM -m comment --comment "pal:end" -j RETURN',
    '-A i-2-8-VM -p tcp -m comment --comment "pal:ssh.s0 #bbbbbbbbbbbb" -j ACCEPT', '-A i-2-8-VM -m comment --comment "pal:end" -j RETURN', 'COMMIT'].join('\n'));
  assert.deepEqual(saved.filter.chains.get('i-2-8-VM'), { name: 'i-2-8-VM', owned: true, ids: ['telnet.s0', 'end'], hash: 'aaaaaaaaaaaa', foreign: 0, garbage: 2,
    lines: ['-A i-2-8-VM -p tcp -m comment --comment "pal:telnet.s0 #aaaaaaaaaaaa" -j ACCEPT', '-A i-2-8-VM -m comment --comment "pal:end" -j RETURN'].map(lineDigest) });
  // chains with jumps (dispatch, default chains) are flushed and rewritten: no stale jump may keep a
  // chain referenced that the same transaction deletes
  const C = vm('vm-c', 'i-2-9-VM', [nic('nic-c', '02:00:00:00:00:09', ['10.1.1.9'])]);
  const more = plan(render({ state: hostState([B([rule('tcp', [], { ports: [22, 22], sets: ['sg3v4'], id: 'ssh' })]), C], sets), ports: ports({ ...p, 'nic-c': ['vnet1', 'cloudbr0'] }) }).program, k);
  assert.match(more.iptables[4], /^:BF-cloudbr0-IN - \[0:0\]$/m);
  assert.doesNotMatch(more.iptables[4], /^-I BF-cloudbr0-IN /m);
  const member = render({ state: hostState([B([rule('tcp', [], { ports: [22, 22], sets: ['sg3v4'], id: 'ssh' })])], [{ ...sets[0], members: ['10.2.0.1', '10.2.0.2'] }]), ports: ports(p) });
  const pm = plan(member.program, k);
  assert.equal(pm.ipsetPre, 'add pal-sg3v4 10.2.0.2 -exist\n');
  assert.equal(pm.iptables[4] + pm.iptables[6] + pm.ebtables + pm.ipsetPost, '');
  // removing everything: chains flushed and deleted, hooks deleted, sets destroyed after
  const gone = plan({ v4: { chains: [], hooks: [] }, v6: { chains: [], hooks: [] }, sets: [], eb: { chains: [], hooks: [] } }, k);
  assert.match(gone.iptables[4], /^-D FORWARD .*pal:fwd\.cloudbr0/m);
  assert.match(gone.iptables[4], /^-X i-2-8-def$/m);
  assert.match(gone.ipsetPost, /^destroy pal-sg3v4$/m);
  assert.match(gone.ebtables, /^-D PREROUTING -j PALISADE-PRE$/m);
});

test('kernel parsers: ownership by pal: comments / comment-flagged sets / reachability; drift', () => {
  const save = [
    '*filter', ':INPUT ACCEPT [0:0]', ':FORWARD ACCEPT [0:0]', ':FOREIGN - [0:0]', ':i-2-8-VM - [0:0]',
    '-A FORWARD -i cloudbr0 -m physdev --physdev-is-bridged -m comment --comment "pal:fwd.cloudbr0.abc" -j BF-cloudbr0',
    '-A FORWARD -j FOREIGN', '-A FOREIGN -s 1.2.3.4/32 -j DROP',
    '-A i-2-8-VM -p tcp -m comment --comment "pal:x.c0 #0123456789ab" -j ACCEPT', '-A i-2-8-VM -m comment --comment pal:end -j RETURN', 'COMMIT',
  ].join('\n');
  const t = parseIptSave(save);
  assert.equal(t.filter.chains.get('FOREIGN')!.owned, false);
  assert.deepEqual(t.filter.chains.get('i-2-8-VM'), { name: 'i-2-8-VM', owned: true, ids: ['x.c0', 'end'], hash: '0123456789ab', foreign: 0, garbage: 0,
    lines: ['-A i-2-8-VM -p tcp -m comment --comment "pal:x.c0 #0123456789ab" -j ACCEPT', '-A i-2-8-VM -m comment --comment pal:end -j RETURN'].map(lineDigest) });
  assert.equal(t.filter.hooks[0].pos, 0);
  assert.deepEqual(t.filter.hooks.map((h) => h.id), ['fwd.cloudbr0.abc']);
  const sets = parseIpsetSave('create pal-sg1v4 hash:ip family inet hashsize 1024 maxelem 65536 comment bucketsize 12\nadd pal-sg1v4 10.0.0.1\ncreate mine hash:ip family inet hashsize 1024\ncreate i-1-1-VM hash:ip family inet hashsize 1024\n');
  assert.equal(sets.get('pal-sg1v4')!.owned, true);
  assert.deepEqual([...sets.get('pal-sg1v4')!.members], ['10.0.0.1']);
  assert.equal(sets.get('mine')!.owned, false);
  assert.equal(sets.get('i-1-1-VM')!.owned, false);
  const eb = parseEbSave('*nat\n:PREROUTING ACCEPT\n:POSTROUTING ACCEPT\n:PALISADE-PRE ACCEPT\n:x-in ACCEPT\n:other ACCEPT\n-A PREROUTING -j PALISADE-PRE\n-A PREROUTING -j other\n-A PALISADE-PRE -i vnet0 -j x-in\n-A x-in -p IPv6 --ip6-proto ipv6-icmp --ip6-icmp-type 130/0:255 -j RETURN\n');
  assert.deepEqual([...eb.chains.keys()].sort(), ['nat/PALISADE-PRE', 'nat/x-in']);
  assert.deepEqual(eb.chains.get('nat/x-in'), ['-p IPv6 --ip6-proto ipv6-icmp --ip6-icmp-type 130/0:255 -j RETURN']);
  assert.deepEqual(eb.hooks, [{ table: 'nat', chain: 'PREROUTING', line: '-j PALISADE-PRE', pos: 0 }]);
  // drift of a desired program against an empty kernel lists missing chains, hooks and sets
  const out = render({ state: hostState([A]), ports: ports({ 'nic-a': ['vnet3', 'cloudbr0'] }) });
  const d = drift(out.program, { ipt: { 4: parseIptSave(''), 6: parseIptSave('') }, sets: new Map(), eb: { chains: new Map(), hooks: [] } });
  assert.ok(d.some((x) => x.kind === 'missing' && x.what === 'iptables filter chain i-2-7-def'));
  assert.ok(d.some((x) => x.kind === 'missing' && x.what === 'ipset i-2-7-VM-6'));
  assert.ok(d.some((x) => x.kind === 'missing' && x.what.startsWith('ebtables nat PREROUTING jump')));
  assert.deepEqual(drift(out.program, expectedState(out.program)), []);
});

test('port discovery: MAC convention, explicit device, unknown taps and uplinks', () => {
  const links = [
    { ifname: 'lo', address: '00:00:00:00:00:00' },
    { ifname: 'cloudbr0', address: '02:00:00:01:00:00' },
    { ifname: 'eth0', address: '02:00:00:01:00:01', master: 'cloudbr0' },
    { ifname: 'vnet0', address: 'fe:00:4c:5f:00:01', master: 'cloudbr0' },
    { ifname: 'vnet1', address: 'fe:00:00:00:00:99', master: 'cloudbr0' },
    { ifname: 'tap-x', address: 'fe:00:00:00:00:98', master: 'cloudbr0', linkinfo: { info_kind: 'tun', info_data: { type: 'tap' } } },
    { ifname: 'mydev', address: '0a:00:00:00:00:01', master: 'cloudbr1' },
    { ifname: 'eth1', address: '02:00:00:01:00:02', master: 'cloudbr1' },
  ];
  const state = hostState([
    vm('a', 'i-2-1-VM', [nic('n-a', '02:00:4c:5f:00:01', ['10.0.0.1']), { ...nic('n-b', '02:00:00:00:00:02', ['10.0.1.1'], [], 'mydev'), isDefault: false }]),
    vm('c', 'i-2-3-VM', [nic('n-c', '02:00:00:00:00:03', ['10.0.0.3'])]),
  ]);
  const p = portsFromLinks(links, state);
  assert.deepEqual(p.nics, { 'n-a': { device: 'vnet0', bridge: 'cloudbr0' }, 'n-b': { device: 'mydev', bridge: 'cloudbr1' } });
  assert.deepEqual(p.bridges, { cloudbr0: { uplinks: ['eth0'], unknownTaps: ['tap-x', 'vnet1'] }, cloudbr1: { uplinks: ['eth1'], unknownTaps: [] } });
  const q = portsFromLinks(links, state, { uplinks: { cloudbr1: [] } });
  assert.deepEqual(q.bridges.cloudbr1, { uplinks: [], unknownTaps: ['eth1'] });
  // no NIC placed (empty state, or the VM's tap not there at the last discovery): every bridge with a
  // tap-like port is still listed, so its taps fail closed; bridges without one (docker0) are left alone
  const more = [...links, { ifname: 'docker0' }, { ifname: 'veth1', address: '0a:00:00:00:00:07', master: 'docker0' }, { ifname: 'cloudbr2' }, { ifname: 'eth2', master: 'cloudbr2' }];
  assert.deepEqual(portsFromLinks(more, hostState([])).bridges, { cloudbr0: { uplinks: ['eth0'], unknownTaps: ['tap-x', 'vnet0', 'vnet1'] } });
  assert.deepEqual(Object.keys(portsFromLinks(more, hostState([]), { uplinks: { cloudbr2: ['eth2'] } }).bridges), ['cloudbr0', 'cloudbr2']);
});

test('port classification by what a device is: an fe: MAC alone never makes a rogue VM port (issue 8 item 10)', () => {
  const kind = (info_kind: string, type?: string) => ({ linkinfo: { info_kind, ...(type ? { info_data: { type } } : {}) } });
  const links = [
    { ifname: 'cloudbr0' },
    { ifname: 'vnet0', address: 'fe:00:4c:5f:00:01', master: 'cloudbr0', ...kind('tun', 'tap') },   // a known NIC's tap
    { ifname: 'eth0', address: 'fe:c0:1a:16:d4:e9', master: 'cloudbr0', ...kind('veth') },        // random-MAC veth uplink
    { ifname: 'vx42', address: 'fe:11:22:33:44:55', master: 'cloudbr0', ...kind('vxlan') },       // VXLAN uplink
    { ifname: 'bond0', address: 'fe:aa:bb:cc:dd:ee', master: 'cloudbr0', ...kind('bond') },
    { ifname: 'ovpn0', address: '0a:00:00:00:00:05', master: 'cloudbr0', ...kind('tun', 'tap') }, // someone's tap, not libvirt's MAC
    { ifname: 'guest7', address: 'fe:00:00:00:00:77', master: 'cloudbr0', ...kind('tun', 'tap') },// a VM tap we do not know
    { ifname: 'vnet9', address: '0a:00:00:00:00:09', master: 'cloudbr0', ...kind('veth') },       // libvirt's name (the lab's VMs are such veths)
    { ifname: 'docker0' },
    { ifname: 'veth1a', address: 'fe:01:02:03:04:05', master: 'docker0', ...kind('veth') },
  ];
  const state = hostState([vm('a', 'i-2-1-VM', [nic('n-a', '02:00:4c:5f:00:01', ['10.0.0.1'])])]);
  const p = portsFromLinks(links, state);
  assert.deepEqual(p.nics, { 'n-a': { device: 'vnet0', bridge: 'cloudbr0' } });
  assert.deepEqual(p.bridges, { cloudbr0: { uplinks: ['bond0', 'eth0', 'ovpn0', 'vx42'], unknownTaps: ['guest7', 'vnet9'] } });
  // a veth named like a libvirt tap with the guest's MAC convention is that VM's port (the lab's VMs)
  const lab = portsFromLinks([{ ifname: 'cloudbr0' }, { ifname: 'vnet3', address: 'fe:54:00:00:00:07', master: 'cloudbr0', ...kind('veth') }],
    hostState([vm('b', 'i-2-2-VM', [nic('n-b', '52:54:00:00:00:07', ['10.0.0.7'])])]));
  assert.deepEqual(lab.nics, { 'n-b': { device: 'vnet3', bridge: 'cloudbr0' } });
  // docker0's fe:-MAC veth does not make Palisade manage docker0
  assert.deepEqual(Object.keys(portsFromLinks(links, hostState([])).bridges), ['cloudbr0']);
});

test('ebtables port dispatch is a shallow prefix tree that reaches every port exactly once', () => {
  const ports: [string, string][] = [['eth0', '-j UP'], ...Array.from({ length: 500 }, (_, i) => [`vnet${i}`, `-j V${i}`] as [string, string])];
  const chains = portTree('nat', 'PALISADE-PRE', '-i', ports, ['-j mark --mark-and 0x0 --mark-target CONTINUE']);
  const byName = new Map(chains.map((c) => [c.name, c.rules]));
  assert.equal(byName.get('PALISADE-PRE')![0], '-j mark --mark-and 0x0 --mark-target CONTINUE');
  // walk the tree like the kernel does for each name: count rules met, check the action reached
  const walk = (name: string, dev: string, seen = { n: 0 }): string | null => {
    for (const rule of byName.get(name)!) {
      seen.n++;
      const m = /^-i (\S+) (.*)$/.exec(rule);
      if (!m) continue;
      const [pat, act] = [m[1], m[2]];
      const hit = pat.endsWith('+') ? dev.startsWith(pat.slice(0, -1)) : dev === pat;
      if (!hit) continue;
      const child = /^-j (PALISADE-PRE-\S+)$/.exec(act);
      if (child) { const r = walk(child[1], dev, seen); if (r) return r; continue; }
      return act;
    }
    return null;
  };
  let worst = 0;
  for (const [dev, act] of ports) {
    const seen = { n: 0 };
    assert.equal(walk('PALISADE-PRE', dev, seen), act, dev);
    worst = Math.max(worst, seen.n);
  }
  assert.ok(worst < 60, `worst case ${worst} rules`);
  assert.equal(walk('PALISADE-PRE', 'vnet9999'), null);
  for (const c of chains) assert.ok(c.name.length <= 31, c.name);
});

test('iptables mark dispatch is a tree of fixed depth: a packet meets a bounded number of rules whatever the number of VMs', () => {
  for (const n of [300, 2000]) markDispatch(n);
});

function markDispatch(n: number) {
  const vms = Array.from({ length: n }, (_, i) => vm(`v${i}`, `i-5-${i}-VM`, [nic(`n${i}`, `52:54:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`, [`10.9.${i >> 8}.${i & 255}`])]));
  const p: HostPorts = { nics: Object.fromEntries(vms.map((v, i) => [`n${i}`, { device: `vnet${i}`, bridge: 'cloudbr0' }])), bridges: { cloudbr0: { uplinks: ['eth0'], unknownTaps: [] } } };
  const out = render({ state: hostState(vms), ports: p });
  const chains = new Map(out.program.v4.chains.map((c) => [c.name, c.rules.map((x) => x.spec)]));
  const ports = assignPorts(Object.values(p.nics).map((x) => x.device));
  const hits = (spec: string, mark: number) => {
    const m = /-m mark --mark (0x[0-9a-f]+)\/(0x[0-9a-f]+)/.exec(spec);
    return !m || (mark & Number(m[2])) === Number(m[1]);
  };
  const walk = (name: string, mark: number, seen: { n: number }): string | null => {
    for (const spec of chains.get(name)!) {
      seen.n++;
      if (!hits(spec, mark)) continue;
      const j = /-[jg] (\S+)$/.exec(spec)![1];
      if (j.startsWith('BF-cloudbr0-IN-')) { const x = walk(j, mark, seen); if (x) return x; continue; }
      return j;
    }
    return null;
  };
  let worst = 0;
  for (let i = 0; i < n; i++) {
    const seen = { n: 0 };
    assert.equal(walk('BF-cloudbr0-IN', ports.get(`vnet${i}`)! << 16, seen), `i-5-${i}-def`);
    worst = Math.max(worst, seen.n);
  }
  assert.ok(worst <= 46, `${n} VMs: worst ${worst}`);
  assert.equal(walk('BF-cloudbr0-IN', 0, { n: 0 }), 'DROP');
  // a VM port mark with no entry (ebtables written, IP rules not yet): dropped, in every group
  const free = [...Array(0x7fc).keys()].map((x) => x + 1).filter((x) => ![...ports.values()].includes(x));
  for (const x of [free[0], free[free.length - 1]]) assert.equal(walk('BF-cloudbr0-IN', x << 16, { n: 0 }), 'DROP');
  assert.equal(walk('BF-cloudbr0-IN', 0x7fd << 16, { n: 0 }), 'RETURN');
  for (const c of out.program.v4.chains) assert.ok(c.name.length <= 28, c.name);
}

test('render: anti-spoofing per NIC — each NIC has its own address sets', () => {
  const T = vm('vm-t', 'i-2-12-VM', [
    nic('nic-t0', '02:00:00:00:00:20', ['10.1.1.20'], ['fd00::20']),
    { ...nic('nic-t1', '02:00:00:00:00:21', ['192.0.2.21'], ['fd01::21']), isDefault: false },
  ]);
  const out = render({ state: hostState([T]), ports: ports({ 'nic-t0': ['vnet5', 'cloudbr0'], 'nic-t1': ['vnet6', 'cloudbr1'] }) });
  assert.deepEqual(out.vmErrors, {});
  assert.match(out.iptables, /^-A i-2-12-def -m physdev --physdev-in vnet5 -m set ! --match-set i-2-12-VM src .*-j DROP$/m);
  assert.match(out.iptables, /^-A i-2-12-def -m physdev --physdev-in vnet6 -m set ! --match-set i-2-12-VM-n1 src .*-j DROP$/m);
  assert.match(out.iptables, /^-A i-2-12-def -m physdev --physdev-out vnet6 --physdev-is-bridged -m set ! --match-set i-2-12-VM-n1 dst .*-j DROP$/m);
  assert.match(out.ip6tables, /^-A i-2-12-def -m physdev --physdev-in vnet6 -m set ! --match-set i-2-12-VM-n1-6 src .*-j DROP$/m);
  const members = (name: string) => out.program.sets.find((x) => x.name === name)?.members;
  assert.deepEqual(members('i-2-12-VM'), ['10.1.1.20']);
  assert.deepEqual(members('i-2-12-VM-n1'), ['192.0.2.21']);
  assert.deepEqual(members('i-2-12-VM-6'), ['fd00::20', 'fe80::ff:fe00:20']);
  assert.deepEqual(members('i-2-12-VM-n1-6'), ['fd01::21', 'fe80::ff:fe00:21']);
});

test('render: destination-MAC tree stays shallow and covers every VM port once', () => {
  const vms = Array.from({ length: 300 }, (_, i) => vm(`vm-${i}`, `i-2-${1000 + i}-VM`, [nic(`nic-${i}`, `02:00:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`, [`10.9.${i >> 8}.${i & 255}`])]));
  const map: Record<string, [string, string]> = {};
  vms.forEach((v, i) => { map[`nic-${i}`] = [`vnet${i}`, 'cloudbr0']; });
  const out = render({ state: hostState(vms), ports: ports(map) });
  const pz = out.program.eb.chains.filter((c) => c.name === 'PZ-cloudbr0' || c.name.startsWith('PZ-cloudbr0-'));
  const leaves = pz.flatMap((c) => c.rules.filter((r) => /^-d [0-9a-f:]+ -j mark/.test(r)));
  assert.equal(leaves.length, 300);
  for (const c of pz) assert.ok(c.rules.length <= 18, `${c.name}: ${c.rules.length} rules`);
  assert.ok(pz.every((c) => c.name.length <= 31));
});
