// Accounts, users, domains: createAccount, listAccounts, deleteAccount, listDomains, createDomain,
// listUsers, registerUserKeys — CloudStack response shapes.
import { containsCi, equalsCi, startsWith } from '../../store/queries/like.js';
import { inList } from '../../store/queries/batch.js';
import { ApiError, paramError, permissionDenied, resourceInUse, type CommandContext, type CommandDef, type Params } from '../command.js';
import { CallerAccess, domainSubtree, findDomainByUuid } from '../access.js';
import { accountByName, displayDomainPath, insertAccount, insertDomain, insertUser, newApiKey, usernameTaken } from '../../store/queries/accounts.js';
import { ACL_LIST_PARAMS, LIST_PARAMS, csDate, pageOf, paging } from './common.js';
import { isUuid } from '../params.js';
import { deleteGroupCascade } from './securitygroups.js';
import { lockAccount, lockDomain } from '../../store/queries/lock.js';

const ROLE_TYPE: Record<number, string> = { 0: 'User', 1: 'Admin', 2: 'DomainAdmin' };

import { hashPassword, MAX_PASSWORD_LENGTH } from '../passwords.js';

type Db = CommandContext['db'];

/** A password a user may set: not blank, not absurdly long (it is hashed with scrypt). */
export function checkNewPassword(pw: string): void {
  if (pw.trim() === '') throw paramError('Password cannot be empty');
  if (pw.length > MAX_PASSWORD_LENGTH) throw paramError(`Password is too long: at most ${MAX_PASSWORD_LENGTH} characters`);
}

/**
 * `prepare` of the commands that set a password: its scrypt hash, computed before the command's
 * transaction (inside it, ~0.1 s of CPU would hold the store). Nothing for a password `handle` refuses.
 */
export async function prepareNewPassword(params: Params): Promise<{ hash: string } | undefined> {
  const pw = params.str('password');
  if (pw === undefined) return undefined;
  try { checkNewPassword(pw); } catch { return undefined; }
  return { hash: await hashPassword(pw) };
}

/** The hash `prepare` computed for this password (or, if it did not run, one computed now). */
export async function newPasswordHash(ctx: CommandContext, pw: string): Promise<string> {
  const prepared = ctx.prepared as { hash?: string } | undefined;
  return prepared?.hash ?? hashPassword(pw);
}

export async function userResponses(db: Db, where: { accountIds?: number[]; userIds?: number[] }) {
  let q = db.selectFrom('users as u').innerJoin('accounts as a', 'a.id', 'u.account_id').innerJoin('domains as d', 'd.id', 'a.domain_id')
    .select(['u.id', 'u.uuid', 'u.username', 'u.firstname', 'u.lastname', 'u.email', 'u.created', 'u.state', 'u.apikey', 'u.account_id',
      'a.name as account', 'a.uuid as accountid', 'a.type', 'd.uuid as domainid', 'd.name as domain', 'd.path'])
    .where('u.removed', 'is', null);
  if (where.accountIds) q = q.where(inList(db, 'u.account_id', where.accountIds));
  if (where.userIds) q = q.where(inList(db, 'u.id', where.userIds));
  const rows = await q.orderBy('u.id').execute();
  return rows.map((r) => ({
    accountId: r.account_id,
    value: {
      id: r.uuid, username: r.username, firstname: r.firstname, lastname: r.lastname, ...(r.email ? { email: r.email } : {}),
      created: csDate(r.created), state: r.state, account: r.account, accounttype: r.type, roletype: ROLE_TYPE[r.type],
      domainid: r.domainid, domain: r.domain, domainpath: displayDomainPath(r.path), accountid: r.accountid,
      ...(r.apikey ? { apikey: r.apikey } : {}), iscallerchilddomain: false, isdefault: false,
    } as Record<string, unknown>,
  }));
}

async function accountResponses(db: Db, ids: number[]) {
  if (ids.length === 0) return [];
  const rows = await db.selectFrom('accounts as a').innerJoin('domains as d', 'd.id', 'a.domain_id')
    .select(['a.id', 'a.uuid', 'a.name', 'a.type', 'a.state', 'a.created', 'd.uuid as domainid', 'd.name as domain', 'd.path'])
    .where(inList(db, 'a.id', ids)).orderBy('a.id').execute();
  const users = await userResponses(db, { accountIds: ids });
  return rows.map((r) => ({
    id: r.uuid, name: r.name, accounttype: r.type, roletype: ROLE_TYPE[r.type], domainid: r.domainid, domain: r.domain,
    domainpath: displayDomainPath(r.path), state: r.state, created: csDate(r.created), isdefault: r.name === 'admin' && r.path === '/',
    user: users.filter((u) => u.accountId === r.id).map((u) => u.value),
  }));
}

const createAccount: CommandDef = {
  name: 'createAccount',
  description: 'Creates an account',
  roles: ['admin', 'domainadmin'],
  responseObject: 'account',
  params: [
    { name: 'username', type: 'string', required: true, description: 'Unique username.' },
    { name: 'password', type: 'string', required: true, description: 'Clear text password (Default hashed to SHA256SALT).' },
    { name: 'email', type: 'string', required: true, description: 'email' },
    { name: 'firstname', type: 'string', required: true, description: 'firstname' },
    { name: 'lastname', type: 'string', required: true, description: 'lastname' },
    { name: 'account', type: 'string', description: 'Name of the account to be created. The user will be added to this newly created account. If no account is specified, the username will be used as the account name.' },
    { name: 'accounttype', type: 'integer', description: 'Type of the account.  Specify 0 for user, 1 for root admin, and 2 for domain admin' },
    { name: 'domainid', type: 'uuid', description: 'Creates the user under the specified domain.' },
    { name: 'timezone', type: 'string', description: 'Specifies a timezone for this command.' },
    { name: 'networkdomain', type: 'string', description: "Network domain for the account's networks" },
  ],
  prepare: ({ params }) => prepareNewPassword(params),
  async handle(ctx) {
    const p = ctx.params;
    const username = p.str('username')!.trim();
    const accountName = (p.str('account') ?? username).trim();
    if (!username) throw paramError('Username cannot be empty');
    checkNewPassword(p.str('password')!);
    const type = p.int('accounttype') ?? 0;
    if (![0, 1, 2].includes(type)) throw paramError(`Invalid account type ${type} given; unable to create user`);
    if (type === 1 && ctx.caller.role !== 'admin') throw permissionDenied('Only root admin can create root admin accounts');
    let domain = { id: ctx.caller.domainId, uuid: ctx.caller.domainUuid };
    const duuid = p.str('domainid');
    if (duuid) {
      const d = await findDomainByUuid(ctx.db, duuid);
      if (!d) throw paramError(`The domain ${duuid} does not exist; unable to create account`);
      domain = { id: d.id, uuid: d.uuid };
    }
    await (ctx.access as CallerAccess).checkDomain(domain.id, domain.uuid);
    // Usernames are unique per domain and no index can say so (they live in accounts): the domain's lock
    // makes check-then-insert atomic on PostgreSQL, where concurrent creators would all pass the check.
    await lockDomain(ctx.db, domain.id);
    // (ignoring case, as CloudStack's collation compares names)
    if (await accountByName(ctx.db, domain.id, accountName)) throw new ApiError(431, `The specified account: ${accountName} already exists`, 4350);
    if (await usernameTaken(ctx.db, domain.id, username)) throw paramError(`The user ${username} already exists in domain ${domain.uuid}`);
    const acct = await insertAccount(ctx.db, { name: accountName, domainId: domain.id, type, now: ctx.now });
    const user = await insertUser(ctx.db, {
      accountId: acct.id, username, firstname: p.str('firstname')!, lastname: p.str('lastname')!, email: p.str('email') ?? null,
      passwordHash: await newPasswordHash(ctx, p.str('password')!), keys: false, now: ctx.now,
    });
    ctx.event({ type: 'ACCOUNT.CREATE', description: `Creating Account. Account Name: ${accountName}`, resourceType: 'Account', resourceUuid: acct.uuid, resourceName: accountName, accountId: acct.id, domainId: domain.id });
    ctx.event({ type: 'USER.CREATE', description: `creating User. User Name: ${username}`, resourceType: 'User', resourceUuid: user.uuid, resourceName: username, accountId: acct.id, domainId: domain.id });
    const [value] = await accountResponses(ctx.db, [acct.id]);
    return { object: 'account', value: value! };
  },
};

const listAccounts: CommandDef = {
  name: 'listAccounts',
  description: 'Lists accounts and provides detailed account information for listed accounts',
  responseObject: 'account',
  params: [
    { name: 'id', type: 'uuid', description: 'list account by account ID' },
    { name: 'name', type: 'string', description: 'list account by account name' },
    { name: 'accounttype', type: 'integer', description: 'list accounts by account type. Valid account types are 1 (admin), 2 (domain-admin), and 0 (user).' },
    { name: 'state', type: 'string', description: 'list accounts by state. Valid states are enabled, disabled, and locked.' },
    { name: 'domainid', type: 'uuid', description: 'list only resources belonging to the domain specified' },
    { name: 'isrecursive', type: 'boolean', description: 'defaults to false, but if true, lists all resources from the parent specified by the domainId till leaves.' },
    { name: 'listall', type: 'boolean', description: 'If set to false, list only resources belonging to the command\'s caller; if set to true - list resources that the caller is authorized to see. Default value is false' },
    ...LIST_PARAMS,
  ],
  async handle(ctx) {
    const p = ctx.params;
    const pg = paging(p);
    const c = ctx.caller;
    let q = ctx.db.selectFrom('accounts').select(['id', 'name']).where('removed', 'is', null);
    // CloudStack checks a named domain's access for every caller before anything else: a user naming a
    // domain not its own is refused (531), not answered with its own account as if it had not asked.
    const duuid = p.str('domainid');
    const d = duuid ? await findDomainByUuid(ctx.db, duuid) : undefined;
    if (duuid && !d) throw paramError(`Domain id=${duuid} doesn't exist`);
    if (d) await (ctx.access as CallerAccess).checkDomain(d.id, d.uuid);
    if (c.role === 'user') q = q.where('id', '=', c.accountId);
    else {
      if (d) {
        q = q.where(inList(ctx.db, 'domain_id', p.bool('isrecursive') || p.bool('listall') ? await domainSubtree(ctx.db, d.path) : [d.id]));
      } else {
        q = q.where(inList(ctx.db, 'domain_id', await domainSubtree(ctx.db, c.domainPath)));
      }
      // as for every other list: a domain admin does not see the root-admin accounts it may not act on
      if (c.role === 'domainadmin') q = q.where('type', '!=', 1);
    }
    const id = p.str('id');
    if (id) q = q.where('uuid', '=', id);
    const name = p.str('name');
    if (name) q = q.where(equalsCi(ctx.db, 'name', name));
    const t = p.int('accounttype');
    if (t !== undefined) q = q.where('type', '=', t);
    const st = p.str('state');
    if (st) q = q.where('state', '=', st.toLowerCase());
    const kw = p.str('keyword');
    if (kw) q = q.where(containsCi('name', kw));
    const rows = await q.orderBy('id').execute();
    const page = pageOf(rows, pg);
    return { list: 'account', items: await accountResponses(ctx.db, page.map((r) => r.id)), count: rows.length };
  },
};

const deleteAccount: CommandDef = {
  name: 'deleteAccount',
  description: 'Deletes a account, and all users associated with this account',
  async: true,
  roles: ['admin', 'domainadmin'],
  eventType: 'ACCOUNT.DELETE',
  instanceType: 'Account',
  responseObject: 'success',
  describe: (p) => `deleting Account with Id: ${p.str('id')}`,
  params: [{ name: 'id', type: 'uuid', required: true, description: 'Account id' }],
  async handle(ctx) {
    const id = ctx.params.str('id')!;
    const a = await ctx.db.selectFrom('accounts as a').innerJoin('domains as d', 'd.id', 'a.domain_id')
      .select(['a.id', 'a.name', 'a.domain_id', 'a.uuid', 'd.path']).where('a.uuid', '=', id).where('a.removed', 'is', null).executeTakeFirst();
    if (!a) throw paramError(`The specified account does not exist in the system`);
    await ctx.access.checkAccess(a.id, a.domain_id);
    if (a.id === ctx.caller.accountId) throw paramError('Deletion of the specified account is not allowed: you cannot delete your own account');
    if (a.name === 'admin' && a.path === '/') throw permissionDenied('Account id : ' + a.uuid + ' is a system account, delete is not allowed');
    // Exclusive until commit: a VM being created for it (share-locked) has committed and is counted
    // below, or waits and then finds the account gone; its groups are locked one by one in the cascade.
    if (!(await lockAccount(ctx.db, a.id))) throw paramError(`The specified account does not exist in the system`);
    const vms = await ctx.db.selectFrom('vms').select('id').where('account_id', '=', a.id).where('removed', 'is', null).execute();
    if (vms.length) throw resourceInUse(`Unable to delete account ${a.name}: it still owns ${vms.length} virtual machine(s); destroy them first`);
    // in id order: each cascade locks its group, and every writer locks groups in that order (lock.ts)
    const groups = await ctx.db.selectFrom('security_groups').select('id').where('account_id', '=', a.id).orderBy('id').execute();
    for (const g of groups) await deleteGroupCascade(ctx, Number(g.id));
    await ctx.db.updateTable('users').set({ removed: ctx.now, state: 'disabled', apikey: null, secretkey: null }).where('account_id', '=', a.id).execute();
    await ctx.db.updateTable('accounts').set({ removed: ctx.now, state: 'disabled' }).where('id', '=', a.id).execute();
    ctx.event({ type: 'ACCOUNT.DELETE', description: `deleting Account with Id: ${a.uuid}`, resourceType: 'Account', resourceUuid: a.uuid, resourceName: a.name, accountId: a.id, domainId: a.domain_id });
    return { success: true };
  },
};

async function domainResponses(db: Db, rows: { id: number; uuid: string; name: string; path: string; parent_id: number | null; created: string }[]) {
  if (rows.length === 0) return [];
  const parentIds = rows.map((r) => r.parent_id).filter((x): x is number => x !== null);
  const parents = await db.selectFrom('domains').select(['id', 'uuid', 'name']).where(inList(db, 'id', [...new Set(parentIds)])).execute();
  const children = await db.selectFrom('domains').select('parent_id').where(inList(db, 'parent_id', rows.map((r) => r.id))).where('removed', 'is', null).execute();
  return rows.map((r) => {
    const parent = parents.find((x) => x.id === r.parent_id);
    return {
      id: r.uuid, name: r.name, level: r.path.split('/').length - 2,
      ...(parent ? { parentdomainid: parent.uuid, parentdomainname: parent.name } : {}),
      haschild: children.some((c) => c.parent_id === r.id), path: displayDomainPath(r.path), state: 'Active', created: csDate(r.created),
    };
  });
}

const listDomains: CommandDef = {
  name: 'listDomains',
  description: 'Lists domains and provides detailed information for listed domains',
  roles: ['admin', 'domainadmin'],
  responseObject: 'domain',
  params: [
    { name: 'id', type: 'uuid', description: 'List domain by domain ID.' },
    { name: 'name', type: 'string', description: 'List domain by domain name.' },
    { name: 'level', type: 'integer', description: 'List domains by domain level.' },
    { name: 'listall', type: 'boolean', description: 'If set to false, list only resources belonging to the command\'s caller; if set to true - list resources that the caller is authorized to see. Default value is false' },
    ...LIST_PARAMS,
  ],
  async handle(ctx) {
    const p = ctx.params;
    const pg = paging(p);
    let q = ctx.db.selectFrom('domains').select(['id', 'uuid', 'name', 'path', 'parent_id', 'created']).where('removed', 'is', null);
    const id = p.str('id');
    if (id) {
      const d = await findDomainByUuid(ctx.db, id);
      if (!d) throw paramError(`Domain id=${id} doesn't exist`);
      await (ctx.access as CallerAccess).checkDomain(d.id, d.uuid);
      q = q.where('id', '=', d.id);
    } else if (p.bool('listall')) {
      q = q.where(startsWith('path', ctx.caller.domainPath));
    } else {
      q = q.where('id', '=', ctx.caller.domainId);
    }
    const name = p.str('name');
    if (name) q = q.where(equalsCi(ctx.db, 'name', name));
    const kw = p.str('keyword');
    if (kw) q = q.where(containsCi('name', kw));
    const rows = (await q.orderBy('path').execute()).filter((r) => p.int('level') === undefined || r.path.split('/').length - 2 === p.int('level'));
    return { list: 'domain', items: await domainResponses(ctx.db, pageOf(rows, pg)), count: rows.length };
  },
};

const createDomain: CommandDef = {
  name: 'createDomain',
  description: 'Creates a domain',
  roles: ['admin', 'domainadmin'],
  responseObject: 'domain',
  params: [
    { name: 'name', type: 'string', required: true, description: 'creates domain with this name' },
    { name: 'parentdomainid', type: 'uuid', description: 'assigns new domain a parent domain by domain ID of the parent.  If no parent domain is specified, the ROOT domain is assumed.' },
    { name: 'networkdomain', type: 'string', description: "Network domain for networks in the domain" },
  ],
  async handle(ctx) {
    const name = ctx.params.str('name')!.trim();
    if (!name || name.includes('/')) throw paramError(`Invalid domain name ${name}`);
    const puuid = ctx.params.str('parentdomainid');
    const parent = puuid ? await findDomainByUuid(ctx.db, puuid)
      : await ctx.db.selectFrom('domains').selectAll().where('id', '=', ctx.caller.domainId).executeTakeFirst();
    if (!parent) throw paramError(`Unable to find domain by id=${puuid}`);
    await (ctx.access as CallerAccess).checkDomain(parent.id, parent.uuid);
    // CloudStack's MySQL collation compares domain names without case: `D1` and `d1` would be one name there.
    // The parent's lock makes check-then-insert atomic on PostgreSQL.
    await lockDomain(ctx.db, parent.id);
    const siblings = await ctx.db.selectFrom('domains').select('name').where('parent_id', '=', parent.id).where('removed', 'is', null).execute();
    if (siblings.some((d) => d.name.toLowerCase() === name.toLowerCase())) throw paramError(`Domain with name ${name} already exists for the parent id=${parent.uuid}`);
    const d = await insertDomain(ctx.db, name, parent, ctx.now);
    ctx.event({ type: 'DOMAIN.CREATE', description: `creating Domain. Domain Name: ${name}`, resourceType: 'Domain', resourceUuid: d.uuid, resourceName: name });
    const [value] = await domainResponses(ctx.db, [{ ...d, parent_id: parent.id, created: ctx.now }]);
    return { object: 'domain', value: value! };
  },
};

const listUsers: CommandDef = {
  name: 'listUsers',
  description: 'Lists user accounts',
  responseObject: 'user',
  params: [
    { name: 'id', type: 'uuid', description: 'List user by ID.' },
    { name: 'username', type: 'string', description: 'List user by the username' },
    { name: 'accounttype', type: 'integer', description: 'List users by account type. Valid types include admin, domain-admin, read-only-admin, or user.' },
    { name: 'state', type: 'string', description: 'List users by state of the user account.' },
    ...ACL_LIST_PARAMS, ...LIST_PARAMS,
  ],
  async handle(ctx) {
    const p = ctx.params;
    const pg = paging(p);
    const c = ctx.caller;
    let accountIds: number[];
    if (p.str('projectid') === '-1') accountIds = []; // users of projects: none (no projects)
    // A user's list is its own account's, but a domainid or account it may not see is refused (531), as
    // CloudStack's buildACLSearchParameters does, not quietly answered with its own.
    else if (c.role === 'user' || p.str('account') !== undefined) accountIds = (await ctx.access.listScope(p)).accountIds ?? [];
    else {
      const duuid = p.str('domainid');
      let domainIds: number[];
      if (duuid) {
        const d = await findDomainByUuid(ctx.db, duuid);
        if (!d) throw paramError(`Domain id=${duuid} doesn't exist`);
        await (ctx.access as CallerAccess).checkDomain(d.id, d.uuid);
        domainIds = p.bool('isrecursive') || p.bool('listall') ? await domainSubtree(ctx.db, d.path) : [d.id];
      } else domainIds = await domainSubtree(ctx.db, c.domainPath);
      let aq = ctx.db.selectFrom('accounts').select('id').where(inList(ctx.db, 'domain_id', domainIds)).where('removed', 'is', null);
      if (c.role === 'domainadmin') aq = aq.where('type', '!=', 1); // root-admin users (and their API keys) stay hidden
      accountIds = (await aq.execute()).map((r) => r.id);
    }
    const id = p.str('id');
    // CloudStack: a user's listUsers shows that user alone (not the other users of its account, their
    // API keys included); asking for another user's id is refused.
    if (c.role === 'user' && id !== undefined && id.toLowerCase() !== c.userUuid.toLowerCase()) {
      throw permissionDenied('Calling user is not authorized to see the user requested by id');
    }
    let users = await userResponses(ctx.db, c.role === 'user' ? { accountIds, userIds: [c.userId] } : { accountIds });
    if (id) users = users.filter((u) => u.value.id === id);
    const un = p.str('username'); if (un) users = users.filter((u) => String(u.value.username).toLowerCase() === un.toLowerCase());
    const t = p.int('accounttype'); if (t !== undefined) users = users.filter((u) => u.value.accounttype === t);
    const st = p.str('state'); if (st) users = users.filter((u) => u.value.state === st.toLowerCase());
    const kw = p.str('keyword')?.toLowerCase();
    if (kw) users = users.filter((u) => String(u.value.username).toLowerCase().includes(kw));
    return { list: 'user', items: pageOf(users, pg).map((u) => u.value), count: users.length };
  },
};

const registerUserKeys: CommandDef = {
  name: 'registerUserKeys',
  description: 'This command allows a user to register for the developer API, returning a secret key and an API key. This request is made through the integration API port, so it is a privileged command and must be made on behalf of a user. It is up to the implementer just how the username and password are entered, and then how that translates to an integration API request. Both secret key and API key should be returned to the user',
  responseObject: 'userkeys',
  params: [{ name: 'id', type: 'uuid', required: true, description: 'User id' }],
  async handle(ctx) {
    const id = ctx.params.str('id')!;
    const u = isUuid(id) ? await ctx.db.selectFrom('users as u').innerJoin('accounts as a', 'a.id', 'u.account_id')
      .select(['u.id', 'u.uuid', 'u.username', 'u.account_id', 'a.domain_id']).where('u.uuid', '=', id).where('u.removed', 'is', null).executeTakeFirst() : undefined;
    if (!u) throw paramError(`unable to find user by id`);
    await ctx.access.checkAccess(u.account_id, u.domain_id);
    // As for updateUser: a user account's user acts on itself only. New keys for another user of the
    // same account would hand the caller that user's credentials (and cut off that user's scripts).
    const c = ctx.caller;
    if (c.role === 'user' && u.id !== c.userId) throw permissionDenied(`Account ${c.accountName} does not have permission to register keys for user ${u.uuid}`);
    const apikey = newApiKey();
    const secretkey = newApiKey();
    await ctx.db.updateTable('users').set({ apikey, secretkey }).where('id', '=', u.id).execute();
    ctx.event({ type: 'REGISTER.USER.KEY', description: `register user keys for user: ${u.uuid}`, resourceType: 'User', resourceUuid: u.uuid, resourceName: u.username, accountId: u.account_id, domainId: u.domain_id });
    return { object: 'userkeys', value: { apikey, secretkey } };
  },
};

export const accountCommands: CommandDef[] = [createAccount, listAccounts, deleteAccount, listDomains, createDomain, listUsers, registerUserKeys];
