// Which tracked connections a VM's policy no longer allows (revoke dry runs now; cutting connections on
// revoke in phase 2 of issue 11 uses the same function). A conntrack entry's original direction says
// who opened the flow: towards one of the VM's addresses → an ingress flow from the peer; from one of
// them → an egress flow to the peer. The verdict is explainPacket's (baseline + evaluate) for the
// flow's first packet. Entries that involve none of the VM's addresses are left alone. Pure.
import type { TrackedConnection } from '../model/telemetry.js';
import type { AddressSet, NicPolicy, VmPolicy } from './ir.js';
import { canonicalIp } from './cidr.js';
import { explainPacket, type ExplainPacket } from './explain.js';
import type { SecurityGroupRule } from '../model/types.js';

/** The flow's first packet as the VM sees it, and the NIC involved; null when the VM is not an end. */
export function connectionPacket(c: TrackedConnection, nics: readonly NicPolicy[]): { packet: ExplainPacket; nic: NicPolicy } | null {
  const src = canonicalIp(c.src);
  const dst = canonicalIp(c.dst);
  if (!src || !dst) return null;
  const owner = (addr: string) => nics.find((n) => (c.family === 4 ? n.ipv4 : n.ipv6).includes(addr));
  const base = { family: c.family, protocol: c.protocol, ...(c.icmpType !== undefined ? { icmpType: c.icmpType, icmpCode: c.icmpCode ?? 0 } : {}) };
  const toVm = owner(dst);
  if (toVm) return { nic: toVm, packet: { ...base, direction: 'ingress', peer: src, port: c.dport, sourcePort: c.sport } };
  const fromVm = owner(src);
  if (fromVm) return { nic: fromVm, packet: { ...base, direction: 'egress', peer: dst, port: c.dport, sourcePort: c.sport } };
  return null;
}

/** The connections that `policy` (the VM's policy after a change) would not allow if they were opened now. */
export function disallowedConnections(policy: VmPolicy, sets: ReadonlyMap<string, AddressSet>, connections: readonly TrackedConnection[],
  apiRule: (uuid: string) => SecurityGroupRule | undefined = () => undefined): TrackedConnection[] {
  const out: TrackedConnection[] = [];
  for (const c of connections) {
    if (c.vmId !== policy.vmId) continue;
    const flow = connectionPacket(c, policy.nics);
    if (!flow) continue;
    if (!explainPacket(policy, flow.nic, flow.packet, sets, apiRule).allow) out.push(c);
  }
  return out;
}
