import { sql, type Kysely, type Migration } from 'kysely';
import { isSqlite } from '../dialect.js';

// 64-bit group, VM, NIC, secondary-address and network ids on PostgreSQL, with every column that holds
// one (015 did rules and tags). SQLite's integers are 64-bit already: nothing to do there.
// Ids taken one per call by tenants (or domain admins) and by routine operation, freed by deletes that
// the sequences never reuse. Past 2^31-1 each create failed ("nextval: reached maximum value of
// sequence") for everyone:
// - security_groups.id: createSecurityGroup / deleteSecurityGroup, one id a cycle. One client looping
//   both against one in-process server on PostgreSQL (two cores shared with other work, load average
//   ~4) made 66 cycles a second one call at a time, 78 with four calls in parallel (the server's CPU is
//   the bound): 2^31 in about a year per server kept busy, in weeks for a tenant looping through every
//   server of a larger cloud (security.group.max.per.account bounds the groups held, not the rate). Then
//   no account could create a group, nor could a new account get its `default` group.
//   Held by security_group_rules.group_id and .allowed_group_id and security_group_vm_map.group_id (and
//   tags.resource_id, bigint since 015).
// - nic_secondary_ips.id: addIpToNic / removeIpFromNic by the VM's owner, hard deletes, one id a pair.
// - nics.id: addNicToVirtualMachine / removeNicFromVirtualMachine by the VM's owner, hard deletes, one
//   id a pair; and one per NIC of every VM deployed. Held by nic_secondary_ips.nic_id.
// - vms.id: one per deployVirtualMachine, by any account, never reused; destroy keeps the row until an
//   admin expunges it, which routine operation does (or the table grows for ever), so a cloud's VM churn
//   (CI fleets, autoscaling, a tenant deploying/destroying in a loop) advances it without bound. Held by
//   security_group_vm_map.vm_id, nics.vm_id, nic_secondary_ips.vm_id, security_group_drops.vm_id (and
//   tags.resource_id, bigint). instance_name (`i-<account>-<vm>-VM`) is text: it just grows a digit.
// - networks.id: createNetwork / deleteNetwork (hard delete), by domain admins too. Held by
//   nics.network_id and nic_secondary_ips.network_id, whose tables this rewrites anyway, so widening it
//   costs only the networks table itself.
// Left at 32 bits, and why (each id the sequence hands out there stays a row, or only operators take it):
// - domains.id, accounts.id, users.id: createDomain/createAccount/createUser (admins, domain admins);
//   deleteAccount marks rows removed and keeps them, no domain or user is ever deleted: 2^31 ids is 2^31
//   rows kept, far past what the store holds otherwise. Widening accounts/domains would also rewrite
//   every account_id/domain_id column, events' included (the largest table, ~100 million rows: minutes).
//   Their references stay with them: every account_id and domain_id, domains.parent_id, and user_id in
//   events, async_jobs and sessions.
// - hosts.id: addHost/deleteHost, root admin only, at the pace hosts are racked (vms.host_id and
//   .last_host_id, host_leases.host_id, security_group_drops.host_id and the placement advisory lock's
//   int4 key stay with it).
// - zones.id (and networks/hosts/vms.zone_id): written once at bootstrap; change_seq.id: the constant 1.
// - other integer columns are not ids: ports, ICMP type/code, account type, job status/result code,
//   nics.device_id (below MAX_NICS_PER_VM), nic_secondary_ips.family, events.archived, and
//   hosts.repair_count (saturates at 2^31-1, control/sync.ts). Feed positions, revisions, hit counts and
//   the ids 014/015 widened are bigint already.
// Change-feed bodies carry these ids as JSON numbers (exact to 2^53; the feed reader takes any
// non-negative integer). Agents see uuids, instance names (kernel names derive from them with
// CloudStack's truncation) and address-set ids `sg<group>v4|6` (the protocol allows 15 digits).
// Cost: ALTER COLUMN TYPE int4 → int8 rewrites the table and its indexes under an exclusive lock, once
// (one statement per table). Measured on PostgreSQL (fsync off, two cores shared with other work, load
// average 3–4), at 015: 100,000 groups and 100,000 rules 1.4–2.4 s, a million of each 6.4–10.3 s (2 runs
// each); with as many VMs, NICs, memberships and secondary addresses as well, 4.3 s and 34.9 s. Rules and
// groups are bounded per account (security.group.max.*); VMs, NICs and memberships are what the cloud
// runs (expunged VMs' rows are deleted); the drop log holds at most 1,000,000 rows (~5 s, 014).
// Kysely runs the pending migrations in one transaction on PostgreSQL: every API write touching these
// tables, and the control plane's loads, wait until the last table is rewritten, once, while the first
// upgraded server starts (with 014 and 015 pending too, behind theirs).
// Readers convert: pg returns int8 as a string (Number() at every read, as for 014's and 015's ids;
// api/commands/inventory/rows.ts for whole VM, NIC and network rows).
const WIDEN: [table: string, columns: string[]][] = [
  ['security_groups', ['id']],
  ['security_group_rules', ['group_id', 'allowed_group_id']],
  ['security_group_vm_map', ['group_id', 'vm_id']],
  ['vms', ['id']],
  ['nics', ['id', 'vm_id', 'network_id']],
  ['nic_secondary_ips', ['id', 'nic_id', 'vm_id', 'network_id']],
  ['networks', ['id']],
  ['security_group_drops', ['vm_id']],
];

export const m016_bigint_group_vm_ids: Migration = {
  async up(db: Kysely<any>): Promise<void> {
    if (isSqlite(db)) return;
    for (const [table, columns] of WIDEN) {
      const alters = sql.join(columns.map((c) => sql`alter column ${sql.ref(c)} type bigint`));
      await sql`alter table ${sql.table(table)} ${alters}`.execute(db);
      if (!columns.includes('id')) continue;
      const seq = await sql<{ name: string | null }>`select pg_get_serial_sequence(${table}, 'id') as name`.execute(db);
      // The catalog's own, quoted, name of the sequence.
      const name = seq.rows[0]?.name;
      if (name) await sql`alter sequence ${sql.raw(name)} as bigint`.execute(db);
    }
  },
  // Forward-only: narrowing back would fail on any value past 2^31-1, which is what this is for.
  async down(): Promise<void> {},
};
