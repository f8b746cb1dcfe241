// IP addresses and CIDRs as integers (bigint for both families, so one code path serves v4 and v6):
// parsing, canonical text, and merging of CIDR lists into the fewest covering blocks.
import type { Family } from '../model/types.js';

export interface Ip { family: Family; value: bigint }
/** Inclusive address range [start, end] of one family. */
export type Range = readonly [bigint, bigint];
export interface Cidr { family: Family; start: bigint; prefix: number }

export const BITS: Record<Family, number> = { 4: 32, 6: 128 };
const FULL: Record<Family, bigint> = { 4: (1n << 32n) - 1n, 6: (1n << 128n) - 1n };

function parseIpv4(s: string): bigint | null {
  const parts = s.split('.');
  if (parts.length !== 4) return null;
  let v = 0;
  for (const p of parts) {
    // Decimal 0..255 without leading zeros ("010" is octal to some tools and decimal to others).
    if (p.length === 0 || p.length > 3 || (p.length > 1 && p.charCodeAt(0) === 48)) return null;
    let n = 0;
    for (let i = 0; i < p.length; i++) {
      const c = p.charCodeAt(i) - 48;
      if (c < 0 || c > 9) return null;
      n = n * 10 + c;
    }
    if (n > 255) return null;
    v = v * 256 + n;
  }
  return BigInt(v);
}

function parseIpv6(s: string): bigint | null {
  if (s.length === 0 || s.includes('%')) return null;
  let tail4: bigint | null = null;
  let text = s;
  const lastColon = text.lastIndexOf(':');
  if (lastColon >= 0 && text.indexOf('.', lastColon) > lastColon) {
    // Embedded IPv4 in the last 32 bits (::ffff:192.0.2.1).
    tail4 = parseIpv4(text.slice(lastColon + 1));
    if (tail4 === null) return null;
    text = text.slice(0, lastColon + 1) + '0:0';
  }
  const halves = text.split('::');
  if (halves.length > 2) return null;
  const parseGroups = (h: string): number[] | null => {
    if (h === '') return [];
    const gs = h.split(':');
    const out: number[] = [];
    for (const g of gs) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const head = parseGroups(halves[0]!);
  if (head === null) return null;
  let groups: number[];
  if (halves.length === 2) {
    const rest = parseGroups(halves[1]!);
    if (rest === null || head.length + rest.length > 7) return null;
    groups = [...head, ...new Array<number>(8 - head.length - rest.length).fill(0), ...rest];
  } else {
    if (head.length !== 8) return null;
    groups = head;
  }
  let v = 0n;
  for (const g of groups) v = (v << 16n) | BigInt(g);
  if (tail4 !== null) v = (v & ~0xffffffffn) | tail4;
  return v;
}

/** Parses an IPv4 or IPv6 address (no prefix, no zone). */
export function parseIp(s: string): Ip | null {
  const t = s.trim();
  if (t.includes(':')) {
    const v = parseIpv6(t);
    return v === null ? null : { family: 6, value: v };
  }
  const v = parseIpv4(t);
  return v === null ? null : { family: 4, value: v };
}

/** Canonical text: dotted quad, or RFC 5952 (lower-case, no leading zeros, longest zero run as ::). */
export function formatIp(family: Family, value: bigint): string {
  if (family === 4) { const n = Number(value); return `${Math.floor(n / 16777216)}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`; }
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((value >> BigInt(i * 16)) & 0xffffn));
  let bestStart = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestLen < 2) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** The canonical text of an address, or null if it does not parse. */
export function canonicalIp(s: string): string | null {
  const ip = parseIp(s);
  return ip === null ? null : formatIp(ip.family, ip.value);
}

/** Parses "addr/prefix" (prefix required, as CloudStack requires); host bits are cleared. */
export function parseCidr(s: string): Cidr | null {
  const slash = s.indexOf('/');
  if (slash < 0) return null;
  const ip = parseIp(s.slice(0, slash));
  const p = s.slice(slash + 1).trim();
  if (ip === null || !/^(0|[1-9][0-9]{0,2})$/.test(p)) return null;
  const prefix = Number(p);
  if (prefix > BITS[ip.family]) return null;
  return { family: ip.family, start: ip.value & mask(ip.family, prefix), prefix };
}

function mask(family: Family, prefix: number): bigint {
  const hostBits = BigInt(BITS[family] - prefix);
  return FULL[family] ^ ((1n << hostBits) - 1n);
}

export function cidrRange(c: Cidr): Range {
  return [c.start, c.start + (1n << BigInt(BITS[c.family] - c.prefix)) - 1n];
}

export function fullRange(family: Family): Range { return [0n, FULL[family]]; }

export function formatCidr(c: Cidr): string { return `${formatIp(c.family, c.start)}/${c.prefix}`; }

/** Sorts and merges overlapping or adjacent ranges. */
export function mergeRanges(ranges: readonly Range[]): Range[] {
  const sorted = [...ranges].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const out: [bigint, bigint][] = [];
  for (const [s, e] of sorted) {
    const last = out[out.length - 1];
    if (last && s <= last[1] + 1n) { if (e > last[1]) last[1] = e; } else out.push([s, e]);
  }
  return out;
}

/** The fewest CIDR blocks that exactly cover [start, end]. */
export function rangeToCidrs(family: Family, [start, end]: Range): Cidr[] {
  const bits = BITS[family];
  const out: Cidr[] = [];
  let s = start;
  while (s <= end) {
    // Largest aligned block starting at s that does not pass end.
    let size = s === 0n ? 1n << BigInt(bits) : s & -s;
    while (size > end - s + 1n) size >>= 1n;
    let prefix = bits;
    for (let sz = size; sz > 1n; sz >>= 1n) prefix--;
    out.push({ family, start: s, prefix });
    s += size;
  }
  return out;
}

/** Canonical CIDR texts for merged ranges (sorted by address). */
export function rangesToCidrTexts(family: Family, ranges: readonly Range[]): string[] {
  return mergeRanges(ranges).flatMap((r) => rangeToCidrs(family, r).map(formatCidr));
}

/** Whether value lies in one of the sorted, merged ranges (binary search). */
export function inRanges(ranges: readonly Range[], value: bigint): boolean {
  let lo = 0, hi = ranges.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const [s, e] = ranges[mid]!;
    if (value < s) hi = mid - 1; else if (value > e) lo = mid + 1; else return true;
  }
  return false;
}

/** Whether every range of `inner` lies inside one range of `outer` (both sorted and merged). */
export function rangesCover(outer: readonly Range[], inner: readonly Range[]): boolean {
  let j = 0;
  for (const [s, e] of inner) {
    while (j < outer.length && outer[j]![1] < s) j++;
    if (j >= outer.length || outer[j]![0] > s || outer[j]![1] < e) return false;
  }
  return true;
}

export function compareBig(a: bigint, b: bigint): number { return a < b ? -1 : a > b ? 1 : 0; }
