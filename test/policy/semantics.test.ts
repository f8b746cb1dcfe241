// DESIGN.md §3 semantics, table-driven: each case builds a cloud, compiles VM 1 and checks packets
// through evaluate. Every "allowed" case sits beside its "blocked" twin.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compileVm, evaluate } from '../../src/policy/api.js';
import type { Packet, VmPolicy } from '../../src/policy/ir.js';
import { CloudBuilder, setsFor } from './builder.js';

type P = Partial<Packet> & { peer: string };
const pkt = (p: P): Packet => ({ family: p.peer.includes(':') ? 6 : 4, direction: 'ingress', protocol: 'tcp', ...p });
const tcp = (peer: string, port: number, direction: 'ingress' | 'egress' = 'ingress') => pkt({ peer, port, direction });
const udp = (peer: string, port: number, direction: 'ingress' | 'egress' = 'ingress') => pkt({ peer, port, protocol: 'udp', direction });
const icmp = (peer: string, type: number, code: number, direction: 'ingress' | 'egress' = 'ingress') => pkt({ peer, protocol: 'icmp', icmpType: type, icmpCode: code, direction });
const proto = (peer: string, n: number, direction: 'ingress' | 'egress' = 'ingress') => pkt({ peer, protocol: n, direction });

interface Case {
  name: string;
  build: (b: CloudBuilder) => void;
  allow: Packet[];
  deny: Packet[];
  expect?: (p: VmPolicy) => void;
}

/** VM 1 in group 1 on host 1, 10.0.0.1 / 2001:db8::1, unless the case builds it differently. */
function base(b: CloudBuilder, groups = [1]): void {
  b.vm(1, { groups, nics: [{ ipv4: '10.0.0.1', ipv6: '2001:db8::1' }] });
}

const cases: Case[] = [
  {
    name: 'default group (no rules): all ingress denied, all egress allowed, both families',
    build: (b) => { b.group(1, 'default'); base(b); },
    allow: [tcp('8.8.8.8', 443, 'egress'), udp('2001:db8::99', 53, 'egress'), icmp('10.0.0.2', 8, 0, 'egress')],
    deny: [tcp('203.0.113.5', 22), udp('10.0.0.2', 53), icmp('10.0.0.2', 8, 0), tcp('2001:db8::99', 22), proto('10.0.0.2', 47)],
    expect: (p) => { assert.equal(p.v4.egressRestricted, false); assert.equal(p.v6.egressRestricted, false); },
  },
  {
    name: 'tcp 22 from one /32: only that peer, port and protocol',
    build: (b) => { b.rule(1, { protocol: 'tcp', ports: [22, 22], cidr: '203.0.113.50/32' }); base(b); },
    allow: [tcp('203.0.113.50', 22)],
    deny: [tcp('203.0.113.51', 22), tcp('203.0.113.50', 23), tcp('203.0.113.50', 21), udp('203.0.113.50', 22), tcp('2001:db8::50', 22)],
  },
  {
    name: 'port edges: tcp 80-443 from 0.0.0.0/0 allows 80 and 443, not 79 or 444',
    build: (b) => { b.rule(1, { protocol: 'tcp', ports: [80, 443], cidr: '0.0.0.0/0' }); base(b); },
    allow: [tcp('1.2.3.4', 80), tcp('1.2.3.4', 443), tcp('255.255.255.255', 200)],
    deny: [tcp('1.2.3.4', 79), tcp('1.2.3.4', 444), udp('1.2.3.4', 80), tcp('::1', 80)],
  },
  {
    name: 'tcp 0/0 ports mean every port (CloudStack stores 0/65535)',
    build: (b) => { b.rule(1, { protocol: 'tcp', ports: [0, 0], cidr: '10.0.0.0/8' }); base(b); },
    allow: [tcp('10.1.1.1', 0), tcp('10.1.1.1', 65535), pkt({ peer: '10.1.1.1' })],
    deny: [tcp('11.1.1.1', 1), udp('10.1.1.1', 1)],
  },
  {
    name: 'egress opens per family: one IPv4 egress rule restricts IPv4 egress only',
    build: (b) => { b.rule(1, { dir: 'egress', protocol: 'tcp', ports: [443, 443], cidr: '0.0.0.0/0' }); base(b); },
    allow: [tcp('8.8.8.8', 443, 'egress'), tcp('2001:db8::9', 80, 'egress'), udp('2001:db8::9', 53, 'egress')],
    deny: [tcp('8.8.8.8', 80, 'egress'), udp('8.8.8.8', 53, 'egress'), icmp('8.8.8.8', 8, 0, 'egress'), tcp('8.8.8.8', 443)],
    expect: (p) => { assert.equal(p.v4.egressRestricted, true); assert.equal(p.v6.egressRestricted, false); },
  },
  {
    name: 'egress opens per family: one IPv6 egress rule restricts IPv6 egress only',
    build: (b) => { b.rule(1, { dir: 'egress', protocol: 'udp', ports: [53, 53], cidr: '2001:db8::/32' }); base(b); },
    allow: [udp('2001:db8:1::53', 53, 'egress'), tcp('8.8.8.8', 80, 'egress')],
    deny: [udp('2001:db9::53', 53, 'egress'), tcp('2001:db8:1::53', 53, 'egress')],
    expect: (p) => { assert.equal(p.v4.egressRestricted, false); assert.equal(p.v6.egressRestricted, true); },
  },
  {
    name: 'a group-reference egress rule restricts both families',
    build: (b) => {
      b.rule(1, { dir: 'egress', protocol: 'tcp', ports: [5432, 5432], group: 2 });
      base(b);
      b.vm(2, { groups: [2], nics: [{ ipv4: '10.0.0.2', ipv6: '2001:db8::2' }] });
    },
    allow: [tcp('10.0.0.2', 5432, 'egress'), tcp('2001:db8::2', 5432, 'egress')],
    deny: [tcp('10.0.0.3', 5432, 'egress'), tcp('8.8.8.8', 443, 'egress'), tcp('2001:db8::3', 5432, 'egress'), tcp('10.0.0.2', 5433, 'egress')],
    expect: (p) => { assert.equal(p.v4.egressRestricted, true); assert.equal(p.v6.egressRestricted, true); },
  },
  {
    name: 'group reference: running members, all NICs, primary + secondary, IPv4 /32 and IPv6 /128',
    build: (b) => {
      b.rule(1, { protocol: 'tcp', ports: [22, 22], group: 2 });
      base(b);
      b.vm(2, { groups: [2], host: 2, nics: [{ ipv4: '10.0.0.2', ipv6: '2001:db8::2', secondary: ['10.0.0.22', '2001:db8::22'] }, { ipv4: '10.9.0.2' }] });
      b.vm(3, { groups: [2], state: 'Stopped', nics: [{ ipv4: '10.0.0.3', ipv6: '2001:db8::3' }] });
      b.vm(4, { groups: [3], nics: [{ ipv4: '10.0.0.4' }] });
    },
    allow: [tcp('10.0.0.2', 22), tcp('10.0.0.22', 22), tcp('10.9.0.2', 22), tcp('2001:db8::2', 22), tcp('2001:db8::22', 22)],
    deny: [tcp('10.0.0.3', 22), tcp('2001:db8::3', 22), tcp('10.0.0.4', 22), tcp('2001:db8::2:0', 22), tcp('2001:db8::23', 22), tcp('10.0.0.2', 23)],
    expect: (p) => {
      assert.deepEqual(p.v4.ingress.map((r) => r.sets), [['sg2v4']]);
      assert.deepEqual(p.v6.ingress.map((r) => r.sets), [['sg2v6']]);
      assert.deepEqual(p.v4.ingress[0]!.cidrs, []);
    },
  },
  {
    name: 'self-reference: a group allowing itself includes the VM itself and its peers',
    build: (b) => {
      b.rule(1, { protocol: 'all', group: 1 });
      base(b);
      b.vm(5, { groups: [1], nics: [{ ipv4: '10.0.0.5' }] });
    },
    allow: [tcp('10.0.0.1', 80), tcp('10.0.0.5', 80), proto('10.0.0.5', 47), tcp('2001:db8::1', 1)],
    deny: [tcp('10.0.0.6', 80), tcp('2001:db8::5', 80)],
  },
  {
    name: 'icmp -1/-1 from 10.0.0.0/8: every type and code, only ICMP, only that CIDR',
    build: (b) => { b.rule(1, { protocol: 'icmp', icmp: [-1, -1], cidr: '10.0.0.0/8' }); base(b); },
    allow: [icmp('10.2.3.4', 8, 0), icmp('10.2.3.4', 3, 4), icmp('10.255.255.255', 255, 255)],
    deny: [icmp('11.0.0.1', 8, 0), tcp('10.2.3.4', 80), udp('10.2.3.4', 7), icmp('2001:db8::5', 128, 0)],
  },
  {
    name: 'icmp type 8 code 0 only; type 3 code -1 is any code of type 3',
    build: (b) => {
      b.rule(1, { protocol: 'icmp', icmp: [8, 0], cidr: '0.0.0.0/0' });
      b.rule(1, { protocol: 'icmp', icmp: [3, -1], cidr: '0.0.0.0/0' });
      base(b);
    },
    allow: [icmp('1.1.1.1', 8, 0), icmp('1.1.1.1', 3, 0), icmp('1.1.1.1', 3, 13)],
    deny: [icmp('1.1.1.1', 8, 1), icmp('1.1.1.1', 0, 0), icmp('1.1.1.1', 11, 0)],
  },
  {
    name: 'icmp with an IPv6 CIDR is ICMPv6 with the same type/code (CloudStack semantics)',
    build: (b) => { b.rule(1, { protocol: 'icmp', icmp: [128, 0], cidr: '::/0' }); base(b); },
    allow: [icmp('2001:db8::77', 128, 0)],
    deny: [icmp('2001:db8::77', 129, 0), icmp('1.2.3.4', 128, 0), icmp('1.2.3.4', 8, 0)],
  },
  {
    name: 'protocol numbers: 47 allows GRE only; number 6 allows any TCP port',
    build: (b) => {
      b.rule(1, { protocol: 47, cidr: '192.0.2.0/24' });
      b.rule(1, { protocol: 6, cidr: '198.51.100.0/24' });
      base(b);
    },
    allow: [proto('192.0.2.9', 47), tcp('198.51.100.7', 1), tcp('198.51.100.7', 65535), proto('198.51.100.7', 6)],
    deny: [proto('192.0.2.9', 50), tcp('192.0.2.9', 80), proto('198.51.100.7', 47), udp('198.51.100.7', 1), proto('2001:db8::9', 47)],
  },
  {
    name: 'protocol number 0 means all protocols (as iptables -p 0)',
    build: (b) => { b.rule(1, { protocol: 0, cidr: '192.0.2.0/24' }); base(b); },
    allow: [proto('192.0.2.9', 47), tcp('192.0.2.9', 1), icmp('192.0.2.9', 8, 0)],
    deny: [tcp('192.0.3.9', 1)],
    expect: (p) => assert.equal(p.v4.ingress[0]!.protocol, 'all'),
  },
  {
    name: 'protocol all with 0.0.0.0/0: every v4 packet in, IPv6 still denied',
    build: (b) => { b.rule(1, { protocol: 'all', cidr: '0.0.0.0/0' }); base(b); },
    allow: [tcp('1.1.1.1', 1), udp('255.0.0.1', 9), icmp('0.0.0.1', 0, 0), proto('8.8.8.8', 132)],
    deny: [tcp('2001:db8::1', 1), icmp('::1', 128, 0)],
    expect: (p) => assert.equal(p.v4.notrack, false), // ingress only: stays tracked (#14099 fix)
  },
  {
    name: 'rules of every group of the VM apply',
    build: (b) => {
      b.rule(1, { protocol: 'tcp', ports: [22, 22], cidr: '10.0.0.0/8' });
      b.rule(2, { protocol: 'udp', ports: [53, 53], cidr: '10.0.0.0/8' });
      base(b, [1, 2]);
    },
    allow: [tcp('10.1.1.1', 22), udp('10.1.1.1', 53)],
    deny: [tcp('10.1.1.1', 53), udp('10.1.1.1', 22)],
  },
  {
    name: 'unreadable stored rules fail closed: a bad ingress rule allows nothing, a bad egress rule closes egress',
    build: (b) => {
      b.rule(1, { protocol: 'tcp', ports: [22, 22], cidr: '10.0.0.0/33' });
      b.rule(1, { dir: 'egress', protocol: 'tcp', ports: [443, 80], cidr: '0.0.0.0/0' });
      b.rule(1, { protocol: 'udp', ports: [53, 53], cidr: '10.0.0.0/8' });
      base(b);
    },
    allow: [udp('10.0.0.9', 53)],
    deny: [tcp('10.0.0.9', 22), tcp('8.8.8.8', 443, 'egress'), tcp('2001:db8::9', 443, 'egress')],
    expect: (p) => { assert.equal(p.v4.egressRestricted, true); assert.equal(p.v6.egressRestricted, true); assert.equal(p.v4.ingress.length, 1); },
  },
  {
    name: 'CIDR with host bits set is canonicalised to its network',
    build: (b) => { b.rule(1, { protocol: 'tcp', ports: [22, 22], cidr: '10.1.2.3/8' }); b.rule(1, { protocol: 'udp', ports: [1, 1], cidr: '2001:DB8:0:0:0::77/64' }); base(b); },
    allow: [tcp('10.200.0.1', 22), udp('2001:db8::1', 1)],
    deny: [tcp('11.0.0.1', 22), udp('2001:db9::1', 1)],
    expect: (p) => { assert.deepEqual(p.v4.ingress[0]!.cidrs, ['10.0.0.0/8']); assert.deepEqual(p.v6.ingress[0]!.cidrs, ['2001:db8::/64']); },
  },
];

for (const c of cases) {
  test(`semantics: ${c.name}`, () => {
    const b = new CloudBuilder();
    c.build(b);
    const policy = compileVm(b.state, 1);
    const sets = setsFor(b.state, policy);
    for (const p of c.allow) assert.equal(evaluate(policy, p, sets).allow, true, `should allow ${JSON.stringify(p)}`);
    for (const p of c.deny) assert.equal(evaluate(policy, p, sets).allow, false, `should deny ${JSON.stringify(p)}`);
    c.expect?.(policy);
  });
}

const notrackCases: { name: string; rules: Parameters<CloudBuilder['rule']>[1][]; v4: boolean; v6: boolean }[] = [
  { name: 'no rules', rules: [], v4: false, v6: false },
  { name: 'ingress all 0/0 only (#14099: one direction is not enough)', rules: [{ protocol: 'all', cidr: '0.0.0.0/0' }], v4: false, v6: false },
  { name: 'egress all 0/0 only', rules: [{ dir: 'egress', protocol: 'all', cidr: '0.0.0.0/0' }], v4: false, v6: false },
  { name: 'both directions all 0/0', rules: [{ protocol: 'all', cidr: '0.0.0.0/0' }, { dir: 'egress', protocol: 'all', cidr: '0.0.0.0/0' }], v4: true, v6: false },
  { name: 'both directions all ::/0', rules: [{ protocol: 'all', cidr: '::/0' }, { dir: 'egress', protocol: 'all', cidr: '::/0' }], v4: false, v6: true },
  { name: 'ingress all 0/0, egress all ::/0 (different families)', rules: [{ protocol: 'all', cidr: '0.0.0.0/0' }, { dir: 'egress', protocol: 'all', cidr: '::/0' }], v4: false, v6: false },
  { name: 'tcp 0-65535 both ways is not "all"', rules: [{ protocol: 'tcp', ports: [0, 65535], cidr: '0.0.0.0/0' }, { dir: 'egress', protocol: 'tcp', ports: [0, 65535], cidr: '0.0.0.0/0' }], v4: false, v6: false },
  { name: 'all from 10/8 both ways is not everywhere', rules: [{ protocol: 'all', cidr: '10.0.0.0/8' }, { dir: 'egress', protocol: 'all', cidr: '10.0.0.0/8' }], v4: false, v6: false },
  {
    name: 'all from two halves that merge into 0/0, both ways',
    rules: [{ protocol: 'all', cidr: '0.0.0.0/1' }, { protocol: 'all', cidr: '128.0.0.0/1' }, { dir: 'egress', protocol: 'all', cidr: '0.0.0.0/0' }], v4: true, v6: false,
  },
];

for (const c of notrackCases) {
  test(`notrack: ${c.name}`, () => {
    const b = new CloudBuilder();
    b.group(1);
    for (const r of c.rules) b.rule(1, r);
    base(b);
    const p = compileVm(b.state, 1);
    assert.equal(p.v4.notrack, c.v4);
    assert.equal(p.v6.notrack, c.v6);
  });
}

test('nics: MAC lower-case, IPv4 primary then secondaries, IPv6 global primary then secondaries, canonical text', () => {
  const b = new CloudBuilder();
  b.vm(1, { groups: [], nics: [
    { ipv4: '10.0.0.1', ipv6: '2001:DB8:0::1', secondary: ['10.0.0.9', '2001:db8::0:5', '10.0.0.3'], mac: '02:AA:BB:CC:DD:EE', deviceName: 'vnet7' },
    { ipv4: null, ipv6: '2001:db8:1::1' },
  ] });
  const p = compileVm(b.state, 1);
  assert.deepEqual(p.nics, [
    { nicId: 'nic-1-0', mac: '02:aa:bb:cc:dd:ee', ipv4: ['10.0.0.1', '10.0.0.3', '10.0.0.9'], ipv6: ['2001:db8::1', '2001:db8::5'], isDefault: true, deviceName: 'vnet7' },
    { nicId: 'nic-1-1', mac: '02:00:00:00:01:01', ipv4: [], ipv6: ['2001:db8:1::1'], isDefault: false, deviceName: null },
  ]);
  assert.equal(p.vmId, 'vm-000001');
  assert.equal(p.instanceName, 'i-1-1-VM');
});

test('evaluate names the deciding rule and its API sources', () => {
  const b = new CloudBuilder();
  const u = b.rule(1, { protocol: 'tcp', ports: [22, 22], cidr: '10.0.0.0/8' });
  base(b);
  const p = compileVm(b.state, 1);
  const v = evaluate(p, tcp('10.1.1.1', 22), new Map());
  assert.deepEqual(v, { allow: true, reason: { kind: 'rule', ruleId: p.v4.ingress[0]!.id, sources: [u] } });
  assert.deepEqual(evaluate(p, tcp('10.1.1.1', 23), new Map()), { allow: false, reason: { kind: 'default-deny' } });
  assert.deepEqual(evaluate(p, tcp('10.1.1.1', 23, 'egress'), new Map()), { allow: true, reason: { kind: 'egress-open' } });
  assert.throws(() => evaluate(p, { family: 4, direction: 'ingress', protocol: 'tcp', peer: '2001:db8::1', port: 1 }, new Map()), /not an IPv4 address/);
});

test('a referenced set missing from the map is empty (fail closed)', () => {
  const b = new CloudBuilder();
  b.rule(1, { protocol: 'all', group: 2 });
  base(b);
  b.vm(2, { groups: [2], nics: [{ ipv4: '10.0.0.2' }] });
  const p = compileVm(b.state, 1);
  assert.equal(evaluate(p, tcp('10.0.0.2', 1), setsFor(b.state, p)).allow, true);
  assert.equal(evaluate(p, tcp('10.0.0.2', 1), new Map()).allow, false);
});
