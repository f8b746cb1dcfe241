// Loading the compiler's input (CloudState) from the store: once in full at start, then only the
// rows a change touches. Batch queries (IN lists), no per-row round trips.
import type { Db } from '../store/db.js';
import type { Nic, SecurityGroup, SecurityGroupRule, Vm } from '../model/types.js';
import type { CloudState } from '../policy/state.js';
import { emptyCloudState } from '../policy/state.js';
import {
  GROUP_COLUMNS, NIC_COLUMNS, RULE_COLUMNS, VM_COLUMNS, type BigId, type NicRow, groupFromRow, nicFromRow, ruleFromRow, vmFromRow,
} from '../store/rows.js';

const CHUNK = 500;
function chunks<T>(xs: T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += CHUNK) out.push(xs.slice(i, i + CHUNK));
  return out;
}

function pushTo<K, V>(m: Map<K, V[]>, k: K, v: V): void {
  const a = m.get(k);
  if (a) a.push(v); else m.set(k, [v]);
}

/** NICs (with secondary addresses) of the given VMs, or of every VM when `vmIds` is undefined. */
async function loadNics(db: Db, vmIds?: number[]): Promise<Map<number, Nic[]>> {
  const nicRows: NicRow[] = [];
  const secRows: { nic_id: BigId; address: string }[] = [];
  if (vmIds === undefined) {
    for (const row of await db.selectFrom('nics').select(NIC_COLUMNS).where('removed', 'is', null).execute()) nicRows.push(row);
    for (const row of await db.selectFrom('nic_secondary_ips').select(['nic_id', 'address']).orderBy('id').execute()) secRows.push(row);
  } else {
    for (const c of chunks(vmIds)) {
      for (const row of await db.selectFrom('nics').select(NIC_COLUMNS).where('removed', 'is', null).where('vm_id', 'in', c).execute()) nicRows.push(row);
      for (const row of await db.selectFrom('nic_secondary_ips').select(['nic_id', 'address']).where('vm_id', 'in', c).orderBy('id').execute()) secRows.push(row);
    }
  }
  const secByNic = new Map<number, string[]>();
  for (const s of secRows) pushTo(secByNic, Number(s.nic_id), s.address);
  nicRows.sort((a, b) => a.device_id - b.device_id || Number(a.id) - Number(b.id));
  const out = new Map<number, Nic[]>();
  for (const row of nicRows) { const nic = nicFromRow(row, secByNic.get(Number(row.id)) ?? []); pushTo(out, nic.vmId, nic); }
  return out;
}

/** The whole CloudState: six queries. */
export async function loadCloudState(db: Db): Promise<CloudState> {
  const s = emptyCloudState();
  for (const group of (await db.selectFrom('security_groups').select(GROUP_COLUMNS).execute()).map(groupFromRow)) s.groups.set(group.id, group);
  for (const rule of (await db.selectFrom('security_group_rules').select(RULE_COLUMNS).orderBy('id').execute()).map(ruleFromRow)) pushTo(s.rulesByGroup, rule.groupId, rule);
  for (const vm of (await db.selectFrom('vms').select(VM_COLUMNS).where('removed', 'is', null).execute()).map(vmFromRow)) s.vms.set(vm.id, vm);
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
    for (const group of (await db.selectFrom('security_groups').select(GROUP_COLUMNS).where('id', 'in', c).execute()).map(groupFromRow)) out.groups.set(group.id, group);
    for (const rule of (await db.selectFrom('security_group_rules').select(RULE_COLUMNS).where('group_id', 'in', c).orderBy('id').execute()).map(ruleFromRow)) out.rules.get(rule.groupId)!.push(rule);
    for (const m of await db.selectFrom('security_group_vm_map').select(['group_id', 'vm_id']).where('group_id', 'in', c).orderBy('vm_id').execute()) out.membersOfGroup.get(Number(m.group_id))!.push(Number(m.vm_id));
  }
  for (const id of vmIds) { out.vms.set(id, null); out.nics.set(id, []); out.groupsOfVm.set(id, []); }
  for (const c of chunks(vmIds)) {
    for (const vm of (await db.selectFrom('vms').select(VM_COLUMNS).where('removed', 'is', null).where('id', 'in', c).execute()).map(vmFromRow)) out.vms.set(vm.id, vm);
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
