// Dry runs of authorize/revoke (`dryrun=true`): after every check the real command makes, report what it
// would touch instead of doing it. Nothing is written (the dispatcher records no events for the job;
// the job row itself is the only write) and no change is published, so no kernel changes either.
//
// Result `dryrun`:
// - affectedvirtualmachines / affectedhosts: the group's members (their policy includes the group's
//   rules) and the hosts where members run (where kernels would change); hosts are named to root
//   admins only (others get affectedhostcount), as a VM's host is everywhere else in the API.
// - authorize: `redundant` (policy/redundancy.ts: per family, nothing new is allowed, whatever the
//   membership of referenced groups), per-family detail with the existing rules that cover it (the
//   first 100 in `coveredby`, all counted in `coveredbycount`) or a packet that shows it is not covered,
//   `newrulecount` (0: every rule already exists, the real call fails), and `restrictsegress` (the first
//   egress rule of a family closes open egress). The redundancy work is bounded: a group with too many
//   rules to decide within it gets `decided: false` (and `redundant: false`) for that family.
// - revoke: `redundant` (the remaining rules still allow everything it allowed), `opensegress` (the
//   last egress rule of a family: egress opens), and `trackedconnections`: the connections tracked right
//   now on the affected VMs that no remaining rule would allow, asked of the agents through the
//   ConnectionInspector within a time bound. Without one (before the agents can answer) it reports
//   status "unavailable"; hosts that do not answer in time, or answers cut at the per-VM limit, make
//   it "partial". Another account's referenced groups count as empty; a connection that would stay
//   only if its peer were their member is flagged `dependsonmembership`.
import type { CommandContext } from '../command.js';
import type { Family, SecurityGroupRule } from '../../model/types.js';
import type { TrackedConnection } from '../../model/telemetry.js';
import { ruleRedundancy, type FamilyRedundancy } from '../../policy/redundancy.js';
import { disallowedConnections } from '../../policy/connections.js';
import { compileVm } from '../../policy/api.js';
import { referencedSets } from '../../policy/host.js';
import { loadPolicyInput } from '../../store/queries/cloud.js';
import { RULE_COLUMNS, ruleFromRow } from '../../store/rows.js';
import { callerSets, ownerInfo } from './common.js';
import { inList } from '../../store/queries/batch.js';

type Db = CommandContext['db'];

/** Bounds of the conntrack question: per VM entries an agent returns, and how long we wait. */
export const TRACKED_LIMIT_PER_VM = 1000;
export const TRACKED_TIMEOUT_MS = 3000;
/** Connections listed in the result (all are counted). */
const TRACKED_LISTED = 100;

export interface Affected {
  vms: { id: number; uuid: string; name: string; state: string; hostId: number | null }[];
  hosts: { id: number; uuid: string; name: string }[];
}

/** Members of a group, and the hosts where the running ones are placed. */
export async function affectedBy(db: Db, groupId: number): Promise<Affected> {
  const vms = await db.selectFrom('security_group_vm_map as m').innerJoin('vms as v', 'v.id', 'm.vm_id')
    .select(['v.id', 'v.uuid', 'v.name', 'v.state', 'v.host_id']).where('m.group_id', '=', groupId).where('v.removed', 'is', null).orderBy('v.id').execute();
  const hostIds = [...new Set(vms.filter((v) => v.state === 'Running' && v.host_id !== null).map((v) => v.host_id!))];
  const hosts = hostIds.length
    ? await db.selectFrom('hosts').select(['id', 'uuid', 'name']).where(inList(db, 'id', hostIds)).where('removed', 'is', null).orderBy('id').execute()
    : [];
  return { vms: vms.map((v) => ({ id: Number(v.id), uuid: v.uuid, name: v.name, state: v.state, hostId: v.host_id })), hosts };
}

/**
 * Which hosts are affected is named to root admins only; others get the count. Hosts are the operator's
 * infrastructure: CloudStack shows a VM's host to root admins only, and so do listVirtualMachines and
 * listSecurityGroupDrops here.
 */
function affectedView(a: Affected, ctx: CommandContext): Record<string, unknown> {
  return {
    affectedvirtualmachinecount: a.vms.length,
    affectedvirtualmachines: a.vms.map((v) => ({ id: v.uuid, name: v.name, state: v.state })),
    affectedhostcount: a.hosts.length,
    ...(ctx.caller.role === 'admin' ? { affectedhosts: a.hosts.map((h) => ({ id: h.uuid, name: h.name })) } : {}),
  };
}

const familyName = (f: Family) => (f === 4 ? 'ipv4' : 'ipv6');

/** Rules listed in `coveredby` (all are counted in `coveredbycount`): a job result stays small whatever the group holds. */
const COVERED_BY_LISTED = 100;

function redundancyView(r: FamilyRedundancy, setNames: Map<string, string>): Record<string, unknown> {
  const out: Record<string, unknown> = { family: familyName(r.family), redundant: r.redundant };
  if (r.decided === false) {
    out.decided = false;
    out.detail = 'the group has too many rules to decide redundancy within the time bound of a dry run';
  }
  if (r.redundant) { out.coveredby = r.coveredBy.slice(0, COVERED_BY_LISTED); out.coveredbycount = r.coveredBy.length; }
  if (r.witness) {
    const w = r.witness;
    out.notcovered = {
      protocol: typeof w.protocol === 'number' ? String(w.protocol) : w.protocol,
      ...(w.port !== undefined ? { port: w.port } : {}),
      ...(w.icmpType !== undefined ? { icmptype: w.icmpType, icmpcode: w.icmpCode } : {}),
      ...(w.peer !== undefined ? { address: w.peer } : {}),
      ...(w.peerSet !== undefined ? { securitygroupname: setNames.get(w.peerSet) ?? w.peerSet } : {}),
    };
  }
  return out;
}

/** Existing rules of a group in one direction, as the compiler reads them. */
async function groupRules(db: Db, groupId: number, dir: 'ingress' | 'egress'): Promise<SecurityGroupRule[]> {
  const rows = await db.selectFrom('security_group_rules').select(RULE_COLUMNS).where('group_id', '=', groupId).where('type', '=', dir).orderBy('id').execute();
  return rows.map(ruleFromRow);
}

/** What authorize validated: the rule's protocol and port range / ICMP type and code as stored. */
export interface AuthorizeSpec { protocol: string; start: number; end: number }

/**
 * The dry run of an authorize on group `g`: `groupIds` / `cidrs` are everything the call names
 * (duplicates of existing rules included), `rows` the rules it would insert (duplicates dropped).
 */
export async function authorizeDryRun(ctx: CommandContext, g: { id: number; uuid: string; name: string; account_id: number }, dir: 'ingress' | 'egress',
  spec: AuthorizeSpec, groupIds: number[], cidrs: string[], rows: { cidr: string | null; allowed_group_id: number | null }[]): Promise<Record<string, unknown>> {
  // The requested rules as the compiler reads stored rows.
  const asRow = (i: number, cidr: string | null, ref: number | null) => ruleFromRow({
    id: -1 - i, uuid: `new-${i}`, group_id: g.id, type: dir, protocol: spec.protocol, start_port: spec.start, end_port: spec.end, cidr, allowed_group_id: ref,
  });
  const added = [...groupIds.map((ref, i) => asRow(i, null, ref)), ...cidrs.map((c, i) => asRow(groupIds.length + i, c, null))];
  const existing = await groupRules(ctx.db, g.id, dir);
  const perFamily = ruleRedundancy(existing, added);
  // A referenced group is named as a stored rule names it (CloudStack's rule response): its name and its
  // account, never its id (the caller may reference a group of another account it cannot otherwise see).
  const refs = new Map<number, { name: string; account: string }>();
  if (groupIds.length) {
    for (const x of await ctx.db.selectFrom('security_groups as sg').innerJoin('accounts as a', 'a.id', 'sg.account_id')
      .select(['sg.id', 'sg.name', 'a.name as account']).where(inList(ctx.db, 'sg.id', groupIds)).execute()) refs.set(Number(x.id), x);
  }
  const names = new Map([...refs].flatMap(([id, x]) => [[`sg${id}v4`, x.name], [`sg${id}v6`, x.name]] as [string, string][]));
  const affected = await affectedBy(ctx.db, g.id);
  const owner = (await ownerInfo(ctx.db, [g.account_id])).get(g.account_id);
  const wouldBe = rows.map((r) => {
    const out: Record<string, unknown> = { protocol: spec.protocol };
    if (spec.protocol === 'icmp') { out.icmptype = spec.start; out.icmpcode = spec.end; } else { out.startport = spec.start; out.endport = spec.end; }
    if (r.cidr !== null) out.cidr = r.cidr;
    else { const ref = refs.get(r.allowed_group_id!); out.securitygroupname = ref?.name; out.account = ref?.account; }
    return out;
  });
  return {
    securitygroup: { id: g.uuid, name: g.name, account: owner?.account, domainid: owner?.domainid, domain: owner?.domain, [`${dir}rule`]: wouldBe },
    dryrun: {
      ...affectedView(affected, ctx),
      newrulecount: rows.length,
      redundant: perFamily.every((f) => f.redundant),
      redundancy: perFamily.filter((f) => f.applies).map((f) => redundancyView(f, names)),
      restrictsegress: perFamily.some((f) => f.restrictsEgress),
    },
  };
}

/** The dry run of a revoke of `rule` (a stored rule row of group `groupId`). */
export async function revokeDryRun(ctx: CommandContext, groupId: number, rule: SecurityGroupRule): Promise<Record<string, unknown>> {
  const rest = (await groupRules(ctx.db, groupId, rule.direction)).filter((r) => r.id !== rule.id);
  const perFamily = ruleRedundancy(rest, [rule]);
  const affected = await affectedBy(ctx.db, groupId);
  // The rule was the last egress rule of a family it applies to: removing it opens that family's egress.
  const opensEgress = perFamily.some((f) => f.applies && f.restrictsEgress);
  return {
    ...affectedView(affected, ctx),
    redundant: perFamily.every((f) => f.redundant),
    opensegress: opensEgress,
    trackedconnections: await trackedConnections(ctx, affected, rule),
  };
}

async function trackedConnections(ctx: CommandContext, affected: Affected, revoked: SecurityGroupRule): Promise<Record<string, unknown>> {
  const running = affected.vms.filter((v) => v.state === 'Running' && v.hostId !== null);
  const hostIds = affected.hosts.map((h) => h.id);
  if (!ctx.connections) {
    return {
      status: 'unavailable', hostsasked: 0, hostsanswered: 0,
      detail: 'connection tracking queries to agents are not available on this server; the connections a revoke would leave are not known',
    };
  }
  if (!running.length) return { status: 'complete', count: 0, hostsasked: 0, hostsanswered: 0, connection: [] };
  // Each running member's policy as it would be without the rule, and the sets it references.
  const state = await loadPolicyInput(ctx.db, running.map((v) => v.id));
  for (const [g, rules] of state.rulesByGroup) state.rulesByGroup.set(g, rules.filter((r) => r.id !== revoked.id));
  const policies = new Map(running.filter((v) => state.vms.has(v.id)).map((v) => [v.uuid, compileVm(state, v.id)]));
  // A group of an account the caller may not operate on is opaque (as in explain): its set counts as
  // empty, and a connection that would stay only if its peer were a member is listed as such
  // (`dependsonmembership`), so the answer is the same whether the peer is one or not.
  const { sets, assuming } = await callerSets(ctx, state, [...policies.values()].flatMap((p) => referencedSets(p)));
  const answers = await ctx.connections.trackedConnections({ hostIds, vmIds: [...policies.keys()], limitPerVm: TRACKED_LIMIT_PER_VM, timeoutMs: TRACKED_TIMEOUT_MS });
  const cut: (TrackedConnection & { dependsOnMembership?: true })[] = [];
  for (const a of answers) {
    if (!a.answered) continue;
    for (const [vmId, policy] of policies) {
      for (const c of disallowedConnections(policy, sets, a.connections.filter((x) => x.vmId === vmId))) {
        const kept = assuming !== null && disallowedConnections(policy, assuming(c.family, [c.src, c.dst]), [c]).length === 0;
        cut.push(kept ? { ...c, dependsOnMembership: true } : c);
      }
    }
  }
  const answered = answers.filter((a) => a.answered).length;
  const partial = answered < hostIds.length || answers.some((a) => a.truncated);
  return {
    status: partial ? 'partial' : 'complete', count: cut.length, hostsasked: hostIds.length, hostsanswered: answered,
    connection: cut.slice(0, TRACKED_LISTED).map((c) => ({
      virtualmachineid: c.vmId, protocol: typeof c.protocol === 'number' ? String(c.protocol) : c.protocol,
      srcaddress: c.src, ...(c.sport !== undefined ? { srcport: c.sport } : {}), dstaddress: c.dst, ...(c.dport !== undefined ? { dstport: c.dport } : {}),
      ...(c.icmpType !== undefined ? { icmptype: c.icmpType } : {}),
      ...(c.dependsOnMembership ? { dependsonmembership: true } : {}),
    })),
  };
}
