// Stores for migration tests, on both dialects: a fresh SQLite file and a throwaway PostgreSQL cluster.
// A test brings each to the migration before the one it checks (storeBefore), writes rows in the old
// form with the raw (untyped) handle, then runs the rest (store/db.ts migrate) and reads the result.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Migrator, type Kysely, type MigrationProvider } from 'kysely';
import { openPostgres, openSqlite, type Db } from '../../src/store/db.js';
import { migrations } from '../../src/store/migrations/index.js';
import { startPostgres } from './postgres.js';

export const MIGRATION_TEST_NOW = '2026-01-01T00:00:00.000Z';

export interface MigrationStores {
  /** [dialect name, store]: 'sqlite' and 'postgres'. */
  stores: [string, Db][];
  close(): Promise<void>;
}

export async function openMigrationStores(tag: string): Promise<MigrationStores> {
  const pg = await startPostgres();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `palisade-${tag}-`));
  const stores: [string, Db][] = [['sqlite', openSqlite(path.join(dir, 'p.db'))], ['postgres', openPostgres(pg.url)]];
  return {
    stores,
    async close() {
      for (const [, db] of stores) await db.destroy();
      await pg.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Runs every migration whose id sorts before `id`; returns the untyped handle for writing old-form rows. */
export async function storeBefore(db: Db, id: string, name: string): Promise<Kysely<any>> {
  const provider: MigrationProvider = { getMigrations: async () => Object.fromEntries(Object.entries(migrations).filter(([m]) => m < id)) };
  const result = await new Migrator({ db, provider }).migrateToLatest();
  assert.equal(result.error, undefined, `${name}: ${String(result.error)}`);
  return db as unknown as Kysely<any>;
}

/** A ROOT domain and an account-maker in it (rows as the old schema has them). */
export async function rootWithAccounts(raw: Kysely<any>): Promise<{ domainId: number; account(name: string, type?: number): Promise<number> }> {
  const d = await raw.insertInto('domains').values({ uuid: crypto.randomUUID(), name: 'ROOT', path: '/', parent_id: null, created: MIGRATION_TEST_NOW, removed: null }).returning('id').executeTakeFirstOrThrow();
  return {
    domainId: d.id as number,
    account: async (name, type = 0) => (await raw.insertInto('accounts').values({ uuid: crypto.randomUUID(), name, domain_id: d.id, type, state: 'enabled', created: MIGRATION_TEST_NOW, removed: null })
      .returning('id').executeTakeFirstOrThrow()).id as number,
  };
}
