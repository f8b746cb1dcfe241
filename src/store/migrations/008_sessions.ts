import type { Kysely, Migration } from 'kysely';
import { addId } from '../dialect.js';

// Login sessions of the web console and other username/password clients (CloudStack's `login`). Only
// SHA-256 digests of the session cookie and the session key are stored, so a copy of the database does
// not let anyone act as a logged-in user. Kept in the store, not in memory, so sessions survive a
// restart and work on every server sharing one PostgreSQL.
export const m008_sessions: Migration = {
  async up(db: Kysely<any>): Promise<void> {
    await addId(db, db.schema.createTable('sessions'))
      .addColumn('token_hash', 'text', (c) => c.notNull().unique())
      .addColumn('key_hash', 'text', (c) => c.notNull())
      .addColumn('user_id', 'integer', (c) => c.notNull())
      .addColumn('address', 'text')
      .addColumn('created', 'text', (c) => c.notNull())
      .addColumn('last_seen', 'text', (c) => c.notNull())
      .addColumn('expires', 'text', (c) => c.notNull())
      .execute();
    await db.schema.createIndex('sessions_user').on('sessions').column('user_id').execute();
    await db.schema.createIndex('sessions_expires').on('sessions').column('expires').execute();
  },
  async down(): Promise<void> { /* forward-only */ },
};
