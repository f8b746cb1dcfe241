import { sql, type Kysely } from 'kysely';
import type { Migration } from 'kysely';
import { addId } from '../dialect.js';

// Written with Kysely's schema builder so the same migration runs on SQLite and PostgreSQL.
export const m001_initial: Migration = {
  async up(db: Kysely<any>): Promise<void> {
    const t = (name: string) => addId(db, db.schema.createTable(name));
    await t('domains').addColumn('uuid', 'text', (c) => c.notNull().unique()).addColumn('name', 'text', (c) => c.notNull())
      .addColumn('path', 'text', (c) => c.notNull()).addColumn('parent_id', 'integer').addColumn('created', 'text', (c) => c.notNull())
      .addColumn('removed', 'text').execute();
    await t('accounts').addColumn('uuid', 'text', (c) => c.notNull().unique()).addColumn('name', 'text', (c) => c.notNull())
      .addColumn('domain_id', 'integer', (c) => c.notNull()).addColumn('type', 'integer', (c) => c.notNull())
      .addColumn('state', 'text', (c) => c.notNull()).addColumn('created', 'text', (c) => c.notNull()).addColumn('removed', 'text').execute();
    await t('users').addColumn('uuid', 'text', (c) => c.notNull().unique()).addColumn('account_id', 'integer', (c) => c.notNull())
      .addColumn('username', 'text', (c) => c.notNull()).addColumn('firstname', 'text', (c) => c.notNull()).addColumn('lastname', 'text', (c) => c.notNull())
      .addColumn('email', 'text').addColumn('password_hash', 'text').addColumn('apikey', 'text', (c) => c.unique()).addColumn('secretkey', 'text')
      .addColumn('state', 'text', (c) => c.notNull()).addColumn('created', 'text', (c) => c.notNull()).addColumn('removed', 'text').execute();
    await t('zones').addColumn('uuid', 'text', (c) => c.notNull().unique()).addColumn('name', 'text', (c) => c.notNull())
      .addColumn('description', 'text', (c) => c.notNull()).addColumn('created', 'text', (c) => c.notNull()).execute();
    await t('security_groups').addColumn('uuid', 'text', (c) => c.notNull().unique()).addColumn('name', 'text', (c) => c.notNull())
      .addColumn('description', 'text', (c) => c.notNull()).addColumn('account_id', 'integer', (c) => c.notNull())
      .addColumn('domain_id', 'integer', (c) => c.notNull()).addColumn('created', 'text', (c) => c.notNull()).execute();
    await t('security_group_rules').addColumn('uuid', 'text', (c) => c.notNull().unique()).addColumn('group_id', 'integer', (c) => c.notNull())
      .addColumn('type', 'text', (c) => c.notNull()).addColumn('protocol', 'text', (c) => c.notNull()).addColumn('start_port', 'integer')
      .addColumn('end_port', 'integer').addColumn('cidr', 'text').addColumn('allowed_group_id', 'integer').addColumn('created', 'text', (c) => c.notNull()).execute();
    await db.schema.createTable('security_group_vm_map').addColumn('group_id', 'integer', (c) => c.notNull()).addColumn('vm_id', 'integer', (c) => c.notNull())
      .addPrimaryKeyConstraint('sgvm_pk', ['group_id', 'vm_id']).execute();
    await t('tags').addColumn('uuid', 'text', (c) => c.notNull().unique()).addColumn('resource_type', 'text', (c) => c.notNull())
      .addColumn('resource_id', 'integer', (c) => c.notNull()).addColumn('resource_uuid', 'text', (c) => c.notNull())
      .addColumn('key', 'text', (c) => c.notNull()).addColumn('value', 'text', (c) => c.notNull()).addColumn('account_id', 'integer', (c) => c.notNull())
      .addColumn('domain_id', 'integer', (c) => c.notNull()).addColumn('customer', 'text').addColumn('created', 'text', (c) => c.notNull()).execute();
    await t('events').addColumn('uuid', 'text', (c) => c.notNull().unique()).addColumn('type', 'text', (c) => c.notNull())
      .addColumn('level', 'text', (c) => c.notNull()).addColumn('description', 'text', (c) => c.notNull()).addColumn('state', 'text', (c) => c.notNull())
      .addColumn('account_id', 'integer', (c) => c.notNull()).addColumn('domain_id', 'integer', (c) => c.notNull()).addColumn('user_id', 'integer')
      .addColumn('resource_type', 'text').addColumn('resource_uuid', 'text').addColumn('resource_name', 'text').addColumn('parent_uuid', 'text')
      .addColumn('created', 'text', (c) => c.notNull()).addColumn('archived', 'integer', (c) => c.notNull().defaultTo(0)).execute();
    await t('async_jobs').addColumn('uuid', 'text', (c) => c.notNull().unique()).addColumn('command', 'text', (c) => c.notNull())
      .addColumn('account_id', 'integer', (c) => c.notNull()).addColumn('user_id', 'integer', (c) => c.notNull()).addColumn('status', 'integer', (c) => c.notNull())
      .addColumn('result_code', 'integer', (c) => c.notNull()).addColumn('result_type', 'text', (c) => c.notNull()).addColumn('result', 'text')
      .addColumn('instance_type', 'text').addColumn('instance_uuid', 'text').addColumn('created', 'text', (c) => c.notNull()).addColumn('completed', 'text').execute();
    await t('networks').addColumn('uuid', 'text', (c) => c.notNull().unique()).addColumn('name', 'text', (c) => c.notNull())
      .addColumn('display_text', 'text', (c) => c.notNull()).addColumn('zone_id', 'integer', (c) => c.notNull()).addColumn('account_id', 'integer', (c) => c.notNull())
      .addColumn('domain_id', 'integer', (c) => c.notNull()).addColumn('gateway', 'text').addColumn('netmask', 'text').addColumn('start_ip', 'text')
      .addColumn('end_ip', 'text').addColumn('ip6_gateway', 'text').addColumn('ip6_cidr', 'text').addColumn('start_ipv6', 'text').addColumn('end_ipv6', 'text')
      .addColumn('vlan', 'text').addColumn('created', 'text', (c) => c.notNull()).addColumn('removed', 'text').execute();
    await t('hosts').addColumn('uuid', 'text', (c) => c.notNull().unique()).addColumn('name', 'text', (c) => c.notNull())
      .addColumn('zone_id', 'integer', (c) => c.notNull()).addColumn('token_hash', 'text', (c) => c.notNull()).addColumn('state', 'text', (c) => c.notNull())
      .addColumn('last_contact', 'text').addColumn('acked_revision', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('desired_revision', 'integer', (c) => c.notNull().defaultTo(0)).addColumn('preflight', 'text').addColumn('repairs', 'text')
      .addColumn('repair_count', 'integer', (c) => c.notNull().defaultTo(0)).addColumn('created', 'text', (c) => c.notNull()).addColumn('removed', 'text').execute();
    await t('vms').addColumn('uuid', 'text', (c) => c.notNull().unique()).addColumn('name', 'text', (c) => c.notNull())
      .addColumn('display_name', 'text', (c) => c.notNull()).addColumn('instance_name', 'text', (c) => c.notNull())
      .addColumn('account_id', 'integer', (c) => c.notNull()).addColumn('domain_id', 'integer', (c) => c.notNull()).addColumn('zone_id', 'integer', (c) => c.notNull())
      .addColumn('host_id', 'integer').addColumn('last_host_id', 'integer').addColumn('state', 'text', (c) => c.notNull())
      .addColumn('service_offering_id', 'text').addColumn('template_id', 'text').addColumn('sync_state', 'text', (c) => c.notNull().defaultTo('Pending'))
      .addColumn('sync_error', 'text').addColumn('created', 'text', (c) => c.notNull()).addColumn('removed', 'text').execute();
    await t('nics').addColumn('uuid', 'text', (c) => c.notNull().unique()).addColumn('vm_id', 'integer', (c) => c.notNull())
      .addColumn('network_id', 'integer', (c) => c.notNull()).addColumn('mac', 'text', (c) => c.notNull()).addColumn('ipv4', 'text').addColumn('ipv6', 'text')
      .addColumn('is_default', 'integer', (c) => c.notNull()).addColumn('device_id', 'integer', (c) => c.notNull()).addColumn('device_name', 'text')
      .addColumn('created', 'text', (c) => c.notNull()).addColumn('removed', 'text').execute();
    await t('nic_secondary_ips').addColumn('uuid', 'text', (c) => c.notNull().unique()).addColumn('nic_id', 'integer', (c) => c.notNull())
      .addColumn('vm_id', 'integer', (c) => c.notNull()).addColumn('network_id', 'integer', (c) => c.notNull()).addColumn('address', 'text', (c) => c.notNull())
      .addColumn('family', 'integer', (c) => c.notNull()).addColumn('created', 'text', (c) => c.notNull()).execute();

    // Indexes for the hot paths: rules by group, members by group/vm, NICs by vm, names per account.
    await db.schema.createIndex('sgr_group').on('security_group_rules').column('group_id').execute();
    await db.schema.createIndex('sgr_allowed').on('security_group_rules').column('allowed_group_id').execute();
    await db.schema.createIndex('sg_account_name').on('security_groups').columns(['account_id', 'name']).execute();
    await db.schema.createIndex('sgvm_vm').on('security_group_vm_map').column('vm_id').execute();
    await db.schema.createIndex('nics_vm').on('nics').column('vm_id').execute();
    await db.schema.createIndex('nicsec_nic').on('nic_secondary_ips').column('nic_id').execute();
    await db.schema.createIndex('vms_host').on('vms').column('host_id').execute();
    await db.schema.createIndex('tags_res').on('tags').columns(['resource_type', 'resource_id']).execute();
    await db.schema.createIndex('events_created').on('events').column('created').execute();
    await db.schema.createIndex('users_account').on('users').column('account_id').execute();
    void sql;
  },
  async down(): Promise<void> { /* forward-only */ },
};
