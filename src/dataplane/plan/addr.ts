// Address helpers shared by the plan and both backends: IPv6 link-local from a MAC (EUI-64), libvirt tap
// MAC convention, family tests, canonical IPv6 text.
import { isIPv4, isIPv6 } from 'node:net';

/** fe80::/64 + EUI-64 of the MAC (u/l bit flipped, ff:fe inserted), compressed like the kernel prints it. */
export function linkLocalFromMac(mac: string): string {
  const b = mac.toLowerCase().split(':').map((x) => parseInt(x, 16));
  if (b.length !== 6 || b.some((x) => Number.isNaN(x))) throw new Error(`bad MAC ${mac}`);
  const e = [b[0] ^ 0x02, b[1], b[2], 0xff, 0xfe, b[3], b[4], b[5]];
  const groups = [0, 2, 4, 6].map((i) => ((e[i] << 8) | e[i + 1]).toString(16));
  return canonV6(`fe80::${groups.join(":")}`);
}

/** libvirt's host-side tap MAC: the guest MAC with its first octet replaced by fe. */
export function tapMac(guestMac: string): string { return `fe${guestMac.toLowerCase().slice(2)}`; }

export function isV4(a: string): boolean { return isIPv4(a.split('/')[0]); }
export function isV6(a: string): boolean { return isIPv6(a.split('/')[0]); }

/** Canonical (compressed, lower-case) IPv6 text, as ipset prints it. */
export function canonV6(a: string): string {
  const u = new URL(`http://[${a}]/`);
  return u.hostname.slice(1, -1);
}
