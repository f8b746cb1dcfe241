import type { Kysely, Migration } from 'kysely';

// History retention (store/queries/retention.ts): finished async jobs are purged by completion time, so
// that column gets an index (events are purged by `created`, indexed since 001). Without it every
// purge batch would scan the whole table.
export const m009_retention: Migration = {
  async up(db: Kysely<any>): Promise<void> {
    await db.schema.createIndex('async_jobs_completed').on('async_jobs').column('completed').execute();
  },
  async down(db: Kysely<any>): Promise<void> {
    await db.schema.dropIndex('async_jobs_completed').execute();
  },
};
