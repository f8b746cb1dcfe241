// Pure naming and addressing helpers of the lab.
import { randomBytes } from 'node:crypto';

/** A per-run prefix: 'pl' + 4 hex characters. Everything a lab creates starts with `<prefix>-`. */
export function randomPrefix(): string {
  return 'pl' + randomBytes(2).toString('hex');
}

const PREFIX_RE = /^[a-z][a-z0-9]{1,9}$/;
export function checkPrefix(prefix: string): string {
  if (!PREFIX_RE.test(prefix)) throw new Error(`invalid lab prefix ${JSON.stringify(prefix)}: 2-10 lower-case letters/digits`);
  return prefix;
}

const NAME_RE = /^[a-z0-9][a-z0-9_]{0,19}$/i;
export function checkName(kind: string, name: string): string {
  if (!NAME_RE.test(name)) throw new Error(`invalid ${kind} name ${JSON.stringify(name)}: 1-20 letters, digits, '_'`);
  return name;
}

export const nsNames = {
  fabric: (p: string) => `${p}-fabric`,
  outside: (p: string) => `${p}-outside`,
  host: (p: string, name: string) => `${p}-h-${name}`,
  vm: (p: string, name: string) => `${p}-v-${name}`,
};

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
export function normMac(mac: string): string {
  const m = mac.toLowerCase();
  if (!MAC_RE.test(m)) throw new Error(`invalid MAC ${JSON.stringify(mac)}`);
  return m;
}

/** libvirt's convention: the host-side tap carries the guest MAC with its first octet set to fe. */
export function tapMac(guestMac: string): string {
  return 'fe' + normMac(guestMac).slice(2);
}

/** A locally administered unicast MAC (52:54:00 is QEMU's OUI, as CloudStack guests have). */
export function randomGuestMac(): string {
  const b = randomBytes(3);
  return ['52', '54', '00', ...[...b].map((x) => x.toString(16).padStart(2, '0'))].join(':');
}

/** 'a.b.c.d/nn' → { addr, len }; validates the address loosely (the kernel validates fully). */
export function splitCidr(cidr: string, defLen: number): { addr: string; len: number } {
  const [addr, l] = cidr.split('/');
  const len = l === undefined ? defLen : Number(l);
  if (!addr || !Number.isInteger(len)) throw new Error(`invalid address ${JSON.stringify(cidr)}`);
  return { addr, len };
}

/** The network of an IPv4 CIDR, as 'a.b.c.d/nn'. */
export function v4Network(cidr: string): string {
  const { addr, len } = splitCidr(cidr, 32);
  const o = addr.split('.').map(Number);
  if (o.length !== 4 || o.some((x) => !(x >= 0 && x <= 255))) throw new Error(`invalid IPv4 ${JSON.stringify(cidr)}`);
  const n = ((o[0] << 24) | (o[1] << 16) | (o[2] << 8) | o[3]) >>> 0;
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  const net = (n & mask) >>> 0;
  return `${net >>> 24}.${(net >>> 16) & 255}.${(net >>> 8) & 255}.${net & 255}/${len}`;
}

/** Expand an IPv6 address into 8 groups of 16 bits. */
export function v6Groups(addr: string): number[] {
  const [head, tail] = addr.includes('::') ? addr.split('::') : [addr, undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined ? (tail ? tail.split(':') : []) : [];
  const fill = tail !== undefined ? 8 - h.length - t.length : 0;
  const groups = [...h, ...Array(fill).fill('0'), ...t].map((g) => parseInt(g, 16));
  if (groups.length !== 8 || groups.some((g) => !(g >= 0 && g <= 0xffff))) throw new Error(`invalid IPv6 ${JSON.stringify(addr)}`);
  return groups;
}

/** The network of an IPv6 CIDR with a prefix length that is a multiple of 16 or any length, as 'x:…::/nn'. */
export function v6Network(cidr: string): string {
  const { addr, len } = splitCidr(cidr, 128);
  const g = v6Groups(addr);
  const out = g.map((x, i) => {
    const bits = Math.max(0, Math.min(16, len - i * 16));
    const mask = bits === 0 ? 0 : (0xffff << (16 - bits)) & 0xffff;
    return x & mask;
  });
  return `${out.map((x) => x.toString(16)).join(':')}/${len}`;
}

/** The EUI-64 link-local address a Linux guest derives from its MAC. */
export function linkLocalFromMac(mac: string): string {
  const b = normMac(mac).split(':').map((x) => parseInt(x, 16));
  b[0] ^= 0x02;
  const eui = [b[0], b[1], b[2], 0xff, 0xfe, b[3], b[4], b[5]];
  const groups: string[] = [];
  for (let i = 0; i < 8; i += 2) groups.push(((eui[i] << 8) | eui[i + 1]).toString(16));
  return `fe80::${groups.join(':')}`;
}
