// getApiLimit / resetApiLimit: CloudStack's api-limit-account plugin commands (GetApiLimitCmd,
// ResetApiLimitCmd, ApiLimitResponse) over this server's rate limiter (api/rate-limit.ts). Both answer 432
// while api.throttling.enabled is false, as CloudStack does. Neither touches the store's data: the
// counts live in the server process (several servers: each its own).
import { unsupported, type CommandContext, type CommandDef } from '../command.js';
import { THROTTLING_DISABLED, type ApiLimits } from '../rate-limit.js';
import { notFound } from './inventory/common.js';

async function enabledLimits(ctx: CommandContext): Promise<ApiLimits> {
  const limits = ctx.apiLimits;
  if (!limits || !(await limits.settings()).enabled) throw unsupported(THROTTLING_DISABLED);
  return limits;
}

const getApiLimit: CommandDef = {
  name: 'getApiLimit',
  description: 'Get API limit count for the caller',
  responseObject: 'apilimit',
  params: [],
  readOnly: () => true,
  async handle(ctx) {
    const u = await (await enabledLimits(ctx)).usage(ctx.caller.accountId);
    // expireAfter as CloudStack's searchApiLimit sets it: the ms left in a running window
    // (StoreEntry.getExpireDuration), but the interval in seconds when the caller has none (its
    // timeToLive) — only a root admin, whose calls are never counted, asks without a window.
    const expireAfter = u.open ? u.expireAfterMs : u.expireAfterMs / 1000;
    return {
      object: 'apilimit',
      value: { accountid: ctx.caller.accountUuid, account: ctx.caller.accountName, apiIssued: u.issued, apiAllowed: u.allowed, expireAfter },
    };
  },
};

const resetApiLimit: CommandDef = {
  name: 'resetApiLimit',
  description: 'Reset api count',
  roles: ['admin'],
  responseObject: 'success',
  params: [{ name: 'account', type: 'uuid', description: 'The ID of the Account whose limit to be reset' }],
  readOnly: () => true,
  async handle(ctx) {
    const limits = await enabledLimits(ctx);
    const uuid = ctx.params.str('account');
    if (uuid === undefined) {
      limits.reset();
      return { success: true };
    }
    const account = await ctx.db.selectFrom('accounts').select('id').where('uuid', '=', uuid).where('removed', 'is', null).executeTakeFirst();
    if (!account) throw notFound(ctx, 'account', uuid);
    limits.reset(account.id);
    return { success: true };
  },
};

export const apiLimitCommands: CommandDef[] = [getApiLimit, resetApiLimit];
