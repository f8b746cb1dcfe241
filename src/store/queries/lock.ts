// Row locks that serialise concurrent writers (PostgreSQL; SQLite has one writer at a time already).
//
// The protocol, so that a check and the write it guards are never split by another server's call:
// - a security group is locked FOR UPDATE by whoever deletes it or adds rules to it (authorize, its
//   duplicate and limit checks), and FOR SHARE by whoever makes something point at it (a rule that
//   references it, a VM joining it, a tag on it or on its rules); whoever waited for a delete finds the
//   group gone once it has the lock, and fails cleanly;
// - an account is locked FOR UPDATE by whoever deletes it or checks a per-account bound or name
//   (createSecurityGroup, createTags), and FOR SHARE by whoever creates a VM for it;
// - a network is locked FOR UPDATE by whoever allocates an address in it and by whoever checks that a
//   VM name is free in it (deploy, rename, recover, a NIC added: host names are unique per network), so two servers
//   cannot both find a name free and both take it;
// - a host's placements (how many VMs it runs) are serialised by a transaction-scoped advisory lock,
//   not its row (status flushes and lease writes hold host rows): taken last, after the VM row is
//   written, by whoever puts a VM on a host, so the bound is re-counted with every other placement on
//   that host committed;
// - order: account, then VM, then networks in ascending id order, then groups in ascending id order
//   (mixed modes included), then a host's placements, so that two writers wait for each other instead
//   of deadlocking.
import { sql, type Kysely, type Transaction } from 'kysely';
import type { Database } from '../schema.js';
import { isSqlite } from '../dialect.js';

/**
 * Serialises writers of one account (group names, per-account bounds, its deletion) on PostgreSQL.
 * False when the account is gone or removed (by a transaction this one may have waited for).
 */
export function lockAccount(db: Transaction<Database> | Kysely<Database>, accountId: number): Promise<boolean> {
  return lockLiveRow(db, 'accounts', accountId, 'update');
}

/** An account something is created for (a VM): shared with other creators, exclusive of its deletion. */
export function lockAccountShared(db: Transaction<Database> | Kysely<Database>, accountId: number): Promise<boolean> {
  return lockLiveRow(db, 'accounts', accountId, 'share');
}

/**
 * Locks security groups in ascending id order: those in `update` FOR UPDATE, the others FOR SHARE.
 * Returns the ids among them that exist once locked (a group deleted meanwhile is not among them).
 */
export async function lockGroups(db: Transaction<Database> | Kysely<Database>, update: Iterable<number>, share: Iterable<number> = []): Promise<Set<number>> {
  const exclusive = new Set(update);
  const ids = [...new Set([...exclusive, ...share])].sort((a, b) => a - b);
  const present = new Set<number>();
  if (ids.length === 0) return present;
  if (isSqlite(db)) {
    for (let i = 0; i < ids.length; i += 1000) {
      for (const r of await db.selectFrom('security_groups').select('id').where('id', 'in', ids.slice(i, i + 1000)).execute()) present.add(Number(r.id));
    }
    return present;
  }
  for (const id of ids) {
    const q = db.selectFrom('security_groups').select('id').where('id', '=', id);
    if (await (exclusive.has(id) ? q.forUpdate() : q.forShare()).executeTakeFirst()) present.add(id);
  }
  return present;
}

/** One VM's row, FOR UPDATE (writers of its group set): false when it is gone or removed. */
export function lockVm(db: Transaction<Database> | Kysely<Database>, vmId: number): Promise<boolean> {
  return lockLiveRow(db, 'vms', vmId, 'update');
}

/** Locks one row of a table with a `removed` mark (PostgreSQL); true when it exists and is not removed. */
async function lockLiveRow(db: Transaction<Database> | Kysely<Database>, table: 'accounts' | 'vms', id: number, mode: 'update' | 'share'): Promise<boolean> {
  const q = db.selectFrom(table).select(['id', 'removed']).where('id', '=', id);
  const row = await (isSqlite(db) ? q : mode === 'update' ? q.forUpdate() : q.forShare()).executeTakeFirst();
  return !!row && row.removed === null;
}

/**
 * Locks networks FOR UPDATE in ascending id order (PostgreSQL): their address allocators and the VM
 * name check, which must hold until the VM (or its new name) is committed.
 */
export function lockNetworks(db: Transaction<Database> | Kysely<Database>, networkIds: Iterable<number>): Promise<void> {
  return lockInIdOrder(db, 'networks', networkIds);
}

/** Serialises creators of child domains under one parent (the case-insensitive sibling-name check) on PostgreSQL. */
export async function lockDomain(db: Transaction<Database> | Kysely<Database>, domainId: number): Promise<void> {
  if (isSqlite(db)) return;
  await db.selectFrom('domains').select('id').where('id', '=', domainId).forUpdate().execute();
}

/** First key of the advisory locks on a host's placements ('PALH'); the second is the host's id. */
const HOST_PLACEMENTS_LOCK = 0x50414c48;

/**
 * Serialises those who put VMs on one host (PostgreSQL), until the transaction ends: a count of the
 * host's VMs taken after this sees every other placement on it committed or rolled back.
 */
export async function lockHostPlacements(db: Transaction<Database> | Kysely<Database>, hostId: number): Promise<void> {
  if (isSqlite(db)) return;
  await sql`select pg_advisory_xact_lock(${HOST_PLACEMENTS_LOCK}::int4, ${hostId}::int4)`.execute(db);
}

/** Serialises creators of networks in one zone (the subnet overlap check) on PostgreSQL. */
export async function lockZone(db: Transaction<Database> | Kysely<Database>, zoneId: number): Promise<void> {
  if (isSqlite(db)) return;
  await db.selectFrom('zones').select('id').where('id', '=', zoneId).forUpdate().execute();
}

/**
 * Locks these hosts' rows in ascending id order (PostgreSQL), at the start of a transaction that writes
 * several of them in several statements: every such writer then takes host rows in the same order, so
 * two of them (a status flush and a lease release, say) wait for each other instead of deadlocking.
 */
export function lockHosts(db: Transaction<Database>, hostIds: Iterable<number>): Promise<void> {
  return lockInIdOrder(db, 'hosts', hostIds);
}

/** The same for VM rows (status flushes of two servers marking one unheld host's VMs Pending). */
export function lockVms(db: Transaction<Database>, vmIds: Iterable<number>): Promise<void> {
  return lockInIdOrder(db, 'vms', vmIds);
}

async function lockInIdOrder(db: Transaction<Database> | Kysely<Database>, table: 'hosts' | 'vms' | 'networks', rowIds: Iterable<number>): Promise<void> {
  if (isSqlite(db)) return;
  const ids = [...new Set(rowIds)].sort((a, b) => a - b);
  for (let i = 0; i < ids.length; i += 1000) {
    await db.selectFrom(table).select('id').where('id', 'in', ids.slice(i, i + 1000)).orderBy('id').forUpdate().execute();
  }
}
