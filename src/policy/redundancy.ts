// Redundancy of new rules (authorize dry runs): do they allow anything the group's existing rules of
// the same direction do not already allow? Decided per address family, exactly, in the compiler's
// semantics (rules.ts normalisation, evaluate.ts matching):
//
// A rule allows the set of (protocol, port | ICMP type/code, peer) of its family. New rules N are
// redundant in family f iff ⋃ N_f ⊆ ⋃ E_f (E: existing rules). The check cuts the new rule's match into
// atoms on which every existing rule either matches entirely or not at all — protocol numbers named by
// some rule plus one "any other protocol" atom; port intervals between the existing rules' range
// boundaries; ICMP types and codes named by some rule plus "any other" — and then compares peers on
// each atom with the union of the peers of the existing rules matching that atom.
//
// Peers: CIDR ranges compare as address ranges. A referenced group is an address set whose members
// change at any time, so it is covered only by a rule referencing the same group, or by CIDRs
// covering the whole family (0.0.0.0/0, ::/0) — never by today's members happening to lie in a CIDR.
// Redundancy is therefore structural: true means "no membership change can make this rule matter".
//
// Work is bounded (REDUNDANCY_WORK_LIMIT steps per family): beyond it the answer is "not decided".
//
// It is decided on the group's own rules: a VM in several groups may find a rule redundant that its
// group alone does not (the result is a sufficient condition for every member). Authorizing the first
// egress rule of a family is reported separately (`restrictsEgress`): it allows nothing new but closes
// that family's egress for members with no other egress rule — never a no-op.
import type { Family, SecurityGroupRule } from '../model/types.js';
import type { Packet } from './ir.js';
import { fullRange, formatIp, mergeRanges, type Range } from './cidr.js';
import { ruleEntries, type Entry } from './rules.js';

export interface FamilyRedundancy {
  family: Family;
  /** Whether the new rules contribute to this family at all. */
  applies: boolean;
  redundant: boolean;
  /**
   * false when the question was too large to decide within REDUNDANCY_WORK_LIMIT (then `redundant` is
   * false: the new rules may add something). Absent when decided.
   */
  decided?: false;
  /** Existing rule uuids whose matches overlap the new rules' where they are covered. */
  coveredBy: string[];
  /**
   * A packet the new rules allow and the existing ones do not (when not redundant). `peer` is absent
   * when only a referenced group is uncovered (`peerSet` names its address set then).
   */
  witness?: Omit<Packet, 'peer'> & { peer?: string; peerSet?: string };
  /** Adding the rules turns this family's egress from open to restricted for members without other egress rules. */
  restrictsEgress: boolean;
}

const FAMILIES: Family[] = [4, 6];
const ALL_PORTS: Range = [0n, 65535n];

/**
 * Most steps (an existing rule looked at for one atom, a range compared) one call may take. The
 * existing rules are a tenant's and unbounded in number: without a bound, a dry run against a group of
 * thousands of rules took tens of seconds of the (single-threaded) server. Atoms are shared by every
 * new rule of one call (they have one protocol and port range), so a call with many CIDRs costs about
 * what one CIDR does; 2,000,000 steps is a fraction of a second.
 */
export const REDUNDANCY_WORK_LIMIT = 2_000_000;

class TooMuchWork extends Error {}

/** Counts steps against the limit. */
class Budget {
  private used = 0;
  constructor(private readonly limit: number) {}
  spend(n: number): void {
    this.used += n;
    if (this.used > this.limit) throw new TooMuchWork();
  }
}

function icmpNumber(f: Family): number { return f === 4 ? 1 : 58; }

/** The IP protocol number an entry names, or null for 'all'. */
function protoNumber(e: Entry): number | null {
  if (e.protocol === 'all') return null;
  if (e.protocol === 'tcp') return 6;
  if (e.protocol === 'udp') return 17;
  if (e.protocol === 'icmp') return icmpNumber(e.family);
  return e.protocol;
}

/** An atom of match space: one protocol number, and within it a port interval or an ICMP type/code. */
interface Atom { proto: number; ports?: Range; icmp?: { type: number; code: number } }

/** Whether an existing entry matches every packet of the atom. */
function matchesAtom(e: Entry, a: Atom): boolean {
  const p = protoNumber(e);
  if (p === null) return true;
  if (p !== a.proto) return false;
  if (e.protocol === 'tcp' || e.protocol === 'udp') {
    if (!a.ports) return false; // the atom is not port-cut: only whole-protocol matches count (cannot happen for tcp/udp atoms)
    const from = BigInt(e.ports?.from ?? 0), to = BigInt(e.ports?.to ?? 65535);
    return from <= a.ports[0] && a.ports[1] <= to;
  }
  if (e.protocol === 'icmp') {
    const t = e.icmp?.type ?? -1, c = e.icmp?.code ?? -1;
    if (t === -1) return true;
    if (!a.icmp || a.icmp.type !== t) return false;
    return c === -1 || a.icmp.code === c;
  }
  return true; // a protocol number rule: the whole protocol
}

/** Cuts [lo, hi] at every boundary of the given ranges: intervals on which each range is all-or-nothing. */
function cutInterval(lo: bigint, hi: bigint, bounds: Range[]): Range[] {
  const cuts = new Set<bigint>([lo]);
  for (const [s, e] of bounds) {
    if (s > lo && s <= hi) cuts.add(s);
    if (e + 1n > lo && e + 1n <= hi) cuts.add(e + 1n);
  }
  const sorted = [...cuts].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
  return sorted.map((s, i) => [s, i + 1 < sorted.length ? sorted[i + 1]! - 1n : hi] as Range);
}

/** A value in 0..255 outside `used`, or null. */
function other(used: Set<number>): number | null {
  for (let i = 0; i < 256; i++) if (!used.has(i)) return i;
  return null;
}

/** The atoms of one new entry's match, cut by the existing entries. */
function atomsOf(n: Entry, existing: Entry[], f: Family, budget: Budget): Atom[] {
  budget.spend(existing.length);
  const icmpN = icmpNumber(f);
  const portAtoms = (proto: number, lo: bigint, hi: bigint): Atom[] => {
    const name = proto === 6 ? 'tcp' : 'udp';
    const bounds = existing.filter((e) => e.protocol === name).map((e) => [BigInt(e.ports?.from ?? 0), BigInt(e.ports?.to ?? 65535)] as Range);
    return cutInterval(lo, hi, bounds).map((ports) => ({ proto, ports }));
  };
  const icmpAtoms = (type: number, code: number): Atom[] => {
    const rules = existing.filter((e) => e.protocol === 'icmp' && (e.icmp?.type ?? -1) !== -1);
    const types = type === -1 ? [...new Set(rules.map((e) => e.icmp!.type))] : [type];
    if (type === -1) { const o = other(new Set(types)); if (o !== null) types.push(o); }
    const out: Atom[] = [];
    for (const t of types) {
      if (type !== -1 && code !== -1) { out.push({ proto: icmpN, icmp: { type: t, code } }); continue; }
      const codes = [...new Set(rules.filter((e) => e.icmp!.type === t && e.icmp!.code !== -1).map((e) => e.icmp!.code))];
      const o = other(new Set(codes));
      if (o !== null) codes.push(o);
      for (const c of codes) out.push({ proto: icmpN, icmp: { type: t, code: c } });
    }
    return out;
  };
  const wholeProtocol = (proto: number): Atom[] => {
    if (proto === 6 || proto === 17) return portAtoms(proto, ALL_PORTS[0], ALL_PORTS[1]);
    if (proto === icmpN) return icmpAtoms(-1, -1);
    return [{ proto }];
  };
  switch (n.protocol) {
    case 'tcp': case 'udp':
      return portAtoms(n.protocol === 'tcp' ? 6 : 17, BigInt(n.ports?.from ?? 0), BigInt(n.ports?.to ?? 65535));
    case 'icmp':
      return icmpAtoms(n.icmp?.type ?? -1, n.icmp?.code ?? -1);
    case 'all': {
      const named = new Set<number>([6, 17, icmpN]);
      for (const e of existing) { const p = protoNumber(e); if (p !== null) named.add(p); }
      const o = other(named);
      return [...[...named].flatMap(wholeProtocol), ...(o !== null ? [{ proto: o }] : [])];
    }
    default:
      return wholeProtocol(n.protocol);
  }
}

/** The first address of `inner` not in `outer` (both merged), or null. */
function firstUncovered(inner: Range[], outer: Range[], budget: Budget): bigint | null {
  for (const [s, e] of inner) {
    let x = s;
    budget.spend(outer.length);
    for (const [os, oe] of outer) {
      if (oe < x) continue;
      if (os > x) break;
      x = oe + 1n;
      if (x > e) break;
    }
    if (x <= e) return x;
  }
  return null;
}

function atomPacket(a: Atom, f: Family, direction: Entry['direction']): Omit<Packet, 'peer'> {
  const base = { family: f, direction } as const;
  if (a.proto === 6 || a.proto === 17) return { ...base, protocol: a.proto === 6 ? 'tcp' : 'udp', port: Number(a.ports![0]) };
  if (a.proto === icmpNumber(f)) return { ...base, protocol: 'icmp', icmpType: a.icmp!.type, icmpCode: a.icmp!.code };
  return { ...base, protocol: a.proto };
}

/** What the existing entries allow on one atom: their merged peer ranges and sets. */
interface AtomCover { matching: Entry[]; ranges: Range[]; sets: Set<string>; everything: boolean }

const atomKey = (a: Atom) => `${a.proto}|${a.ports ? `${a.ports[0]}-${a.ports[1]}` : ''}|${a.icmp ? `${a.icmp.type}/${a.icmp.code}` : ''}`;

function familyCheck(f: Family, existing: Entry[], added: Entry[], hadEgress: boolean, budget: Budget): FamilyRedundancy {
  const full = fullRange(f);
  const coveredBy = new Set<string>();
  const restrictsEgress = added.length > 0 && added[0]!.direction === 'egress' && !hadEgress;
  // The cover of an atom depends on the existing rules only: computed once, whatever the new rules.
  const covers = new Map<string, AtomCover>();
  const coverOf = (a: Atom): AtomCover => {
    const key = atomKey(a);
    let c = covers.get(key);
    if (!c) {
      budget.spend(existing.length);
      const matching = existing.filter((e) => matchesAtom(e, a));
      const ranges = mergeRanges(matching.flatMap((e) => e.ranges));
      budget.spend(ranges.length);
      c = { matching, ranges, sets: new Set(matching.flatMap((e) => e.sets)), everything: ranges.length === 1 && ranges[0]![0] === full[0] && ranges[0]![1] === full[1] };
      covers.set(key, c);
    }
    return c;
  };
  const atomsByShape = new Map<string, Atom[]>();
  const counted = new Set<string>();
  for (const n of added) {
    // New entries of the same shape (protocol, ports, ICMP) cut into the same atoms.
    const shape = `${n.protocol}|${n.ports?.from ?? ''}-${n.ports?.to ?? ''}|${n.icmp?.type ?? ''}/${n.icmp?.code ?? ''}`;
    let atoms = atomsByShape.get(shape);
    if (!atoms) { atoms = atomsOf(n, existing, f, budget); atomsByShape.set(shape, atoms); }
    for (const a of atoms) {
      const { matching, ranges, sets, everything } = coverOf(a);
      const miss = firstUncovered(n.ranges, ranges, budget);
      const missSet = everything ? undefined : n.sets.find((s) => !sets.has(s));
      if (miss !== null || missSet !== undefined) {
        const packet = atomPacket(a, f, n.direction);
        const witness = miss !== null ? { ...packet, peer: formatIp(f, miss) } : { ...packet, peerSet: missSet };
        return { family: f, applies: true, redundant: false, coveredBy: [], witness, restrictsEgress };
      }
      const key = atomKey(a);
      if (!counted.has(key)) {
        counted.add(key);
        budget.spend(matching.length);
        for (const e of matching) for (const s of e.sources) coveredBy.add(s);
      }
    }
  }
  return { family: f, applies: added.length > 0, redundant: true, coveredBy: [...coveredBy].sort(), restrictsEgress };
}

/**
 * Whether `added` (new rules of one direction for a group) allow anything `existing` (the group's rules
 * of that direction) do not, per family. A family the new rules do not touch is redundant trivially
 * (applies=false).
 */
export function ruleRedundancy(existing: readonly SecurityGroupRule[], added: readonly SecurityGroupRule[], workLimit = REDUNDANCY_WORK_LIMIT): FamilyRedundancy[] {
  const ex = existing.flatMap(ruleEntries);
  const ad = added.flatMap(ruleEntries);
  // An unreadable existing egress rule already restricts egress (compile.ts); count it as "had egress".
  const unreadableEgress = existing.some((r) => r.direction === 'egress' && ruleEntries(r).length === 0);
  const direction = added[0]?.direction;
  return FAMILIES.map((f) => {
    const exF = ex.filter((e) => e.family === f && e.direction === direction);
    const adF = ad.filter((e) => e.family === f);
    const hadEgress = unreadableEgress || exF.some((e) => e.direction === 'egress');
    try {
      return familyCheck(f, exF, adF, hadEgress, new Budget(workLimit));
    } catch (e) {
      if (!(e instanceof TooMuchWork)) throw e;
      return { family: f, applies: adF.length > 0, redundant: false, decided: false, coveredBy: [], restrictsEgress: adF.length > 0 && direction === 'egress' && !hadEgress };
    }
  });
}
