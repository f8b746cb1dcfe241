// Domain types shared by every layer. Pure data: no I/O, no behaviour.
// Internal ids are integers (CloudStack's instance names embed them: i-<account>-<vm>-VM);
// `uuid` is what the API shows.

export type Role = 'admin' | 'domainadmin' | 'user';
/** CloudStack's accounttype numbers: 0 user, 1 root admin, 2 domain admin. */
export const ROLE_ACCOUNT_TYPE: Record<Role, number> = { user: 0, admin: 1, domainadmin: 2 };

export interface Domain { id: number; uuid: string; name: string; path: string; parentId: number | null }
export interface Account { id: number; uuid: string; name: string; domainId: number; role: Role; state: 'enabled' | 'disabled' }

export type Direction = 'ingress' | 'egress';
export type Family = 4 | 6;

/** 'tcp' | 'udp' | 'icmp' | 'all', or an IP protocol number 0–255 other than 1 (1 is stored as 'icmp'). */
export type Protocol = 'tcp' | 'udp' | 'icmp' | 'all' | number;

export interface SecurityGroup { id: number; uuid: string; name: string; description: string; accountId: number; domainId: number }

/** One stored rule: exactly one of `cidr` / `allowedGroupId` is set (CloudStack stores one row per CIDR or group). */
export interface SecurityGroupRule {
  id: number;
  uuid: string;
  groupId: number;
  direction: Direction;
  protocol: Protocol;
  /** tcp/udp: port range (0..65535). Absent for other protocols. */
  ports?: { from: number; to: number };
  /** icmp: type and code, -1 = any. Applies as ICMPv6 with the same numbers for IPv6 peers (CloudStack semantics). */
  icmp?: { type: number; code: number };
  cidr: string | null;
  allowedGroupId: number | null;
}

export type VmState = 'Starting' | 'Running' | 'Stopping' | 'Stopped' | 'Migrating' | 'Destroyed' | 'Expunging' | 'Error';
/** The states in which a VM is on its host: the host's agent enforces its rules (its desired state holds it). */
export const PLACED_VM_STATES: readonly VmState[] = ['Starting', 'Running', 'Stopping', 'Migrating'];

export interface Vm {
  id: number;
  uuid: string;
  /** CloudStack instance name, i-<accountId>-<vmId>-VM: chain names derive from it. */
  instanceName: string;
  name: string;
  accountId: number;
  domainId: number;
  hostId: number | null;
  state: VmState;
}

export interface Nic {
  id: number;
  uuid: string;
  vmId: number;
  networkId: number;
  mac: string;              // lower-case, colon separated
  ipv4: string | null;      // primary IPv4
  ipv6: string | null;      // primary IPv6 (global)
  secondaryIps: string[];   // v4 and v6 secondaries
  isDefault: boolean;
  /** Explicit host device name; overrides MAC-convention port discovery. */
  deviceName: string | null;
}

export interface Host { id: number; uuid: string; name: string; zoneId: number }
