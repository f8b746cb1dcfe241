import { sql, type Kysely, type Migration } from 'kysely';
import { isSqlite } from '../dialect.js';

// 64-bit integers on PostgreSQL where 001, 007 and 008 made 32-bit ones (`integer`, `serial`: int4) that
// a long-lived cloud outgrows. SQLite's integers are 64-bit already: nothing to do there.
// - hosts.acked_revision, hosts.desired_revision: a revision is a change-feed position (DESIGN.md §6),
//   and changes.seq / change_seq.seq are bigint since 005. Past 2^31-1 feed rows (one per API
//   transaction that changes what hosts enforce) every status write of every host failed with
//   "value … is out of range for type integer", so no host was shown in sync again.
// - ids that are taken on every call and never given back (the rows are pruned, the sequences go on);
//   past 2^31-1 each insert failed with "nextval: reached maximum value of sequence":
//   - events.id: at least one event per write API call, three per async job — sooner than the feed's
//     2^31, and then every write call failed;
//   - async_jobs.id: one per async call;
//   - security_group_drops.id: every logged drop. At the default 10 logged drops a second per VM, 1,000
//     VMs being port-scanned use 2^31 ids in under 2.5 days, and a tenant can drop its own packets at
//     will; the drop log then stopped for everyone;
//   - sessions.id: one per login, which a tenant can repeat at will.
//   A serial's sequence is typed as well (int4 since PostgreSQL 10), so it is widened with its column.
//   Ids that other rows refer to (accounts, groups, rules, VMs, …) are not widened here: their
//   referring columns and every reader would have to change with them.
// Cost: ALTER COLUMN TYPE int4 → int8 rewrites the table and its indexes under an exclusive lock, once
// (one statement per table, so each table is rewritten once). Measured on PostgreSQL 15 (fsync off, two
// shared cores): 20,000 hosts 49 ms; 1,000,000 drop-log rows (the log's bound) 4.9 s; 1,000,000 events
// 5.1 s. Events are kept event.purge.delay days (15 by default) and are the table that can be large: a
// cloud making 50 write calls a second keeps ~100 million, 8–9 minutes. Kysely runs the pending
// migrations in one transaction on PostgreSQL, so every table here stays locked until the last is
// rewritten: write calls and status writes of servers still running wait that long, once, while the
// first upgraded server starts. Sessions and finished jobs are pruned and stay small.
// Readers convert: pg returns int8 as a string (Number() at every read, as for changes.seq).
const SERIALS = ['events', 'async_jobs', 'security_group_drops', 'sessions'];

export const m014_bigint_positions: Migration = {
  async up(db: Kysely<any>): Promise<void> {
    if (isSqlite(db)) return;
    await sql`alter table hosts alter column acked_revision type bigint, alter column desired_revision type bigint`.execute(db);
    for (const table of SERIALS) {
      await sql`alter table ${sql.table(table)} alter column id type bigint`.execute(db);
      const seq = await sql<{ name: string | null }>`select pg_get_serial_sequence(${table}, 'id') as name`.execute(db);
      // The catalog's own, quoted, name of the sequence.
      const name = seq.rows[0]?.name;
      if (name) await sql`alter sequence ${sql.raw(name)} as bigint`.execute(db);
    }
  },
  // Forward-only: narrowing back would fail on any value past 2^31-1, which is what this is for.
  async down(): Promise<void> {},
};
