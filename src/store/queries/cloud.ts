// The compiler's input (policy/state.ts CloudState) for a few VMs, read from the store: what explain
// and dry runs compile on the API side (the control plane keeps the whole cloud in memory; the API does
// not import it). Covers the VMs, their NICs and groups, those groups' rules, and every group those
// rules reference with its members and their NICs (the address sets). Batch queries, no per-row trips.
import type { Kysely, Transaction } from 'kysely';
import type { Database } from '../schema.js';
import { emptyCloudState, type CloudState } from '../../policy/state.js';
import { GROUP_COLUMNS, NIC_COLUMNS, RULE_COLUMNS, VM_COLUMNS, groupFromRow, nicFromRow, ruleFromRow, vmFromRow } from '../rows.js';


type Q = Transaction<Database> | Kysely<Database>;

function push<K, V>(m: Map<K, V[]>, k: K, v: V): void {
  const l = m.get(k);
  if (l) l.push(v); else m.set(k, [v]);
}

const chunk = <T>(xs: T[], n = 500): T[][] => { const o: T[][] = []; for (let i = 0; i < xs.length; i += n) o.push(xs.slice(i, i + n)); return o; };

async function addVms(db: Q, s: CloudState, vmIds: number[]): Promise<void> {
  const missing = vmIds.filter((id) => !s.vms.has(id));
  for (const part of chunk(missing)) {
    const vms = await db.selectFrom('vms').select(VM_COLUMNS).where('id', 'in', part).where('removed', 'is', null).execute();
    // VM, NIC and group ids are bigint since 016 (pg returns text): rows.ts converts them.
    for (const vm of vms.map(vmFromRow)) s.vms.set(vm.id, vm);
    const nics = await db.selectFrom('nics').select(NIC_COLUMNS)
      .where('vm_id', 'in', part).where('removed', 'is', null).orderBy('device_id').orderBy('id').execute();
    const secs = await db.selectFrom('nic_secondary_ips').select(['nic_id', 'address']).where('vm_id', 'in', part).orderBy('id').execute();
    const secByNic = new Map<number, string[]>();
    for (const x of secs) push(secByNic, Number(x.nic_id), x.address);
    for (const n of nics) {
      const nic = nicFromRow(n, secByNic.get(Number(n.id)) ?? []);
      if (s.vms.has(nic.vmId)) push(s.nicsByVm, nic.vmId, nic);
    }
  }
}

async function addGroupsOfVms(db: Q, s: CloudState, vmIds: number[]): Promise<number[]> {
  const groups = new Set<number>();
  for (const part of chunk(vmIds)) {
    for (const row of await db.selectFrom('security_group_vm_map').select(['group_id', 'vm_id']).where('vm_id', 'in', part).orderBy('group_id').execute()) {
      const m = { group_id: Number(row.group_id), vm_id: Number(row.vm_id) };
      if (!s.vms.has(m.vm_id)) continue;
      push(s.groupsByVm, m.vm_id, m.group_id);
      groups.add(m.group_id);
    }
  }
  return [...groups];
}

async function addGroupsWithRules(db: Q, s: CloudState, groupIds: number[]): Promise<void> {
  for (const part of chunk(groupIds.filter((g) => !s.groups.has(g)))) {
    for (const group of (await db.selectFrom('security_groups').select(GROUP_COLUMNS).where('id', 'in', part).execute()).map(groupFromRow)) {
      s.groups.set(group.id, group);
      s.rulesByGroup.set(group.id, []);
    }
    for (const rule of (await db.selectFrom('security_group_rules').select(RULE_COLUMNS).where('group_id', 'in', part).orderBy('id').execute()).map(ruleFromRow)) {
      s.rulesByGroup.get(rule.groupId)?.push(rule);
    }
  }
}

/**
 * The part of the cloud that the policies of `vmIds` depend on. Referenced groups get their members
 * (with NICs, for the address sets) in membersByGroup; the members' own groups are not loaded.
 */
export async function loadPolicyInput(db: Q, vmIds: number[]): Promise<CloudState> {
  const s = emptyCloudState();
  await addVms(db, s, vmIds);
  const groups = await addGroupsOfVms(db, s, [...s.vms.keys()]);
  await addGroupsWithRules(db, s, groups);
  const referenced = new Set<number>();
  for (const g of groups) for (const r of s.rulesByGroup.get(g) ?? []) if (r.allowedGroupId !== null) referenced.add(r.allowedGroupId);
  const refs = [...referenced];
  const members = new Set<number>();
  for (const part of chunk(refs)) {
    for (const m of await db.selectFrom('security_group_vm_map').select(['group_id', 'vm_id']).where('group_id', 'in', part).orderBy('vm_id').execute()) {
      push(s.membersByGroup, Number(m.group_id), Number(m.vm_id));
      members.add(Number(m.vm_id));
    }
  }
  await addVms(db, s, [...members]);
  // Membership as the compiler expects it on both sides (sets need groupsByVm of the members too).
  for (const [g, ms] of s.membersByGroup) {
    const live = ms.filter((v) => s.vms.has(v));
    s.membersByGroup.set(g, live);
    for (const v of live) if (!(s.groupsByVm.get(v) ?? []).includes(g)) push(s.groupsByVm, v, g);
  }
  const wanted = new Set(vmIds);
  for (const g of groups) {
    const own = [...s.vms.keys()].filter((v) => wanted.has(v) && (s.groupsByVm.get(v) ?? []).includes(g));
    s.membersByGroup.set(g, [...new Set([...(s.membersByGroup.get(g) ?? []), ...own])].sort((a, b) => a - b));
  }
  return s;
}
