// The packet-mark layout and the port / bridge numbering both backends share. They must agree exactly:
// while a host switches from one backend to the other both are in place at once, each setting the same
// bits to the same values, so neither breaks the other's dispatch or conntrack zones.
//
//   bits 16–26  in-port number (set where the frame enters the bridge)
//   bits  0–11  conntrack zone until bridge FORWARD, then the out-port number (bits 0–10)
//   bit  27     ALLOW: the always-allowed baseline let the packet leave its VM (source side done)
//   bit  15     ACCEPT_TO: the always-allowed baseline accepts it into the destination VM (nftables)
//   bits 28, 29 NOT_ALLOW, NOT_ACCEPT_TO: their complements (nftables; outside bits 0–15, which the
//               iptables backend's `CT --zone mark` takes whole as the zone while both are in place)
// The nftables backend carries ALLOW and ACCEPT_TO from its bridge chains to its inet chain, and other
// software on the host may set mark bits in between (kube-proxy's 0x8000, `ebtables -j mark
// --mark-or`, a mangle rule). So each is a pair: a frame entering from a managed port gets both
// complements set, a verdict sets its bit and clears its complement in one write, and the inet chain
// honours a verdict only when its bit is set and its complement clear. Another tool ORing a bit in can
// then never turn "not allowed" into "allowed"; one that rewrites the whole mark (a CONNMARK restore)
// clears the port numbers too, and the frame is dropped as coming from an unknown port (fail closed).
// The iptables backend keeps bits 28–31 of frames entering a managed port (it never sets them); the
// nftables backend sets the whole mark there (one map lookup per frame instead of two), so bridged
// frames from Palisade's ports carry no one else's mark bits (frames arriving from a tap, a veth or a
// NIC have none).

/** Port numbers in the packet mark: in-port in bits 16–26, out-port in bits 0–10. */
export const MARK_IN_MASK = 0x07ff0000;
export const MARK_OUT_MASK = 0x000007ff;
/** Conntrack zone in bits 0–11 between bridge PREROUTING and the conntrack lookup. */
export const MARK_ZONE_MASK = 0x00000fff;
export const MARK_ALLOW = 0x08000000;
export const MARK_ACCEPT_TO = 0x00008000;
export const MARK_NOT_ALLOW = 0x10000000;
export const MARK_NOT_ACCEPT_TO = 0x20000000;
/** Everything Palisade sets; cleared where a frame enters a port Palisade manages. */
export const MARK_OURS = MARK_IN_MASK | MARK_ALLOW | 0xffff;

/** Port numbers with a fixed meaning. VM ports get 1…MAX_VM_PORT. */
export const PORT_UPLINK = 0x7fd;
export const PORT_UNKNOWN = 0x7ff;
export const MAX_VM_PORT = 0x7fc;
/** Zones of traffic between two VMs of one bridge: BRIDGE_ZONE_BASE + bridge number − 1. */
export const BRIDGE_ZONE_BASE = 0x800;
export const MAX_BRIDGES = MARK_ZONE_MASK - BRIDGE_ZONE_BASE;

/** Stable numbers 1…size: a hash of the name, linear probing on collision (sorted order). */
export function assignNumbers(names: string[], size: number, what: string): Map<string, number> {
  const out = new Map<string, number>();
  const used = new Set<number>();
  for (const d of [...new Set(names)].sort()) {
    let h = 2166136261;
    for (let i = 0; i < d.length; i++) h = Math.imul(h ^ d.charCodeAt(i), 16777619) >>> 0;
    let k = 1 + (h % size);
    for (let n = 0; used.has(k) && n < size; n++) k = 1 + (k % size);
    if (used.has(k)) throw new Error(`more than ${size} ${what} on one host`);
    used.add(k);
    out.set(d, k);
  }
  return out;
}

/** Stable port numbers: a hash of the device name, linear probing on collision (sorted order). */
export function assignPorts(devices: string[]): Map<string, number> {
  return assignNumbers(devices, MAX_VM_PORT, 'VM ports');
}

export const hex = (n: number) => `0x${n.toString(16)}`;
