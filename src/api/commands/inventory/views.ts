// CloudStack response objects for the inventory (zone, network, host, virtualmachine, nic), built in
// batches: one query per related table for a whole page of rows, never one per row.
import type { Selectable } from 'kysely';
import type { HostTable, ZoneTable } from '../../../store/schema.js';
import type { CommandContext } from '../../command.js';
import { displayDomainPath } from '../../../store/queries/accounts.js';
import { leaseHolders } from '../../../store/queries/cluster.js';
import { csDate } from '../common.js';
import { netmaskPrefix, parseIpv4, formatIpv4, subnet4 } from './addresses.js';
import { isRootAdmin, type Tx } from './common.js';
import { inList } from '../../../store/queries/batch.js';

export { vmRow, nicRow, networkRow, type VmRow, type NicRow, type NetworkRow } from './rows.js';
import { vmRow, nicRow, networkRow, type VmRow, type NicRow, type NetworkRow } from './rows.js';
export type HostRow = Selectable<HostTable>;
export type ZoneRow = Selectable<ZoneTable>;

const uniq = <T>(xs: T[]) => [...new Set(xs)];

async function byId<T extends { id: number }>(rows: Promise<T[]>): Promise<Map<number, T>> {
  return new Map((await rows).map((r) => [r.id, r]));
}

async function names(db: Tx, accountIds: number[], domainIds: number[]) {
  const accounts = accountIds.length ? await byId(db.selectFrom('accounts').select(['id', 'uuid', 'name']).where(inList(db, 'id', uniq(accountIds))).execute()) : new Map();
  const domains = domainIds.length ? await byId(db.selectFrom('domains').select(['id', 'uuid', 'name', 'path']).where(inList(db, 'id', uniq(domainIds))).execute()) : new Map();
  return { accounts, domains };
}

async function zonesById(db: Tx, ids: number[]) {
  return ids.length ? byId(db.selectFrom('zones').selectAll().where(inList(db, 'id', uniq(ids))).execute()) : new Map<number, ZoneRow>();
}

export function zoneView(z: ZoneRow): Record<string, unknown> {
  return {
    id: z.uuid, name: z.name, description: z.description, networktype: 'Advanced', securitygroupsenabled: true,
    allocationstate: 'Enabled', localstorageenabled: false, dhcpprovider: 'VirtualRouter', tags: [],
  };
}

export function networkCidr(n: NetworkRow): string | null {
  if (!n.gateway || !n.netmask) return null;
  const prefix = netmaskPrefix(n.netmask);
  const gw = parseIpv4(n.gateway);
  if (prefix === null || gw === null) return null;
  return `${formatIpv4(subnet4(gw, prefix).network)}/${prefix}`;
}

export async function networkViews(db: Tx, rows: NetworkRow[]): Promise<Record<string, unknown>[]> {
  const { accounts, domains } = await names(db, rows.map((r) => r.account_id), rows.map((r) => r.domain_id));
  const zones = await zonesById(db, rows.map((r) => r.zone_id));
  return rows.map((n) => {
    const z = zones.get(n.zone_id), d = domains.get(n.domain_id), a = accounts.get(n.account_id);
    const cidr = networkCidr(n);
    return {
      id: n.uuid, name: n.name, displaytext: n.display_text,
      zoneid: z?.uuid, zonename: z?.name,
      type: 'Shared', traffictype: 'Guest', guestiptype: 'Shared', acltype: 'Domain', state: 'Setup',
      broadcastdomaintype: n.vlan ? 'Vlan' : 'Native', broadcasturi: n.vlan ? `vlan://${n.vlan}` : 'vlan://untagged',
      vlan: n.vlan ?? undefined,
      gateway: n.gateway ?? undefined, netmask: n.netmask ?? undefined, cidr: cidr ?? undefined,
      startip: n.start_ip ?? undefined, endip: n.end_ip ?? undefined,
      ip6gateway: n.ip6_gateway ?? undefined, ip6cidr: n.ip6_cidr ?? undefined,
      startipv6: n.start_ipv6 ?? undefined, endipv6: n.end_ipv6 ?? undefined,
      domainid: d?.uuid, domain: d?.name, domainpath: d ? displayDomainPath(d.path) : undefined, account: a?.name,
      issystem: false, isdefault: false, canusefordeploy: true, specifyipranges: true, ispersistent: false,
      restartrequired: false, displaynetwork: true, subdomainaccess: true, created: csDate(n.created), tags: [],
    };
  });
}

const parseJson = (s: string | null): unknown => {
  if (s === null) return undefined;
  try { return JSON.parse(s); } catch { return s; }
};

export async function hostViews(db: Tx, rows: HostRow[]): Promise<Record<string, unknown>[]> {
  const zones = await zonesById(db, rows.map((r) => r.zone_id));
  const counts = new Map<number, number>();
  const failed = new Map<number, number>();
  if (rows.length) {
    const c = await db.selectFrom('vms').select(['host_id', 'sync_state']).select((eb) => eb.fn.countAll<number>().as('n'))
      .where(inList(db, 'host_id', rows.map((r) => r.id))).where('removed', 'is', null).groupBy(['host_id', 'sync_state']).execute();
    for (const r of c) {
      if (r.host_id === null) continue;
      counts.set(r.host_id, (counts.get(r.host_id) ?? 0) + Number(r.n));
      if (r.sync_state === 'Failed') failed.set(r.host_id, (failed.get(r.host_id) ?? 0) + Number(r.n));
    }
  }
  const holders = rows.length ? await leaseHolders(db, rows.map((r) => r.id)) : new Map();
  return rows.map((h) => {
    const z = zones.get(h.zone_id);
    const holder = holders.get(h.id);
    // Feed positions: bigint on PostgreSQL, which returns them as text (compared as text, "999" > "1000").
    const acked = Number(h.acked_revision), desired = Number(h.desired_revision);
    return {
      id: h.uuid, name: h.name, state: h.state, type: 'Routing', hypervisor: 'KVM', resourcestate: 'Enabled',
      zoneid: z?.uuid, zonename: z?.name, created: csDate(h.created),
      lastpinged: csDate(h.last_contact),
      disconnected: h.state !== 'Up' ? csDate(h.last_contact) : undefined,
      // Palisade: what the agent enforces versus what the server wants, and what it had to repair.
      securitygroupsyncrevision: acked,
      desiredrevision: desired,
      securitygroupsynced: acked >= desired,
      preflight: parseJson(h.preflight) ?? [],
      driftrepairs: h.repair_count,
      lastrepairs: parseJson(h.repairs) ?? [],
      virtualmachinecount: counts.get(h.id) ?? 0,
      // VMs whose rules the agent acked as failed: an ack moves the revision on (securitygroupsynced)
      // whether or not it worked, so this is what says the host does not enforce what is desired.
      failedvirtualmachinecount: failed.get(h.id) ?? 0,
      // Several servers (DESIGN.md §6): the management server holding the host's agent session (its
      // id as in its data dir's server-id file, and its --name); absent while no server holds it.
      managementserverid: holder?.serverId,
      managementservername: holder?.serverName ?? undefined,
      // The dataplane backend the host's agent reported in its hello (iptables, nftables, null).
      dataplane: h.dataplane ?? undefined,
    };
  });
}

/** NIC responses for the given NICs, keyed by NIC id (with secondary IPs and network details). */
export async function nicViews(db: Tx, nics: NicRow[], vmUuids: Map<number, string>): Promise<Map<number, Record<string, unknown>>> {
  const out = new Map<number, Record<string, unknown>>();
  if (!nics.length) return out;
  const nets = await byId(db.selectFrom('networks').selectAll().where(inList(db, 'id', uniq(nics.map((n) => n.network_id)))).execute().then((rows) => rows.map(networkRow)));
  const secs = await db.selectFrom('nic_secondary_ips').selectAll().where(inList(db, 'nic_id', nics.map((n) => n.id))).orderBy('id').execute();
  const secByNic = new Map<number, typeof secs>();
  for (const s of secs) secByNic.set(Number(s.nic_id), [...(secByNic.get(Number(s.nic_id)) ?? []), s]);
  for (const n of nics) {
    const net = nets.get(n.network_id);
    out.set(n.id, {
      id: n.uuid, networkid: net?.uuid, networkname: net?.name,
      ipaddress: n.ipv4 ?? undefined, ip6address: n.ipv6 ?? undefined,
      netmask: n.ipv4 ? net?.netmask ?? undefined : undefined, gateway: n.ipv4 ? net?.gateway ?? undefined : undefined,
      ip6gateway: n.ipv6 ? net?.ip6_gateway ?? undefined : undefined, ip6cidr: n.ipv6 ? net?.ip6_cidr ?? undefined : undefined,
      macaddress: n.mac, isdefault: n.is_default === 1, deviceid: String(n.device_id),
      traffictype: 'Guest', type: 'Shared',
      broadcasturi: net?.vlan ? `vlan://${net.vlan}` : undefined, isolationuri: net?.vlan ? `vlan://${net.vlan}` : undefined,
      devicename: n.device_name ?? undefined,
      virtualmachineid: vmUuids.get(n.vm_id),
      secondaryip: (secByNic.get(n.id) ?? []).map((s) => ({ id: s.uuid, ipaddress: s.address })),
    });
  }
  return out;
}

/** CloudStack `virtualmachine` objects; admin-only fields (instancename, host) only for admins. */
export async function vmViews(ctx: CommandContext, rows: VmRow[]): Promise<Record<string, unknown>[]> {
  if (!rows.length) return [];
  const db = ctx.db;
  const vmIds = rows.map((r) => r.id);
  const { accounts, domains } = await names(db, rows.map((r) => r.account_id), rows.map((r) => r.domain_id));
  const zones = await zonesById(db, rows.map((r) => r.zone_id));
  const hostIds = uniq(rows.flatMap((r) => (r.host_id !== null ? [r.host_id] : [])));
  const hosts = hostIds.length ? await byId(db.selectFrom('hosts').select(['id', 'uuid', 'name', 'state']).where(inList(db, 'id', hostIds)).execute()) : new Map();
  const nics = (await db.selectFrom('nics').selectAll().where(inList(db, 'vm_id', vmIds)).where('removed', 'is', null).orderBy('device_id').execute()).map(nicRow);
  const nicView = await nicViews(db, nics, new Map(rows.map((r) => [r.id, r.uuid])));
  const maps = (await db.selectFrom('security_group_vm_map').innerJoin('security_groups', 'security_groups.id', 'security_group_vm_map.group_id')
    .select(['security_group_vm_map.vm_id as vm_id', 'security_groups.id as id', 'security_groups.uuid as uuid', 'security_groups.name as name',
      'security_groups.description as description', 'security_groups.account_id as account_id', 'security_groups.domain_id as domain_id'])
    .where(inList(db, 'security_group_vm_map.vm_id', vmIds)).orderBy('security_groups.id').execute()).map((m) => ({ ...m, vm_id: Number(m.vm_id), id: Number(m.id) }));
  const sgNames = await names(db, maps.map((m) => m.account_id), maps.map((m) => m.domain_id));
  const admin = isRootAdmin(ctx); // CloudStack's full view (instance name, host) is for root admins
  return rows.map((vm) => {
    const z = zones.get(vm.zone_id), d = domains.get(vm.domain_id), a = accounts.get(vm.account_id);
    const h = vm.host_id !== null ? hosts.get(vm.host_id) : undefined;
    const v: Record<string, unknown> = {
      id: vm.uuid, name: vm.name, displayname: vm.display_name,
      account: a?.name, domainid: d?.uuid, domain: d?.name, domainpath: d ? displayDomainPath(d.path) : undefined,
      created: csDate(vm.created), state: vm.state, haenable: false,
      zoneid: z?.uuid, zonename: z?.name,
      templateid: vm.template_id ?? undefined, serviceofferingid: vm.service_offering_id ?? undefined,
      hypervisor: 'KVM',
      nic: nics.filter((n) => n.vm_id === vm.id).map((n) => nicView.get(n.id)),
      securitygroup: maps.filter((m) => m.vm_id === vm.id).map((m) => ({
        id: m.uuid, name: m.name, description: m.description,
        account: sgNames.accounts.get(m.account_id)?.name, domainid: sgNames.domains.get(m.domain_id)?.uuid,
        domain: sgNames.domains.get(m.domain_id)?.name,
      })),
      affinitygroup: [], tags: [],
      // Palisade: whether the VM's rules are enforced on its host (set by the control plane).
      securitygroupsyncstate: vm.sync_state,
      securitygroupsyncerror: vm.sync_error ?? undefined,
    };
    // CloudStack 4.18's hostcontrolstate (ControlState.getControlState of the VM's host): Offline when
    // the host lost its agent, Enabled otherwise (Palisade's hosts have no maintenance or disabled
    // state). Palisade's Alert is an agent that is connected and reported a preflight finding, not a
    // lost one as CloudStack's is, so it is Enabled. Shown to every caller, unlike the host's id and
    // name: a tenant whose VM shows Synced learns from it that no agent is there to apply a change.
    if (h) v.hostcontrolstate = h.state === 'Up' || h.state === 'Alert' ? 'Enabled' : 'Offline';
    if (admin) {
      v.instancename = vm.instance_name;
      if (h) { v.hostid = h.uuid; v.hostname = h.name; }
    }
    return v;
  });
}

export async function vmView(ctx: CommandContext, vmId: number): Promise<Record<string, unknown>> {
  const row = await ctx.db.selectFrom('vms').selectAll().where('id', '=', vmId).executeTakeFirstOrThrow();
  return (await vmViews(ctx, [vmRow(row)]))[0];
}
