// Merging: table cases for what merges (and what must not), canonical order and hashing, and a
// seeded property test: random rules × random packets give the same verdict from
//   (a) an independent evaluator over the stored rules (node:net BlockList for CIDRs),
//   (b) the unmerged compiled policy, and (c) the merged compiled policy;
// and the deciding rule of (c) always names an API rule that really allows the packet.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BlockList } from 'node:net';
import { compileVm, evaluate } from '../../src/policy/api.js';
import type { Packet, PolicyRule } from '../../src/policy/ir.js';
import type { Family, SecurityGroupRule, VmState } from '../../src/model/types.js';
import type { CloudState } from '../../src/policy/state.js';
import { CloudBuilder, setsFor, type RuleSpec } from './builder.js';
import { cidrRange, formatIp, parseCidr } from '../../src/policy/cidr.js';
import { mulberry32 } from '../helpers/prng.js';

const strip = (r: PolicyRule) => ({ protocol: r.protocol, ports: r.ports, icmp: r.icmp, cidrs: r.cidrs, sets: r.sets, sources: r.sources });

const mergeCases: { name: string; rules: RuleSpec[]; want: ReturnType<typeof strip>[] }[] = [
  {
    name: 'same match: CIDRs unioned and merged, sources kept',
    rules: [{ protocol: 'tcp', ports: [22, 22], cidr: '10.0.0.0/25', uuid: 'a' }, { protocol: 'tcp', ports: [22, 22], cidr: '10.0.0.128/25', uuid: 'b' }],
    want: [{ protocol: 'tcp', ports: { from: 22, to: 22 }, icmp: undefined, cidrs: ['10.0.0.0/24'], sets: [], sources: ['a', 'b'] }],
  },
  {
    name: 'same peers: adjacent port ranges joined',
    rules: [{ protocol: 'tcp', ports: [80, 90], cidr: '0.0.0.0/0', uuid: 'a' }, { protocol: 'tcp', ports: [91, 100], cidr: '0.0.0.0/0', uuid: 'b' }],
    want: [{ protocol: 'tcp', ports: { from: 80, to: 100 }, icmp: undefined, cidrs: ['0.0.0.0/0'], sets: [], sources: ['a', 'b'] }],
  },
  {
    name: 'same peers: overlapping port ranges joined',
    rules: [{ protocol: 'udp', ports: [1000, 2000], cidr: '10.0.0.0/8', uuid: 'a' }, { protocol: 'udp', ports: [1500, 3000], cidr: '10.0.0.0/8', uuid: 'b' }],
    want: [{ protocol: 'udp', ports: { from: 1000, to: 3000 }, icmp: undefined, cidrs: ['10.0.0.0/8'], sets: [], sources: ['a', 'b'] }],
  },
  {
    name: 'different peers: port ranges NOT joined (it would widen a verdict)',
    rules: [{ protocol: 'tcp', ports: [80, 80], cidr: '10.0.0.0/8', uuid: 'a' }, { protocol: 'tcp', ports: [81, 81], cidr: '192.0.2.0/24', uuid: 'b' }],
    want: [
      { protocol: 'tcp', ports: { from: 80, to: 80 }, icmp: undefined, cidrs: ['10.0.0.0/8'], sets: [], sources: ['a'] },
      { protocol: 'tcp', ports: { from: 81, to: 81 }, icmp: undefined, cidrs: ['192.0.2.0/24'], sets: [], sources: ['b'] },
    ],
  },
  {
    name: 'gap between ports: not joined',
    rules: [{ protocol: 'tcp', ports: [80, 80], cidr: '0.0.0.0/0', uuid: 'a' }, { protocol: 'tcp', ports: [82, 82], cidr: '0.0.0.0/0', uuid: 'b' }],
    want: [
      { protocol: 'tcp', ports: { from: 80, to: 80 }, icmp: undefined, cidrs: ['0.0.0.0/0'], sets: [], sources: ['a'] },
      { protocol: 'tcp', ports: { from: 82, to: 82 }, icmp: undefined, cidrs: ['0.0.0.0/0'], sets: [], sources: ['b'] },
    ],
  },
  {
    name: 'tcp and udp on the same ports stay apart',
    rules: [{ protocol: 'tcp', ports: [53, 53], cidr: '0.0.0.0/0', uuid: 'a' }, { protocol: 'udp', ports: [53, 53], cidr: '0.0.0.0/0', uuid: 'b' }],
    want: [
      { protocol: 'tcp', ports: { from: 53, to: 53 }, icmp: undefined, cidrs: ['0.0.0.0/0'], sets: [], sources: ['a'] },
      { protocol: 'udp', ports: { from: 53, to: 53 }, icmp: undefined, cidrs: ['0.0.0.0/0'], sets: [], sources: ['b'] },
    ],
  },
  {
    name: 'a rule inside another (match and peers) is dropped, its source kept on the cover',
    rules: [{ protocol: 'all', cidr: '0.0.0.0/0', uuid: 'a' }, { protocol: 'tcp', ports: [22, 22], cidr: '203.0.113.50/32', uuid: 'b' }],
    want: [{ protocol: 'all', ports: undefined, icmp: undefined, cidrs: ['0.0.0.0/0'], sets: [], sources: ['a', 'b'] }],
  },
  {
    name: 'icmp -1 covers specific types from the same peers',
    rules: [{ protocol: 'icmp', icmp: [-1, -1], cidr: '10.0.0.0/8', uuid: 'a' }, { protocol: 'icmp', icmp: [8, 0], cidr: '10.1.0.0/16', uuid: 'b' }],
    want: [{ protocol: 'icmp', ports: undefined, icmp: { type: -1, code: -1 }, cidrs: ['10.0.0.0/8'], sets: [], sources: ['a', 'b'] }],
  },
  {
    name: 'group references of the same match share one rule; CIDRs and sets together',
    rules: [{ protocol: 'tcp', ports: [22, 22], group: 3, uuid: 'a' }, { protocol: 'tcp', ports: [22, 22], group: 2, uuid: 'b' }, { protocol: 'tcp', ports: [22, 22], cidr: '10.0.0.0/8', uuid: 'c' }],
    want: [{ protocol: 'tcp', ports: { from: 22, to: 22 }, icmp: undefined, cidrs: ['10.0.0.0/8'], sets: ['sg2v4', 'sg3v4'], sources: ['a', 'b', 'c'] }],
  },
  {
    name: 'a wider rule with fewer peers does not absorb one with other peers',
    rules: [{ protocol: 'tcp', ports: [1, 1000], cidr: '10.0.0.0/8', uuid: 'a' }, { protocol: 'tcp', ports: [22, 22], cidr: '11.0.0.0/8', uuid: 'b' }],
    want: [
      { protocol: 'tcp', ports: { from: 1, to: 1000 }, icmp: undefined, cidrs: ['10.0.0.0/8'], sets: [], sources: ['a'] },
      { protocol: 'tcp', ports: { from: 22, to: 22 }, icmp: undefined, cidrs: ['11.0.0.0/8'], sets: [], sources: ['b'] },
    ],
  },
];

for (const c of mergeCases) {
  test(`merge: ${c.name}`, () => {
    const b = new CloudBuilder();
    for (const r of c.rules) b.rule(1, r);
    b.vm(1, { groups: [1] });
    assert.deepEqual(compileVm(b.state, 1).v4.ingress.map(strip), c.want);
  });
}

test('canonical: rule order in the store does not change the policy or its hash; a change does', () => {
  const rules: RuleSpec[] = [
    { protocol: 'udp', ports: [53, 53], cidr: '10.0.0.0/8' }, { protocol: 'tcp', ports: [443, 443], cidr: '0.0.0.0/0' },
    { dir: 'egress', protocol: 'icmp', icmp: [8, 0], cidr: '::/0' }, { protocol: 47, cidr: '192.0.2.0/24' }, { protocol: 'all', group: 2 },
  ];
  const build = (order: RuleSpec[]) => {
    const b = new CloudBuilder();
    for (const r of order) b.rule(1, { ...r, uuid: `u${rules.indexOf(r)}` });
    b.vm(1, { groups: [1] });
    return b;
  };
  const p1 = compileVm(build(rules).state, 1);
  const p2 = compileVm(build([...rules].reverse()).state, 1);
  assert.deepEqual(p1, p2);
  assert.match(p1.hash, /^[0-9a-f]{64}$/);
  assert.deepEqual(p1.v4.ingress.map((r) => r.protocol), ['all', 'tcp', 'udp', 47]);
  for (const r of [...p1.v4.ingress, ...p1.v6.egress]) assert.match(r.id, /^[0-9a-f]{12}$/);
  const b3 = build(rules);
  b3.rule(1, { protocol: 'tcp', ports: [8080, 8080], cidr: '0.0.0.0/0' });
  assert.notEqual(compileVm(b3.state, 1).hash, p1.hash);
  const b4 = build(rules);
  b4.state.nicsByVm.get(1)![0]!.secondaryIps.push('10.1.0.99');
  assert.notEqual(compileVm(b4.state, 1).hash, p1.hash);
});

test('rule ids depend on match and peers, not on API rule ids', () => {
  const a = new CloudBuilder(); a.rule(1, { protocol: 'tcp', ports: [22, 22], cidr: '10.0.0.0/8', uuid: 'x' }); a.vm(1, { groups: [1] });
  const b = new CloudBuilder(); b.rule(1, { protocol: 'tcp', ports: [22, 22], cidr: '10.0.0.0/8', uuid: 'y' }); b.vm(1, { groups: [1] });
  const c = new CloudBuilder(); c.rule(1, { protocol: 'tcp', ports: [22, 22], cidr: '10.0.0.0/9', uuid: 'x' }); c.vm(1, { groups: [1] });
  const id = (s: CloudBuilder) => compileVm(s.state, 1).v4.ingress[0]!.id;
  assert.equal(id(a), id(b));
  assert.notEqual(id(a), id(c));
});

// ---- property test -------------------------------------------------------------------------


/** Independent reference: the stored rules of the VM's groups, read directly. */
function rawAllowingRules(state: CloudState, vmId: number, p: Packet): SecurityGroupRule[] | 'egress-open' {
  const rules = (state.groupsByVm.get(vmId) ?? []).flatMap((g) => state.rulesByGroup.get(g) ?? []);
  const fam = (r: SecurityGroupRule): Family | 'both' => (r.allowedGroupId !== null ? 'both' : r.cidr!.includes(':') ? 6 : 4);
  if (p.direction === 'egress' && !rules.some((r) => r.direction === 'egress' && (fam(r) === 'both' || fam(r) === p.family))) return 'egress-open';
  const pn = p.protocol === 'tcp' ? 6 : p.protocol === 'udp' ? 17 : p.protocol === 'icmp' ? (p.family === 4 ? 1 : 58) : p.protocol;
  const kind = pn === 6 ? 'tcp' : pn === 17 ? 'udp' : pn === (p.family === 4 ? 1 : 58) ? 'icmp' : null;
  const type = p.family === 4 ? 'ipv4' : 'ipv6';
  return rules.filter((r) => {
    if (r.direction !== p.direction) return false;
    const proto = r.protocol;
    let protoOk: boolean;
    if (proto === 'all' || proto === 0) protoOk = true;
    else if (proto === 'tcp' || proto === 'udp') {
      const from = r.ports!.from, to = r.ports!.from === 0 && r.ports!.to === 0 ? 65535 : r.ports!.to;
      protoOk = kind === proto && p.port! >= from && p.port! <= to;
    } else if (proto === 'icmp' || proto === 1) {
      protoOk = kind === 'icmp' && (r.icmp!.type === -1 || (r.icmp!.type === p.icmpType && (r.icmp!.code === -1 || r.icmp!.code === p.icmpCode)));
    } else protoOk = pn === proto;
    if (!protoOk) return false;
    if (r.cidr !== null) {
      if (fam(r) !== p.family) return false;
      const bl = new BlockList();
      const [net, len] = r.cidr.split('/');
      bl.addSubnet(net!, Number(len), type);
      return bl.check(p.peer, type);
    }
    const bl = new BlockList();
    for (const m of state.membersByGroup.get(r.allowedGroupId!) ?? []) {
      if (state.vms.get(m)?.state !== 'Running') continue;
      for (const n of state.nicsByVm.get(m) ?? []) {
        for (const a of [n.ipv4, n.ipv6, ...n.secondaryIps]) if (a && (a.includes(':') ? 6 : 4) === p.family) bl.addAddress(a, type);
      }
    }
    return bl.check(p.peer, type);
  });
}

function randomCloud(rnd: () => number): CloudBuilder {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const int = (lo: number, hi: number) => lo + Math.floor(rnd() * (hi - lo + 1));
  const b = new CloudBuilder();
  for (let g = 1; g <= 4; g++) b.group(g);
  const v4Cidrs = ['0.0.0.0/0', '0.0.0.0/1', '128.0.0.0/1', '10.0.0.0/8', '10.0.0.0/24', '10.0.0.0/25', '10.0.0.128/25', '10.0.0.0/28', '10.0.0.16/28', '10.0.0.8/29', '10.0.0.5/32', '10.0.0.6/31', '10.0.1.0/24', '10.0.0.3/30'];
  const v6Cidrs = ['::/0', '2001:db8::/32', '2001:db8::/120', '2001:db8::/121', '2001:db8::80/121', '2001:db8::10/124', '2001:db8::5/128', '2001:db8::4/127'];
  const ports = [0, 1, 20, 21, 22, 23, 24, 79, 80, 81, 82, 443, 444, 65534, 65535];
  // Each cloud draws from a few values of each pool, so equal peers and near ports (what merging
  // acts on) are common.
  const few = <T>(xs: readonly T[], n: number): T[] => Array.from({ length: n }, () => pick(xs));
  // Half the clouds are dense: mostly tcp ingress rules between one or two peers, so that
  // adjacent, overlapping and gapped port ranges with equal peers occur often.
  const dense = rnd() < 0.5;
  const v4 = few(v4Cidrs, dense ? int(1, 2) : int(1, 4)), v6 = few(v6Cidrs, dense ? 1 : int(1, 3)), pp = few(ports, int(2, 6));
  const nRules = int(0, 14);
  for (let i = 0; i < nRules; i++) {
    const protocol = dense ? pick(['tcp', 'tcp', 'tcp', 'udp', 'icmp', 'all'] as const) : pick(['tcp', 'udp', 'tcp', 'udp', 'icmp', 'all', 47, 0, 6] as const);
    const spec: RuleSpec = { dir: rnd() < (dense ? 0.85 : 0.55) ? 'ingress' : 'egress', protocol, uuid: `r${i}` };
    if (protocol === 'tcp' || protocol === 'udp') {
      if (rnd() < 0.1) spec.ports = [0, 0];
      else if (rnd() < 0.3) { const a = pick(pp), c = pick(pp); spec.ports = [Math.min(a, c), Math.max(a, c)]; } else { const a = pick(pp); spec.ports = [a, Math.min(65535, a + pick([0, 0, 1, 2, 3, 60]))]; }
    }
    if (protocol === 'icmp') {
      const type = pick([-1, 0, 3, 8, 128]);
      spec.icmp = [type, type === -1 ? -1 : pick([-1, 0, 1])];
    }
    const r = rnd();
    if (r < 0.2) spec.group = int(1, 4);
    else if (r < 0.65) spec.cidr = pick(v4);
    else spec.cidr = pick(v6);
    b.rule(rnd() < 0.6 ? 1 : int(2, 4), spec);
  }
  const states: VmState[] = ['Running', 'Running', 'Stopped'];
  b.vm(1, { groups: [1, ...(rnd() < 0.5 ? [int(2, 4)] : [])], nics: [{ ipv4: '10.0.0.1', ipv6: '2001:db8::1' }] });
  for (let v = 2; v <= 6; v++) {
    const groups = [...new Set([int(1, 4), int(1, 4)])].slice(0, int(1, 2));
    b.vm(v, {
      groups, state: pick(states), host: int(1, 2),
      nics: [{ ipv4: `10.0.0.${v}`, ipv6: `2001:db8::${v}`, secondary: rnd() < 0.5 ? [`10.0.0.${v + 16}`, `2001:db8::${v + 16}`] : [] }],
    });
  }
  return b;
}

function randomPacket(rnd: () => number): Packet {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const family: Family = rnd() < 0.6 ? 4 : 6;
  const host = pick([0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 18, 21, 22, 100, 127, 128, 200, 255]);
  const peer = family === 4 ? (rnd() < 0.9 ? `10.0.0.${host}` : pick(['10.0.1.1', '192.0.2.1', '200.1.1.1'])) : (rnd() < 0.9 ? `2001:db8::${host.toString(16)}` : pick(['2001:db9::1', 'fd00::1']));
  const protocol = pick(['tcp', 'udp', 'icmp', 47, 50, 6, 'tcp'] as const);
  const p: Packet = { family, direction: rnd() < 0.5 ? 'ingress' : 'egress', protocol, peer };
  if (protocol === 'tcp' || protocol === 'udp' || protocol === 6) p.port = pick([0, 1, 2, 20, 21, 22, 23, 24, 25, 78, 79, 80, 81, 82, 83, 442, 443, 444, 445, 65534, 65535]);
  if (protocol === 'icmp') { p.icmpType = pick([0, 3, 8, 128, 129]); p.icmpCode = pick([0, 1, 2]); }
  return p;
}

/** Packets at the edges of a stored rule: ports and peers just inside and just outside. */
function edgePackets(rnd: () => number, r: SecurityGroupRule, state: CloudState): Packet[] {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  let family: Family = rnd() < 0.5 ? 4 : 6;
  let peers: string[];
  if (r.cidr !== null) {
    const c = parseCidr(r.cidr)!;
    family = c.family;
    const [lo, hi] = cidrRange(c);
    const max = family === 4 ? (1n << 32n) - 1n : (1n << 128n) - 1n;
    peers = [lo, hi, lo - 1n, hi + 1n].filter((v) => v >= 0n && v <= max).map((v) => formatIp(family, v));
  } else {
    const ms = (state.membersByGroup.get(r.allowedGroupId!) ?? []).flatMap((m) => state.nicsByVm.get(m) ?? []);
    peers = ms.flatMap((n) => [n.ipv4, n.ipv6, ...n.secondaryIps]).filter((a): a is string => !!a && (a.includes(':') ? 6 : 4) === family);
    if (peers.length === 0) peers = [family === 4 ? '10.0.0.9' : '2001:db8::9'];
  }
  const out: Packet[] = [];
  const proto = r.protocol === 'tcp' || r.protocol === 'udp' ? r.protocol : pick(['tcp', 'udp', 'icmp', 47] as const);
  const lo = r.ports?.from ?? 0, hi = r.ports?.to ?? 65535;
  for (let i = 0; i < 6; i++) {
    const p: Packet = { family, direction: r.direction, protocol: proto, peer: pick(peers) };
    if (proto === 'tcp' || proto === 'udp') p.port = Math.min(65535, Math.max(0, pick([lo - 1, lo, hi, hi + 1])));
    if (proto === 'icmp') { p.icmpType = r.icmp ? Math.max(0, r.icmp.type + pick([-1, 0, 1])) : pick([0, 8]); p.icmpCode = r.icmp ? Math.max(0, r.icmp.code + pick([0, 1])) : 0; }
    out.push(p);
  }
  return out;
}

test('property: merging never changes a verdict (seeded random rules × packets)', () => {
  const seed = Number(process.env.POLICY_SEED ?? 20261121);
  const rnd = mulberry32(seed);
  let checked = 0, allowed = 0;
  for (let cloud = 0; cloud < 600; cloud++) {
    const b = randomCloud(rnd);
    const merged = compileVm(b.state, 1);
    const unmerged = compileVm(b.state, 1, { merge: false });
    const sets = setsFor(b.state, merged);
    const stored = [...b.state.rulesByGroup.values()].flat();
    const packets = Array.from({ length: 10 }, () => randomPacket(rnd));
    for (let i = 0; i < 3 && stored.length > 0; i++) packets.push(...edgePackets(rnd, stored[Math.floor(rnd() * stored.length)]!, b.state));
    for (const p of packets) {
      const ctx = () => `seed=${seed} cloud=${cloud} packet=${JSON.stringify(p)} rules=${JSON.stringify([...b.state.rulesByGroup.entries()])} groups=${JSON.stringify(b.state.groupsByVm.get(1))}`;
      const raw = rawAllowingRules(b.state, 1, p);
      const rawAllow = raw === 'egress-open' || raw.length > 0;
      const vm = evaluate(merged, p, sets);
      const vu = evaluate(unmerged, p, sets);
      assert.equal(vu.allow, rawAllow, `unmerged vs stored rules: ${ctx()}`);
      assert.equal(vm.allow, rawAllow, `merged vs stored rules: ${ctx()}`);
      assert.equal(vm.reason.kind === 'egress-open', raw === 'egress-open', ctx());
      if (vm.reason.kind === 'rule' && raw !== 'egress-open') {
        const allowing = new Set(raw.map((r) => r.uuid));
        assert.ok(vm.reason.sources.some((s) => allowing.has(s)), `deciding rule names no allowing API rule: ${ctx()}`);
      }
      checked++; if (vm.allow) allowed++;
    }
  }
  // Both outcomes must be well represented, or the test proves little.
  assert.ok(allowed > checked * 0.15 && allowed < checked * 0.85, `allowed ${allowed} of ${checked}`);
});
