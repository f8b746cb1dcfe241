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

// ---- the drop log (issue 11) ---------------------------------------------------------------------
// Where a drop point's reason has an API counterpart, the kernel may log the packet before dropping it:
// NFLOG to group DROP_LOG_GROUP with the prefix `pal:<side>:<reason>`, rate-limited per VM port. The
// side says which port number in the packet mark (plan/marks.ts) is the VM's: `f` the in-port (the VM
// sent it: direction egress), `t` the out-port (it was going to the VM: ingress), `n` none (no VM owns
// the port). Logging never changes a verdict: the drop rule jumps to a chain that logs (when the limit
// allows) and then drops; rules that pass packets are untouched.

/** The drop log's kernel settings; rate 0 (or no config) = no log rules at all. */
export interface DropLogConfig {
  /** Packets logged per second per VM port (and direction). */
  rate: number;
  burst: number;
  /** NFLOG group (both backends; the agent reads this group). */
  group: number;
}

/** The NFLOG group Palisade logs drops to (agents read it; nothing else on the host should use it). */
export const DROP_LOG_GROUP = 4217;

export type LogSide = 'f' | 't' | 'n';

/** The API's reason (model/telemetry.ts DROP_REASONS) of each plan reason; null: not logged. */
export const LOG_REASON: Record<DropReason, string | null> = {
  'ingress-default-deny': 'ingress-default-deny',
  'egress-default-deny': 'egress-default-deny',
  'spoof-mac': 'spoofed-mac',
  'spoof-ip': 'spoofed-ip',
  'spoof-arp': 'spoofed-arp',
  'spoof-nd': 'spoofed-nd',
  // a packet to a VM for an address it does not own: the API's spoofed-ip ("or destination towards the VM")
  'not-own-address': 'spoofed-ip',
  'rogue-dhcp': 'rogue-dhcp',
  'rogue-ra': 'rogue-ra',
  'rogue-redirect': 'rogue-ra',
  'bum': 'multicast',
  // neither has an API reason (and no VM to attribute routed traffic to): counted, not logged
  'l2-protocol': null,
  'routed-into-bridge': null,
  'unknown-port': 'unknown-port',
};

/** The NFLOG prefix of a drop point. */
export const logPrefix = (side: LogSide, reason: DropReason) => `pal:${side}:${reason}`;

/** A prefix read back from NFLOG, or null when it is not one of ours. */
export function parseLogPrefix(s: string): { side: LogSide; reason: DropReason } | null {
  const m = /^pal:([ftn]):([a-z-]{1,40})$/.exec(s);
  if (!m || !isDropReason(m[2])) return null;
  return { side: m[1] as LogSide, reason: m[2] };
}

/** Is logging on for this config. */
export const logging = (c: DropLogConfig | null | undefined): c is DropLogConfig => !!c && c.rate > 0 && c.burst > 0;
