// Per-API-rule hit counters (security_group_rule_hits): added to from agents' kernel counters (see
// policy/hits.ts for how merged kernel rules are attributed), read for rule responses, deleted with
// their rules. Additions are one upsert per rule, so concurrent adders (several servers) never lose
// packets; lasthit only moves forward.
import { sql, type Kysely, type Transaction } from 'kysely';
import type { Database } from '../schema.js';
import { isSqlite } from '../dialect.js';

type Q = Transaction<Database> | Kysely<Database>;

export interface RuleHits { hitcount: number; lasthit: string | null }

const chunk = <T>(xs: T[], n = 500): T[][] => { const o: T[][] = []; for (let i = 0; i < xs.length; i += n) o.push(xs.slice(i, i + n)); return o; };

/** Adds packets to API rules by uuid (unknown uuids — rules revoked meanwhile — are skipped). Returns the rules updated. */
export async function addRuleHits(db: Q, packetsByRuleUuid: ReadonlyMap<string, number>, at: string): Promise<number> {
  const wanted = [...packetsByRuleUuid].filter(([, n]) => Number.isSafeInteger(n) && n > 0);
  if (!wanted.length) return 0;
  let updated = 0;
  const newer = isSqlite(db)
    ? sql<string>`max(coalesce(security_group_rule_hits.lasthit, ''), excluded.lasthit)`
    : sql<string>`greatest(security_group_rule_hits.lasthit, excluded.lasthit)`;
  for (const part of chunk(wanted)) {
    const ids = await db.selectFrom('security_group_rules').select(['id', 'uuid']).where('uuid', 'in', part.map(([u]) => u)).execute();
    if (!ids.length) continue;
    const byUuid = new Map(part);
    const rows = ids.map((r) => ({ rule_id: Number(r.id), hitcount: byUuid.get(r.uuid)!, lasthit: at })).sort((a, b) => a.rule_id - b.rule_id);
    await db.insertInto('security_group_rule_hits').values(rows)
      .onConflict((oc) => oc.column('rule_id').doUpdateSet({
        // Clamped at 2^53-1 (what a JSON number holds exactly): a hostile or broken agent's huge
        // deltas saturate the count instead of overflowing the column (PostgreSQL would refuse the row).
        hitcount: isSqlite(db)
          ? sql`min(security_group_rule_hits.hitcount + excluded.hitcount, ${Number.MAX_SAFE_INTEGER})`
          : sql`least(security_group_rule_hits.hitcount + excluded.hitcount, ${Number.MAX_SAFE_INTEGER}::bigint)`,
        lasthit: newer,
      })).execute();
    updated += rows.length;
  }
  return updated;
}

/** Hit counters of rules by internal id (rules never hit are absent). */
export async function ruleHits(db: Q, ruleIds: number[]): Promise<Map<number, RuleHits>> {
  const out = new Map<number, RuleHits>();
  for (const part of chunk([...new Set(ruleIds)])) {
    const rows = await db.selectFrom('security_group_rule_hits').select(['rule_id', 'hitcount', 'lasthit']).where('rule_id', 'in', part).execute();
    for (const r of rows) out.set(Number(r.rule_id), { hitcount: Number(r.hitcount), lasthit: r.lasthit });
  }
  return out;
}

/** Forget the counters of deleted rules. */
export async function deleteRuleHits(db: Q, ruleIds: number[]): Promise<void> {
  for (const part of chunk(ruleIds)) await db.deleteFrom('security_group_rule_hits').where('rule_id', 'in', part).execute();
}
