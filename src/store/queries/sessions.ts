// Login sessions (table `sessions`, migration 008): rows keyed by the SHA-256 of the session cookie.
import type { Kysely, Transaction } from 'kysely';
import type { Database } from '../schema.js';

type Q = Transaction<Database> | Kysely<Database>;

/** The user behind a live session, with what the API needs to build its caller. */
export async function findSession(db: Q, tokenHash: string, now: string) {
  const row = await db.selectFrom('sessions as s')
    .innerJoin('users as u', 'u.id', 's.user_id')
    .innerJoin('accounts as a', 'a.id', 'u.account_id')
    .innerJoin('domains as d', 'd.id', 'a.domain_id')
    .select(['s.id as sessionId', 's.key_hash as keyHash', 's.created as sessionCreated', 's.last_seen as lastSeen', 's.expires',
      'u.id as userId', 'u.uuid as userUuid', 'u.username', 'u.state as userState',
      'a.id as accountId', 'a.uuid as accountUuid', 'a.name as accountName', 'a.type as accountType', 'a.state as accountState',
      'd.id as domainId', 'd.uuid as domainUuid', 'd.name as domainName', 'd.path as domainPath'])
    .where('s.token_hash', '=', tokenHash).where('s.expires', '>', now)
    .where('u.removed', 'is', null).where('a.removed', 'is', null).where('d.removed', 'is', null)
    .executeTakeFirst();
  // The id is bigint on PostgreSQL since 014, which returns it as text.
  return row && { ...row, sessionId: Number(row.sessionId) };
}

export async function insertSession(db: Q, s: { tokenHash: string; keyHash: string; userId: number; address: string | null; now: string; expires: string }) {
  await db.insertInto('sessions').values({
    token_hash: s.tokenHash, key_hash: s.keyHash, user_id: s.userId, address: s.address, created: s.now, last_seen: s.now, expires: s.expires,
  }).execute();
}

export async function touchSession(db: Q, id: number, now: string, expires: string) {
  await db.updateTable('sessions').set({ last_seen: now, expires }).where('id', '=', id).execute();
}

export async function deleteSessionByToken(db: Q, tokenHash: string) {
  await db.deleteFrom('sessions').where('token_hash', '=', tokenHash).execute();
}

/** End a user's sessions (password changed, user removed), except the one given. */
export async function deleteUserSessions(db: Q, userId: number, exceptSessionId?: number) {
  let q = db.deleteFrom('sessions').where('user_id', '=', userId);
  if (exceptSessionId !== undefined) q = q.where('id', '!=', exceptSessionId);
  await q.execute();
}

/** Remove expired sessions, and a user's oldest beyond `keep` (the table stays bounded). */
export async function pruneSessions(db: Q, now: string, userId: number, keep: number) {
  await db.deleteFrom('sessions').where('expires', '<=', now).execute();
  const rows = await db.selectFrom('sessions').select('id').where('user_id', '=', userId).orderBy('id', 'desc').offset(keep).limit(1000).execute();
  if (rows.length) await db.deleteFrom('sessions').where('id', 'in', rows.map((r) => r.id)).execute();
}
