import type { Kysely, Migration } from 'kysely';

// The per-account tag bound (security.group.max.tags.per.account) counts an account's tags on every
// createTags: one index range instead of a scan of every tag.
export const m011_tag_account: Migration = {
  async up(db: Kysely<any>): Promise<void> {
    await db.schema.createIndex('tags_account').on('tags').column('account_id').execute();
  },
  async down(db: Kysely<any>): Promise<void> {
    await db.schema.dropIndex('tags_account').execute();
  },
};
