// The drop log (security_group_drops), kept bounded on every insert:
// - per VM: the newest DROP_LOG_LIMITS.perVm rows (by arrival), none older than maxAgeMs;
// - per host, drops no VM owns (unknown ports): the newest perHostUnowned rows;
// - per host, all its rows: the newest perHost, so one host (whatever its number of VMs) holds at most
//   a tenth of the table and cannot push the other hosts' records out;
// - overall: the newest `total` rows, counted (not by id distance: ids advance with every insert, so a
//   host whose own rows were pruned as fast as it sent them once emptied every other host's log).
// Listing never shows rows older than maxAgeMs, however late a prune ran.
import type { Expression, Kysely, SqlBool, Transaction } from 'kysely';
import type { Database, SecurityGroupDropTable } from '../schema.js';
import type { Insertable } from 'kysely';
import { containsCi } from './like.js';
import { inList } from './batch.js';

type Q = Transaction<Database> | Kysely<Database>;

export const DROP_LOG_LIMITS = { perVm: 1000, perHostUnowned: 1000, perHost: 100_000, maxAgeMs: 24 * 3600 * 1000, total: 1_000_000 };
export type DropLogLimits = typeof DROP_LOG_LIMITS;

export type DropRow = Insertable<SecurityGroupDropTable>;

const chunk = <T>(xs: T[], n: number): T[][] => { const o: T[][] = []; for (let i = 0; i < xs.length; i += n) o.push(xs.slice(i, i + n)); return o; };

/** Inserts rows and enforces every bound. Run inside one transaction with the caller's checks. */
export async function insertDrops(db: Q, rows: DropRow[], now: Date, limits: DropLogLimits = DROP_LOG_LIMITS): Promise<void> {
  if (!rows.length) return;
  // 14 columns per row: stay under SQLite's and PostgreSQL's bound-parameter limits.
  for (const part of chunk(rows, 200)) await db.insertInto('security_group_drops').values(part).execute();
  await pruneDrops(db, now, limits, {
    vms: [...new Set(rows.map((r) => r.vm_id).filter((v): v is number => v !== null && v !== undefined))],
    hosts: [...new Set(rows.filter((r) => r.vm_id === null || r.vm_id === undefined).map((r) => r.host_id).filter((h): h is number => h !== null && h !== undefined))],
    senders: [...new Set(rows.map((r) => r.host_id).filter((h): h is number => h !== null && h !== undefined))],
  });
}

/** Enforces the bounds: age and total always; the per-VM / per-host counts for the ones named. */
export async function pruneDrops(db: Q, now: Date, limits: DropLogLimits = DROP_LOG_LIMITS, touched: { vms: number[]; hosts: number[]; senders?: number[] } = { vms: [], hosts: [] }): Promise<void> {
  const oldest = new Date(now.getTime() - limits.maxAgeMs).toISOString();
  await db.deleteFrom('security_group_drops').where('created', '<', oldest).execute();
  for (const vmId of touched.vms) {
    await db.deleteFrom('security_group_drops').where('vm_id', '=', vmId)
      .where('id', '<=', (eb) => eb.selectFrom('security_group_drops as d').select('d.id').where('d.vm_id', '=', vmId)
        .orderBy('d.id', 'desc').limit(1).offset(limits.perVm))
      .execute();
  }
  for (const hostId of touched.hosts) {
    await db.deleteFrom('security_group_drops').where('vm_id', 'is', null).where('host_id', '=', hostId)
      .where('id', '<=', (eb) => eb.selectFrom('security_group_drops as d').select('d.id').where('d.vm_id', 'is', null).where('d.host_id', '=', hostId)
        .orderBy('d.id', 'desc').limit(1).offset(limits.perHostUnowned))
      .execute();
  }
  for (const hostId of touched.senders ?? []) {
    await db.deleteFrom('security_group_drops').where('host_id', '=', hostId)
      .where('id', '<=', (eb) => eb.selectFrom('security_group_drops as d').select('d.id').where('d.host_id', '=', hostId)
        .orderBy('d.id', 'desc').limit(1).offset(limits.perHost))
      .execute();
  }
  await db.deleteFrom('security_group_drops')
    .where('id', '<=', (eb) => eb.selectFrom('security_group_drops as d').select('d.id').orderBy('d.id', 'desc').limit(1).offset(limits.total))
    .execute();
}

export interface DropFilter {
  /** Visible VMs: by account ids and/or domain ids (null = no restriction); `unowned` also shows drops no VM owns. */
  accountIds: number[] | null;
  domainIds: number[] | null;
  unowned: boolean;
  vmId?: number;
  reason?: string;
  direction?: string;
  since?: string;
  until?: string;
  keyword?: string;
}

function filtered(db: Q, f: DropFilter, now: Date, maxAgeMs: number) {
  const oldest = new Date(now.getTime() - maxAgeMs).toISOString();
  let q = db.selectFrom('security_group_drops as d').leftJoin('vms as v', 'v.id', 'd.vm_id').where('d.created', '>=', oldest);
  if (f.vmId !== undefined) q = q.where('d.vm_id', '=', f.vmId);
  if (f.accountIds || f.domainIds || !f.unowned) {
    const accounts = f.accountIds, domains = f.domainIds;
    q = q.where((eb) => {
      const owned: Expression<SqlBool>[] = [eb('d.vm_id', 'is not', null)];
      if (accounts) owned.push(inList(db, 'v.account_id', accounts));
      if (domains) owned.push(inList(db, 'v.domain_id', domains));
      return f.unowned ? eb.or([eb.and(owned), eb('d.vm_id', 'is', null)]) : eb.and(owned);
    });
  }
  if (f.reason !== undefined) q = q.where('d.reason', '=', f.reason);
  if (f.direction !== undefined) q = q.where('d.direction', '=', f.direction);
  if (f.since !== undefined) q = q.where('d.created', '>=', f.since);
  if (f.until !== undefined) q = q.where('d.created', '<=', f.until);
  if (f.keyword !== undefined) {
    const kw = f.keyword;
    q = q.where((eb) => eb.or([containsCi('d.reason', kw), containsCi('d.protocol', kw), containsCi('d.src_address', kw), containsCi('d.dst_address', kw), containsCi('v.name', kw)]));
  }
  return q;
}

export async function countDrops(db: Q, f: DropFilter, now: Date, maxAgeMs = DROP_LOG_LIMITS.maxAgeMs): Promise<number> {
  const r = await filtered(db, f, now, maxAgeMs).select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
  return Number(r.n);
}

/** A page of drops, newest first, with the VM's uuid and name. */
export async function listDrops(db: Q, f: DropFilter, now: Date, page: { limit: number | null; offset: number }, maxAgeMs = DROP_LOG_LIMITS.maxAgeMs) {
  let q = filtered(db, f, now, maxAgeMs).leftJoin('hosts as h', 'h.id', 'd.host_id').selectAll('d')
    .select(['v.uuid as vm_uuid', 'v.name as vm_name', 'v.display_name as vm_display_name', 'h.uuid as host_uuid', 'h.name as host_name'])
    .orderBy('d.created', 'desc').orderBy('d.id', 'desc');
  if (page.limit !== null) q = q.limit(page.limit).offset(page.offset);
  else if (page.offset) q = q.limit(Number.MAX_SAFE_INTEGER).offset(page.offset);
  return q.execute();
}
