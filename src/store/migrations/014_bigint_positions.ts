import { sql, type Kysely, type Migration } from 'kysely';
import { isSqlite } from '../dialect.js';

// 64-bit integers on PostgreSQL where 001 and 007 made 32-bit ones (`integer`, `serial`: int4) that a
// long-lived cloud outgrows. SQLite's integers are 64-bit already: nothing to do there.
// - hosts.acked_revision, hosts.desired_revision: a revision is a change-feed position (DESIGN.md §6),
//   and changes.seq / change_seq.seq are bigint since 005. Past 2^31-1 feed rows (one per API
//   transaction that changes what hosts enforce) every status write of every host failed with
//   "value … is out of range for type integer", so no host was shown in sync again.
// - security_group_drops.id (serial) and its sequence: every logged drop takes an id, and the rows are
//   pruned (store/queries/drops.ts) but the sequence never goes back. At the default 10 logged drops a
//   second per VM, 1,000 VMs being port-scanned use 2^31 ids in under 2.5 days, and a tenant can drop
//   its own packets at will; past that every insert failed ("reached maximum value of sequence") and
//   the drop log stopped for everyone. A serial's sequence is typed too (int4 since PostgreSQL 10), so
//   it is widened with its column.
// Cost: ALTER COLUMN TYPE int4 → int8 rewrites the table and its indexes under an exclusive lock, once:
// one statement per table, so each table is rewritten once. Measured on PostgreSQL 15 (fsync off, two
// shared cores): 20,000 hosts 49 ms; the drop log at its bound of 1,000,000 rows 4.9 s. API calls and
// status writes touching those tables wait that long, once, while the first upgraded server starts.
// Readers convert: pg returns int8 as a string (Number() at every read, as for changes.seq).
export const m014_bigint_positions: Migration = {
  async up(db: Kysely<any>): Promise<void> {
    if (isSqlite(db)) return;
    await sql`alter table hosts alter column acked_revision type bigint, alter column desired_revision type bigint`.execute(db);
    await sql`alter table security_group_drops alter column id type bigint`.execute(db);
    const seq = await sql<{ name: string | null }>`select pg_get_serial_sequence('security_group_drops', 'id') as name`.execute(db);
    const name = seq.rows[0]?.name;
    if (name) await sql`alter sequence ${sql.raw(name)} as bigint`.execute(db);
  },
  // Forward-only: narrowing back would fail on any value past 2^31-1, which is what this is for.
  async down(): Promise<void> {},
};
