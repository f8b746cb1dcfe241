// planHost: host desired state + discovered ports → the host plan (pure). Semantics are decided here
// once — which NICs are placed where, port and bridge numbers, conntrack zones, each NIC's own
// addresses, which VMs are untracked, which address sets exist — so no backend re-derives them.
import type { DataplaneInput } from '../backend.js';
import type { VmPolicy } from '../../policy/ir.js';
import { canonV6, isV4, isV6, linkLocalFromMac } from './addr.js';
import { BASELINE } from './baseline.js';
import { logging } from './reasons.js';
import { BRIDGE_ZONE_BASE, MAX_BRIDGES, assignNumbers, assignPorts } from './marks.js';
import type { BridgePlan, Fam, HostPlan, PortPlan, SetPlan, VmPlan } from './types.js';

/** Valid characters for an instance name we put into kernel object names. */
export function safeName(s: string): boolean { return /^[A-Za-z0-9_.:+@-]+$/.test(s); }

/** A network device name usable in matches: no `+` (a wildcard there), at most 15 characters. */
export function safeDevice(s: string): boolean { return s.length <= 15 && /^[A-Za-z0-9_.:@-]+$/.test(s); }

/** A NIC's own addresses (IPv6: plus its EUI-64 link-local), canonical and sorted. */
function nicOwn(fam: Fam, nic: VmPolicy['nics'][number]): string[] {
  const s = new Set<string>();
  if (fam === 4) nic.ipv4.filter(isV4).forEach((a) => s.add(a));
  else {
    nic.ipv6.filter(isV6).forEach((a) => s.add(canonV6(a)));
    s.add(linkLocalFromMac(nic.mac));
  }
  return [...s].sort();
}

interface Placement { nicIndex: number; device: string; bridge: string; number: number }

function planVm(vm: VmPolicy, placed: Placement[], missing: string[]): VmPlan {
  const ports: PortPlan[] = placed.map((p) => {
    const nic = vm.nics[p.nicIndex];
    return {
      device: p.device, bridge: p.bridge, number: p.number, vmId: vm.vmId, instanceName: vm.instanceName, nicIndex: p.nicIndex,
      nic, mac: nic.mac.toLowerCase(), own: { 4: nicOwn(4, nic), 6: nicOwn(6, nic) },
    };
  });
  const refs: [string, Fam][] = [];
  const seen = new Set<string>();
  for (const f of [4, 6] as Fam[]) {
    const pol = f === 4 ? vm.v4 : vm.v6;
    for (const r of [...pol.ingress, ...(pol.egressRestricted ? pol.egress : [])]) {
      for (const s of r.sets) if (!seen.has(s)) { seen.add(s); refs.push([s, f]); }
    }
  }
  const union = (f: Fam) => [...new Set(ports.flatMap((p) => p.own[f]))].sort();
  return {
    vmId: vm.vmId, instanceName: vm.instanceName, policy: vm, ports, missing,
    badInstanceName: !safeName(vm.instanceName),
    badDevices: placed.filter((p) => !safeDevice(p.device) || !safeDevice(p.bridge)).map((p) => `${p.device}@${p.bridge}`),
    addrs: { 4: union(4), 6: union(6) },
    refs,
  };
}

// Memo of planVm keyed by everything it reads: re-planning a host after a one-VM change costs one VM's
// work. Plans are never mutated, so sharing them is safe; planHost stays pure. A caller that keeps
// unchanged VmPolicy objects between calls (the agent does) skips even the content key.
const byObject = new WeakMap<VmPolicy, { key: string; plan: VmPlan }>();
const byContent = new Map<string, VmPlan>();
function planVmMemo(vm: VmPolicy, placed: Placement[], missing: string[]): VmPlan {
  const key = JSON.stringify([placed, missing]);
  const hit = byObject.get(vm);
  if (hit && hit.key === key) return hit.plan;
  const ck = JSON.stringify([vm.vmId, vm.instanceName, vm.nics, vm.v4, vm.v6, key]);
  let plan = byContent.get(ck);
  if (!plan) {
    if (byContent.size >= 20_000) byContent.clear();
    plan = planVm(vm, placed, missing);
    byContent.set(ck, plan);
  }
  byObject.set(vm, { key, plan });
  return plan;
}

export function planHost(input: DataplaneInput): HostPlan {
  const { state, ports } = input;
  const errors: Record<string, string> = {};
  const portNo = assignPorts(Object.values(ports.nics).map((p) => p.device).filter(safeDevice));
  const vms: VmPlan[] = [];
  for (const vm of state.vms) {
    const placed: Placement[] = [];
    const missing: string[] = [];
    vm.nics.forEach((nic, nicIndex) => {
      const p = ports.nics[nic.nicId];
      if (!p) missing.push(nic.nicId);
      else placed.push({ nicIndex, device: p.device, bridge: p.bridge, number: portNo.get(p.device) ?? 0 });
    });
    const plan = planVmMemo(vm, placed, missing);
    const problems = vmProblems(plan);
    if (problems.length) errors[vm.vmId] = problems.join('; ');
    if (placed.length && !plan.badInstanceName && !plan.badDevices.length) vms.push(plan);
  }

  const names = [...new Set([...vms.flatMap((v) => v.ports.map((p) => p.bridge)), ...Object.keys(ports.bridges)])].filter(safeDevice).sort();
  const numbers = assignNumbers(names, MAX_BRIDGES, 'bridges');
  const bridges: BridgePlan[] = names.map((name) => {
    const info = ports.bridges[name] ?? { uplinks: [], unknownTaps: [] };
    const number = numbers.get(name)!;
    return {
      name, number, zone: BRIDGE_ZONE_BASE + number - 1,
      uplinks: info.uplinks.filter(safeDevice), unknown: info.unknownTaps.filter(safeDevice),
      ports: vms.flatMap((v) => v.ports.filter((p) => p.bridge === name)).sort((a, b) => (a.device < b.device ? -1 : a.device > b.device ? 1 : 0)),
    };
  });

  const notrack = { 4: { untracked: new Set<string>(), tracked: new Set<string>() }, 6: { untracked: new Set<string>(), tracked: new Set<string>() } };
  for (const v of vms) {
    for (const f of [4, 6] as Fam[]) {
      const target = (f === 4 ? v.policy.v4 : v.policy.v6).notrack ? notrack[f].untracked : notrack[f].tracked;
      for (const a of v.addrs[f]) target.add(a);
    }
  }

  const known = new Set(state.sets.map((s) => s.id));
  const sets: SetPlan[] = state.sets.map((s) => ({
    id: s.id, family: s.family, known: true,
    members: [...new Set(s.members.map((m) => (s.family === 6 ? canonV6(m) : m)))].sort(),
  }));
  const unknownRefs = new Map<string, Fam>();
  for (const v of vms) for (const [id, f] of v.refs) if (!known.has(id) && !unknownRefs.has(id)) unknownRefs.set(id, f);
  for (const [id, family] of [...unknownRefs].sort((x, y) => (x[0] < y[0] ? -1 : 1))) sets.push({ id, family, members: [], known: false });

  return {
    vms, errors, bridges, sets, baseline: BASELINE,
    dropLog: logging(input.dropLog) ? { ...input.dropLog } : null,
    notrack: {
      4: { untracked: [...notrack[4].untracked].sort(), tracked: [...notrack[4].tracked].sort() },
      6: { untracked: [...notrack[6].untracked].sort(), tracked: [...notrack[6].tracked].sort() },
    },
  };
}

/** The plan-level reasons a VM is not (fully) programmed, in the order they are reported. */
export function vmProblems(v: VmPlan, extra: { instance?: boolean; clashes?: string[] } = {}): string[] {
  const problems: string[] = [];
  if (v.missing.length) problems.push(`NIC port not found on host: ${v.missing.join(', ')}`);
  if (v.badInstanceName || extra.instance) problems.push(`unusable instance name ${JSON.stringify(v.instanceName)}`);
  problems.push(...(extra.clashes ?? []));
  for (const d of v.badDevices) problems.push(`unusable device name ${d}`);
  return problems;
}
