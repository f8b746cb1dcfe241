// Kernel object names of the nftables backend. Palisade owns two tables, both named `palisade`: one in
// the `bridge` family (L2, anti-spoofing, port dispatch, conntrack zone marks) and one in `inet`
// (stateful rules). Nothing outside them is ever read or written.
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

/** Per-port chains (bridge table): keyed by the device name. */
export const portChains = (device: string) => {
  const d = ident('p', device).slice(2);
  return {
    /** frames the port sends: in-port mark, MAC pin, dispatch by ethertype */
    in: `p-${d}`, arp: `pa-${d}`, ip4: `p4-${d}`, ip6: `p6-${d}`,
    /** after the guards: NOTRACK and the conntrack zone */
    zone: `z-${d}`,
    /** frames to the port: out-port mark, ARP target, destination checks */
    out: `o-${d}`, outArp: `oa-${d}`, out4: `o4-${d}`, out6: `o6-${d}`,
  };
};

/** Per-bridge objects (bridge table). */
export const bridgeObjects = (bridge: string) => {
  const b = ident('b', bridge).slice(2);
  return {
    /** frames from the bridge's uplinks */
    uplink: `u-${b}`,
    /** guest MACs of the VM ports on it (frames straight between two of them: the bridge's zone) */
    macs: `macs-${b}`,
    /** guest MAC → mark (uplink + that port's zone) for frames from the uplinks */
    umac: `umac-${b}`,
  };
};

/** Per-VM chains (inet table): the VM's source side and destination side per family. */
export const vmChains = (instanceName: string) => {
  const v = ident('v', instanceName).slice(2);
  return { from4: `from4-${v}`, from6: `from6-${v}`, to4: `to4-${v}`, to6: `to6-${v}`, key: v };
};

/** A referenced group's address set (inet table). */
export const groupSet = (id: string) => ident('g', id);

/**
 * The named counter of one user rule of one VM (inet table): `c-<vm>-<i|e><family>-<rule id>`.
 * Issue 11 reads these per rule id with `nft -j list counters table inet palisade` (never the rules).
 */
export const ruleCounter = (vmKey: string, dir: 'ingress' | 'egress', fam: 4 | 6, ruleId: string) =>
  ident(`c-${vmKey}-${dir === 'ingress' ? 'i' : 'e'}${fam}`, ruleId);

/** Shared chains and maps. */
export const N = {
  // bridge
  prerouting: 'prerouting', forward: 'forward', inPorts: 'in_ports', outPorts: 'out_ports', unknown: 'unknown',
  l2ArpIn: 'l2-arp-in', l2Ip4In: 'l2-ip4-in', l2Ip6In: 'l2-ip6-in', l2ArpOut: 'l2-arp-out', l2Ip4Out: 'l2-ip4-out', l2Ip6Out: 'l2-ip6-out', uplinkOut: 'uplink-out',
  nt4: 'nt4', tr4: 'tr4', nt6: 'nt6', tr6: 'tr6',
  // inet
  raw: 'raw', input: 'input', bf: 'bridged', toPort: 'to-port', bridges: 'bridges', zones: 'zones',
  from4: 'from4', from6: 'from6', to4: 'to4', to6: 'to6',
} as const;

/** Sanitise an id for use inside a double-quoted comment. */
export function cid(s: string): string { return s.replace(/[^A-Za-z0-9_.:/=+-]/g, '_').slice(0, 64); }
