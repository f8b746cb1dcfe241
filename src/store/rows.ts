// The store's cloud rows read as the model's objects: one reading of a rule, group, VM and NIC row,
// shared by the control plane's loader (control/load.ts, the whole cloud in memory) and the API's
// partial loader (queries/cloud.ts, explain and dry runs), so both compile the same input. Ids that
// PostgreSQL keeps as bigint arrive as text and are converted here.
import type { Nic, Protocol, SecurityGroup, SecurityGroupRule, Vm, VmState } from '../model/types.js';

export const RULE_COLUMNS = ['id', 'uuid', 'group_id', 'type', 'protocol', 'start_port', 'end_port', 'cidr', 'allowed_group_id'] as const;
export const GROUP_COLUMNS = ['id', 'uuid', 'name', 'description', 'account_id', 'domain_id'] as const;
export const VM_COLUMNS = ['id', 'uuid', 'name', 'instance_name', 'account_id', 'domain_id', 'host_id', 'state'] as const;
export const NIC_COLUMNS = ['id', 'uuid', 'vm_id', 'network_id', 'mac', 'ipv4', 'ipv6', 'is_default', 'device_id', 'device_name'] as const;

/** bigint on PostgreSQL (pg returns text): rule ids since 015; group, VM, NIC and network ids since 016. */
export type BigId = number | string;

export interface RuleRow { id: BigId; uuid: string; group_id: BigId; type: string; protocol: string; start_port: number | null; end_port: number | null; cidr: string | null; allowed_group_id: BigId | null }
export interface GroupRow { id: BigId; uuid: string; name: string; description: string; account_id: number; domain_id: number }
export interface VmRow { id: BigId; uuid: string; name: string; instance_name: string; account_id: number; domain_id: number; host_id: number | null; state: string }
export interface NicRow { id: BigId; uuid: string; vm_id: BigId; network_id: BigId; mac: string; ipv4: string | null; ipv6: string | null; is_default: number; device_id: number; device_name: string | null }

/** A stored protocol (a name, or a number as CloudStack accepts it; 1 is ICMP) as the model's. */
export function protocolOf(stored: string): Protocol {
  const lower = stored.toLowerCase();
  if (lower === 'tcp' || lower === 'udp' || lower === 'icmp' || lower === 'all') return lower;
  const number = Number(stored);
  if (Number.isInteger(number)) return number === 1 ? 'icmp' : number;
  return lower as Protocol;
}

/** Ports live in start/end for TCP and UDP, ICMP's type and code in the same two columns (-1: any). */
export function ruleFromRow(row: RuleRow): SecurityGroupRule {
  const protocol = protocolOf(row.protocol);
  const rule: SecurityGroupRule = {
    id: Number(row.id), uuid: row.uuid, groupId: Number(row.group_id), direction: row.type === 'egress' ? 'egress' : 'ingress', protocol,
    cidr: row.cidr, allowedGroupId: row.allowed_group_id === null ? null : Number(row.allowed_group_id),
  };
  if ((protocol === 'tcp' || protocol === 'udp') && row.start_port !== null) rule.ports = { from: row.start_port, to: row.end_port ?? row.start_port };
  if (protocol === 'icmp') rule.icmp = { type: row.start_port ?? -1, code: row.end_port ?? -1 };
  return rule;
}

export const groupFromRow = (row: GroupRow): SecurityGroup => ({
  id: Number(row.id), uuid: row.uuid, name: row.name, description: row.description, accountId: row.account_id, domainId: row.domain_id,
});

export const vmFromRow = (row: VmRow): Vm => ({
  id: Number(row.id), uuid: row.uuid, instanceName: row.instance_name, name: row.name, accountId: row.account_id, domainId: row.domain_id,
  hostId: row.host_id, state: row.state as VmState,
});

/** MACs compared lower-case everywhere; `secondary` are the NIC's extra addresses in the order stored. */
export const nicFromRow = (row: NicRow, secondary: string[]): Nic => ({
  id: Number(row.id), uuid: row.uuid, vmId: Number(row.vm_id), networkId: Number(row.network_id), mac: row.mac.toLowerCase(), ipv4: row.ipv4, ipv6: row.ipv6,
  secondaryIps: secondary, isDefault: row.is_default === 1, deviceName: row.device_name,
});
