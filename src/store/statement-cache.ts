// Prepared statements of the embedded SQLite store, kept and reused by SQL text.
//
// Kysely's SQLite driver prepares every query it runs afresh; compiling the SQL is a good part of a
// small query's cost (an authorize runs about fifteen). Kysely hands the driver the same text for the
// same query shape, so a bounded cache by text reuses the compiled statement. Reuse is safe here:
// better-sqlite3 runs a statement to completion synchronously (`all`, `run`), and a statement that is
// still being iterated (`busy`) is never handed out again — a fresh one is prepared instead. SQLite
// re-prepares a cached statement by itself when the schema changes under it. A rollback when SQLite
// has already ended the transaction (see prepare) does nothing.
import type { SqliteDatabase, SqliteStatement } from 'kysely';
import type SqliteDatabaseImpl from 'better-sqlite3';

/** Distinct query texts kept (IN lists of varying length make many; the oldest unused go first). */
export const STATEMENT_CACHE_SIZE = 512;

/** What a rollback with no transaction open runs: nothing. */
const NO_OP = { reader: false, all: () => [], run: () => ({ changes: 0, lastInsertRowid: 0 }), iterate: () => [][Symbol.iterator]() } as unknown as SqliteStatement;

export function cachingStatements(sqlite: SqliteDatabaseImpl.Database, size = STATEMENT_CACHE_SIZE): SqliteDatabase {
  const cache = new Map<string, SqliteDatabaseImpl.Statement>();
  return {
    close: () => { cache.clear(); sqlite.close(); },
    prepare(text: string): SqliteStatement {
      // SQLite ends a transaction itself on some errors (a full disk, an I/O error); Kysely's rollback
      // after it would fail with "no transaction is active" and hide the error that matters.
      if (!sqlite.inTransaction && /^\s*rollback\s*$/i.test(text)) return NO_OP;
      const hit = cache.get(text);
      if (hit && !hit.busy) {
        // Most recently used last: Map keeps insertion order, so the first key is the one to evict.
        cache.delete(text);
        cache.set(text, hit);
        return hit as unknown as SqliteStatement;
      }
      const statement = sqlite.prepare(text);
      if (!hit) {
        cache.set(text, statement);
        if (cache.size > size) cache.delete(cache.keys().next().value as string);
      }
      return statement as unknown as SqliteStatement;
    },
  };
}
