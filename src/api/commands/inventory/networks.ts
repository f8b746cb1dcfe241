// Shared guest networks: createNetwork, listNetworks, deleteNetwork. A network belongs to a domain and
// is usable by every account of that domain and its subdomains (CloudStack's Domain ACL with subdomain access).
import { inList } from '../../../store/queries/batch.js';
import { paramError, resourceInUse, type CommandContext, type CommandDef } from '../../command.js';
import { netmaskPrefix, overlaps4, overlaps6, parseCidr4, parseCidr6, parseIpv4, parseIpv6, subnet4, inSubnet4, formatIpv6 } from './addresses.js';
import type { Tx } from './common.js';
import { lockZone } from '../../../store/queries/lock.js';
import {
  domainAncestors, domainSubtree, getNetwork, isRootAdmin, notFound, matchesKeyword, pageOf, paging, pagingParams, resolveZone, scopeParams, uuid,
} from './common.js';
import { networkRow, networkViews, type NetworkRow } from './views.js';
import { permissionDenied } from '../../command.js';

interface Ranges {
  gateway: string | null; netmask: string | null; startIp: string | null; endIp: string | null;
  ip6Gateway: string | null; ip6Cidr: string | null; startIpv6: string | null; endIpv6: string | null; vlan: string | null;
}

/**
 * Address blocks no guest network may use: a VM's own addresses pass its anti-spoofing and its ARP / ND /
 * DAD exemptions, so a tenant owning the link-local metadata address, a router's fe80:: address, a
 * multicast group or the unspecified address could impersonate them to its neighbours.
 */
const RESERVED4 = ([['0.0.0.0/8', '"this network"'], ['127.0.0.0/8', 'loopback'], ['169.254.0.0/16', 'link-local'], ['224.0.0.0/4', 'multicast'], ['240.0.0.0/4', 'reserved and broadcast']] as const)
  .map(([text, what]) => ({ text, what, block: parseCidr4(text)! }));
const RESERVED6 = ([['::/8', 'unspecified, loopback and IPv4-mapped'], ['fe80::/10', 'link-local'], ['ff00::/8', 'multicast']] as const)
  .map(([text, what]) => ({ text, what, block: parseCidr6(text)! }));

/** Validates the address parameters of createNetwork (CloudStack's checks and messages where it has them). Pure. */
export function validateRanges(p: Record<string, string | undefined>): Ranges {
  const { gateway, netmask, startip, ip6gateway, ip6cidr, startipv6 } = p;
  let { endip, endipv6 } = p;
  const ipv4 = gateway !== undefined || netmask !== undefined || startip !== undefined || endip !== undefined;
  const ipv6 = ip6gateway !== undefined || ip6cidr !== undefined || startipv6 !== undefined || endipv6 !== undefined;
  if (!ipv4 && !ipv6) throw paramError('Either IPv4 or IPv6 start and end address are mandatory (startip or startipv6/ip6cidr)');
  const out: Ranges = {
    gateway: null, netmask: null, startIp: null, endIp: null, ip6Gateway: null, ip6Cidr: null, startIpv6: null, endIpv6: null, vlan: null,
  };
  if (ipv4) {
    if (startip === undefined) throw paramError('startip is required when an IPv4 gateway/netmask is given');
    if (parseIpv4(startip) === null) throw paramError('Invalid format for the startIp parameter');
    if (endip === undefined) endip = startip;
    else if (parseIpv4(endip) === null) throw paramError('Invalid format for the endIp parameter');
    if (gateway === undefined || netmask === undefined) throw paramError('gateway and netmask should be defined when startIP/endIP are passed in');
    const gw = parseIpv4(gateway);
    if (gw === null) throw paramError('Invalid gateway');
    const prefix = netmaskPrefix(netmask);
    if (prefix === null) throw paramError('Invalid netmask');
    if (prefix > 30) throw paramError(`Invalid netmask ${netmask}: the subnet is too small for a guest network`);
    const sub = subnet4(gw, prefix);
    if (gw === sub.network || gw === sub.broadcast) throw paramError('Invalid gateway IP provided. Either the IP is broadcast or network IP.');
    const s = parseIpv4(startip)!, e = parseIpv4(endip)!;
    if (!inSubnet4(sub, s) || s === sub.network || s === sub.broadcast) throw paramError(`Invalid startip ${startip}: it is not a host address of the subnet of gateway ${gateway}/${netmask}`);
    if (!inSubnet4(sub, e) || e === sub.network || e === sub.broadcast) throw paramError(`Invalid endip ${endip}: it is not a host address of the subnet of gateway ${gateway}/${netmask}`);
    if (s > e) throw paramError(`Invalid IP range: startip ${startip} is greater than endip ${endip}`);
    for (const { text, what, block } of RESERVED4) {
      if (overlaps4(sub, block)) throw paramError(`Invalid gateway/netmask ${gateway}/${netmask}: the subnet overlaps ${text} (${what}), which a guest network may not use`);
    }
    if (gw >= s && gw <= e) throw paramError('The gateway ip should not be the part of the ip range being added (startip-endip).');
    Object.assign(out, { gateway, netmask, startIp: startip, endIp: endip });
  }
  if (ipv6) {
    if (ip6cidr === undefined || ip6gateway === undefined) throw paramError('ip6Gateway and ip6Cidr should be defined for an IPv6 network (ip6gateway, ip6cidr)');
    const cidr = parseCidr6(ip6cidr);
    if (cidr === null) throw paramError('Invalid ip6cidr');
    if (cidr.prefix > 120) throw paramError(`Invalid ip6cidr ${ip6cidr}: prefix too long`);
    for (const { text, what, block } of RESERVED6) {
      if (overlaps6(cidr, block)) throw paramError(`Invalid ip6cidr ${ip6cidr}: it overlaps ${text} (${what}), which a guest network may not use`);
    }
    const gw = parseIpv6(ip6gateway);
    if (gw === null) throw paramError('Invalid ip6Gateway (ip6gateway)');
    if (gw < cidr.network || gw > cidr.last) throw paramError('ip6Gateway is not in ip6cidr indicated network! (ip6gateway)');
    let s: bigint | null = null, e: bigint | null = null;
    if (startipv6 !== undefined) {
      s = parseIpv6(startipv6);
      if (s === null) throw paramError('Invalid format for the startIPv6 parameter');
      if (endipv6 === undefined) endipv6 = startipv6;
    }
    if (endipv6 !== undefined) {
      if (s === null) throw paramError('startipv6 is required when endipv6 is given');
      e = parseIpv6(endipv6);
      if (e === null) throw paramError('Invalid format for the endIPv6 parameter');
    }
    if (s !== null && e !== null) {
      if (s < cidr.network || s > cidr.last) throw paramError('startIPv6 is not in ip6cidr indicated network! (startipv6)');
      if (e < cidr.network || e > cidr.last) throw paramError('endIPv6 is not in ip6cidr indicated network! (endipv6)');
      // as startip/endip may not be the IPv4 network address: the subnet-router anycast is no host's
      if (s === cidr.network) throw paramError(`Invalid startipv6 ${startipv6}: it is the subnet-router anycast address of ${ip6cidr}, not a host address`);
      if (e === cidr.network) throw paramError(`Invalid endipv6 ${endipv6}: it is the subnet-router anycast address of ${ip6cidr}, not a host address`);
      if (s > e) throw paramError(`Invalid IPv6 range: startipv6 ${startipv6} is greater than endipv6 ${endipv6}`);
      if (gw >= s && gw <= e) throw paramError('The IPv6 gateway should not be part of the range startipv6-endipv6');
    }
    Object.assign(out, {
      ip6Gateway: formatIpv6(gw), ip6Cidr: `${formatIpv6(cidr.network)}/${cidr.prefix}`,
      startIpv6: s !== null ? formatIpv6(s) : null, endIpv6: e !== null ? formatIpv6(e) : null,
    });
  }
  const vlan = p.vlan;
  if (vlan !== undefined) {
    const m = /^(?:vlan:\/\/)?(\d{1,4}|untagged)$/i.exec(vlan.trim());
    const n = m && m[1].toLowerCase() !== 'untagged' ? Number(m[1]) : null;
    if (!m || (n !== null && (n < 1 || n > 4094))) throw paramError(`Invalid vlan ${vlan}: expected a VLAN id 1-4094 or untagged`);
    out.vlan = m[1].toLowerCase() === 'untagged' ? null : String(n);
  }
  return out;
}

/**
 * Networks of one zone on one VLAN (untagged included) share one L2 segment, so their subnets must not
 * overlap: two NICs with one address would each pass anti-spoofing with it, and a tenant of one network
 * could take another domain's VM address or the gateway's. As CloudStack, only the root admin may
 * bypass this (bypassvlanoverlapcheck). Creations in one zone are serialised by the zone's row lock
 * (store/queries/lock.ts), so two servers cannot both pass the check.
 */
async function checkNoOverlap(db: Tx, zone: { id: number; name: string }, r: Ranges): Promise<void> {
  await lockZone(db, zone.id);
  let q = db.selectFrom('networks').select(['gateway', 'netmask', 'ip6_cidr']).where('zone_id', '=', zone.id).where('removed', 'is', null);
  q = r.vlan === null ? q.where('vlan', 'is', null) : q.where('vlan', '=', r.vlan);
  const others = await q.execute();
  const tag = r.vlan === null ? 'untagged' : `vlan://${r.vlan}`;
  if (r.gateway !== null && r.netmask !== null) {
    const mine = subnet4(parseIpv4(r.gateway)!, netmaskPrefix(r.netmask)!);
    for (const o of others) {
      const gw = o.gateway ? parseIpv4(o.gateway) : null;
      const prefix = o.netmask ? netmaskPrefix(o.netmask) : null;
      if (gw === null || prefix === null) continue;
      if (overlaps4(mine, subnet4(gw, prefix))) {
        throw paramError(`The IP range with tag: ${tag} in zone ${zone.name} has overlapped with the subnet. Please specify a different gateway/netmask.`);
      }
    }
  }
  if (r.ip6Cidr !== null) {
    const mine = parseCidr6(r.ip6Cidr)!;
    for (const o of others) {
      const theirs = o.ip6_cidr ? parseCidr6(o.ip6_cidr) : null;
      if (theirs && overlaps6(mine, theirs)) {
        throw paramError(`The IPv6 range with tag: ${tag} in zone ${zone.name} has overlapped with the subnet. Please specify a different ip6gateway/ip6cidr.`);
      }
    }
  }
}

/** Networks the owner (account in a domain) may attach NICs to: its domain's and its ancestors'. */
export async function checkNetworkUsable(ctx: CommandContext, net: NetworkRow, ownerDomainId: number): Promise<void> {
  const ancestors = await domainAncestors(ctx.db, ownerDomainId);
  if (!ancestors.includes(net.domain_id)) throw permissionDenied(`Unable to use network with id= ${net.uuid}, permission denied`);
}

const createNetwork: CommandDef = {
  name: 'createNetwork',
  description: 'Creates a shared guest network with an IPv4 and/or IPv6 range.',
  roles: ['admin', 'domainadmin'],
  responseObject: 'network',
  params: [
    { name: 'name', type: 'string', required: true, description: 'the name of the network' },
    { name: 'displaytext', type: 'string', description: 'the display text of the network' },
    { name: 'zoneid', type: 'uuid', description: 'the zone ID for the network (default: the first zone)' },
    { name: 'networkofferingid', type: 'uuid', description: 'the network offering ID (accepted, not used)' },
    { name: 'gateway', type: 'string', description: 'the gateway of the network' },
    { name: 'netmask', type: 'string', description: 'the netmask of the network' },
    { name: 'startip', type: 'string', description: 'the beginning IPv4 address in the network IP range' },
    { name: 'endip', type: 'string', description: 'the ending IPv4 address in the network IP range (default: startip)' },
    { name: 'ip6gateway', type: 'string', description: 'the gateway of the IPv6 network' },
    { name: 'ip6cidr', type: 'string', description: 'the CIDR of the IPv6 network, e.g. 2001:db8::/64' },
    { name: 'startipv6', type: 'string', description: 'the beginning IPv6 address in the IPv6 network range' },
    { name: 'endipv6', type: 'string', description: 'the ending IPv6 address in the IPv6 network range' },
    { name: 'vlan', type: 'string', description: 'the ID or VID of the network (root admin only)' },
    { name: 'bypassvlanoverlapcheck', type: 'boolean', description: 'when true, the subnet may overlap another network\'s on the same VLAN in the zone (root admin only)' },
    { name: 'account', type: 'string', description: 'account that will own the network (with domainid)' },
    { name: 'domainid', type: 'uuid', description: 'domain of the network' },
    { name: 'acltype', type: 'string', description: 'Access control type; only Domain is supported' },
  ],
  async handle(ctx) {
    const p = ctx.params;
    const name = p.str('name')!.trim();
    if (name === '') throw paramError('Invalid name: the network name cannot be empty');
    const acl = p.str('acltype');
    if (acl !== undefined && !/^domain$/i.test(acl)) throw paramError(`Invalid acltype ${acl}: Palisade shared networks are Domain-wide`);
    if ((p.has('vlan') || p.bool('bypassvlanoverlapcheck')) && !isRootAdmin(ctx)) {
      throw paramError(`Only ROOT admin is allowed to specify vlanId or bypass vlan overlap check (${p.has('vlan') ? 'vlan' : 'bypassvlanoverlapcheck'})`);
    }
    const get = (k: string) => { const v = p.str(k); return v === undefined || v.trim() === '' ? undefined : v.trim(); };
    const r = validateRanges({
      gateway: get('gateway'), netmask: get('netmask'), startip: get('startip'), endip: get('endip'),
      ip6gateway: get('ip6gateway'), ip6cidr: get('ip6cidr'), startipv6: get('startipv6'), endipv6: get('endipv6'), vlan: get('vlan'),
    });
    const zone = await resolveZone(ctx);
    let owner: { accountId: number; domainId: number };
    if (p.has('domainid') && !p.has('account')) {
      // domainid alone: a network for that whole domain (and its subdomains), recorded as created by the caller
      const d = await ctx.db.selectFrom('domains').select(['id']).where('uuid', '=', p.str('domainid')!).where('removed', 'is', null).executeTakeFirst();
      if (!d) throw notFound(ctx, 'domainid', p.str('domainid')!);
      await ctx.access.checkAccess(-1, d.id);
      owner = { accountId: ctx.caller.accountId, domainId: d.id };
    } else {
      owner = await ctx.access.resolveOwner(p);
    }
    if (!p.bool('bypassvlanoverlapcheck')) await checkNoOverlap(ctx.db, zone, r);
    const row = await ctx.db.insertInto('networks').values({
      uuid: uuid(), name, display_text: p.str('displaytext') ?? name, zone_id: zone.id, account_id: owner.accountId, domain_id: owner.domainId,
      gateway: r.gateway, netmask: r.netmask, start_ip: r.startIp, end_ip: r.endIp,
      ip6_gateway: r.ip6Gateway, ip6_cidr: r.ip6Cidr, start_ipv6: r.startIpv6, end_ipv6: r.endIpv6, vlan: r.vlan,
      created: ctx.now, removed: null,
    }).returningAll().executeTakeFirstOrThrow();
    ctx.event({ type: 'NETWORK.CREATE', description: `creating network: ${name}`, resourceType: 'Network', resourceUuid: row.uuid, resourceName: name, accountId: owner.accountId, domainId: owner.domainId });
    return { object: 'network', value: (await networkViews(ctx.db, [networkRow(row)]))[0] };
  },
};

const listNetworks: CommandDef = {
  name: 'listNetworks',
  description: 'Lists the shared networks the caller may see or use.',
  responseObject: 'network',
  params: [
    { name: 'id', type: 'uuid', description: 'list networks by ID' },
    { name: 'name', type: 'string', description: 'list networks by name' },
    { name: 'zoneid', type: 'uuid', description: 'the zone ID of the network' },
    { name: 'type', type: 'string', description: 'the type of the network: only Shared exists' },
    { name: 'canusefordeploy', type: 'boolean', description: 'list networks available for VM deployment' },
    ...scopeParams, ...pagingParams,
  ],
  async handle(ctx) {
    const p = ctx.params;
    const pg = paging(ctx);
    let q = ctx.db.selectFrom('networks').selectAll().where('removed', 'is', null);
    if (p.has('id')) q = q.where('uuid', '=', p.str('id')!);
    if (p.has('name')) q = q.where('name', '=', p.str('name')!);
    if (p.has('zoneid')) {
      const z = await ctx.db.selectFrom('zones').select('id').where('uuid', '=', p.str('zoneid')!).executeTakeFirst();
      if (!z) return { list: 'network', items: [] };
      q = q.where('zone_id', '=', z.id);
    }
    const type = p.str('type');
    if (type !== undefined && !/^shared$/i.test(type)) return { list: 'network', items: [] };
    if (p.str('projectid') === '-1') return { list: 'network', items: [] }; // project networks: none
    if (!isRootAdmin(ctx)) {
      // usable (own and ancestor domains) plus, for domain admins, everything in their subtree
      const visible = new Set(await domainAncestors(ctx.db, ctx.caller.domainId));
      if (ctx.caller.role === 'domainadmin') for (const d of await domainSubtree(ctx.db, ctx.caller.domainId)) visible.add(d);
      q = q.where(inList(ctx.db, 'domain_id', [...visible]));
    }
    if (p.has('domainid') && ctx.caller.role !== 'user') {
      const d = await ctx.db.selectFrom('domains').select('id').where('uuid', '=', p.str('domainid')!).executeTakeFirst();
      if (!d) return { list: 'network', items: [] };
      const ids = p.bool('isrecursive') ? await domainSubtree(ctx.db, d.id) : [d.id];
      q = q.where(inList(ctx.db, 'domain_id', ids));
    }
    const kw = p.str('keyword');
    const rows = (await q.orderBy('id').execute()).map(networkRow).filter((n) => matchesKeyword(kw, n.name, n.display_text));
    return { list: 'network', items: await networkViews(ctx.db, pageOf(rows, pg)), count: rows.length };
  },
};

const deleteNetwork: CommandDef = {
  name: 'deleteNetwork',
  description: 'Deletes a network; refused while NICs of virtual machines use it.',
  async: true,
  eventType: 'NETWORK.DELETE',
  instanceType: 'Network',
  describe: (p) => `Deleting network: ${p.str('id')}`,
  roles: ['admin', 'domainadmin'],
  params: [
    { name: 'id', type: 'uuid', required: true, description: 'the ID of the network' },
    { name: 'forced', type: 'boolean', description: 'accepted for compatibility; NICs in use still prevent deletion' },
  ],
  async handle(ctx) {
    const net = await getNetwork(ctx, 'id');
    await ctx.access.checkAccess(net.account_id, net.domain_id);
    const used = await ctx.db.selectFrom('nics').select((eb) => eb.fn.countAll<number>().as('n'))
      .where('network_id', '=', net.id).where('removed', 'is', null).executeTakeFirstOrThrow();
    if (Number(used.n) > 0) {
      throw resourceInUse(`Unable to delete network ${net.name} (${net.uuid}): it is in use by ${used.n} NIC(s) of virtual machines that are not expunged`);
    }
    await ctx.db.deleteFrom('networks').where('id', '=', net.id).execute();
    return { success: true };
  },
};

export const networkCommands: CommandDef[] = [createNetwork, listNetworks, deleteNetwork];
