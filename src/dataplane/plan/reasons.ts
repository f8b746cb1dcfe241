// Why a packet is dropped: the fixed set of reasons every drop point of the plan carries. Both backends
// put the reason next to each drop (nftables: the rule comment; iptables: the rule id), so per-reason
// counting and logging (issue 11: NFLOG with the reason) attach to drops without re-deriving them.

export const DROP_REASONS = [
  /** A packet to a VM that none of its ingress rules allows (and no reply, DHCP or ND exemption). */
  'ingress-default-deny',
  /** A packet from a VM whose groups restrict egress in that family and no egress rule allows. */
  'egress-default-deny',
  /** A frame from a VM NIC with a source MAC other than the NIC's. */
  'spoof-mac',
  /** An IP packet from a VM NIC with a source address the NIC does not own. */
  'spoof-ip',
  /** ARP from a VM NIC for an address it does not own, with another MAC, or an ARP operation other than request/reply. */
  'spoof-arp',
  /** An IPv6 neighbour advertisement from a VM NIC for an address it does not own (or not hop limit 255, or behind extension headers). */
  'spoof-nd',
  /** A packet (or ARP) reaching a VM NIC for an address the NIC does not own. */
  'not-own-address',
  /** A VM acting as a DHCP or DHCPv6 server. */
  'rogue-dhcp',
  /** A VM sending router advertisements. */
  'rogue-ra',
  /** A VM sending ICMPv6 redirects. */
  'rogue-redirect',
  /** Broadcast or multicast from a VM other than ARP, DHCP client and neighbour discovery. */
  'bum',
  /** A frame that is neither ARP, IPv4 nor IPv6 (VLAN tags included), to or from a VM NIC. */
  'l2-protocol',
  /** A port Palisade does not know: a VM-like port matching no NIC, or one added since the last discovery. */
  'unknown-port',
  /** Traffic the host routes into a VM bridge (no VM's ingress rules can decide it). */
  'routed-into-bridge',
] as const;

export type DropReason = (typeof DROP_REASONS)[number];

export function isDropReason(s: string): s is DropReason {
  return (DROP_REASONS as readonly string[]).includes(s);
}
