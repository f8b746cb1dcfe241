// compileVm: one VM's policy from all its groups' rules (DESIGN.md §3).
//
// - Ingress: default deny; the rules allow. Egress per family: open while the VM's groups have no
//   egress rule whose peer is of that family (a group reference counts for both families), then only
//   what the egress rules allow. The other family stays open.
// - notrack per family: an ingress rule of protocol all from 0.0.0.0/0 (::/0) AND an egress rule of
//   protocol all to 0.0.0.0/0 (::/0) — both directions (CloudStack #14099 needed only one).
// - A VM's policy never depends on set contents: a membership change updates sets, not rules.
// - Traffic the dataplane always allows (DHCP client, DNS, IPv6 neighbour discovery, replies) and
//   always blocks (spoofing, DHCP server, RA) is its baseline, not part of the policy.
import type { Direction, Family } from '../model/types.js';
import type { FamilyPolicy, NicPolicy, PolicyRule, VmPolicy } from './ir.js';
import type { CloudState } from './state.js';
import { BITS, rangesToCidrTexts } from './cidr.js';
import { sha256Hex, shortId } from './hash.js';
import { compareEntries, mergeEntries } from './merge.js';
import { ruleEntries, type Entry } from './rules.js';
import { nicAddresses } from './sets.js';

export interface CompileOptions {
  /** false: one IR rule per stored rule and family, unmerged (for tests of the merge; ids may repeat). */
  merge?: boolean;
}

function toPolicyRule(e: Entry): PolicyRule {
  const cidrs = rangesToCidrTexts(e.family, e.ranges);
  const match = { protocol: e.protocol, ...(e.ports ? { ports: { ...e.ports } } : {}), ...(e.icmp ? { icmp: { ...e.icmp } } : {}) };
  // The id's text is built directly (hot path); it covers direction, family, match and peers.
  const id = shortId(`${e.direction}|${e.family}|${e.protocol}|${e.ports ? `${e.ports.from}-${e.ports.to}` : ''}|${e.icmp ? `${e.icmp.type}/${e.icmp.code}` : ''}|${cidrs.join(',')}|${e.sets.join(',')}`);
  return { id, ...match, cidrs, sets: [...e.sets], sources: [...e.sources] };
}

function allowsAllFromAnywhere(e: Entry): boolean {
  const full = (1n << BigInt(BITS[e.family])) - 1n;
  return e.protocol === 'all' && e.ranges.some(([s, t]) => s === 0n && t === full);
}

function familyPolicy(entries: Entry[], family: Family, merge: boolean, badEgress: boolean): FamilyPolicy {
  const pick = (d: Direction) => {
    const es = entries.filter((e) => e.family === family && e.direction === d);
    return merge ? mergeEntries(es) : es.sort(compareEntries);
  };
  const ingress = pick('ingress');
  const egress = pick('egress');
  return {
    ingress: ingress.map(toPolicyRule),
    egress: egress.map(toPolicyRule),
    // An egress rule the compiler cannot read still closes egress (fail closed, both families).
    egressRestricted: egress.length > 0 || badEgress,
    notrack: ingress.some(allowsAllFromAnywhere) && egress.some(allowsAllFromAnywhere),
  };
}

export function nicPolicies(state: CloudState, vmId: number): NicPolicy[] {
  const nics = [...(state.nicsByVm.get(vmId) ?? [])].sort((a, b) => a.id - b.id);
  return nics.map((n) => ({
    nicId: n.uuid,
    mac: n.mac.toLowerCase(),
    ipv4: nicAddresses(n, 4),
    ipv6: nicAddresses(n, 6),
    isDefault: n.isDefault,
    deviceName: n.deviceName ?? null,
  }));
}

/** All entries of the VM's groups' rules (unmerged), and whether some egress rule was unreadable. */
export function vmEntries(state: CloudState, vmId: number): { entries: Entry[]; badEgress: boolean } {
  const groups = [...new Set(state.groupsByVm.get(vmId) ?? [])];
  const entries: Entry[] = [];
  let badEgress = false;
  for (const g of groups) {
    for (const r of state.rulesByGroup.get(g) ?? []) {
      const es = ruleEntries(r);
      if (es.length === 0 && r.direction === 'egress') badEgress = true;
      entries.push(...es);
    }
  }
  return { entries, badEgress };
}

/** The policy of one VM (whatever its state; callers decide placement). */
export function compileVm(state: CloudState, vmId: number, options: CompileOptions = {}): VmPolicy {
  const vm = state.vms.get(vmId);
  if (!vm) throw new Error(`compileVm: unknown VM id ${vmId}`);
  const merge = options.merge ?? true;
  const { entries, badEgress } = vmEntries(state, vmId);
  const body = {
    vmId: vm.uuid,
    instanceName: vm.instanceName,
    nics: nicPolicies(state, vmId),
    v4: familyPolicy(entries, 4, merge, badEgress),
    v6: familyPolicy(entries, 6, merge, badEgress),
  };
  // Every object above is built with a fixed key order, so plain JSON is canonical here (and fast).
  return { ...body, hash: sha256Hex(JSON.stringify(body)) };
}
