// Migration 013 (async jobs stored with the API name as `cmd` get the Java class CloudStack records) on
// both dialects: a store at migration 012 holding jobs in the old form is upgraded; a root admin's job
// of a VM command gets the …CmdByAdmin class, anyone else's the user class, and what is already a class
// or names no async API is left as it was.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Migrator, type Kysely, type MigrationProvider } from 'kysely';
import { migrate, openPostgres, openSqlite, type Db } from '../../src/store/db.js';
import { migrations } from '../../src/store/migrations/index.js';
import { startPostgres, type PgCluster } from '../helpers/postgres.js';

let pg: PgCluster;
let dir: string;
const stores: [string, Db][] = [];

before(async () => {
  pg = await startPostgres();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-job-classes-'));
  stores.push(['sqlite', openSqlite(path.join(dir, 'p.db'))], ['postgres', openPostgres(pg.url)]);
});
after(async () => {
  for (const [, db] of stores) await db.destroy();
  await pg?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const NOW = '2026-01-01T00:00:00.000Z';
const API = 'org.apache.cloudstack.api.command';

test('migration 013: old jobs\' cmd becomes the class CloudStack records, ByAdmin for a root admin\'s VM commands', async () => {
  for (const [name, db] of stores) {
    const upTo012: MigrationProvider = { getMigrations: async () => Object.fromEntries(Object.entries(migrations).filter(([id]) => id < '013')) };
    const old = await new Migrator({ db, provider: upTo012 }).migrateToLatest();
    assert.equal(old.error, undefined, `${name}: ${String(old.error)}`);
    const raw = db as unknown as Kysely<any>;
    const d = await raw.insertInto('domains').values({ uuid: crypto.randomUUID(), name: 'ROOT', path: '/', parent_id: null, created: NOW, removed: null }).returning('id').executeTakeFirstOrThrow();
    const account = async (n: string, type: number) => (await raw.insertInto('accounts').values({ uuid: crypto.randomUUID(), name: n, domain_id: d.id, type, state: 'enabled', created: NOW, removed: null }).returning('id').executeTakeFirstOrThrow()).id as number;
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
