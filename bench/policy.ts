// Policy compiler benchmark (not a test): a cloud of 10,000 groups, 100,000 rules and 20,000 VMs.
// Shows that change analysis costs what the change touches (a rule change on a 5,000-member group
// vs a 50-member one; the same change in a cloud 10x smaller), plus compile and host-state times.
// Run: node --import tsx bench/policy.ts
import { performance } from 'node:perf_hooks';
import type { Change } from '../src/model/changes.js';
import type { Protocol, SecurityGroupRule, VmState } from '../src/model/types.js';
import { analyzeChange, compileAddressSet, compileVm, hostDesiredState, indexCloudState } from '../src/policy/api.js';
import { emptyCloudState, type CloudState } from '../src/policy/state.js';
import { summary } from './summary.js';
import { mulberry32 } from '../test/helpers/prng.js';


interface Shape { groups: number; rulesPerGroup: number; vms: number; hosts: number; big: number; small: number }

/** Group 1 has `big` members, group 2 `small`; every other VM is in 1–2 random groups from 3 up. */
function buildCloud(shape: Shape, seed = 42): CloudState {
  const rnd = mulberry32(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(rnd() * (hi - lo + 1));
  const s = emptyCloudState();
  let ruleId = 1;
  for (let g = 1; g <= shape.groups; g++) {
    s.groups.set(g, { id: g, uuid: `g-${g}`, name: `group${g}`, description: '', accountId: 1 + (g % 100), domainId: 1 });
    s.membersByGroup.set(g, []);
    const rules: SecurityGroupRule[] = [];
    for (let i = 0; i < shape.rulesPerGroup; i++, ruleId++) {
      const r = rnd();
      const protocol: Protocol = r < 0.6 ? 'tcp' : r < 0.8 ? 'udp' : r < 0.95 ? 'icmp' : 'all';
      const rule: SecurityGroupRule = {
        id: ruleId, uuid: `r-${ruleId}`, groupId: g, direction: rnd() < 0.8 ? 'ingress' : 'egress', protocol,
        cidr: null, allowedGroupId: null,
      };
      if (protocol === 'tcp' || protocol === 'udp') { const p = int(1, 9000); rule.ports = { from: p, to: p + (rnd() < 0.7 ? 0 : int(1, 100)) }; }
      if (protocol === 'icmp') rule.icmp = { type: -1, code: -1 };
      if (rnd() < 0.2) rule.allowedGroupId = int(1, shape.groups);
      else if (rnd() < 0.8) rule.cidr = `${int(1, 223)}.${int(0, 255)}.${int(0, 255)}.0/${int(16, 32)}`;
      else rule.cidr = `2001:db8:${int(0, 0xffff).toString(16)}::/${int(48, 128)}`;
      rules.push(rule);
    }
    s.rulesByGroup.set(g, rules);
  }
  for (let v = 1; v <= shape.vms; v++) {
    const state: VmState = rnd() < 0.9 ? 'Running' : 'Stopped';
    s.vms.set(v, { id: v, uuid: `vm-${String(v).padStart(8, '0')}`, instanceName: `i-1-${v}-VM`, name: `vm${v}`, accountId: 1, domainId: 1, hostId: 1 + (v % shape.hosts), state });
    s.nicsByVm.set(v, [{
      id: v, uuid: `nic-${v}`, vmId: v, networkId: 1, mac: `02:00:${((v >> 16) & 255).toString(16).padStart(2, '0')}:${((v >> 8) & 255).toString(16).padStart(2, '0')}:${(v & 255).toString(16).padStart(2, '0')}:00`,
      ipv4: `10.${(v >> 16) & 255}.${(v >> 8) & 255}.${v & 255}`, ipv6: v % 2 ? `2001:db8:ffff::${v.toString(16)}` : null,
      secondaryIps: v % 10 === 0 ? [`10.128.${(v >> 8) & 255}.${v & 255}`] : [], isDefault: true, deviceName: null,
    }]);
    const groups = v <= shape.big ? [1] : v <= shape.big + shape.small ? [2] : [...new Set([int(3, shape.groups), ...(rnd() < 0.3 ? [int(3, shape.groups)] : [])])];
    s.groupsByVm.set(v, groups);
    for (const g of groups) s.membersByGroup.get(g)!.push(v);
  }
  return s;
}

function time(runs: number, fn: (i: number) => void): { median: number; p99: number } {
  const ts: number[] = [];
  for (let i = 0; i < runs; i++) { const t0 = performance.now(); fn(i); ts.push(performance.now() - t0); }
  ts.sort((a, b) => a - b);
  return { median: ts[Math.floor(ts.length / 2)]!, p99: ts[Math.min(ts.length - 1, Math.floor(ts.length * 0.99))]! };
}

/** A rule authorized on group g and analysed as the control layer would after the commit (timed),
 *  then revoked again (untimed) so every run sees the same cloud. */
function ruleChange(s: CloudState, g: number, i: number, timings?: number[]): ReturnType<typeof analyzeChange> {
  const rules = s.rulesByGroup.get(g)!;
  rules.push({ id: 1e9 + i, uuid: `new-${i}`, groupId: g, direction: 'ingress', protocol: 'tcp', ports: { from: 10000 + i, to: 10000 + i }, cidr: '192.0.2.0/24', allowedGroupId: null });
  const t = performance.now();
  const impact = analyzeChange(s, { kind: 'rules', groupId: g } as Change);
  timings?.push(performance.now() - t);
  rules.pop();
  analyzeChange(s, { kind: 'rules', groupId: g } as Change);
  return impact;
}

function timeRuleChange(s: CloudState, g: number, runs: number): { median: number; p99: number } {
  const ts: number[] = [];
  for (let i = 0; i < runs; i++) ruleChange(s, g, i + 1, ts);
  ts.sort((a, b) => a - b);
  return { median: ts[Math.floor(ts.length / 2)]!, p99: ts[Math.min(ts.length - 1, Math.floor(ts.length * 0.99))]! };
}

const full: Shape = { groups: 10_000, rulesPerGroup: 10, vms: 20_000, hosts: 200, big: 5_000, small: 50 };
const tenth: Shape = { groups: 1_000, rulesPerGroup: 10, vms: 2_000, hosts: 20, big: 500, small: 50 };

let t0 = performance.now();
const cloud = buildCloud(full);
const buildMs = performance.now() - t0;
t0 = performance.now();
indexCloudState(cloud);
const indexMs = performance.now() - t0;
const ruleCount = [...cloud.rulesByGroup.values()].reduce((n, r) => n + r.length, 0);
const small = buildCloud(tenth);
indexCloudState(small);

const rows: [string, string, string, string][] = [];
const fmt = (n: number) => (n < 0.1 ? n.toFixed(4) : n < 10 ? n.toFixed(3) : n.toFixed(1));
const add = (what: string, r: { median: number; p99: number }, note = '') => rows.push([what, fmt(r.median), fmt(r.p99), note]);

let impact = ruleChange(cloud, 1, 0);
const bigImpact = `${impact.vms.size} VMs, ${impact.hosts.size} hosts`;
impact = ruleChange(cloud, 2, 0);
const smallImpact = `${impact.vms.size} VMs, ${impact.hosts.size} hosts`;
const big = timeRuleChange(cloud, 1, 300);
const fifty = timeRuleChange(cloud, 2, 300);
const fiftySmallCloud = timeRuleChange(small, 2, 300);
add('analyzeChange: rule on 5,000-member group', big, bigImpact);
add('analyzeChange: rule on 50-member group', fifty, smallImpact);
add('  same, cloud 10x smaller (2,000 VMs)', fiftySmallCloud, 'independent of cloud size');

// A VM of the big group stops: its sets change; hosts referencing group 1 must hear.
const member = 17;
const vmState = time(200, (i) => {
  cloud.vms.get(member)!.state = i % 2 ? 'Running' : 'Stopped';
  impact = analyzeChange(cloud, { kind: 'vmState', vmId: member });
});
add('analyzeChange: member of big group stops/starts', vmState, `${impact.sets.size} sets, ${impact.hosts.size} hosts`);
const other = 12_345;
const memb = time(200, (i) => {
  cloud.groupsByVm.set(other, i % 2 ? [3] : [3, 4]);
  impact = analyzeChange(cloud, { kind: 'membership', vmId: other });
});
add('analyzeChange: membership of an ordinary VM', memb, `${impact.sets.size} sets, ${impact.hosts.size} hosts`);

const rnd = mulberry32(7);
const compile = time(2000, () => compileVm(cloud, 1 + Math.floor(rnd() * full.vms)));
add('compileVm (random VMs)', compile);
add('compileVm (big-group member)', time(500, () => compileVm(cloud, 1 + Math.floor(rnd() * full.big))));
add('compileAddressSet (5,000-member group, v4)', time(50, () => compileAddressSet(cloud, 1, 4)));
let hs = hostDesiredState(cloud, 5, 'h5', 1);
const hostNote = `${hs.vms.length} VMs, ${hs.sets.length} sets`;
const host = time(50, (i) => { hs = hostDesiredState(cloud, 1 + (i % full.hosts), 'h', i); });
add('hostDesiredState (one host of 200)', host, hostNote);

console.log(`cloud: ${cloud.groups.size} groups, ${ruleCount} rules, ${cloud.vms.size} VMs, ${full.hosts} hosts; built in ${buildMs.toFixed(0)} ms, indexed in ${indexMs.toFixed(0)} ms (once)`);
const w = [Math.max(...rows.map((r) => r[0].length)), 10, 10];
console.log(`${'operation'.padEnd(w[0]!)}  ${'median ms'.padStart(w[1]!)}  ${'p99 ms'.padStart(w[2]!)}  note`);
for (const [a, b, c, d] of rows) console.log(`${a.padEnd(w[0]!)}  ${b.padStart(w[1]!)}  ${c.padStart(w[2]!)}  ${d}`);
console.log(`ratio rule change 5,000 vs 50 members: ${(big.median / fifty.median).toFixed(1)}x (members ratio 100x)`);
console.log(`ratio rule change 50 members, full vs 10x smaller cloud: ${(fifty.median / fiftySmallCloud.median).toFixed(2)}x`);

// Key figures for the `npm run bench` summary table. The target (issue 2): change analysis proportional
// to what changed — the 5,000 vs 50 ratio follows the members touched, the cloud-size ratio stays near 1.
summary('policy', 'analyzeChange rule, 5,000-member group (median)', big.median, 'ms');
summary('policy', 'analyzeChange rule, 50-member group (median)', fifty.median, 'ms');
summary('policy', 'ratio 5,000 vs 50 members', big.median / fifty.median, 'x', '~100x (members ratio)');
summary('policy', 'ratio 50 members, full vs 10x smaller cloud', fifty.median / fiftySmallCloud.median, 'x', '~1x (size-independent)');
summary('policy', 'compileVm, random VM (median)', compile.median, 'ms');
summary('policy', 'hostDesiredState, one host of 200 (median)', host.median, 'ms');
