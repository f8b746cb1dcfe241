// The store's migrations and queries run unchanged on a real PostgreSQL cluster and on SQLite.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { openPostgres, openStore, type Db } from '../../src/store/db.js';
import { startPostgres } from '../helpers/postgres.js';

async function exercise(db: Db): Promise<void> {
  const now = new Date().toISOString();
  const dom = await db.insertInto('domains').values({ uuid: crypto.randomUUID(), name: 'ROOT', path: '/', parent_id: null, created: now, removed: null })
    .returning('id').executeTakeFirstOrThrow();
  const acct = await db.insertInto('accounts').values({ uuid: crypto.randomUUID(), name: 'a', domain_id: dom.id, type: 0, state: 'enabled', created: now, removed: null })
    .returning('id').executeTakeFirstOrThrow();
  const g = await db.insertInto('security_groups').values({ uuid: crypto.randomUUID(), name: 'web', description: 'd', account_id: acct.id, domain_id: dom.id, created: now })
    .returning('id').executeTakeFirstOrThrow();
  // A transaction that fails half-way leaves nothing behind.
  await assert.rejects(db.transaction().execute(async (trx) => {
    await trx.insertInto('security_group_rules').values({ uuid: crypto.randomUUID(), group_id: g.id, account_id: acct.id, type: 'ingress', protocol: 'tcp', start_port: 22, end_port: 22, cidr: '10.0.0.0/8', allowed_group_id: null, created: now }).execute();
    throw new Error('boom');
  }), /boom/);
  // PostgreSQL returns count(*) as a string (bigint): callers must Number() it.
  assert.equal(Number((await db.selectFrom('security_group_rules').select((e) => e.fn.countAll().as('n')).executeTakeFirstOrThrow()).n), 0);
  await db.transaction().execute(async (trx) => {
    for (const cidr of ['10.0.0.0/8', '2001:db8::/32']) {
      await trx.insertInto('security_group_rules').values({ uuid: crypto.randomUUID(), group_id: g.id, account_id: acct.id, type: 'ingress', protocol: 'tcp', start_port: 22, end_port: 22, cidr, allowed_group_id: null, created: now }).execute();
    }
  });
  const rows = await db.selectFrom('security_group_rules as r').innerJoin('security_groups as g', 'g.id', 'r.group_id')
    .select(['r.cidr', 'g.name']).where('g.account_id', '=', acct.id).orderBy('r.cidr').execute();
  assert.deepEqual(rows.map((r) => r.cidr), ['10.0.0.0/8', '2001:db8::/32']);
  assert.ok(rows.every((r) => r.name === 'web'));
  // The composite primary key of the VM map refuses duplicates on both engines.
  await db.insertInto('security_group_vm_map').values({ group_id: g.id, vm_id: 1 }).execute();
  await assert.rejects(db.insertInto('security_group_vm_map').values({ group_id: g.id, vm_id: 1 }).execute());
}

test('store on a real PostgreSQL cluster: migrations, transactions, queries', async (t) => {
  const pg = await startPostgres();
  const db = await openStore({ kind: 'postgres', url: pg.url }).catch(async (e) => { await pg.stop(); throw e; });
  // Close the pool before the cluster goes away.
  t.after(async () => { await db.destroy(); await pg.stop(); });
  await exercise(db);
  // Migrating again is a no-op.
  const again = await openStore({ kind: 'postgres', url: pg.url });
  await again.destroy();

  // A connection that dies while checked out between two queries of a transaction fails that
  // transaction; it must not end the process (pg emits 'error' on such a client, which nobody heard).
  const lost: string[] = [];
  const victim = openPostgres(pg.url, (err) => lost.push(err.message));
  t.after(() => victim.destroy().catch(() => {}));
  await assert.rejects(victim.transaction().execute(async (trx) => {
    const { pid } = (await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(trx)).rows[0];
    await sql`select pg_terminate_backend(${pid})`.execute(db);
    await new Promise((r) => setTimeout(r, 300)); // the client hears its connection go while no query runs
    await sql`select 1`.execute(trx);
  }), /not queryable|terminat/i);
  assert.ok(lost.length > 0, 'the loss was reported');
  assert.equal((await sql<{ one: number }>`select 1 as one`.execute(victim)).rows[0].one, 1, 'the pool serves again');

  // A process frozen inside a transaction (SIGSTOP, a machine gone without a FIN) sends nothing more: the
  // database ends its session after the idle-in-transaction bound, and another writer gets the row lock
  // it held then, not when (if ever) the frozen one comes back.
  const frozen = openPostgres(pg.url, () => {}, 2, 1000);
  t.after(() => frozen.destroy().catch(() => {}));
  const acct = (await db.selectFrom('accounts').select('id').executeTakeFirstOrThrow()).id;
  let release!: () => void;
  const hold = new Promise<void>((r) => { release = r; });
  let locked!: () => void;
  const gotLock = new Promise<void>((r) => { locked = r; });
  const stuck = frozen.transaction().execute(async (trx) => {
    await sql`select id from accounts where id = ${acct} for update`.execute(trx);
    locked();
    await hold; // "frozen": nothing sent while the lock is held
    await sql`select 1`.execute(trx);
  });
  await gotLock;
  // without the bound the lock would be released only when the "frozen" one resumes, here after 8 s
  const resume = setTimeout(release, 8000);
  const t0 = performance.now();
  await db.transaction().execute(async (trx) => { await sql`select id from accounts where id = ${acct} for update`.execute(trx); });
  const waited = performance.now() - t0;
  clearTimeout(resume);
  release();
  await assert.rejects(stuck, 'the frozen transaction was ended, not committed');
  assert.ok(waited >= 500 && waited < 8000, `the other writer waited for the bound (1 s here), not for the frozen one: ${Math.round(waited)} ms`);
});

test('store on SQLite: the same queries', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-sqlite-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const db = await openStore({ kind: 'sqlite', file: path.join(dir, 'p.db') });
  t.after(() => db.destroy());
  await exercise(db);
});
