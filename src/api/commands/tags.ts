// Resource tags (createTags / deleteTags / listTags) for SecurityGroup and SecurityGroupRule. An account
// holds at most security.group.max.tags.per.account tags (CloudStack has no bound: one user stored
// 120,000, and every page listing their groups carried them all); a createTags over it adds nothing.
import { randomUUID } from 'node:crypto';
import { paramError, type CommandContext, type CommandDef } from '../command.js';
import { ACL_LIST_PARAMS, LIST_PARAMS, overLimit, ownerInfo, paging } from './common.js';
import { readLimits } from '../../store/queries/settings.js';
import { MAX_TAGS_PER_ACCOUNT } from '../../model/settings.js';
import { containsCi, equalsCi } from '../../store/queries/like.js';
import { inList, valuesChunks } from '../../store/queries/batch.js';
import { lockAccount, lockGroups } from '../../store/queries/lock.js';

type Ctx = CommandContext;

/** Taggable resource types, CloudStack's ResourceObjectType spelling. */
const TYPES = ['SecurityGroup', 'SecurityGroupRule'] as const;
type TagType = (typeof TYPES)[number];

function resourceType(s: string): TagType {
  const t = TYPES.find((x) => x.toLowerCase() === s.trim().toLowerCase());
  if (!t) throw paramError(`Invalid resource type: ${s}`);
  return t;
}

async function resolveResource(ctx: Ctx, type: TagType, uuid: string): Promise<{ id: number; uuid: string; accountId: number; domainId: number; groupId: number }> {
  if (type === 'SecurityGroup') {
    const g = await ctx.db.selectFrom('security_groups').select(['id', 'uuid', 'account_id', 'domain_id']).where('uuid', '=', uuid).executeTakeFirst();
    if (!g) throw paramError(`Unable to find resource by id ${uuid} and type ${type}`);
    return { id: Number(g.id), uuid: g.uuid, accountId: g.account_id, domainId: g.domain_id, groupId: Number(g.id) };
  }
  const r = await ctx.db.selectFrom('security_group_rules as r').innerJoin('security_groups as g', 'g.id', 'r.group_id')
    .select(['r.id', 'r.uuid', 'g.account_id', 'g.domain_id', 'g.id as gid']).where('r.uuid', '=', uuid).executeTakeFirst();
  if (!r) throw paramError(`Unable to find resource by id ${uuid} and type ${type}`);
  return { id: Number(r.id), uuid: r.uuid, accountId: r.account_id, domainId: r.domain_id, groupId: Number(r.gid) };
}

const createTags: CommandDef = {
  name: 'createTags',
  description: 'Creates resource tag(s)',
  since: '4.0.0',
  async: true,
  eventType: 'CREATE_TAGS',
  responseObject: 'success',
  describe: (p) => `creating tags on ${p.str('resourcetype')} ${p.str('resourceids')}`,
  params: [
    { name: 'tags', type: 'map', required: true, description: 'Map of tags (key/value pairs)' },
    { name: 'resourcetype', type: 'string', required: true, description: 'type of the resource' },
    { name: 'resourceids', type: 'list', of: 'string', required: true, description: 'list of resources to create the tags for' },
    { name: 'customer', type: 'string', description: 'identifies client specific tag. When the value is not null, the tag can\'t be used by cloudStack code internally' },
  ],
  async handle(ctx) {
    const type = resourceType(ctx.params.str('resourcetype')!);
    const tags = ctx.params.map('tags') ?? [];
    for (const t of tags) {
      if (!t.key || t.key.trim() === '') throw paramError('Tag key cannot be empty');
      if (t.value === undefined || t.value === '') throw paramError(`Value for the key ${t.key} is either null or empty`);
    }
    const ids = ctx.params.list('resourceids') ?? [];
    if (ids.length === 0) throw paramError('Unable to execute API command createtags due to missing parameter resourceids');
    const resources = new Map<number, Awaited<ReturnType<typeof resolveResource>>>();
    for (const uuid of ids) {
      const res = await resolveResource(ctx, type, uuid);
      await ctx.access.checkAccess(res.accountId, res.domainId);
      resources.set(res.id, res);
    }
    // The owners' accounts exclusive (the duplicate and per-account checks below hold until commit:
    // createTags calls for one account run one after another), then the resources' groups shared (a
    // group or rule deleted meanwhile is found gone, and none is deleted under the new tags).
    for (const accountId of [...new Set([...resources.values()].map((r) => r.accountId))].sort((x, y) => x - y)) {
      if (!(await lockAccount(ctx.db, accountId))) throw paramError(`Unable to find resource owner account (it was deleted)`);
    }
    const groupIds = [...resources.values()].map((r) => r.groupId);
    const present = await lockGroups(ctx.db, [], groupIds);
    const stillThere = type === 'SecurityGroup' ? present : new Set((await ctx.db.selectFrom('security_group_rules').select('id')
      .where(inList(ctx.db, 'id', [...resources.keys()])).execute()).map((r) => Number(r.id)));
    for (const res of resources.values()) {
      if (!present.has(res.groupId) || !stillThere.has(res.id)) throw paramError(`Unable to find resource by id ${res.uuid} and type ${type}`);
    }
    // Duplicates (a key already on a resource, or twice in this call): one read for all the resources.
    const keys = new Set<string>();
    const first = resources.values().next().value!;
    for (const t of tags) {
      // (a key given twice: the second would meet the first, as when they were written one by one)
      if (keys.has(t.key!)) throw paramError(`tag ${t.key} already on ${type} with id ${first.uuid}`);
      keys.add(t.key!);
    }
    const existing = new Set<string>();
    for (const part of valuesChunks([...resources.keys()].map((id) => ({ id })))) {
      const rows = await ctx.db.selectFrom('tags').select(['resource_id', 'key']).where('resource_type', '=', type)
        .where(inList(ctx.db, 'resource_id', part.map((r) => r.id))).execute();
      for (const r of rows) existing.add(`${r.resource_id}\u0000${r.key}`);
    }
    for (const res of resources.values()) {
      for (const t of tags) if (existing.has(`${res.id}\u0000${t.key}`)) throw paramError(`tag ${t.key} already on ${type} with id ${res.uuid}`);
    }
    // Tenant bound: what each account would hold after this call (checked before anything is written).
    const limits = await readLimits(ctx.db);
    const adding = new Map<number, number>();
    for (const res of resources.values()) adding.set(res.accountId, (adding.get(res.accountId) ?? 0) + tags.length);
    for (const [accountId, n] of adding) {
      const have = Number((await ctx.db.selectFrom('tags').select((eb) => eb.fn.countAll<number>().as('n')).where('account_id', '=', accountId).executeTakeFirst())?.n ?? 0);
      if (have + n > limits.tagsPerAccount) throw await overLimit(ctx.db, accountId, 'resource_tag', MAX_TAGS_PER_ACCOUNT, limits.tagsPerAccount, have, n);
    }
    const customer = ctx.params.str('customer') ?? null;
    const rows = [...resources.values()].flatMap((res) => tags.map((t) => ({
      uuid: randomUUID(), resource_type: type, resource_id: res.id, resource_uuid: res.uuid, key: t.key!, value: t.value!,
      account_id: res.accountId, domain_id: res.domainId, customer, created: ctx.now,
    })));
    for (const part of valuesChunks(rows)) await ctx.db.insertInto('tags').values(part).execute();
    for (const res of resources.values()) {
      ctx.event({ type: 'CREATE_TAGS', description: `creating tags on ${type} ${res.uuid}`, resourceType: type, resourceUuid: res.uuid, accountId: res.accountId, domainId: res.domainId });
    }
    return { success: true };
  },
};

const deleteTags: CommandDef = {
  name: 'deleteTags',
  description: 'Deleting resource tag(s)',
  since: '4.0.0',
  async: true,
  eventType: 'DELETE_TAGS',
  responseObject: 'success',
  describe: (p) => `deleting tags on ${p.str('resourcetype')} ${p.str('resourceids')}`,
  params: [
    { name: 'tags', type: 'map', description: 'Delete tags matching key/value pairs' },
    { name: 'resourcetype', type: 'string', required: true, description: 'Delete tag by resource type' },
    { name: 'resourceids', type: 'list', of: 'string', required: true, description: 'Delete tags for resource id(s)' },
  ],
  async handle(ctx) {
    const type = resourceType(ctx.params.str('resourcetype')!);
    const filters = ctx.params.map('tags');
    let deleted = 0;
    for (const uuid of ctx.params.list('resourceids') ?? []) {
      const res = await resolveResource(ctx, type, uuid);
      await ctx.access.checkAccess(res.accountId, res.domainId);
      const rows = await ctx.db.selectFrom('tags').select(['id', 'key', 'value']).where('resource_type', '=', type).where('resource_id', '=', res.id).execute();
      const victims = rows.filter((r) => !filters || filters.some((f) => f.key === r.key && (f.value === undefined || f.value === r.value)));
      if (victims.length) await ctx.db.deleteFrom('tags').where(inList(ctx.db, 'id', victims.map((v) => v.id))).execute();
      deleted += victims.length;
      ctx.event({ type: 'DELETE_TAGS', description: `deleting tags on ${type} ${res.uuid}`, resourceType: type, resourceUuid: res.uuid, accountId: res.accountId, domainId: res.domainId });
    }
    if (deleted === 0) throw paramError('Unable to find any tags which conform to specified delete parameters.');
    return { success: true };
  },
};

const listTags: CommandDef = {
  name: 'listTags',
  description: 'List resource tag(s)',
  since: '4.0.0',
  responseObject: 'tag',
  params: [
    { name: 'resourcetype', type: 'string', description: 'list by resource type' },
    { name: 'resourceid', type: 'string', description: 'list by resource id' },
    { name: 'key', type: 'string', description: 'list by key' },
    { name: 'value', type: 'string', description: 'list by value' },
    { name: 'customer', type: 'string', description: 'list by customer name' },
    ...ACL_LIST_PARAMS, ...LIST_PARAMS,
  ],
  async handle(ctx) {
    const p = ctx.params;
    const pg = paging(p);
    const scope = await ctx.access.listScope(p);
    let q = ctx.db.selectFrom('tags').selectAll();
    if (scope.accountIds) q = q.where(inList(ctx.db, 'account_id', scope.accountIds));
    if (scope.domainIds) q = q.where(inList(ctx.db, 'domain_id', scope.domainIds));
    const rt = p.str('resourcetype'); if (rt) q = q.where('resource_type', '=', resourceType(rt));
    const rid = p.str('resourceid'); if (rid) q = q.where('resource_uuid', '=', rid);
    // resource_tags is utf8_general_ci in CloudStack: these filters ignore case
    const key = p.str('key'); if (key) q = q.where(equalsCi(ctx.db, 'key', key));
    const value = p.str('value'); if (value) q = q.where(equalsCi(ctx.db, 'value', value));
    const cust = p.str('customer'); if (cust) q = q.where('customer', '=', cust);
    const kw = p.str('keyword');
    if (kw) q = q.where((eb) => eb.or([containsCi('key', kw), containsCi('value', kw)]));
    // Counted and paged by the store (tenants create tags without bound).
    const total = await q.clearSelect().select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    let pq = q.orderBy('id');
    if (pg.limit !== null) pq = pq.limit(pg.limit).offset(pg.offset);
    else if (pg.offset) pq = pq.limit(Number.MAX_SAFE_INTEGER).offset(pg.offset);
    const page = await pq.execute();
    const owners = await ownerInfo(ctx.db, page.map((r) => r.account_id));
    return {
      list: 'tag', count: Number(total.n),
      items: page.map((t) => {
        const o = owners.get(t.account_id);
        return { key: t.key, value: t.value, resourcetype: t.resource_type, resourceid: t.resource_uuid, account: o?.account, domainid: o?.domainid, domain: o?.domain, domainpath: o?.domainpath, ...(t.customer ? { customer: t.customer } : {}) };
      }),
    };
  },
};

export const tagCommands: CommandDef[] = [createTags, deleteTags, listTags];
