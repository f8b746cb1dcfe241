// Where one server's fan-out time goes, without I/O (not a test): the Fleet (fleet.ts) driven directly
// over the shape of bench/fleet.ts — H hosts × V VMs, a tenant group per 40 hosts (three rules, one of
// them from the group itself), a "web" group with one member on every host — and one rule change on
// the web group (a member on every host), timed by step:
//   build   compile every placed VM (start-up, or a server taking every host);
//   advance every host's given state at the start position;
//   change  journal → impact → recompile (the VM policies, with their per-VM hash) → advance of every
//           dirty host → the JSON of each delta (what a push writes to the socket).
// `--held F` (0..1): the share of hosts this server holds, the others held by other servers (Fleet's
// passive hosts, see fleet.ts): shows what the per-host work scales with; at the end every passive host
// is activated (what a failover's hellos compile).
// Run: node --import tsx bench/fleet-core.ts [--hosts 10000] [--vms 20] [--changes 5] [--held 1]
import { emptyCloudState, type CloudState } from '../src/policy/state.js';
import { Fleet } from '../src/control/fleet.js';
import { Journal } from '../src/control/journal.js';
import { deltaJson } from '../src/control/wire.js';
import type { Reload } from '../src/control/load.js';
import type { SecurityGroupRule } from '../src/model/types.js';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
}
const H = Number(arg('hosts', '10000'));
const V = Number(arg('vms', '20'));
const CHANGES = Number(arg('changes', '5'));
const HELD = Number(arg('held', '1'));

let ruleId = 1;
const rule = (groupId: number, protocol: string, from: number | null, cidr: string | null, allowed: number | null): SecurityGroupRule =>
  ({ id: ruleId, uuid: `r-${ruleId++}`, groupId, direction: 'ingress', protocol, ports: from === null ? null : { from, to: from }, cidr, allowedGroupId: allowed }) as SecurityGroupRule;

function cloud(): CloudState {
  const s = emptyCloudState();
  const tenants = Math.max(1, Math.floor(H / 40));
  const WEB = 1;
  s.groups.set(WEB, { id: WEB, uuid: 'web', name: 'web', description: '', accountId: 1, domainId: 1 });
  s.rulesByGroup.set(WEB, [rule(WEB, 'tcp', 80, '0.0.0.0/0', null)]);
  for (let t = 0; t < tenants; t++) {
    const g = 2 + t;
    s.groups.set(g, { id: g, uuid: `t${t}`, name: `tenant-${t}`, description: '', accountId: 1, domainId: 1 });
    s.rulesByGroup.set(g, [rule(g, 'tcp', 22, '192.0.2.0/24', null), rule(g, 'tcp', 5432, null, g), rule(g, 'icmp', null, '10.0.0.0/8', null)]);
  }
  for (let h = 0; h < H; h++) for (let v = 0; v < V; v++) {
    const i = h * V + v;
    const id = i + 1;
    const n = i + 10;
    s.vms.set(id, { id, uuid: `00000000-0000-4000-8000-${String(id).padStart(12, '0')}`, instanceName: `i-1-${id}-VM`, name: `vm-${i}`, accountId: 1, domainId: 1, hostId: h + 1, state: 'Running' });
    s.nicsByVm.set(id, [{ id, uuid: `nic-${id}`, vmId: id, networkId: 1, mac: `02:00:${[n >> 24, n >> 16, n >> 8, n].map((x) => (x & 255).toString(16).padStart(2, '0')).join(':')}`,
      ipv4: `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`, ipv6: null, secondaryIps: [], isDefault: true, deviceName: null }]);
    const groups = [2 + (h % tenants)];
    if (v === 0) groups.push(WEB);
    s.groupsByVm.set(id, groups);
    for (const g of groups) { const m = s.membersByGroup.get(g); if (m) m.push(id); else s.membersByGroup.set(g, [id]); }
  }
  return s;
}

const ms = (t: number) => (performance.now() - t).toFixed(0);
const state = cloud();
const fleet = new Fleet(state);
for (let h = 1; h <= H; h++) fleet.addHost({ id: h, uuid: `host-${h}`, name: `fleet-${h}`, tokenHash: `t${h}`, revision: 1 });
const passive = new Set<number>();
for (let h = 1; h <= H; h++) if ((h % 1000) / 1000 >= HELD) passive.add(h);
for (const h of passive) fleet.passivate(h);
global.gc?.();
const heap0 = process.memoryUsage().heapUsed;
let t = performance.now();
fleet.buildAll();
const build = ms(t);
t = performance.now();
for (const h of fleet.hosts.keys()) fleet.advance(h, 1);
const advance0 = ms(t);
global.gc?.();
const heap1 = process.memoryUsage().heapUsed;
console.log(`hosts ${H} × ${V} VMs, held ${passive.size ? `${H - passive.size}` : 'all'}: build ${build} ms, first advance ${advance0} ms, heap +${((heap1 - heap0) / 2 ** 20).toFixed(0)} MB (${((heap1 - heap0) / Math.max(1, fleet.policies.size)).toFixed(0)} B per compiled VM; run with --expose-gc for exact figures)`);

for (let k = 0; k < CHANGES; k++) {
  const position = 2 + k;
  const rules = [...state.rulesByGroup.get(1)!, rule(1, 'tcp', 8000 + k, '0.0.0.0/0', null)];
  const reload: Reload = { groups: new Map([[1, state.groups.get(1)!]]), rules: new Map([[1, rules]]), vms: new Map(), nics: new Map(), groupsOfVm: new Map(), membersOfGroup: new Map([[1, [...state.membersByGroup.get(1)!]]]) };
  const t0 = performance.now();
  const journal = new Journal(state);
  journal.apply(reload);
  const impact = fleet.impact([{ kind: 'rules', groupId: 1 }], journal.before(), [], [1]);
  const t1 = performance.now();
  const dirty = fleet.recompile(impact, position);
  const t2 = performance.now();
  const deltas = [];
  for (const h of dirty) { const d = fleet.advance(h, position); if (d) deltas.push(d); }
  const t3 = performance.now();
  let bytes = 0;
  for (const d of deltas) bytes += deltaJson(d).length;
  const t4 = performance.now();
  console.log(`change ${k + 1}: impact ${(t1 - t0).toFixed(0)} ms (${impact.vms.size} VMs), recompile ${(t2 - t1).toFixed(0)} ms, advance ${(t3 - t2).toFixed(0)} ms (${deltas.length} deltas), JSON ${(t4 - t3).toFixed(0)} ms (${(bytes / 2 ** 20).toFixed(1)} MB); total ${(t4 - t0).toFixed(0)} ms`);
}

if (passive.size) {
  // A failover: every passive host activated (a hello each), between two batches.
  const t0 = performance.now();
  for (const h of passive) fleet.activate(h);
  console.log(`activate ${passive.size} passive hosts (a failover's hellos): ${(performance.now() - t0).toFixed(0)} ms`);
}
