// The change feed (DESIGN.md §6, migration 005): appended inside each API transaction, tailed by every
// server. Positions are handed out by an UPDATE of change_seq's single row, whose row lock is held until
// the transaction ends, so positions are in commit order: once a reader has seen position N, no row
// below N can still commit. (On SQLite one writer at a time gives the same.) The lock is taken as the
// last statement of the transaction, so writers wait on each other only for their commits.
import { sql, type Kysely, type Transaction } from 'kysely';
import type { Database } from '../schema.js';
import { isSqlite } from '../dialect.js';

type Q = Kysely<Database> | Transaction<Database>;

/** PostgreSQL NOTIFY channel: a feed row committed (payload: its position). */
export const FEED_CHANNEL = 'palisade_changes';

/** Append one feed row (a JSON Change[]) in the caller's transaction; returns its position. */
export async function appendFeed(trx: Q, body: string, serverId: string | null, now: string): Promise<number> {
  const r = await sql<{ seq: number | string }>`update change_seq set seq = seq + 1 where id = 1 returning seq`.execute(trx);
  const seq = Number(r.rows[0]?.seq);
  if (!Number.isSafeInteger(seq)) throw new Error('change feed: the change_seq row is missing');
  await trx.insertInto('changes').values({ seq, server_id: serverId, created: now, body }).execute();
  if (!isSqlite(trx)) await sql`select pg_notify(${FEED_CHANNEL}, ${String(seq)})`.execute(trx);
  return seq;
}

/** The last committed position (what a reader that has read everything has reached). */
export async function feedHead(db: Q): Promise<number> {
  const r = await db.selectFrom('change_seq').select('seq').where('id', '=', 1).executeTakeFirst();
  return Number(r?.seq ?? 0);
}

/** `created`: when the row was written (ISO text, the committing server's clock). */
export interface FeedRow { seq: number; body: string; created: string }

/** Rows after `after`, in order, at most `limit`. */
export async function readFeed(db: Q, after: number, limit: number): Promise<FeedRow[]> {
  const rows = await db.selectFrom('changes').select(['seq', 'body', 'created']).where('seq', '>', after).orderBy('seq').limit(limit).execute();
  return rows.map((r) => ({ seq: Number(r.seq), body: r.body, created: String(r.created) }));
}

/** Delete rows below `below` (every live server has read past them). */
export async function pruneFeed(db: Q, below: number): Promise<number> {
  const r = await db.deleteFrom('changes').where('seq', '<', below).executeTakeFirst();
  return Number(r.numDeletedRows ?? 0);
}

/** Rows and bytes the feed holds now (bench, diagnostics). */
export async function feedSize(db: Q): Promise<{ rows: number; bytes: number }> {
  const r = await db.selectFrom('changes').select([sql<number>`count(*)`.as('n'), sql<number>`coalesce(sum(length(body)), 0)`.as('b')]).executeTakeFirst();
  return { rows: Number(r?.n ?? 0), bytes: Number(r?.b ?? 0) };
}
