// From stored API rules to per-family match entries (the compiler's unmerged form).
//
// Normalisation (all verdict-preserving, so the dataplane sees one spelling per meaning):
// - tcp/udp: missing ports or 0/0 mean 0..65535 (CloudStack stores 0/0 as 0/65535 and the host
//   script drops --dport for 0:0).
// - icmp (or protocol number 1): type/code default -1/-1; type -1 forces code -1 ("any type").
//   In family 6 an icmp rule means ICMPv6 with the same type/code numbers — CloudStack's semantics
//   (the host script emits `-p icmpv6 --icmpv6-type <type>/<code>` for the IPv6 CIDRs of an icmp rule).
// - protocol number 0 means every protocol (iptables: "the number zero is equivalent to all"), so it
//   compiles to 'all' and renders the same on every backend.
// - A CIDR rule lands in its CIDR's family; a group reference lands in both families as the group's
//   address sets (addressSetId(g, 4), addressSetId(g, 6)).
// Rules that cannot be understood (bad CIDR, bad ports, unknown protocol) are skipped: the API
// validates before storing, and skipping an allow rule fails closed (an unreadable egress rule
// still marks egress restricted, see compile.ts).
import type { Direction, Family, SecurityGroupRule } from '../model/types.js';
import type { IrProtocol } from './ir.js';
import { cidrRange, parseCidr, type Range } from './cidr.js';
import { addressSetId } from './sets.js';

/** What a rule matches, besides its peers. */
export interface Match {
  protocol: IrProtocol;
  ports?: { from: number; to: number };
  icmp?: { type: number; code: number };
}

/** One stored rule's contribution to one family and direction. */
export interface Entry extends Match {
  direction: Direction;
  family: Family;
  /** Peer CIDRs as sorted, merged ranges. */
  ranges: Range[];
  /** Peer address-set ids, sorted. */
  sets: string[];
  /** API rule uuids, sorted. */
  sources: string[];
}

function isInt(n: unknown, lo: number, hi: number): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= lo && n <= hi;
}

/** The rule's match in normal form, or null if the rule is not understood. */
export function normalizeMatch(rule: Pick<SecurityGroupRule, 'protocol' | 'ports' | 'icmp'>): Match | null {
  let p: unknown = rule.protocol;
  if (typeof p === 'string') {
    const t = p.trim().toLowerCase();
    p = /^[0-9]+$/.test(t) ? Number(t) : t;
  }
  if (p === 0 || p === 'all') return { protocol: 'all' };
  if (p === 1 || p === 'icmp') {
    const type = rule.icmp?.type ?? -1;
    const code = rule.icmp?.code ?? -1;
    if (!isInt(type, -1, 255) || !isInt(code, -1, 255)) return null;
    return { protocol: 'icmp', icmp: type === -1 ? { type: -1, code: -1 } : { type, code } };
  }
  if (p === 'tcp' || p === 'udp') {
    let from = rule.ports?.from ?? 0;
    let to = rule.ports?.to ?? 0;
    if (from === 0 && to === 0) to = 65535;
    if (!isInt(from, 0, 65535) || !isInt(to, 0, 65535) || from > to) return null;
    return { protocol: p, ports: { from, to } };
  }
  if (isInt(p, 2, 255)) return { protocol: p };
  return null;
}

/** The entries one stored rule contributes (0, 1, or 2 for a group reference). */
export function ruleEntries(rule: SecurityGroupRule): Entry[] {
  const match = normalizeMatch(rule);
  if (match === null) return [];
  const base = (family: Family, ranges: Range[], sets: string[]): Entry => ({
    direction: rule.direction, family, ...match, ranges, sets, sources: [rule.uuid],
  });
  if (rule.allowedGroupId !== null && rule.allowedGroupId !== undefined) {
    const g = rule.allowedGroupId;
    return [base(4, [], [addressSetId(g, 4)]), base(6, [], [addressSetId(g, 6)])];
  }
  if (rule.cidr === null || rule.cidr === undefined) return [];
  const c = parseCidr(rule.cidr);
  if (c === null) return [];
  return [base(c.family, [cidrRange(c)], [])];
}
