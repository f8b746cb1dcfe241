// Pure renderer: host desired state + discovered ports → the iptables/ip6tables/ipset/ebtables program.
//
// Packet path (bridged, br_netfilter):
//   ebtables nat PREROUTING → PALISADE-PRE: the in-port's number goes into the packet mark (and the
//     VM's anti-spoofing chains run); ebtables filter FORWARD → PALISADE-FWD: the out-port's number
//     (both run before br_netfilter hands the packet to iptables FORWARD);
//   iptables FORWARD -i <br> --physdev-is-bridged → BF-<br>
//   → BF-<br>-IN  (dispatch on the in-port's mark by goto: the source VM's <def>, from-VM rules;
//                  a RETURN there leaves BF-<br>-IN; uplinks RETURN; any other mark is dropped)
//   → BF-<br>-OUT (dispatch on the out-port's mark: the destination VM's <def>, to-VM rules)
//   → ACCEPT when it leaves by an uplink, else DROP.
//   Around the bridge: INPUT -i <br> and routed FORWARD -i <br> go through BF-<br>-IN (the source
//   VM's egress and anti-spoofing); routed FORWARD -o <br> is dropped (no VM's ingress can decide).
//   ebtables always drops unmarked vnet* ports both ways, even before any bridge is managed.
// Dispatch by mark costs a few ns per rule where a physdev match costs ~100 ns (xt compat), and
// ebtables' interface matches are native, so dispatch stays cheap with hundreds of VMs. A port
// without a mark (not yet discovered, or the marking removed) is dropped: fail closed.
// Conntrack zones (raw PREROUTING, `CT --zone mark`, zone chosen in ebtables nat PREROUTING): per VM
// port for traffic between that port and an uplink (by in-port from the VM, by destination MAC from
// the uplink), per bridge for traffic straight between two of its VMs; so a packet routed back into
// the bridge it left is tracked once per leg, and equal addresses on two bridges never share entries.
// Anti-spoofing is per NIC: each NIC has its own address sets (source and destination checks).
// From-VM rules never ACCEPT: an allowed packet RETURNs so the destination's ingress still decides
// (same-host VM→VM gets the source's egress AND the destination's ingress). To-VM rules end in
// ACCEPT or DROP. Unknown tap-like ports are dropped both ways (fail closed).
import type { DataplaneInput } from '../backend.js';
import type { FamilyPolicy, NicPolicy, PolicyRule, VmPolicy } from '../../policy/ir.js';
import { canonV6, isV4, isV6, linkLocalFromMac } from './addr.js';
import {
  EB_FWD, EB_FWD_UNMARKED, EB_L2_IN, EB_L2_OUT, EB_POST, EB_PRE, RAW_CHAIN, V6_PRE, V6_POST, V6_TO, bridgeChains, ebBase, ebNames, ebZoneChains, groupSetName, nicSetNames,
  notrackSet, safeDevice, safeName, trackedSet, vmNames,
  MAX_CHAIN,
} from './names.js';
import {
  type EbChain, type EbProgram, type Fam, type IptChain, type IptHook, type IptRule, type Program, type SetDef,
  ebFullText, ipsetFullText, iptFullText, makeChain, hashOf,
} from './program.js';

export interface Rendered {
  iptables: string;
  ip6tables: string;
  ipset: string;
  ebtables: string;
  /** Structured form (apply diffs this against the kernel). */
  program: Program;
  /** VM uuid → error (a NIC port missing, a name clash…); such VMs are rendered as far as possible. */
  vmErrors: Record<string, string>;
  /** VM uuids with at least one NIC programmed. */
  programmed: string[];
}

const from = (tap: string) => `-m physdev --physdev-in ${tap}`;
const to = (tap: string) => `-m physdev --physdev-out ${tap} --physdev-is-bridged`;
const r = (id: string, spec: string): IptRule => ({ id, spec });

/** Sanitise an id for use inside a double-quoted comment. */
function cid(s: string): string { return s.replace(/[^A-Za-z0-9_.:/=+-]/g, '_').slice(0, 64); }

function icmpMatch(fam: Fam, type: number, code: number): string {
  if (fam === 4) return type < 0 ? '-p icmp' : `-p icmp -m icmp --icmp-type ${type}${code >= 0 ? `/${code}` : ''}`;
  return type < 0 ? '-p ipv6-icmp' : `-p ipv6-icmp -m icmp6 --icmpv6-type ${type}${code >= 0 ? `/${code}` : ''}`;
}

/** Match text for a rule's protocol part. */
export function protoMatch(fam: Fam, rule: PolicyRule): string {
  const p = rule.protocol;
  if (p === 'all') return '';
  if (p === 'tcp' || p === 'udp') {
    const pr = rule.ports;
    if (!pr || (pr.from <= 0 && pr.to >= 65535)) return `-p ${p}`;
    return `-p ${p} -m ${p} --dport ${pr.from === pr.to ? pr.from : `${pr.from}:${pr.to}`}`;
  }
  if (p === 'icmp') return icmpMatch(fam, rule.icmp?.type ?? -1, rule.icmp?.code ?? -1);
  return `-p ${p}`;
}

/** Referenced address sets (by id) a VM's rules use; absent ones are created empty (fail closed). */
type Refs = Map<string, Fam>;

function userRules(fam: Fam, dir: 'ingress' | 'egress', rules: PolicyRule[], refs: Refs): IptRule[] {
  const out: IptRule[] = [];
  const addr = dir === 'ingress' ? '-s' : '-d';
  const sd = dir === 'ingress' ? 'src' : 'dst';
  const target = dir === 'ingress' ? 'ACCEPT' : 'RETURN';
  for (const rule of rules) {
    const pm = protoMatch(fam, rule);
    const id = cid(rule.id);
    rule.cidrs.forEach((c, i) => out.push(r(`${id}.c${i}`, `${addr} ${c} ${pm} -j ${target}`)));
    rule.sets.forEach((s, i) => {
      const name = groupSetName(s);
      refs.set(s, fam);
      out.push(r(`${id}.s${i}`, `-m set --match-set ${name} ${sd} ${pm} -j ${target}`));
    });
  }
  return out;
}

/** `sets`: the NIC's own-address sets (anti-spoofing is per NIC: a NIC sends only from its addresses). */
interface PlacedNic { nic: NicPolicy; index: number; device: string; bridge: string; sets: { set4: string; set6: string } }

function defRules4(n: PlacedNic, names: ReturnType<typeof vmNames>): IptRule[] {
  const k = `n${n.index}`;
  const f = from(n.device);
  const t = to(n.device);
  return [
    // Before the spoof check only what a client without an address sends (0.0.0.0 → broadcast);
    // renewals come from the NIC's own address and pass after it.
    r(`${k}.dhcpc`, `${f} -s 0.0.0.0/32 -d 255.255.255.255/32 -p udp -m udp --sport 68 --dport 67 -j RETURN`),
    r(`${k}.dhcps`, `${f} -p udp -m udp --sport 67 -j DROP`),
    r(`${k}.spoof`, `${f} -m set ! --match-set ${n.sets.set4} src -j DROP`),
    r(`${k}.dhcpcu`, `${f} -p udp -m udp --sport 68 --dport 67 -j RETURN`),
    r(`${k}.est`, `${f} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN`),
    r(`${k}.dnsu`, `${f} -p udp -m udp --dport 53 -j RETURN`),
    r(`${k}.dnst`, `${f} -p tcp -m tcp --dport 53 -j RETURN`),
    r(`${k}.eg`, `${f} -j ${names.eg}`),
    r(`${k}.out`, `${f} -j RETURN`),
    r(`${k}.dhcpr`, `${t} -p udp -m udp --sport 67 --dport 68 -j ACCEPT`),
    r(`${k}.dst`, `${t} -m set ! --match-set ${n.sets.set4} dst -j DROP`),
    r(`${k}.estin`, `${t} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`),
    r(`${k}.in`, `${t} -j ${names.vm}`),
    r(`${k}.deny`, `${t} -j DROP`),
  ];
}

/** u32 test: the next header is ICMPv6 (no extension headers) and the NA target (offset 48) is `addr`. */
function naTarget(addr: string): string {
  const words = v6Words(addr).map((w, i) => `0x${(48 + 4 * i).toString(16)}=0x${w.toString(16)}`);
  return ['0x4&0xff00=0x3a00', ...words].join('&&');
}

/** An IPv6 address as four 32-bit words. */
function v6Words(addr: string): number[] {
  const [head, tail] = canonV6(addr).split('::');
  const parse = (s: string | undefined) => (s ? s.split(':').map((g) => parseInt(g, 16)) : []);
  const h = parse(head);
  const t = parse(tail);
  const groups = tail === undefined ? h : [...h, ...new Array(8 - h.length - t.length).fill(0), ...t];
  return [0, 2, 4, 6].map((i) => ((groups[i] << 16) | groups[i + 1]) >>> 0);
}

const icmp6 = (type: number) => `-p ipv6-icmp -m icmp6 --icmpv6-type ${type}`;
const HL = '-m hl --hl-eq 255';

const MARK_GROUP_MIN = 16;
/**
 * Mark dispatch in two levels: the top 4 bits of the 11-bit port number pick a group chain
 * (`<chain>-<g>`), which holds that group's exact matches, so a packet meets ≤ ~16 + group size rules.
 * `closed`: the tree is entered by goto (`-g`) and ends in DROP (a mark with no entry, e.g. a port
 * ebtables already marks while the IP rules for it are not written yet, fails closed); entries then
 * goto too, so a RETURN from the VM's chain leaves the whole tree.
 */
function markTree(name: string, shift: number, head: IptRule[], entries: [number, IptRule][], closed = false): IptChain[] {
  const sorted = [...entries].sort((x, y) => x[0] - y[0]);
  const end = r('end', closed ? '-j DROP' : '-j RETURN');
  const jump = closed ? '-g' : '-j';
  if (sorted.length <= MARK_GROUP_MIN) return [makeChain('filter', name, [...head, ...sorted.map((e) => e[1]), end])];
  const groups = new Map<number, IptRule[]>();
  for (const [k, rule] of sorted) (groups.get(k >> 7) ?? groups.set(k >> 7, []).get(k >> 7)!).push(rule);
  const rules = [...head];
  const children: IptChain[] = [];
  for (const [g, rs] of groups) {
    if (rs.length <= 2) { rules.push(...rs); continue; }
    const child = `${name}-${g.toString(16)}`;
    rules.push(r(`grp.${g.toString(16)}`, `-m mark --mark ${hex((g << 7) << shift)}/${hex((0xf << 7) << shift)} ${jump} ${child}`));
    children.push(makeChain('filter', child, [...rs, end]));
  }
  rules.push(end);
  return [makeChain('filter', name, rules), ...children];
}

/** Insert `rule` before the final RETURN of chain `name`. */
function withTail(chains: EbChain[], name: string, rule: string): EbChain[] {
  return chains.map((c) => (c.name === name ? { ...c, rules: [...c.rules.slice(0, -1), rule, ...c.rules.slice(-1)] } : c));
}

/** A per-port ebtables rule: the device and what follows `-i/-o <device>`. */
type PortRule = [string, string];
const PORT_LEAF = 8;

/**
 * Port dispatch as a shallow tree of chains keyed by interface-name prefix (`-i vnet1+` jumps to the
 * chain for names starting with vnet1), so a frame meets ~tens of name matches instead of one per port.
 * Deterministic in the set of ports; a port added or removed rewrites only the chains on its path.
 */
export function portTree(table: 'nat' | 'filter', root: string, dir: '-i' | '-o', ports: PortRule[], head: string[]): EbChain[] {
  return bridgeCached(JSON.stringify(['ports', table, root, dir, ports, head]), () => portTreeOf(table, root, dir, ports, head));
}

function portTreeOf(table: 'nat' | 'filter', root: string, dir: '-i' | '-o', ports: PortRule[], head: string[]): EbChain[] {
  const chains: EbChain[] = [];
  const sorted = [...ports].sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
  const build = (name: string, at: string, items: PortRule[], lead: string[]) => {
    const rules = [...lead];
    // Names here all start with `at`; skip ahead over what they all share.
    let prefix = items[0]?.[0] ?? at;
    for (const [dev] of items) while (!dev.startsWith(prefix)) prefix = prefix.slice(0, -1);
    if (items.length <= PORT_LEAF) {
      for (const [dev, act] of items) rules.push(`${dir} ${dev} ${act}`);
    } else {
      const groups = new Map<string, PortRule[]>();
      for (const it of items) {
        if (it[0] === prefix) { rules.push(`${dir} ${it[0]} ${it[1]}`); continue; }
        const c = it[0].slice(0, prefix.length + 1);
        (groups.get(c) ?? groups.set(c, []).get(c)!).push(it);
      }
      for (const [p, g] of groups) {
        if (g.length === 1) { rules.push(`${dir} ${g[0][0]} ${g[0][1]}`); continue; }
        const child = `${root}-${p}`;
        rules.push(`${dir} ${p}+ -j ${child}`);
        build(child, p, g, []);
      }
    }
    rules.push('-j RETURN');
    chains.push({ table, name, rules });
  };
  // Common prefix of all names first, so the tree branches where names differ.
  build(root, '', sorted, head);
  return chains;
}

/** Port numbers in the packet mark: in-port in bits 16–26, out-port in bits 0–10. */
export const MARK_IN_MASK = 0x07ff0000;
export const MARK_OUT_MASK = 0x000007ff;
/** Conntrack zone in bits 0–11 from ebtables nat PREROUTING to raw PREROUTING (`CT --zone mark`),
 *  where ebtables filter FORWARD then overwrites them with the out-port: a VM port's number, or
 *  0x800 + a per-bridge number for frames between two VMs on one bridge. */
export const MARK_ZONE_MASK = 0x00000fff;
const BRIDGE_ZONE_BASE = 0x800;
export const PORT_UPLINK = 0x7fd;
export const PORT_UNKNOWN = 0x7ff;
const MAX_VM_PORT = 0x7fc;
const hex = (n: number) => `0x${n.toString(16)}`;
const inMark = (k: number) => `${hex(k << 16)}/${hex(MARK_IN_MASK)}`;
const outMark = (k: number) => `${hex(k)}/${hex(MARK_OUT_MASK)}`;

/** Set on a packet by the shared IPv6 chains when the always-allowed baseline (ND, DHCPv6 client,
 *  replies, DNS) lets it leave a VM; cleared for every frame by ebtables PALISADE-PRE. */
export const MARK_ALLOW = 0x08000000;
const ALLOW = `${hex(MARK_ALLOW)}/${hex(MARK_ALLOW)}`;
const allow = `-j MARK --set-xmark ${ALLOW}`;

/** IPv6 baseline shared by every VM (per-VM chains jump here; the verdict comes back as MARK_ALLOW). */
function v6SharedChains(): IptChain[] {
  return [
    makeChain('filter', V6_PRE, [
      r('ra', `${icmp6(134)} -j DROP`),
      r('redir', `${icmp6(137)} -j DROP`),
      r('dhcps', '-p udp -m udp --sport 547 -j DROP'),
      // Duplicate address detection and its MLD report are sent from the unspecified address.
      r('dad', `-s ::/128 ${icmp6(135)} ${HL} ${allow}`),
      r('dadmld', `-s ::/128 ${icmp6(143)} ${allow}`),
      r('end', '-j RETURN'),
    ]),
    makeChain('filter', V6_POST, [
      r('rs', `${icmp6(133)} ${HL} ${allow}`),
      r('ns', `${icmp6(135)} ${HL} ${allow}`),
      ...[130, 131, 132, 143].map((ty) => r(`mld${ty}`, `${icmp6(ty)} ${allow}`)),
      r('dhcpc', `-p udp -m udp --sport 546 --dport 547 ${allow}`),
      r('est', `-m conntrack --ctstate RELATED,ESTABLISHED ${allow}`),
      r('dnsu', `-p udp -m udp --dport 53 ${allow}`),
      r('dnst', `-p tcp -m tcp --dport 53 ${allow}`),
      r('end', '-j RETURN'),
    ]),
    makeChain('filter', V6_TO, [
      r('ra', `${icmp6(134)} ${HL} -j ACCEPT`),
      r('ns', `${icmp6(135)} ${HL} -j ACCEPT`),
      r('na', `${icmp6(136)} ${HL} -j ACCEPT`),
      r('mldq', `${icmp6(130)} -j ACCEPT`),
      r('dhcpr', '-p udp -m udp --sport 547 --dport 546 -j ACCEPT'),
      r('end', '-j RETURN'),
    ]),
  ];
}

function defRules6(n: PlacedNic, names: ReturnType<typeof vmNames>): IptRule[] {
  const k = `n${n.index}`;
  const f = from(n.device);
  const t = to(n.device);
  return [
    r(`${k}.pre`, `${f} -j ${V6_PRE}`),
    r(`${k}.prok`, `${f} -m mark --mark ${ALLOW} -j RETURN`),
    r(`${k}.spoof`, `${f} -m set ! --match-set ${n.sets.set6} src -j DROP`),
    // A neighbour advertisement only for the NIC's own addresses (the target field, read by u32 at
    // its offset when ICMPv6 follows the IPv6 header directly); any other NA (extension headers
    // included) would let the VM poison its neighbours' caches.
    ...nicAddrs(6, n).map((a, i) => r(`${k}.na${i}`, `${f} ${icmp6(136)} ${HL} -m u32 --u32 "${naTarget(a)}" -j RETURN`)),
    r(`${k}.nax`, `${f} ${icmp6(136)} -j DROP`),
    r(`${k}.post`, `${f} -j ${V6_POST}`),
    r(`${k}.postok`, `${f} -m mark --mark ${ALLOW} -j RETURN`),
    r(`${k}.eg`, `${f} -j ${names.eg}`),
    r(`${k}.out`, `${f} -j RETURN`),
    r(`${k}.base`, `${t} -j ${V6_TO}`),
    r(`${k}.dst`, `${t} -m set ! --match-set ${n.sets.set6} dst -j DROP`),
    r(`${k}.estin`, `${t} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`),
    r(`${k}.in`, `${t} -j ${names.vm}`),
    r(`${k}.deny`, `${t} -j DROP`),
  ];
}

/** ebtables chains of one NIC: its port mark, source MAC pin and ARP only for its own IPv4s; the
 *  rest (no DHCP server / RA, broadcast & multicast only for ARP/DHCP/ND, only ARP/IPv4/IPv6 frames)
 *  is shared by all NICs (EB_L2_IN / EB_L2_OUT). Written in ebtables-save's canonical form so the
 *  read-back compares as text. */
function ebNic(n: PlacedNic, vm: VmPolicy, port: number): { chains: EbChain[]; pre: PortRule; post: PortRule } {
  const b = ebNames(ebBase(vm.instanceName, n.index));
  const mac = n.nic.mac.toLowerCase();
  const v4 = n.nic.ipv4.filter(isV4);
  const chains: EbChain[] = [
    {
      table: 'nat',
      name: b.inIps,
      rules: [
        ...v4.map((ip) => `-p ARP --arp-ip-src ${ip} --arp-mac-src ${mac} -j RETURN`),
        `-p ARP --arp-op Request --arp-ip-src 0.0.0.0 --arp-mac-src ${mac} -j RETURN`,
        '-j DROP',
      ],
    },
    {
      table: 'nat',
      name: b.in,
      rules: [
        `-j mark --mark-or ${hex(port << 16)} --mark-target CONTINUE`, `-s ! ${mac} -j DROP`, `-p ARP -j ${b.inIps}`,
        // conntrack zone: the bridge's when the frame goes straight to a VM on it, else this port's
        `-j ${ebZoneChains(n.bridge).local}`,
        `--mark 0x0/${hex(MARK_ZONE_MASK)} -j mark --mark-or ${hex(port)} --mark-target CONTINUE`,
        `-j ${EB_L2_IN}`,
      ],
    },
    { table: 'nat', name: b.outIps, rules: [...v4.map((ip) => `-p ARP --arp-ip-dst ${ip} -j RETURN`), '-j DROP'] },
    { table: 'nat', name: b.out, rules: [`-p ARP -j ${b.outIps}`, `-j ${EB_L2_OUT}`] },
  ];
  return { chains, pre: [n.device, `-j ${b.in}`], post: [n.device, `-j ${b.out}`] };
}

const i6 = (type: string) => `-p IPv6 -d Multicast --ip6-proto ipv6-icmp --ip6-icmp-type ${type} -j RETURN`;
/** From any VM, after its MAC and ARP checks. */
const L2_IN_RULES = [
  '-p ARP --arp-op Request -j RETURN',
  '-p ARP --arp-op Reply -j RETURN',
  '-p ARP -j DROP',
  '-p IPv4 --ip-proto udp --ip-sport 67 -j DROP',
  '-p IPv4 -d Broadcast --ip-proto udp --ip-sport 68 --ip-dport 67 -j RETURN',
  '-p IPv4 -d Multicast -j DROP',
  '-p IPv4 -j RETURN',
  '-p IPv6 --ip6-proto ipv6-icmp --ip6-icmp-type router-advertisement -j DROP',
  '-p IPv6 --ip6-proto ipv6-icmp --ip6-icmp-type redirect -j DROP',
  '-p IPv6 --ip6-proto udp --ip6-sport 547 -j DROP',
  i6('router-solicitation'),
  i6('neighbour-solicitation'),
  i6('neighbour-advertisement'),
  i6('130/0:255'), i6('131/0:255'), i6('132/0:255'), i6('143/0:255'),
  '-p IPv6 -d Multicast --ip6-proto udp --ip6-sport 546 --ip6-dport 547 -j RETURN',
  '-p IPv6 -d Multicast -j DROP',
  '-p IPv6 -j RETURN',
  '-j DROP',
];
/** To any VM, after its ARP check. */
const L2_OUT_RULES = ['-p ARP --arp-op Request -j RETURN', '-p ARP --arp-op Reply -j RETURN', '-p ARP -j DROP', '-p IPv4 -j RETURN', '-p IPv6 -j RETURN', '-j DROP'];

/** Stable numbers 1…size: a hash of the name, linear probing on collision (sorted order). */
function assignNumbers(names: string[], size: number, what: string): Map<string, number> {
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

/** A MAC as 12 lower-case hex digits. */
const mac12 = (mac: string) => mac.toLowerCase().split(':').map((b) => b.padStart(2, '0')).join('');
const macText = (h: string) => h.match(/../g)!.join(':');
/** `--among-dst` lists as ebtables-save prints them (bytes without leading zeros, in numeric order),
 *  in chunks: ebtables-restore takes at most ~1 KiB per parameter. */
export function amongLists(macs: string[], per = 48): string[] {
  const all = [...new Set(macs.map(mac12))].sort().map((h) => h.match(/../g)!.map((b) => parseInt(b, 16).toString(16)).join(':'));
  const out: string[] = [];
  for (let i = 0; i < all.length; i += per) out.push(all.slice(i, i + per).join(','));
  return out;
}

const MAC_LEAF = 8;
/**
 * Destination-MAC → zone as a shallow tree of chains keyed by hex prefix (`-d <prefix>/<mask>` jumps
 * to `<root>-<prefix>`), so a frame from an uplink meets ~tens of MAC matches, not one per VM.
 */
export function macTree(root: string, items: [string, number][]): EbChain[] {
  const chains: EbChain[] = [];
  const mask = (n: number) => [0, 1, 2, 3, 4, 5].map((i) => (n - 2 * i >= 2 ? 'ff' : n - 2 * i === 1 ? 'f0' : '00')).join(':');
  const leaf = (m: string, z: number) => `-d ${macText(m)} -j mark --mark-or ${hex(z)} --mark-target RETURN`;
  const build = (name: string, its: [string, number][], depth: number) => {
    const rules: string[] = [];
    let at = depth;
    while (at < 12 && its.every(([m]) => m[at] === its[0][0][at])) at++;
    if (its.length <= MAC_LEAF || at >= 12) for (const [m, z] of its) rules.push(leaf(m, z));
    else {
      const groups = new Map<string, [string, number][]>();
      for (const it of its) { const p = it[0].slice(0, at + 1); (groups.get(p) ?? groups.set(p, []).get(p)!).push(it); }
      for (const [p, g] of groups) {
        if (g.length === 1) { rules.push(leaf(g[0][0], g[0][1])); continue; }
        const child = `${root}-${p}`;
        rules.push(`-d ${macText(p.padEnd(12, '0'))}/${mask(p.length)} -j ${child}`);
        build(child, g, at + 1);
      }
    }
    rules.push('-j RETURN');
    chains.push({ table: 'nat', name, rules });
  };
  build(root, [...items].map(([m, z]): [string, number] => [mac12(m), z]).sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0)), 0);
  return chains;
}

/** A NIC's own addresses (IPv6: plus its EUI-64 link-local). */
function nicAddrs(fam: Fam, n: PlacedNic): string[] {
  const s = new Set<string>();
  if (fam === 4) n.nic.ipv4.filter(isV4).forEach((a) => s.add(a));
  else {
    n.nic.ipv6.filter(isV6).forEach((a) => s.add(canonV6(a)));
    s.add(linkLocalFromMac(n.nic.mac));
  }
  return [...s].sort();
}

function vmAddrs(fam: Fam, nics: PlacedNic[]): string[] {
  return [...new Set(nics.flatMap((n) => nicAddrs(fam, n)))].sort();
}

interface VmOut {
  chains: Record<Fam, IptChain[]>;
  sets: SetDef[];
  addrs: Record<Fam, string[]>;
  refs: Refs;
  dispatch: { bridge: string; device: string; mac: string; k: number; in: IptRule; out: IptRule }[];
  eb: { chains: EbChain[]; pre: PortRule; post: PortRule }[];
}

/** One VM's chains, sets and ebtables rules (placed NICs only). */
function renderVm(vm: VmPolicy, names: ReturnType<typeof vmNames>, placed: PlacedNic[], portNo: Map<string, number>): VmOut {
  const addrs: Record<Fam, string[]> = { 4: vmAddrs(4, placed), 6: vmAddrs(6, placed) };
  const refs: Refs = new Map();
  const chains = { 4: [], 6: [] } as Record<Fam, IptChain[]>;
  for (const f of [4, 6] as Fam[]) {
    const pol: FamilyPolicy = f === 4 ? vm.v4 : vm.v6;
    const ingress = [...userRules(f, 'ingress', pol.ingress, refs), r('end', '-j RETURN')];
    const egress = pol.egressRestricted
      ? [...userRules(f, 'egress', pol.egress, refs), r('deny', '-j DROP')]
      : [r('open', '-j RETURN')];
    const def: IptRule[] = [];
    for (const n of placed) def.push(...(f === 4 ? defRules4(n, names) : defRules6(n, names)));
    chains[f].push(makeChain('filter', names.def, def), makeChain('filter', names.vm, ingress), makeChain('filter', names.eg, egress));
  }
  const dispatch: VmOut['dispatch'] = [];
  const eb: VmOut['eb'] = [];
  for (const n of placed) {
    const k = portNo.get(n.device)!;
    dispatch.push({
      bridge: n.bridge, device: n.device, mac: n.nic.mac, k,
      in: r(`vm.${n.device}`, `-m mark --mark ${inMark(k)} -g ${names.def}`),
      out: r(`vm.${n.device}`, `-m mark --mark ${outMark(k)} -j ${names.def}`),
    });
    eb.push(ebNic(n, vm, k));
  }
  return {
    chains, addrs, refs, dispatch, eb,
    sets: placed.flatMap((n): SetDef[] => [
      { name: n.sets.set4, family: 'inet', members: nicAddrs(4, n) },
      { name: n.sets.set6, family: 'inet6', members: nicAddrs(6, n) },
    ]),
  };
}

// Memo of renderVm keyed by everything it reads: re-rendering a host after a one-VM change costs one
// VM's work. Outputs are never mutated, so sharing them between renders is safe; render stays pure.
// A caller that keeps unchanged VmPolicy objects between renders (the agent does) skips even the
// content key: policies are plain data the caller does not mutate once handed over.
const vmMemo = new Map<string, VmOut>();
const byObject = new WeakMap<VmPolicy, { placement: string; out: VmOut }>();
function renderVmMemo(vm: VmPolicy, names: ReturnType<typeof vmNames>, placed: PlacedNic[], portNo: Map<string, number>): VmOut {
  const placement = placed.map((n) => `${n.index}@${n.device}@${n.bridge}@${portNo.get(n.device)}`).join(',');
  const hit = byObject.get(vm);
  if (hit && hit.placement === placement) return hit.out;
  const key = JSON.stringify([vm.instanceName, vm.nics, vm.v4, vm.v6, placement]);
  let out = vmMemo.get(key);
  if (!out) {
    if (vmMemo.size >= 20_000) vmMemo.clear();
    out = renderVm(vm, names, placed, portNo);
    vmMemo.set(key, out);
  }
  byObject.set(vm, { placement, out });
  return out;
}

// Per-bridge outputs (dispatch trees, zone chains) memoised by their inputs, as VMs are: a rule change
// leaves them as they were. Bounded; outputs are never mutated.
const bridgeMemo = new Map<string, unknown>();
function bridgeCached<T>(key: string, f: () => T): T {
  if (bridgeMemo.has(key)) return bridgeMemo.get(key) as T;
  if (bridgeMemo.size >= 256) bridgeMemo.clear();
  const v = f();
  bridgeMemo.set(key, v);
  return v;
}

/** A bridge's zone chains (ebtables nat): only those something jumps to, as read-back follows jumps
 *  from Palisade's roots. `vms`: [guest MAC, port number] of the VM NICs on it. */
function zoneChains(br: string, no: number, withUplink: boolean, vms: [string, number][]): EbChain[] {
  const zc = ebZoneChains(br);
  const out: EbChain[] = [];
  if (vms.length) {
    const zone = hex(BRIDGE_ZONE_BASE + no - 1);
    out.push({ table: 'nat', name: zc.local, rules: [
      ...amongLists(vms.map((v) => v[0])).map((l) => `--among-dst ${l} -j mark --mark-or ${zone} --mark-target RETURN`),
      '-j RETURN',
    ] });
  }
  if (withUplink) {
    out.push(
      { table: 'nat', name: zc.uplink, rules: [`-j mark --mark-or ${hex(PORT_UPLINK << 16)} --mark-target CONTINUE`, `-j ${zc.macs}`, '-j RETURN'] },
      ...macTree(zc.macs, vms),
    );
  }
  return out;
}

export function render(input: DataplaneInput): Rendered {
  const { state, ports } = input;
  const vmErrors: Record<string, string> = {};
  const known = new Set(state.sets.map((s) => s.id));
  const refSets: Refs = new Map();
  const fam: Record<Fam, { chains: IptChain[]; hooks: IptHook[] }> = { 4: { chains: [], hooks: [] }, 6: { chains: [], hooks: [] } };
  const vmSets: SetDef[] = [];
  const ebChains: EbChain[] = [];
  const ebPre: PortRule[] = [];
  const ebPost: PortRule[] = [];
  /** Per bridge: dispatch rules into the VMs' <def> chains. */
  const perBridge = new Map<string, { k: number; mac: string; in: IptRule; out: IptRule }[]>();
  const notrack: Record<Fam, { nt: Set<string>; tr: Set<string> }> = { 4: { nt: new Set(), tr: new Set() }, 6: { nt: new Set(), tr: new Set() } };
  const usedNames = new Map<string, string>();
  const programmed: string[] = [];
  const portNo = assignPorts(Object.values(ports.nics).map((p) => p.device).filter(safeDevice));
  /** Bridge ports and their numbers (VM taps, then uplinks and unknown taps). */
  const marked: [string, number][] = [];

  for (const vm of state.vms) {
    const names = vmNames(vm.instanceName);
    const all = [names.vm, names.eg, names.def, names.set4, names.set6];
    const placed: PlacedNic[] = [];
    const missing: string[] = [];
    vm.nics.forEach((nic, index) => {
      const p = ports.nics[nic.nicId];
      if (!p) { missing.push(nic.nicId); return; }
      placed.push({ nic, index, device: p.device, bridge: p.bridge, sets: nicSetNames(vm.instanceName, index) });
    });
    const ebBases = placed.flatMap((n) => [ebBase(vm.instanceName, n.index), ...(n.index ? [n.sets.set4, n.sets.set6] : [])]);
    const problems: string[] = [];
    if (missing.length) problems.push(`NIC port not found on host: ${missing.join(', ')}`);
    if (!safeName(vm.instanceName) || names.def.length > MAX_CHAIN) problems.push(`unusable instance name ${JSON.stringify(vm.instanceName)}`);
    for (const n of [...all, ...ebBases]) {
      const owner = usedNames.get(n);
      if (owner && owner !== vm.vmId) problems.push(`name ${n} clashes with VM ${owner}`);
    }
    for (const n of placed) if (!safeDevice(n.device) || !safeDevice(n.bridge)) problems.push(`unusable device name ${n.device}@${n.bridge}`);
    const fatal = problems.some((p) => !p.startsWith('NIC port'));
    if (problems.length) vmErrors[vm.vmId] = problems.join('; ');
    if (fatal || !placed.length) continue;
    for (const n of [...all, ...ebBases]) usedNames.set(n, vm.vmId);
    programmed.push(vm.vmId);

    const vo = renderVmMemo(vm, names, placed, portNo);
    vmSets.push(...vo.sets);
    for (const f of [4, 6] as Fam[]) {
      fam[f].chains.push(...vo.chains[f]);
      for (const a of vo.addrs[f]) ((f === 4 ? vm.v4 : vm.v6).notrack ? notrack[f].nt : notrack[f].tr).add(a);
    }
    for (const [id, f] of vo.refs) if (!refSets.has(id)) refSets.set(id, f);
    for (const d of vo.dispatch) {
      let b = perBridge.get(d.bridge);
      if (!b) perBridge.set(d.bridge, (b = []));
      b.push({ k: d.k, mac: d.mac, in: d.in, out: d.out });
      marked.push([d.device, d.k]);
    }
    for (const e of vo.eb) {
      ebChains.push(...e.chains);
      ebPre.push(e.pre);
      ebPost.push(e.post);
    }
  }

  if (programmed.length) fam[6].chains.push(...v6SharedChains());

  // Bridges: those with programmed NICs and any the port discovery lists (unknown taps fail closed).
  const bridges = [...new Set([...perBridge.keys(), ...Object.keys(ports.bridges)])].filter(safeDevice).sort();
  const bridgeNo = assignNumbers(bridges, MARK_ZONE_MASK - BRIDGE_ZONE_BASE, 'bridges');
  /** Conntrack zones (ebtables nat): one per VM port for traffic between it and the uplink, one per
   *  bridge for traffic between two of its VMs. A packet routed back into the same bridge (two VMs
   *  in different subnets) is seen twice by conntrack, once per leg, each leg in its own zone. */
  const ebZone: EbChain[] = [];
  for (const br of bridges) {
    const vms = (perBridge.get(br) ?? []).map((x): [string, number] => [x.mac, x.k]);
    const withUplink = !!ports.bridges[br]?.uplinks.some(safeDevice);
    ebZone.push(...bridgeCached(JSON.stringify(['zone', br, bridgeNo.get(br), withUplink, vms]), () => zoneChains(br, bridgeNo.get(br)!, withUplink, vms)));
  }
  for (const br of bridges) {
    const bc = bridgeChains(br);
    const info = ports.bridges[br] ?? { uplinks: [], unknownTaps: [] };
    const d = perBridge.get(br) ?? [];
    const unknown = info.unknownTaps.filter(safeDevice);
    const uplinks = info.uplinks.filter(safeDevice);
    for (const u of uplinks) marked.push([u, PORT_UPLINK]);
    for (const t of unknown) marked.push([t, PORT_UNKNOWN]);
    // the same chains for both families (never mutated)
    const chains = bridgeCached(JSON.stringify(['bridge', br, d.map((x) => [x.k, x.in.id, x.in.spec, x.out.spec])]), () => [
      makeChain('filter', bc.main, [
        r('in', `-j ${bc.in}`),
        r('out', `-j ${bc.out}`),
        r('uplink', `-m mark --mark ${outMark(PORT_UPLINK)} -j ACCEPT`),
        r('deny', '-j DROP'),
      ]),
      // Entered by -j from BF-<br>, FORWARD (routed) and INPUT: a RETURN goes back there; a VM port
      // mark with no entry is dropped.
      ...markTree(bc.in, 16, [
        r('unmarked', `-m mark --mark ${inMark(0)} -j DROP`),
        r('unknown', `-m mark --mark ${inMark(PORT_UNKNOWN)} -j DROP`),
        r('uplink', `-m mark --mark ${inMark(PORT_UPLINK)} -j RETURN`),
      ], d.map((x) => [x.k, x.in]), true),
      ...markTree(bc.out, 0, [
        r('unmarked', `-m mark --mark ${outMark(0)} -j DROP`),
        r('unknown', `-m mark --mark ${outMark(PORT_UNKNOWN)} -j DROP`),
      ], d.map((x) => [x.k, x.out])),
    ]);
    for (const f of [4, 6] as Fam[]) {
      fam[f].chains.push(...chains);
      const hook = (chain: string, tag: string, spec: string) =>
        fam[f].hooks.push({ table: 'filter', chain, id: `${tag}.${br}.${hashOf([spec]).slice(0, 6)}`, spec });
      hook('FORWARD', 'fwd', `-i ${br} -m physdev --physdev-is-bridged -j ${bc.main}`);
      // Routed by this host: out of a VM port through the source VM's egress and anti-spoofing; into
      // the bridge never (the out-port, hence the VM whose ingress would decide, is not known yet).
      hook('FORWARD', 'fwdr', `-i ${br} -m physdev ! --physdev-is-bridged -j ${bc.in}`);
      hook('FORWARD', 'fwdo', `-o ${br} -m physdev ! --physdev-is-bridged -j DROP`);
      // To the host's own addresses on the bridge: the source VM's egress and anti-spoofing too.
      hook('INPUT', 'in', `-i ${br} -j ${bc.in}`);
    }
    for (const u of uplinks) ebPre.push([u, `-j ${ebZoneChains(br).uplink}`]);
    for (const t of unknown) { ebPre.push([t, '-j DROP']); ebPost.push([t, '-j DROP']); }
  }

  // raw PREROUTING, one chain (the first CT target a packet meets wins):
  // NOTRACK: packets of untracked VMs, except those to/from a tracked VM on this host (its state must see them);
  // then the conntrack zone ebtables put into the mark (not for the host's own addresses: its replies use zone 0).
  const hostSets: SetDef[] = [];
  for (const f of [4, 6] as Fam[]) {
    const raw: IptRule[] = [];
    if (notrack[f].nt.size) {
      const nt = notrackSet(f);
      const tr = trackedSet(f);
      const famName = f === 4 ? 'inet' : 'inet6';
      hostSets.push({ name: nt, family: famName, members: [...notrack[f].nt].sort() }, { name: tr, family: famName, members: [...notrack[f].tr].sort() });
      raw.push(
        r('nt.src', `-m set --match-set ${nt} src -m set ! --match-set ${tr} dst -j CT --notrack`),
        r('nt.dst', `-m set --match-set ${nt} dst -m set ! --match-set ${tr} src -j CT --notrack`),
      );
    }
    if (bridges.length) raw.push(r('zone', `-m mark ! --mark 0x0/${hex(MARK_ZONE_MASK)} -m addrtype ! --dst-type LOCAL -j CT --zone mark`));
    if (!raw.length) continue;
    fam[f].chains.push(makeChain('raw', RAW_CHAIN, raw));
    const spec = `-j ${RAW_CHAIN}`;
    fam[f].hooks.push({ table: 'raw', chain: 'PREROUTING', id: `raw.${hashOf([spec]).slice(0, 6)}`, spec });
  }

  const groupSets: SetDef[] = state.sets.map((s) => ({
    name: groupSetName(s.id),
    family: s.family === 4 ? 'inet' : 'inet6',
    members: [...new Set(s.members.map((m) => (s.family === 6 ? canonV6(m) : m)))].sort(),
  }));
  const extraSets: SetDef[] = [...refSets].filter(([id]) => !known.has(id)).sort((x, y) => (x[0] < y[0] ? -1 : 1))
    .map(([id, f]) => ({ name: groupSetName(id), family: f === 4 ? 'inet' : 'inet6', members: [] }));
  const sets = [...groupSets, ...extraSets, ...hostSets, ...vmSets];

  // ebtables always: a libvirt-named port Palisade does not know (a VM whose tap appeared after the
  // last discovery, on a bridge not managed yet) is dropped both ways from the start.
  const eb: EbProgram = { chains: [], hooks: [] };
  {
    // Marks: clear Palisade's bits, then the port's number (in-port in nat PREROUTING, out-port in filter FORWARD).
    const clearIn = `-j mark --mark-and ${hex(~(MARK_IN_MASK | MARK_ALLOW | 0xffff) >>> 0)} --mark-target CONTINUE`;
    const clearOut = `-j mark --mark-and ${hex(~MARK_ZONE_MASK >>> 0)} --mark-target CONTINUE`;
    const fwd: PortRule[] = marked.map(([dev, k]) => [dev, `-j mark --mark-or ${hex(k)} --mark-target RETURN`]);
    eb.chains.push(
      // A frame from a port with no in-port mark (one added to a managed bridge since the last
      // discovery, whatever its name) reaches no port Palisade knows: VMs and uplinks.
      ...withTail(portTree('filter', EB_FWD, '-o', fwd, [clearOut, `--mark 0x0/${hex(MARK_IN_MASK)} -j ${EB_FWD_UNMARKED}`]), EB_FWD,
        `-o vnet+ --mark 0x0/${hex(MARK_OUT_MASK)} -j DROP`),
      ...portTree('filter', EB_FWD_UNMARKED, '-o', marked.map(([dev]): PortRule => [dev, '-j DROP']), []),
      ...withTail(portTree('nat', EB_PRE, '-i', ebPre, [clearIn]), EB_PRE,
        // A libvirt-named port Palisade does not know yet (no in-port mark) sends nothing, ARP included.
        `-i vnet+ --mark 0x0/${hex(MARK_IN_MASK)} -j DROP`),
      ...portTree('nat', EB_POST, '-o', ebPost, []),
      // shared by every NIC (only while some NIC references them, so they stay reachable for read-back)
      ...(ebChains.length ? [{ table: 'nat' as const, name: EB_L2_IN, rules: L2_IN_RULES }, { table: 'nat' as const, name: EB_L2_OUT, rules: L2_OUT_RULES }] : []),
      ...ebZone,
      ...ebChains,
    );
    eb.hooks.push(
      { table: 'filter', chain: 'FORWARD', spec: `-j ${EB_FWD}` },
      { table: 'nat', chain: 'PREROUTING', spec: `-j ${EB_PRE}` },
      { table: 'nat', chain: 'POSTROUTING', spec: `-j ${EB_POST}` },
    );
  }
  const program: Program = { v4: fam[4], v6: fam[6], sets, eb };
  // The restore texts are for people and tests (apply writes diffs): built on first read.
  const memo: Partial<Record<'iptables' | 'ip6tables' | 'ipset' | 'ebtables', string>> = {};
  return {
    get iptables() { return (memo.iptables ??= iptFullText(program.v4)); },
    get ip6tables() { return (memo.ip6tables ??= iptFullText(program.v6)); },
    get ipset() { return (memo.ipset ??= ipsetFullText(sets)); },
    get ebtables() { return (memo.ebtables ??= ebFullText(eb)); },
    program,
    vmErrors,
    programmed,
  };
}
