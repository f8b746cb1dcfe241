// Security groups: create/delete/update/list and authorize/revoke ingress/egress, with CloudStack's
// validation order, error codes and messages (reference §4) and response shapes (§3.3).
import { randomUUID } from 'node:crypto';
import { ApiError, paramError, permissionDenied, internalError, type CommandContext, type CommandDef, type Params } from '../command.js';
import { DEFAULT_GROUP_NAME, accountByName } from '../../store/queries/accounts.js';
import { collationKey } from '../../store/queries/like.js';
import { countGroups, groupByNameCi, loadGroups, pageGroupIds, type GroupBundle, type GroupFilter } from '../../store/queries/securitygroups.js';
import { ACL_LIST_PARAMS, LIST_PARAMS, OWNER_PARAMS, csDate, overLimit, ownerInfo, paging } from './common.js';
import { isUuid } from '../params.js';

/** UUIDManagerImpl.IsUuidFormat: the only form a custom id may take. */
const CUSTOM_UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
import { isValidCidr } from './cidr.js';
import { lockAccount, lockGroups } from '../../store/queries/lock.js';
import { inList, valuesChunks } from '../../store/queries/batch.js';
import { deleteRuleHits } from '../../store/queries/rulehits.js';
import { ruleFromRow } from '../../store/rows.js';
import { authorizeDryRun, revokeDryRun } from './dryrun.js';
import { readLimits } from '../../store/queries/settings.js';
import { MAX_GROUPS_PER_ACCOUNT, MAX_RULES_PER_ACCOUNT, MAX_RULES_PER_GROUP } from '../../model/settings.js';

type Ctx = CommandContext;
type Db = Ctx['db'];

// ---------------------------------------------------------------- responses

function tagResponse(t: GroupBundle['tags'][number], resourceUuid: string, owners: Map<number, { account: string; domainid: string; domain: string }>) {
  const o = owners.get(t.account_id);
  return {
    key: t.key, value: t.value, resourcetype: t.resource_type, resourceid: resourceUuid,
    account: o?.account, domainid: o?.domainid, domain: o?.domain, ...(t.customer ? { customer: t.customer } : {}),
  };
}

function ruleResponse(r: GroupBundle['rules'][number], b: GroupBundle, tags: Record<string, unknown>[]): Record<string, unknown> {
  const out: Record<string, unknown> = { ruleid: r.uuid, protocol: r.protocol };
  if (r.protocol === 'icmp') { out.icmptype = r.start_port; out.icmpcode = r.end_port; }
  else { out.startport = r.start_port ?? 0; out.endport = r.end_port ?? 0; }
  if (r.allowed_group_id !== null) {
    const ref = b.referenced.get(r.allowed_group_id);
    out.securitygroupname = ref?.name;
    out.account = ref?.account;
  } else out.cidr = r.cidr;
  out.tags = tags;
  // Packets matched on all hosts since the rule was created (policy/hits.ts says how merged kernel
  // rules are attributed) and when that last grew.
  const hits = b.hits.get(r.id);
  out.hitcount = hits?.hitcount ?? 0;
  if (hits?.lasthit) out.lasthit = csDate(hits.lasthit);
  return out;
}

/** Full securitygroup responses for a bundle, in the order of `ids`. */
export async function groupResponses(db: Db, ids: number[], b: GroupBundle, opts: { members?: boolean } = {}): Promise<Record<string, unknown>[]> {
  const owners = await ownerInfo(db, [...b.groups.map((g) => g.account_id), ...b.tags.map((t) => t.account_id)]);
  const byId = new Map(b.groups.map((g) => [g.id, g]));
  const rulesByGroup = new Map<number, GroupBundle['rules']>();
  for (const r of b.rules) { const l = rulesByGroup.get(r.group_id) ?? []; l.push(r); rulesByGroup.set(r.group_id, l); }
  const ruleUuid = new Map(b.rules.map((r) => [r.id, r.uuid]));
  const tagsOf = new Map<string, Record<string, unknown>[]>();
  for (const t of b.tags) {
    const resUuid = t.resource_type === 'SecurityGroup' ? byId.get(t.resource_id)?.uuid : ruleUuid.get(t.resource_id);
    if (!resUuid) continue;
    const k = `${t.resource_type}:${t.resource_id}`;
    const l = tagsOf.get(k) ?? []; l.push(tagResponse(t, resUuid, owners)); tagsOf.set(k, l);
  }
  const out: Record<string, unknown>[] = [];
  for (const id of ids) {
    const g = byId.get(id);
    if (!g) continue;
    const o = owners.get(g.account_id);
    const rules = rulesByGroup.get(id) ?? [];
    const resp: Record<string, unknown> = {
      // No description given at creation is stored as '' and not shown (CloudStack stores null and omits it).
      id: g.uuid, name: g.name, description: g.description === '' ? undefined : g.description, account: o?.account, domainid: o?.domainid, domain: o?.domain, domainpath: o?.domainpath,
      ingressrule: rules.filter((r) => r.type === 'ingress').map((r) => ruleResponse(r, b, tagsOf.get(`SecurityGroupRule:${r.id}`) ?? [])),
      egressrule: rules.filter((r) => r.type === 'egress').map((r) => ruleResponse(r, b, tagsOf.get(`SecurityGroupRule:${r.id}`) ?? [])),
      tags: tagsOf.get(`SecurityGroup:${id}`) ?? [],
    };
    if (opts.members !== false) {
      const members = b.members.get(id) ?? [];
      resp.virtualmachinecount = members.length;
      resp.virtualmachineids = members;
    }
    out.push(resp);
  }
  return out;
}

async function groupResponse(db: Db, id: number): Promise<Record<string, unknown>> {
  const b = await loadGroups(db, [id]);
  return (await groupResponses(db, [id], b))[0]!;
}

// ---------------------------------------------------------------- lookups

async function groupByUuid(db: Db, uuid: string) {
  if (!isUuid(uuid)) return undefined;
  const g = await db.selectFrom('security_groups').selectAll().where('uuid', '=', uuid).executeTakeFirst();
  return g && { ...g, id: Number(g.id) };   // bigint since 016: pg returns text
}
async function nameInUse(db: Db, accountId: number, name: string, exceptId?: number): Promise<boolean> {
  // CloudStack's MySQL collation makes names case-insensitive per account. The account lock makes
  // check-then-insert atomic on PostgreSQL (READ COMMITTED lets concurrent creators all pass the check).
  if (!(await lockAccount(db, accountId))) throw paramError('Unable to find the account: it was deleted');
  const rows = await db.selectFrom('security_groups').select(['id', 'name']).where('account_id', '=', accountId).execute();
  const key = collationKey(name);
  return rows.some((r) => Number(r.id) !== exceptId && collationKey(r.name) === key);
}

/** Owner account id for name-based lookups (CloudStack's getEntityOwnerId / finalizeAccountId). */
async function ownerAccountId(ctx: Pick<Ctx, 'access' | 'params'>): Promise<number> {
  return (await ctx.access.resolveOwner(ctx.params, true)).accountId;
}

// ---------------------------------------------------------------- create / update / delete

const createSecurityGroup: CommandDef = {
  name: 'createSecurityGroup',
  description: 'Creates a security group',
  responseObject: 'securitygroup',
  params: [
    { name: 'name', type: 'string', required: true, description: 'name of the security group' },
    { name: 'description', type: 'string', description: 'the description of the security group' },
    ...OWNER_PARAMS,
  ],
  async handle(ctx) {
    const name = ctx.params.str('name')!;
    if (name.trim() === '') throw paramError('Security group name cannot be empty');
    const owner = await ctx.access.resolveOwner(ctx.params);
    if (await nameInUse(ctx.db, owner.accountId, name)) throw paramError(`Unable to create security group, a group with name ${name} already exists.`);
    // Counted under the account's lock (nameInUse), so concurrent creators cannot both pass.
    const limits = await readLimits(ctx.db);
    const owned = Number((await ctx.db.selectFrom('security_groups').select((eb) => eb.fn.countAll<number>().as('n')).where('account_id', '=', owner.accountId).executeTakeFirst())?.n ?? 0);
    if (owned + 1 > limits.groupsPerAccount) throw await overLimit(ctx.db, owner.accountId, 'security_group', MAX_GROUPS_PER_ACCOUNT, limits.groupsPerAccount, owned, 1);
    const uuid = randomUUID();
    const r = await ctx.db.insertInto('security_groups').values({
      uuid, name, description: ctx.params.str('description') ?? '', account_id: owner.accountId, domain_id: owner.domainId, created: ctx.now,
    }).returning('id').executeTakeFirstOrThrow().then((row) => ({ id: Number(row.id) }));   // bigint since 016: pg returns text
    ctx.event({ type: 'SG.CREATE', description: `creating security group: ${name}`, resourceType: 'SecurityGroup', resourceUuid: uuid, resourceName: name, accountId: owner.accountId, domainId: owner.domainId });
    ctx.changed({ kind: 'group', groupId: r.id });
    return { object: 'securitygroup', value: await groupResponse(ctx.db, r.id) };
  },
};

const updateSecurityGroup: CommandDef = {
  name: 'updateSecurityGroup',
  description: 'Updates a security group',
  since: '4.14.0.0',
  roles: ['admin'],
  responseObject: 'securitygroup',
  params: [
    { name: 'id', type: 'uuid', required: true, description: 'The ID of the security group.' },
    { name: 'name', type: 'string', description: 'The new name of the security group.' },
    { name: 'customid', type: 'string', description: "an optional field, in case you want to set a custom id to the resource. Allowed to Root Admins only" },
  ],
  async handle(ctx) {
    const id = ctx.params.str('id')!;
    const g = await groupByUuid(ctx.db, id);
    if (!g) throw paramError(`Unable to find security group: ${id}; failed to update security group.`);
    const customId = ctx.params.str('customid');
    if (customId !== undefined) {
      // BaseCustomIdCmd → UUIDManagerImpl.checkUuid: root admins only, a lower-case uuid (ids are looked
      // up lower-cased, so an upper-case one would make the group unreachable by id), not in use (its
      // own uuid included); the resource's uuid becomes the custom id.
      if (ctx.caller.role !== 'admin') throw permissionDenied('Please check your permissions, you are not allowed to create/update custom id');
      if (!CUSTOM_UUID_RE.test(customId)) throw paramError(`UUID: ${customId} doesn't follow the UUID format`);
      if (await groupByUuid(ctx.db, customId)) throw paramError(`UUID: ${customId} already exists so can't create/update with custom id`);
      await ctx.access.checkAccess(g.account_id, g.domain_id);
      await ctx.db.updateTable('security_groups').set({ uuid: customId }).where('id', '=', g.id).execute();
      await ctx.db.updateTable('tags').set({ resource_uuid: customId }).where('resource_type', '=', 'SecurityGroup').where('resource_id', '=', g.id).execute();
      ctx.changed({ kind: 'group', groupId: g.id });
    }
    const newName = ctx.params.str('name');
    if (newName === undefined) return { object: 'securitygroup', value: await groupResponse(ctx.db, g.id) };
    if (newName.trim() === '') throw paramError('Security group name cannot be empty');
    // CloudStack's order: access, then an unchanged name is a no-op (also `default` for the default
    // group), then the reserved name, then the default group's own name.
    await ctx.access.checkAccess(g.account_id, g.domain_id);
    if (newName !== g.name && newName.toLowerCase() === DEFAULT_GROUP_NAME) throw paramError('The security group name default is reserved');
    if (newName !== g.name && g.name.toLowerCase() === DEFAULT_GROUP_NAME) throw paramError('The default security group cannot be renamed');
    if (newName !== g.name) {
      // CloudStack does not check this; names must stay unique for name-based lookups to mean one group.
      if (await nameInUse(ctx.db, g.account_id, newName, g.id)) throw paramError(`Unable to update security group, a group with name ${newName} already exists.`);
      await ctx.db.updateTable('security_groups').set({ name: newName }).where('id', '=', g.id).execute();
      ctx.event({ type: 'SG.UPDATE', description: `updating security group: ${g.uuid} name to ${newName}`, resourceType: 'SecurityGroup', resourceUuid: g.uuid, resourceName: newName, accountId: g.account_id, domainId: g.domain_id });
      ctx.changed({ kind: 'group', groupId: g.id });
    }
    return { object: 'securitygroup', value: await groupResponse(ctx.db, g.id) };
  },
};

/** Delete a group with its rules, tags and the rules of other groups that reference it (account deletion). */
export async function deleteGroupCascade(ctx: Ctx, groupId: number): Promise<void> {
  // Exclusive: whatever pointed at it meanwhile (a rule, a VM, a tag) has committed or waits, then finds it gone.
  await lockGroups(ctx.db, [groupId]);
  const referencing = await ctx.db.selectFrom('security_group_rules').select(['id', 'group_id']).where('allowed_group_id', '=', groupId).execute();
  const ruleIds = (await ctx.db.selectFrom('security_group_rules').select('id').where('group_id', '=', groupId).execute()).map((r) => Number(r.id));
  const allRuleIds = [...new Set([...ruleIds, ...referencing.map((r) => Number(r.id))])];
  if (allRuleIds.length) {
    await ctx.db.deleteFrom('tags').where('resource_type', '=', 'SecurityGroupRule').where(inList(ctx.db, 'resource_id', allRuleIds)).execute();
    await ctx.db.deleteFrom('security_group_rules').where(inList(ctx.db, 'id', allRuleIds)).execute();
    await deleteRuleHits(ctx.db, allRuleIds);
  }
  await ctx.db.deleteFrom('tags').where('resource_type', '=', 'SecurityGroup').where('resource_id', '=', groupId).execute();
  await ctx.db.deleteFrom('security_group_vm_map').where('group_id', '=', groupId).execute();
  await ctx.db.deleteFrom('security_groups').where('id', '=', groupId).execute();
  for (const gid of new Set(referencing.map((r) => Number(r.group_id)))) if (gid !== groupId) ctx.changed({ kind: 'rules', groupId: gid });
  ctx.changed({ kind: 'group', groupId });
}

const deleteSecurityGroup: CommandDef = {
  name: 'deleteSecurityGroup',
  description: 'Deletes security group',
  responseObject: 'success',
  params: [
    { name: 'id', type: 'uuid', description: 'The ID of the security group. Mutually exclusive with name parameter' },
    { name: 'name', type: 'string', description: 'The name of the security group. Mutually exclusive with id parameter' },
    { name: 'account', type: 'string', description: 'The account of the security group. Must be specified with domain ID' },
    { name: 'domainid', type: 'uuid', description: 'The domain ID of account owning the security group' },
    { name: 'projectid', type: 'uuid', project: 'owner', description: 'The project of the security group' },
  ],
  async handle(ctx) {
    const id = ctx.params.str('id');
    const name = ctx.params.str('name');
    if (id !== undefined && name !== undefined) throw paramError('name and id parameters are mutually exclusive');
    let g;
    if (name !== undefined) {
      const accountId = await ownerAccountId(ctx);
      g = await groupByNameCi(ctx.db, accountId, name);
      if (!g) throw paramError(`Unable to find security group by name ${name} for the account id=${accountId}`);
    } else if (id !== undefined) {
      g = await groupByUuid(ctx.db, id);
      if (!g) throw paramError(`Unable to find network group: ${id}; failed to delete group.`);
    } else throw paramError('Either id or name parameter is required by deleteSecurityGroup command');
    await ctx.access.checkAccess(g.account_id, g.domain_id);
    if (g.name.toLowerCase() === DEFAULT_GROUP_NAME) throw paramError('The network group default is reserved');
    // The checks below hold until commit: rules and VMs that would point at it wait for this lock.
    if (!(await lockGroups(ctx.db, [g.id])).has(g.id)) throw paramError(`Unable to find network group: ${g.uuid}; failed to delete group.`);
    const allowing = await ctx.db.selectFrom('security_group_rules').select('id').where('allowed_group_id', '=', g.id).where('group_id', '!=', g.id).limit(1).execute();
    // CloudStack wraps ResourceInUseException in a ServerApiException here: code 536, cserrorcode 9999.
    if (allowing.length) throw new ApiError(536, 'Cannot delete group when there are security rules that allow this group', 9999);
    const members = await ctx.db.selectFrom('security_group_vm_map').select('vm_id').where('group_id', '=', g.id).limit(1).execute();
    if (members.length) throw new ApiError(536, "Cannot delete group when it's in use by virtual machines", 9999);
    await deleteGroupCascade(ctx, g.id);
    ctx.event({ type: 'SG.DELETE', description: `deleting security group: ${g.uuid}`, resourceType: 'SecurityGroup', resourceUuid: g.uuid, resourceName: g.name, accountId: g.account_id, domainId: g.domain_id });
    return { success: true };
  },
};

// ---------------------------------------------------------------- list

const listSecurityGroups: CommandDef = {
  name: 'listSecurityGroups',
  description: 'Lists security groups',
  responseObject: 'securitygroup',
  params: [
    { name: 'id', type: 'uuid', description: 'list the security group by the id provided' },
    { name: 'securitygroupname', type: 'string', description: 'lists security groups by name' },
    { name: 'virtualmachineid', type: 'uuid', description: 'lists security groups by virtual machine id' },
    { name: 'tags', type: 'map', description: 'List resources by tags (key/value pairs)' },
    ...ACL_LIST_PARAMS, ...LIST_PARAMS,
  ],
  async handle(ctx) {
    const p = ctx.params;
    const pg = paging(p);
    const vmId = p.str('virtualmachineid');
    let f: GroupFilter;
    if (vmId !== undefined) {
      const vm = await ctx.db.selectFrom('vms').select(['id', 'account_id', 'domain_id']).where('uuid', '=', vmId).where('removed', 'is', null).executeTakeFirst();
      if (!vm) throw paramError(`Unable to list network groups for virtual machine instance ${vmId}; instance not found.`);
      await ctx.access.checkAccess(vm.account_id, vm.domain_id);
      const groupIds = (await ctx.db.selectFrom('security_group_vm_map').select('group_id').where('vm_id', '=', vm.id).execute()).map((r) => Number(r.group_id));
      f = { accountIds: null, domainIds: null, groupIds };
    } else {
      const scope = await ctx.access.listScope(p);
      f = { ...scope, id: p.str('id'), name: p.str('securitygroupname'), keyword: p.str('keyword') };
      const tags = p.map('tags');
      if (tags) f.tags = tags.filter((t) => t.key !== undefined).map((t) => ({ key: t.key!, value: t.value }));
    }
    const count = await countGroups(ctx.db, f);
    const ids = count ? await pageGroupIds(ctx.db, f, pg.limit, pg.offset) : [];
    const bundle = await loadGroups(ctx.db, ids);
    return { list: 'securitygroup', items: await groupResponses(ctx.db, ids, bundle), count };
  },
};

// ---------------------------------------------------------------- authorize / revoke

interface RuleSpec { protocol: string; start: number; end: number }

/** CloudStack's protocol/port/ICMP validation (authorizeSecurityGroupRule steps 5–8). */
export function validateRuleSpec(protocolIn: string | undefined, startPort?: number, endPort?: number, icmpTypeIn?: number, icmpCodeIn?: number): RuleSpec {
  let protocol = (protocolIn ?? 'all').trim().toLowerCase();
  let icmpType = icmpTypeIn;
  let icmpCode = icmpCodeIn;
  if (/^\d+$/.test(protocol)) {
    const n = Number.parseInt(protocol, 10);
    if (n === 1) { protocol = 'icmp'; icmpType = -1; icmpCode = -1; }
    else if (n < 0 || n > 255) throw paramError(`Invalid protocol number: ${n}`);
    else protocol = String(n);
  } else if (!['tcp', 'udp', 'icmp', 'all'].includes(protocol)) {
    throw paramError(`Invalid protocol ${protocol}`);
  }
  const show = (v: number | undefined) => (v === undefined ? 'null' : String(v));
  if (protocol === 'icmp') {
    if (icmpType === undefined || icmpCode === undefined) throw paramError(`Invalid ICMP type/code specified, icmpType = ${show(icmpType)}, icmpCode = ${show(icmpCode)}`);
    if (icmpType === -1 && icmpCode !== -1) throw paramError('Invalid icmp code');
    if (icmpType !== -1 && icmpCode === -1) throw paramError('Invalid icmp code: need non-negative icmp code ');
    if (icmpCode > 255 || icmpType > 255 || icmpCode < -1 || icmpType < -1) throw paramError('Invalid icmp type/code ');
    return { protocol, start: icmpType, end: icmpCode };
  }
  if (protocol === 'all') {
    if (startPort !== undefined || endPort !== undefined) throw paramError('Cannot specify startPort or endPort without specifying protocol');
    return { protocol, start: 0, end: 0 };
  }
  if (protocol === 'tcp' || protocol === 'udp') {
    if (startPort === undefined || endPort === undefined) throw paramError(`Invalid port range specified, startPort = ${show(startPort)}, endPort = ${show(endPort)}`);
    let s = startPort; let e = endPort;
    if (s === 0 && e === 0) e = 65535;
    if (s > e) throw paramError(`Invalid port range ${s}:${e}`);
    if (s > 65535 || e > 65535 || s < -1 || e < -1) throw paramError(`Invalid port numbers ${s}:${e}`);
    if (s < 0 || e < 0) throw paramError(`Invalid port range ${s}:${e}`);
    return { protocol, start: s, end: e };
  }
  return { protocol, start: 0, end: 0 }; // other protocol numbers: ports ignored
}

const DRYRUN_PARAM = {
  name: 'dryrun', type: 'boolean' as const,
  // A value read as false would make the real change: `dryrun=1`, `yes` or an empty `dryrun=$DRY` are refused.
  strict: true,
  description: 'Palisade: check and report what the call would change (affected VMs and hosts, redundancy, connections) without changing anything; true or false',
};
const isDryRun = (p: Params) => p.bool('dryrun') === true;

const AUTH_PARAMS = (dir: string) => [
  { name: 'securitygroupid', type: 'uuid' as const, description: 'The ID of the security group. Mutually exclusive with securityGroupName parameter' },
  { name: 'securitygroupname', type: 'string' as const, description: 'The name of the security group. Mutually exclusive with securityGroupId parameter' },
  { name: 'protocol', type: 'string' as const, description: 'TCP is default. UDP is the other supported protocol' },
  { name: 'startport', type: 'integer' as const, description: `start port for this ${dir} rule` },
  { name: 'endport', type: 'integer' as const, description: `end port for this ${dir} rule` },
  { name: 'icmptype', type: 'integer' as const, description: 'type of the icmp message being sent' },
  { name: 'icmpcode', type: 'integer' as const, description: 'error code for this icmp message' },
  { name: 'cidrlist', type: 'list' as const, of: 'string' as const, description: 'the cidr list associated. Multiple entries must be separated by a single comma character (,).' },
  { name: 'usersecuritygrouplist', type: 'map' as const, description: 'user to security group mapping' },
  ...OWNER_PARAMS,
  DRYRUN_PARAM,
];

function describeAuthorize(dir: 'ingress' | 'egress', p: Params): string {
  const users = p.map('usersecuritygrouplist');
  const cidrs = p.list('cidrlist');
  let what: string;
  if (users) what = 'group list(group/account): ' + users.map((u) => `${u.group}/${u.account}`).join(', ');
  else if (cidrs) what = 'cidr list: ' + cidrs.join(', ');
  else what = `<error:  no ${dir} parameters>`;
  return `authorizing ${dir} to group: ${p.str('securitygroupid') ?? p.str('securitygroupname')} to ${what}`;
}

/** The group an authorize names (CloudStack's Cmd.getSecurityGroupId, with its texts). */
async function authorizeTarget(ctx: Pick<Ctx, 'db' | 'access' | 'params'>, command: string) {
  const gid = ctx.params.str('securitygroupid');
  const gname = ctx.params.str('securitygroupname');
  if (gid !== undefined && gname !== undefined) throw paramError('securityGroupId and securityGroupName parameters are mutually exclusive');
  if (gname !== undefined) {
    const accountId = await ownerAccountId(ctx);
    const g = await groupByNameCi(ctx.db, accountId, gname);
    if (!g) throw paramError(`Unable to find security group ${gname} for account id=${accountId}`);
    return g;
  }
  if (gid !== undefined) {
    const g = await groupByUuid(ctx.db, gid);
    if (!g) throw paramError(`Unable to find security group by id ${gid}`);
    return g;
  }
  throw paramError(`Either securityGroupId or securityGroupName is required by ${command} command`);
}

function makeAuthorize(dir: 'ingress' | 'egress'): CommandDef {
  const Dir = dir === 'ingress' ? 'Ingress' : 'Egress';
  const name = `authorizeSecurityGroup${Dir}`;
  return {
    name,
    description: dir === 'ingress' ? 'Authorizes a particular ingress rule for this security group' : 'Authorizes a particular egress rule for this security group',
    ...(dir === 'egress' ? { since: '3.0.0' } : {}),
    async: true,
    eventType: dir === 'ingress' ? 'SG.AUTH.INGRESS' : 'SG.AUTH.EGRESS',
    instanceType: 'SecurityGroup',
    responseObject: 'securitygroup',
    params: AUTH_PARAMS(dir),
    describe: (p) => describeAuthorize(dir, p),
    quiet: isDryRun,
    readOnly: isDryRun,
    // The group and the caller's right to it, at submission too (an unknown group: 431 at once, no job)
    async validate(ctx) {
      const g = await authorizeTarget(ctx, name);
      await ctx.access.checkAccess(g.account_id, g.domain_id);
      return { instanceUuid: g.uuid };   // the job's instance is the group (the Cmd's getApiResourceId)
    },
    async handle(ctx) {
      const p = ctx.params;
      // 1. the group (Cmd.getSecurityGroupId)
      const g = await authorizeTarget(ctx, name);
      // 2. something to allow
      const listed = p.list('cidrlist');
      const cidrs = listed && listed.length ? listed : undefined;
      const users = p.map('usersecuritygrouplist');
      if (cidrs === undefined && users === undefined) throw paramError('At least one cidr or at least one security group needs to be specified');
      // 3. access
      await ctx.access.checkAccess(g.account_id, g.domain_id);
      // 4. CIDRs
      for (const c of cidrs ?? []) if (!isValidCidr(c)) throw paramError(`Invalid cidr ${c}`);
      // 5–8. protocol, ICMP, ports
      const spec = validateRuleSpec(p.str('protocol'), p.int('startport'), p.int('endport'), p.int('icmptype'), p.int('icmpcode'));
      // 9. referenced groups, in the owner's domain
      const domainId = g.domain_id;
      const allowed: { id: number; group: string; account: string }[] = [];
      for (const u of users ?? []) {
        if (u.group === undefined || u.account === undefined) {
          throw paramError("Invalid user group specified, fields 'group' and 'account' cannot be null, please specify groups in the form:  userGroupList[0].group=XXX&userGroupList[0].account=YYY");
        }
        const acct = await accountByName(ctx.db, domainId, u.account);
        if (!acct) throw paramError(`Nonexistent account: ${u.account} when trying to authorize security group rule  for ${g.uuid}:${spec.protocol}:${spec.start}:${spec.end}`);
        const ref = await groupByNameCi(ctx.db, acct.id, u.group);
        if (!ref) throw paramError(`Nonexistent group ${u.group} for account ${u.account}/${domainId} is given, unable to authorize security group rule.`);
        if (ref.domain_id !== domainId) throw permissionDenied(`Can't add security group id=${ref.domain_id} as it belongs to different domain`);
        allowed.push({ id: ref.id, group: u.group, account: u.account });
      }
      // 10. insert, skipping exact duplicates of the same direction (under the group's lock; the
      // referenced groups share-locked, so none can be deleted while this rule points at it)
      const present = await lockGroups(ctx.db, [g.id], allowed.map((x) => x.id));
      if (!present.has(g.id)) throw paramError(`Unable to find security group by id ${g.uuid}`);
      const gone = allowed.find((x) => !present.has(x.id));
      if (gone) throw paramError(`Nonexistent group ${gone.group} for account ${gone.account}/${domainId} is given, unable to authorize security group rule.`);
      const existing = await ctx.db.selectFrom('security_group_rules').select(['protocol', 'start_port', 'end_port', 'cidr', 'allowed_group_id'])
        .where('group_id', '=', g.id).where('type', '=', dir).where('protocol', '=', spec.protocol)
        .where('start_port', '=', spec.start).where('end_port', '=', spec.end).execute();
      const have = new Set(existing.map((r) => r.allowed_group_id !== null ? `g:${r.allowed_group_id}` : `c:${r.cidr}`));
      const rows: { uuid: string; cidr: string | null; allowed_group_id: number | null }[] = [];
      for (const a of [...new Map(allowed.map((x) => [x.id, x])).values()].sort((x, y) => x.id - y.id)) {
        if (have.has(`g:${a.id}`)) continue;
        have.add(`g:${a.id}`);
        rows.push({ uuid: randomUUID(), cidr: null, allowed_group_id: a.id });
      }
      for (const c of cidrs ?? []) {
        if (have.has(`c:${c}`)) continue;
        have.add(`c:${c}`);
        rows.push({ uuid: randomUUID(), cidr: c, allowed_group_id: null });
      }
      // Tenant bounds: the group's count is exact (its lock is held); the account's may be passed by
      // concurrent calls on its other groups, by at most one call's rules each.
      const limits = await readLimits(ctx.db);
      const inGroup = Number((await ctx.db.selectFrom('security_group_rules').select((eb) => eb.fn.countAll<number>().as('n'))
        .where('group_id', '=', g.id).executeTakeFirst())?.n ?? 0);
      if (inGroup + rows.length > limits.rulesPerGroup) throw await overLimit(ctx.db, g.account_id, 'security_group_rule (per group)', MAX_RULES_PER_GROUP, limits.rulesPerGroup, inGroup, rows.length);
      const inAccount = Number((await ctx.db.selectFrom('security_group_rules')
        .select((eb) => eb.fn.countAll<number>().as('n')).where('account_id', '=', g.account_id).executeTakeFirst())?.n ?? 0);
      if (inAccount + rows.length > limits.rulesPerAccount) throw await overLimit(ctx.db, g.account_id, 'security_group_rule', MAX_RULES_PER_ACCOUNT, limits.rulesPerAccount, inAccount, rows.length);
      if (isDryRun(p)) return { raw: await authorizeDryRun(ctx, g, dir, spec, allowed.map((x) => x.id), cidrs ?? [], rows) };
      if (rows.length === 0) throw internalError(`Failed to authorize security group ${dir} rule(s)`);
      const inserted: { id: number }[] = [];
      for (const part of valuesChunks(rows.map((r) => ({
        uuid: r.uuid, group_id: g.id, account_id: g.account_id, type: dir, protocol: spec.protocol, start_port: spec.start, end_port: spec.end,
        cidr: r.cidr, allowed_group_id: r.allowed_group_id, created: ctx.now,
      })))) inserted.push(...(await ctx.db.insertInto('security_group_rules').values(part).returning('id').execute()).map((r) => ({ id: Number(r.id) })));
      ctx.event({
        type: dir === 'ingress' ? 'SG.AUTH.INGRESS' : 'SG.AUTH.EGRESS', description: describeAuthorize(dir, p).replace(/group: [^ ]+ to/, `group: ${g.uuid} to`),
        resourceType: 'SecurityGroup', resourceUuid: g.uuid, resourceName: g.name, accountId: g.account_id, domainId: g.domain_id,
      });
      ctx.changed({ kind: 'rules', groupId: g.id });
      const b = await loadGroups(ctx.db, [g.id], { members: false, ruleIds: inserted.map((r) => r.id) });
      const [full] = await groupResponses(ctx.db, [g.id], b, { members: false });
      // CloudStack builds this answer from an empty SecurityGroupResponse: the new rules, and the other
      // direction's rules and the members as empty lists (no member count).
      const value: Record<string, unknown> = { ...full, [dir === 'ingress' ? 'egressrule' : 'ingressrule']: [], virtualmachineids: [] };
      return { object: 'securitygroup', value };
    },
  };
}

function makeRevoke(dir: 'ingress' | 'egress'): CommandDef {
  const Dir = dir === 'ingress' ? 'Ingress' : 'Egress';
  return {
    name: `revokeSecurityGroup${Dir}`,
    description: dir === 'ingress' ? 'Deletes a particular ingress rule from this security group' : 'Deletes a particular egress rule from this security group',
    ...(dir === 'egress' ? { since: '3.0.0' } : {}),
    async: true,
    eventType: dir === 'ingress' ? 'SG.REVOKE.INGRESS' : 'SG.REVOKE.EGRESS',
    instanceType: 'SecurityGroup',
    responseObject: 'success',
    params: [{ name: 'id', type: 'uuid', required: true, description: `The ID of the ${dir} rule` }, DRYRUN_PARAM],
    describe: (p) => `revoking ${dir} rule id: ${p.str('id')}`,
    quiet: isDryRun,
    readOnly: isDryRun,
    // The rule and the caller's right to its group, at submission (the reference's text for a rule that
    // does not exist); the job checks again under the group's lock.
    async validate(ctx) {
      const id = ctx.params.str('id')!;
      const rule = await ctx.db.selectFrom('security_group_rules').select('group_id').where('uuid', '=', id).executeTakeFirst();
      if (!rule) throw paramError(`Unable to find security rule with id ${id}`);
      const g = await ctx.db.selectFrom('security_groups').select(['uuid', 'account_id', 'domain_id']).where('id', '=', rule.group_id).executeTakeFirst();
      if (!g) return;
      await ctx.access.checkAccess(g.account_id, g.domain_id);
      // The job's instance, as for authorize: type SecurityGroup, from submission on, failed or not.
      // RevokeSecurityGroupIngressCmd/EgressCmd report getApiResourceType() = SecurityGroup with
      // getApiResourceId() = the RULE's internal id, which ApiServer records as the job's instance_id and
      // async_job_view resolves in the security_group table (instance_uuid = security_group.uuid where
      // security_group.id = instance_id): CloudStack shows whichever group happens to share the rule's
      // number — often none, sometimes another account's. Reproducing that coincidence would name an
      // unrelated (possibly foreign) group; Palisade names the group the rule belongs to, which is what
      // the type says and what the caller was just allowed to change.
      return { instanceUuid: g.uuid };
    },
    async handle(ctx) {
      const id = ctx.params.str('id')!;
      const rule = await ctx.db.selectFrom('security_group_rules').selectAll().where('uuid', '=', id).executeTakeFirst();
      if (!rule) throw paramError(`Unable to find security rule with id ${id}`);
      if (rule.type !== dir) throw paramError(`Mismatch in rule type for security rule with id ${id}`);
      const g = await ctx.db.selectFrom('security_groups').selectAll().where('id', '=', rule.group_id).executeTakeFirstOrThrow().then((row) => ({ ...row, id: Number(row.id) }));
      await ctx.access.checkAccess(g.account_id, g.domain_id);
      if (isDryRun(ctx.params)) return { raw: { success: true, dryrun: await revokeDryRun(ctx, g.id, ruleFromRow(rule)) } };
      await lockGroups(ctx.db, [g.id]);
      // a revoke of the same rule through another server may have committed while this one waited
      if (!(await ctx.db.selectFrom('security_group_rules').select('id').where('id', '=', rule.id).executeTakeFirst())) throw paramError(`Unable to find security rule with id ${id}`);
      await ctx.db.deleteFrom('tags').where('resource_type', '=', 'SecurityGroupRule').where('resource_id', '=', rule.id).execute();
      await ctx.db.deleteFrom('security_group_rules').where('id', '=', rule.id).execute();
      await deleteRuleHits(ctx.db, [Number(rule.id)]);
      ctx.event({
        type: dir === 'ingress' ? 'SG.REVOKE.INGRESS' : 'SG.REVOKE.EGRESS', description: `revoking ${dir} rule id: ${id}`,
        resourceType: 'SecurityGroup', resourceUuid: g.uuid, resourceName: g.name, accountId: g.account_id, domainId: g.domain_id,
      });
      ctx.changed({ kind: 'rules', groupId: g.id });
      return { success: true };
    },
  };
}

export const securityGroupCommands: CommandDef[] = [
  createSecurityGroup, deleteSecurityGroup, updateSecurityGroup, listSecurityGroups,
  makeAuthorize('ingress'), makeAuthorize('egress'), makeRevoke('ingress'), makeRevoke('egress'),
];
