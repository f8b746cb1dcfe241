// Text matching that behaves the same on SQLite and PostgreSQL.
// - `containsCi`: LIKE with an explicit ESCAPE (SQLite has no default escape character) and lower() on
//   both sides (SQLite's LIKE ignores ASCII case, PostgreSQL's does not).
// - `startsWith`: an exact, case-sensitive prefix comparison for domain paths. It is NOT a LIKE: SQLite's
//   LIKE ignores ASCII case, so the subtree of /D1/ would also hold /d1/ (a sibling domain's data).
import { sql, type RawBuilder } from 'kysely';

export function escapeLike(s: string): string {
  return s.replace(/[\\%_]/g, (c) => '\\' + c);
}

/** Case-insensitive substring match (CloudStack's `keyword`). */
export function containsCi(column: string, needle: string): RawBuilder<boolean> {
  return sql<boolean>`lower(${sql.ref(column)}) like ${'%' + escapeLike(needle.toLowerCase()) + '%'} escape '\\'`;
}

/** Exact prefix match: the first characters of the column equal `prefix`, byte for byte (domain paths). */
export function startsWith(column: string, prefix: string): RawBuilder<boolean> {
  // Both engines count substr() in characters (code points), as Array.from does.
  return sql<boolean>`substr(${sql.ref(column)}, 1, cast(${Array.from(prefix).length} as integer)) = cast(${prefix} as text)`;
}
