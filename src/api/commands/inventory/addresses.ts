// Pure address arithmetic for the inventory: IPv4/IPv6 parsing and formatting, subnet checks,
// "next free address in a range" and MAC validation. No I/O: the callers pass what is in use.
// Parsing and canonical text are the policy compiler's (src/policy/cidr.ts), so the inventory accepts
// and stores exactly the addresses the compiler understands.
import { randomBytes } from 'node:crypto';
import { cidrRange, formatIp, parseCidr, parseIp } from '../../../policy/cidr.js';

// ---------- IPv4 ----------

/** Strict dotted quad (no leading zeros beyond "0", no shorthand, no surrounding space) → 32-bit unsigned number. */
export function parseIpv4(s: string): number | null {
  if (s !== s.trim()) return null;
  const ip = parseIp(s);
  return ip?.family === 4 ? Number(ip.value) : null;
}

export const formatIpv4 = (n: number): string => formatIp(4, BigInt(n));

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

/** "10.0.0.0/8" → subnet; null unless it is IPv4 with a prefix 0..32. */
export function parseCidr4(cidr: string): Subnet4 | null {
  const c = parseCidr(cidr.trim());
  return c?.family === 4 ? subnet4(Number(c.start), c.prefix) : null;
}

/** Whether two subnets share an address. */
export const overlaps4 = (a: Subnet4, b: Subnet4) => a.network <= b.broadcast && b.network <= a.broadcast;

// ---------- IPv6 ----------

/** An IPv6 address (with :: and an optional dotted IPv4 tail, no zone) → 128-bit bigint. */
export function parseIpv6(input: string): bigint | null {
  const ip = parseIp(input);
  return ip?.family === 6 ? ip.value : null;
}

/** RFC 5952 canonical text: lower case, longest run (≥2) of zero groups compressed. */
export const formatIpv6 = (n: bigint): string => formatIp(6, n);

export interface Subnet6 { network: bigint; prefix: number; last: bigint }

/** "2001:db8::/64" → subnet; null unless the address part is valid IPv6 and the prefix is 0..128. */
export function parseCidr6(cidr: string): Subnet6 | null {
  const c = parseCidr(cidr.trim());
  if (c?.family !== 6) return null;
  const [network, last] = cidrRange(c);
  return { network, prefix: c.prefix, last };
}

export const inSubnet6 = (s: Subnet6, ip: bigint) => ip >= s.network && ip <= s.last;

/** Whether two subnets share an address. */
export const overlaps6 = (a: Subnet6, b: Subnet6) => a.network <= b.last && b.network <= a.last;

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

/**
 * Normalise a MAC to lower-case colon form; null if invalid. Accepted: exactly what CloudStack's
 * NetUtils.isValidMac accepts (its RegexValidator, case-insensitive, untrimmed) — six octets of one or
 * two hex digits joined by ONE separator (`:`, `-` or `.`) used throughout — and normalised as its
 * standardizeMacAddress does (octets padded to two digits). So `02:00-00:00:00:01`, twelve bare hex
 * digits (`0a1b2c3d4e5f`: the regex needs a separator) and a value with spaces around it are refused,
 * as CloudStack's DeployVMCmd / AddNicToVMCmd refuse them ("Mac address is not valid: …").
 */
export function normaliseMac(s: string): string | null {
  const m = /^[0-9a-fA-F]{1,2}([-:.])(?:[0-9a-fA-F]{1,2}\1){4}[0-9a-fA-F]{1,2}$/.exec(s);
  if (!m) return null;
  return s.split(m[1]!).map((o) => o.toLowerCase().padStart(2, '0')).join(':');
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
