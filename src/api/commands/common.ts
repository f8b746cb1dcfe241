// Shared pieces of command modules: list paging, owner fields of responses, standard parameters.
import type { Kysely, Transaction } from 'kysely';
import type { Database } from '../../store/schema.js';
import { ApiError, paramError, type CommandContext, type ParamDef, type Params } from '../command.js';
import { displayDomainPath } from '../../store/queries/accounts.js';
import { inList } from '../../store/queries/batch.js';
import type { Family } from '../../model/types.js';
import type { AddressSet } from '../../policy/ir.js';
import type { CloudState } from '../../policy/state.js';
import { compileAddressSet, parseAddressSetId } from '../../policy/sets.js';

type Q = Transaction<Database> | Kysely<Database>;

export const MAX_PAGE_SIZE = 500;

export const LIST_PARAMS: ParamDef[] = [
  { name: 'keyword', type: 'string', description: 'List by keyword' },
  { name: 'page', type: 'integer', description: 'the page number of the result set (1-based)' },
  { name: 'pagesize', type: 'integer', description: 'the number of items per page; -1 for all' },
];
export const ACL_LIST_PARAMS: ParamDef[] = [
  { name: 'account', type: 'string', description: 'list resources by account. Must be used with the domainId parameter.' },
  { name: 'domainid', type: 'uuid', description: 'list only resources belonging to the domain specified' },
  { name: 'isrecursive', type: 'boolean', description: "defaults to false, but if true, lists all resources from the parent specified by the domainId till leaves." },
  { name: 'listall', type: 'boolean', description: "If set to false, list only resources belonging to the command's caller; if set to true - list resources that the caller is authorized to see. Default value is false" },
  { name: 'projectid', type: 'uuid', project: 'list', description: 'list objects by project' },
];
export const OWNER_PARAMS: ParamDef[] = [
  { name: 'account', type: 'string', description: 'an optional account for the resource. Must be used with domainId.' },
  { name: 'domainid', type: 'uuid', description: 'an optional domainId for the resource. If the account parameter is used, domainId must also be used.' },
  { name: 'projectid', type: 'uuid', project: 'owner', description: 'create the resource for the project' },
];

/** CloudStack's BaseListCmd paging: limit null = unlimited. */
export function paging(params: Params): { limit: number | null; offset: number } {
  const page = params.int('page');
  const size = params.int('pagesize');
  if (size !== undefined && size > MAX_PAGE_SIZE) throw paramError(`Page size can't exceed max allowed page size value: ${MAX_PAGE_SIZE}`);
  if (size === -1 && page !== undefined) throw paramError("Can't specify page parameter when pagesize is -1 (Unlimited)");
  if (page === undefined && size !== undefined && size !== -1) throw paramError('"page" parameter is required when "pagesize" is specified');
  if (size === undefined && page !== undefined) throw paramError('"pagesize" parameter is required when "page" is specified');
  if (size !== undefined && size < -1) throw paramError(`Invalid page size: ${size}`);
  const limit = size === -1 ? null : size ?? MAX_PAGE_SIZE;
  const offset = limit !== null && page !== undefined && page > 0 ? limit * (page - 1) : 0;
  return { limit, offset };
}

export function pageOf<T>(items: T[], p: { limit: number | null; offset: number }): T[] {
  return p.limit === null ? items.slice(p.offset) : items.slice(p.offset, p.offset + p.limit);
}

export interface OwnerInfo { account: string; accountUuid: string; domainid: string; domain: string; domainpath: string }

/** account/domain names and uuids for a set of account ids, in one query. */
export async function ownerInfo(db: Q, accountIds: number[]): Promise<Map<number, OwnerInfo>> {
  const out = new Map<number, OwnerInfo>();
  const ids = [...new Set(accountIds)];
  if (ids.length === 0) return out;
  for (let i = 0; i < ids.length; i += 500) {
    const rows = await db.selectFrom('accounts as a').innerJoin('domains as d', 'd.id', 'a.domain_id')
      .select(['a.id', 'a.name', 'a.uuid', 'd.uuid as duuid', 'd.name as dname', 'd.path'])
      .where(inList(db, 'a.id', ids.slice(i, i + 500))).execute();
    for (const r of rows) out.set(r.id, { account: r.name, accountUuid: r.uuid, domainid: r.duuid, domain: r.dname, domainpath: displayDomainPath(r.path) });
  }
  return out;
}

/** ISO time as CloudStack prints it: 2026-11-21T09:47:47+0000 */
export function csDate(iso: string | null | undefined): string | undefined {
  if (!iso) return undefined;
  return iso.replace(/\.\d{3}Z$/, '+0000').replace(/Z$/, '+0000');
}

/** Split into chunks for `in (…)` lists (SQLite's variable limit, PostgreSQL's too). */
export function chunks<T>(xs: T[], n = 500): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}

/** A CloudStack date filter (yyyy-MM-dd, optionally with time and offset) as an ISO bound; 431 when not a real date. */
export function dateBound(s: string, end: boolean, command: string): string {
  const t = s.trim();
  const m = /^(\d{4}-\d{2}-\d{2})(?:[ T](\d{2}:\d{2}:\d{2})(Z|[+-]\d{2}:?\d{2})?)?$/.exec(t);
  if (!m) throw paramError(`Unable to parse date ${s} for command ${command}, please pass dates in the format mentioned in the api documentation`);
  const tz = m[3] ? (m[3] === 'Z' ? 'Z' : m[3].replace(/^([+-]\d{2})(\d{2})$/, '$1:$2')) : 'Z';
  const time = m[2] ?? (end ? '23:59:59' : '00:00:00');
  const d = new Date(`${m[1]}T${time}${end ? '.999' : '.000'}${tz}`);
  // Date rolls 2026-02-31 over to March: a date that does not come back as written is invalid.
  if (Number.isNaN(d.getTime()) || (tz === 'Z' && d.toISOString().slice(0, 10) !== m[1])) throw paramError(`Unable to parse date ${s} for command ${command}, please pass dates in the format mentioned in the api documentation`);
  return d.toISOString();
}

/**
 * A tenant bound (model/settings.ts: security.group.max.*) that this call would exceed: CloudStack's
 * ResourceAllocationException (535), naming the bound's setting so an operator knows what to raise.
 */
export async function overLimit(db: Q, accountId: number, what: string, setting: string, limit: number, have: number, adding: number): Promise<ApiError> {
  const a = await db.selectFrom('accounts as a').innerJoin('domains as d', 'd.id', 'a.domain_id').select(['a.name', 'd.uuid']).where('a.id', '=', accountId).executeTakeFirst();
  return new ApiError(535, `Maximum number of resources of type '${what}' for account name=${a?.name ?? accountId} in domain id=${a?.uuid ?? '?'} has been exceeded: `
    + `${have} exist, this call adds ${adding}, the limit is ${limit} (${setting})`, 9999);
}

/**
 * The address sets `setIds` (referenced by a policy) as the caller may see them. A group of an account
 * the caller may not operate on (checkAccess) is opaque: its members are that account's business, so
 * whatever the API tells the caller (explain, dry runs) must not depend on which addresses they hold.
 * Its sets count as empty in `sets`; `assuming(family, addresses)` is the same view with `addresses`
 * put into every opaque set of that family, to ask whether an answer would turn on membership (null
 * when nothing is opaque: it cannot).
 */
export async function callerSets(ctx: CommandContext, state: CloudState, setIds: Iterable<string>): Promise<{
  sets: Map<string, AddressSet>;
  assuming: ((family: Family, addresses: string[]) => Map<string, AddressSet>) | null;
}> {
  const refs = [...new Set(setIds)].flatMap((id) => { const s = parseAddressSetId(id); return s ? [{ id, ...s }] : []; });
  const groupIds = [...new Set(refs.map((r) => r.groupId))];
  const opaque = new Set<number>();
  if (groupIds.length) {
    const owners = (await ctx.db.selectFrom('security_groups').select(['id', 'account_id', 'domain_id']).where(inList(ctx.db, 'id', groupIds)).execute())
      .map((o) => ({ ...o, id: Number(o.id) }));   // bigint since 016: pg returns text
    const found = new Set(owners.map((o) => o.id));
    for (const id of groupIds) if (!found.has(id)) opaque.add(id); // gone meanwhile: nothing to show either
    for (const o of owners) {
      try {
        await ctx.access.checkAccess(o.account_id, o.domain_id);
      } catch (err) {
        if (err instanceof ApiError && err.code === 531) opaque.add(o.id);
        else throw err;
      }
    }
  }
  const sets = new Map<string, AddressSet>();
  const hidden = refs.filter((r) => opaque.has(r.groupId));
  for (const r of refs) sets.set(r.id, opaque.has(r.groupId) ? { id: r.id, family: r.family, members: [] } : compileAddressSet(state, r.groupId, r.family));
  const assuming = (family: Family, addresses: string[]) => {
    const view = new Map(sets);
    for (const h of hidden) if (h.family === family) view.set(h.id, { id: h.id, family, members: addresses });
    return view;
  };
  return { sets, assuming: hidden.length ? assuming : null };
}
