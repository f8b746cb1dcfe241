// analyzeChange: which VMs, sets and hosts each kind of change touches — and that it reads only
// what the change involves (counted map accesses on a large cloud, not timings).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { analyzeChange, compileAddressSet, compileVm, hostDesiredState, indexCloudState, type Impact } from '../../src/policy/api.js';
import type { Change } from '../../src/model/changes.js';
import type { CloudState } from '../../src/policy/state.js';
import { CloudBuilder, cloneState } from './builder.js';
import { mulberry32 } from '../helpers/prng.js';

/**
 * Groups: 1 web (allows ssh from 2), 2 admin (allows itself), 3 dns clients (allow 4), 4 dns servers,
 * 5 unrelated. Hosts 1–3.
 */
function cloud(): CloudBuilder {
  const b = new CloudBuilder();
  b.rule(1, { protocol: 'tcp', ports: [22, 22], group: 2 });
  b.rule(2, { protocol: 'all', group: 2 });
  b.rule(3, { protocol: 'udp', ports: [53, 53], group: 4 });
  b.rule(4, { protocol: 'udp', ports: [53, 53], cidr: '10.0.0.0/8' });
  b.group(5);
  b.vm(11, { host: 1, groups: [1, 2], nics: [{ ipv4: '10.0.0.11', ipv6: '2001:db8::11' }] });
  b.vm(12, { host: 1, groups: [1], nics: [{ ipv4: '10.0.0.12' }] });
  b.vm(13, { host: 1, groups: [1], state: 'Stopped', nics: [{ ipv4: '10.0.0.13' }] });
  b.vm(14, { host: null, groups: [2], state: 'Stopped', nics: [{ ipv4: '10.0.0.14' }] });
  b.vm(21, { host: 2, groups: [3], nics: [{ ipv4: '10.0.0.21' }] });
  b.vm(22, { host: 2, groups: [2, 4], nics: [{ ipv4: '10.0.0.22' }] });
  b.vm(31, { host: 3, groups: [5], nics: [{ ipv4: '10.0.0.31' }] });
  b.vm(32, { host: 3, groups: [4], nics: [{ ipv4: '10.0.0.32' }] });
  return b;
}

const show = (i: Impact) => ({ vms: [...i.vms].sort((a, b) => a - b), sets: [...i.sets].sort(), hosts: [...i.hosts].sort((a, b) => a - b) });

interface Case {
  name: string;
  /** Mutates the cloud (after = mutated, before = copy taken first) and returns the change. */
  change: (b: CloudBuilder) => Change;
  withBefore: boolean;
  want: { vms: number[]; sets: string[]; hosts: number[] };
}

const cases: Case[] = [
  {
    name: 'rule added to an unreferenced group: its members and their hosts only',
    change: (b) => { b.rule(5, { protocol: 'tcp', ports: [80, 80], cidr: '0.0.0.0/0' }); return { kind: 'rules', groupId: 5 }; },
    withBefore: true, want: { vms: [31], sets: [], hosts: [3] },
  },
  {
    name: 'rule referencing a new group: members (stopped too) + the newly referenced sets; hosts of running members',
    change: (b) => { b.rule(1, { protocol: 'udp', ports: [53, 53], group: 4 }); return { kind: 'rules', groupId: 1 }; },
    withBefore: true, want: { vms: [11, 12, 13], sets: ['sg4v4', 'sg4v6'], hosts: [1] },
  },
  {
    name: 'same, without before: every set the group references',
    change: (b) => { b.rule(1, { protocol: 'udp', ports: [53, 53], group: 4 }); return { kind: 'rules', groupId: 1 }; },
    withBefore: false, want: { vms: [11, 12, 13], sets: ['sg2v4', 'sg2v6', 'sg4v4', 'sg4v6'], hosts: [1] },
  },
  {
    name: 'rule revoked: members and hosts, no sets',
    change: (b) => { b.state.rulesByGroup.set(3, []); return { kind: 'rules', groupId: 3 }; },
    withBefore: true, want: { vms: [21], sets: [], hosts: [2] },
  },
  {
    name: 'VM stops: its sets (only the family it has addresses in) and every host referencing them',
    change: (b) => { b.state.vms.get(32)!.state = 'Stopped'; return { kind: 'vmState', vmId: 32 }; },
    withBefore: true, want: { vms: [32], sets: ['sg4v4'], hosts: [2, 3] },
  },
  {
    name: 'VM stops, without before: both families, same hosts',
    change: (b) => { b.state.vms.get(32)!.state = 'Stopped'; return { kind: 'vmState', vmId: 32 }; },
    withBefore: false, want: { vms: [32], sets: ['sg4v4', 'sg4v6'], hosts: [2, 3] },
  },
  {
    name: 'membership: left group 5, joined group 2 (self-referencing, referenced by 1): old and new sets, their holders, own host',
    change: (b) => { b.setGroups(31, [2]); return { kind: 'membership', vmId: 31 }; },
    withBefore: true, want: { vms: [31], sets: ['sg2v4', 'sg5v4'], hosts: [1, 2, 3] },
  },
  {
    name: 'secondary IP added to an unreferenced group member: its set and its host only',
    change: (b) => { b.state.nicsByVm.get(12)![0]!.secondaryIps.push('10.0.0.112'); return { kind: 'nic', vmId: 12 }; },
    withBefore: true, want: { vms: [12], sets: ['sg1v4'], hosts: [1] },
  },
  {
    name: 'IPv6 secondary added to a VM of groups 2 and 4: only their v6 sets change, referencers\' hosts told',
    change: (b) => { b.state.nicsByVm.get(22)![0]!.secondaryIps.push('2001:db8::22'); return { kind: 'nic', vmId: 22 }; },
    withBefore: true, want: { vms: [22], sets: ['sg2v6', 'sg4v6'], hosts: [1, 2] },
  },
  {
    name: 'NIC change on a stopped VM changes no set',
    change: (b) => { b.state.nicsByVm.get(13)![0]!.ipv4 = '10.0.0.113'; return { kind: 'nic', vmId: 13 }; },
    withBefore: true, want: { vms: [13], sets: [], hosts: [1] },
  },
  {
    name: 'live migration: source and target hosts; sets unchanged',
    change: (b) => { b.state.vms.get(22)!.hostId = 3; return { kind: 'placement', vmId: 22, fromHostId: 2, toHostId: 3 }; },
    withBefore: true, want: { vms: [22], sets: [], hosts: [2, 3] },
  },
  {
    name: 'live migration without before: conservatively its sets and their holders too',
    change: (b) => { b.state.vms.get(22)!.hostId = 3; return { kind: 'placement', vmId: 22, fromHostId: 2, toHostId: 3 }; },
    withBefore: false, want: { vms: [22], sets: ['sg2v4', 'sg2v6', 'sg4v4', 'sg4v6'], hosts: [1, 2, 3] },
  },
  {
    name: 'deploy (a new Running VM): its sets and their holders, its host',
    change: (b) => { b.vm(40, { host: 1, groups: [4], nics: [{ ipv4: '10.0.0.40' }] }); return { kind: 'vmState', vmId: 40 }; },
    withBefore: true, want: { vms: [40], sets: ['sg4v4'], hosts: [1, 2] },
  },
  {
    name: 'destroy (VM gone from the state)',
    change: (b) => {
      b.setGroups(22, []); b.state.vms.delete(22); b.state.nicsByVm.delete(22); b.state.groupsByVm.delete(22);
      return { kind: 'vmState', vmId: 22 };
    },
    withBefore: true, want: { vms: [22], sets: ['sg2v4', 'sg4v4'], hosts: [1, 2] },
  },
  {
    name: 'host removed: the VMs placed on it',
    change: () => ({ kind: 'host', hostId: 3 }),
    withBefore: false, want: { vms: [31, 32], sets: [], hosts: [3] },
  },
  {
    name: 'group created: nothing to tell',
    change: (b) => { b.group(6); return { kind: 'group', groupId: 6 }; },
    withBefore: true, want: { vms: [], sets: [], hosts: [] },
  },
];

for (const c of cases) {
  test(`analyzeChange: ${c.name}`, () => {
    const b = cloud();
    indexCloudState(b.state); // as the control layer would have: index built before the change
    const before = cloneState(b.state);
    const change = c.change(b);
    assert.deepEqual(show(analyzeChange(b.state, change, c.withBefore ? before : undefined)), c.want);
  });
}

test('analyzeChange keeps the index current: a rule referencing a group makes its members\' hosts set holders', () => {
  const b = cloud();
  indexCloudState(b.state);
  b.rule(5, { protocol: 'all', group: 1 });          // group 5 (VM 31 on host 3) now references group 1
  analyzeChange(b.state, { kind: 'rules', groupId: 5 });
  const before = cloneState(b.state);
  b.state.vms.get(12)!.state = 'Stopped';           // a member of group 1 stops
  assert.deepEqual(show(analyzeChange(b.state, { kind: 'vmState', vmId: 12 }, before)), { vms: [12], sets: ['sg1v4'], hosts: [1, 3] });
  b.state.rulesByGroup.set(5, []);                   // and the reference goes away again
  analyzeChange(b.state, { kind: 'rules', groupId: 5 });
  const before2 = cloneState(b.state);
  b.state.vms.get(12)!.state = 'Running';
  assert.deepEqual(show(analyzeChange(b.state, { kind: 'vmState', vmId: 12 }, before2)), { vms: [12], sets: ['sg1v4'], hosts: [1] });
});

test('a partial before (just the changed VM\'s entries) is enough', () => {
  const b = cloud();
  const s = b.state;
  const before: CloudState = {
    groups: new Map(), rulesByGroup: new Map(), membersByGroup: new Map(),
    vms: new Map([[31, { ...s.vms.get(31)! }]]), nicsByVm: new Map([[31, structuredClone(s.nicsByVm.get(31)!)]]), groupsByVm: new Map([[31, [5]]]),
  };
  b.setGroups(31, [2]);
  assert.deepEqual(show(analyzeChange(s, { kind: 'membership', vmId: 31 }, before)), { vms: [31], sets: ['sg2v4', 'sg5v4'], hosts: [1, 2, 3] });
});

// ---- proportionality without timing: count what analyzeChange reads -------------------------

class CountingMap<K, V> extends Map<K, V> {
  reads = 0;
  override get(k: K): V | undefined { this.reads++; return super.get(k); }
  override has(k: K): boolean { this.reads++; return super.has(k); }
  override *entries(): MapIterator<[K, V]> { for (const e of super.entries()) { this.reads++; yield e; } }
  override *keys(): MapIterator<K> { for (const k of super.keys()) { this.reads++; yield k; } }
  override *values(): MapIterator<V> { for (const v of super.values()) { this.reads++; yield v; } }
  override [Symbol.iterator](): MapIterator<[K, V]> { return this.entries(); }
}

function bigCloud(nGroups: number, vmsPerGroup: number): { state: CloudState; reads: () => number; reset: () => void } {
  const b = new CloudBuilder();
  let vm = 1;
  for (let g = 1; g <= nGroups; g++) {
    b.rule(g, { protocol: 'tcp', ports: [22, 22], group: g === 1 ? 1 : g - 1 });
    b.rule(g, { protocol: 'tcp', ports: [443, 443], cidr: '0.0.0.0/0' });
    for (let i = 0; i < vmsPerGroup; i++, vm++) b.vm(vm, { host: 1 + (vm % 50), groups: [g], nics: [{ ipv4: `10.${vm >> 16 & 255}.${vm >> 8 & 255}.${vm & 255}` }] });
  }
  const s = b.state;
  const maps = [s.groups, s.rulesByGroup, s.vms, s.nicsByVm, s.groupsByVm, s.membersByGroup].map((m) => new CountingMap(m as Map<unknown, unknown>));
  const state = { groups: maps[0], rulesByGroup: maps[1], vms: maps[2], nicsByVm: maps[3], groupsByVm: maps[4], membersByGroup: maps[5] } as unknown as CloudState;
  return { state, reads: () => maps.reduce((n, m) => n + m.reads, 0), reset: () => maps.forEach((m) => { m.reads = 0; }) };
}

test('analyzeChange reads in proportion to the change, not to the cloud', () => {
  const small = bigCloud(20, 4);       // 80 VMs
  const large = bigCloud(2000, 4);     // 8,000 VMs, same shape
  const measure = (c: ReturnType<typeof bigCloud>, change: Change) => {
    indexCloudState(c.state);
    c.reset();
    analyzeChange(c.state, change);
    return c.reads();
  };
  for (const change of [
    { kind: 'rules', groupId: 10 }, { kind: 'vmState', vmId: 37 }, { kind: 'membership', vmId: 37 }, { kind: 'nic', vmId: 37 },
    { kind: 'placement', vmId: 37, fromHostId: 1, toHostId: 2 },
  ] as Change[]) {
    const a = measure(small, change), b = measure(large, change);
    assert.equal(a, b, `${change.kind}: ${a} reads in a cloud of 80 VMs vs ${b} in one of 8,000`);
    assert.ok(b < 100, `${change.kind}: ${b} reads`);
  }
});

// ---- property: the impact covers every real difference ------------------------------------


const HOSTS = [1, 2, 3];

/** Everything observable: each host's desired state, each VM's policy, each set's members. */
function observe(s: CloudState) {
  const hosts = new Map(HOSTS.map((h) => [h, JSON.stringify(hostDesiredState(s, h, `h${h}`, 0))]));
  const vms = new Map([...s.vms.keys()].map((v) => [v, JSON.stringify(compileVm(s, v))]));
  const sets = new Map<string, string>();
  for (const g of s.groups.keys()) for (const f of [4, 6] as const) sets.set(`sg${g}v${f}`, JSON.stringify(compileAddressSet(s, g, f).members));
  return { hosts, vms, sets };
}

function differing<K>(a: Map<K, string>, b: Map<K, string>): K[] {
  return [...new Set([...a.keys(), ...b.keys()])].filter((k) => a.get(k) !== b.get(k));
}

function randomMutation(b: CloudBuilder, rnd: () => number, nextVm: { id: number }): Change {
  const s = b.state;
  const int = (lo: number, hi: number) => lo + Math.floor(rnd() * (hi - lo + 1));
  const vmIds = [...s.vms.keys()];
  const v = vmIds[int(0, vmIds.length - 1)]!;
  switch (int(0, 7)) {
    case 0: {
      const g = int(1, 5);
      if (rnd() < 0.6) b.rule(g, rnd() < 0.5 ? { protocol: 'tcp', ports: [int(1, 100), 200], group: int(1, 5) } : { protocol: 'all', cidr: '10.0.0.0/8', dir: rnd() < 0.5 ? 'egress' : 'ingress' });
      else s.rulesByGroup.set(g, (s.rulesByGroup.get(g) ?? []).slice(1));
      return { kind: 'rules', groupId: g };
    }
    case 1: b.setGroups(v, [...new Set([int(1, 5), int(1, 5)])].slice(0, int(0, 2))); return { kind: 'membership', vmId: v };
    case 2: s.vms.get(v)!.state = s.vms.get(v)!.state === 'Running' ? 'Stopped' : 'Running'; return { kind: 'vmState', vmId: v };
    case 3: {
      const from = s.vms.get(v)!.hostId, to = HOSTS[int(0, 2)]!;
      s.vms.get(v)!.hostId = to;
      return { kind: 'placement', vmId: v, fromHostId: from, toHostId: to };
    }
    case 4: {
      const nic = s.nicsByVm.get(v)![0]!;
      if (rnd() < 0.5) nic.secondaryIps.push(rnd() < 0.5 ? `10.9.${v}.${int(1, 250)}` : `2001:db8:9::${int(1, 999)}`);
      else nic.secondaryIps = nic.secondaryIps.slice(1);
      return { kind: 'nic', vmId: v };
    }
    case 5: {
      const id = nextVm.id++;
      b.vm(id, { host: HOSTS[int(0, 2)]!, groups: [int(1, 5)], nics: [{ ipv4: `10.0.1.${id}`, ipv6: rnd() < 0.5 ? `2001:db8::1:${id}` : null }] });
      return { kind: 'vmState', vmId: id };
    }
    case 6: {
      b.setGroups(v, []); s.vms.delete(v); s.nicsByVm.delete(v); s.groupsByVm.delete(v);
      return { kind: 'vmState', vmId: v };
    }
    default: return { kind: 'host', hostId: HOSTS[int(0, 2)]! };
  }
}

test('property: analyzeChange names every host, VM and set whose compiled state really changed', () => {
  const seed = Number(process.env.POLICY_SEED ?? 4242);
  const rnd = mulberry32(seed);
  for (let run = 0; run < 40; run++) {
    const b = new CloudBuilder();
    for (let g = 1; g <= 5; g++) b.rule(g, { protocol: 'tcp', ports: [22, 22], group: 1 + ((g * 3) % 5) });
    for (let v = 1; v <= 10; v++) {
      b.vm(v, { host: HOSTS[v % 3]!, state: rnd() < 0.8 ? 'Running' : 'Stopped', groups: [1 + (v % 5), ...(rnd() < 0.3 ? [1 + ((v + 2) % 5)] : [])], nics: [{ ipv4: `10.0.0.${v}`, ipv6: v % 2 ? `2001:db8::${v}` : null }] });
    }
    const nextVm = { id: 100 };
    indexCloudState(b.state);
    for (let step = 0; step < 20; step++) {
      const before = cloneState(b.state);
      const seen = observe(before);
      const change = randomMutation(b, rnd, nextVm);
      const now = observe(b.state);
      // Removals need `before` (the VM's groups and host are gone from `after`); otherwise either way.
      const removal = 'vmId' in change && !b.state.vms.has(change.vmId);
      const useBefore = change.kind === 'membership' || removal || rnd() < 0.5;
      const impact = analyzeChange(b.state, change, useBefore ? before : undefined);
      const ctx = `seed=${seed} run=${run} step=${step} change=${JSON.stringify(change)} before=${useBefore}`;
      for (const h of differing(seen.hosts, now.hosts)) assert.ok(impact.hosts.has(h), `host ${h} changed but not named: ${ctx}`);
      for (const v of differing(seen.vms, now.vms)) assert.ok(impact.vms.has(v), `VM ${v} changed but not named: ${ctx}`);
      for (const id of differing(seen.sets, now.sets)) assert.ok(impact.sets.has(id), `set ${id} changed but not named: ${ctx}`);
    }
    // The incrementally kept index equals a fresh one.
    const fresh = indexCloudState(cloneState(b.state));
    const kept = indexCloudState(b.state);
    const norm = (m: Map<number, Map<number, number> | Set<number>>) => [...m].map(([k, v]) => [k, [...v].sort()]).sort((x, y) => Number(x[0]) - Number(y[0]));
    assert.deepEqual(norm(kept.referencedBy), norm(fresh.referencedBy), `seed=${seed} run=${run}`);
    assert.deepEqual(norm(kept.vmsByHost), norm(fresh.vmsByHost), `seed=${seed} run=${run}`);
  }
});
