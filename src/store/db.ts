import path from 'node:path';
import fs from 'node:fs';
import SqliteDatabase from 'better-sqlite3';
import { Kysely, Migrator, SqliteDialect, PostgresDialect, type MigrationProvider } from 'kysely';
import pg from 'pg';
import type { Database } from './schema.js';
import { migrations } from './migrations/index.js';

export type Db = Kysely<Database>;

export type StoreConfig = { kind: 'sqlite'; file: string } | { kind: 'postgres'; url: string };

export function openSqlite(file: string): Db {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  // The store holds every user's API secret key: owner-only, whatever the umask or the data dir's mode.
  // SQLite creates the -wal and -shm files with the database file's mode.
  fs.closeSync(fs.openSync(file, 'a', 0o600));
  for (const f of [file, `${file}-wal`, `${file}-shm`]) if (fs.existsSync(f)) fs.chmodSync(f, 0o600);
  const sqlite = new SqliteDatabase(file);
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('foreign_keys = ON');
  sqlite.pragma('busy_timeout = 5000');
  return new Kysely<Database>({ dialect: new SqliteDialect({ database: sqlite }) });
}

/**
 * `onIdleError`: an idle pooled connection was lost (PostgreSQL restarted, failed over, or ended it). The
 * pool drops that connection and opens a new one when needed; without a listener pg would throw the error
 * out of the process instead.
 */
export function openPostgres(url: string, onIdleError: (err: Error) => void = (err) => {
  process.stderr.write(`palisade store: an idle PostgreSQL connection was lost (${err.message}); it will be replaced\n`);
}): Db {
  const pool = new pg.Pool({ connectionString: url, max: 10 });
  pool.on('error', onIdleError);
  // pg emits 'error' on a client that is checked out but between queries (inside a transaction, say) when
  // its connection dies; the pool listens only on idle clients, and an unheard 'error' ends the process.
  // The query in flight or the next one fails on that client instead, and the pool discards it on release.
  pool.on('connect', (client) => client.on('error', onIdleError));
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
}

export async function migrate(db: Db): Promise<void> {
  const provider: MigrationProvider = { getMigrations: async () => migrations };
  const { error, results } = await new Migrator({ db, provider }).migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === 'Error');
    throw new Error(`store migration ${failed?.migrationName ?? '?'} failed: ${(error as Error).message ?? String(error)}`);
  }
}

export async function openStore(cfg: StoreConfig): Promise<Db> {
  const db = cfg.kind === 'sqlite' ? openSqlite(cfg.file) : openPostgres(cfg.url);
  await migrate(db);
  return db;
}
