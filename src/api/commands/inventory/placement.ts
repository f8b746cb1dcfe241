// Where VMs go and which groups they join: host choice (least loaded), security-group resolution
// (CloudStack's ids-xor-names, the owner's lazily created `default`), and VM name rules.
import { inList } from '../../../store/queries/batch.js';
import { paramError, permissionDenied, type CommandContext } from '../../command.js';
import { notFound, serverCapacity, uuid, type Tx } from './common.js';
import type { HostRow } from './views.js';
import { groupByNameCi } from '../../../store/queries/securitygroups.js';
import { equalsCi } from '../../../store/queries/like.js';
import { lockGroups, lockHostPlacements, lockNetworks } from '../../../store/queries/lock.js';
import { MAX_VMS_PER_HOST } from '../../../protocol/limits.js';
import { PLACED_VM_STATES } from '../../../model/types.js';

/** Pure: the least-loaded host, preferring hosts whose agent is Up; ties go to the oldest host. */
export function leastLoaded(hosts: HostRow[], load: Map<number, number>, exclude?: number): HostRow | null {
  const candidates = hosts.filter((h) => h.id !== exclude);
  const up = candidates.filter((h) => h.state === 'Up');
  const pool = up.length ? up : candidates;
  let best: HostRow | null = null;
  for (const h of pool) {
    if (best === null) { best = h; continue; }
    const lh = load.get(h.id) ?? 0, lb = load.get(best.id) ?? 0;
    if (lh < lb || (lh === lb && h.id < best.id)) best = h;
  }
  return best;
}

/** VMs on their hosts (the states whose rules the host's agent holds). */
const placedVms = (db: Tx) => db.selectFrom('vms').where('removed', 'is', null).where('state', 'in', [...PLACED_VM_STATES]);

export async function pickHost(db: Tx, zoneId: number, exclude?: number): Promise<HostRow> {
  const hosts = await db.selectFrom('hosts').selectAll().where('zone_id', '=', zoneId).where('removed', 'is', null).execute();
  const load = new Map<number, number>();
  if (hosts.length) {
    const rows = await placedVms(db).select(['host_id']).select((eb) => eb.fn.countAll<number>().as('n'))
      .where('host_id', 'is not', null).groupBy('host_id').execute();
    for (const r of rows) if (r.host_id !== null) load.set(r.host_id, Number(r.n));
  }
  const h = leastLoaded(hosts.filter((x) => (load.get(x.id) ?? 0) < MAX_VMS_PER_HOST), load, exclude);
  if (!h) {
    throw serverCapacity(hosts.some((x) => x.id !== exclude)
      ? `Unable to create a deployment for the VM: every host in the zone runs ${MAX_VMS_PER_HOST} VMs, the most one host's agent can hold`
      : 'Unable to create a deployment for the VM: no host is available in the zone (add one with addHost)');
  }
  return h;
}

/**
 * The host named by `param`, which must be in the zone and have room for one more VM: an agent holds
 * at most MAX_VMS_PER_HOST (its desired state is refused beyond that, and every VM on the host would
 * stop getting changes), so a full host is a capacity error before anything is written.
 */
export async function hostInZone(ctx: CommandContext, param: string, zoneId: number): Promise<HostRow> {
  const id = ctx.params.str(param)!;
  const h = await ctx.db.selectFrom('hosts').selectAll().where('uuid', '=', id).where('removed', 'is', null).executeTakeFirst();
  if (!h) throw notFound(ctx, param, id);
  if (h.zone_id !== zoneId) throw paramError(`Invalid ${param} ${id}: host ${h.name} is not in the zone of the virtual machine`);
  const placed = await placedVms(ctx.db).select((eb) => eb.fn.countAll<number>().as('n')).where('host_id', '=', h.id).executeTakeFirstOrThrow();
  if (Number(placed.n) >= MAX_VMS_PER_HOST) throw serverCapacity(`Unable to place the VM on host ${h.name} (${param}): it runs ${MAX_VMS_PER_HOST} VMs, the most one host's agent can hold`);
  return h;
}

/**
 * After a VM was written onto `host` (deploy, start, migrate): its placement lock held to the end of the
 * transaction, the host's VMs counted again. The checks above count before the write, so two servers
 * placing on a host one short of the bound would both pass them; the second to get here now sees the
 * first's VM and refuses, and its transaction writes nothing.
 */
export async function confirmHostRoom(db: Tx, host: HostRow): Promise<void> {
  await lockHostPlacements(db, host.id);
  const placed = await placedVms(db).select((eb) => eb.fn.countAll<number>().as('n')).where('host_id', '=', host.id).executeTakeFirstOrThrow();
  if (Number(placed.n) > MAX_VMS_PER_HOST) throw serverCapacity(`Unable to place the VM on host ${host.name}: it runs ${MAX_VMS_PER_HOST} VMs, the most one host's agent can hold`);
}

export async function ensureDefaultGroup(ctx: CommandContext, owner: { accountId: number; domainId: number }): Promise<number> {
  const g = await ctx.db.selectFrom('security_groups').select('id').where('account_id', '=', owner.accountId).where('name', '=', 'default').executeTakeFirst();
  if (g) return Number(g.id);   // bigint since 016: pg returns text
  // Accounts get `default` at creation; this covers accounts made before that (CloudStack does the same at deploy).
  const row = await ctx.db.insertInto('security_groups').values({
    uuid: uuid(), name: 'default', description: 'Default Security Group', account_id: owner.accountId, domain_id: owner.domainId, created: ctx.now,
  }).returning('id').executeTakeFirstOrThrow();
  ctx.changed({ kind: 'group', groupId: Number(row.id) });
  return Number(row.id);
}

/**
 * `securitygroupids` xor `securitygroupnames`, resolved in the VM owner's account. Returns null when neither
 * is given (or both are empty). Groups of another account are refused (531), unknown ones are 431.
 */
/**
 * The groups named by securitygroupids / securitygroupnames, share-locked (store/queries/lock.ts): none
 * of them can be deleted until the VM's membership is committed. Null when neither is given.
 */
export async function resolveGroups(ctx: CommandContext, ownerAccountId: number): Promise<number[] | null> {
  const out = await namedGroups(ctx, ownerAccountId);
  if (out === null) return null;
  const present = await lockGroups(ctx.db, [], out);
  if (out.some((g) => !present.has(g))) throw paramError('A security group given was deleted meanwhile; nothing was changed');
  return out;
}

async function namedGroups(ctx: CommandContext, ownerAccountId: number): Promise<number[] | null> {
  const ids = ctx.params.list('securitygroupids')?.filter((x) => x.trim() !== '');
  const names = ctx.params.list('securitygroupnames')?.filter((x) => x.trim() !== '');
  if (ids?.length && names?.length) throw paramError('securitygroupids parameter is mutually exclusive with securitygroupnames parameter');
  const out: number[] = [];
  if (ids?.length) {
    for (const id of ids) {
      const g = await ctx.db.selectFrom('security_groups').select(['id', 'name', 'account_id']).where('uuid', '=', id.trim()).executeTakeFirst();
      if (!g) throw notFound(ctx, 'securitygroupids', id);
      if (g.account_id !== ownerAccountId) {
        // by id only: the caller may not see another account's group, its name included
        throw permissionDenied(`Unable to use security group ${id.trim()}: it belongs to an account other than the owner of the virtual machine`);
      }
      if (!out.includes(Number(g.id))) out.push(Number(g.id));
    }
    return out;
  }
  if (names?.length) {
    for (const n of names) {
      const g = await groupByNameCi(ctx.db, ownerAccountId, n.trim());
      if (!g) throw paramError(`Unable to find group by name ${n} (securitygroupnames)`);
      if (!out.includes(g.id)) out.push(g.id);
    }
    return out;
  }
  return null;
}

const HOSTNAME = /^[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

export function validateVmName(name: string, param = 'name'): void {
  if (!HOSTNAME.test(name)) {
    throw paramError(
      `Invalid ${param}. Vm name can contain ASCII letters 'a' through 'z', the digits '0' through '9', and the hyphen ('-'), ` +
        'must be between 1 and 63 characters long, and can\'t start or end with "-" and can\'t start with digit',
    );
  }
}

/**
 * CloudStack keeps VM host names unique per network (they are DNS names there). The networks are locked
 * first (store/queries/lock.ts) and stay locked until the caller commits the name, so two servers cannot
 * both find a name free.
 */
export async function checkNameFree(ctx: CommandContext, name: string, networkIds: number[], exceptVmId?: number,
  taken: (network: string) => Error = (network) => paramError(`Invalid name: the vm with hostName ${name} already exists in the network domain of network ${network}`)): Promise<void> {
  if (!networkIds.length) return;
  await lockNetworks(ctx.db, networkIds);
  let q = ctx.db.selectFrom('vms').innerJoin('nics', 'nics.vm_id', 'vms.id').innerJoin('networks', 'networks.id', 'nics.network_id')
    // ignoring case, as CloudStack's collation compares host names (and DNS does)
    .select(['vms.id as id', 'networks.name as network']).where(equalsCi(ctx.db, 'vms.name', name)).where('vms.removed', 'is', null)
    .where('vms.state', '!=', 'Destroyed').where('nics.removed', 'is', null).where(inList(ctx.db, 'nics.network_id', networkIds));
  if (exceptVmId !== undefined) q = q.where('vms.id', '!=', exceptVmId);
  const clash = await q.executeTakeFirst();
  if (clash) throw taken(clash.network);
}
