// Address and MAC allocation inside the command's transaction: what is in use comes from the store,
// the choice is made by the pure helpers in addresses.ts.
import { paramError } from '../../command.js';
import {
  firstFree, formatIpv4, formatIpv6, macProblem, normaliseMac, parseCidr6, parseIpv4, parseIpv6, randomMac,
} from './addresses.js';
import { addressCapacity, type Tx } from './common.js';
import type { NetworkRow } from './views.js';

/**
 * Serialise allocators of one network: a no-op write to its row takes the row lock in PostgreSQL (several
 * servers may allocate at once) until the transaction ends; SQLite has a single writer anyway.
 */
async function lockNetwork(db: Tx, networkId: number): Promise<void> {
  await db.updateTable('networks').set((eb) => ({ id: eb.ref('id') })).where('id', '=', networkId).execute();
}

async function usedAddresses(db: Tx, networkId: number) {
  await lockNetwork(db, networkId);
  const nics = await db.selectFrom('nics').select(['ipv4', 'ipv6']).where('network_id', '=', networkId).where('removed', 'is', null).execute();
  const secs = await db.selectFrom('nic_secondary_ips').select(['address', 'family']).where('network_id', '=', networkId).execute();
  const v4 = new Set<number>(), v6 = new Set<bigint>();
  for (const n of nics) {
    if (n.ipv4) { const x = parseIpv4(n.ipv4); if (x !== null) v4.add(x); }
    if (n.ipv6) { const x = parseIpv6(n.ipv6); if (x !== null) v6.add(x); }
  }
  for (const s of secs) {
    if (s.family === 4) { const x = parseIpv4(s.address); if (x !== null) v4.add(x); }
    else { const x = parseIpv6(s.address); if (x !== null) v6.add(x); }
  }
  return { v4, v6 };
}

/**
 * An IPv4 address of the network for a NIC or secondary IP: the requested one if valid, in the network's
 * start–end range and free; else the lowest free address of the range. 533 when the range is exhausted.
 */
export async function allocateIpv4(db: Tx, net: NetworkRow, requested: string | undefined, param: string): Promise<string> {
  if (!net.start_ip || !net.end_ip) {
    throw paramError(`Network ${net.name} has no IPv4 range; ${param} cannot be assigned`);
  }
  const start = parseIpv4(net.start_ip)!, end = parseIpv4(net.end_ip)!;
  const { v4 } = await usedAddresses(db, net.id);
  const gw = net.gateway ? parseIpv4(net.gateway) : null;
  if (gw !== null) v4.add(gw);
  if (requested !== undefined) {
    const ip = parseIpv4(requested);
    if (ip === null) throw paramError(`Invalid format for IP address parameter ${param}: ${requested}`);
    if (ip < start || ip > end) {
      throw paramError(`Invalid ${param} ${requested}: it is not in the IP range ${net.start_ip}-${net.end_ip} of network ${net.name}`);
    }
    if (v4.has(ip)) throw paramError(`Invalid ${param} ${requested}: the IP address is already in use in network ${net.name}`);
    return formatIpv4(ip);
  }
  const ip = firstFree(start, end, v4);
  if (ip === null) throw addressCapacity(`Insufficient address capacity: no free IPv4 address left in network ${net.name} (${net.start_ip}-${net.end_ip})`);
  return formatIpv4(ip);
}

/** IPv6 likewise: requested (inside ip6cidr, and inside startipv6–endipv6 when the network has a range), else allocated. */
export async function allocateIpv6(db: Tx, net: NetworkRow, requested: string | undefined, param: string): Promise<string | null> {
  if (!net.ip6_cidr) {
    if (requested !== undefined) throw paramError(`Network ${net.name} has no IPv6 subnet; ${param} cannot be assigned`);
    return null;
  }
  const cidr = parseCidr6(net.ip6_cidr)!;
  const start = net.start_ipv6 ? parseIpv6(net.start_ipv6)! : null;
  const end = net.end_ipv6 ? parseIpv6(net.end_ipv6)! : null;
  const { v6 } = await usedAddresses(db, net.id);
  const gw = net.ip6_gateway ? parseIpv6(net.ip6_gateway) : null;
  if (gw !== null) v6.add(gw);
  // The all-zero host part is the subnet-router anycast address (RFC 4291 2.6.1): the routers' address,
  // never a host's — IPv6's counterpart of the IPv4 network address, which no range may hold either.
  v6.add(cidr.network);
  if (requested !== undefined) {
    const ip = parseIpv6(requested);
    if (ip === null) throw paramError(`Invalid format for IPv6 address parameter ${param}: ${requested}`);
    if (ip < cidr.network || ip > cidr.last) throw paramError(`Invalid ${param} ${requested}: it is not in the IPv6 subnet ${net.ip6_cidr} of network ${net.name}`);
    if (ip === cidr.network) throw paramError(`Invalid ${param} ${requested}: it is the subnet-router anycast address of ${net.ip6_cidr} (network ${net.name}), not a host address`);
    if (start !== null && end !== null && (ip < start || ip > end)) {
      throw paramError(`Invalid ${param} ${requested}: it is not in the IPv6 range ${net.start_ipv6}-${net.end_ipv6} of network ${net.name}`);
    }
    if (v6.has(ip)) throw paramError(`Invalid ${param} ${requested}: the IPv6 address is already in use in network ${net.name}`);
    return formatIpv6(ip);
  }
  // Without an explicit range, hand out addresses from the subnet's ::1 upwards (the gateway is skipped).
  const ip = firstFree(start ?? cidr.network + 1n, end ?? cidr.last, v6);
  if (ip === null) throw addressCapacity(`Insufficient address capacity: no free IPv6 address left in network ${net.name}`);
  return formatIpv6(ip);
}

/** The requested MAC (valid, unicast, not used by any NIC) or a fresh random 02:… one. MACs are unique cloud-wide: agents find a VM's tap by it. */
export async function allocateMac(db: Tx, requested: string | undefined, param: string): Promise<string> {
  const inUse = async (mac: string) =>
    (await db.selectFrom('nics').select('id').where('mac', '=', mac).where('removed', 'is', null).executeTakeFirst()) !== undefined;
  if (requested !== undefined) {
    const mac = normaliseMac(requested);
    if (mac === null) throw paramError(`Mac address is not valid: ${requested} (parameter ${param})`);
    const problem = macProblem(mac);
    if (problem) throw paramError(`Invalid ${param} ${requested}: ${problem}`);
    if (await inUse(mac)) throw paramError(`Invalid ${param} ${requested}: the MAC address is already in use`);
    return mac;
  }
  for (let i = 0; i < 32; i++) {
    const mac = randomMac();
    if (!(await inUse(mac))) return mac;
  }
  throw addressCapacity('Unable to generate a unique MAC address');
}
