// CloudStack's ownership and visibility rules (finalizeOwner / checkAccess / buildACLSearchParameters)
// for the three roles: root admin (everything), domain admin (its domain tree), user (its account).
import { escapeLike, startsWith } from '../store/queries/like.js';
import { inList } from '../store/queries/batch.js';
import type { Kysely, Transaction } from 'kysely';
import type { Database } from '../store/schema.js';
import { paramError, permissionDenied, type Access, type Caller, type Params } from './command.js';
import { isUuid } from './params.js';
import { accountByName } from '../store/queries/accounts.js';

type Q = Transaction<Database> | Kysely<Database>;

export async function findDomainByUuid(db: Q, uuid: string) {
  if (!isUuid(uuid)) return undefined;
  return db.selectFrom('domains').selectAll().where('uuid', '=', uuid).where('removed', 'is', null).executeTakeFirst();
}

/** Ids of the domain and all its descendants. */
export async function domainSubtree(db: Q, path: string): Promise<number[]> {
  const rows = await db.selectFrom('domains').select('id').where(startsWith('path', path)).where('removed', 'is', null).execute();
  return rows.map((r) => r.id);
}

export { escapeLike };

export class CallerAccess implements Access {
  constructor(private readonly db: Q, private readonly caller: Caller) {}

  private async domainPath(domainId: number): Promise<string | undefined> {
    if (domainId === this.caller.domainId) return this.caller.domainPath;
    const d = await this.db.selectFrom('domains').select('path').where('id', '=', domainId).executeTakeFirst();
    return d?.path;
  }

  /** May the caller act within this domain? (root admin: any; domain admin: its tree; user: its own domain) */
  async canUseDomain(domainId: number): Promise<boolean> {
    const c = this.caller;
    if (c.role === 'admin') return true;
    if (c.role === 'user') return domainId === c.domainId;
    const path = await this.domainPath(domainId);
    return path !== undefined && path.startsWith(c.domainPath);
  }

  async checkDomain(domainId: number, domainUuid: string): Promise<void> {
    if (!(await this.canUseDomain(domainId))) {
      throw permissionDenied(`Account ${this.caller.accountName} does not have permission to operate within domain id=${domainUuid}`);
    }
  }

  async resolveOwner(params: Params, lookup = false): Promise<{ accountId: number; domainId: number }> {
    const c = this.caller;
    const accountName = params.str('account');
    const domainUuid = params.str('domainid');
    if (accountName !== undefined && domainUuid === undefined) {
      throw paramError(lookup ? 'Account must be specified with domainId parameter' : 'AccountName and domainId must be specified together');
    }
    // finalizeOwner / finalizeAccountId: a domain without an account names no owner (the caller's account)
    if (accountName === undefined || domainUuid === undefined) return { accountId: c.accountId, domainId: c.domainId };
    const domain = await findDomainByUuid(this.db, domainUuid);
    if (!domain) throw paramError(`Unable to find the domain by id=${domainUuid}`);
    if (c.role === 'user') {
      if (accountName.toLowerCase() !== c.accountName.toLowerCase() || domain.id !== c.domainId) {
        throw permissionDenied(`Can't create/list resources for account ${accountName} in domain ${domainUuid}, permission denied`);
      }
      return { accountId: c.accountId, domainId: c.domainId };
    }
    const owner = await accountByName(this.db, domain.id, accountName);
    if (!owner) throw paramError(lookup ? `Unable to find account by name ${accountName} in domain with specified id` : `Unable to find account ${accountName} in domain ${domainUuid}`);
    await this.checkDomain(domain.id, domain.uuid);
    // Creating for an account is writing to it (checkAccess): a domain admin's reach stops at root-admin
    // accounts, or it could put a VM of its choosing into their groups.
    if (c.role === 'domainadmin' && owner.type === ROOT_ADMIN_TYPE) {
      throw permissionDenied(`Account ${c.accountName} does not have permission to operate with resource owned by a root admin account`);
    }
    return { accountId: owner.id, domainId: owner.domain_id };
  }

  async checkAccess(ownerAccountId: number, ownerDomainId: number): Promise<void> {
    const c = this.caller;
    if (c.role === 'admin') return;
    if (c.role === 'user') {
      if (ownerAccountId === c.accountId) return;
      throw permissionDenied(`Account ${c.accountName} does not have permission to operate with resource owned by another account`);
    }
    if (!(await this.canUseDomain(ownerDomainId))) {
      throw permissionDenied(`Account ${c.accountName} does not have permission to operate with resource owned by another domain`);
    }
    // A domain admin's reach stops at root-admin accounts, even inside its own domain tree.
    const owner = await this.db.selectFrom('accounts').select('type').where('id', '=', ownerAccountId).executeTakeFirst();
    if (owner?.type === 1) throw permissionDenied(`Account ${c.accountName} does not have permission to operate with resource owned by a root admin account`);
  }

  async listScope(params: Params): Promise<{ accountIds: number[] | null; domainIds: number[] | null }> {
    const c = this.caller;
    // projectid=-1 (params.ts lets no other project id through): resources of projects only — none.
    if (params.str('projectid') === '-1') return { accountIds: [], domainIds: null };
    const accountName = params.str('account');
    const domainUuid = params.str('domainid');
    const listAll = params.bool('listall') === true;
    const recursive = params.bool('isrecursive') === true;
    let domain: { id: number; uuid: string; path: string } | undefined;
    if (domainUuid !== undefined) {
      domain = await findDomainByUuid(this.db, domainUuid);
      if (!domain) throw paramError(`Unable to find domain by id ${domainUuid}`);
      await this.checkDomain(domain.id, domain.uuid);
    }
    if (accountName !== undefined) {
      const domainId = domain?.id ?? c.domainId;
      const acct = await accountByName(this.db, domainId, accountName);
      if (!acct) throw paramError(`Unable to find account by name ${accountName} in domain ${domain?.uuid ?? c.domainUuid}`);
      if (c.role === 'user' && acct.id !== c.accountId) {
        throw permissionDenied(`Account ${c.accountName} does not have permission to operate with resource owned by another account`);
      }
      // Reading obeys the rule for writing (checkAccess): a domain admin's reach stops at root-admin accounts.
      if (c.role === 'domainadmin' && acct.type === ROOT_ADMIN_TYPE) {
        throw permissionDenied(`Account ${c.accountName} does not have permission to operate with resource owned by a root admin account`);
      }
      return { accountIds: [acct.id], domainIds: null };
    }
    if (c.role === 'user') return { accountIds: [c.accountId], domainIds: null };
    let domainIds: number[] | null;
    if (domain) domainIds = recursive || listAll ? await domainSubtree(this.db, domain.path) : [domain.id];
    // Asking for one id lifts an admin's own-account default as listall does (CloudStack's
    // buildACLSearchParameters): a root admin finds any account's resource by id, a domain admin any in
    // its domain tree. A user stays in its own account (above).
    else if (listAll || params.str('id') !== undefined) domainIds = c.role === 'admin' ? null : await domainSubtree(this.db, c.domainPath);
    else return { accountIds: [c.accountId], domainIds: null };
    if (c.role === 'admin') return { accountIds: null, domainIds };
    // A domain admin sees what it may act on: every account of those domains except root-admin ones. The
    // result is an explicit account list, so every list command that applies `accountIds` obeys it.
    return { accountIds: await visibleAccounts(this.db, domainIds ?? []), domainIds };
  }
}

const ROOT_ADMIN_TYPE = 1;

/** Accounts (also removed ones: their history stays listable) of these domains that a domain admin may see. */
export async function visibleAccounts(db: Q, domainIds: number[]): Promise<number[]> {
  const rows = await db.selectFrom('accounts').select('id').where(inList(db, 'domain_id', domainIds))
    .where('type', '!=', ROOT_ADMIN_TYPE).orderBy('id').execute();
  return rows.map((r) => r.id);
}
