// Pure renderer: host plan → the nftables program (two tables named `palisade`).
//
// Packet path (bridged; this kernel has no bridge-family conntrack, so state is kept in `inet`
// through br_netfilter, keyed by the port numbers the bridge table puts into the packet mark):
//   bridge prerouting (priority -250: after ebtables' nat at -300, before br_netfilter at 0)
//     iifname vmap @in_ports → VM port: its bridge's chain (in-port number and conntrack zone into the
//     mark: the bridge's zone when the frame goes straight to a VM on it, none for the host itself,
//     else the port's), then the plan's L2 lists and IP guard, shared by every port, with the port's
//     facts looked up in sets keyed by its name (MAC, own addresses, NA targets); NOTRACK for untracked
//     VMs. Uplink: the destination VM port's zone (by MAC). Unknown VM-like port: dropped; a `vnet*`
//     port not listed at all (libvirt's name, a tap Palisade does not know yet): dropped.
//   inet prerouting (raw, -300): ct zone from the mark (a map, one element per zone in use).
//   bridge forward (-250, before ebtables' filter at -200): oifname vmap @out_ports → the port's one
//     chain (out-port number into the mark), then the shared L2 lists and IP guard towards it (ARP
//     target, destination address). A frame from a port with no in-port mark (added to the bridge
//     since the last discovery) reaches no port Palisade knows.
//   inet forward / input (0), for bridges Palisade manages:
//     replies of tracked flows → accept (both guards already ran in the bridge table, before any
//     state counted, so an established packet passed both: this is the plan's `est` allow/accept);
//     the source VM's chain by in-port → the destination VM's chain by out-port → accept for an
//     uplink or the host itself; anything the host routes into a VM bridge → drop.
// Per packet a forwarded frame meets a handful of rules and hash lookups, never a walk over ports or
// VMs. Every user rule has a counter and its rule id in its comment (the inet table holds little
// else, so reading it reads the counters); every drop has a counter and its reason in the comment.
// The mark layout and port / zone numbers are the plan's, identical to the iptables backend's, so
// both can be in place at once while a host switches between them.
import type { DataplaneInput } from '../backend.js';
import type { PolicyRule } from '../../policy/ir.js';
import {
  type BaseRule, type Fam, type HostPlan, type Match, type PortPlan, type VmPlan, type Verdict,
  BASELINE, MARK_ACCEPT_TO, MARK_ALLOW, MARK_IN_MASK, MARK_NOT_ACCEPT_TO, MARK_NOT_ALLOW, MARK_OUT_MASK, MARK_ZONE_MASK, PORT_UPLINK,
  canonV6, forEther, hex, isDrop, planHost, vmProblems,
  type DropLogConfig, type DropReason, type LogSide, LOG_REASON, logPrefix,
} from '../plan/index.js';
import { N, bridgeObjects, cid, dropLogChain, dropLogSet, groupSet, portChain, vmChains } from './names.js';
import { type NChain, type NRule, type NSet, type NftProgram, fullScript, makeChain } from './program.js';

export interface Rendered {
  program: NftProgram;
  /** The whole program as one `nft -f` script (for people and tests; apply writes differences). */
  readonly script: string;
  vmErrors: Record<string, string>;
  programmed: string[];
}

export interface RenderOptions {
  /** VMs whose ports are opened; the ports of every other planned VM stay closed (dropped). Used to
   *  program a very large host in several transactions. Default: all. */
  open?: ReadonlySet<string>;
}

const r = (id: string, text: string, reason?: NRule['reason']): NRule => (reason ? { id, text, reason } : { id, text });
const drop = (id: string, reason: NRule['reason'], match = ''): NRule => r(id, `${match ? `${match} ` : ''}counter drop`, reason);
const CLEAR_ZONE = hex(~MARK_ZONE_MASK >>> 0);
/** Set on every frame entering from a managed port: neither verdict yet (plan/marks.ts, the bit pairs). */
const NOT_YET = (MARK_NOT_ALLOW | MARK_NOT_ACCEPT_TO) >>> 0;

/** 128-bit hex of an IPv6 address (the NA target is compared as raw payload). */
export function v6Hex(addr: string): string {
  const [head, tail] = canonV6(addr).split('::');
  const parse = (s: string | undefined) => (s ? s.split(':').map((g) => parseInt(g, 16)) : []);
  const h = parse(head);
  const t = parse(tail);
  const groups = tail === undefined ? h : [...h, ...new Array(8 - h.length - t.length).fill(0), ...t];
  return `0x${groups.map((g) => g.toString(16).padStart(4, '0')).join('')}`;
}

/**
 * nft match text of a baseline match, in the shared chains: "own" facts are set lookups keyed by the
 * port the frame comes from (`dir` in: iifname) or goes to (out: oifname). `fam`: the IP family of
 * the chain (null: L2 only). The ethertype is implied by the chain a list is printed in.
 */
function nftMatch(m: Match, fam: Fam | null, dir: 'in' | 'out'): string {
  const parts: string[] = [];
  const ip = fam === 6 ? 'ip6' : 'ip';
  const port = dir === 'in' ? 'iifname' : 'oifname';
  const own = fam === 6 ? N.own6 : N.own4;
  if (m.srcMac === 'not-own') parts.push(`${port} . ether saddr != @${N.portMac}`);
  if (m.dstMac === 'broadcast') parts.push('ether daddr ff:ff:ff:ff:ff:ff');
  if (m.dstMac === 'multicast') parts.push('ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00');
  if (m.arpOp) parts.push(`arp operation ${m.arpOp}`);
  if (m.arpSenderIp === 'unspecified') parts.push('arp saddr ip 0.0.0.0');
  if (m.arpSenderIp === 'own') parts.push(`${port} . arp saddr ip @${N.own4}`);
  if (m.arpSenderMac === 'own') parts.push(`${port} . arp saddr ether @${N.portMac}`);
  if (m.arpTargetIp === 'own') parts.push(`${port} . arp daddr ip @${N.own4}`);
  if (m.src === 'unspecified') parts.push(fam === 6 ? 'ip6 saddr ::' : 'ip saddr 0.0.0.0');
  if (m.src === 'link-local') parts.push('ip6 saddr fe80::/10');
  if (m.dst === 'broadcast') parts.push('ip daddr 255.255.255.255');
  if (m.src === 'not-own') parts.push(`${port} . ${ip} saddr != @${own}`);
  if (m.dst === 'not-own') parts.push(`${port} . ${ip} daddr != @${own}`);
  if (m.hopLimit255) parts.push('ip6 hoplimit 255');
  if (m.ndTargetOwn) parts.push(`ip6 nexthdr ipv6-icmp ${port} . @th,64,128 @${N.nd6}`);
  if (m.proto === 'icmp6') parts.push(`icmpv6 type ${m.icmp6}`);
  else if (m.proto) {
    const ports = [m.sport !== undefined ? `${m.proto} sport ${m.sport}` : '', m.dport !== undefined ? `${m.proto} dport ${m.dport}` : ''].filter(Boolean);
    parts.push(ports.length ? ports.join(' ') : `meta l4proto ${m.proto}`);
  }
  if (m.ct) parts.push('ct state established,related');
  return parts.join(' ');
}

/** What a list's verdicts become in one chain: where `continue` and `exempt` go, what `allow`/`accept` do. */
interface Targets { continue: string; exempt?: string; allow?: string; accept?: string }

/** A baseline list as rules of one chain. `prefix`: a match put before every rule (the family). */
function listRules(list: BaseRule[], fam: Fam | null, dir: 'in' | 'out', t: Targets, prefix = '', idPrefix = ''): NRule[] {
  return list.map((b) => {
    const m = [prefix, nftMatch(b.match, fam, dir)].filter(Boolean).join(' ');
    const v: Verdict = b.verdict;
    const pre = m ? `${m} ` : '';
    const id = `${idPrefix}${b.id}`;
    if (isDrop(v)) return drop(id, v.drop, m);
    if (v === 'continue') return r(id, `${pre}${t.continue}`);
    if (v === 'exempt') return r(id, `${pre}${t.exempt!}`);
    if (v === 'allow') return r(id, `${pre}${t.allow!}`);
    return r(id, `${pre}${t.accept!}`);
  });
}

// ---- user rules (inet) -------------------------------------------------------------------------

function protoMatch(fam: Fam, rule: PolicyRule): string {
  const p = rule.protocol;
  if (p === 'all') return '';
  if (p === 'tcp' || p === 'udp') {
    const pr = rule.ports;
    if (!pr || (pr.from <= 0 && pr.to >= 65535)) return `meta l4proto ${p}`;
    return `${p} dport ${pr.from === pr.to ? pr.from : `${pr.from}-${pr.to}`}`;
  }
  if (p === 'icmp') {
    const proto = fam === 4 ? 'icmp' : 'icmpv6';
    const type = rule.icmp?.type ?? -1;
    const code = rule.icmp?.code ?? -1;
    if (type < 0) return `meta l4proto ${fam === 4 ? 'icmp' : 'ipv6-icmp'}`;
    return `${proto} type ${type}${code >= 0 ? ` ${proto} code ${code}` : ''}`;
  }
  return `meta l4proto ${p}`;
}

/**
 * One user rule: one nft rule per peer CIDR and per referenced set (each with a counter and, in its
 * comment, the rule id, the direction and family, and which peer), all in the VM's chain. Separate
 * rules rather than an anonymous interval set: nft re-reads the elements of every interval set on
 * each element change, which would make a group member change cost in proportion to all rules.
 */
function userRules(fam: Fam, dir: 'ingress' | 'egress', rules: PolicyRule[], verdict: string): NRule[] {
  const out: NRule[] = [];
  const addr = dir === 'ingress' ? 'saddr' : 'daddr';
  const ip = fam === 4 ? 'ip' : 'ip6';
  const tag = `${dir === 'ingress' ? 'i' : 'e'}${fam}`;
  for (const rule of rules) {
    const pm = protoMatch(fam, rule);
    const tail = `${pm ? `${pm} ` : ''}counter ${verdict}`;
    const id = `${cid(rule.id)}.${tag}`;
    rule.cidrs.forEach((c, i) => {
      const peer = c.endsWith('/0') ? `meta nfproto ipv${fam}` : `${ip} ${addr} ${c.replace(fam === 4 ? /\/32$/ : /\/128$/, '')}`;
      out.push(r(`${id}.c${i}`, `${peer} ${tail}`));
    });
    rule.sets.forEach((s, i) => out.push(r(`${id}.s${i}`, `${ip} ${addr} @${groupSet(s)} ${tail}`)));
  }
  return out;
}

/** A VM's chains and its ports' set elements, computed once per VM plan (renders reuse them). */
interface VmOut {
  chains: NChain[];
  from: string;
  to: string;
  /** per port: its out chain; the elements it contributes to each shared set / map */
  portChains: NChain[];
  el: Record<'inPorts' | 'outPorts' | 'inMark' | 'portMac' | 'own4' | 'own6' | 'nd6' | 'ntPorts4' | 'ntPorts6' | 'from' | 'to', string[]>;
  closed: Record<'inPorts' | 'outPorts', string[]>;
  zones: number[];
}

/** A VM's source and destination chains in `inet` (shared by its NICs: the policy is per VM). */
function renderVm(vm: VmPlan): VmOut {
  const names = vmChains(vm.instanceName);
  const chains: NChain[] = [];
  const goOn = `goto ${N.toPort}`;
  const fams = [4, 6] as Fam[];
  const pol = (f: Fam) => (f === 4 ? vm.policy.v4 : vm.policy.v6);
  // no egress rules: through `pass`, so that `deliver` is reached at one depth whatever the source
  let from = `goto ${N.pass}`;
  if (fams.some((f) => pol(f).egressRestricted)) {
    const rules: NRule[] = [];
    for (const f of fams) {
      const nf = `meta nfproto ipv${f}`;
      if (!pol(f).egressRestricted) { rules.push(r(`open${f}`, `${nf} ${goOn}`)); continue; }
      rules.push(...listRules(BASELINE.ip[f].fromAllow, f, 'in', { continue: '', allow: goOn }, nf, `b${f}.`));
      rules.push(...userRules(f, 'egress', pol(f).egress, goOn));
    }
    rules.push(drop('deny', 'egress-default-deny'));
    chains.push(makeChain('inet', names.from, rules));
    from = `goto ${names.from}`;
  }
  const rules: NRule[] = [];
  for (const f of fams) {
    rules.push(...listRules(BASELINE.ip[f].toAccept, f, 'out', { continue: '', accept: 'accept' }, `meta nfproto ipv${f}`, `b${f}.`));
    rules.push(...userRules(f, 'ingress', pol(f).ingress, 'accept'));
  }
  rules.push(drop('deny', 'ingress-default-deny'));
  chains.push(makeChain('inet', names.to, rules));
  const toV = `goto ${names.to}`;
  const el: VmOut['el'] = { inPorts: [], outPorts: [], inMark: [], portMac: [], own4: [], own6: [], nd6: [], ntPorts4: [], ntPorts6: [], from: [], to: [] };
  const closed: VmOut['closed'] = { inPorts: [], outPorts: [] };
  for (const port of vm.ports) {
    const d = port.device;
    el.inPorts.push(`${d} : goto ${bridgeObjects(port.bridge).vmIn}`);
    el.outPorts.push(`${d} : goto ${portChain(d)}`);
    closed.inPorts.push(`${d} : goto ${N.unknown}`);
    closed.outPorts.push(`${d} : goto ${N.unknown}`);
    el.inMark.push(`${d} : ${((port.number << 16) | port.number | NOT_YET) >>> 0}`);
    el.portMac.push(`${d} . ${port.mac}`);
    for (const a of port.own[4]) el.own4.push(`${d} . ${a}`);
    for (const a of port.own[6]) { el.own6.push(`${d} . ${a}`); el.nd6.push(`${d} . ${v6Hex(a)}`); }
    if (vm.policy.v4.notrack) el.ntPorts4.push(d);
    if (vm.policy.v6.notrack) el.ntPorts6.push(d);
    el.from.push(`${port.number << 16} : ${from}`);
    el.to.push(`${port.number} : ${toV}`);
  }
  return { chains, from, to: toV, portChains: vm.ports.map(portOutChain), el, closed, zones: vm.ports.map((p) => p.number) };
}

const vmMemo = new WeakMap<VmPlan, VmOut>();
function renderVmMemo(vm: VmPlan): VmOut {
  let out = vmMemo.get(vm);
  if (!out) vmMemo.set(vm, (out = renderVm(vm)));
  return out;
}

// ---- the bridge table ----------------------------------------------------------------------------

/** A VM port's one chain (bridge forward): the out-port number into the mark, then the shared checks. */
function portOutChain(port: PortPlan): NChain {
  return makeChain('bridge', portChain(port.device), [
    r('mark', `meta mark set meta mark and ${CLEAR_ZONE} or ${hex(port.number)}`),
    r('next', `goto ${N.vmOut}`),
  ]);
}

/**
 * An L2 list followed by a guard, as the fewest chains a packet has to walk: the list's rules, then
 * (where its last rule passes everything) the guard's rules inline in the same chain; a `continue`
 * earlier in the list jumps to a chain holding the guard alone. A guard drop identical to a drop the
 * list makes before any `continue` is left out (every packet already met it). `then`: what follows
 * the guard (a chain to go to, or '' to accept); `exempt`: the statement an exemption runs first.
 */
function listThenGuard(name: string, list: BaseRule[], guard: BaseRule[], fam: Fam, dir: 'in' | 'out', exempt: string, then: string): NChain[] {
  const l2 = listRules(list, fam, dir, { continue: `goto ${name}-guard` });
  const firstPass = l2.findIndex((x, i) => list[i].verdict === 'continue' && nftMatch(list[i].match, fam, dir) === '');
  const head = firstPass < 0 ? l2 : l2.slice(0, firstPass);
  const before = new Set(l2.slice(0, Math.max(0, l2.findIndex((x, i) => list[i].verdict === 'continue'))).filter((x) => x.reason).map((x) => x.text));
  const end = then ? `goto ${then}` : 'accept';
  const g = listRules(guard, fam, dir, { continue: end, exempt: `${exempt} ${end}` }).filter((x) => !(x.reason && before.has(x.text)));
  const tail = [...g, r('guard', end)];
  const chains = [makeChain('bridge', name, firstPass < 0 ? [...head, r('l2', `goto ${name}-guard`)] : [...head, ...tail])];
  if (firstPass < 0 || head.some((x) => x.text.endsWith(`goto ${name}-guard`))) chains.push(makeChain('bridge', `${name}-guard`, tail));
  return chains;
}

/** The plan's baseline in the shared bridge chains (the same for every host with the same NOTRACK needs). */
function sharedBridgeChains(untracked: Record<Fam, boolean>): NChain[] {
  const L = BASELINE;
  // a verdict's bit set and its complement cleared, in one write
  const allowMark = `meta mark set meta mark and ${hex(~MARK_NOT_ALLOW >>> 0)} or ${hex(MARK_ALLOW)}`;
  const acceptMark = `meta mark set meta mark and ${hex(~MARK_NOT_ACCEPT_TO >>> 0)} or ${hex(MARK_ACCEPT_TO)}`;
  const l2 = (list: BaseRule[], ether: 'arp' | 'ip4' | 'ip6' | 'other', fam: Fam | null, dir: 'in' | 'out', t: Targets) => listRules(forEther(list, ether), fam, dir, t);
  const chains: NChain[] = [
    // ---- what VM ports send (entered from the port's bridge chain)
    makeChain('bridge', N.vmIn, [
      ...l2(L.l2FromNic, 'other', null, 'in', { continue: '' }),
      r('ip4', `ether type ip goto ${N.vmIp4}`),
      r('ip6', `ether type ip6 goto ${N.vmIp6}`),
      r('arp', `ether type arp goto ${N.vmArp}`),
      ...l2(L.l2FromVm, 'other', null, 'in', { continue: 'accept' }),
    ]),
    // ARP: the NIC's own addresses and MAC, then the shared checks (ARP ends here: no IP stage)
    makeChain('bridge', N.vmArp, l2(L.arpFromNic, 'arp', null, 'in', { continue: `goto ${N.l2ArpIn}` })),
    makeChain('bridge', N.l2ArpIn, [...l2(L.l2FromVm, 'arp', null, 'in', { continue: 'accept' }), r('end', 'accept')]),
  ];
  for (const f of [4, 6] as Fam[]) {
    const [vmIp, done, ntPorts, tr] = f === 4 ? [N.vmIp4, N.vmDone4, N.ntPorts4, N.tr4] : [N.vmIp6, N.vmDone6, N.ntPorts6, N.tr6];
    const ip = f === 4 ? 'ip' : 'ip6';
    // the shared L2 list, then the NIC's guard; then NOTRACK for untracked VMs unless the other end
    // is a tracked VM of this host (and no zone then: a zone set later would track the packet again)
    chains.push(...listThenGuard(vmIp, forEther(L.l2FromVm, f === 4 ? 'ip4' : 'ip6'), L.ip[f].fromGuard, f, 'in', allowMark, untracked[f] ? done : ''));
    if (untracked[f]) {
      chains.push(makeChain('bridge', done, [
        r('nt', `iifname @${ntPorts} ${ip} daddr != @${tr} notrack meta mark set meta mark and ${CLEAR_ZONE} accept`),
        r('end', 'accept'),
      ]));
    }
  }
  // ---- what VM ports receive (entered from the port's chain, which set the out-port)
  chains.push(
    makeChain('bridge', N.vmOut, [
      // from a port with no in-port mark: one added to the bridge since the last discovery
      drop('unmarked', 'unknown-port', `meta mark and ${hex(MARK_IN_MASK)} == 0`),
      r('ip4', `ether type ip goto ${N.vmOut4}`),
      r('ip6', `ether type ip6 goto ${N.vmOut6}`),
      r('arp', `ether type arp goto ${N.vmArpOut}`),
      ...l2(L.l2ToVm, 'other', null, 'out', { continue: 'accept' }),
    ]),
    makeChain('bridge', N.vmArpOut, l2(L.arpToNic, 'arp', null, 'out', { continue: `goto ${N.l2ArpOut}` })),
    makeChain('bridge', N.l2ArpOut, [...l2(L.l2ToVm, 'arp', null, 'out', { continue: 'accept' }), r('end', 'accept')]),
  );
  for (const f of [4, 6] as Fam[]) {
    chains.push(...listThenGuard(f === 4 ? N.vmOut4 : N.vmOut6, forEther(L.l2ToVm, f === 4 ? 'ip4' : 'ip6'), L.ip[f].toGuard, f, 'out', acceptMark, ''));
  }
  chains.push(
    makeChain('bridge', N.unknown, [drop('deny', 'unknown-port')]),
    makeChain('bridge', N.uplinkOut, [
      drop('unmarked', 'unknown-port', `meta mark and ${hex(MARK_IN_MASK)} == 0`),
      r('mark', `meta mark set meta mark and ${CLEAR_ZONE} or ${hex(PORT_UPLINK)}`),
      r('end', 'accept'),
    ]),
    makeChain('bridge', N.prerouting, [r('ports', `iifname vmap @${N.inPorts}`), drop('vnet', 'unknown-port', 'iifname "vnet*"')],
      'type filter hook prerouting priority -250; policy accept;'),
    makeChain('bridge', N.forward, [r('ports', `oifname vmap @${N.outPorts}`), drop('vnet', 'unknown-port', 'oifname "vnet*"')],
      'type filter hook forward priority -250; policy accept;'),
  );
  return chains;
}
const sharedMemo = new Map<string, NChain[]>();
const sharedBridge = (untracked: Record<Fam, boolean>) => {
  const key = `${untracked[4]}/${untracked[6]}`;
  let c = sharedMemo.get(key);
  if (!c) sharedMemo.set(key, (c = sharedBridgeChains(untracked)));
  return c;
};

const bridgeMemo = new Map<string, NChain[]>();
function bridgeChainsMemo(name: string, zone: number, withUplink: boolean, untracked: Record<Fam, boolean>): NChain[] {
  const key = JSON.stringify([name, zone, withUplink, untracked]);
  let c = bridgeMemo.get(key);
  if (!c) {
    if (bridgeMemo.size >= 1000) bridgeMemo.clear();
    bridgeMemo.set(key, (c = bridgeChains(name, zone, withUplink, untracked)));
  }
  return c;
}

/** Per bridge: frames from its VM ports (in-port and zone) and from its uplinks. */
function bridgeChains(name: string, zone: number, withUplink: boolean, untracked: Record<Fam, boolean>): NChain[] {
  const o = bridgeObjects(name);
  const chains = [makeChain('bridge', o.vmIn, [
    // in-port number and the port's zone (the map's value holds both)
    r('mark', `meta mark set iifname map @${N.inMark}`),
    r('host', `meta pkttype host meta mark set meta mark and ${CLEAR_ZONE} goto ${N.vmIn}`),
    r('local', `ether daddr @${o.macs} meta mark set meta mark and ${CLEAR_ZONE} or ${hex(zone)} goto ${N.vmIn}`),
    r('next', `goto ${N.vmIn}`),
  ])];
  if (withUplink) {
    const nt: NRule[] = [];
    if (untracked[4]) nt.push(r('nt4', `ip daddr @${N.nt4} ip saddr != @${N.tr4} notrack accept`));
    if (untracked[6]) nt.push(r('nt6', `ip6 daddr @${N.nt6} ip6 saddr != @${N.tr6} notrack accept`));
    chains.push(makeChain('bridge', o.uplink, [
      r('mark', `meta mark set meta mark and ${hex(~(MARK_IN_MASK | MARK_ALLOW | 0xffff) >>> 0)} or ${hex(((PORT_UPLINK << 16) | NOT_YET) >>> 0)}`),
      ...nt,
      r('host', 'meta pkttype host accept'),
      // the destination VM port's zone (and the uplink in-port) by destination MAC
      r('zone', `meta mark set ether daddr map @${o.umac}`),
      r('end', 'accept'),
    ]));
  }
  return chains;
}

// Elements in a deterministic order (the plan's); duplicates removed (two VMs sharing a MAC on one bridge).
// A set given the same element list as the last render returns the very same NSet: a warm host's
// render mostly re-lists unchanged ports, and an unchanged NSet is then seen as such at once by the
// diff (no set is rebuilt, no element compared twice).
const lastSet = new Map<string, { input: readonly string[]; set: NSet }>();
/** Keeps `s` as the last render of its set (callers have checked `unchanged` first). */
function remember(s: NSet, input: readonly string[]): NSet {
  if (lastSet.size >= 4096) lastSet.clear();
  lastSet.set(`${s.family}/${s.name}/${s.map}`, { input, set: s });
  return s;
}
function sameList(a: readonly string[], b: readonly string[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
function unchanged(family: 'bridge' | 'inet', name: string, map: boolean, key: string, decl: string, input: readonly string[]): NSet | null {
  const last = lastSet.get(`${family}/${name}/${map}`);
  return last && last.set.decl === decl && last.set.key === key && sameList(last.input, input) ? last.set : null;
}
const set = (family: 'bridge' | 'inet', name: string, key: string, elements: string[], decl?: string): NSet => {
  const d = decl ?? `type ${key};`;
  return unchanged(family, name, false, key, d, elements)
    ?? remember({ family, name, key, map: false, decl: d, elements: [...new Set(elements)] }, elements);
};
/** `elements`: `key : value` texts; a key given twice keeps its first value. */
const map = (family: 'bridge' | 'inet', name: string, key: string, value: string, elements: string[], decl?: string): NSet => {
  const d = decl ?? `type ${key} : ${value};`;
  const hit = unchanged(family, name, true, key, d, elements);
  if (hit) return hit;
  const seen = new Set<string>();
  const out: string[] = [];
  for (const e of elements) { const k = e.slice(0, e.indexOf(' : ')); if (!seen.has(k)) { seen.add(k); out.push(e); } }
  return remember({ family, name, key, map: true, decl: d, elements: out }, elements);
};

export function renderPlan(plan: HostPlan, opts: RenderOptions = {}): Rendered {
  const vmErrors: Record<string, string> = { ...plan.errors };
  const programmed: string[] = [];
  const chains: NChain[] = [];
  const el: VmOut['el'] = { inPorts: [], outPorts: [], inMark: [], portMac: [], own4: [], own6: [], nd6: [], ntPorts4: [], ntPorts6: [], from: [], to: [] };
  const zones = new Set<number>();
  const vmPorts = new Map<string, PortPlan[]>();
  const seen = new Map<string, string>();
  const add = (into: string[], xs: string[]) => { for (const x of xs) into.push(x); };

  for (const vm of plan.vms) {
    const key = vmChains(vm.instanceName).key;
    const owner = seen.get(key);
    const clashes = owner && owner !== vm.vmId ? [`name ${key} clashes with VM ${owner}`] : [];
    if (clashes.length || vm.missing.length) vmErrors[vm.vmId] = vmProblems(vm, { clashes }).join('; ');
    if (clashes.length) continue;
    seen.set(key, vm.vmId);
    programmed.push(vm.vmId);
    const vo = renderVmMemo(vm);
    if (opts.open && !opts.open.has(vm.vmId)) {
      add(el.inPorts, vo.closed.inPorts);
      add(el.outPorts, vo.closed.outPorts);
      continue;
    }
    for (const c of vo.chains) chains.push(c);
    for (const c of vo.portChains) chains.push(c);
    for (const k of Object.keys(el) as (keyof VmOut['el'])[]) add(el[k], vo.el[k]);
    for (const z of vo.zones) zones.add(z);
    for (const port of vm.ports) (vmPorts.get(port.bridge) ?? vmPorts.set(port.bridge, []).get(port.bridge)!).push(port);
  }

  const untracked = { 4: plan.notrack[4].untracked.length > 0, 6: plan.notrack[6].untracked.length > 0 };
  const sets: NSet[] = [];
  for (const b of plan.bridges) {
    const o = bridgeObjects(b.name);
    const ports = vmPorts.get(b.name) ?? [];
    zones.add(b.zone);
    for (const c of bridgeChainsMemo(b.name, b.zone, b.uplinks.length > 0, untracked)) chains.push(c);
    sets.push(set('bridge', o.macs, 'ether_addr', ports.map((p) => p.mac)));
    for (const u of b.uplinks) { el.inPorts.push(`${u} : goto ${o.uplink}`); el.outPorts.push(`${u} : goto ${N.uplinkOut}`); }
    for (const t of b.unknown) { el.inPorts.push(`${t} : goto ${N.unknown}`); el.outPorts.push(`${t} : goto ${N.unknown}`); }
    if (b.uplinks.length) sets.push(map('bridge', o.umac, 'ether_addr', 'mark', ports.map((p) => `${p.mac} : ${((PORT_UPLINK << 16) | p.number | NOT_YET) >>> 0}`)));
  }
  for (const c of sharedBridge(untracked)) chains.push(c);
  sets.push(
    map('bridge', N.inPorts, 'ifname', 'verdict', el.inPorts),
    map('bridge', N.outPorts, 'ifname', 'verdict', el.outPorts),
    map('bridge', N.inMark, 'ifname', 'mark', el.inMark),
    set('bridge', N.portMac, 'ifname . ether_addr', el.portMac),
    set('bridge', N.own4, 'ifname . ipv4_addr', el.own4),
    set('bridge', N.own6, 'ifname . ipv6_addr', el.own6),
    set('bridge', N.nd6, 'ifname . integer', el.nd6, 'typeof iifname . @th,64,128;'),
    set('bridge', N.ntPorts4, 'ifname', el.ntPorts4),
    set('bridge', N.ntPorts6, 'ifname', el.ntPorts6),
    set('bridge', N.nt4, 'ipv4_addr', plan.notrack[4].untracked), set('bridge', N.tr4, 'ipv4_addr', plan.notrack[4].tracked),
    set('bridge', N.nt6, 'ipv6_addr', plan.notrack[6].untracked), set('bridge', N.tr6, 'ipv6_addr', plan.notrack[6].tracked),
  );

  // inet: only once a bridge is managed (before that, nothing of ours is bridged)
  if (plan.bridges.length) {
    sets.push(
      ...plan.sets.map((s) => set('inet', groupSet(s.id), s.family === 4 ? 'ipv4_addr' : 'ipv6_addr', s.members)),
      set('inet', N.bridges, 'ifname', plan.bridges.map((b) => b.name)),
      map('inet', N.zones, 'mark', 'ct zone', [...zones].sort((a, b) => a - b).map((z) => `${z} : ${z}`), 'typeof meta mark : ct zone;'),
      map('inet', N.from, 'mark', 'verdict', [...el.from, `${PORT_UPLINK << 16} : goto ${N.pass}`]),
      map('inet', N.to, 'mark', 'verdict', [...el.to, `${PORT_UPLINK} : accept`]),
    );
    chains.push(
      makeChain('inet', N.raw, [r('zone', `iifname @${N.bridges} ct zone set meta mark and ${hex(MARK_ZONE_MASK)} map @${N.zones}`)],
        'type filter hook prerouting priority -300; policy accept;'),
      makeChain('inet', N.bf, [
        r('est', 'ct state established,related accept'),
        // the source's guard exempted it (DHCP client, DAD, its own NA): its side is done
        r('exempt', `meta mark and ${hex((MARK_ALLOW | MARK_NOT_ALLOW) >>> 0)} == ${hex(MARK_ALLOW)} goto ${N.pass}`),
        r('from', `meta mark and ${hex(MARK_IN_MASK)} vmap @${N.from}`),
        // no in-port mark (a port added since the last discovery) or an unknown one
        drop('deny', 'unknown-port'),
      ]),
      // The kernel checks every chain reachable from a base chain on each commit that adds a rule with
      // a verdict, once per depth it is reached at: every way into `deliver` (and so into every VM's
      // destination chain) goes through one more chain, `pass` or the VM's source chain, so the VM
      // chains are checked once per hook rather than twice (a one-rule change's commit, 200 VMs:
      // 3.2 → 2.7 ms).
      makeChain('inet', N.pass, [r('next', `goto ${N.toPort}`)]),
      makeChain('inet', N.toPort, [
        r('exempt', `meta mark and ${hex((MARK_ACCEPT_TO | MARK_NOT_ACCEPT_TO) >>> 0)} == ${hex(MARK_ACCEPT_TO)} accept`),
        r('to', `meta mark and ${hex(MARK_OUT_MASK)} vmap @${N.to}`),
        // bridged to a port with no out-port mark, or routed into a VM bridge after leaving one
        drop('deny', 'unknown-port', `oifname @${N.bridges}`),
        // to the host itself, or routed out of the bridge by the host
        r('end', 'accept'),
      ]),
      makeChain('inet', N.forward, [
        r('bridged', `iifname @${N.bridges} goto ${N.bf}`),
        drop('routed', 'routed-into-bridge', `oifname @${N.bridges}`),
      ], 'type filter hook forward priority 0; policy accept;'),
      // to the host's own addresses on a bridge: the source VM's egress rules too
      makeChain('inet', N.input, [r('bridged', `iifname @${N.bridges} goto ${N.bf}`)], 'type filter hook input priority 0; policy accept;'),
    );
  }
  if (plan.dropLog) {
    const logged = withDropLog(chains, plan.dropLog);
    chains.length = 0;
    for (const c of logged.chains) chains.push(c);
    sets.push(...logged.sets);
  }
  const program: NftProgram = { chains, sets };
  let script: string | null = null;
  return { program, get script() { return (script ??= fullScript(program)); }, vmErrors, programmed };
}

// ---- the drop log (issue 11) -----------------------------------------------------------------------
// With the drop log on, every drop whose reason has an API counterpart (plan/reasons.ts) becomes
// `counter goto dl-<side>-<reason>` (same match, same counter and comment): that chain logs the packet
// to NFLOG when the VM port's budget allows, then drops it. Accepting rules are untouched, so the
// allowed path meets exactly the rules it met before. The budget is a token bucket per VM port and
// direction (a dynamic set keyed by the port number in the mark, one per table); its name carries
// rate and burst, so a settings change starts new buckets (the old set goes with the old rules).

/** Which port in the mark is the VM's for a drop in this chain (see plan/reasons.ts). */
function sideOf(c: NChain, reason: DropReason): LogSide {
  if (reason === 'unknown-port' || reason === 'routed-into-bridge') return 'n';
  if (c.family === 'inet') return c.name.startsWith('from-') ? 'f' : c.name.startsWith('to-') ? 't' : 'n';
  if (/^(vm-out|vm-arp-out|l2-arp-out)/.test(c.name)) return 't';
  if (/^(vm-|l2-arp-in)/.test(c.name)) return 'f';
  return 'n';
}

const logMemo = new Map<string, WeakMap<NChain, NChain>>();

function withDropLog(chains: NChain[], cfg: DropLogConfig): { chains: NChain[]; sets: NSet[] } {
  const cfgKey = `${cfg.rate}/${cfg.burst}/${cfg.group}`;
  let memo = logMemo.get(cfgKey);
  if (!memo) { if (logMemo.size > 4) logMemo.clear(); logMemo.set(cfgKey, (memo = new WeakMap())); }
  const used = new Map<string, { family: NChain['family']; side: LogSide; reason: DropReason }>();
  const out: NChain[] = [];
  for (const c of chains) {
    let changed = false;
    const rules = c.rules.map((x) => {
      if (!x.reason || !LOG_REASON[x.reason] || !x.text.endsWith('counter drop')) return x;
      const side = sideOf(c, x.reason);
      const name = dropLogChain(side, x.reason);
      used.set(`${c.family}/${name}`, { family: c.family, side, reason: x.reason });
      changed = true;
      return { ...x, text: `${x.text.slice(0, -'drop'.length)}goto ${name}` };
    });
    if (!changed) { out.push(c); continue; }
    let m = memo.get(c);
    if (!m) memo.set(c, (m = makeChain(c.family, c.name, rules, c.base)));
    out.push(m);
  }
  const setName = dropLogSet(cfg.rate, cfg.burst);
  const families = new Set<NChain['family']>();
  for (const u of used.values()) {
    const limit = `limit rate ${cfg.rate}/second burst ${cfg.burst} packets`;
    const log = `log group ${cfg.group} prefix "${logPrefix(u.side, u.reason)}"`;
    const key = u.side === 'f' ? `meta mark and ${hex(MARK_IN_MASK)}` : `meta mark and ${hex(MARK_OUT_MASK)}`;
    if (u.side !== 'n') families.add(u.family);
    out.push(makeChain(u.family, dropLogChain(u.side, u.reason), [
      r('log', u.side === 'n' ? `${limit} ${log}` : `add @${setName} { ${key} ${limit} } ${log}`),
      r('drop', 'drop'),
    ]));
  }
  const sets: NSet[] = [...families].map((family) => ({
    family, name: setName, key: 'mark', map: false, elements: [],
    decl: 'type mark; flags dynamic,timeout; timeout 60s; size 65536;',
  }));
  return { chains: out, sets };
}

export function render(input: DataplaneInput, opts: RenderOptions = {}): Rendered {
  return renderPlan(planHost(input), opts);
}

