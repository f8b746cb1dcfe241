// Kernel object names of the nftables backend. Palisade owns two tables, both named `palisade`: one in
// the `bridge` family (L2, anti-spoofing, port dispatch, conntrack zone marks) and one in `inet`
// (stateful rules). Nothing outside them is ever read or written.
//
// Why so few objects: on every transaction `nft` re-reads the chains, sets and stateful objects of the
// ruleset (not the rules), so each object per port or per VM costs every later change a little. Per-port
// facts therefore live in sets keyed by the port's name; the only per-port chain is the one that puts
// the out-port number into the mark; VMs have one or two chains; counters are inline.
import { createHash } from 'node:crypto';

export const TABLE = 'palisade';
export type NFamily = 'bridge' | 'inet';
export const FAMILIES: NFamily[] = ['bridge', 'inet'];

/** nft identifiers: a letter first, then letters, digits and `_ . - : /`. */
const IDENT = /^[A-Za-z][A-Za-z0-9_.:/-]*$/;
const short = (s: string) => createHash('sha1').update(s).digest('hex').slice(0, 12);

/** `prefix-name` when `name` is usable as is, else `prefix-h<hash>` (stable, collision-free in practice). */
export function ident(prefix: string, name: string, max = 200): string {
  const plain = `${prefix}-${name}`;
  return IDENT.test(plain) && plain.length <= max ? plain : `${prefix}-h${short(name)}`;
}

/** The one chain per VM port (bridge table, forward): puts the out-port number into the mark. */
export const portChain = (device: string) => ident('o', device);

/** Per-bridge objects (bridge table). */
export const bridgeObjects = (bridge: string) => {
  const b = ident('b', bridge).slice(2);
  return {
    /** frames from a VM port of this bridge: in-port and conntrack zone into the mark */
    vmIn: `vmin-${b}`,
    /** frames from the bridge's uplinks */
    uplink: `up-${b}`,
    /** guest MACs of the VM ports on it (frames straight between two of them: the bridge's zone) */
    macs: `macs-${b}`,
    /** guest MAC → mark (uplink + that port's zone) for frames from the uplinks */
    umac: `umac-${b}`,
  };
};

/** Per-VM chains (inet table): the VM's source side (only when its groups restrict egress in a family)
 *  and its destination side, both families in one chain each. */
export const vmChains = (instanceName: string) => {
  const v = ident('v', instanceName).slice(2);
  return { from: `from-${v}`, to: `to-${v}`, key: v };
};

/** A referenced group's address set (inet table). */
export const groupSet = (id: string) => ident('g', id);

/** Shared chains, sets and maps. */
export const N = {
  // bridge: hooks and dispatch
  prerouting: 'prerouting', forward: 'forward', inPorts: 'in_ports', outPorts: 'out_ports', unknown: 'unknown',
  // bridge: per-port facts
  inMark: 'in_mark', portMac: 'port_mac', own4: 'own4', own6: 'own6', nd6: 'nd6', ntPorts4: 'nt_ports4', ntPorts6: 'nt_ports6',
  nt4: 'nt4', tr4: 'tr4', nt6: 'nt6', tr6: 'tr6',
  // bridge: what VM ports send
  vmIn: 'vm-in', vmArp: 'vm-arp', vmIp4: 'vm-ip4', vmIp6: 'vm-ip6', vmDone4: 'vm-ip4-done', vmDone6: 'vm-ip6-done',
  l2ArpIn: 'l2-arp-in', l2Ip4In: 'l2-ip4-in', l2Ip6In: 'l2-ip6-in',
  // bridge: what VM ports receive
  vmOut: 'vm-out', vmArpOut: 'vm-arp-out', vmOut4: 'vm-out4', vmOut6: 'vm-out6',
  l2ArpOut: 'l2-arp-out', l2Ip4Out: 'l2-ip4-out', l2Ip6Out: 'l2-ip6-out', uplinkOut: 'uplink-out',
  // inet
  raw: 'raw', input: 'input', bf: 'bridged', pass: 'pass', toPort: 'deliver', bridges: 'bridges', zones: 'zones', from: 'from', to: 'to',
} as const;

/** The drop log's chain of one side and reason (issue 11; plan/reasons.ts). */
export const dropLogChain = (side: string, reason: string) => `dl-${side}-${reason}`;
/** Prefix of the drop log's token-bucket sets, whose elements the kernel adds (never compared). */
export const DROP_LOG_SET_PREFIX = 'dl_';
export const dropLogSet = (rate: number, burst: number) => `${DROP_LOG_SET_PREFIX}${rate}_${burst}`;

/** Sanitise an id for use inside a double-quoted comment. */
export function cid(s: string): string { return s.replace(/[^A-Za-z0-9_.:/=+-]/g, '_').slice(0, 64); }
