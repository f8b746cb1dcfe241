import { sql, type Kysely, type Migration } from 'kysely';

// Database-level backstops for invariants the API already enforces inside its transactions, so a bug or
// a race between two servers on one PostgreSQL cannot store duplicates. Each index is implied by an
// application check, hence cannot reject anything the API accepts:
// - NIC addresses and MACs: allocation.ts treats only rows with removed IS NULL as in use, so the
//   indexes are partial on the same condition; NULL addresses (no IPv4/IPv6) never conflict.
// - Secondary IPs per network: the same allocator checks them against every address of the network.
// - Host names, account names per domain, domain names per parent: addHost, createAccount and
//   createDomain refuse exact duplicates among live (removed IS NULL) rows; the indexes say the same.
// - Security group names per account: createSecurityGroup/updateSecurityGroup reject names equal
//   ignoring case (CloudStack's collation); the index compares exactly, which is weaker than that check.
//   A case-insensitive index (lower(name)) is deliberately not used: SQLite's and PostgreSQL's lower()
//   fold case differently from JavaScript's toLowerCase outside ASCII and could refuse a name the API
//   accepts. It replaces 001's non-unique index on the same columns.
export const m002_unique_backstops: Migration = {
  async up(db: Kysely<any>): Promise<void> {
    const removed = sql.ref('removed'); // partial indexes: live rows only
    await db.schema.createIndex('nics_network_ipv4_uq').unique().on('nics').columns(['network_id', 'ipv4']).where(removed, 'is', null).execute();
    await db.schema.createIndex('nics_network_ipv6_uq').unique().on('nics').columns(['network_id', 'ipv6']).where(removed, 'is', null).execute();
    await db.schema.createIndex('nics_mac_uq').unique().on('nics').column('mac').where(removed, 'is', null).execute();
    await db.schema.createIndex('nicsec_network_address_uq').unique().on('nic_secondary_ips').columns(['network_id', 'address']).execute();
    // Names the create commands check before inserting (exact comparison, live rows only).
    await db.schema.createIndex('hosts_name_uq').unique().on('hosts').column('name').where(removed, 'is', null).execute();
    await db.schema.createIndex('accounts_domain_name_uq').unique().on('accounts').columns(['domain_id', 'name']).where(removed, 'is', null).execute();
    await db.schema.createIndex('domains_parent_name_uq').unique().on('domains').columns(['parent_id', 'name']).where(removed, 'is', null).execute();
    await db.schema.createIndex('sg_account_name_uq').unique().on('security_groups').columns(['account_id', 'name']).execute();
    await db.schema.dropIndex('sg_account_name').execute();
  },
  async down(): Promise<void> { /* forward-only */ },
};
