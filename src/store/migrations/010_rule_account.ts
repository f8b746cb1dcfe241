import { sql, type Kysely, type Migration } from 'kysely';

// Each rule carries its group's account (a group never changes account), indexed, so the per-account
// rule bound (security.group.max.rules.per.account) is one index range count instead of a join over
// the account's groups: authorize reads it on every call. Old rows are filled from their groups.
export const m010_rule_account: Migration = {
  async up(db: Kysely<any>): Promise<void> {
    await db.schema.alterTable('security_group_rules').addColumn('account_id', 'integer').execute();
    await sql`UPDATE security_group_rules SET account_id = (SELECT g.account_id FROM security_groups g WHERE g.id = security_group_rules.group_id)`.execute(db);
    await db.schema.createIndex('sg_rules_account').on('security_group_rules').column('account_id').execute();
  },
  async down(db: Kysely<any>): Promise<void> {
    await db.schema.dropIndex('sg_rules_account').execute();
    await db.schema.alterTable('security_group_rules').dropColumn('account_id').execute();
  },
};
