// Pure renderer: host plan → the nftables program (two tables named `palisade`).
//
// Packet path (bridged; this kernel has no bridge-family conntrack, so state is kept in `inet`
// through br_netfilter):
//   bridge prerouting (priority -250: after ebtables' nat at -300, before br_netfilter at 0)
//     iifname vmap @in_ports → the port's chain: in-port number into the mark, the plan's L2 lists
//     and the IP guard of its NIC (MAC, ARP, source addresses, DHCP/RA guard, neighbour adverts),
//     then NOTRACK or the conntrack zone into the mark. Uplinks: the zone of the destination VM port
//     (by MAC). Unknown VM-like ports: dropped; a `vnet*` port not listed at all: dropped.
//   inet prerouting (raw, -300): ct zone from the mark (a map, one element per zone in use).
//   bridge forward (-250, before ebtables' filter at -200): oifname vmap @out_ports → out-port number into the mark, the L2 lists and
//     IP guard towards the NIC (ARP target, destination address); frames from a port with no
//     in-port mark (added since the last discovery) reach no port Palisade knows.
//   inet forward / input (0), for bridges Palisade manages:
//     replies of tracked flows → accept (both guards already ran in the bridge table, before any
//     state counted, so an established packet passed both; this is the plan's `est` allow/accept);
//     the source VM's chain by in-port (family vmaps) → the destination's by out-port → accept for
//     an uplink or the host itself; anything the host routes into a VM bridge → drop.
// Per packet a forwarded frame meets a handful of rules and three hash lookups (ports, zone), never a
// walk over ports or VMs. Every user rule has a named counter (per VM and rule id) and its id in the
// comment; every drop has a counter and its reason in the comment.
// The mark layout and port/zone numbers are the plan's, identical to the iptables backend's, so both
// can be in place at once while a host switches between them.
import type { DataplaneInput } from '../backend.js';
import type { PolicyRule } from '../../policy/ir.js';
import {
  type BaseRule, type BridgePlan, type Fam, type HostPlan, type Match, type PortPlan, type VmPlan, type Verdict,
  BASELINE, MARK_ACCEPT_TO, MARK_ALLOW, MARK_IN_MASK, MARK_OURS, MARK_OUT_MASK, MARK_ZONE_MASK, PORT_UPLINK,
  canonV6, forEther, hex, isDrop, planHost, vmProblems,
} from '../plan/index.js';
import { N, bridgeObjects, cid, groupSet, portChains, ruleCounter, vmChains } from './names.js';
import { type NChain, type NCounter, type NRule, type NSet, type NftProgram, fullScript, makeChain } from './program.js';

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
const KEEP_OTHERS = hex(~MARK_OURS >>> 0);

/** `x` or `{ x, y }`: an nft value or anonymous set. */
const anon = (xs: string[]) => (xs.length === 1 ? xs[0] : `{ ${xs.join(', ')} }`);

/** 128-bit hex of an IPv6 address (raw payload compares, e.g. the NA target). */
function v6Hex(addr: string): string {
  const [head, tail] = canonV6(addr).split('::');
  const parse = (s: string | undefined) => (s ? s.split(':').map((g) => parseInt(g, 16)) : []);
  const h = parse(head);
  const t = parse(tail);
  const groups = tail === undefined ? h : [...h, ...new Array(8 - h.length - t.length).fill(0), ...t];
  return `0x${groups.map((g) => g.toString(16).padStart(4, '0')).join('')}`;
}

/**
 * nft match text of a baseline match for one NIC (both tables; L2 fields only occur in the bridge
 * table). `fam`: the IP family of the chain. null: the match cannot hold for this NIC (e.g. "one of
 * its own IPv4s" for a NIC with none).
 */
function nftMatch(m: Match, fam: Fam | null, port: PortPlan | null): string | null {
  const parts: string[] = [];
  const ip = fam === 6 ? 'ip6' : 'ip';
  if (m.srcMac === 'not-own') parts.push(`ether saddr != ${port!.mac}`);
  if (m.dstMac === 'broadcast') parts.push('ether daddr ff:ff:ff:ff:ff:ff');
  if (m.dstMac === 'multicast') parts.push('ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00');
  if (m.arpOp) parts.push(`arp operation ${m.arpOp}`);
  if (m.arpSenderIp === 'unspecified') parts.push('arp saddr ip 0.0.0.0');
  if (m.arpSenderIp === 'own') { if (!port!.own[4].length) return null; parts.push(`arp saddr ip ${anon(port!.own[4])}`); }
  if (m.arpSenderMac === 'own') parts.push(`arp saddr ether ${port!.mac}`);
  if (m.arpTargetIp === 'own') { if (!port!.own[4].length) return null; parts.push(`arp daddr ip ${anon(port!.own[4])}`); }
  if (m.src === 'unspecified') parts.push(fam === 6 ? 'ip6 saddr ::' : 'ip saddr 0.0.0.0');
  if (m.dst === 'broadcast') parts.push('ip daddr 255.255.255.255');
  // "not one of its own": with none at all, every packet
  if (m.src === 'not-own' && port!.own[fam!].length) parts.push(`${ip} saddr != ${anon(port!.own[fam!])}`);
  if (m.dst === 'not-own' && port!.own[fam!].length) parts.push(`${ip} daddr != ${anon(port!.own[fam!])}`);
  if (m.hopLimit255) parts.push('ip6 hoplimit 255');
  if (m.ndTargetOwn) parts.push(`ip6 nexthdr ipv6-icmp @th,64,128 ${anon(port!.own[6].map(v6Hex))}`);
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

/** A baseline list as rules of one chain (rules that cannot match for this NIC are left out). */
function listRules(list: BaseRule[], fam: Fam | null, port: PortPlan | null, t: Targets): NRule[] {
  const out: NRule[] = [];
  for (const b of list) {
    const m = nftMatch(b.match, fam, port);
    if (m === null) continue;
    const v: Verdict = b.verdict;
    const pre = m ? `${m} ` : '';
    if (isDrop(v)) out.push(drop(b.id, v.drop, m));
    else if (v === 'continue') out.push(r(b.id, `${pre}${t.continue}`));
    else if (v === 'exempt') out.push(r(b.id, `${pre}${t.exempt!}`));
    else if (v === 'allow') out.push(r(b.id, `${pre}${t.allow!}`));
    else out.push(r(b.id, `${pre}${t.accept!}`));
  }
  return out;
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

/** A peer CIDR list as a match ('' when it covers the whole family). */
function peerMatch(fam: Fam, dir: 'saddr' | 'daddr', cidrs: string[]): string {
  if (cidrs.some((c) => c.endsWith('/0'))) return '';
  const ip = fam === 4 ? 'ip' : 'ip6';
  const els = cidrs.map((c) => c.replace(fam === 4 ? /\/32$/ : /\/128$/, ''));
  return `${ip} ${dir} ${anon(els)}`;
}

/** One user rule: one nft rule for its CIDRs and one per referenced set, sharing one named counter. */
function userRules(fam: Fam, dir: 'ingress' | 'egress', rules: PolicyRule[], vmKey: string, verdict: string, counters: NCounter[], vmId: string): NRule[] {
  const out: NRule[] = [];
  const addr = dir === 'ingress' ? 'saddr' : 'daddr';
  for (const rule of rules) {
    const counter = ruleCounter(vmKey, dir, fam, rule.id);
    counters.push({ family: 'inet', name: counter, comment: `${cid(vmId)} ${cid(rule.id)}` });
    const pm = protoMatch(fam, rule);
    const tail = `${pm ? `${pm} ` : ''}counter name ${counter} ${verdict}`;
    const id = cid(rule.id);
    if (rule.cidrs.length) {
      const peer = peerMatch(fam, addr, rule.cidrs);
      out.push(r(`${id}.c`, `${peer ? `${peer} ` : ''}${tail}`));
    }
    rule.sets.forEach((s, i) => out.push(r(`${id}.s${i}`, `${fam === 4 ? 'ip' : 'ip6'} ${addr} @${groupSet(s)} ${tail}`)));
  }
  return out;
}

interface VmOut { chains: NChain[]; counters: NCounter[]; from: Record<Fam, string>; to: Record<Fam, string> }

/** A VM's source and destination chains in `inet` (shared by its NICs: the policy is per VM). */
function renderVm(vm: VmPlan): VmOut {
  const names = vmChains(vm.instanceName);
  const chains: NChain[] = [];
  const counters: NCounter[] = [];
  const from = {} as Record<Fam, string>;
  const to = {} as Record<Fam, string>;
  for (const f of [4, 6] as Fam[]) {
    const pol = f === 4 ? vm.policy.v4 : vm.policy.v6;
    const b = BASELINE.ip[f];
    const goOn = `goto ${N.toPort}`;
    if (pol.egressRestricted) {
      const name = f === 4 ? names.from4 : names.from6;
      chains.push(makeChain('inet', name, [
        ...listRules(b.fromAllow, f, null, { continue: '', allow: goOn }),
        ...userRules(f, 'egress', pol.egress, names.key, goOn, counters, vm.vmId),
        drop('deny', 'egress-default-deny'),
      ]));
      from[f] = `goto ${name}`;
    } else from[f] = goOn;
    const name = f === 4 ? names.to4 : names.to6;
    chains.push(makeChain('inet', name, [
      ...listRules(b.toAccept, f, null, { continue: '', accept: 'accept' }),
      ...userRules(f, 'ingress', pol.ingress, names.key, 'accept', counters, vm.vmId),
      drop('deny', 'ingress-default-deny'),
    ]));
    to[f] = `goto ${name}`;
  }
  return { chains, counters, from, to };
}

const vmMemo = new WeakMap<VmPlan, VmOut>();
function renderVmMemo(vm: VmPlan): VmOut {
  let out = vmMemo.get(vm);
  if (!out) vmMemo.set(vm, (out = renderVm(vm)));
  return out;
}

// ---- per port (bridge) -------------------------------------------------------------------------

/** A VM port's chains in the bridge table: what it sends (prerouting) and what it receives (forward). */
function renderPort(port: PortPlan, bridge: BridgePlan, untracked: Record<Fam, boolean>): NChain[] {
  const c = portChains(port.device);
  const k = port.number;
  const L = BASELINE;
  const allowMark = `meta mark set meta mark or ${hex(MARK_ALLOW)}`;
  const acceptMark = `meta mark set meta mark or ${hex(MARK_ACCEPT_TO)}`;
  const chains: NChain[] = [];
  // ---- from the VM
  chains.push(makeChain('bridge', c.in, [
    r('mark', `meta mark set meta mark and ${KEEP_OTHERS} or ${hex(k << 16)}`),
    ...listRules(L.l2FromNic, null, port, { continue: '' }),
    r('type', `ether type vmap { arp : goto ${c.arp}, ip : goto ${c.ip4}, ip6 : goto ${c.ip6} }`),
    ...listRules(forEther(L.l2FromVm, 'other'), null, port, { continue: 'accept' }),
  ]));
  // ARP: the NIC's own addresses and MAC, then the shared checks (ARP ends here: no IP stage)
  chains.push(makeChain('bridge', c.arp, listRules(forEther(L.arpFromNic, 'arp'), null, port, { continue: `goto ${N.l2ArpIn}` })));
  for (const f of [4, 6] as Fam[]) {
    // the shared L2 list (jump: its `continue` returns here), then the NIC's guard, then the zone
    chains.push(makeChain('bridge', f === 4 ? c.ip4 : c.ip6, [
      r('l2', `jump ${f === 4 ? N.l2Ip4In : N.l2Ip6In}`),
      ...listRules(L.ip[f].fromGuard, f, port, { continue: `goto ${c.zone}`, exempt: `${allowMark} goto ${c.zone}` }),
      r('guard', `goto ${c.zone}`),
    ]));
  }
  // NOTRACK (unless the other end is a tracked VM of this host), else the zone: the bridge's when the
  // frame goes straight to a VM on it, none when it is for the host itself, else this port's.
  const zone: NRule[] = [];
  if (untracked[4]) zone.push(r('nt4', `ip daddr != @${N.tr4} notrack accept`));
  if (untracked[6]) zone.push(r('nt6', `ip6 daddr != @${N.tr6} notrack accept`));
  zone.push(
    r('host', 'meta pkttype host accept'),
    r('local', `ether daddr @${bridgeObjects(bridge.name).macs} meta mark set meta mark or ${hex(bridge.zone)} accept`),
    r('port', `meta mark set meta mark or ${hex(k)} accept`),
  );
  chains.push(makeChain('bridge', c.zone, zone));
  // ---- to the VM
  chains.push(makeChain('bridge', c.out, [
    // from a port with no in-port mark: one added to the bridge since the last discovery
    drop('unmarked', 'unknown-port', `meta mark and ${hex(MARK_IN_MASK)} == 0`),
    r('mark', `meta mark set meta mark and ${hex(~MARK_ZONE_MASK >>> 0)} or ${hex(k)}`),
    r('type', `ether type vmap { arp : goto ${c.outArp}, ip : goto ${c.out4}, ip6 : goto ${c.out6} }`),
    ...listRules(forEther(L.l2ToVm, 'other'), null, port, { continue: 'accept' }),
  ]));
  chains.push(makeChain('bridge', c.outArp, listRules(forEther(L.arpToNic, 'arp'), null, port, { continue: `goto ${N.l2ArpOut}` })));
  for (const f of [4, 6] as Fam[]) {
    const l2 = forEther(L.l2ToVm, f === 4 ? 'ip4' : 'ip6');
    // an L2 list that only continues needs no rules here
    const trivial = l2[0]?.verdict === 'continue' && nftMatch(l2[0].match, f, port) === '';
    chains.push(makeChain('bridge', f === 4 ? c.out4 : c.out6, [
      ...(trivial ? [] : [r('l2', `jump ${f === 4 ? N.l2Ip4Out : N.l2Ip6Out}`)]),
      ...listRules(L.ip[f].toGuard, f, port, { continue: 'accept', exempt: `${acceptMark} accept` }),
      r('guard', 'accept'),
    ]));
  }
  return chains;
}

const portMemo = new Map<string, NChain[]>();
function renderPortMemo(port: PortPlan, bridge: BridgePlan, untracked: Record<Fam, boolean>): NChain[] {
  const key = JSON.stringify([port.device, port.number, port.mac, port.own, bridge.name, bridge.zone, untracked]);
  let out = portMemo.get(key);
  if (!out) {
    if (portMemo.size >= 20_000) portMemo.clear();
    portMemo.set(key, (out = renderPort(port, bridge, untracked)));
  }
  return out;
}

/** Shared bridge chains: the plan's NIC-independent L2 lists. `continue` returns to the port's chain. */
function sharedBridgeChains(): NChain[] {
  const L = BASELINE;
  const l2Out = (ether: 'ip4' | 'ip6') => forEther(L.l2ToVm, ether);
  return [
    makeChain('bridge', N.l2ArpIn, [...listRules(forEther(L.l2FromVm, 'arp'), null, null, { continue: 'accept' }), r('end', 'accept')]),
    makeChain('bridge', N.l2Ip4In, [...listRules(forEther(L.l2FromVm, 'ip4'), 4, null, { continue: 'return' }), r('end', 'return')]),
    makeChain('bridge', N.l2Ip6In, [...listRules(forEther(L.l2FromVm, 'ip6'), 6, null, { continue: 'return' }), r('end', 'return')]),
    makeChain('bridge', N.l2ArpOut, [...listRules(forEther(L.l2ToVm, 'arp'), null, null, { continue: 'accept' }), r('end', 'accept')]),
    makeChain('bridge', N.l2Ip4Out, [...listRules(l2Out('ip4'), 4, null, { continue: 'return' }), r('end', 'return')]),
    makeChain('bridge', N.l2Ip6Out, [...listRules(l2Out('ip6'), 6, null, { continue: 'return' }), r('end', 'return')]),
  ];
}

const set = (family: 'bridge' | 'inet', name: string, key: NSet['key'], elements: string[], decl?: string): NSet =>
  ({ family, name, key, map: false, decl: decl ?? `type ${key};`, elements: [...new Set(elements)].sort() });
const map = (family: 'bridge' | 'inet', name: string, key: NSet['key'], value: string, elements: [string, string][], decl?: string): NSet =>
  ({ family, name, key, map: true, decl: decl ?? `type ${key} : ${value};`, elements: [...new Map(elements)].map(([a, b]) => `${a} : ${b}`).sort() });

export function renderPlan(plan: HostPlan, opts: RenderOptions = {}): Rendered {
  const vmErrors: Record<string, string> = { ...plan.errors };
  const programmed: string[] = [];
  const chains: NChain[] = [];
  const counters: NCounter[] = [];
  const inPorts: [string, string][] = [];
  const outPorts: [string, string][] = [];
  const from: Record<Fam, [string, string][]> = { 4: [], 6: [] };
  const to: Record<Fam, [string, string][]> = { 4: [], 6: [] };
  const zones = new Set<number>();
  const vmPorts = new Map<string, PortPlan[]>();
  const seen = new Map<string, string>();
  const bridgeOf = new Map(plan.bridges.map((b) => [b.name, b]));

  for (const vm of plan.vms) {
    const key = vmChains(vm.instanceName).key;
    const owner = seen.get(key);
    const clashes = owner && owner !== vm.vmId ? [`name ${key} clashes with VM ${owner}`] : [];
    const problems = vmProblems(vm, { clashes });
    if (problems.length) vmErrors[vm.vmId] = problems.join('; ');
    if (clashes.length) continue;
    seen.set(key, vm.vmId);
    programmed.push(vm.vmId);
    const open = !opts.open || opts.open.has(vm.vmId);
    const vo = renderVmMemo(vm);
    if (open) { chains.push(...vo.chains); counters.push(...vo.counters); }
    const untracked = { 4: vm.policy.v4.notrack, 6: vm.policy.v6.notrack };
    for (const port of vm.ports) {
      const bridge = bridgeOf.get(port.bridge)!;
      const c = portChains(port.device);
      if (!open) { inPorts.push([port.device, `goto ${N.unknown}`]); outPorts.push([port.device, `goto ${N.unknown}`]); continue; }
      chains.push(...renderPortMemo(port, bridge, untracked));
      inPorts.push([port.device, `goto ${c.in}`]);
      outPorts.push([port.device, `goto ${c.out}`]);
      for (const f of [4, 6] as Fam[]) {
        from[f].push([String(port.number << 16), vo.from[f]]);
        to[f].push([String(port.number), vo.to[f]]);
      }
      zones.add(port.number);
      (vmPorts.get(port.bridge) ?? vmPorts.set(port.bridge, []).get(port.bridge)!).push(port);
    }
  }

  const sets: NSet[] = [];
  for (const b of plan.bridges) {
    const o = bridgeObjects(b.name);
    const ports = (vmPorts.get(b.name) ?? []).sort((x, y) => (x.device < y.device ? -1 : 1));
    zones.add(b.zone);
    sets.push(set('bridge', o.macs, 'ether_addr', ports.map((p) => p.mac)));
    for (const u of b.uplinks) { inPorts.push([u, `goto ${o.uplink}`]); outPorts.push([u, `goto ${N.uplinkOut}`]); }
    for (const t of b.unknown) { inPorts.push([t, `goto ${N.unknown}`]); outPorts.push([t, `goto ${N.unknown}`]); }
    if (b.uplinks.length) {
      sets.push(map('bridge', o.umac, 'ether_addr', 'mark', ports.map((p): [string, string] => [p.mac, String(((PORT_UPLINK << 16) | p.number) >>> 0)])));
      const nt: NRule[] = [];
      if (plan.notrack[4].untracked.length) nt.push(r('nt4', `ip daddr @${N.nt4} ip saddr != @${N.tr4} notrack accept`));
      if (plan.notrack[6].untracked.length) nt.push(r('nt6', `ip6 daddr @${N.nt6} ip6 saddr != @${N.tr6} notrack accept`));
      chains.push(makeChain('bridge', o.uplink, [
        r('mark', `meta mark set meta mark and ${KEEP_OTHERS} or ${hex(PORT_UPLINK << 16)}`),
        ...nt,
        r('host', 'meta pkttype host accept'),
        // the destination VM port's zone (and the uplink in-port) by destination MAC
        r('zone', `meta mark set ether daddr map @${o.umac}`),
        r('end', 'accept'),
      ]));
    }
  }
  sets.push(
    set('bridge', N.nt4, 'ipv4_addr', plan.notrack[4].untracked), set('bridge', N.tr4, 'ipv4_addr', plan.notrack[4].tracked),
    set('bridge', N.nt6, 'ipv6_addr', plan.notrack[6].untracked), set('bridge', N.tr6, 'ipv6_addr', plan.notrack[6].tracked),
    map('bridge', N.inPorts, 'ifname', 'verdict', inPorts),
    map('bridge', N.outPorts, 'ifname', 'verdict', outPorts),
  );

  // bridge: shared chains and hooks. A `vnet*` port not listed (libvirt's name for a VM tap Palisade
  // does not know yet, on any bridge) sends and receives nothing.
  chains.push(
    ...sharedBridgeChains(),
    makeChain('bridge', N.unknown, [drop('deny', 'unknown-port')]),
    makeChain('bridge', N.uplinkOut, [
      drop('unmarked', 'unknown-port', `meta mark and ${hex(MARK_IN_MASK)} == 0`),
      r('mark', `meta mark set meta mark and ${hex(~MARK_ZONE_MASK >>> 0)} or ${hex(PORT_UPLINK)}`),
      r('end', 'accept'),
    ]),
    makeChain('bridge', N.prerouting, [r('ports', `iifname vmap @${N.inPorts}`), drop('vnet', 'unknown-port', 'iifname "vnet*"')],
      'type filter hook prerouting priority -250; policy accept;'),
    makeChain('bridge', N.forward, [r('ports', `oifname vmap @${N.outPorts}`), drop('vnet', 'unknown-port', 'oifname "vnet*"')],
      'type filter hook forward priority -250; policy accept;'),
  );

  // inet: only once a bridge is managed (before that, nothing of ours is bridged)
  if (plan.bridges.length) {
    const groups = plan.sets.map((s) => set('inet', groupSet(s.id), s.family === 4 ? 'ipv4_addr' : 'ipv6_addr', s.members));
    sets.push(
      ...groups,
      set('inet', N.bridges, 'ifname', plan.bridges.map((b) => b.name)),
      map('inet', N.zones, 'mark', 'ct zone', [...zones].sort((a, b) => a - b).map((z): [string, string] => [String(z), String(z)]), 'typeof meta mark : ct zone;'),
      map('inet', N.from4, 'mark', 'verdict', [...from[4], [String(PORT_UPLINK << 16), `goto ${N.toPort}`]]),
      map('inet', N.from6, 'mark', 'verdict', [...from[6], [String(PORT_UPLINK << 16), `goto ${N.toPort}`]]),
      map('inet', N.to4, 'mark', 'verdict', [...to[4], [String(PORT_UPLINK), 'accept']]),
      map('inet', N.to6, 'mark', 'verdict', [...to[6], [String(PORT_UPLINK), 'accept']]),
    );
    const fromDispatch = (f: Fam) => `meta nfproto ipv${f} meta mark and ${hex(MARK_IN_MASK)} vmap @${f === 4 ? N.from4 : N.from6}`;
    const toDispatch = (f: Fam) => `meta nfproto ipv${f} meta mark and ${hex(MARK_OUT_MASK)} vmap @${f === 4 ? N.to4 : N.to6}`;
    chains.push(
      makeChain('inet', N.raw, [r('zone', `iifname @${N.bridges} ct zone set meta mark and ${hex(MARK_ZONE_MASK)} map @${N.zones}`)],
        'type filter hook prerouting priority -300; policy accept;'),
      makeChain('inet', N.bf, [
        r('est', 'ct state established,related accept'),
        // the source's guard exempted it (DHCP client, DAD, its own NA): its side is done
        r('exempt', `meta mark and ${hex(MARK_ALLOW)} == ${hex(MARK_ALLOW)} goto ${N.toPort}`),
        r('from4', fromDispatch(4)),
        r('from6', fromDispatch(6)),
        // no in-port mark (a port added since the last discovery) or an unknown one
        drop('deny', 'unknown-port'),
      ]),
      makeChain('inet', N.toPort, [
        r('exempt', `meta mark and ${hex(MARK_ACCEPT_TO)} == ${hex(MARK_ACCEPT_TO)} accept`),
        r('to4', toDispatch(4)),
        r('to6', toDispatch(6)),
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
  const program: NftProgram = { chains, sets, counters: dedupeCounters(counters) };
  let script: string | null = null;
  return { program, get script() { return (script ??= fullScript(program)); }, vmErrors, programmed };
}

function dedupeCounters(cs: NCounter[]): NCounter[] {
  const m = new Map<string, NCounter>();
  for (const c of cs) if (!m.has(c.name)) m.set(c.name, c);
  return [...m.values()];
}

export function render(input: DataplaneInput, opts: RenderOptions = {}): Rendered {
  return renderPlan(planHost(input), opts);
}
