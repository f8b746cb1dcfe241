import type { Kysely, Migration } from 'kysely';

// Which server process runs an async job. With several servers on one PostgreSQL, a restarting server
// must fail only its own interrupted jobs, not the ones another server is running.
export const m003_async_job_server: Migration = {
  async up(db: Kysely<any>): Promise<void> {
    await db.schema.alterTable('async_jobs').addColumn('server_id', 'text').execute();
    await db.schema.createIndex('async_jobs_status').on('async_jobs').columns(['status', 'server_id']).execute();
  },
  async down(): Promise<void> { /* forward-only */ },
};
