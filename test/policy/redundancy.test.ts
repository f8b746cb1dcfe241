// ruleRedundancy (authorize dry runs): table cases, then a property test against the compiler's own
// semantics — "redundant" must mean no packet the new rules match changes verdict (evaluate before vs
// after), and "not redundant" must come with a packet evaluate allows after and denies before.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ruleRedundancy } from '../../src/policy/redundancy.js';
import { compileVm, evaluate } from '../../src/policy/api.js';
import { cidrRange, formatIp, parseCidr } from '../../src/policy/cidr.js';
import type { Direction, Family, SecurityGroupRule } from '../../src/model/types.js';
import type { Packet } from '../../src/policy/ir.js';
import { CloudBuilder, setsFor, type RuleSpec } from './builder.js';
import { mulberry32 } from '../helpers/prng.js';

let nextId = 1000;
function rule(spec: RuleSpec & { dir?: Direction }): SecurityGroupRule {
  const id = nextId++;
  const r: SecurityGroupRule = { id, uuid: `r${id}`, groupId: 1, direction: spec.dir ?? 'ingress', protocol: spec.protocol ?? 'all', cidr: spec.cidr ?? null, allowedGroupId: spec.group ?? null };
  if (spec.ports) r.ports = { from: spec.ports[0], to: spec.ports[1] };
  if (spec.icmp) r.icmp = { type: spec.icmp[0], code: spec.icmp[1] };
  return r;
}
const fam = (res: ReturnType<typeof ruleRedundancy>, f: Family) => res.find((x) => x.family === f)!;

test('table: exact duplicates, wider rules, unions of ranges and CIDRs, protocols, ICMP, groups', () => {
  const tcp22 = rule({ protocol: 'tcp', ports: [22, 22], cidr: '10.0.0.0/8' });
  // duplicate and narrower: redundant, covered by the existing rule
  let r = ruleRedundancy([tcp22], [rule({ protocol: 'tcp', ports: [22, 22], cidr: '10.1.0.0/16' })]);
  assert.deepEqual([fam(r, 4).redundant, fam(r, 4).coveredBy, fam(r, 6).applies], [true, [tcp22.uuid], false]);
  // wider peer: not redundant, and the witness is just outside
  r = ruleRedundancy([tcp22], [rule({ protocol: 'tcp', ports: [22, 22], cidr: '10.0.0.0/7' })]);
  assert.equal(fam(r, 4).redundant, false);
  assert.deepEqual(fam(r, 4).witness, { family: 4, direction: 'ingress', protocol: 'tcp', port: 22, peer: '11.0.0.0' });
  // ports covered by the union of two rules (adjacent ranges), not by either alone
  const lo = rule({ protocol: 'tcp', ports: [1000, 1999], cidr: '0.0.0.0/0' }), hi = rule({ protocol: 'tcp', ports: [2000, 2999], cidr: '0.0.0.0/0' });
  r = ruleRedundancy([lo, hi], [rule({ protocol: 'tcp', ports: [1500, 2500], cidr: '192.0.2.0/24' })]);
  assert.deepEqual([fam(r, 4).redundant, fam(r, 4).coveredBy], [true, [lo.uuid, hi.uuid].sort()]);
  r = ruleRedundancy([lo, hi], [rule({ protocol: 'tcp', ports: [1500, 3000], cidr: '192.0.2.0/24' })]);
  assert.equal(fam(r, 4).witness?.port, 3000);
  // peers covered by the union of two CIDRs
  r = ruleRedundancy([rule({ protocol: 'udp', ports: [53, 53], cidr: '10.0.0.0/9' }), rule({ protocol: 'udp', ports: [53, 53], cidr: '10.128.0.0/9' })],
    [rule({ protocol: 'udp', ports: [53, 53], cidr: '10.0.0.0/8' })]);
  assert.equal(fam(r, 4).redundant, true);
  // protocol all is covered only by all (or by every protocol, which rules cannot list)
  r = ruleRedundancy([rule({ protocol: 'tcp', ports: [0, 65535], cidr: '0.0.0.0/0' }), rule({ protocol: 'udp', ports: [0, 65535], cidr: '0.0.0.0/0' })], [rule({ protocol: 'all', cidr: '10.0.0.0/8' })]);
  assert.equal(fam(r, 4).redundant, false);
  assert.equal(fam(r, 4).witness?.protocol, 'icmp');
  // a protocol number covers its protocol's ports; tcp by name does not cover number 6 unless all ports
  r = ruleRedundancy([rule({ protocol: 6, cidr: '0.0.0.0/0' })], [rule({ protocol: 'tcp', ports: [80, 80], cidr: '10.0.0.0/8' })]);
  assert.equal(fam(r, 4).redundant, true);
  r = ruleRedundancy([rule({ protocol: 'tcp', ports: [1, 65535], cidr: '0.0.0.0/0' })], [rule({ protocol: 6, cidr: '10.0.0.0/8' })]);
  assert.deepEqual(fam(r, 4).witness?.port, 0);
  // ICMP: any type covers a type; a type with all codes covers one code; a code does not cover its type
  r = ruleRedundancy([rule({ protocol: 'icmp', icmp: [-1, -1], cidr: '0.0.0.0/0' })], [rule({ protocol: 'icmp', icmp: [8, 0], cidr: '10.0.0.0/8' })]);
  assert.equal(fam(r, 4).redundant, true);
  r = ruleRedundancy([rule({ protocol: 'icmp', icmp: [8, 0], cidr: '0.0.0.0/0' })], [rule({ protocol: 'icmp', icmp: [-1, -1], cidr: '10.0.0.0/8' })]);
  assert.equal(fam(r, 4).redundant, false);
  // group references: covered by the same group or by the whole address space only
  const ref = rule({ protocol: 'tcp', ports: [5432, 5432], group: 2 });
  r = ruleRedundancy([rule({ protocol: 'tcp', ports: [5432, 5432], cidr: '10.0.0.0/8' })], [ref]);
  assert.deepEqual([fam(r, 4).redundant, fam(r, 4).witness?.peerSet, fam(r, 6).redundant], [false, 'sg2v4', false]);
  r = ruleRedundancy([rule({ protocol: 'tcp', ports: [5000, 6000], group: 2 })], [ref]);
  assert.deepEqual([fam(r, 4).redundant, fam(r, 6).redundant], [true, true]);
  r = ruleRedundancy([rule({ protocol: 'all', cidr: '0.0.0.0/0' }), rule({ protocol: 'all', cidr: '::/0' })], [ref]);
  assert.deepEqual([fam(r, 4).redundant, fam(r, 6).redundant], [true, true]);
  r = ruleRedundancy([rule({ protocol: 'all', cidr: '0.0.0.0/0' })], [ref]);
  assert.deepEqual([fam(r, 4).redundant, fam(r, 6).redundant], [true, false], 'per family');
  // the other direction never covers
  r = ruleRedundancy([rule({ dir: 'egress', protocol: 'all', cidr: '0.0.0.0/0' })], [rule({ protocol: 'tcp', ports: [1, 1], cidr: '10.0.0.0/8' })]);
  assert.equal(fam(r, 4).redundant, false);
});

test('table: the first egress rule of a family restricts egress; a later one does not', () => {
  let r = ruleRedundancy([], [rule({ dir: 'egress', protocol: 'tcp', ports: [443, 443], cidr: '0.0.0.0/0' })]);
  assert.deepEqual([fam(r, 4).redundant, fam(r, 4).restrictsEgress, fam(r, 6).restrictsEgress], [false, true, false]);
  r = ruleRedundancy([rule({ dir: 'egress', protocol: 'tcp', ports: [443, 443], cidr: '0.0.0.0/0' })], [rule({ dir: 'egress', protocol: 'tcp', ports: [80, 80], cidr: '0.0.0.0/0' })]);
  assert.deepEqual([fam(r, 4).redundant, fam(r, 4).restrictsEgress], [false, false]);
  r = ruleRedundancy([rule({ dir: 'egress', protocol: 'tcp', ports: [443, 443], cidr: '0.0.0.0/0' })], [rule({ dir: 'egress', protocol: 'tcp', ports: [80, 80], group: 3 })]);
  assert.deepEqual([fam(r, 4).restrictsEgress, fam(r, 6).restrictsEgress], [false, true], 'a group reference restricts both families');
});

// ---------------------------------------------------------------- property test

const CIDRS: Record<Family, string[]> = {
  4: ['10.0.0.0/8', '10.0.0.0/9', '10.128.0.0/9', '10.0.0.0/24', '10.0.1.0/24', '10.0.0.0/23', '10.0.0.7/32', '0.0.0.0/0', '192.168.0.0/16', '0.0.0.0/1', '128.0.0.0/1'],
  6: ['2001:db8::/32', '2001:db8::/33', '2001:db8:8000::/33', '::/0', '2001:db8::7/128', '::/1', '8000::/1'],
};
const PROTOS = ['tcp', 'udp', 'icmp', 'all', 6, 17, 47, 58] as const;

function randomRule(rnd: () => number, dir: Direction, family: Family | null): SecurityGroupRule {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const protocol = pick(PROTOS);
  const spec: RuleSpec & { dir: Direction } = { dir, protocol };
  if (protocol === 'tcp' || protocol === 'udp') {
    const a = Math.floor(rnd() * 40), b = a + Math.floor(rnd() * 30);
    spec.ports = rnd() < 0.1 ? [0, 65535] : [a, b];
  }
  if (protocol === 'icmp') {
    const t = pick([-1, 0, 3, 8]);
    spec.icmp = t === -1 ? [-1, -1] : [t, pick([-1, 0, 1])];
  }
  if (family === null && rnd() < 0.2) spec.group = pick([2, 3]);
  else spec.cidr = pick(CIDRS[family ?? (rnd() < 0.6 ? 4 : 6)]);
  return rule(spec);
}

function randomInCidr(rnd: () => number, cidr: string): string {
  const c = parseCidr(cidr)!;
  const [s, e] = cidrRange(c);
  const size = e - s + 1n;
  const pick = rnd();
  const off = pick < 0.15 ? 0n : pick < 0.3 ? size - 1n : BigInt(Math.floor(rnd() * Number(size > 1n << 48n ? 1n << 48n : size)));
  return formatIp(c.family, s + off);
}

/** A packet the rule matches (in the family), or null (a group reference with no member of that family). */
function packetOf(rnd: () => number, r: SecurityGroupRule, family: Family, members: Record<number, Record<Family, string[]>>): Packet | null {
  let peer: string;
  if (r.allowedGroupId !== null) {
    const m = members[r.allowedGroupId]![family];
    if (!m.length) return null;
    peer = m[Math.floor(rnd() * m.length)]!;
  } else {
    if (!r.cidr!.includes(':') !== (family === 4)) return null;
    peer = randomInCidr(rnd, r.cidr!);
  }
  const base = { family, direction: r.direction, peer };
  let p = r.protocol;
  if (p === 'all') p = (['tcp', 'udp', 'icmp', 47, 58, 0, 132] as const)[Math.floor(rnd() * 7)]!;
  if (p === 6) p = 'tcp';
  if (p === 17) p = 'udp';
  if (p === 'tcp' || p === 'udp') {
    const from = r.ports?.from ?? 0, to = r.ports?.to ?? 65535;
    const port = rnd() < 0.3 ? (rnd() < 0.5 ? from : to) : from + Math.floor(rnd() * (to - from + 1));
    return { ...base, protocol: p, port };
  }
  if (p === 'icmp') {
    const t = r.icmp?.type ?? -1, c = r.icmp?.code ?? -1;
    return { ...base, protocol: 'icmp', icmpType: t === -1 ? [0, 3, 8, 11][Math.floor(rnd() * 4)]! : t, icmpCode: c === -1 ? [0, 1, 4][Math.floor(rnd() * 3)]! : c };
  }
  return { ...base, protocol: p };
}

test('property: redundant ⇔ no packet the new rules match is newly allowed (evaluate before/after)', () => {
  const rnd = mulberry32(20261111);
  const members: Record<number, Record<Family, string[]>> = { 2: { 4: ['10.0.0.7', '172.16.0.2'], 6: ['2001:db8::7'] }, 3: { 4: ['10.200.0.1'], 6: [] } };
  let redundantSeen = 0, witnessed = 0;
  for (let iter = 0; iter < 600; iter++) {
    const dir: Direction = rnd() < 0.7 ? 'ingress' : 'egress';
    const existing = Array.from({ length: 1 + Math.floor(rnd() * 5) }, () => randomRule(rnd, dir, null));
    const added = Array.from({ length: 1 + Math.floor(rnd() * 2) }, () => randomRule(rnd, dir, null));
    // Egress: a base egress rule in both families keeps egress restricted before and after (else the
    // first rule closes open egress, which restrictsEgress reports and which is no packet-level change).
    if (dir === 'egress') existing.push(rule({ dir, protocol: 99, cidr: '203.0.113.0/24' }), rule({ dir, protocol: 99, cidr: '2001:db8:ffff::/48' }));
    const res = ruleRedundancy(existing, added);
    const build = (rules: SecurityGroupRule[]) => {
      const b = new CloudBuilder();
      b.vm(1, { groups: [1], nics: [{ ipv4: '192.0.2.1', ipv6: '2001:db8:1::1' }] });
      b.vm(2, { groups: [2], nics: [{ ipv4: '10.0.0.7', ipv6: '2001:db8::7', secondary: ['172.16.0.2'] }] });
      b.vm(3, { groups: [3], nics: [{ ipv4: '10.200.0.1' }] });
      for (const r of rules) b.state.rulesByGroup.get(1)!.push(r);
      const policy = compileVm(b.state, 1);
      return { policy, sets: setsFor(b.state, policy) };
    };
    const before = build(existing), after = build([...existing, ...added]);
    for (const f of [4, 6] as Family[]) {
      const r = fam(res, f);
      assert.equal(r.restrictsEgress, false);
      const label = `iter ${iter} family ${f}: existing ${JSON.stringify(existing)} added ${JSON.stringify(added)} → ${JSON.stringify(r)}`;
      if (r.redundant) {
        redundantSeen++;
        for (const a of added) for (let k = 0; k < 20; k++) {
          const p = packetOf(rnd, a, f, members);
          if (!p) continue;
          assert.equal(evaluate(after.policy, p, after.sets).allow, true, `${label}: packet ${JSON.stringify(p)} should match the new rule`);
          assert.equal(evaluate(before.policy, p, before.sets).allow, true, `${label}: packet ${JSON.stringify(p)} allowed only after`);
        }
      } else {
        const w = r.witness!;
        assert.ok(w, label);
        if (w.peer !== undefined) {
          witnessed++;
          const p = { ...w, peer: w.peer } as Packet;
          assert.equal(evaluate(after.policy, p, after.sets).allow, true, `${label}: witness not allowed after`);
          assert.equal(evaluate(before.policy, p, before.sets).allow, false, `${label}: witness already allowed before`);
        } else {
          // Structural: the set is not referenced by the existing rules that match the witness' match.
          assert.match(w.peerSet!, new RegExp(`^sg[23]v${f}$`), label);
        }
      }
    }
  }
  assert.ok(redundantSeen > 100 && witnessed > 100, `both outcomes exercised (${redundantSeen} redundant, ${witnessed} witnessed)`);
});

test('bounded work: many new CIDRs against many rules cost about one; a question too large says "not decided" instead of stalling', { timeout: 120_000 }, () => {
  // 20,000 existing rules on one port, and an authorize of 1,000 CIDRs they cover: decided, exactly
  const existing = Array.from({ length: 20_000 }, (_, i) => rule({ protocol: 'tcp', ports: [22, 22], cidr: `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}/32` }));
  const added = Array.from({ length: 1_000 }, (_, i) => rule({ protocol: 'tcp', ports: [22, 22], cidr: `10.0.${i >> 8}.${i & 255}/32` }));
  let r = ruleRedundancy(existing, added);
  assert.deepEqual([fam(r, 4).redundant, fam(r, 4).decided, fam(r, 4).coveredBy.length], [true, undefined, 20_000]);
  r = ruleRedundancy(existing, [...added, rule({ protocol: 'tcp', ports: [22, 22], cidr: '192.0.2.1/32' })]);
  assert.deepEqual([fam(r, 4).redundant, fam(r, 4).decided, fam(r, 4).witness?.peer], [false, undefined, '192.0.2.1']);
  // 20,000 rules tiling the ports and a new rule over all of them: too many atoms × rules to decide
  const tiles = Array.from({ length: 20_000 }, (_, i) => rule({ protocol: 'tcp', ports: [i * 3, i * 3 + 2], cidr: '0.0.0.0/0' }));
  r = ruleRedundancy(tiles, [rule({ protocol: 'tcp', ports: [0, 59_999], cidr: '192.0.2.0/24' })]);
  assert.deepEqual([fam(r, 4).applies, fam(r, 4).redundant, fam(r, 4).decided], [true, false, false]);
  // the twin: with a work limit large enough it is decided (and covered)
  const few = tiles.slice(0, 300);
  r = ruleRedundancy(few, [rule({ protocol: 'tcp', ports: [0, 899], cidr: '192.0.2.0/24' })], 10_000_000);
  assert.deepEqual([fam(r, 4).redundant, fam(r, 4).decided, fam(r, 4).coveredBy.length], [true, undefined, 300]);
});
