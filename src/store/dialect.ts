import { SqliteAdapter, type Kysely } from 'kysely';

/** Auto-increment integer id: SQLite's INTEGER PRIMARY KEY, PostgreSQL's serial. */
export function idColumn(db: Kysely<any>): 'integer' | 'serial' {
  return db.getExecutor().adapter instanceof SqliteAdapter ? 'integer' : 'serial';
}
export function isSqlite(db: Kysely<any>): boolean {
  return db.getExecutor().adapter instanceof SqliteAdapter;
}
