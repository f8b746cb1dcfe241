// Address sets: a referenced group as the addresses of its Running members, per family.
// Every NIC of a member counts, primary and secondary addresses (IPv4 as /32, IPv6 as /128 — the
// set holds plain addresses; CloudStack opened /64 before PR #14037 and only NIC 0's IPv4 in v1).
import type { Family, Nic, Vm } from '../model/types.js';
import type { AddressSet } from './ir.js';
import type { CloudState } from './state.js';
import { compareBig, formatIp, parseIp } from './cidr.js';

/** Address-set id for a referenced group and family, e.g. "sg12v4". */
export function addressSetId(groupId: number, family: Family): string { return `sg${groupId}v${family}`; }

/** Inverse of addressSetId (null for other strings). */
export function parseAddressSetId(id: string): { groupId: number; family: Family } | null {
  const m = /^sg([0-9]+)v([46])$/.exec(id);
  return m ? { groupId: Number(m[1]), family: Number(m[2]) as Family } : null;
}

/** Whether a VM's addresses count as a group member's (CloudStack: Running members only). */
export function isActiveMember(vm: Vm | undefined): boolean { return vm?.state === 'Running'; }

/** One NIC's addresses of a family, canonical, primary first then secondaries in address order. */
export function nicAddresses(nic: Nic, family: Family): string[] {
  const primary = family === 4 ? nic.ipv4 : nic.ipv6;
  const out: string[] = [];
  const seen = new Set<string>();
  const add = (s: string) => { if (!seen.has(s)) { seen.add(s); out.push(s); } };
  if (primary) {
    const ip = parseIp(primary);
    if (ip && ip.family === family) add(formatIp(family, ip.value));
  }
  const secs = (nic.secondaryIps ?? []).map(parseIp).filter((ip) => ip !== null && ip.family === family);
  secs.sort((a, b) => compareBig(a!.value, b!.value));
  for (const ip of secs) add(formatIp(family, ip!.value));
  return out;
}

/** All addresses of a VM for a family (every NIC), sorted by value, unique. */
export function vmAddressValues(nics: readonly Nic[] | undefined, family: Family): bigint[] {
  const vals = new Set<bigint>();
  for (const nic of nics ?? []) {
    for (const s of [family === 4 ? nic.ipv4 : nic.ipv6, ...(nic.secondaryIps ?? [])]) {
      if (!s) continue;
      const ip = parseIp(s);
      if (ip && ip.family === family) vals.add(ip.value);
    }
  }
  return [...vals].sort(compareBig);
}

/** A referenced group's set: the addresses of its Running members for that family (sorted by value). */
export function compileAddressSet(state: CloudState, groupId: number, family: Family): AddressSet {
  const vals = new Set<bigint>();
  for (const vmId of state.membersByGroup.get(groupId) ?? []) {
    if (!isActiveMember(state.vms.get(vmId))) continue;
    for (const v of vmAddressValues(state.nicsByVm.get(vmId), family)) vals.add(v);
  }
  const members = [...vals].sort(compareBig).map((v) => formatIp(family, v));
  return { id: addressSetId(groupId, family), family, members };
}
