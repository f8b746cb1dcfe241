// Users and their passwords: login, logout (served by sessions.ts; declared here so listApis shows
// them with CloudStack's parameters), createUser, updateUser.
import { ApiError, paramError, permissionDenied, type CommandDef, type PrepareContext } from '../command.js';
import { CallerAccess, findDomainByUuid } from '../access.js';
import { accountByName, insertUser, usernameTaken } from '../../store/queries/accounts.js';
import { deleteUserSessions } from '../../store/queries/sessions.js';
import { lockDomain } from '../../store/queries/lock.js';
import { hashPassword, verifyPassword } from '../passwords.js';
import { checkNewPassword, newPasswordHash, prepareNewPassword, userResponses } from './accounts.js';

const notDirect = () => new ApiError(405, 'This is an authentication api, cannot be used directly');

const login: CommandDef = {
  name: 'login',
  description: 'Logs a user into the CloudStack. A successful login attempt will generate a JSESSIONID cookie value that can be passed in subsequent Query command calls until the "logout" command has been issued or the session has expired.',
  authenticator: 'login',
  responseObject: 'login',
  params: [
    { name: 'username', type: 'string', required: true, description: 'Username' },
    { name: 'password', type: 'string', required: true, description: 'Password (clear text; send it over HTTPS)' },
    { name: 'domain', type: 'string', description: 'Path of the domain that the user belongs to. Example: domain=/com/cloud/internal. If no domain is passed in, the ROOT (/) domain is assumed.' },
    { name: 'domainid', type: 'string', description: 'The id of the domain that the user belongs to. If both domain and domainId are passed in, "domainId" parameter takes precedence.' },
  ],
  async handle() { throw notDirect(); },
};

const logout: CommandDef = {
  name: 'logout',
  description: 'Logs out the user',
  authenticator: 'logout',
  responseObject: 'logout',
  params: [],
  async handle() { throw notDirect(); },
};

const createUser: CommandDef = {
  name: 'createUser',
  description: 'Creates a user for an account that already exists',
  roles: ['admin', 'domainadmin'],
  responseObject: 'user',
  params: [
    { name: 'account', type: 'string', required: true, description: 'Creates the user under the specified account. If no account is specified, the username will be used as the account name.' },
    { name: 'username', type: 'string', required: true, description: 'Unique username.' },
    { name: 'password', type: 'string', required: true, description: 'Clear text password' },
    { name: 'firstname', type: 'string', required: true, description: 'firstname' },
    { name: 'lastname', type: 'string', required: true, description: 'lastname' },
    { name: 'email', type: 'string', description: 'email' },
    { name: 'domainid', type: 'uuid', description: 'Creates the user under the specified domain. Has to be accompanied with the account parameter' },
    { name: 'timezone', type: 'string', description: 'Specifies a timezone for this command.' },
  ],
  prepare: ({ params }) => prepareNewPassword(params),
  async handle(ctx) {
    const p = ctx.params;
    const username = p.str('username')!.trim();
    if (!username) throw paramError('Username cannot be empty');
    checkNewPassword(p.str('password')!);
    let domain = { id: ctx.caller.domainId, uuid: ctx.caller.domainUuid };
    const duuid = p.str('domainid');
    if (duuid) {
      const d = await findDomainByUuid(ctx.db, duuid);
      if (!d) throw paramError(`Unable to find domain by id=${duuid}`);
      domain = { id: d.id, uuid: d.uuid };
    }
    await (ctx.access as CallerAccess).checkDomain(domain.id, domain.uuid);
    const accountName = p.str('account')!;
    const acct = await accountByName(ctx.db, domain.id, accountName);
    if (!acct) throw paramError(`Unable to find account ${accountName} in domain id=${domain.uuid} to create user`);
    await ctx.access.checkAccess(acct.id, acct.domain_id);
    await lockDomain(ctx.db, domain.id); // usernames are unique per domain (see createAccount)
    if (await usernameTaken(ctx.db, domain.id, username)) throw paramError(`The user ${username} already exists in domain ${domain.uuid}`);
    const user = await insertUser(ctx.db, {
      accountId: acct.id, username, firstname: p.str('firstname')!, lastname: p.str('lastname')!, email: p.str('email') ?? null,
      passwordHash: await newPasswordHash(ctx, p.str('password')!), keys: false, now: ctx.now,
    });
    ctx.event({ type: 'USER.CREATE', description: `creating User. User Name: ${username}`, resourceType: 'User', resourceUuid: user.uuid, resourceName: username, accountId: acct.id, domainId: acct.domain_id });
    const [value] = await userResponses(ctx.db, { userIds: [user.id] });
    return { object: 'user', value: value!.value };
  },
};

const updateUser: CommandDef = {
  name: 'updateUser',
  description: 'Updates a user account',
  responseObject: 'user',
  params: [
    { name: 'id', type: 'uuid', required: true, description: 'User uuid' },
    { name: 'username', type: 'string', description: 'Unique username' },
    { name: 'firstname', type: 'string', description: 'first name' },
    { name: 'lastname', type: 'string', description: 'last name' },
    { name: 'email', type: 'string', description: 'email' },
    { name: 'password', type: 'string', description: 'Clear text password (hashed with scrypt on the server). Changing it ends the user\'s other login sessions.' },
    { name: 'currentpassword', type: 'string', description: 'Current password that was being used by the user. You must inform the current password when updating your own password.' },
    { name: 'timezone', type: 'string', description: 'Specifies a timezone for this command.' },
  ],
  prepare: prepareUpdateUser,
  async handle(ctx) {
    const p = ctx.params;
    const id = p.str('id')!;
    const u = await ctx.db.selectFrom('users as u').innerJoin('accounts as a', 'a.id', 'u.account_id')
      .select(['u.id', 'u.uuid', 'u.username', 'u.password_hash', 'u.account_id', 'a.domain_id'])
      .where('u.uuid', '=', id).where('u.removed', 'is', null).executeTakeFirst();
    if (!u) throw paramError(`Unable to find user by id: ${id}`);
    await ctx.access.checkAccess(u.account_id, u.domain_id);
    const c = ctx.caller;
    // A user account may change its own user only, not another user of the same account.
    if (c.role === 'user' && u.id !== c.userId) throw permissionDenied(`Account ${c.accountName} does not have permission to update user ${u.uuid}`);
    const set: { username?: string; firstname?: string; lastname?: string; email?: string; password_hash?: string } = {};
    const username = p.str('username');
    if (username !== undefined && username.trim() !== u.username) {
      if (username.trim() === '') throw paramError('Username cannot be empty');
      await lockDomain(ctx.db, u.domain_id); // usernames are unique per domain (see createAccount)
      const dup = await ctx.db.selectFrom('users as x').innerJoin('accounts as a', 'a.id', 'x.account_id').select('x.id')
        .where('x.username', '=', username.trim()).where('a.domain_id', '=', u.domain_id).where('x.removed', 'is', null).executeTakeFirst();
      if (dup) throw paramError(`The username ${username.trim()} already exists in domain`);
      set.username = username.trim();
    }
    for (const f of ['firstname', 'lastname', 'email'] as const) {
      const v = p.str(f);
      if (v !== undefined) set[f] = v;
    }
    const password = p.str('password');
    if (password !== undefined) {
      checkNewPassword(password);
      const prepared = ctx.prepared as PreparedPassword | undefined;
      // Your own password needs the current one, whatever your role: a stolen session must not be
      // enough to take the account over. Admins resetting someone else's password do not need it.
      if (u.id === c.userId) {
        const current = p.str('currentpassword');
        if (current === undefined || current === '') throw paramError('To set a new password the current password must be provided.');
        // Checked by prepare (outside the transaction); it holds only if the stored hash is still that one.
        if (prepared?.userId !== u.id || prepared.verifiedHash !== u.password_hash) throw paramError('Current password is incorrect.');
      }
      set.password_hash = prepared?.userId === u.id ? prepared.hash : await hashPassword(password);
    }
    if (Object.keys(set).length) await ctx.db.updateTable('users').set(set).where('id', '=', u.id).execute();
    if (set.password_hash) await deleteUserSessions(ctx.db, u.id, u.id === c.userId ? c.sessionId : undefined);
    ctx.event({ type: 'USER.UPDATE', description: `updating User, User Id: ${u.uuid}${set.password_hash ? ' (password changed)' : ''}`, resourceType: 'User', resourceUuid: u.uuid, resourceName: set.username ?? u.username, accountId: u.account_id, domainId: u.domain_id });
    const [value] = await userResponses(ctx.db, { userIds: [u.id] });
    return { object: 'user', value: value!.value };
  },
};

interface PreparedPassword { userId: number; hash: string; verifiedHash?: string | null }

/**
 * updateUser's slow part, before its transaction: check the current password (when you change your
 * own) and hash the new one. Each guess at the current password counts against the login limiter
 * (per user and address, as a failed login does), so this is no way around login's guessing bound.
 * Nothing is checked or hashed for a request `handle` will refuse (unknown user, no access, bad value).
 */
async function prepareUpdateUser({ db, caller, params, passwordAttempts }: PrepareContext): Promise<PreparedPassword | undefined> {
  const password = params.str('password');
  if (password === undefined) return undefined;
  try { checkNewPassword(password); } catch { return undefined; }
  const u = await db.selectFrom('users as u').innerJoin('accounts as a', 'a.id', 'u.account_id')
    .select(['u.id', 'u.username', 'u.password_hash', 'u.account_id', 'a.domain_id'])
    .where('u.uuid', '=', params.str('id')!).where('u.removed', 'is', null).executeTakeFirst();
  if (!u) return undefined;
  try { await new CallerAccess(db, caller).checkAccess(u.account_id, u.domain_id); } catch { return undefined; }
  if (caller.role === 'user' && u.id !== caller.userId) return undefined;
  const prepared: PreparedPassword = { userId: u.id, hash: '' };
  if (u.id === caller.userId) {
    const current = params.str('currentpassword');
    if (current === undefined || current === '') return undefined;
    const who = `${u.domain_id}/${u.username}`;
    const verdict = passwordAttempts?.begin(who);
    if (verdict && !verdict.allowed) throw new ApiError(429, `Too many failed password attempts; try again in ${verdict.retryAfterSeconds} seconds`);
    if (!(await verifyPassword(current, u.password_hash))) throw paramError('Current password is incorrect.');
    passwordAttempts?.succeeded(who);
    prepared.verifiedHash = u.password_hash;
  }
  prepared.hash = await hashPassword(password);
  return prepared;
}

export const userCommands: CommandDef[] = [login, logout, createUser, updateUser];
