// The policy IR: what the compiler produces per VM and what every dataplane backend renders.
// Plain JSON-serialisable data (it travels over the agent channel and is persisted by the agent).
import type { Family } from '../model/types.js';

export type IrProtocol = 'tcp' | 'udp' | 'icmp' | 'all' | number;

/** One compiled allow rule for one address family. `icmp` rules compile to ICMPv6 in family 6. */
export interface PolicyRule {
  /** Stable id derived from the rule's content (not from API rule ids): used in kernel comments. */
  id: string;
  protocol: IrProtocol;
  /** tcp/udp only; 0..65535 inclusive, merged where adjacent/overlapping. */
  ports?: { from: number; to: number };
  /** icmp only; -1 = any. */
  icmp?: { type: number; code: number };
  /** Peer CIDRs of this family, canonical (network address, merged, sorted). */
  cidrs: string[];
  /** Peer address-set ids (referenced groups) of this family. */
  sets: string[];
  /** API rule uuids this rule came from (for explain / listing). */
  sources: string[];
}

export interface FamilyPolicy {
  ingress: PolicyRule[];
  egress: PolicyRule[];
  /** false while the VM's groups have no egress rule of this family: all egress allowed. */
  egressRestricted: boolean;
  /** All protocols allowed from and to 0.0.0.0/0 (resp. ::/0) in both directions: untracked. */
  notrack: boolean;
}

export interface NicPolicy {
  nicId: string;          // NIC uuid
  mac: string;            // guest MAC, lower-case
  ipv4: string[];         // primary first, then secondaries
  ipv6: string[];         // global addresses, primary first; link-local is derived from the MAC by the dataplane
  isDefault: boolean;
  /** Explicit host device; otherwise discovered from the MAC (fe:…) convention. */
  deviceName: string | null;
}

export interface VmPolicy {
  vmId: string;           // VM uuid
  instanceName: string;   // i-<account>-<vm>-VM
  nics: NicPolicy[];
  v4: FamilyPolicy;
  v6: FamilyPolicy;
  /** Content hash over everything above (hex). */
  hash: string;
}

/** A referenced group, as the addresses of its running members for one family. Shared per host. */
export interface AddressSet {
  id: string;             // e.g. "sg12v4": stable for (group, family)
  family: Family;
  members: string[];      // sorted; IPv4 plain addresses, IPv6 plain addresses
}

/** Everything one host must enforce. */
export interface HostDesiredState {
  hostId: string;         // host uuid
  revision: number;
  vms: VmPolicy[];        // sorted by vmId
  sets: AddressSet[];     // sorted by id; exactly the sets the vms reference
}

/** A packet for `evaluate`: the reference semantics the dataplane is tested against. */
export interface Packet {
  family: Family;
  direction: 'ingress' | 'egress'; // relative to the VM being evaluated
  protocol: 'tcp' | 'udp' | 'icmp' | number;
  /** The peer's address (source for ingress, destination for egress). */
  peer: string;
  /** tcp/udp destination port. */
  port?: number;
  icmpType?: number;
  icmpCode?: number;
}

export interface Verdict {
  allow: boolean;
  /** The PolicyRule that allowed it, or why it was denied / allowed by default. */
  reason: { kind: 'rule'; ruleId: string; sources: string[] } | { kind: 'default-deny' } | { kind: 'egress-open' };
}
