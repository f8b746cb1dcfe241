// What the kernel tells us about traffic, as data every layer can name: drop reasons (a bounded set:
// they are metric label values and API values), tracked connections, and the seam through which the
// API asks agents about conntrack (implemented by the control plane, injected like ChangeSink).
// Pure types and constants.
import type { Family } from './types.js';

/**
 * Why the kernel dropped a packet. Agents map each logging rule to one of these; the server stores
 * and lists them (`securitygroupdrop.reason`) and agents count them
 * (`palisade_agent_dropped_packets_total{reason}`). Never extend with free text: the set is bounded.
 */
export const DROP_REASONS = [
  'ingress-default-deny', // no ingress rule of the VM allows it
  'egress-default-deny',  // egress restricted for the family and no egress rule allows it
  'spoofed-mac',          // source MAC is not the NIC's
  'spoofed-ip',           // source address (or destination towards the VM) is not the NIC's
  'spoofed-arp',          // ARP for an address the NIC does not own
  'spoofed-nd',           // neighbour advertisement for an address the NIC does not own
  'rogue-dhcp',           // the VM acted as a DHCP/DHCPv6 server
  'rogue-ra',             // the VM sent a router advertisement or redirect
  'multicast',            // broadcast/multicast other than ARP, DHCP and neighbour discovery
  'unknown-port',         // a tap-like bridge port that matches no known NIC (fail closed)
] as const;
export type DropReason = (typeof DROP_REASONS)[number];

export function isDropReason(s: string): s is DropReason {
  return (DROP_REASONS as readonly string[]).includes(s);
}

/** One conntrack entry of a VM, as an agent reads it (original direction). */
export interface TrackedConnection {
  /** VM uuid whose conntrack zone holds the entry. */
  vmId: string;
  family: Family;
  protocol: 'tcp' | 'udp' | 'icmp' | number;
  /** Original direction: who opened it. */
  src: string;
  dst: string;
  sport?: number;
  dport?: number;
  icmpType?: number;
  icmpCode?: number;
}

/** What one host answered to a conntrack query. */
export interface HostConnections {
  hostId: number;
  /** false: no agent session, or no answer within the time bound. */
  answered: boolean;
  /** true: the agent returned only the first `limitPerVm` entries of some VM. */
  truncated: boolean;
  connections: TrackedConnection[];
}

/**
 * Asks agents which connections their kernels track for some VMs. Implemented by the control plane
 * (phase 2 of issue 11) and handed to the API by the composition root, like the ChangeSink; absent,
 * dry runs report tracked connections as unavailable.
 */
export interface ConnectionInspector {
  trackedConnections(request: { hostIds: number[]; vmIds: string[]; limitPerVm: number; timeoutMs: number }): Promise<HostConnections[]>;
}
