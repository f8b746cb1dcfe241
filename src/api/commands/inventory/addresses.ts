// Pure address arithmetic for the inventory: IPv4/IPv6 parsing and formatting, subnet checks,
// "next free address in a range" and MAC validation. No I/O: the callers pass what is in use.
import { randomBytes } from 'node:crypto';

// ---------- IPv4 ----------

/** Strict dotted quad (no leading zeros beyond "0", no shorthand) → 32-bit unsigned number. */
export function parseIpv4(s: string): number | null {
  const parts = s.split('.');
  if (parts.length !== 4) return null;
  let n = 0;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return null;
    const v = Number(p);
    if (v > 255) return null;
    n = n * 256 + v;
  }
  return n;
}

export function formatIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** Prefix length of a contiguous netmask (255.255.255.0 → 24), null if not a valid netmask. */
export function netmaskPrefix(mask: string): number | null {
  const n = parseIpv4(mask);
  if (n === null) return null;
  const inv = (~n) >>> 0;
  // contiguous ones ⇔ inverted mask + 1 is a power of two
  if (((inv + 1) & inv) !== 0) return null;
  let prefix = 32;
  for (let x = inv; x > 0; x = x >>> 1) prefix--;
  return prefix;
}

export interface Subnet4 { network: number; prefix: number; broadcast: number }

export function subnet4(gateway: number, prefix: number): Subnet4 {
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  const network = (gateway & mask) >>> 0;
  const broadcast = (network | (~mask >>> 0)) >>> 0;
  return { network, prefix, broadcast };
}

export const inSubnet4 = (s: Subnet4, ip: number) => ip >= s.network && ip <= s.broadcast;

// ---------- IPv6 ----------

/** Parse an IPv6 address (with :: and an optional dotted IPv4 tail) to a 128-bit bigint. */
export function parseIpv6(input: string): bigint | null {
  let s = input.trim().toLowerCase();
  if (s.includes('%') || s.length === 0 || s.length > 45) return null;
  if (s.includes('.')) {
    // dotted IPv4 tail (::ffff:192.0.2.1): rewrite it as two hex groups
    const lastColon = s.lastIndexOf(':');
    const v4 = parseIpv4(s.slice(lastColon + 1));
    if (v4 === null) return null;
    s = `${s.slice(0, lastColon + 1)}${(v4 >>> 16).toString(16)}:${(v4 & 0xffff).toString(16)}`;
  }
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const toGroups = (h: string): number[] | null => {
    if (h === '') return [];
    const out: number[] = [];
    for (const g of h.split(':')) {
      if (!/^[0-9a-f]{1,4}$/.test(g)) return null;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const head = toGroups(halves[0]);
  const rest = halves.length === 2 ? toGroups(halves[1]) : [];
  if (head === null || rest === null) return null;
  const total = head.length + rest.length;
  let groups: number[];
  if (halves.length === 2) {
    if (total > 7) return null;
    groups = [...head, ...new Array(8 - total).fill(0), ...rest];
  } else {
    if (total !== 8) return null;
    groups = head;
  }
  let n = 0n;
  for (const g of groups) n = (n << 16n) | BigInt(g);
  return n;
}

/** RFC 5952 canonical text: lower case, longest run (≥2) of zero groups compressed. */
export function formatIpv6(n: bigint): string {
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((n >> BigInt(i * 16)) & 0xffffn));
  let bestStart = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

export interface Subnet6 { network: bigint; prefix: number; last: bigint }

/** "2001:db8::/64" → subnet; null unless the address part is valid and the prefix is 0..128. */
export function parseCidr6(cidr: string): Subnet6 | null {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(cidr.trim());
  if (!m) return null;
  const addr = parseIpv6(m[1]);
  const prefix = Number(m[2]);
  if (addr === null || prefix > 128) return null;
  const hostBits = BigInt(128 - prefix);
  const mask = ((1n << 128n) - 1n) ^ ((1n << hostBits) - 1n);
  const network = addr & mask;
  return { network, prefix, last: network | ((1n << hostBits) - 1n) };
}

export const inSubnet6 = (s: Subnet6, ip: bigint) => ip >= s.network && ip <= s.last;

// ---------- allocation ----------

/**
 * First address in [start, end] not in `used`. At most used.size+1 candidates are examined, so the cost
 * is bounded by what is allocated, not by the size of the range (which for IPv6 can be 2^64).
 */
export function firstFree<T extends number | bigint>(start: T, end: T, used: Set<T>): T | null {
  const one = (typeof start === 'bigint' ? 1n : 1) as T;
  let cur = start;
  for (let i = 0; i <= used.size; i++) {
    if (cur > end) return null;
    if (!used.has(cur)) return cur;
    cur = ((cur as any) + (one as any)) as T;
  }
  return cur <= end && !used.has(cur) ? cur : null;
}

// ---------- MAC ----------

/** Normalise a MAC (colon, dash or dot-less hex) to lower-case colon form; null if invalid. */
export function normaliseMac(s: string): string | null {
  const hex = s.trim().toLowerCase().replace(/[:-]/g, '');
  if (!/^[0-9a-f]{12}$/.test(hex)) return null;
  if (s.includes(':') || s.includes('-')) {
    if (!/^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}$/.test(s.trim())) return null;
  }
  return hex.match(/../g)!.join(':');
}

/** A guest MAC must be unicast and not all zeros (the host-side tap rewrites the first octet to fe). */
export function macProblem(mac: string): string | null {
  const first = parseInt(mac.slice(0, 2), 16);
  if (first & 1) return 'it is a multicast address';
  if (mac === '00:00:00:00:00:00') return 'it is all zeros';
  if (mac.startsWith('fe:')) return 'the first octet fe is reserved for host-side tap devices';
  return null;
}

/** Random locally administered unicast MAC 02:xx:xx:xx:xx:xx. */
export function randomMac(): string {
  const b = randomBytes(5);
  return ['02', ...[...b].map((x) => x.toString(16).padStart(2, '0'))].join(':');
}
