// explainPacket (baseline + evaluate + attribution), per-rule hit attribution and which tracked
// connections a policy no longer allows. Pure; every allowed case has its dropped twin.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compileVm } from '../../src/policy/api.js';
import { explainPacket, type ExplainPacket } from '../../src/policy/explain.js';
import { attributeRuleHits } from '../../src/policy/hits.js';
import { disallowedConnections } from '../../src/policy/connections.js';
import type { SecurityGroupRule } from '../../src/model/types.js';
import type { TrackedConnection } from '../../src/model/telemetry.js';
import { CloudBuilder, setsFor } from './builder.js';

const VM4 = '10.0.0.1', VM6 = '2001:db8::1';

function setup(build: (b: CloudBuilder) => void, nics = [{ ipv4: VM4, ipv6: VM6 }]) {
  const b = new CloudBuilder();
  b.vm(1, { groups: [1], nics });
  build(b);
  const policy = compileVm(b.state, 1);
  const sets = setsFor(b.state, policy);
  const rules = new Map<string, SecurityGroupRule>();
  for (const l of b.state.rulesByGroup.values()) for (const r of l) rules.set(r.uuid, r);
  const explain = (p: Partial<ExplainPacket> & { peer: string }) => explainPacket(policy, policy.nics[0], {
    family: p.peer.includes(':') ? 6 : 4, direction: 'ingress', protocol: 'tcp', ...p,
  }, sets, (u) => rules.get(u));
  return { b, policy, sets, explain };
}

test('rule and default-deny: the deciding API rule is named, with the merged kernel rule', () => {
  let ssh = '', web = '';
  const { explain } = setup((b) => {
    b.group(1);
    ssh = b.rule(1, { protocol: 'tcp', ports: [22, 22], cidr: '192.0.2.0/24' });
    web = b.rule(1, { protocol: 'tcp', ports: [22, 22], cidr: '198.51.100.0/24' }); // merges with ssh: same match
  });
  const a = explain({ peer: '192.0.2.7', port: 22 });
  assert.equal(a.allow, true);
  assert.equal(a.reason, 'rule');
  assert.deepEqual(a.policyRule!.sources.sort(), [ssh, web].sort(), 'one kernel rule carries both');
  assert.deepEqual(a.apiRules, [ssh], 'only the rule whose CIDR holds the peer is named');
  const b = explain({ peer: '198.51.100.9', port: 22 });
  assert.deepEqual(b.apiRules, [web]);
  const denied = explain({ peer: '203.0.113.1', port: 22 });
  assert.deepEqual([denied.allow, denied.reason, denied.apiRules], [false, 'default-deny', []]);
  assert.equal(explain({ peer: '192.0.2.7', port: 23 }).reason, 'default-deny');
});

test('egress-open until a rule of that family exists; then default-deny for the rest', () => {
  const open = setup((b) => { b.group(1); });
  assert.deepEqual([open.explain({ direction: 'egress', peer: '203.0.113.1', port: 443 }).reason], ['egress-open']);
  const closed = setup((b) => { b.rule(1, { dir: 'egress', protocol: 'tcp', ports: [443, 443], cidr: '0.0.0.0/0' }); });
  assert.equal(closed.explain({ direction: 'egress', peer: '203.0.113.1', port: 443 }).reason, 'rule');
  assert.deepEqual([closed.explain({ direction: 'egress', peer: '203.0.113.1', port: 80 }).allow, closed.explain({ direction: 'egress', peer: '203.0.113.1', port: 80 }).reason], [false, 'default-deny']);
  // the other family stays open
  assert.equal(closed.explain({ direction: 'egress', peer: '2001:db8:ff::1', port: 80 }).reason, 'egress-open');
});

test('untracked: all from and to anywhere in both directions; one direction is not enough', () => {
  const both = setup((b) => {
    b.rule(1, { protocol: 'all', cidr: '0.0.0.0/0' });
    b.rule(1, { dir: 'egress', protocol: 'all', cidr: '0.0.0.0/0' });
  });
  const r = both.explain({ peer: '203.0.113.5', port: 5555 });
  assert.deepEqual([r.allow, r.reason], [true, 'untracked']);
  assert.equal(r.apiRules.length, 1);
  const one = setup((b) => { b.rule(1, { protocol: 'all', cidr: '0.0.0.0/0' }); });
  assert.equal(one.explain({ peer: '203.0.113.5', port: 5555 }).reason, 'rule');
  // IPv6 is not untracked by IPv4 rules
  assert.equal(both.explain({ peer: '2001:db8:ff::5', port: 5555 }).reason, 'default-deny');
});

test('anti-spoofing and baseline decide before any rule', () => {
  // even a group allowing everything cannot let the VM be a DHCP server or send RAs
  const all = setup((b) => {
    b.rule(1, { protocol: 'all', cidr: '0.0.0.0/0' }); b.rule(1, { dir: 'egress', protocol: 'all', cidr: '0.0.0.0/0' });
    b.rule(1, { protocol: 'all', cidr: '::/0' }); b.rule(1, { dir: 'egress', protocol: 'all', cidr: '::/0' });
  });
  const e = (p: Partial<ExplainPacket> & { peer: string }) => all.explain({ direction: 'egress', ...p });
  assert.deepEqual([e({ protocol: 'udp', peer: '10.0.0.9', port: 68, sourcePort: 67 }).reason, e({ protocol: 'udp', peer: '10.0.0.9', port: 68 }).reason], ['anti-spoofing', 'untracked']);
  assert.deepEqual([e({ protocol: 'icmp', peer: 'ff02::1', icmpType: 134, icmpCode: 0 }).allow, e({ protocol: 'icmp', peer: 'fe80::1', icmpType: 128, icmpCode: 0 }).allow], [false, true]);
  assert.equal(e({ protocol: 'udp', peer: '2001:db8::9', port: 546, sourcePort: 547 }).reason, 'anti-spoofing');
  assert.equal(e({ protocol: 'udp', peer: '224.0.0.5', port: 5000 }).reason, 'anti-spoofing');
  assert.equal(e({ protocol: 'udp', peer: 'ff05::9', port: 5000 }).reason, 'anti-spoofing');
  // nothing allowed at all: DNS, DHCP client, ND still pass (baseline), other egress and ingress do not
  const none = setup((b) => { b.rule(1, { dir: 'egress', protocol: 'tcp', ports: [443, 443], cidr: '192.0.2.0/24' }); b.rule(1, { dir: 'egress', protocol: 'tcp', ports: [443, 443], cidr: '2001:db8:9::/48' }); });
  const n = (p: Partial<ExplainPacket> & { peer: string }) => none.explain(p);
  assert.deepEqual([n({ direction: 'egress', protocol: 'udp', peer: '198.51.100.53', port: 53 }).reason, n({ direction: 'egress', protocol: 'udp', peer: '198.51.100.53', port: 54 }).reason], ['baseline', 'default-deny']);
  assert.deepEqual([n({ direction: 'egress', protocol: 'udp', peer: '255.255.255.255', port: 67, sourcePort: 68 }).reason, n({ direction: 'egress', protocol: 'udp', peer: '255.255.255.255', port: 67 }).reason], ['baseline', 'default-deny']);
  assert.deepEqual([n({ direction: 'ingress', protocol: 'udp', peer: '10.0.0.254', port: 68, sourcePort: 67 }).reason, n({ direction: 'ingress', protocol: 'udp', peer: '10.0.0.254', port: 68 }).reason], ['baseline', 'default-deny']);
  assert.deepEqual([n({ direction: 'egress', protocol: 'icmp', peer: 'ff02::1:ff00:1', icmpType: 135, icmpCode: 0 }).allow, n({ direction: 'egress', protocol: 'icmp', peer: '2001:db8::99', icmpType: 128, icmpCode: 0 }).allow], [true, false]);
  assert.deepEqual([n({ direction: 'ingress', protocol: 'icmp', peer: 'fe80::1', icmpType: 134, icmpCode: 0 }).reason, n({ direction: 'ingress', protocol: 'icmp', peer: 'fe80::1', icmpType: 128, icmpCode: 0 }).reason], ['baseline', 'default-deny']);
});

test('a NIC without IPv4 can neither send nor receive IPv4 (anti-spoofing), except DHCP discovery', () => {
  const { explain } = setup((b) => { b.rule(1, { protocol: 'all', cidr: '0.0.0.0/0' }); }, [{ ipv4: null as unknown as string, ipv6: VM6 }]);
  assert.equal(explain({ peer: '192.0.2.1', port: 22 }).reason, 'anti-spoofing');
  assert.equal(explain({ direction: 'egress', peer: '192.0.2.1', port: 22 }).reason, 'anti-spoofing');
  assert.equal(explain({ direction: 'egress', protocol: 'udp', peer: '255.255.255.255', port: 67, sourcePort: 68 }).reason, 'baseline');
  assert.equal(explain({ peer: '2001:db8::5', port: 22 }).reason, 'default-deny', 'IPv6 is judged by its rules');
});

test('referenced groups: explain follows the members\' addresses', () => {
  let ref = '';
  const { explain } = setup((b) => {
    ref = b.rule(1, { protocol: 'tcp', ports: [5432, 5432], group: 2 });
    b.vm(2, { groups: [2], nics: [{ ipv4: '10.0.0.2', ipv6: '2001:db8::2' }] });
  });
  const ok = explain({ peer: '10.0.0.2', port: 5432 });
  assert.deepEqual([ok.allow, ok.apiRules], [true, [ref]]);
  assert.equal(explain({ peer: '2001:db8::2', port: 5432 }).allow, true);
  assert.equal(explain({ peer: '10.0.0.3', port: 5432 }).allow, false);
});

test('hit attribution: a merged kernel rule credits every API rule it carries; unknown kernel rules are unattributed', () => {
  let a = '', b2 = '', c = '';
  const { policy } = setup((b) => {
    a = b.rule(1, { protocol: 'tcp', ports: [80, 80], cidr: '192.0.2.0/24' });
    b2 = b.rule(1, { protocol: 'tcp', ports: [80, 80], cidr: '198.51.100.0/24' });
    c = b.rule(1, { protocol: 'udp', ports: [53, 53], cidr: '0.0.0.0/0' });
  });
  const tcp = policy.v4.ingress.find((r) => r.protocol === 'tcp')!;
  const udp = policy.v4.ingress.find((r) => r.protocol === 'udp')!;
  const h = attributeRuleHits(policy, [[tcp.id, 10], [udp.id, 3], ['ffffffffffff', 7], [udp.id, 0]]);
  assert.deepEqual(Object.fromEntries(h.byApiRule), { [a]: 10, [b2]: 10, [c]: 3 });
  assert.equal(h.unattributed, 7);
});

test('tracked connections: those the policy after a revoke no longer allows, both directions', () => {
  const { policy, sets } = setup((b) => {
    b.rule(1, { protocol: 'tcp', ports: [22, 22], cidr: '192.0.2.0/24' });
    b.rule(1, { dir: 'egress', protocol: 'tcp', ports: [443, 443], cidr: '0.0.0.0/0' });
  });
  const c = (x: Partial<TrackedConnection>): TrackedConnection => ({ vmId: policy.vmId, family: 4, protocol: 'tcp', src: '192.0.2.9', dst: VM4, sport: 40000, dport: 22, ...x });
  const conns = [
    c({}),                                               // ingress ssh, still allowed
    c({ src: '203.0.113.9' }),                           // ingress ssh from elsewhere: not allowed
    c({ src: VM4, dst: '203.0.113.80', dport: 443 }),    // egress https, allowed
    c({ src: VM4, dst: '203.0.113.80', dport: 80 }),     // egress http, not allowed
    c({ src: '192.0.2.1', dst: '192.0.2.2' }),           // not this VM's: left alone
    c({ vmId: 'other-vm', src: '203.0.113.9' }),         // another VM's entry: ignored
  ];
  assert.deepEqual(disallowedConnections(policy, sets, conns), [conns[1], conns[3]]);
});
