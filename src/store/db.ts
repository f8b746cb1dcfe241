import path from 'node:path';
import fs from 'node:fs';
import SqliteDatabase from 'better-sqlite3';
import { Kysely, Migrator, SqliteDialect, PostgresDialect, type MigrationProvider } from 'kysely';
import pg from 'pg';
import type { Database } from './schema.js';
import { migrations } from './migrations/index.js';
import { cachingStatements } from './statement-cache.js';

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
  // Case folding for names compared without regard to case (queries/like.ts equalsCi): SQLite's own
  // lower() folds ASCII only; this is the folding the API's uniqueness checks use.
  sqlite.function('palisade_lower', { deterministic: true }, (text: unknown) => (typeof text === 'string' ? text.toLowerCase() : text));
  return new Kysely<Database>({ dialect: new SqliteDialect({ database: cachingStatements(sqlite) }) });
}

/**
 * `onIdleError`: an idle pooled connection was lost (PostgreSQL restarted, failed over, or ended it). The
 * pool drops that connection and opens a new one when needed; without a listener pg would throw the error
 * out of the process instead.
 */
/**
 * How long a PostgreSQL session may sit inside a transaction without sending anything before the
 * database ends it (rolling back, releasing its locks). Palisade never waits on anything but the
 * database inside a transaction (agents, password hashing and the like run outside one), so a session
 * idle that long belongs to a process that is frozen, or whose machine or network is gone (no FIN or
 * RST reaches the database, which would otherwise keep its locks for TCP's keepalive, ~2 h): without
 * the bound, its row locks (an account's, a group's, the change feed's) stall every other server's
 * writes for as long.
 */
export const IDLE_IN_TRANSACTION_MS = 10_000;

export function openPostgres(url: string, onIdleError: (err: Error) => void = (err) => {
  process.stderr.write(`palisade store: an idle PostgreSQL connection was lost (${err.message}); it will be replaced\n`);
}, max = 20, idleInTransactionMs = IDLE_IN_TRANSACTION_MS): Db {
  // A server cut off from the database fails fast (and its callers get STORE_UNAVAILABLE) rather than
  // waiting on connections that will not come.
  // (Waiting for a free pooled connection counts against the timeout too: generous, so load alone
  // does not turn into errors.)
  const pool = new pg.Pool({
    connectionString: url, max, connectionTimeoutMillis: 15_000, keepAlive: true,
    idle_in_transaction_session_timeout: idleInTransactionMs,
  });
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
    const what = failed ? `store migration ${failed.migrationName} failed` : 'the store could not be migrated';
    throw new Error(`${what}: ${(error as Error).message ?? String(error)}`);
  }
}

/** `onIdleError`: where a lost idle PostgreSQL connection is reported (default: a line on stderr). */
export async function openStore(cfg: StoreConfig, onIdleError?: (err: Error) => void): Promise<Db> {
  const db = cfg.kind === 'sqlite' ? openSqlite(cfg.file) : openPostgres(cfg.url, onIdleError);
  await migrate(db);
  return db;
}

const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN',
  '57P01', '57P02', '57P03', '08000', '08001', '08003', '08004', '08006']);

/** PostgreSQL's deadlock_detected and serialization_failure: the same statements succeed when run again. */
const CONFLICT_CODES = new Set(['40P01', '40001']);

/** Did the database abort this transaction only because of another one (worth running again as is)? */
export function transientConflict(err: unknown): boolean {
  const e = err as { code?: unknown } | null;
  return !!e && typeof e === 'object' && typeof e.code === 'string' && CONFLICT_CODES.has(e.code);
}

/** Is this error the database being out of disk space (SQLite's SQLITE_FULL, PostgreSQL's disk_full)? */
export function storeOutOfSpace(err: unknown): boolean {
  const e = err as { code?: unknown } | null;
  return !!e && typeof e === 'object' && (e.code === 'SQLITE_FULL' || e.code === '53100');
}

/**
 * A unique constraint refused a write: another request committed the same value (a requested MAC, a
 * name) between this one's check and its write. The column it names (PostgreSQL's detail "Key (col)=(…)",
 * SQLite's "UNIQUE constraint failed: table.col"), or null when the error is not that.
 */
export function uniqueViolation(err: unknown): { column: string } | null {
  const e = err as { code?: unknown; detail?: unknown; message?: unknown } | null;
  if (!e || typeof e !== 'object') return null;
  if (e.code === '23505') return { column: /Key \(([^)]+)\)/.exec(typeof e.detail === 'string' ? e.detail : '')?.[1] ?? 'value' };
  if (e.code === 'SQLITE_CONSTRAINT_UNIQUE') return { column: /UNIQUE constraint failed: [\w]+\.(\w+)/.exec(typeof e.message === 'string' ? e.message : '')?.[1] ?? 'value' };
  return null;
}

/** Is this error the store being unreachable (as opposed to a query that failed)? */
export function storeUnavailable(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown } | null;
  if (!e || typeof e !== 'object') return false;
  if (typeof e.code === 'string' && CONNECTION_CODES.has(e.code)) return true;
  const msg = typeof e.message === 'string' ? e.message : '';
  return /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Connection refused|not queryable/i.test(msg);
}
