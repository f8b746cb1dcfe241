// Lists of any length in statements, on a real SQLite file and a real PostgreSQL cluster: 70,000 values
// (more than either engine's bound-variable limit) in IN filters, deletes and multi-row inserts; and the
// exact, case-sensitive domain-path prefix on both engines.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { openStore, type Db } from '../../src/store/db.js';
import { inList, notInList, valuesChunks } from '../../src/store/queries/batch.js';
import { startsWith } from '../../src/store/queries/like.js';
import { startPostgres, type PgCluster } from '../helpers/postgres.js';

const N = 70_000; // > SQLite's 32,766 and PostgreSQL's 65,535 bound parameters

let pg: PgCluster;
let dir: string;
const stores: { name: string; db: Db }[] = [];

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-batch-'));
  stores.push({ name: 'sqlite', db: await openStore({ kind: 'sqlite', file: path.join(dir, 'p.db') }) });
  pg = await startPostgres();
  stores.push({ name: 'postgres', db: await openStore({ kind: 'postgres', url: pg.url }) });
});
after(async () => {
  for (const s of stores) await s.db.destroy();
  await pg?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

async function group(db: Db, domainName: string, domainPath: string): Promise<{ groupId: number; accountId: number; domainId: number }> {
  const now = new Date().toISOString();
  const d = await db.insertInto('domains').values({ uuid: randomUUID(), name: domainName, path: domainPath, parent_id: null, created: now, removed: null }).returning('id').executeTakeFirstOrThrow();
  const a = await db.insertInto('accounts').values({ uuid: randomUUID(), name: `a-${domainName}`, domain_id: d.id, type: 0, state: 'enabled', created: now, removed: null }).returning('id').executeTakeFirstOrThrow();
  const g = await db.insertInto('security_groups').values({ uuid: randomUUID(), name: 'big', description: '', account_id: a.id, domain_id: d.id, created: now }).returning('id').executeTakeFirstOrThrow();
  return { groupId: Number(g.id), accountId: a.id, domainId: d.id };
}

test('70,000 values: a one-statement multi-row insert and IN list exceed both engines; the batch helpers do not', async () => {
  for (const { name, db } of stores) {
    const { groupId, accountId } = await group(db, `dom-${name}`, `/dom-${name}/`);
    const now = new Date().toISOString();
    const rows = Array.from({ length: N }, (_, i) => ({
      uuid: randomUUID(), group_id: groupId, account_id: accountId, type: 'ingress', protocol: 'udp', start_port: 53, end_port: 53,
      cidr: `10.${i >> 16 & 255}.${i >> 8 & 255}.${i & 255}/32`, allowed_group_id: null, created: now,
    }));
    // the limit is real: the naive forms fail on this engine
    await assert.rejects(db.insertInto('security_group_rules').values(rows).execute(), `${name}: one INSERT of ${N} rows`);
    const ids: number[] = [];
    await db.transaction().execute(async (trx) => {
      for (const part of valuesChunks(rows)) ids.push(...(await trx.insertInto('security_group_rules').values(part).returning('id').execute()).map((r) => Number(r.id)));
    });
    assert.equal(ids.length, N, name);
    await assert.rejects(db.selectFrom('security_group_rules').select('id').where('id', 'in', ids).execute(), `${name}: IN with ${N} parameters`);

    const count = async (where: ReturnType<typeof inList>) =>
      Number((await db.selectFrom('security_group_rules').select((e) => e.fn.countAll().as('n')).where(where).executeTakeFirstOrThrow()).n);
    assert.equal(await count(inList(db, 'id', ids)), N, name);
    assert.equal(await count(inList(db, 'id', ids.slice(0, 7))), 7, `${name}: short lists stay inline`);
    assert.equal(await count(inList(db, 'id', [])), 0, `${name}: an empty list matches nothing`);
    assert.equal(await count(inList(db, 'uuid', rows.slice(0, 40_000).map((r) => r.uuid))), 40_000, `${name}: text values`);
    assert.equal(await count(notInList(db, 'id', ids.slice(1))), 1, `${name}: NOT IN`);
    // ordering and paging over the filtered rows stay exact (one statement)
    const page = await db.selectFrom('security_group_rules').select('id').where(inList(db, 'id', ids)).orderBy('id', 'desc').limit(3).offset(2).execute();
    assert.deepEqual(page.map((r) => Number(r.id)), [...ids].sort((a, b) => b - a).slice(2, 5), name);
    const del = await db.deleteFrom('security_group_rules').where(inList(db, 'id', ids)).executeTakeFirst();
    assert.equal(Number(del.numDeletedRows), N, name);
    assert.equal(await count(inList(db, 'group_id', [groupId])), 0);
  }
});

test('startsWith compares domain paths exactly: /D1/ does not cover /d1/ (SQLite LIKE would), on both engines', async () => {
  for (const { name, db } of stores) {
    for (const p of ['/D1/', '/D1/child/', '/d1/', '/d1/child/', '/D1x/', '/Ж1/', '/ж1/']) {
      await db.insertInto('domains').values({ uuid: randomUUID(), name: p, path: `/${name}${p}`, parent_id: null, created: '', removed: null }).execute();
    }
    const under = async (prefix: string) => (await db.selectFrom('domains').select('path').where(startsWith('path', `/${name}${prefix}`)).orderBy('path').execute()).map((r) => r.path.slice(name.length + 1));
    assert.deepEqual(await under('/D1/'), ['/D1/', '/D1/child/'], name);
    assert.deepEqual(await under('/d1/'), ['/d1/', '/d1/child/'], name);
    assert.deepEqual(await under('/Ж1/'), ['/Ж1/'], name);
    assert.deepEqual(await under('/%/'), [], `${name}: LIKE wildcards are plain characters`);
  }
});
