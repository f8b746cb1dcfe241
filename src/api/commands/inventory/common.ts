// Helpers shared by the inventory commands: CloudStack-style "entity not found" errors, paging,
// domain-tree lookups, zone resolution, and the uuid/row lookups every command starts with.
import { randomUUID } from 'node:crypto';
import type { Kysely, Transaction } from 'kysely';
import type { Database } from '../../../store/schema.js';
import { networkRow, vmRow } from './rows.js';
import { ApiError, paramError, type CommandContext } from '../../command.js';
import { paging as basePaging } from '../common.js';

export type Tx = Transaction<Database> | Kysely<Database>;

export const uuid = () => randomUUID();

/** CloudStack's message when a uuid parameter names no entity (ParamProcessWorker); it names the parameter. */
export function notFound(ctx: CommandContext, param: string, value: string): ApiError {
  return paramError(
    `Unable to execute API command ${ctx.command.toLowerCase()} due to invalid value. Invalid parameter ${param} value=${value} ` +
      'due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class.',
  );
}

/** CloudRuntimeException (530) as CloudStack maps it. */
export const runtimeError = (msg: string) => new ApiError(530, msg, 4250);
/** InsufficientAddressCapacityException / InsufficientServerCapacityException → 533. */
export const addressCapacity = (msg: string) => new ApiError(533, msg, 4320);
export const serverCapacity = (msg: string) => new ApiError(533, msg, 4335);

// Paging and the standard list/ACL parameters are the framework's (same rules for every command family).
export { pageOf, LIST_PARAMS as pagingParams, ACL_LIST_PARAMS as scopeParams, MAX_PAGE_SIZE } from '../common.js';
export const paging = (ctx: CommandContext) => basePaging(ctx.params);

/** The domain and its ancestors up to ROOT (shared networks of an ancestor domain are usable below it). */
export async function domainAncestors(db: Tx, domainId: number): Promise<number[]> {
  const out: number[] = [];
  let cur: number | null = domainId;
  while (cur !== null && out.length < 64) {
    const d: { id: number; parent_id: number | null } | undefined =
      await db.selectFrom('domains').select(['id', 'parent_id']).where('id', '=', cur).executeTakeFirst();
    if (!d) break;
    out.push(d.id);
    cur = d.parent_id;
  }
  return out;
}

/** The domain and all its descendants. */
export async function domainSubtree(db: Tx, domainId: number): Promise<number[]> {
  const all = await db.selectFrom('domains').select(['id', 'parent_id']).where('removed', 'is', null).execute();
  const children = new Map<number, number[]>();
  for (const d of all) if (d.parent_id !== null) children.set(d.parent_id, [...(children.get(d.parent_id) ?? []), d.id]);
  const out: number[] = [];
  const stack = [domainId];
  while (stack.length) {
    const id = stack.pop()!;
    out.push(id);
    stack.push(...(children.get(id) ?? []));
  }
  return out;
}

/** `zoneid` if given (must exist), else the first zone (Palisade clouds usually have one). */
export async function resolveZone(ctx: CommandContext, param = 'zoneid', fallbackZoneId?: number) {
  const zid = ctx.params.str(param);
  if (zid !== undefined) {
    const z = await ctx.db.selectFrom('zones').selectAll().where('uuid', '=', zid).executeTakeFirst();
    if (!z) throw notFound(ctx, param, zid);
    return z;
  }
  let q = ctx.db.selectFrom('zones').selectAll();
  if (fallbackZoneId !== undefined) q = q.where('id', '=', fallbackZoneId);
  const z = await q.orderBy('id').executeTakeFirst();
  if (!z) throw paramError(`No zone exists; specify ${param}`);
  return z;
}

export async function getVm(ctx: CommandContext, param: string, options: { allowDestroyed?: boolean } = {}) {
  const id = ctx.params.str(param)!;
  const vm = await ctx.db.selectFrom('vms').selectAll().where('uuid', '=', id).where('removed', 'is', null).executeTakeFirst();
  if (!vm || (vm.state === 'Expunging')) throw notFound(ctx, param, id);
  await ctx.access.checkAccess(vm.account_id, vm.domain_id);
  if (!options.allowDestroyed && vm.state === 'Destroyed') {
    throw paramError(`Unable to find virtual machine with ${param}=${id}: it is destroyed`);
  }
  return vmRow(vm);
}

export async function getNetwork(ctx: CommandContext, param: string, value?: string) {
  const id = value ?? ctx.params.str(param)!;
  const n = await ctx.db.selectFrom('networks').selectAll().where('uuid', '=', id).where('removed', 'is', null).executeTakeFirst();
  if (!n) throw notFound(ctx, param, id);
  return networkRow(n);
}

export async function getHost(ctx: CommandContext, param: string) {
  const id = ctx.params.str(param)!;
  const h = await ctx.db.selectFrom('hosts').selectAll().where('uuid', '=', id).where('removed', 'is', null).executeTakeFirst();
  if (!h) throw notFound(ctx, param, id);
  return h;
}

export const isRootAdmin = (ctx: CommandContext) => ctx.caller.role === 'admin';
export const isAdmin = (ctx: CommandContext) => ctx.caller.role === 'admin' || ctx.caller.role === 'domainadmin';

export function matchesKeyword(kw: string | undefined, ...fields: (string | null | undefined)[]): boolean {
  if (kw === undefined || kw === '') return true;
  const k = kw.toLowerCase();
  return fields.some((f) => f != null && f.toLowerCase().includes(k));
}
