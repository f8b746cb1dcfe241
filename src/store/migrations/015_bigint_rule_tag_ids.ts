import { sql, type Kysely, type Migration } from 'kysely';
import { isSqlite } from '../dialect.js';

// 64-bit rule and tag ids on PostgreSQL, with every column that holds one (014 left ids that other rows
// refer to at int4). SQLite's integers are 64-bit already: nothing to do there.
// A tenant takes these ids in bulk and gives them back at once, and the sequences never reuse them:
// - security_group_rules.id: one row per CIDR and per allowed group, so one authorizeSecurityGroupIngress
//   with a 1,000-CIDR cidrlist (MAX_LIST_ITEMS, and security.group.max.rules' default) takes 1,000 ids,
//   and deleteSecurityGroup (or the revokes) frees the rows. The per-group and per-account rule bounds
//   bound what is held, not the rate, and nothing bounds a tenant's call rate: one client looping
//   createSecurityGroup / authorize (1,000 CIDRs) / deleteSecurityGroup, one call at a time, against one
//   server on PostgreSQL (in-process, a loaded two-core machine) made 5 cycles a second, 5,000 rule ids
//   a second: 2^31 in under 5 days (sooner with calls in parallel or several servers). After that every
//   authorize in the cloud failed ("nextval: reached maximum value of sequence");
// - tags.id: one createTags writes keys × resources rows (up to 100 map entries × 1,000 resourceids,
//   security.group.max.tags.per.account, 10,000 by default, bounding each call), and deleteTags frees them:
//   a createTags/deleteTags pair takes up to 10,000 ids. Then no one could tag anything.
// Columns holding a rule id follow it: security_group_rule_hits.rule_id (the hit counters, keyed by rule)
// and tags.resource_id (a SecurityGroupRule tag's rule; for the other types it holds a group's or VM's id,
// which bigint holds too). A serial's sequence is typed as well (int4 since PostgreSQL 10): widened with it.
// Cost: ALTER COLUMN TYPE int4 → int8 rewrites the table and its indexes under an exclusive lock, once
// (one statement per table). Measured on PostgreSQL 15 (fsync off, two cores shared with other work,
// load average 5): at 014 with 100,000 rules, a hit row for each and 100,000 tags, 1.7–2.1 s (3 runs);
// with 1,000,000 of each, 12.4 s. These tables hold what tenants keep (bounded per account by
// security.group.max.rules.per.account and security.group.max.tags.per.account), not a history: they
// stay far smaller than 014's events. Kysely runs the pending migrations in one transaction on
// PostgreSQL: rule and tag writes (and, with 014 pending too, everything 014 locks) wait until the last
// table is rewritten, once, while the first upgraded server starts.
// Readers convert: pg returns int8 as a string (Number() at every read, as for 014's ids).
export const m015_bigint_rule_tag_ids: Migration = {
  async up(db: Kysely<any>): Promise<void> {
    if (isSqlite(db)) return;
    await sql`alter table security_group_rules alter column id type bigint`.execute(db);
    await sql`alter table security_group_rule_hits alter column rule_id type bigint`.execute(db);
    await sql`alter table tags alter column id type bigint, alter column resource_id type bigint`.execute(db);
    for (const table of ['security_group_rules', 'tags']) {
      const seq = await sql<{ name: string | null }>`select pg_get_serial_sequence(${table}, 'id') as name`.execute(db);
      // The catalog's own, quoted, name of the sequence.
      const name = seq.rows[0]?.name;
      if (name) await sql`alter sequence ${sql.raw(name)} as bigint`.execute(db);
    }
  },
  // Forward-only: narrowing back would fail on any value past 2^31-1, which is what this is for.
  async down(): Promise<void> {},
};
