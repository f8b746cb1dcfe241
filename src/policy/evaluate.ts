// evaluate: the reference semantics of a VmPolicy for one packet (dataplane tests and "explain").
//
// Ingress: allowed iff some ingress rule of the packet's family matches; else default deny.
// Egress: allowed while the family is not egress-restricted; else iff some egress rule matches.
// A rule matches when its protocol matches ('all' any; a number that IP protocol; tcp/udp with the
// destination port in range; icmp with type/code, -1 = any — in family 6 "icmp" is ICMPv6) and the
// peer lies in one of its CIDRs or referenced sets. The first match in canonical order decides.
// Not modelled here (the dataplane's fixed baseline, whatever the rules): replies of tracked flows,
// DHCP client, DNS, IPv6 neighbour discovery allowed; spoofing, DHCP server, RAs dropped.
import type { Family } from '../model/types.js';
import type { AddressSet, Packet, PolicyRule, VmPolicy, Verdict } from './ir.js';
import { cidrRange, parseCidr, parseIp } from './cidr.js';

type PacketProto = { name: 'tcp' | 'udp' | 'icmp' | null; number: number };

function packetProtocol(p: Packet): PacketProto {
  const icmpNumber = p.family === 4 ? 1 : 58;
  if (p.protocol === 'tcp' || p.protocol === 6) return { name: 'tcp', number: 6 };
  if (p.protocol === 'udp' || p.protocol === 17) return { name: 'udp', number: 17 };
  if (p.protocol === 'icmp' || p.protocol === icmpNumber) return { name: 'icmp', number: icmpNumber };
  if (typeof p.protocol === 'number' && Number.isInteger(p.protocol) && p.protocol >= 0 && p.protocol <= 255) return { name: null, number: p.protocol };
  throw new Error(`evaluate: bad packet protocol ${String(p.protocol)}`);
}

function matchesProtocol(r: PolicyRule, pp: PacketProto, p: Packet): boolean {
  if (r.protocol === 'all') return true;
  if (typeof r.protocol === 'number') return r.protocol === pp.number;
  if (r.protocol !== pp.name) return false;
  if (r.protocol === 'tcp' || r.protocol === 'udp') {
    const from = r.ports?.from ?? 0, to = r.ports?.to ?? 65535;
    // A packet without a port only matches a rule that covers every port.
    return p.port === undefined ? from === 0 && to === 65535 : p.port >= from && p.port <= to;
  }
  // icmp
  const type = r.icmp?.type ?? -1, code = r.icmp?.code ?? -1;
  if (type === -1) return true;
  if (p.icmpType !== type) return false;
  return code === -1 || p.icmpCode === code;
}

function matchesPeer(r: PolicyRule, family: Family, peer: bigint, sets: ReadonlyMap<string, AddressSet>): boolean {
  for (const c of r.cidrs) {
    const cidr = parseCidr(c);
    if (!cidr || cidr.family !== family) continue;
    const [s, e] = cidrRange(cidr);
    if (peer >= s && peer <= e) return true;
  }
  for (const id of r.sets) {
    const set = sets.get(id);
    if (!set || set.family !== family) continue; // an unknown set is empty: fail closed
    for (const m of set.members) {
      const ip = parseIp(m);
      if (ip && ip.family === family && ip.value === peer) return true;
    }
  }
  return false;
}

/** Whether one rule matches a packet (protocol, port / ICMP type and code, peer). */
export function ruleMatches(r: PolicyRule, packet: Packet, sets: ReadonlyMap<string, AddressSet>): boolean {
  const peer = parseIp(packet.peer);
  if (!peer || peer.family !== packet.family) throw new Error(`evaluate: peer ${packet.peer} is not an IPv${packet.family} address`);
  return matchesProtocol(r, packetProtocol(packet), packet) && matchesPeer(r, packet.family, peer.value, sets);
}

/** Reference semantics: the verdict for one packet against one VM's policy (sets resolve referenced groups). */
export function evaluate(policy: VmPolicy, packet: Packet, sets: ReadonlyMap<string, AddressSet>): Verdict {
  const peer = parseIp(packet.peer);
  if (!peer || peer.family !== packet.family) throw new Error(`evaluate: peer ${packet.peer} is not an IPv${packet.family} address`);
  const fp = packet.family === 4 ? policy.v4 : policy.v6;
  if (packet.direction === 'egress' && !fp.egressRestricted) return { allow: true, reason: { kind: 'egress-open' } };
  const pp = packetProtocol(packet);
  for (const r of packet.direction === 'ingress' ? fp.ingress : fp.egress) {
    if (matchesProtocol(r, pp, packet) && matchesPeer(r, packet.family, peer.value, sets)) {
      return { allow: true, reason: { kind: 'rule', ruleId: r.id, sources: [...r.sources] } };
    }
  }
  return { allow: false, reason: { kind: 'default-deny' } };
}
