// Loading the compiler's input (CloudState) from the store: once in full at start, then only the
// rows a change touches. Batch queries (IN lists), no per-row round trips.
import type { Db } from '../store/db.js';
import type { Nic, Protocol, SecurityGroup, SecurityGroupRule, Vm, VmState } from '../model/types.js';
import type { CloudState } from '../policy/state.js';
import { emptyCloudState } from '../policy/state.js';

// bigint on PostgreSQL (pg returns text): rule ids since 015; group, VM, NIC and network ids since 016.
type BigId = number | string;
type RuleRow = { id: BigId; uuid: string; group_id: BigId; type: string; protocol: string; start_port: number | null; end_port: number | null; cidr: string | null; allowed_group_id: BigId | null };
type VmRow = { id: BigId; uuid: string; name: string; instance_name: string; account_id: number; domain_id: number; host_id: number | null; state: string };
type NicRow = { id: BigId; uuid: string; vm_id: BigId; network_id: BigId; mac: string; ipv4: string | null; ipv6: string | null; is_default: number; device_id: number; device_name: string | null };
type GroupRow = { id: BigId; uuid: string; name: string; description: string; account_id: number; domain_id: number };

const CHUNK = 500;
function chunks<T>(xs: T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += CHUNK) out.push(xs.slice(i, i + CHUNK));
  return out;
}

export function toProtocol(p: string): Protocol {
  const lower = p.toLowerCase();
  if (lower === 'tcp' || lower === 'udp' || lower === 'icmp' || lower === 'all') return lower;
  const n = Number(p);
  if (Number.isInteger(n)) return n === 1 ? 'icmp' : n;
  return lower as Protocol;
}

export function toRule(r: RuleRow): SecurityGroupRule {
  const protocol = toProtocol(r.protocol);
  const rule: SecurityGroupRule = {
    id: Number(r.id), uuid: r.uuid, groupId: Number(r.group_id), direction: r.type === 'egress' ? 'egress' : 'ingress', protocol,
    cidr: r.cidr, allowedGroupId: r.allowed_group_id === null ? null : Number(r.allowed_group_id),
  };
  if ((protocol === 'tcp' || protocol === 'udp') && r.start_port !== null) rule.ports = { from: r.start_port, to: r.end_port ?? r.start_port };
  if (protocol === 'icmp') rule.icmp = { type: r.start_port ?? -1, code: r.end_port ?? -1 };
  return rule;
}

const toGroup = (g: GroupRow): SecurityGroup => ({ id: Number(g.id), uuid: g.uuid, name: g.name, description: g.description, accountId: g.account_id, domainId: g.domain_id });
const toVm = (v: VmRow): Vm => ({
  id: Number(v.id), uuid: v.uuid, instanceName: v.instance_name, name: v.name, accountId: v.account_id, domainId: v.domain_id, hostId: v.host_id, state: v.state as VmState,
});
const toNic = (n: NicRow, secondary: string[]): Nic => ({
  id: Number(n.id), uuid: n.uuid, vmId: Number(n.vm_id), networkId: Number(n.network_id), mac: n.mac.toLowerCase(), ipv4: n.ipv4, ipv6: n.ipv6,
  secondaryIps: secondary, isDefault: n.is_default === 1, deviceName: n.device_name,
});

const RULE_COLS = ['id', 'uuid', 'group_id', 'type', 'protocol', 'start_port', 'end_port', 'cidr', 'allowed_group_id'] as const;
const VM_COLS = ['id', 'uuid', 'name', 'instance_name', 'account_id', 'domain_id', 'host_id', 'state'] as const;
const NIC_COLS = ['id', 'uuid', 'vm_id', 'network_id', 'mac', 'ipv4', 'ipv6', 'is_default', 'device_id', 'device_name'] as const;
const GROUP_COLS = ['id', 'uuid', 'name', 'description', 'account_id', 'domain_id'] as const;

function pushTo<K, V>(m: Map<K, V[]>, k: K, v: V): void {
  const a = m.get(k);
  if (a) a.push(v); else m.set(k, [v]);
}

/** NICs (with secondary addresses) of the given VMs, or of every VM when `vmIds` is undefined. */
async function loadNics(db: Db, vmIds?: number[]): Promise<Map<number, Nic[]>> {
  const nicRows: NicRow[] = [];
  const secRows: { nic_id: BigId; address: string }[] = [];
  if (vmIds === undefined) {
    for (const row of await db.selectFrom('nics').select(NIC_COLS).where('removed', 'is', null).execute()) nicRows.push(row);
    for (const row of await db.selectFrom('nic_secondary_ips').select(['nic_id', 'address']).orderBy('id').execute()) secRows.push(row);
  } else {
    for (const c of chunks(vmIds)) {
      for (const row of await db.selectFrom('nics').select(NIC_COLS).where('removed', 'is', null).where('vm_id', 'in', c).execute()) nicRows.push(row);
      for (const row of await db.selectFrom('nic_secondary_ips').select(['nic_id', 'address']).where('vm_id', 'in', c).orderBy('id').execute()) secRows.push(row);
    }
  }
  const secByNic = new Map<number, string[]>();
  for (const s of secRows) pushTo(secByNic, Number(s.nic_id), s.address);
  nicRows.sort((a, b) => a.device_id - b.device_id || Number(a.id) - Number(b.id));
  const out = new Map<number, Nic[]>();
  for (const n of nicRows) pushTo(out, Number(n.vm_id), toNic(n, secByNic.get(Number(n.id)) ?? []));
  return out;
}

/** The whole CloudState: six queries. */
export async function loadCloudState(db: Db): Promise<CloudState> {
  const s = emptyCloudState();
  for (const g of await db.selectFrom('security_groups').select(GROUP_COLS).execute()) s.groups.set(Number(g.id), toGroup(g));
  for (const r of await db.selectFrom('security_group_rules').select(RULE_COLS).orderBy('id').execute()) pushTo(s.rulesByGroup, Number(r.group_id), toRule(r));
  for (const v of await db.selectFrom('vms').select(VM_COLS).where('removed', 'is', null).execute()) s.vms.set(Number(v.id), toVm(v));
  for (const [vmId, nics] of await loadNics(db)) if (s.vms.has(vmId)) s.nicsByVm.set(vmId, nics);
  for (const row of await db.selectFrom('security_group_vm_map').select(['group_id', 'vm_id']).orderBy('group_id').execute()) {
    const m = { group_id: Number(row.group_id), vm_id: Number(row.vm_id) };
    if (!s.vms.has(m.vm_id)) continue;
    pushTo(s.groupsByVm, m.vm_id, m.group_id);
    pushTo(s.membersByGroup, m.group_id, m.vm_id);
  }
  for (const ids of s.membersByGroup.values()) ids.sort((a, b) => a - b);
  return s;
}

/** Fresh rows for a batch of touched groups and VMs (absent = deleted). */
export interface Reload {
  groups: Map<number, SecurityGroup | null>;
  rules: Map<number, SecurityGroupRule[]>;
  vms: Map<number, Vm | null>;
  nics: Map<number, Nic[]>;
  groupsOfVm: Map<number, number[]>;
  /** For touched groups: their current members (a deleted group has none). */
  membersOfGroup: Map<number, number[]>;
}

export async function reloadPart(db: Db, groupIds: number[], vmIds: number[]): Promise<Reload> {
  const out: Reload = { groups: new Map(), rules: new Map(), vms: new Map(), nics: new Map(), groupsOfVm: new Map(), membersOfGroup: new Map() };
  for (const id of groupIds) { out.groups.set(id, null); out.rules.set(id, []); out.membersOfGroup.set(id, []); }
  for (const c of chunks(groupIds)) {
    for (const g of await db.selectFrom('security_groups').select(GROUP_COLS).where('id', 'in', c).execute()) out.groups.set(Number(g.id), toGroup(g));
    for (const r of await db.selectFrom('security_group_rules').select(RULE_COLS).where('group_id', 'in', c).orderBy('id').execute()) out.rules.get(Number(r.group_id))!.push(toRule(r));
    for (const m of await db.selectFrom('security_group_vm_map').select(['group_id', 'vm_id']).where('group_id', 'in', c).orderBy('vm_id').execute()) out.membersOfGroup.get(Number(m.group_id))!.push(Number(m.vm_id));
  }
  for (const id of vmIds) { out.vms.set(id, null); out.nics.set(id, []); out.groupsOfVm.set(id, []); }
  for (const c of chunks(vmIds)) {
    for (const v of await db.selectFrom('vms').select(VM_COLS).where('removed', 'is', null).where('id', 'in', c).execute()) out.vms.set(Number(v.id), toVm(v));
    for (const m of await db.selectFrom('security_group_vm_map').select(['group_id', 'vm_id']).where('vm_id', 'in', c).orderBy('group_id').execute()) out.groupsOfVm.get(Number(m.vm_id))!.push(Number(m.group_id));
  }
  if (vmIds.length) for (const [vmId, nics] of await loadNics(db, vmIds)) out.nics.set(vmId, nics);
  return out;
}

export interface HostRow { id: number; uuid: string; name: string; tokenHash: string; desiredRevision: number; ackedRevision: number; removed: boolean }

export async function loadHosts(db: Db, ids?: number[]): Promise<HostRow[]> {
  let q = db.selectFrom('hosts').select(['id', 'uuid', 'name', 'token_hash', 'desired_revision', 'acked_revision', 'removed']);
  if (ids) q = q.where('id', 'in', ids.length ? ids : [-1]);
  const rows = await q.execute();
  return rows.map((h) => ({ id: h.id, uuid: h.uuid, name: h.name, tokenHash: h.token_hash, desiredRevision: Number(h.desired_revision), ackedRevision: Number(h.acked_revision), removed: h.removed !== null }));
}
