// LIKE that behaves the same on SQLite and PostgreSQL: an explicit ESCAPE (SQLite has no default
// escape character) and lower() on both sides (SQLite's LIKE ignores ASCII case, PostgreSQL's does not).
import { sql, type RawBuilder } from 'kysely';

export function escapeLike(s: string): string {
  return s.replace(/[\\%_]/g, (c) => '\\' + c);
}

/** Case-insensitive substring match (CloudStack's `keyword`). */
export function containsCi(column: string, needle: string): RawBuilder<boolean> {
  return sql<boolean>`lower(${sql.ref(column)}) like ${'%' + escapeLike(needle.toLowerCase()) + '%'} escape '\\'`;
}

/** Case-sensitive prefix match (domain paths). */
export function startsWith(column: string, prefix: string): RawBuilder<boolean> {
  return sql<boolean>`${sql.ref(column)} like ${escapeLike(prefix) + '%'} escape '\\'`;
}
