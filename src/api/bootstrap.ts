// First start: ROOT domain, the admin account and user (with API keys and a random password), a default zone.
// A store from before passwords existed gets an admin password at its next start.
import { randomUUID } from 'node:crypto';
import type { Db } from '../store/db.js';
import { insertAccount, insertDomain, insertUser } from '../store/queries/accounts.js';
import { ROLE_ACCOUNT_TYPE } from '../model/types.js';
import { hashPassword, randomPassword } from './passwords.js';

export const DEFAULT_ZONE = 'zone1';

/** `password`: set only when this start gave the admin a password (first start, or none before). */
export interface BootstrapResult { created: boolean; apikey: string; secretkey: string; password?: string }

export async function bootstrap(db: Db, now = new Date().toISOString()): Promise<BootstrapResult> {
  const password = randomPassword();
  const passwordHash = await hashPassword(password); // outside the transaction: it takes a while
  return db.transaction().execute(async (trx) => {
    const root = await trx.selectFrom('domains').select('id').where('parent_id', 'is', null).executeTakeFirst();
    if (root) {
      const admin = await trx.selectFrom('users as u').innerJoin('accounts as a', 'a.id', 'u.account_id')
        .select(['u.id', 'u.apikey', 'u.secretkey', 'u.password_hash']).where('a.domain_id', '=', root.id).where('u.username', '=', 'admin')
        .where('u.removed', 'is', null).executeTakeFirst();
      if (admin && !admin.password_hash) {
        await trx.updateTable('users').set({ password_hash: passwordHash }).where('id', '=', admin.id).execute();
        return { created: false, apikey: admin.apikey ?? '', secretkey: admin.secretkey ?? '', password };
      }
      return { created: false, apikey: admin?.apikey ?? '', secretkey: admin?.secretkey ?? '' };
    }
    const domain = await insertDomain(trx, 'ROOT', null, now);
    const account = await insertAccount(trx, { name: 'admin', domainId: domain.id, type: ROLE_ACCOUNT_TYPE.admin, now });
    const user = await insertUser(trx, { accountId: account.id, username: 'admin', firstname: 'admin', lastname: 'cloud', email: null, passwordHash, keys: true, now });
    await trx.insertInto('zones').values({ uuid: randomUUID(), name: DEFAULT_ZONE, description: 'Default zone', created: now }).execute();
    return { created: true, apikey: user.apikey!, secretkey: user.secretkey!, password };
  });
}
