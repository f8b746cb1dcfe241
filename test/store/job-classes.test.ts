// Migration 013 (async jobs stored with the API name as `cmd` get the Java class CloudStack records) on
// both dialects: a store at migration 012 holding jobs in the old form is upgraded; a root admin's job
// of a VM command gets the …CmdByAdmin class, anyone else's the user class, and what is already a class
// or names no async API is left as it was.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { migrate } from '../../src/store/db.js';
import { MIGRATION_TEST_NOW as NOW, openMigrationStores, rootWithAccounts, storeBefore, type MigrationStores } from '../helpers/migration-stores.js';

let both: MigrationStores;
before(async () => { both = await openMigrationStores('job-classes'); });
after(async () => { await both?.close(); });

const API = 'org.apache.cloudstack.api.command';

test('migration 013: old jobs\' cmd becomes the class CloudStack records, ByAdmin for a root admin\'s VM commands', async () => {
  for (const [name, db] of both.stores) {
    const raw = await storeBefore(db, '013', name);
    const { account } = await rootWithAccounts(raw);
    const admin = await account('admin', 1), user = await account('carol', 0), domainAdmin = await account('dora', 2);
    const job = async (command: string, acct: number) => {
      const uuid = crypto.randomUUID();
      await raw.insertInto('async_jobs').values({ uuid, command, account_id: acct, user_id: 1, status: 1, result_code: 0, result_type: 'object', result: '{}', instance_type: null, instance_uuid: null, created: NOW, completed: NOW }).execute();
      return uuid;
    };
    const expected = new Map<string, string>([
      [await job('authorizeSecurityGroupIngress', user), `${API}.user.securitygroup.AuthorizeSecurityGroupIngressCmd`],
      [await job('authorizeSecurityGroupIngress', admin), `${API}.user.securitygroup.AuthorizeSecurityGroupIngressCmd`],
      [await job('deployVirtualMachine', admin), `${API}.admin.vm.DeployVMCmdByAdmin`],
      [await job('deployVirtualMachine', user), `${API}.user.vm.DeployVMCmd`],
      [await job('deployVirtualMachine', domainAdmin), `${API}.user.vm.DeployVMCmd`],
      [await job('revokeSecurityGroupEgress', domainAdmin), `${API}.user.securitygroup.RevokeSecurityGroupEgressCmd`],
      // the twins: a job already in the new form, and a name that is no async API, are left alone
      [await job(`${API}.user.tag.CreateTagsCmd`, user), `${API}.user.tag.CreateTagsCmd`],
      [await job('someFutureCommand', admin), 'someFutureCommand'],
    ]);
    await migrate(db);
    const rows = await db.selectFrom('async_jobs').select(['uuid', 'command']).execute();
    assert.equal(rows.length, expected.size);
    for (const r of rows) assert.equal(r.command, expected.get(r.uuid), `${name}: job ${r.uuid}`);
  }
});
