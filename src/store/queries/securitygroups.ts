// Security group queries: filtered, paged listing with batch loading of rules, tags, members and
// owners for one page (a constant number of queries per page, never one per group).
import { collationKey, containsCi, equalsCi } from './like.js';
import { inList } from './batch.js';
import type { Kysely, Transaction } from 'kysely';
import type { Database } from '../schema.js';

type Q = Transaction<Database> | Kysely<Database>;

export interface GroupFilter {
  accountIds: number[] | null;
  domainIds: number[] | null;
  id?: string;
  name?: string;
  keyword?: string;
  /** any of these key/value pairs (CloudStack ORs tag pairs) */
  tags?: { key: string; value?: string }[];
  /** restrict to these group ids (e.g. a VM's groups) */
  groupIds?: number[];
}


function filtered(db: Q, f: GroupFilter) {
  let q = db.selectFrom('security_groups as g');
  if (f.accountIds) q = q.where(inList(db, 'g.account_id', f.accountIds));
  if (f.domainIds) q = q.where(inList(db, 'g.domain_id', f.domainIds));
  if (f.groupIds) q = q.where(inList(db, 'g.id', f.groupIds));
  if (f.id !== undefined) q = q.where('g.uuid', '=', f.id);
  if (f.name !== undefined) q = q.where(equalsCi(db, 'g.name', f.name));
  if (f.keyword !== undefined) {
    const kw = f.keyword;
    q = q.where((eb) => eb.or([containsCi('g.name', kw), containsCi('g.description', kw)]));
  }
  if (f.tags && f.tags.length) {
    const tags = f.tags;
    q = q.where((eb) => eb.exists(eb.selectFrom('tags as t').select('t.id')
      .whereRef('t.resource_id', '=', 'g.id').where('t.resource_type', '=', 'SecurityGroup')
      // resource_tags is utf8_general_ci in CloudStack: key and value compare without regard to case
      .where((e2) => e2.or(tags.map((t) => t.value === undefined ? equalsCi(db, 't.key', t.key) : e2.and([equalsCi(db, 't.key', t.key), equalsCi(db, 't.value', t.value)]))))));
  }
  return q;
}

export async function countGroups(db: Q, f: GroupFilter): Promise<number> {
  const r = await filtered(db, f).select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
  return Number(r.n);
}

export async function pageGroupIds(db: Q, f: GroupFilter, limit: number | null, offset: number): Promise<number[]> {
  let q = filtered(db, f).select('g.id').orderBy('g.id');
  if (limit !== null) q = q.limit(limit).offset(offset);
  else if (offset) q = q.limit(Number.MAX_SAFE_INTEGER).offset(offset);
  return (await q.execute()).map((r) => Number(r.id));
}

export interface GroupBundle {
  groups: { id: number; uuid: string; name: string; description: string; account_id: number; domain_id: number }[];
  rules: { id: number; uuid: string; group_id: number; type: string; protocol: string; start_port: number | null; end_port: number | null; cidr: string | null; allowed_group_id: number | null }[];
  /** referenced groups: id → name and owner account name */
  referenced: Map<number, { name: string; account: string }>;
  tags: { resource_type: string; resource_id: number; key: string; value: string; account_id: number; domain_id: number; customer: string | null }[];
  members: Map<number, string[]>;
  /** rule id → hit counter (rules never hit are absent) */
  hits: Map<number, { hitcount: number; lasthit: string | null }>;
}

const chunk = <T>(xs: T[], n = 500): T[][] => { const o: T[][] = []; for (let i = 0; i < xs.length; i += n) o.push(xs.slice(i, i + n)); return o; };

/** Everything a page of groups needs for its responses, in a handful of queries. */
export async function loadGroups(db: Q, ids: number[], opts: { members?: boolean; ruleIds?: number[] } = {}): Promise<GroupBundle> {
  const b: GroupBundle = { groups: [], rules: [], referenced: new Map(), tags: [], members: new Map(), hits: new Map() };
  if (ids.length === 0) return b;
  for (const part of chunk(ids)) {
    for (const row of await db.selectFrom('security_groups').select(['id', 'uuid', 'name', 'description', 'account_id', 'domain_id']).where(inList(db, 'id', part)).execute()) b.groups.push({ ...row, id: Number(row.id) });
    let rq = db.selectFrom('security_group_rules')
      .select(['id', 'uuid', 'group_id', 'type', 'protocol', 'start_port', 'end_port', 'cidr', 'allowed_group_id']).where(inList(db, 'group_id', part));
    if (opts.ruleIds) rq = rq.where(inList(db, 'id', opts.ruleIds));
    for (const row of await rq.orderBy('id').execute()) {
      b.rules.push({ ...row, id: Number(row.id), group_id: Number(row.group_id), allowed_group_id: row.allowed_group_id === null ? null : Number(row.allowed_group_id) });
    }
    for (const row of await db.selectFrom('tags').select(['resource_type', 'resource_id', 'key', 'value', 'account_id', 'domain_id', 'customer'])
      .where('resource_type', '=', 'SecurityGroup').where(inList(db, 'resource_id', part)).orderBy('id').execute()) b.tags.push({ ...row, resource_id: Number(row.resource_id) });
    if (opts.members !== false) {
      const rows = await db.selectFrom('security_group_vm_map as m').innerJoin('vms as v', 'v.id', 'm.vm_id')
        .select(['m.group_id', 'v.uuid']).where(inList(db, 'm.group_id', part)).where('v.removed', 'is', null).orderBy('v.id').execute();
      for (const r of rows) {
        const groupId = Number(r.group_id);
        const l = b.members.get(groupId) ?? [];
        l.push(r.uuid);
        b.members.set(groupId, l);
      }
    }
  }
  // rule tags by sub-select on the page's groups: one query however many rules the page has
  for (const part of chunk(ids)) {
    let sub = db.selectFrom('security_group_rules').select('id').where(inList(db, 'group_id', part));
    if (opts.ruleIds) sub = sub.where(inList(db, 'id', opts.ruleIds));
    for (const row of await db.selectFrom('tags').select(['resource_type', 'resource_id', 'key', 'value', 'account_id', 'domain_id', 'customer'])
      .where('resource_type', '=', 'SecurityGroupRule').where('resource_id', 'in', sub).orderBy('id').execute()) b.tags.push({ ...row, resource_id: Number(row.resource_id) });
  }
  // hit counters by join on the page's groups: one query however many rules the page has
  for (const part of chunk(ids)) {
    let hq = db.selectFrom('security_group_rule_hits as h').innerJoin('security_group_rules as r', 'r.id', 'h.rule_id')
      .select(['h.rule_id', 'h.hitcount', 'h.lasthit']).where(inList(db, 'r.group_id', part));
    if (opts.ruleIds) hq = hq.where(inList(db, 'h.rule_id', opts.ruleIds));
    for (const h of await hq.execute()) b.hits.set(Number(h.rule_id), { hitcount: Number(h.hitcount), lasthit: h.lasthit });
  }
  const refIds = [...new Set(b.rules.map((r) => r.allowed_group_id).filter((x): x is number => x !== null))];
  for (const part of chunk(refIds)) {
    const rows = await db.selectFrom('security_groups as g').innerJoin('accounts as a', 'a.id', 'g.account_id')
      .select(['g.id', 'g.name', 'a.name as account']).where(inList(db, 'g.id', part)).execute();
    for (const r of rows) b.referenced.set(Number(r.id), { name: r.name, account: r.account });
  }
  return b;
}

/** Member VM ids of groups (for change fan-out callers that need them). */
export async function groupOfVm(db: Q, vmId: number): Promise<number[]> {
  return (await db.selectFrom('security_group_vm_map').select('group_id').where('vm_id', '=', vmId).execute()).map((r) => Number(r.group_id));
}

/**
 * An account's group by name, as CloudStack's MySQL collation finds it: without regard to case (names
 * are unique per account ignoring case, createSecurityGroup). The exact name first (indexed); else the
 * account's groups compared with JavaScript's case folding, the same as the uniqueness check (an
 * account holds at most security.group.max.per.account groups).
 */
export async function groupByNameCi(db: Q, accountId: number, name: string) {
  const exact = await db.selectFrom('security_groups').selectAll().where('account_id', '=', accountId).where('name', '=', name).executeTakeFirst();
  if (exact) return { ...exact, id: Number(exact.id) };   // bigint since 016: pg returns text
  const folded = collationKey(name);
  const all = await db.selectFrom('security_groups').selectAll().where('account_id', '=', accountId).execute();
  const found = all.find((g) => collationKey(g.name) === folded);
  return found && { ...found, id: Number(found.id) };
}
