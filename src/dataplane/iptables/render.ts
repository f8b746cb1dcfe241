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
// What each VM NIC may always send and receive (the baseline) is the plan's (dataplane/plan): this
// file only prints its lists in iptables/ebtables syntax, in the layout above.
import type { DataplaneInput } from '../backend.js';
import type { PolicyRule } from '../../policy/ir.js';
import {
  type BaseRule, type Match, type PortPlan, type VmPlan, type Verdict, BASELINE, forEther, isDrop, planHost, vmProblems,
  type DropLogConfig, type DropReason, type LogSide, LOG_REASON, logPrefix,
  BRIDGE_ZONE_BASE, MARK_ALLOW, MARK_IN_MASK, MARK_OUT_MASK, MARK_ZONE_MASK, PORT_UNKNOWN, PORT_UPLINK, assignPorts, canonV6, hex,
} from '../plan/index.js';
import {
  EB_FWD, EB_FWD_UNMARKED, EB_L2_IN, EB_L2_OUT, EB_POST, EB_PRE, RAW_CHAIN, V6_PRE, V6_POST, V6_TO, bridgeChains, ebBase, ebNames, ebZoneChains, groupSetName, nicSetNames,
  notrackSet, trackedSet, vmNames,
  MAX_CHAIN,
} from './names.js';
import {
  type EbChain, type EbProgram, type Fam, type IptChain, type IptHook, type IptRule, type Program, type SetDef,
  ebFullText, ipsetFullText, iptFullText, makeChain, hashOf,
} from './program.js';

export { MARK_ALLOW, MARK_IN_MASK, MARK_OUT_MASK, MARK_ZONE_MASK, PORT_UNKNOWN, PORT_UPLINK, assignPorts };

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

// ---- the plan's baseline in iptables / ebtables syntax ------------------------------------------

/** Does the match depend on the NIC (its own addresses)? Rules before the first such one can be shared. */
const usesOwn = (m: Match) => m.src === 'not-own' || m.dst === 'not-own' || !!m.ndTargetOwn || m.arpSenderIp === 'own' || m.arpTargetIp === 'own' || !!m.arpSenderMac || !!m.srcMac;

const PORTS = (p: string, m: Match) => `-p ${p} -m ${p}${m.sport !== undefined ? ` --sport ${m.sport}` : ''}${m.dport !== undefined ? ` --dport ${m.dport}` : ''}`;

/** iptables/ip6tables match text; `own`: the NIC's own-address ipset for `not-own`. */
function iptMatch(fam: Fam, m: Match, own = ''): string {
  const parts: string[] = [];
  if (m.src === 'unspecified') parts.push(fam === 4 ? '-s 0.0.0.0/32' : '-s ::/128');
  if (m.src === 'link-local') parts.push('-s fe80::/10');
  if (m.dst === 'broadcast') parts.push('-d 255.255.255.255/32');
  if (m.proto === 'udp' || m.proto === 'tcp') parts.push(PORTS(m.proto, m));
  if (m.proto === 'icmp6') parts.push(icmp6(m.icmp6!));
  if (m.hopLimit255) parts.push(HL);
  if (m.ct) parts.push('-m conntrack --ctstate RELATED,ESTABLISHED');
  if (m.src === 'not-own') parts.push(`-m set ! --match-set ${own} src`);
  if (m.dst === 'not-own') parts.push(`-m set ! --match-set ${own} dst`);
  return parts.join(' ');
}

const spec = (...parts: string[]) => parts.filter(Boolean).join(' ');

// ---- the drop log (issue 11) --------------------------------------------------------------------
// With the drop log on, a drop whose reason has an API counterpart (plan/reasons.ts) jumps to a chain
// that logs to NFLOG (when the limit allows) and then drops: same match, same place, so the allowed
// path meets exactly the rules it met before. iptables has no per-port token bucket reachable from a
// shared chain, so its IP-level budgets for the default denies are per VM address (hashlimit: the
// source address for drops of what a VM sends, the destination for drops of what goes to it; at most
// DROP_LOG_BUCKETS buckets, a packet that finds the table full is dropped unlogged), and for the other
// reasons, whose address the sender can make up, per reason and side on the host; ebtables' (L2 drops) is per reason and side
// on the host (`--limit`). The set in use for one render (set by render(), read by the helpers below,
// whose memoised outputs are keyed by it).
let dropLog: DropLogConfig | null = null;
const DROP_LOG_BUCKETS = 4096;
const iptLogChain = (side: LogSide, reason: DropReason) => `PDL-${side}-${reason}`;
const ebLogChain = (side: LogSide, reason: DropReason) => `PDLE-${side}-${reason}`;
const logged = (reason: DropReason) => !!dropLog && !!LOG_REASON[reason];
/** iptables target of a drop with its reason, seen from the VM on `side`. */
const dropTo = (side: LogSide, reason: DropReason) => (logged(reason) ? `-j ${iptLogChain(side, reason)}` : '-j DROP');
const dropV = (side: LogSide, v: Verdict, otherwise: string) => (isDrop(v) ? dropTo(side, v.drop) : otherwise);

/** The iptables log chains (every side and reason the renderer can jump to; unused ones cost nothing). */
function iptLogChains(cfg: DropLogConfig, fam: Fam): IptChain[] {
  const out: IptChain[] = [];
  const name = (side: LogSide) => `pdl${side}${hashOf([String(cfg.rate), String(cfg.burst), String(fam)]).slice(0, 8)}`;
  for (const side of ['f', 't'] as LogSide[]) {
    for (const reason of Object.keys(LOG_REASON) as DropReason[]) {
      if (!LOG_REASON[reason] || reason === 'unknown-port') continue;
      const key = side === 'f' ? 'src' : 'dst';
      // Per VM address only where that address is the VM's own: a default deny is met after the
      // anti-spoofing checks. Elsewhere the sender picks the address (a spoofed source, a destination
      // the VM does not own, a multicast group): one bucket per made-up address would let one flood
      // log thousands of times the budget, so those chains share one bucket per reason and side on the
      // host (mask 0, in a table of their own: hashlimit takes the mask from the table's first rule).
      const perVm = reason === (side === 'f' ? 'egress-default-deny' : 'ingress-default-deny');
      const limit = `-m hashlimit --hashlimit-upto ${cfg.rate}/sec --hashlimit-burst ${cfg.burst} --hashlimit-mode ${key}ip --hashlimit-name ${name(side)}${perVm ? '' : 'h'} --hashlimit-htable-max ${DROP_LOG_BUCKETS}${perVm ? '' : ` --hashlimit-${key}mask 0`}`;
      out.push(makeChain('filter', iptLogChain(side, reason), [
        r('log', `${limit} -j NFLOG --nflog-prefix "${logPrefix(side, reason)}" --nflog-group ${cfg.group}`),
        r('drop', '-j DROP'),
      ]));
    }
  }
  return out;
}

/** The ebtables log chains the rules jump to, in ebtables-save's canonical form. */
function ebLogChains(cfg: DropLogConfig, chains: EbChain[]): EbChain[] {
  const used = new Set<string>();
  for (const c of chains) for (const rule of c.rules) { const m = /(?:^| )-j (PDLE-[ft]-[a-z-]+)$/.exec(rule); if (m) used.add(m[1]); }
  return [...used].sort().map((name) => {
    const [, side, reason] = /^PDLE-([ft])-(.+)$/.exec(name)!;
    return { table: 'nat' as const, name, rules: [
      `--limit ${cfg.rate}/sec --limit-burst ${cfg.burst} --nflog-prefix "${logPrefix(side as LogSide, reason as DropReason)}" --nflog-group ${cfg.group} -j CONTINUE`,
      '-j DROP',
    ] };
  });
}

/** ebtables target of a verdict in an L2 list (`side`: where the VM is, for the drop log). */
const ebTarget = (v: Verdict, side: LogSide) => (isDrop(v) ? (logged(v.drop) ? `-j ${ebLogChain(side, v.drop)}` : '-j DROP') : '-j RETURN');

const ICMP6_NAMES: Record<number, string> = { 133: 'router-solicitation', 134: 'router-advertisement', 135: 'neighbour-solicitation', 136: 'neighbour-advertisement', 137: 'redirect' };

/**
 * ebtables match texts of an L2 rule (one per own address where it matches own addresses, none when
 * it cannot match). `arpOnly`: the chain is reached by ARP frames only (no `-p ARP` needed alone).
 */
function ebMatches(m: Match, n: { mac: string; ipv4: string[] } | null, arpOnly = false): string[] {
  const p = m.ether === 'arp' ? 'ARP' : m.ether === 'ip4' ? 'IPv4' : m.ether === 'ip6' ? 'IPv6' : '';
  const arpOpts = !!(m.arpOp || m.arpSenderIp || m.arpSenderMac || m.arpTargetIp);
  const head: string[] = [];
  if (p && !(arpOnly && p === 'ARP' && !arpOpts)) head.push(`-p ${p}`);
  if (m.srcMac === 'not-own') head.push(`-s ! ${n!.mac}`);
  if (m.dstMac) head.push(m.dstMac === 'broadcast' ? '-d Broadcast' : '-d Multicast');
  if (m.arpOp) head.push(`--arp-op ${m.arpOp === 'request' ? 'Request' : 'Reply'}`);
  const tail: string[] = [];
  if (m.arpSenderMac) tail.push(`--arp-mac-src ${n!.mac}`);
  if (m.proto) {
    const ip = m.ether === 'ip6' ? 'ip6' : 'ip';
    if (m.proto === 'icmp6') tail.push(`--ip6-proto ipv6-icmp --ip6-icmp-type ${ICMP6_NAMES[m.icmp6!] ?? `${m.icmp6}/0:255`}`);
    else tail.push(`--${ip}-proto ${m.proto}${m.sport !== undefined ? ` --${ip}-sport ${m.sport}` : ''}${m.dport !== undefined ? ` --${ip}-dport ${m.dport}` : ''}`);
  }
  const per = (opt: string, ips: string[]) => ips.map((ip) => spec(...head, `${opt} ${ip}`, ...tail));
  if (m.arpSenderIp === 'own') return per('--arp-ip-src', n!.ipv4);
  if (m.arpSenderIp === 'unspecified') head.push('--arp-ip-src 0.0.0.0');
  if (m.arpTargetIp === 'own') return per('--arp-ip-dst', n!.ipv4);
  return [spec(...head, ...tail)];
}

/** An L2 list as ebtables rules. */
function ebRules(list: BaseRule[], n: { mac: string; ipv4: string[] } | null, side: LogSide, arpOnly = false): string[] {
  return list.flatMap((rule) => ebMatches(rule.match, n, arpOnly).map((m) => spec(m, ebTarget(rule.verdict, side))));
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
/** Low bit of each level's part of the 11-bit port number: bits 10–7, then 6–3, then 2–0 (leaves). */
const MARK_LEVELS = [7, 3];
/**
 * Mark dispatch as a tree of fixed depth over the 11-bit port number: up to 16 entries are matched
 * flat; more are grouped by bits 10–7 (`<chain>-<g>`), a group of more than 16 again by bits 6–3
 * (`<chain>-<gg>`), whose leaves hold at most 8. A packet meets at most ~16 + 16 + 8 mark matches
 * however many VMs the host has: iptables has no hash lookup into chains, so a bounded tree is the
 * floor (nftables dispatches with one verdict-map lookup). A group with a single entry stays inline.
 * `closed`: the tree is entered by goto (`-g`) and ends in DROP (a mark with no entry, e.g. a port
 * ebtables already marks while the IP rules for it are not written yet, fails closed); entries then
 * goto too, so a RETURN from the VM's chain leaves the whole tree.
 */
function markTree(name: string, shift: number, head: IptRule[], entries: [number, IptRule][], closed = false): IptChain[] {
  const sorted = [...entries].sort((x, y) => x[0] - y[0]);
  const end = r('end', closed ? '-j DROP' : '-j RETURN');
  const jump = closed ? '-g' : '-j';
  const build = (chain: string, items: [number, IptRule][], level: number, lead: IptRule[]): IptChain[] => {
    if (items.length <= MARK_GROUP_MIN || level >= MARK_LEVELS.length) return [makeChain('filter', chain, [...lead, ...items.map((e) => e[1]), end])];
    const low = MARK_LEVELS[level];
    const groups = new Map<number, [number, IptRule][]>();
    for (const it of items) (groups.get(it[0] >> low) ?? groups.set(it[0] >> low, []).get(it[0] >> low)!).push(it);
    const rules = [...lead];
    const children: IptChain[] = [];
    for (const [g, rs] of groups) {
      if (rs.length === 1) { rules.push(rs[0][1]); continue; }
      // one hex digit per level (bits 10–7, then 10–3): names never collide across levels
      const tag = g.toString(16).padStart(level + 1, '0');
      const child = `${name}-${tag}`;
      rules.push(r(`grp.${tag}`, `-m mark --mark ${hex((g << low) << shift)}/${hex(((0x7ff >> low) << low) << shift)} ${jump} ${child}`));
      children.push(...build(child, rs, level + 1, []));
    }
    rules.push(end);
    return [makeChain('filter', chain, rules), ...children];
  };
  return build(name, sorted, 0, head);
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


const inMark = (k: number) => `${hex(k << 16)}/${hex(MARK_IN_MASK)}`;
const outMark = (k: number) => `${hex(k)}/${hex(MARK_OUT_MASK)}`;

/** Set on a packet by the shared IPv6 chains when the always-allowed baseline (ND, DHCPv6 client,
 *  replies, DNS) lets it leave a VM; cleared for every frame by ebtables PALISADE-PRE. */
const ALLOW = `${hex(MARK_ALLOW)}/${hex(MARK_ALLOW)}`;
const allow = `-j MARK --set-xmark ${ALLOW}`;

/** The leading rules of a guard that do not depend on the NIC (IPv6: shared by every VM). */
const sharedPrefix = (list: BaseRule[]) => list.slice(0, Math.max(0, list.findIndex((r) => usesOwn(r.match))));

/** IPv6 baseline shared by every VM (per-VM chains jump here; a source-side verdict comes back as MARK_ALLOW). */
function v6SharedChains(): IptChain[] {
  const b = BASELINE.ip[6];
  const src = (v: Verdict) => dropV('f', v, allow);
  return [
    makeChain('filter', V6_PRE, [...sharedPrefix(b.fromGuard).map((x) => r(x.id, spec(iptMatch(6, x.match), src(x.verdict)))), r('end', '-j RETURN')]),
    makeChain('filter', V6_POST, [...b.fromAllow.map((x) => r(x.id, spec(iptMatch(6, x.match), src(x.verdict)))), r('end', '-j RETURN')]),
    makeChain('filter', V6_TO, [...sharedPrefix(b.toGuard).map((x) => r(x.id, spec(iptMatch(6, x.match), dropV('t', x.verdict, '-j ACCEPT')))), r('end', '-j RETURN')]),
  ];
}

/** `sets`: the NIC's own-address ipsets (anti-spoofing is per NIC: a NIC sends only from its addresses). */
interface PlacedNic { port: PortPlan; index: number; device: string; sets: { set4: string; set6: string } }

/** The per-NIC part of the IPv4 baseline (the whole of it: IPv4 has no shared chains). */
function defRules4(n: PlacedNic, names: ReturnType<typeof vmNames>): IptRule[] {
  const k = `n${n.index}`;
  const f = from(n.device);
  const t = to(n.device);
  const b = BASELINE.ip[4];
  const out: IptRule[] = [];
  for (const x of b.fromGuard) out.push(r(`${k}.${x.id}`, spec(f, iptMatch(4, x.match, n.sets.set4), dropV('f', x.verdict, '-j RETURN'))));
  for (const x of b.fromAllow) out.push(r(`${k}.${x.id}`, spec(f, iptMatch(4, x.match, n.sets.set4), '-j RETURN')));
  out.push(r(`${k}.eg`, `${f} -j ${names.eg}`), r(`${k}.out`, `${f} -j RETURN`));
  const done = new Set<string>();
  for (const x of [...b.toGuard, ...b.toAccept]) {
    if (done.has(x.id)) continue;
    done.add(x.id);
    out.push(r(`${k}.${x.id}`, spec(t, iptMatch(4, x.match, n.sets.set4), dropV('t', x.verdict, '-j ACCEPT'))));
  }
  out.push(r(`${k}.in`, `${t} -j ${names.vm}`), r(`${k}.deny`, `${t} ${dropTo('t', 'ingress-default-deny')}`));
  return out;
}

/** The per-NIC part of the IPv6 baseline around the shared chains. */
function defRules6(n: PlacedNic, names: ReturnType<typeof vmNames>): IptRule[] {
  const k = `n${n.index}`;
  const f = from(n.device);
  const t = to(n.device);
  const b = BASELINE.ip[6];
  const out: IptRule[] = [r(`${k}.pre`, `${f} -j ${V6_PRE}`), r(`${k}.prok`, `${f} -m mark --mark ${ALLOW} -j RETURN`)];
  for (const x of b.fromGuard.slice(sharedPrefix(b.fromGuard).length)) {
    const target = dropV('f', x.verdict, '-j RETURN');
    // A neighbour advertisement's target, read by u32 at its offset when ICMPv6 follows the IPv6
    // header directly: one rule per own address.
    if (x.match.ndTargetOwn) {
      const rest = iptMatch(6, { ...x.match, ndTargetOwn: undefined }, n.sets.set6);
      n.port.own[6].forEach((a, i) => out.push(r(`${k}.${x.id}${i}`, spec(f, rest, `-m u32 --u32 "${naTarget(a)}"`, target))));
    } else out.push(r(`${k}.${x.id}`, spec(f, iptMatch(6, x.match, n.sets.set6), target)));
  }
  out.push(
    r(`${k}.post`, `${f} -j ${V6_POST}`),
    r(`${k}.postok`, `${f} -m mark --mark ${ALLOW} -j RETURN`),
    r(`${k}.eg`, `${f} -j ${names.eg}`),
    r(`${k}.out`, `${f} -j RETURN`),
    r(`${k}.base`, `${t} -j ${V6_TO}`),
  );
  const done = new Set(sharedPrefix(b.toGuard).map((x) => x.id));
  for (const x of [...b.toGuard, ...b.toAccept]) {
    if (done.has(x.id)) continue;
    done.add(x.id);
    out.push(r(`${k}.${x.id}`, spec(t, iptMatch(6, x.match, n.sets.set6), dropV('t', x.verdict, '-j ACCEPT'))));
  }
  out.push(r(`${k}.in`, `${t} -j ${names.vm}`), r(`${k}.deny`, `${t} ${dropTo('t', 'ingress-default-deny')}`));
  return out;
}

/** ebtables chains of one NIC: its port mark, the per-NIC L2 lists (MAC pin, ARP only for its own
 *  IPv4s), its conntrack zone; the shared L2 lists are EB_L2_IN / EB_L2_OUT. Written in
 *  ebtables-save's canonical form so the read-back compares as text. */
function ebNic(n: PlacedNic, instanceName: string): { chains: EbChain[]; pre: PortRule; post: PortRule } {
  const b = ebNames(ebBase(instanceName, n.index));
  const port = n.port.number;
  const nic = { mac: n.port.mac, ipv4: n.port.own[4] };
  const chains: EbChain[] = [
    { table: 'nat', name: b.inIps, rules: ebRules(BASELINE.arpFromNic, nic, 'f', true) },
    {
      table: 'nat',
      name: b.in,
      rules: [
        `-j mark --mark-or ${hex(port << 16)} --mark-target CONTINUE`, ...ebRules(BASELINE.l2FromNic, nic, 'f'), `-p ARP -j ${b.inIps}`,
        // conntrack zone: the bridge's when the frame goes straight to a VM on it, else this port's
        `-j ${ebZoneChains(n.port.bridge).local}`,
        `--mark 0x0/${hex(MARK_ZONE_MASK)} -j mark --mark-or ${hex(port)} --mark-target CONTINUE`,
        `-j ${EB_L2_IN}`,
      ],
    },
    { table: 'nat', name: b.outIps, rules: ebRules(BASELINE.arpToNic, nic, 't', true) },
    { table: 'nat', name: b.out, rules: [`-p ARP -j ${b.outIps}`, `-j ${EB_L2_OUT}`] },
  ];
  return { chains, pre: [n.device, `-j ${b.in}`], post: [n.device, `-j ${b.out}`] };
}

/** From any VM, after its MAC and ARP checks. */
const L2_IN_RULES = () => ebRules(BASELINE.l2FromVm, null, 'f');
/** To any VM, after its ARP check. */
const L2_OUT_RULES = () => ebRules(BASELINE.l2ToVm, null, 't');

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


interface VmOut {
  chains: Record<Fam, IptChain[]>;
  sets: SetDef[];
  dispatch: { bridge: string; device: string; mac: string; k: number; in: IptRule; out: IptRule }[];
  eb: { chains: EbChain[]; pre: PortRule; post: PortRule }[];
}

/** One VM's chains, own-address sets and ebtables rules (placed NICs only). */
function renderVm(vm: VmPlan, names: ReturnType<typeof vmNames>): VmOut {
  const placed: PlacedNic[] = vm.ports.map((port) => ({ port, index: port.nicIndex, device: port.device, sets: nicSetNames(vm.instanceName, port.nicIndex) }));
  const chains = { 4: [], 6: [] } as Record<Fam, IptChain[]>;
  const refs: Refs = new Map();
  for (const f of [4, 6] as Fam[]) {
    const pol = f === 4 ? vm.policy.v4 : vm.policy.v6;
    const ingress = [...userRules(f, 'ingress', pol.ingress, refs), r('end', '-j RETURN')];
    const egress = pol.egressRestricted
      ? [...userRules(f, 'egress', pol.egress, refs), r('deny', dropTo('f', 'egress-default-deny'))]
      : [r('open', '-j RETURN')];
    const def: IptRule[] = [];
    for (const n of placed) def.push(...(f === 4 ? defRules4(n, names) : defRules6(n, names)));
    chains[f].push(makeChain('filter', names.def, def), makeChain('filter', names.vm, ingress), makeChain('filter', names.eg, egress));
  }
  const dispatch: VmOut['dispatch'] = [];
  const eb: VmOut['eb'] = [];
  for (const n of placed) {
    const k = n.port.number;
    dispatch.push({
      bridge: n.port.bridge, device: n.device, mac: n.port.nic.mac, k,
      in: r(`vm.${n.device}`, `-m mark --mark ${inMark(k)} -g ${names.def}`),
      out: r(`vm.${n.device}`, `-m mark --mark ${outMark(k)} -j ${names.def}`),
    });
    eb.push(ebNic(n, vm.instanceName));
  }
  return {
    chains, dispatch, eb,
    sets: placed.flatMap((n): SetDef[] => [
      { name: n.sets.set4, family: 'inet', members: n.port.own[4] },
      { name: n.sets.set6, family: 'inet6', members: n.port.own[6] },
    ]),
  };
}

// VM plans are memoised by the planner (same content, same object), so their renders are memoised by
// object: re-rendering a host after a one-VM change costs one VM's work. Outputs are never mutated.
let vmMemo = new WeakMap<VmPlan, VmOut>();
let vmMemoKey = '';
function renderVmMemo(vm: VmPlan, names: ReturnType<typeof vmNames>): VmOut {
  let out = vmMemo.get(vm);
  if (!out) vmMemo.set(vm, (out = renderVm(vm, names)));
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
  const plan = planHost(input);
  dropLog = plan.dropLog;
  const logKey = dropLog ? `${dropLog.rate}/${dropLog.burst}/${dropLog.group}` : '';
  if (logKey !== vmMemoKey) { vmMemo = new WeakMap(); bridgeMemo.clear(); vmMemoKey = logKey; }
  const vmErrors: Record<string, string> = { ...plan.errors };
  const fam: Record<Fam, { chains: IptChain[]; hooks: IptHook[] }> = { 4: { chains: [], hooks: [] }, 6: { chains: [], hooks: [] } };
  const vmSets: SetDef[] = [];
  const ebChains: EbChain[] = [];
  const ebPre: PortRule[] = [];
  const ebPost: PortRule[] = [];
  /** Per bridge: dispatch rules into the VMs' <def> chains. */
  const perBridge = new Map<string, { k: number; mac: string; in: IptRule; out: IptRule }[]>();
  const usedNames = new Map<string, string>();
  const programmed: string[] = [];
  /** Bridge ports and their numbers (VM taps, then uplinks and unknown taps). */
  const marked: [string, number][] = [];

  for (const vm of plan.vms) {
    const names = vmNames(vm.instanceName);
    const all = [names.vm, names.eg, names.def, names.set4, names.set6];
    const ebBases = vm.ports.flatMap((p) => {
      const sets = nicSetNames(vm.instanceName, p.nicIndex);
      return [ebBase(vm.instanceName, p.nicIndex), ...(p.nicIndex ? [sets.set4, sets.set6] : [])];
    });
    // CloudStack's names are truncated: two instance names may share a chain or set name.
    const clashes: string[] = [];
    for (const n of [...all, ...ebBases]) {
      const owner = usedNames.get(n);
      if (owner && owner !== vm.vmId) clashes.push(`name ${n} clashes with VM ${owner}`);
    }
    const tooLong = names.def.length > MAX_CHAIN;
    const problems = vmProblems(vm, { instance: tooLong, clashes });
    if (problems.length) vmErrors[vm.vmId] = problems.join('; ');
    if (tooLong || clashes.length) continue;
    for (const n of [...all, ...ebBases]) usedNames.set(n, vm.vmId);
    programmed.push(vm.vmId);

    const vo = renderVmMemo(vm, names);
    vmSets.push(...vo.sets);
    for (const f of [4, 6] as Fam[]) fam[f].chains.push(...vo.chains[f]);
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
  if (dropLog && programmed.length) for (const f of [4, 6] as Fam[]) fam[f].chains.push(...iptLogChains(dropLog, f));

  const bridges = plan.bridges;
  /** Conntrack zones (ebtables nat): one per VM port for traffic between it and the uplink, one per
   *  bridge for traffic between two of its VMs. A packet routed back into the same bridge (two VMs
   *  in different subnets) is seen twice by conntrack, once per leg, each leg in its own zone. */
  const ebZone: EbChain[] = [];
  for (const b of bridges) {
    const vms = (perBridge.get(b.name) ?? []).map((x): [string, number] => [x.mac, x.k]);
    const withUplink = b.uplinks.length > 0;
    ebZone.push(...bridgeCached(JSON.stringify(['zone', b.name, b.number, withUplink, vms]), () => zoneChains(b.name, b.number, withUplink, vms)));
  }
  for (const b of bridges) {
    const br = b.name;
    const bc = bridgeChains(br);
    const d = perBridge.get(br) ?? [];
    for (const u of b.uplinks) marked.push([u, PORT_UPLINK]);
    for (const t of b.unknown) marked.push([t, PORT_UNKNOWN]);
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
    for (const u of b.uplinks) ebPre.push([u, `-j ${ebZoneChains(br).uplink}`]);
    for (const t of b.unknown) { ebPre.push([t, '-j DROP']); ebPost.push([t, '-j DROP']); }
  }

  // raw PREROUTING, one chain (the first CT target a packet meets wins):
  // NOTRACK: packets of untracked VMs, except those to/from a tracked VM on this host (its state must see them);
  // then the conntrack zone ebtables put into the mark (not for the host's own addresses: its replies use zone 0).
  const hostSets: SetDef[] = [];
  for (const f of [4, 6] as Fam[]) {
    const raw: IptRule[] = [];
    const nt = plan.notrack[f];
    if (nt.untracked.length) {
      const ntName = notrackSet(f);
      const trName = trackedSet(f);
      const famName = f === 4 ? 'inet' : 'inet6';
      hostSets.push({ name: ntName, family: famName, members: nt.untracked }, { name: trName, family: famName, members: nt.tracked });
      raw.push(
        r('nt.src', `-m set --match-set ${ntName} src -m set ! --match-set ${trName} dst -j CT --notrack`),
        r('nt.dst', `-m set --match-set ${ntName} dst -m set ! --match-set ${trName} src -j CT --notrack`),
      );
    }
    if (bridges.length) raw.push(r('zone', `-m mark ! --mark 0x0/${hex(MARK_ZONE_MASK)} -m addrtype ! --dst-type LOCAL -j CT --zone mark`));
    if (!raw.length) continue;
    fam[f].chains.push(makeChain('raw', RAW_CHAIN, raw));
    const spec = `-j ${RAW_CHAIN}`;
    fam[f].hooks.push({ table: 'raw', chain: 'PREROUTING', id: `raw.${hashOf([spec]).slice(0, 6)}`, spec });
  }

  const sets: SetDef[] = [
    ...plan.sets.map((s): SetDef => ({ name: groupSetName(s.id), family: s.family === 4 ? 'inet' : 'inet6', members: s.members })),
    ...hostSets, ...vmSets,
  ];

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
      ...(ebChains.length ? [{ table: 'nat' as const, name: EB_L2_IN, rules: L2_IN_RULES() }, { table: 'nat' as const, name: EB_L2_OUT, rules: L2_OUT_RULES() }] : []),
      ...ebZone,
      ...ebChains,
    );
    if (dropLog) eb.chains.push(...ebLogChains(dropLog, eb.chains));
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
