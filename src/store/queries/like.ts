// Text matching that behaves the same on SQLite and PostgreSQL.
// - `containsCi`: LIKE with an explicit ESCAPE (SQLite has no default escape character) and lower() on
//   both sides (SQLite's LIKE ignores ASCII case, PostgreSQL's does not).
// - `equalsCi`: equality ignoring case (CloudStack's MySQL collation for names). SQLite's lower() folds
//   ASCII only, so the SQLite connection has `palisade_lower`, JavaScript's toLowerCase (store/db.ts),
//   the folding the API's uniqueness checks use; PostgreSQL's lower() folds per the database's locale
//   (all of Unicode with a UTF-8 locale, ASCII only with the C locale).
// - `collationKey`: a name as MySQL's default collation compares it (case ignored, trailing spaces too:
//   PAD SPACE), for the checks done in JavaScript over an account's few groups.
// - `startsWith`: an exact, case-sensitive prefix comparison for domain paths. It is NOT a LIKE: SQLite's
//   LIKE ignores ASCII case, so the subtree of /D1/ would also hold /d1/ (a sibling domain's data).
import { sql, type Kysely, type RawBuilder } from 'kysely';
import { isSqlite } from '../dialect.js';

export function escapeLike(s: string): string {
  return s.replace(/[\\%_]/g, (c) => '\\' + c);
}

/** Case-insensitive substring match (CloudStack's `keyword`). */
export function containsCi(column: string, needle: string): RawBuilder<boolean> {
  return sql<boolean>`lower(${sql.ref(column)}) like ${'%' + escapeLike(needle.toLowerCase()) + '%'} escape '\\'`;
}

/** Case-insensitive equality (names looked up as CloudStack's collation compares them). */
export function equalsCi(db: Kysely<any>, column: string, value: string): RawBuilder<boolean> {
  return isSqlite(db)
    ? sql<boolean>`palisade_lower(${sql.ref(column)}) = ${value.toLowerCase()}`
    : sql<boolean>`lower(${sql.ref(column)}) = lower(${value})`;
}

/** Exact prefix match: the first characters of the column equal `prefix`, byte for byte (domain paths). */
export function startsWith(column: string, prefix: string): RawBuilder<boolean> {
  // Both engines count substr() in characters (code points), as Array.from does.
  return sql<boolean>`substr(${sql.ref(column)}, 1, cast(${Array.from(prefix).length} as integer)) = cast(${prefix} as text)`;
}

/** A name as CloudStack's MySQL collation compares it: case ignored, trailing spaces ignored (PAD SPACE). */
export function collationKey(name: string): string {
  return name.replace(/ +$/, '').toLowerCase();
}
