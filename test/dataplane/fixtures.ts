// Shared builders for dataplane tests: policy IR objects built directly (no compiler needed).
import type { AddressSet, FamilyPolicy, HostDesiredState, IrProtocol, NicPolicy, PolicyRule, VmPolicy } from '../../src/policy/ir.js';

export function fam(o: Partial<FamilyPolicy> = {}): FamilyPolicy {
  const f: FamilyPolicy = { ingress: [], egress: [], egressRestricted: false, notrack: false, ...o };
  if (o.egress && o.egress.length && o.egressRestricted === undefined) f.egressRestricted = true;
  return f;
}

let seq = 0;
export function rule(protocol: IrProtocol, peers: string[], o: { ports?: [number, number]; icmp?: [number, number]; sets?: string[]; id?: string } = {}): PolicyRule {
  return {
    id: o.id ?? `r${++seq}`,
    protocol,
    ports: o.ports ? { from: o.ports[0], to: o.ports[1] } : undefined,
    icmp: o.icmp ? { type: o.icmp[0], code: o.icmp[1] } : undefined,
    cidrs: peers,
    sets: o.sets ?? [],
    sources: [],
  };
}

export function nic(id: string, mac: string, ipv4: string[], ipv6: string[] = [], deviceName: string | null = null): NicPolicy {
  return { nicId: id, mac, ipv4, ipv6, isDefault: true, deviceName };
}

export function vm(id: string, instanceName: string, nics: NicPolicy[], v4: Partial<FamilyPolicy> = {}, v6: Partial<FamilyPolicy> = {}): VmPolicy {
  return { vmId: id, instanceName, nics, v4: fam(v4), v6: fam(v6), hash: `${id}-h` };
}

export function hostState(vms: VmPolicy[], sets: AddressSet[] = [], revision = 1): HostDesiredState {
  return { hostId: 'host-1', revision, vms: [...vms].sort((a, b) => a.vmId.localeCompare(b.vmId)), sets: [...sets].sort((a, b) => a.id.localeCompare(b.id)) };
}
