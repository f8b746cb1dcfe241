// Migration 013 benchmark (not a test): how long rewriting old async jobs' `cmd` (API name → Java class)
// takes on a store at migration 012 holding N jobs (default 300,000; a quarter of them in a root admin's
// account, four APIs, ~300-byte results), SQLite or (--postgres) a throwaway PostgreSQL cluster of the
// test helper's. Removes its temporary store at the end.
// Run: node --import tsx bench/job-classes-migration.ts [N] [--postgres]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Migrator, sql, type Kysely, type MigrationProvider } from 'kysely';
import { migrate, openPostgres, openSqlite, type Db } from '../src/store/db.js';
import { migrations } from '../src/store/migrations/index.js';
import { startPostgres, type PgCluster } from '../test/helpers/postgres.js';

const args = process.argv.slice(2);
const N = Number(args.find((a) => /^\d+$/.test(a)) ?? 300_000);
const postgres = args.includes('--postgres');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-bench-m013-'));
let pg: PgCluster | undefined;
let db: Db;
if (postgres) {
  pg = await startPostgres();
  db = openPostgres(pg.url);
} else {
  db = openSqlite(path.join(dir, 'p.db'));
}
try {
  const upTo012: MigrationProvider = { getMigrations: async () => Object.fromEntries(Object.entries(migrations).filter(([id]) => id < '013')) };
  await new Migrator({ db, provider: upTo012 }).migrateToLatest();
  const raw = db as unknown as Kysely<any>;
  const NOW = '2026-01-01T00:00:00.000Z';
  const d = await raw.insertInto('domains').values({ uuid: crypto.randomUUID(), name: 'ROOT', path: '/', parent_id: null, created: NOW, removed: null }).returning('id').executeTakeFirstOrThrow();
  const account = async (name: string, type: number) => (await raw.insertInto('accounts').values({ uuid: crypto.randomUUID(), name, domain_id: d.id, type, state: 'enabled', created: NOW, removed: null }).returning('id').executeTakeFirstOrThrow()).id as number;
  const admin = await account('admin', 1), user = await account('carol', 0);
  const apis = ['authorizeSecurityGroupIngress', 'deployVirtualMachine', 'createTags', 'stopVirtualMachine'];
  await raw.transaction().execute(async (t) => {
    for (let i = 0; i < N; i += 500) {
      const rows = [];
      for (let j = i; j < Math.min(N, i + 500); j++) {
        rows.push({ uuid: crypto.randomUUID(), command: apis[j % 4], account_id: j % 4 === 0 ? admin : user, user_id: 1, status: 1, result_code: 0,
          result_type: 'object', result: JSON.stringify({ x: 'y'.repeat(300) }), instance_type: null, instance_uuid: null, created: NOW, completed: NOW });
      }
      await t.insertInto('async_jobs').values(rows).execute();
    }
  });
  const t0 = performance.now();
  await migrate(db);
  const s = (performance.now() - t0) / 1000;
  const left = await raw.selectFrom('async_jobs').select(sql<number>`count(*)`.as('n')).where('command', 'in', apis).executeTakeFirstOrThrow();
  console.log(`migration 013 on ${N} jobs (${postgres ? 'PostgreSQL' : 'SQLite'}): ${s.toFixed(2)} s; jobs still named by API: ${Number(left.n)}`);
} finally {
  await db.destroy();
  await pg?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
}
