// CIDR syntax checks (CloudStack's NetUtils.isValidIp4Cidr / isValidIp6Cidr: a prefix is required).
import net from 'node:net';

export function isValidIp4Cidr(s: string): boolean {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(s);
  if (!m) return false;
  if (m.slice(1, 5).some((o) => Number(o) > 255)) return false;
  return Number(m[5]) <= 32;
}

export function isValidIp6Cidr(s: string): boolean {
  const i = s.lastIndexOf('/');
  if (i < 0) return false;
  const addr = s.slice(0, i);
  const len = s.slice(i + 1);
  if (!/^\d{1,3}$/.test(len) || Number(len) > 128) return false;
  return net.isIPv6(addr) && !addr.includes('%');
}

export const isValidCidr = (s: string) => isValidIp4Cidr(s) || isValidIp6Cidr(s);
