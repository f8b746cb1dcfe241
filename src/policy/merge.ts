// Merging a VM's entries of one family and direction into the fewest rules with the same verdicts.
//
// Every step keeps the set of (protocol, port/icmp, peer) triples that some rule allows exactly
// the same, so no packet's verdict can change:
// 1. identical match (protocol + ports / icmp type+code): peers are unioned (CIDR ranges merged);
// 2. same protocol and identical peers: overlapping or adjacent port ranges are joined;
//    1 and 2 repeat until nothing merges;
// 3. a rule whose match and peers are both inside another rule's is dropped, its sources moving to
//    the rule that covers it (so "explain" still names every API rule that allows a packet).
import { compareBig, mergeRanges, rangesCover, type Range } from './cidr.js';
import type { Entry, Match } from './rules.js';

/** Above this many rules the quadratic step 3 is skipped (steps 1–2 already bound the output). */
const SUBSUME_LIMIT = 1000;

function matchKey(m: Match): string {
  return `${m.protocol}|${m.ports ? `${m.ports.from}-${m.ports.to}` : ''}|${m.icmp ? `${m.icmp.type}/${m.icmp.code}` : ''}`;
}

function peerKey(e: Entry): string {
  return `${e.ranges.map(([s, t]) => `${s.toString(16)}-${t.toString(16)}`).join(',')}|${e.sets.join(',')}`;
}

function unionSorted(a: readonly string[], b: readonly string[]): string[] {
  return [...new Set([...a, ...b])].sort();
}

function unionByMatch(entries: Entry[]): Entry[] {
  const byKey = new Map<string, Entry[]>();
  for (const e of entries) {
    const k = matchKey(e);
    const g = byKey.get(k);
    if (g) g.push(e); else byKey.set(k, [e]);
  }
  // One merge per key (not pairwise), so a group with thousands of /32 rules stays n log n.
  return [...byKey.values()].map((g) => g.length === 1 ? g[0]! : {
    ...g[0]!,
    ranges: mergeRanges(g.flatMap((e) => e.ranges)),
    sets: [...new Set(g.flatMap((e) => e.sets))].sort(),
    sources: [...new Set(g.flatMap((e) => e.sources))].sort(),
  });
}

function mergePorts(entries: Entry[]): Entry[] {
  const out: Entry[] = [];
  const groups = new Map<string, Entry[]>();
  for (const e of entries) {
    if (!e.ports) { out.push(e); continue; }
    const k = `${e.protocol}|${peerKey(e)}`;
    const g = groups.get(k);
    if (g) g.push(e); else groups.set(k, [e]);
  }
  for (const g of groups.values()) {
    g.sort((a, b) => a.ports!.from - b.ports!.from || a.ports!.to - b.ports!.to);
    let run: Entry[] = [g[0]!];
    let to = g[0]!.ports!.to;
    const flush = () => {
      const first = run[0]!;
      out.push(run.length === 1 ? first : { ...first, ports: { from: first.ports!.from, to }, sources: [...new Set(run.flatMap((e) => e.sources))].sort() });
    };
    for (const e of g.slice(1)) {
      if (e.ports!.from <= to + 1) { run.push(e); to = Math.max(to, e.ports!.to); }
      else { flush(); run = [e]; to = e.ports!.to; }
    }
    flush();
  }
  return out;
}

/** Whether every packet `a` matches (ignoring peers) is matched by `b`. */
export function matchCovers(b: Match, a: Match): boolean {
  if (b.protocol === 'all') return true;
  if (b.protocol !== a.protocol) return false;
  if (b.ports && a.ports) return b.ports.from <= a.ports.from && a.ports.to <= b.ports.to;
  if (b.icmp && a.icmp) return b.icmp.type === -1 || (b.icmp.type === a.icmp.type && (b.icmp.code === -1 || b.icmp.code === a.icmp.code));
  return !b.ports && !a.ports && !b.icmp && !a.icmp; // same protocol number
}

function covers(b: Entry, a: Entry): boolean {
  return matchCovers(b, a) && rangesCover(b.ranges, a.ranges) && a.sets.every((s) => b.sets.includes(s));
}

function dropSubsumed(entries: Entry[]): Entry[] {
  if (entries.length > SUBSUME_LIMIT) return entries;
  // After steps 1–2 no two entries cover each other (that would need equal match and peers), so
  // "covers" is a strict order and every covered entry has an uncovered cover.
  const covered = entries.map((a, i) => entries.some((b, j) => i !== j && covers(b, a)));
  const keep = entries.map((e) => ({ ...e }));
  entries.forEach((a, i) => {
    if (!covered[i]) return;
    const j = entries.findIndex((b, jj) => !covered[jj] && jj !== i && covers(b, a));
    keep[j]!.sources = unionSorted(keep[j]!.sources, a.sources);
  });
  return keep.filter((_, i) => !covered[i]);
}

const PROTO_RANK: Record<string, number> = { all: 0, tcp: 1, udp: 2, icmp: 3 };
function protoRank(p: Match['protocol']): number { return typeof p === 'number' ? 10 + p : PROTO_RANK[p] ?? 9; }

/** Canonical order: protocol (all, tcp, udp, icmp, numbers), ports, icmp type/code, then peers. */
export function compareEntries(a: Entry, b: Entry): number {
  return protoRank(a.protocol) - protoRank(b.protocol)
    || (a.ports?.from ?? 0) - (b.ports?.from ?? 0) || (a.ports?.to ?? 0) - (b.ports?.to ?? 0)
    || (a.icmp?.type ?? 0) - (b.icmp?.type ?? 0) || (a.icmp?.code ?? 0) - (b.icmp?.code ?? 0)
    || compareRanges(a.ranges, b.ranges)
    || (a.sets.join(',') < b.sets.join(',') ? -1 : a.sets.join(',') > b.sets.join(',') ? 1 : 0)
    || (a.sources.join(',') < b.sources.join(',') ? -1 : a.sources.join(',') > b.sources.join(',') ? 1 : 0);
}

function compareRanges(a: readonly Range[], b: readonly Range[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const c = compareBig(a[i]![0], b[i]![0]) || compareBig(a[i]![1], b[i]![1]);
    if (c) return c;
  }
  return a.length - b.length;
}

/** Merges entries of one family and direction; result in canonical order. */
export function mergeEntries(entries: readonly Entry[]): Entry[] {
  let cur = [...entries];
  for (;;) {
    const before = cur.length;
    cur = mergePorts(unionByMatch(cur));
    if (cur.length === before) break;
  }
  return dropSubsumed(cur).sort(compareEntries);
}
