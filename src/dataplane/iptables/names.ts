// Kernel object names: CloudStack's (so operators' runbooks keep working) with its truncation rules,
// plus Palisade's own shared sets and top-level chains.
import { createHash } from 'node:crypto';

/** iptables chain names are at most 28 characters; ipset and ebtables names at most 31. */
export const MAX_CHAIN = 28;
export const MAX_SET = 31;
export const MAX_EB_CHAIN = 31;

/** Top-level Palisade chains (not per bridge / per VM): raw PREROUTING (NOTRACK, conntrack zones). */
export const RAW_CHAIN = 'PALISADE-RAW';
/** ebtables filter-table chain that marks packets with their out-port (runs before iptables FORWARD). */
export const EB_FWD = 'PALISADE-FWD';
/** ebtables filter chain for frames from a port with no in-port mark (one not discovered yet): dropped
 *  when they go to a port Palisade knows. */
export const EB_FWD_UNMARKED = 'PALISADE-FWD-U';
/** ip6tables chains shared by all VMs: the IPv6 baseline (ND, DHCPv6, RA guard). */
export const V6_PRE = 'PALISADE-V6-PRE';
export const V6_POST = 'PALISADE-V6-POST';
export const V6_TO = 'PALISADE-V6-TO';
/** ebtables nat chains per bridge that put the conntrack zone into the mark: `local` for frames from a
 *  VM (zone of the bridge when the destination MAC is a VM on it), `uplink` for frames from an uplink,
 *  `macs` the root of the destination-MAC tree (`<macs>-<hex prefix>` below it). ≤ 31 characters. */
export function ebZoneChains(bridge: string): { local: string; uplink: string; macs: string } {
  return { local: `PALISADE-ZL-${bridge}`, uplink: `PALISADE-ZU-${bridge}`, macs: `PZ-${bridge}` };
}
/** ebtables nat chains shared by all VM NICs (the per-NIC chains jump to them last). */
export const EB_L2_IN = 'PALISADE-L2-IN';
export const EB_L2_OUT = 'PALISADE-L2-OUT';
export const EB_PRE = 'PALISADE-PRE';
export const EB_POST = 'PALISADE-POST';
/** Host-wide sets used by NOTRACK: addresses of untracked VMs and of tracked VMs, per family. */
export const notrackSet = (fam: 4 | 6) => `palisade-nt${fam}`;
export const trackedSet = (fam: 4 | 6) => `palisade-tr${fam}`;

export interface BridgeChains { main: string; in: string; out: string }
export function bridgeChains(bridge: string): BridgeChains {
  const main = `BF-${bridge}`;
  return { main, in: `${main}-IN`, out: `${main}-OUT` };
}

export interface VmNames {
  /** ingress chain `<vm>` (CloudStack: truncated to 24 when longer than 25). */
  vm: string;
  /** egress chain `<vm>-eg`. */
  eg: string;
  /** `<def>`: the instance name without its last `-` component, plus `-def`. */
  def: string;
  /** ipsets of the VM's own addresses. */
  set4: string;
  set6: string;
}

function truncate(s: string, max: number): string { return s.length > max ? s.slice(0, max) : s; }

export function vmNames(instanceName: string): VmNames {
  const vm = instanceName.length > 25 ? instanceName.slice(0, 24) : instanceName;
  const cut = instanceName.lastIndexOf('-');
  const base = cut > 0 ? instanceName.slice(0, cut) : instanceName;
  return {
    vm,
    eg: `${vm}-eg`,
    def: `${truncate(base, MAX_CHAIN - 4)}-def`,
    set4: truncate(instanceName, MAX_SET - 1),
    set6: `${truncate(instanceName, MAX_SET - 3)}-6`,
  };
}

/** A NIC's own-address sets: the first NIC keeps CloudStack's names, NIC k > 0 gets `-n<k>`. */
export function nicSetNames(instanceName: string, index: number): { set4: string; set6: string } {
  if (index === 0) { const n = vmNames(instanceName); return { set4: n.set4, set6: n.set6 }; }
  const s = `-n${index}`;
  return { set4: truncate(instanceName, MAX_SET - s.length) + s, set6: `${truncate(instanceName, MAX_SET - s.length - 2)}${s}-6` };
}

/** ebtables chain base of a VM NIC: CloudStack's `<vm>` for the first NIC, `<vm>-<k>` for others; ≤ 22 chars. */
export function ebBase(instanceName: string, nicIndex: number): string {
  const suffix = nicIndex === 0 ? '' : `-${nicIndex}`;
  return truncate(instanceName, 22 - suffix.length) + suffix;
}

export interface EbNames { in: string; inIps: string; out: string; outIps: string }
export function ebNames(base: string): EbNames {
  return { in: `${base}-in`, inIps: `${base}-in-ips`, out: `${base}-out`, outIps: `${base}-out-ips` };
}

/** A shared (referenced-group) set: `pal-<id>` when it fits and is safe, else a hash of the id. */
export function groupSetName(id: string): string {
  const name = `pal-${id}`;
  if (/^[A-Za-z0-9_.:-]+$/.test(id) && name.length <= MAX_SET) return name;
  return `pal-h${createHash('sha1').update(id).digest('hex').slice(0, 20)}`;
}

/** Name checks are the plan's (both backends use them). */
export { safeDevice, safeName } from '../plan/build.js';
