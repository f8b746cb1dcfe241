// explainPacket: why one packet to or from a VM passes or is dropped, for explainSecurityGroupTraffic
// and dry runs. `evaluate` decides everything the VM's rules decide (single source of truth); this
// module adds, in the order the kernel applies them, the always-on baseline of DESIGN.md §3 that
// `evaluate` leaves out, and names the API rules behind the deciding kernel rule.
//
// Model of the packet: a new flow (not a reply of a tracked one), sent by the VM from one of its own
// addresses (egress) or addressed to one of them (ingress); `sourcePort` is the sender's port (default:
// an ephemeral one, so the DHCP exemptions, which need source port 67/68/546/547, do not apply).
//
// Reasons:
// - anti-spoofing: always dropped, whatever the rules — the VM acting as a DHCP/DHCPv6 server (source
//   port 67/547), sending router advertisements or redirects, multicast other than neighbour
//   discovery/MLD/DHCPv6, IPv4 on a NIC without an IPv4 address (it could only be spoofed).
// - baseline: always allowed — DHCP client (68→67, 546→547) and server replies (67→68, 547→546), DNS
//   (port 53 out), neighbour discovery and MLD.
// - egress-open: egress of a family whose VM has no egress rule of that family.
// - rule / untracked: a rule allows it (untracked: the family is NOTRACK, everything passes both ways).
// - default-deny: nothing allows it.
//
// Attribution: a kernel rule may merge several API rules (PolicyRule.sources). `apiRules` lists the
// sources whose own protocol/port/peer match the packet (checked one by one with the same matcher),
// oldest first by the caller's order — so explain names exactly the API rules that allow the packet.
import type { Family, SecurityGroupRule } from '../model/types.js';
import type { AddressSet, NicPolicy, Packet, PolicyRule, VmPolicy } from './ir.js';
import { evaluate, ruleMatches } from './evaluate.js';
import { cidrRange, parseCidr, parseIp, rangesToCidrTexts } from './cidr.js';
import { ruleEntries } from './rules.js';

export type ExplainReason = 'rule' | 'default-deny' | 'egress-open' | 'anti-spoofing' | 'untracked' | 'baseline';

export interface ExplainPacket extends Packet {
  /** The sender's source port (tcp/udp); default: ephemeral. */
  sourcePort?: number;
}

export interface Explanation {
  allow: boolean;
  reason: ExplainReason;
  /** The kernel rule that decided (reason rule / untracked). */
  policyRule?: PolicyRule;
  /** API rule uuids behind that kernel rule whose own match covers the packet. */
  apiRules: string[];
  /** One sentence for people. */
  detail: string;
}

const EPHEMERAL = 40000;

function inCidr(family: Family, peer: bigint, cidr: string): boolean {
  const c = parseCidr(cidr);
  if (!c || c.family !== family) return false;
  const [s, e] = cidrRange(c);
  return peer >= s && peer <= e;
}

function isProto(p: Packet, name: 'tcp' | 'udp' | 'icmp'): boolean {
  if (p.protocol === name) return true;
  const n = name === 'tcp' ? 6 : name === 'udp' ? 17 : p.family === 4 ? 1 : 58;
  return p.protocol === n;
}

type BaselineVerdict = { allow: boolean; reason: 'anti-spoofing' | 'baseline'; detail: string } | null;

/** The always-on part of the dataplane for this packet, or null when the VM's rules decide. */
export function baselineVerdict(packet: ExplainPacket, nic: NicPolicy | undefined): BaselineVerdict {
  const peer = parseIp(packet.peer);
  if (!peer || peer.family !== packet.family) throw new Error(`explain: peer ${packet.peer} is not an IPv${packet.family} address`);
  const udp = isProto(packet, 'udp');
  const tcp = isProto(packet, 'tcp');
  const icmp = isProto(packet, 'icmp');
  const sport = packet.sourcePort ?? EPHEMERAL;
  const dport = packet.port;
  const drop = (detail: string): BaselineVerdict => ({ allow: false, reason: 'anti-spoofing', detail });
  const pass = (detail: string): BaselineVerdict => ({ allow: true, reason: 'baseline', detail });
  if (packet.family === 4) {
    const hasV4 = (nic?.ipv4.length ?? 0) > 0;
    if (packet.direction === 'egress') {
      if (udp && sport === 67) return drop('the VM may not act as a DHCP server (UDP source port 67)');
      if (inCidr(4, peer.value, '224.0.0.0/4')) return drop('IPv4 multicast from a VM is dropped');
      if (udp && sport === 68 && dport === 67) return pass('DHCP client traffic is always allowed');
      if (!hasV4) return drop('the NIC has no IPv4 address: the VM may send only from its own addresses');
      if ((udp || tcp) && dport === 53) return pass('DNS queries are always allowed');
      return null;
    }
    if (udp && sport === 67 && dport === 68) return pass('DHCP server replies to the VM are always allowed');
    if (!hasV4) return drop('the NIC has no IPv4 address: only packets addressed to its own addresses reach it');
    return null;
  }
  const type = packet.icmpType;
  if (packet.direction === 'egress') {
    if (icmp && type === 134) return drop('the VM may not send router advertisements');
    if (icmp && type === 137) return drop('the VM may not send redirects');
    if (udp && sport === 547) return drop('the VM may not act as a DHCPv6 server (UDP source port 547)');
    if (icmp && type !== undefined && [133, 135, 136, 131, 132, 143].includes(type)) return pass('neighbour discovery and MLD reports are always allowed (for the NIC\'s own addresses; MLD from its link-local address)');
    if (icmp && type === 130) return drop('the VM may not send MLD queries (it is not a multicast router)');
    if (udp && sport === 546 && dport === 547) return pass('DHCPv6 client traffic is always allowed');
    if (inCidr(6, peer.value, 'ff00::/8')) return drop('IPv6 multicast from a VM is dropped (except neighbour discovery, MLD and DHCPv6)');
    if ((udp || tcp) && dport === 53) return pass('DNS queries are always allowed');
    return null;
  }
  const linkLocal = inCidr(6, peer.value, 'fe80::/10');
  if (icmp && type !== undefined && [134, 135, 136].includes(type)) return pass('router advertisements and neighbour discovery to the VM are always allowed');
  if (icmp && type === 130 && linkLocal) return pass('MLD queries from a link-local address are always allowed');
  if (udp && sport === 547 && dport === 546 && linkLocal) return pass('DHCPv6 server replies from a link-local address are always allowed');
  return null;
}

/** The API rule as kernel-rule-shaped matches for one family and direction (0–2 of them). */
function apiRuleMatches(rule: SecurityGroupRule, family: Family, direction: Packet['direction']): PolicyRule[] {
  return ruleEntries(rule).filter((e) => e.family === family && e.direction === direction).map((e) => ({
    id: rule.uuid, protocol: e.protocol, ...(e.ports ? { ports: e.ports } : {}), ...(e.icmp ? { icmp: e.icmp } : {}),
    cidrs: rangesToCidrTexts(family, e.ranges), sets: e.sets, sources: [rule.uuid],
  }));
}

/**
 * Explains one packet against one VM's compiled policy (with sources, as the server compiles it).
 * `nic`: the NIC the packet uses (anti-spoofing is per NIC); `apiRule` looks up a source rule by uuid
 * (sources it cannot find are left out of `apiRules`).
 */
export function explainPacket(policy: VmPolicy, nic: NicPolicy | undefined, packet: ExplainPacket,
  sets: ReadonlyMap<string, AddressSet>, apiRule: (uuid: string) => SecurityGroupRule | undefined): Explanation {
  const base = baselineVerdict(packet, nic);
  if (base) return { allow: base.allow, reason: base.reason, apiRules: [], detail: base.detail };
  const { sourcePort: _ignored, ...plain } = packet;
  const v = evaluate(policy, plain, sets);
  const fp = packet.family === 4 ? policy.v4 : policy.v6;
  const fam = `IPv${packet.family}`;
  if (v.reason.kind === 'egress-open') {
    return { allow: true, reason: 'egress-open', apiRules: [], detail: `the VM's groups have no ${fam} egress rule, so all ${fam} egress is allowed` };
  }
  if (v.reason.kind === 'default-deny') {
    return { allow: false, reason: 'default-deny', apiRules: [], detail: `no ${packet.direction} rule of the VM's groups allows it` };
  }
  const ruleId = v.reason.ruleId;
  const list = packet.direction === 'ingress' ? fp.ingress : fp.egress;
  const policyRule = list.find((r) => r.id === ruleId);
  const apiRules = v.reason.sources.filter((uuid) => {
    const r = apiRule(uuid);
    return r !== undefined && apiRuleMatches(r, packet.family, packet.direction).some((m) => ruleMatches(m, plain, sets));
  });
  if (fp.notrack) {
    return { allow: true, reason: 'untracked', policyRule, apiRules, detail: `the VM's groups allow all ${fam} traffic from and to anywhere in both directions: ${fam} is not connection-tracked` };
  }
  return { allow: true, reason: 'rule', policyRule, apiRules, detail: `allowed by an ${packet.direction} rule` };
}
