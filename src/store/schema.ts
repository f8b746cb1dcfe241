// Table types for Kysely. Portable across SQLite and PostgreSQL: integers, text, ISO-8601 text
// timestamps, 0/1 for booleans, JSON as text. Internal ids are integers; uuids are what the API shows.
import type { Generated } from 'kysely';

export interface DomainTable { id: Generated<number>; uuid: string; name: string; path: string; parent_id: number | null; created: string; removed: string | null }
export interface AccountTable { id: Generated<number>; uuid: string; name: string; domain_id: number; type: number /* 0 user, 1 admin, 2 domain admin */; state: string; created: string; removed: string | null }
export interface UserTable {
  id: Generated<number>; uuid: string; account_id: number; username: string; firstname: string; lastname: string; email: string | null;
  password_hash: string | null; apikey: string | null; secretkey: string | null; state: string; created: string; removed: string | null;
}
export interface ZoneTable { id: Generated<number>; uuid: string; name: string; description: string; created: string }

export interface SecurityGroupTable { id: Generated<number | string> /* bigint since 016: pg returns text */; uuid: string; name: string; description: string; account_id: number; domain_id: number; created: string }
export interface SecurityGroupRuleTable {
  id: Generated<number | string> /* bigint since 015: pg returns text */; uuid: string; group_id: number | string /* bigint since 016 */; type: string /* ingress | egress */;
  protocol: string /* tcp udp icmp all or a number as text */;
  start_port: number | null; end_port: number | null; /* icmp: type, code */
  cidr: string | null; allowed_group_id: number | string | null /* bigint since 016 */; created: string;
  /** the group's account (copied: the per-account rule bound counts by it) */
  account_id: number;
}
export interface SecurityGroupVmMapTable { group_id: number | string; vm_id: number | string /* both bigint since 016: pg returns text */ }

export interface TagTable {
  id: Generated<number | string> /* bigint since 015: pg returns text */; uuid: string; resource_type: string; resource_id: number | string /* bigint since 015 */; resource_uuid: string; key: string; value: string; account_id: number; domain_id: number; customer: string | null; created: string }
export interface EventTable {
  id: Generated<number | string> /* bigint since 014: pg returns text */; uuid: string; type: string; level: string; description: string; state: string;
  account_id: number; domain_id: number; user_id: number | null; resource_type: string | null; resource_uuid: string | null; resource_name: string | null;
  parent_uuid: string | null; created: string; archived: number;
}
export interface AsyncJobTable {
  id: Generated<number | string> /* bigint since 014: pg returns text */; uuid: string; command: string; account_id: number; user_id: number; status: number /* 0 pending 1 ok 2 failed */;
  result_code: number; result_type: string; result: string | null /* JSON */; instance_type: string | null; instance_uuid: string | null;
  created: string; completed: string | null;
  /** server process running the job (003); null for jobs created before it */
  server_id?: string | null;
}

export interface NetworkTable {
  id: Generated<number | string> /* bigint since 016: pg returns text */; uuid: string; name: string; display_text: string; zone_id: number; account_id: number; domain_id: number;
  gateway: string | null; netmask: string | null; start_ip: string | null; end_ip: string | null;
  ip6_gateway: string | null; ip6_cidr: string | null; start_ipv6: string | null; end_ipv6: string | null; vlan: string | null;
  created: string; removed: string | null;
}
export interface HostTable {
  id: Generated<number>; uuid: string; name: string; zone_id: number; token_hash: string; state: string;
  last_contact: string | null;
  /** change-feed positions (bigint since 014: PostgreSQL returns them as text, read with Number()) */
  acked_revision: number | string; desired_revision: number | string;
  preflight: string | null /* JSON */; repairs: string | null /* JSON */; repair_count: number;
  created: string; removed: string | null;
  /** the backend the host's agent runs, from its hello (005) */
  dataplane?: string | null;
}
export interface VmTable {
  id: Generated<number | string> /* bigint since 016: pg returns text */; uuid: string; name: string; display_name: string; instance_name: string; account_id: number; domain_id: number;
  zone_id: number; host_id: number | null; last_host_id: number | null; state: string; service_offering_id: string | null; template_id: string | null;
  sync_state: string /* Synced | Pending | Failed */; sync_error: string | null;
  created: string; removed: string | null;
}
export interface NicTable {
  id: Generated<number | string>; uuid: string; vm_id: number | string; network_id: number | string /* the three bigint since 016: pg returns text */; mac: string; ipv4: string | null; ipv6: string | null;
  is_default: number; device_id: number; device_name: string | null; created: string; removed: string | null;
}
/** id, nic_id, vm_id and network_id: bigint since 016 (pg returns text). */
export interface NicSecondaryIpTable { id: Generated<number | string>; uuid: string; nic_id: number | string; vm_id: number | string; network_id: number | string; address: string; family: number; created: string }

/** Login sessions (008): digests of the session cookie and session key, sliding expiry. */
export interface SessionTable {
  id: Generated<number | string> /* bigint since 014: pg returns text */; token_hash: string; key_hash: string; user_id: number; address: string | null;
  created: string; last_seen: string; expires: string;
}
/** Per API rule: packets matched on all hosts (summed from agents' kernel counters) and when it last grew (007). */
export interface SecurityGroupRuleHitsTable { rule_id: number | string /* bigint since 015: pg returns text */; hitcount: number | string /* bigint: pg returns text */; lasthit: string | null }
/** One dropped packet the kernel logged (007). vm_id null: no VM owns the port (unknown port). */
export interface SecurityGroupDropTable {
  id: Generated<number | string> /* bigint since 014: pg returns text */; vm_id: number | string | null /* bigint since 016 */; host_id: number | null; nic_uuid: string | null; direction: string; protocol: string;
  src_address: string | null; src_port: number | null; dst_address: string | null; dst_port: number | null;
  icmp_type: number | null; icmp_code: number | null; reason: string; created: string;
}
/** Global settings an operator changed from their defaults (007). */
export interface ConfigurationTable { name: string; value: string; updated: string }
/** The change feed (005): one row per API transaction that changed something the control plane compiles. */
export interface ChangeTable { seq: number; server_id: string | null; created: string; body: string /* JSON Change[] */ }
/** Single row (id 1): the last feed position handed out. */
export interface ChangeSeqTable { id: number; seq: number }
/** One row per live server process (005); times in ms since the epoch, by the database's clock. */
export interface ServerTable { id: string; name: string; started_at: string; heartbeat_at: number; expires_at: number; feed_position: number; incarnation: string | null }
/** Which server holds a host's agent session (005). */
export interface HostLeaseTable { host_id: number; server_id: string; hostname: string; acquired_at: number; expires_at: number }

export interface Database {
  domains: DomainTable;
  accounts: AccountTable;
  users: UserTable;
  zones: ZoneTable;
  security_groups: SecurityGroupTable;
  security_group_rules: SecurityGroupRuleTable;
  security_group_vm_map: SecurityGroupVmMapTable;
  tags: TagTable;
  events: EventTable;
  async_jobs: AsyncJobTable;
  networks: NetworkTable;
  hosts: HostTable;
  vms: VmTable;
  nics: NicTable;
  nic_secondary_ips: NicSecondaryIpTable;
  sessions: SessionTable;
  security_group_rule_hits: SecurityGroupRuleHitsTable;
  security_group_drops: SecurityGroupDropTable;
  configuration: ConfigurationTable;
  changes: ChangeTable;
  change_seq: ChangeSeqTable;
  servers: ServerTable;
  host_leases: HostLeaseTable;
}
