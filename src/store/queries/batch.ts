// Lists of values in statements, at any length, on both dialects. SQLite refuses a statement with more
// than 32,766 bound variables and PostgreSQL one with more than 65,535, and many lists here come from what
// a tenant stored (the rule ids of a group, the accounts under a domain), so no list may become one bound
// variable per element:
// - `inList`: a short list stays an ordinary `IN (…)`; a longer one travels as ONE bound parameter, a JSON
//   array read by json_each() on SQLite or an array compared with `= ANY()` on PostgreSQL. One statement
//   whatever the length, so counts, ordering and paging over the filtered rows stay exact.
// - `valuesChunks`: multi-row INSERTs are split so that rows × columns stays well under both limits.
import { sql, type Kysely, type RawBuilder, type SqlBool } from 'kysely';
import { isSqlite } from '../dialect.js';

/** Lists up to this length are inlined as `IN (?, ?, …)`. */
export const INLINE_MAX = 100;
/** Bound parameters per INSERT statement (SQLite allows 32,766, PostgreSQL 65,535). */
export const PARAMS_PER_STATEMENT = 8000;

/** `column IN values` for a list of any length; an empty list matches nothing. */
export function inList(db: Kysely<any>, column: string, values: readonly (number | string)[]): RawBuilder<SqlBool> {
  const ref = sql.ref(column);
  if (values.length === 0) return sql<SqlBool>`1 = 0`;
  if (values.length <= INLINE_MAX) return sql<SqlBool>`${ref} in (${sql.join(values.map((v) => sql`${v}`))})`;
  if (isSqlite(db)) return sql<SqlBool>`${ref} in (select value from json_each(${JSON.stringify(values)}))`;
  return sql<SqlBool>`${ref} = any(${[...values]})`;
}

/** `column NOT IN values`, any length; an empty list excludes nothing. */
export function notInList(db: Kysely<any>, column: string, values: readonly (number | string)[]): RawBuilder<SqlBool> {
  if (values.length === 0) return sql<SqlBool>`1 = 1`;
  return sql<SqlBool>`not (${inList(db, column, values)})`;
}

/** Rows of a multi-row INSERT in chunks small enough for one statement each. */
export function valuesChunks<T extends object>(rows: readonly T[]): T[][] {
  if (rows.length === 0) return [];
  const columns = Math.max(1, Object.keys(rows[0]!).length);
  const per = Math.max(1, Math.floor(PARAMS_PER_STATEMENT / columns));
  const out: T[][] = [];
  for (let i = 0; i < rows.length; i += per) out.push(rows.slice(i, i + per));
  return out;
}
