// The compiler's input (policy/state.ts CloudState) for a few VMs, read from the store: what explain
// and dry runs compile on the API side (the control plane keeps the whole cloud in memory; the API does
// not import it). Covers the VMs, their NICs and groups, those groups' rules, and every group those
// rules reference with its members and their NICs (the address sets). Batch queries, no per-row trips.
import type { Kysely, Transaction } from 'kysely';
import type { Database } from '../schema.js';
import type { Nic, Protocol, SecurityGroupRule, Vm, VmState } from '../../model/types.js';
import { emptyCloudState, type CloudState } from '../../policy/state.js';

type Q = Transaction<Database> | Kysely<Database>;

/** bigint on PostgreSQL (pg returns text): rule ids since 015, group ids since 016. */
export interface RuleRow { id: number | string; uuid: string; group_id: number | string; type: string; protocol: string; start_port: number | null; end_port: number | null; cidr: string | null; allowed_group_id: number | string | null }

function push<K, V>(m: Map<K, V[]>, k: K, v: V): void {
  const l = m.get(k);
  if (l) l.push(v); else m.set(k, [v]);
}

const chunk = <T>(xs: T[], n = 500): T[][] => { const o: T[][] = []; for (let i = 0; i < xs.length; i += n) o.push(xs.slice(i, i + n)); return o; };

function protocolOf(p: string): Protocol {
  const lower = p.toLowerCase();
  if (lower === 'tcp' || lower === 'udp' || lower === 'icmp' || lower === 'all') return lower;
  const n = Number(p);
  if (Number.isInteger(n)) return n === 1 ? 'icmp' : n;
  return lower as Protocol;
}

/** A stored rule row as the model's rule (the same reading as the control plane's loader). */
export function ruleFromRow(r: RuleRow): SecurityGroupRule {
  const protocol = protocolOf(r.protocol);
  const rule: SecurityGroupRule = {
    id: Number(r.id), uuid: r.uuid, groupId: Number(r.group_id), direction: r.type === 'egress' ? 'egress' : 'ingress', protocol,
    cidr: r.cidr, allowedGroupId: r.allowed_group_id === null ? null : Number(r.allowed_group_id),
  };
  if ((protocol === 'tcp' || protocol === 'udp') && r.start_port !== null) rule.ports = { from: r.start_port, to: r.end_port ?? r.start_port };
  if (protocol === 'icmp') rule.icmp = { type: r.start_port ?? -1, code: r.end_port ?? -1 };
  return rule;
}

export const RULE_COLUMNS = ['id', 'uuid', 'group_id', 'type', 'protocol', 'start_port', 'end_port', 'cidr', 'allowed_group_id'] as const;

async function addVms(db: Q, s: CloudState, vmIds: number[]): Promise<void> {
  const missing = vmIds.filter((id) => !s.vms.has(id));
  for (const part of chunk(missing)) {
    const vms = await db.selectFrom('vms').select(['id', 'uuid', 'name', 'instance_name', 'account_id', 'domain_id', 'host_id', 'state'])
      .where('id', 'in', part).where('removed', 'is', null).execute();
    // VM, NIC and group ids are bigint since 016 (pg returns text): Number() at every read.
    for (const v of vms) {
      const vm: Vm = { id: Number(v.id), uuid: v.uuid, instanceName: v.instance_name, name: v.name, accountId: v.account_id, domainId: v.domain_id, hostId: v.host_id, state: v.state as VmState };
      s.vms.set(vm.id, vm);
    }
    const nics = await db.selectFrom('nics').select(['id', 'uuid', 'vm_id', 'network_id', 'mac', 'ipv4', 'ipv6', 'is_default', 'device_id', 'device_name'])
      .where('vm_id', 'in', part).where('removed', 'is', null).orderBy('device_id').orderBy('id').execute();
    const secs = await db.selectFrom('nic_secondary_ips').select(['nic_id', 'address']).where('vm_id', 'in', part).orderBy('id').execute();
    const secByNic = new Map<number, string[]>();
    for (const x of secs) push(secByNic, Number(x.nic_id), x.address);
    for (const n of nics) {
      if (!s.vms.has(Number(n.vm_id))) continue;
      const nic: Nic = {
        id: Number(n.id), uuid: n.uuid, vmId: Number(n.vm_id), networkId: Number(n.network_id), mac: n.mac.toLowerCase(), ipv4: n.ipv4, ipv6: n.ipv6,
        secondaryIps: secByNic.get(Number(n.id)) ?? [], isDefault: n.is_default === 1, deviceName: n.device_name,
      };
      push(s.nicsByVm, nic.vmId, nic);
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
    for (const g of await db.selectFrom('security_groups').select(['id', 'uuid', 'name', 'description', 'account_id', 'domain_id']).where('id', 'in', part).execute()) {
      const id = Number(g.id);
      s.groups.set(id, { id, uuid: g.uuid, name: g.name, description: g.description, accountId: g.account_id, domainId: g.domain_id });
      s.rulesByGroup.set(id, []);
    }
    for (const r of await db.selectFrom('security_group_rules').select(RULE_COLUMNS).where('group_id', 'in', part).orderBy('id').execute()) {
      s.rulesByGroup.get(Number(r.group_id))?.push(ruleFromRow(r));
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
