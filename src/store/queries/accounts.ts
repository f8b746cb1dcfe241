// Account, user and domain rows, shared by the first-start bootstrap and the account commands.
import { randomBytes, randomUUID } from 'node:crypto';
import type { Kysely, Transaction } from 'kysely';
import type { Database } from '../schema.js';
import { equalsCi } from './like.js';

type Q = Transaction<Database> | Kysely<Database>;

export const DEFAULT_GROUP_NAME = 'default';
export const DEFAULT_GROUP_DESCRIPTION = 'Default Security Group';

/** CloudStack-style API keys: 64 random bytes, base64url (86 characters). */
export function newApiKey(): string { return randomBytes(64).toString('base64url'); }

export async function insertDomain(db: Q, name: string, parent: { id: number; path: string } | null, now: string) {
  const path = parent ? `${parent.path}${name}/` : '/';
  const uuid = randomUUID();
  const r = await db.insertInto('domains').values({ uuid, name, path, parent_id: parent?.id ?? null, created: now, removed: null })
    .returning('id').executeTakeFirstOrThrow();
  return { id: r.id, uuid, name, path };
}

/** Account + its default security group (CloudStack's createDefaultSecurityGroup at account creation). */
export async function insertAccount(db: Q, a: { name: string; domainId: number; type: number; now: string }) {
  const uuid = randomUUID();
  const r = await db.insertInto('accounts').values({ uuid, name: a.name, domain_id: a.domainId, type: a.type, state: 'enabled', created: a.now, removed: null })
    .returning('id').executeTakeFirstOrThrow();
  await ensureDefaultGroup(db, r.id, a.domainId, a.now);
  return { id: r.id, uuid };
}

export async function ensureDefaultGroup(db: Q, accountId: number, domainId: number, now: string): Promise<number> {
  const existing = await db.selectFrom('security_groups').select('id').where('account_id', '=', accountId).where('name', '=', DEFAULT_GROUP_NAME).executeTakeFirst();
  if (existing) return Number(existing.id);   // bigint since 016: pg returns text
  const r = await db.insertInto('security_groups').values({
    uuid: randomUUID(), name: DEFAULT_GROUP_NAME, description: DEFAULT_GROUP_DESCRIPTION, account_id: accountId, domain_id: domainId, created: now,
  }).returning('id').executeTakeFirstOrThrow();
  return Number(r.id);
}

export async function insertUser(db: Q, u: {
  accountId: number; username: string; firstname: string; lastname: string; email: string | null; passwordHash: string | null;
  keys: boolean; now: string;
}) {
  const uuid = randomUUID();
  const apikey = u.keys ? newApiKey() : null;
  const secretkey = u.keys ? newApiKey() : null;
  const r = await db.insertInto('users').values({
    uuid, account_id: u.accountId, username: u.username, firstname: u.firstname, lastname: u.lastname, email: u.email,
    password_hash: u.passwordHash, apikey, secretkey, state: 'enabled', created: u.now, removed: null,
  }).returning('id').executeTakeFirstOrThrow();
  return { id: r.id, uuid, apikey, secretkey };
}

/** CloudStack's domain path shown in responses: ROOT, ROOT/child, … */
export function displayDomainPath(path: string): string {
  return 'ROOT' + path.replace(/\/$/, '');
}

/**
 * A live account of a domain by name, as CloudStack's MySQL collation finds it: without regard to case
 * (names are unique per domain ignoring case, createAccount). The exact name first (indexed, and the
 * one meant where older data holds two names differing in case); else ignoring case.
 */
export async function accountByName(db: Q, domainId: number, name: string) {
  const live = () => db.selectFrom('accounts').select(['id', 'uuid', 'name', 'domain_id', 'type']).where('domain_id', '=', domainId).where('removed', 'is', null);
  return await live().where('name', '=', name).executeTakeFirst() ?? await live().where(equalsCi(db, 'name', name)).orderBy('id').executeTakeFirst();
}

/** Is this username taken in the domain, ignoring case (usernames are unique per domain, as accounts)? */
export async function usernameTaken(db: Q, domainId: number, username: string): Promise<boolean> {
  const row = await db.selectFrom('users as u').innerJoin('accounts as a', 'a.id', 'u.account_id').select('u.id')
    .where(equalsCi(db, 'u.username', username)).where('a.domain_id', '=', domainId).where('u.removed', 'is', null).executeTakeFirst();
  return row !== undefined;
}
