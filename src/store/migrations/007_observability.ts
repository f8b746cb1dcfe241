import { sql, type Kysely, type Migration } from 'kysely';
import { addId } from '../dialect.js';

// Observability (issue 11): per-API-rule hit counters, the bounded drop log, and Palisade's global
// settings (CloudStack's `configuration` table, reduced to what Palisade has).
// - security_group_rule_hits: one row per API rule that was ever hit; deleted with its rule. hitcount
//   is a 64-bit integer (PostgreSQL bigint; SQLite integers are 64-bit anyway).
// - security_group_drops: bounded by the ingestion code (store/queries/drops.ts): per VM the newest
//   1,000 and at most 24 h old, per host the newest 1,000 without a VM, and a global cap. vm_id is null
//   for drops no VM owns (an unknown port).
// - configuration: only values an operator changed; absent rows mean the default (model/settings.ts).
export const m007_observability: Migration = {
  async up(db: Kysely<any>): Promise<void> {
    await db.schema.createTable('security_group_rule_hits')
      .addColumn('rule_id', 'integer', (c) => c.primaryKey())
      .addColumn('hitcount', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('lasthit', 'text')
      .execute();
    await addId(db, db.schema.createTable('security_group_drops'))
      .addColumn('vm_id', 'integer')
      .addColumn('host_id', 'integer')
      .addColumn('nic_uuid', 'text')
      .addColumn('direction', 'text', (c) => c.notNull())
      .addColumn('protocol', 'text', (c) => c.notNull())
      .addColumn('src_address', 'text')
      .addColumn('src_port', 'integer')
      .addColumn('dst_address', 'text')
      .addColumn('dst_port', 'integer')
      .addColumn('icmp_type', 'integer')
      .addColumn('icmp_code', 'integer')
      .addColumn('reason', 'text', (c) => c.notNull())
      .addColumn('created', 'text', (c) => c.notNull())
      .execute();
    await db.schema.createIndex('sgdrops_vm').on('security_group_drops').columns(['vm_id', 'id']).execute();
    await db.schema.createIndex('sgdrops_host').on('security_group_drops').columns(['host_id', 'id']).execute();
    await db.schema.createIndex('sgdrops_created').on('security_group_drops').column('created').execute();
    await db.schema.createTable('configuration')
      .addColumn('name', 'text', (c) => c.primaryKey())
      .addColumn('value', 'text', (c) => c.notNull())
      .addColumn('updated', 'text', (c) => c.notNull())
      .execute();
    void sql;
  },
  async down(): Promise<void> { /* forward-only */ },
};
