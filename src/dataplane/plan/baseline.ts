// The always-on baseline (DESIGN.md §3), as data: what every VM NIC may send and receive whatever its
// groups say — its own MAC and addresses only, ARP and neighbour discovery for its own addresses, DHCP
// and DHCPv6 as a client, DNS, replies of tracked flows; never a DHCP server or router advertisements;
// no other broadcast or multicast; nothing but ARP, IPv4 and IPv6. Every drop names its reason.
//
// Backends print these lists in order, translating each abstract match into their own syntax; they
// choose where each list runs (ebtables / the nftables `bridge` table for L2 and the guards, iptables /
// the `inet` table for the allow lists) but never change what a list decides.
//
// Verdicts:
//   continue  this check passes; the next list decides (L2 lists: on to the IP guard)
//   exempt    passes outright: skips the rest of its guard, and its side (source or destination) is
//             done — no allow list, no egress / ingress rules (DHCP client, DAD, the NIC's own NA;
//             DHCP replies and ND towards the VM)
//   allow     source side done: the packet leaves its VM without the VM's egress rules; the
//             destination's ingress still decides
//   accept    destination side done: delivered without the VM's ingress rules
//   drop      dropped, with its reason
// A list's end: L2 lists and guards continue; allow lists go on to the VM's egress rules (then
// `egress-default-deny` when its groups restrict egress), accept lists to its ingress rules (then
// `ingress-default-deny`).
import type { DropReason } from './reasons.js';

export type Fam = 4 | 6;

export type Verdict = 'continue' | 'exempt' | 'allow' | 'accept' | { drop: DropReason };

/** A match over one packet, relative to one VM NIC ("own": the NIC's MAC or addresses). All fields must hold. */
export interface Match {
  ether?: 'arp' | 'ip4' | 'ip6';
  /** Destination MAC: the broadcast address, or any group address (broadcast included). */
  dstMac?: 'broadcast' | 'multicast';
  srcMac?: 'not-own';
  arpOp?: 'request' | 'reply';
  /** ARP sender protocol address: one of the NIC's IPv4s (one rule per address where a backend needs it), or 0.0.0.0. */
  arpSenderIp?: 'own' | 'unspecified';
  arpSenderMac?: 'own';
  arpTargetIp?: 'own';
  /**
   * IP source: the unspecified address (0.0.0.0 / ::), not one of the NIC's own, or an IPv6 link-local
   * address (fe80::/10: routers never forward it, so it was sent on this link).
   */
  src?: 'unspecified' | 'not-own' | 'link-local';
  /** IP destination: the limited broadcast, or not one of the NIC's own. */
  dst?: 'broadcast' | 'not-own';
  proto?: 'udp' | 'tcp' | 'icmp6';
  sport?: number;
  dport?: number;
  icmp6?: number;
  hopLimit255?: true;
  /** An ICMPv6 neighbour solicitation or advertisement right after the IPv6 header (no extension headers) whose target is one of the NIC's own addresses. */
  ndTargetOwn?: true;
  /** Replies and related packets of tracked flows. */
  ct?: 'established';
}

export interface BaseRule { id: string; match: Match; verdict: Verdict }

export interface IpBaseline {
  /** Every IP packet a VM NIC sends, before connection state counts (so no reply can carry a spoofed source). */
  fromGuard: BaseRule[];
  /** Then: passes the source side without the VM's egress rules. */
  fromAllow: BaseRule[];
  /** Every IP packet to a VM NIC, before connection state counts. */
  toGuard: BaseRule[];
  /** Then: delivered without the VM's ingress rules. */
  toAccept: BaseRule[];
}

export interface Baseline {
  /** Per NIC, first thing on every frame it sends. */
  l2FromNic: BaseRule[];
  /** Per NIC, ARP it sends (after l2FromNic). */
  arpFromNic: BaseRule[];
  /** Every frame from a VM NIC, after the per-NIC checks. */
  l2FromVm: BaseRule[];
  /** Per NIC, ARP sent to it. */
  arpToNic: BaseRule[];
  /** Every frame to a VM NIC, after arpToNic. */
  l2ToVm: BaseRule[];
  ip: Record<Fam, IpBaseline>;
}

const drop = (reason: DropReason): Verdict => ({ drop: reason });
const rule = (id: string, match: Match, verdict: Verdict): BaseRule => ({ id, match, verdict });

// A VM is never a multicast router: it may report its listening (MLD 131, 132, 143), not query (130).
const ND_FROM_VM = [133, 135, 136, 131, 132, 143];
const i6 = (type: number): BaseRule => rule(`i6.${type}`, { ether: 'ip6', dstMac: 'multicast', proto: 'icmp6', icmp6: type }, 'continue');

export const BASELINE: Baseline = {
  l2FromNic: [rule('mac', { srcMac: 'not-own' }, drop('spoof-mac'))],
  arpFromNic: [
    rule('arp.own', { ether: 'arp', arpSenderIp: 'own', arpSenderMac: 'own' }, 'continue'),
    // ARP probes (RFC 5227) come from 0.0.0.0, for the NIC's own addresses only (a probe for a
    // neighbour's address is a conflict its guest may give the address up for)
    rule('arp.probe', { ether: 'arp', arpOp: 'request', arpSenderIp: 'unspecified', arpSenderMac: 'own', arpTargetIp: 'own' }, 'continue'),
    rule('arp.deny', { ether: 'arp' }, drop('spoof-arp')),
  ],
  l2FromVm: [
    rule('arp.req', { ether: 'arp', arpOp: 'request' }, 'continue'),
    rule('arp.rep', { ether: 'arp', arpOp: 'reply' }, 'continue'),
    rule('arp.op', { ether: 'arp' }, drop('spoof-arp')),
    rule('ip4.dhcps', { ether: 'ip4', proto: 'udp', sport: 67 }, drop('rogue-dhcp')),
    rule('ip4.dhcpc', { ether: 'ip4', dstMac: 'broadcast', proto: 'udp', sport: 68, dport: 67 }, 'continue'),
    rule('ip4.bum', { ether: 'ip4', dstMac: 'multicast' }, drop('bum')),
    rule('ip4', { ether: 'ip4' }, 'continue'),
    rule('ip6.ra', { ether: 'ip6', proto: 'icmp6', icmp6: 134 }, drop('rogue-ra')),
    rule('ip6.redir', { ether: 'ip6', proto: 'icmp6', icmp6: 137 }, drop('rogue-redirect')),
    rule('ip6.dhcps', { ether: 'ip6', proto: 'udp', sport: 547 }, drop('rogue-dhcp')),
    ...ND_FROM_VM.map(i6),
    rule('ip6.dhcpc', { ether: 'ip6', dstMac: 'multicast', proto: 'udp', sport: 546, dport: 547 }, 'continue'),
    rule('ip6.bum', { ether: 'ip6', dstMac: 'multicast' }, drop('bum')),
    rule('ip6', { ether: 'ip6' }, 'continue'),
    rule('l2', {}, drop('l2-protocol')),
  ],
  arpToNic: [
    rule('arp.own', { ether: 'arp', arpTargetIp: 'own' }, 'continue'),
    rule('arp.deny', { ether: 'arp' }, drop('not-own-address')),
  ],
  l2ToVm: [
    rule('arp.req', { ether: 'arp', arpOp: 'request' }, 'continue'),
    rule('arp.rep', { ether: 'arp', arpOp: 'reply' }, 'continue'),
    rule('arp.op', { ether: 'arp' }, drop('spoof-arp')),
    rule('ip4', { ether: 'ip4' }, 'continue'),
    rule('ip6', { ether: 'ip6' }, 'continue'),
    rule('l2', {}, drop('l2-protocol')),
  ],
  ip: {
    4: {
      fromGuard: [
        // Before the source check only what a client without an address sends (0.0.0.0 → broadcast);
        // renewals come from the NIC's own address and pass after it.
        rule('dhcpc', { src: 'unspecified', dst: 'broadcast', proto: 'udp', sport: 68, dport: 67 }, 'exempt'),
        rule('dhcps', { proto: 'udp', sport: 67 }, drop('rogue-dhcp')),
        rule('spoof', { src: 'not-own' }, drop('spoof-ip')),
      ],
      fromAllow: [
        rule('dhcpcu', { proto: 'udp', sport: 68, dport: 67 }, 'allow'),
        rule('est', { ct: 'established' }, 'allow'),
        rule('dnsu', { proto: 'udp', dport: 53 }, 'allow'),
        rule('dnst', { proto: 'tcp', dport: 53 }, 'allow'),
      ],
      toGuard: [
        // DHCP offers and acks go to broadcast, or to the address being offered (the NIC's own: checked
        // first, so a reply to another address never reaches the VM's client port)
        rule('dhcpr', { dst: 'broadcast', proto: 'udp', sport: 67, dport: 68 }, 'exempt'),
        rule('dst', { dst: 'not-own' }, drop('not-own-address')),
        rule('dhcpru', { proto: 'udp', sport: 67, dport: 68 }, 'exempt'),
      ],
      toAccept: [
        rule('estin', { ct: 'established' }, 'accept'),
      ],
    },
    6: {
      fromGuard: [
        rule('ra', { proto: 'icmp6', icmp6: 134 }, drop('rogue-ra')),
        rule('redir', { proto: 'icmp6', icmp6: 137 }, drop('rogue-redirect')),
        rule('dhcps', { proto: 'udp', sport: 547 }, drop('rogue-dhcp')),
        // Duplicate address detection and its MLD report are sent from the unspecified address; a DAD
        // solicitation only for the NIC's own addresses (one for a neighbour's address makes the
        // neighbour give its address up).
        rule('dad', { src: 'unspecified', proto: 'icmp6', icmp6: 135, hopLimit255: true, ndTargetOwn: true }, 'exempt'),
        rule('dadx', { src: 'unspecified', proto: 'icmp6', icmp6: 135 }, drop('spoof-nd')),
        rule('dadmld', { src: 'unspecified', proto: 'icmp6', icmp6: 143 }, 'exempt'),
        rule('spoof', { src: 'not-own' }, drop('spoof-ip')),
        // A neighbour advertisement only for the NIC's own addresses; any other NA (extension headers
        // included) would let the VM poison its neighbours' caches.
        rule('na', { proto: 'icmp6', icmp6: 136, hopLimit255: true, ndTargetOwn: true }, 'exempt'),
        rule('nax', { proto: 'icmp6', icmp6: 136 }, drop('spoof-nd')),
      ],
      fromAllow: [
        rule('rs', { proto: 'icmp6', icmp6: 133, hopLimit255: true }, 'allow'),
        rule('ns', { proto: 'icmp6', icmp6: 135, hopLimit255: true }, 'allow'),
        // MLD reports are link-local (RFC 3810 §5): from anywhere else they are the VM's egress rules' to judge
        ...[131, 132, 143].map((t) => rule(`mld${t}`, { src: 'link-local', proto: 'icmp6', icmp6: t }, 'allow')),
        rule('dhcpc', { proto: 'udp', sport: 546, dport: 547 }, 'allow'),
        rule('est', { ct: 'established' }, 'allow'),
        rule('dnsu', { proto: 'udp', dport: 53 }, 'allow'),
        rule('dnst', { proto: 'tcp', dport: 53 }, 'allow'),
      ],
      toGuard: [
        rule('ra', { proto: 'icmp6', icmp6: 134, hopLimit255: true }, 'exempt'),
        rule('ns', { proto: 'icmp6', icmp6: 135, hopLimit255: true }, 'exempt'),
        rule('na', { proto: 'icmp6', icmp6: 136, hopLimit255: true }, 'exempt'),
        // MLD queries and DHCPv6 replies come from a link-local address: an off-link sender cannot
        // reach the VM's client port or its MLD stack through them
        rule('mldq', { src: 'link-local', proto: 'icmp6', icmp6: 130 }, 'exempt'),
        rule('dhcpr', { src: 'link-local', proto: 'udp', sport: 547, dport: 546 }, 'exempt'),
        rule('dst', { dst: 'not-own' }, drop('not-own-address')),
      ],
      toAccept: [
        rule('estin', { ct: 'established' }, 'accept'),
      ],
    },
  },
};

/** The rules of `list` that apply to frames of one ethertype ('other': neither ARP, IPv4 nor IPv6), order kept. */
export function forEther(list: BaseRule[], ether: 'arp' | 'ip4' | 'ip6' | 'other'): BaseRule[] {
  return list.filter((r) => (ether === 'other' ? r.match.ether === undefined : r.match.ether === undefined || r.match.ether === ether));
}

export function isDrop(v: Verdict): v is { drop: DropReason } { return typeof v === 'object'; }
