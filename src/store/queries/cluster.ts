// Several servers on one database (DESIGN.md §6, migration 005): server heartbeat rows, host leases
// (which server holds a host's agent session), and the sweeps any server runs for the others: hosts
// whose lease expired become Disconnected, jobs of servers whose heartbeat expired fail with 530.
// Every time here is the DATABASE's clock in ms since the epoch, so servers with skewed clocks agree.
import { sql, type Kysely, type RawBuilder, type Transaction } from 'kysely';
import type { Database } from '../schema.js';
import { isSqlite } from '../dialect.js';
import { lockHosts } from './lock.js';

type Q = Kysely<Database> | Transaction<Database>;
const CHUNK = 400;

function chunks<T>(xs: T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += CHUNK) out.push(xs.slice(i, i + CHUNK));
  return out;
}

/** The database's current time in ms since the epoch. */
export function dbNowMs(db: Q): RawBuilder<number> {
  return isSqlite(db)
    ? sql<number>`cast((julianday('now') - 2440587.5) * 86400000.0 as integer)`
    : sql<number>`(extract(epoch from clock_timestamp()) * 1000)::bigint`;
}

/** Larger of two integer expressions (PostgreSQL greatest(), SQLite's two-argument max()). */
export function greatest(db: Q, a: RawBuilder<unknown> | ReturnType<typeof sql.ref>, b: unknown): RawBuilder<number> {
  return isSqlite(db) ? sql<number>`max(${a}, ${b})` : sql<number>`greatest(${a}, ${b})`;
}

// ---- servers -------------------------------------------------------------------------------------

export interface ServerBeat { id: string; name: string; startedAt: string; feedPosition: number; ttlMs: number; incarnation: string }

/** Insert or refresh this server's heartbeat row. */
export async function heartbeat(db: Q, s: ServerBeat): Promise<void> {
  const now = dbNowMs(db);
  await db.insertInto('servers').values({
    id: s.id, name: s.name, started_at: s.startedAt, heartbeat_at: now as never, expires_at: sql`${now} + ${s.ttlMs}` as never, feed_position: s.feedPosition,
    incarnation: s.incarnation,
  }).onConflict((oc) => oc.column('id').doUpdateSet({
    name: s.name, started_at: s.startedAt, heartbeat_at: now as never, expires_at: sql`${now} + ${s.ttlMs}` as never, feed_position: s.feedPosition,
    incarnation: s.incarnation,
  })).execute();
}

/**
 * Renew this incarnation's heartbeat row. 'gone': the row is not there (the others took this server for
 * dead and removed it) or only an expired row of another incarnation is; 'taken': a live row of another
 * incarnation holds this server's id (another process with the same id: a shared or copied data dir).
 */
export async function renewHeartbeat(db: Q, s: ServerBeat): Promise<'renewed' | 'gone' | 'taken'> {
  const now = dbNowMs(db);
  const r = await db.updateTable('servers').set({
    name: s.name, heartbeat_at: now as never, expires_at: sql`${now} + ${s.ttlMs}` as never, feed_position: s.feedPosition,
  }).where('id', '=', s.id).where('incarnation', '=', s.incarnation).executeTakeFirst();
  if (Number(r.numUpdatedRows ?? 0) === 1) return 'renewed';
  const other = await db.selectFrom('servers').select('id').where('id', '=', s.id).where('expires_at', '>=', dbNowMs(db) as never).executeTakeFirst();
  return other ? 'taken' : 'gone';
}

/**
 * Is `incarnation` still this server's live registration? Inside a write transaction (PostgreSQL): the
 * row is share-locked until commit, so a burial (which deletes it) waits for the write, and a write
 * after a burial sees no row.
 */
export async function stillRegistered(trx: Q, id: string, incarnation: string): Promise<boolean> {
  const q = trx.selectFrom('servers').select('id').where('id', '=', id).where('incarnation', '=', incarnation);
  // (SQLite has one writer at a time and no row locks)
  const row = await (isSqlite(trx) ? q : q.forShare()).executeTakeFirst();
  return row !== undefined;
}

export async function removeServer(db: Q, id: string): Promise<void> {
  await db.deleteFrom('servers').where('id', '=', id).execute();
}

export interface ServerRow { id: string; name: string; heartbeatAt: number; expiresAt: number; feedPosition: number }

export async function listServers(db: Q): Promise<ServerRow[]> {
  const rows = await db.selectFrom('servers').select(['id', 'name', 'heartbeat_at', 'expires_at', 'feed_position']).execute();
  return rows.map((r) => ({ id: r.id, name: r.name, heartbeatAt: Number(r.heartbeat_at), expiresAt: Number(r.expires_at), feedPosition: Number(r.feed_position) }));
}

/** Servers whose heartbeat expired. */
export async function deadServers(db: Q): Promise<ServerRow[]> {
  const rows = await db.selectFrom('servers').select(['id', 'name', 'heartbeat_at', 'expires_at', 'feed_position'])
    .where('expires_at', '<', dbNowMs(db) as never).execute();
  return rows.map((r) => ({ id: r.id, name: r.name, heartbeatAt: Number(r.heartbeat_at), expiresAt: Number(r.expires_at), feedPosition: Number(r.feed_position) }));
}

/**
 * A dead server's unfinished jobs fail (530, `result` as given), its leases go, its row goes; in one
 * transaction, and only while it is still dead (a server that came back in between keeps everything).
 * Returns the number of jobs failed, or null when the server is alive again.
 */
export async function buryServer(db: Kysely<Database>, id: string, result: string, completed: string): Promise<number | null> {
  return db.transaction().execute(async (trx) => {
    const gone = await trx.deleteFrom('servers').where('id', '=', id).where('expires_at', '<', dbNowMs(trx) as never).executeTakeFirst();
    if (Number(gone.numDeletedRows ?? 0) === 0) return null;
    const jobs = await trx.updateTable('async_jobs').set({ status: 2, result_code: 530, result, completed })
      .where('server_id', '=', id).where('status', '=', 0).executeTakeFirst();
    await trx.deleteFrom('host_leases').where('server_id', '=', id).execute();
    return Number(jobs.numUpdatedRows ?? 0);
  });
}

/** Lowest feed position among live servers (null: none). */
export async function minLivePosition(db: Q): Promise<number | null> {
  const r = await db.selectFrom('servers').select(sql<number | null>`min(feed_position)`.as('p')).where('expires_at', '>=', dbNowMs(db) as never).executeTakeFirst();
  return r?.p === null || r?.p === undefined ? null : Number(r.p);
}

// ---- host leases ---------------------------------------------------------------------------------

/**
 * Take the leases of these hosts for `serverId`. A host is taken when nobody holds it, this server
 * already does, or its lease expired; with `takeover` (an agent's hello) also when it is held for the
 * same agent (the same hostname: the agent moved and its old server has not noticed yet). Without it
 * (a server reclaiming what a sweep freed) a lease another server holds stays there. Returns the hosts
 * now held.
 */
export async function acquireLeases(db: Q, serverId: string, items: { hostId: number; hostname: string }[], ttlMs: number, takeover = true): Promise<Set<number>> {
  const got = new Set<number>();
  const now = dbNowMs(db);
  // In host order: the rows of one INSERT … ON CONFLICT are locked in VALUES order (see leaseOrder).
  for (const part of chunks([...items].sort((a, b) => a.hostId - b.hostId))) {
    const rows = await db.insertInto('host_leases')
      .values(part.map((i) => ({ host_id: i.hostId, server_id: serverId, hostname: i.hostname, acquired_at: now as never, expires_at: sql`${now} + ${ttlMs}` as never })))
      .onConflict((oc) => oc.column('host_id').doUpdateSet({
        server_id: (eb) => eb.ref('excluded.server_id'),
        hostname: (eb) => eb.ref('excluded.hostname'),
        acquired_at: (eb) => eb.ref('excluded.acquired_at'),
        expires_at: (eb) => eb.ref('excluded.expires_at'),
      }).where((eb) => eb.or([
        eb('host_leases.server_id', '=', eb.ref('excluded.server_id')),
        eb('host_leases.expires_at', '<', now as never),
        ...(takeover ? [eb('host_leases.hostname', '=', eb.ref('excluded.hostname'))] : []),
      ])))
      .returning('host_id').execute();
    for (const r of rows) got.add(Number(r.host_id));
  }
  return got;
}

/** Who holds these hosts now (live leases only): host → { serverId, hostname }. */
export async function leaseHolders(db: Q, hostIds: number[]): Promise<Map<number, { serverId: string; serverName: string | null; hostname: string }>> {
  const out = new Map<number, { serverId: string; serverName: string | null; hostname: string }>();
  for (const part of chunks(hostIds)) {
    const rows = await db.selectFrom('host_leases as l').leftJoin('servers as s', 's.id', 'l.server_id')
      .select(['l.host_id', 'l.server_id', 'l.hostname', 's.name']).where('l.host_id', 'in', part).where('l.expires_at', '>=', dbNowMs(db) as never).execute();
    for (const r of rows) out.set(Number(r.host_id), { serverId: r.server_id, serverName: r.name ?? null, hostname: r.hostname });
  }
  return out;
}

/** Every live lease: host → the server holding it (each server reads this to know which hosts others hold). */
export async function liveLeases(db: Q): Promise<Map<number, string>> {
  const rows = await db.selectFrom('host_leases').select(['host_id', 'server_id']).where('expires_at', '>=', dbNowMs(db) as never).execute();
  return new Map(rows.map((r) => [Number(r.host_id), r.server_id]));
}

/** The revision each of these hosts' agents last acknowledged, as stored by whoever held it. */
export async function ackedRevisions(db: Q, hostIds: number[]): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  for (const part of chunks(hostIds)) {
    const rows = await db.selectFrom('hosts').select(['id', 'acked_revision']).where('id', 'in', part).execute();
    for (const r of rows) out.set(Number(r.id), Number(r.acked_revision));
  }
  return out;
}

/** The ids of the live servers (heartbeat not expired). */
export async function liveServerIds(db: Q): Promise<string[]> {
  const rows = await db.selectFrom('servers').select('id').where('expires_at', '>=', dbNowMs(db) as never).orderBy('id').execute();
  return rows.map((r) => r.id);
}

/**
 * Lock order. Every statement that writes several rows of `hosts` or of `host_leases` while another
 * server may write some of the same rows takes them in ascending id order, and a transaction that
 * writes both takes hosts first (releaseLeases): then two writers wait for each other instead of
 * deadlocking. A plain multi-row UPDATE or DELETE locks rows in the order its plan visits them (a
 * sequential scan: the heap's order, which updates reshuffle), so such statements lock first, through
 * a sub-select sorted by id FOR UPDATE (its rows are locked as the sort hands them out), or through
 * lockHosts. (Three servers deadlocked a few times per failover test on the hosts rows: a status
 * flush, which locks in order, against the heartbeat's reassertion, which did not.) SQLite has one
 * writer at a time and no row locks.
 */
function leaseOrder(db: Q, where: (q: ReturnType<typeof leaseIds>) => ReturnType<typeof leaseIds>) {
  const q = where(leaseIds(db)).orderBy('host_id');
  return isSqlite(db) ? q : q.forUpdate();
}
function leaseIds(db: Q) { return db.selectFrom('host_leases').select('host_id'); }

/** Extend every lease this server holds; returns the hosts it still holds. */
export async function renewLeases(db: Q, serverId: string, ttlMs: number): Promise<Set<number>> {
  const rows = await db.updateTable('host_leases').set({ expires_at: sql`${dbNowMs(db)} + ${ttlMs}` as never })
    .where('server_id', '=', serverId)
    .where('host_id', 'in', leaseOrder(db, (q) => q.where('server_id', '=', serverId)))
    .returning('host_id').execute();
  return new Set(rows.map((r) => Number(r.host_id)));
}

/** This server lets these hosts go (their agents disconnected): the lease goes, the host shows Disconnected unless another server took it. */
export async function releaseLeases(db: Kysely<Database>, serverId: string, hostIds: number[], now: string): Promise<void> {
  for (const part of chunks(hostIds)) {
    await db.transaction().execute(async (trx) => {
      await lockHosts(trx, part);   // hosts first, in the order a status flush takes them (lock.ts)
      await trx.deleteFrom('host_leases').where('server_id', '=', serverId)
        .where('host_id', 'in', leaseOrder(trx, (q) => q.where('server_id', '=', serverId).where('host_id', 'in', part))).execute();
      await trx.updateTable('hosts').set({ state: 'Disconnected', last_contact: now }).where('id', 'in', part)
        .where('id', 'not in', trx.selectFrom('host_leases').select('host_id')).execute();
    });
  }
}

/** Every lease of this server (its previous run's, at start-up). */
export async function releaseAllLeases(db: Kysely<Database>, serverId: string, now: string): Promise<number> {
  const ids = (await db.selectFrom('host_leases').select('host_id').where('server_id', '=', serverId).execute()).map((r) => Number(r.host_id));
  await releaseLeases(db, serverId, ids, now);
  return ids.length;
}

/**
 * Leases that expired go; hosts nobody holds a live lease on show Disconnected. Safe against a server
 * taking a host at the same moment: it writes the lease before it writes the host's state.
 */
export async function sweepLeases(db: Kysely<Database>): Promise<number> {
  const now = dbNowMs(db);
  await db.deleteFrom('host_leases').where('expires_at', '<', now as never)
    .where('host_id', 'in', leaseOrder(db, (q) => q.where('expires_at', '<', now as never))).execute();
  // Found without locks (usually none), then locked in order and written with the same conditions.
  const unheld = (q: Q, ids?: number[]) => {
    const hosts = q.selectFrom('hosts').select('id').where('removed', 'is', null).where('state', '<>', 'Disconnected')
      .where('id', 'not in', q.selectFrom('host_leases').select('host_id'));
    return ids ? hosts.where('id', 'in', ids) : hosts;
  };
  const candidates = (await unheld(db).execute()).map((h) => h.id);
  let marked = 0;
  for (const part of chunks(candidates)) {
    marked += await db.transaction().execute(async (trx) => {
      await lockHosts(trx, part);
      const r = await trx.updateTable('hosts').set({ state: 'Disconnected' }).where('id', 'in', unheld(trx, part)).executeTakeFirst();
      return Number(r.numUpdatedRows ?? 0);
    });
  }
  return marked;
}

/** Hosts this server holds that a sweep marked Disconnected while it was slow: put their state back. */
export async function reassertHostStates(db: Kysely<Database>, serverId: string, byState: Map<string, number[]>): Promise<void> {
  const swept = (q: Q, ids: number[]) => q.selectFrom('hosts').select('id').where('id', 'in', ids).where('state', '=', 'Disconnected')
    .where('id', 'in', q.selectFrom('host_leases').select('host_id').where('server_id', '=', serverId));
  for (const [state, ids] of byState) {
    for (const part of chunks(ids)) {
      // Found without locks (nearly always none), then locked in order (see leaseOrder) and written.
      const found = (await swept(db, part).execute()).map((h) => h.id);
      if (!found.length) continue;
      await db.transaction().execute(async (trx) => {
        await lockHosts(trx, found);
        await trx.updateTable('hosts').set({ state }).where('id', 'in', swept(trx, found)).execute();
      });
    }
  }
}
