// Row locks that serialise concurrent writers on one security group (CloudStack locks the group for
// authorize/revoke so duplicate checks hold). SQLite has one writer at a time already.
import type { Kysely, Transaction } from 'kysely';
import type { Database } from '../schema.js';
import { isSqlite } from '../dialect.js';

export async function lockGroup(db: Transaction<Database> | Kysely<Database>, groupId: number): Promise<void> {
  if (isSqlite(db)) return;
  await db.selectFrom('security_groups').select('id').where('id', '=', groupId).forUpdate().execute();
}

/** Serialises writers of one account's group names (the case-insensitive uniqueness check) on PostgreSQL. */
export async function lockAccount(db: Transaction<Database> | Kysely<Database>, accountId: number): Promise<void> {
  if (isSqlite(db)) return;
  await db.selectFrom('accounts').select('id').where('id', '=', accountId).forUpdate().execute();
}

/** Serialises creators of child domains under one parent (the case-insensitive sibling-name check) on PostgreSQL. */
export async function lockDomain(db: Transaction<Database> | Kysely<Database>, domainId: number): Promise<void> {
  if (isSqlite(db)) return;
  await db.selectFrom('domains').select('id').where('id', '=', domainId).forUpdate().execute();
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

async function lockInIdOrder(db: Transaction<Database>, table: 'hosts' | 'vms', rowIds: Iterable<number>): Promise<void> {
  if (isSqlite(db)) return;
  const ids = [...new Set(rowIds)].sort((a, b) => a - b);
  for (let i = 0; i < ids.length; i += 1000) {
    await db.selectFrom(table).select('id').where('id', 'in', ids.slice(i, i + 1000)).orderBy('id').forUpdate().execute();
  }
}
