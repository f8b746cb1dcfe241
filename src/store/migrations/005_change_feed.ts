import { sql, type Kysely, type Migration } from 'kysely';
import { isSqlite } from '../dialect.js';

// Several servers on one database (DESIGN.md §6):
// - `changes`: the change feed. Each API transaction that changes what the control plane compiles
//   appends one row (its Change[] as JSON) in the same transaction, numbered from `change_seq`.
//   Taking the number is an UPDATE of change_seq's single row, which holds that row's lock until the
//   transaction ends: numbers are handed out in commit order, so a reader that has seen N never later
//   finds a committed row below N. The counter starts above every revision the earlier per-host
//   counters handed out, so no agent's saved revision can be mistaken for a feed position.
// - `servers`: one heartbeat row per live server process (its feed position, for pruning).
// - `host_leases`: which server holds a host's agent session, until when.
// - `hosts.dataplane`: the backend the host's agent runs (from its hello).
export const m005_change_feed: Migration = {
  async up(db: Kysely<any>): Promise<void> {
    const big = isSqlite(db) ? 'integer' : 'bigint';
    await db.schema.createTable('changes')
      .addColumn('seq', big, (c) => c.primaryKey())
      .addColumn('server_id', 'text')
      .addColumn('created', 'text', (c) => c.notNull())
      .addColumn('body', 'text', (c) => c.notNull())
      .execute();
    await db.schema.createTable('change_seq')
      .addColumn('id', 'integer', (c) => c.primaryKey())
      .addColumn('seq', big, (c) => c.notNull())
      .execute();
    const top = await db.selectFrom('hosts').select(sql<number>`coalesce(max(desired_revision), 0)`.as('m')).executeTakeFirst();
    await db.insertInto('change_seq').values({ id: 1, seq: Number(top?.m ?? 0) + 1 }).execute();
    await db.schema.createTable('servers')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('started_at', 'text', (c) => c.notNull())
      .addColumn('heartbeat_at', big, (c) => c.notNull())
      .addColumn('expires_at', big, (c) => c.notNull())
      .addColumn('feed_position', big, (c) => c.notNull())
      .execute();
    await db.schema.createTable('host_leases')
      .addColumn('host_id', 'integer', (c) => c.primaryKey())
      .addColumn('server_id', 'text', (c) => c.notNull())
      .addColumn('hostname', 'text', (c) => c.notNull())
      .addColumn('acquired_at', big, (c) => c.notNull())
      .addColumn('expires_at', big, (c) => c.notNull())
      .execute();
    await db.schema.createIndex('host_leases_server').on('host_leases').column('server_id').execute();
    await db.schema.createIndex('host_leases_expires').on('host_leases').column('expires_at').execute();
    await db.schema.alterTable('hosts').addColumn('dataplane', 'text').execute();
    await db.schema.createIndex('async_jobs_server_status').on('async_jobs').columns(['server_id', 'status']).execute();
  },
  async down(): Promise<void> { /* forward-only */ },
};
