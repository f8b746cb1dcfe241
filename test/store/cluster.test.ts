// Leases, heartbeats and sweeps (store/queries/cluster.ts) on both dialects: a real SQLite file and a
// throwaway PostgreSQL cluster. Times are the database's, so expiry is driven by short TTLs here.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openStore, type Db } from '../../src/store/db.js';
import {
  acquireLeases, buryServer, deadServers, heartbeat, leaseHolders, minLivePosition, reassertHostStates, releaseLeases, renewHeartbeat, renewLeases, stillRegistered, sweepLeases,
} from '../../src/store/queries/cluster.js';
import { startPostgres, type PgCluster } from '../helpers/postgres.js';

let pg: PgCluster;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-cluster-'));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

before(async () => { pg = await startPostgres(); });
after(async () => { await pg?.stop(); fs.rmSync(dir, { recursive: true, force: true }); });

async function hostIds(db: Db, n: number, prefix = 'h'): Promise<number[]> {
  const now = new Date().toISOString();
  const zone = await db.insertInto('zones').values({ uuid: crypto.randomUUID(), name: 'z', description: '', created: now }).returning('id').executeTakeFirstOrThrow();
  const ids: number[] = [];
  for (let i = 0; i < n; i++) {
    const h = await db.insertInto('hosts').values({
      uuid: crypto.randomUUID(), name: `${prefix}${i}`, zone_id: zone.id, token_hash: `t${i}`, state: 'Up', last_contact: null, acked_revision: 0,
      desired_revision: 0, preflight: null, repairs: null, repair_count: 0, created: now, removed: null,
    }).returning('id').executeTakeFirstOrThrow();
    ids.push(h.id);
  }
  return ids;
}

const state = async (db: Db, id: number) => (await db.selectFrom('hosts').select('state').where('id', '=', id).executeTakeFirstOrThrow()).state;

async function exercise(db: Db): Promise<void> {
  const [h1, h2, h3] = await hostIds(db, 3);
  await heartbeat(db, { id: 'A', name: 'a', startedAt: 'x', feedPosition: 10, ttlMs: 60_000, incarnation: 'i1' });
  await heartbeat(db, { id: 'B', name: 'b', startedAt: 'x', feedPosition: 7, ttlMs: 60_000, incarnation: 'i1' });
  // A takes h1 and h2 for agents ag1, ag2.
  assert.deepEqual([...await acquireLeases(db, 'A', [{ hostId: h1, hostname: 'ag1' }, { hostId: h2, hostname: 'ag2' }], 60_000)].sort(), [h1, h2].sort());
  // Another agent (another hostname) cannot take h1 from A; the same agent moving to B can.
  assert.deepEqual([...await acquireLeases(db, 'B', [{ hostId: h1, hostname: 'intruder' }], 60_000)], []);
  assert.deepEqual([...await acquireLeases(db, 'B', [{ hostId: h2, hostname: 'ag2' }], 60_000)], [h2]);
  // A reclaiming (not a hello) never takes a live lease back, even for the same agent.
  assert.deepEqual([...await acquireLeases(db, 'A', [{ hostId: h2, hostname: 'ag2' }], 60_000, false)], []);
  assert.deepEqual([...await renewLeases(db, 'A', 60_000)], [h1], 'A still holds h1 only');
  const holders = await leaseHolders(db, [h1, h2, h3]);
  assert.equal(holders.get(h1)?.serverName, 'a');
  assert.equal(holders.get(h2)?.serverName, 'b');
  assert.equal(holders.has(h3), false);
  // Release: h1's lease goes and it shows Disconnected; h2 (held by B) is untouched by A's release.
  await releaseLeases(db, 'A', [h1, h2], new Date().toISOString());
  assert.equal(await state(db, h1), 'Disconnected');
  assert.equal(await state(db, h2), 'Up');
  // Expiry: a lease not renewed expires; the sweep marks the host Disconnected; anyone may take it.
  assert.deepEqual([...await acquireLeases(db, 'B', [{ hostId: h3, hostname: 'ag3' }], 150)], [h3]);
  await db.updateTable('hosts').set({ state: 'Up' }).where('id', '=', h3).execute();
  await sleep(400);
  await sweepLeases(db);
  assert.equal(await state(db, h3), 'Disconnected');
  assert.equal(await state(db, h2), 'Up', 'a live lease keeps its host');
  assert.deepEqual([...await acquireLeases(db, 'A', [{ hostId: h3, hostname: 'other' }], 60_000, false)], [h3]);
  // A server whose heartbeat expired: its jobs fail, its leases go, its row goes — unless it came back.
  const now = new Date().toISOString();
  const acct = await db.insertInto('accounts').values({ uuid: crypto.randomUUID(), name: 'x', domain_id: 1, type: 1, state: 'enabled', created: now, removed: null }).returning('id').executeTakeFirstOrThrow();
  for (const [uuid, server, status] of [['j1', 'B', 0], ['j2', 'B', 1], ['j3', 'A', 0]] as const) {
    await db.insertInto('async_jobs').values({ uuid, command: 'c', account_id: acct.id, user_id: 1, status, result_code: 0, result_type: 'object', result: null, instance_type: null, instance_uuid: null, created: now, completed: null, server_id: server }).execute();
  }
  await heartbeat(db, { id: 'B', name: 'b', startedAt: 'x', feedPosition: 7, ttlMs: 100, incarnation: 'i1' });
  assert.equal(await minLivePosition(db), 7);
  await sleep(300);
  assert.deepEqual((await deadServers(db)).map((s) => s.id), ['B']);
  assert.equal(await minLivePosition(db), 10, 'a dead server no longer holds back pruning');
  assert.equal(await buryServer(db, 'B', '{"errortext":"dead"}', now), 1);
  const jobs = await db.selectFrom('async_jobs').select(['uuid', 'status', 'result_code']).orderBy('uuid').execute();
  assert.deepEqual(jobs.map((j) => [j.uuid, j.status, j.result_code]), [['j1', 2, 530], ['j2', 1, 0], ['j3', 0, 0]]);
  assert.equal((await leaseHolders(db, [h2])).has(h2), false, 'its leases are gone');
  assert.equal(await buryServer(db, 'B', 'x', now), null, 'buried once');
  await heartbeat(db, { id: 'C', name: 'c', startedAt: 'x', feedPosition: 3, ttlMs: 60_000, incarnation: 'i1' });
  assert.equal(await buryServer(db, 'C', 'x', now), null, 'a live server is never buried');

  // Incarnations (the write fence): a renewal renews only its own incarnation's row.
  const beat = (incarnation: string, ttlMs = 60_000) => ({ id: 'D', name: 'd', startedAt: 'x', feedPosition: 0, ttlMs, incarnation });
  assert.equal(await renewHeartbeat(db, beat('d1')), 'gone', 'no row yet');
  await heartbeat(db, beat('d1'));
  assert.equal(await renewHeartbeat(db, beat('d1')), 'renewed');
  assert.equal(await stillRegistered(db, 'D', 'd1'), true);
  // another process takes the id: the first finds it taken, and its writes are no longer fenced in
  await heartbeat(db, beat('d2'));
  assert.equal(await renewHeartbeat(db, beat('d1')), 'taken');
  assert.equal(await stillRegistered(db, 'D', 'd1'), false);
  assert.equal(await stillRegistered(db, 'D', 'd2'), true);
  // buried (its row expired and removed): gone; a new incarnation registers afresh
  await heartbeat(db, beat('d2', 100));
  await sleep(300);
  assert.equal(await buryServer(db, 'D', 'x', now), 0);
  assert.equal(await renewHeartbeat(db, beat('d2')), 'gone', 'the buried one finds its row gone');
  assert.equal(await stillRegistered(db, 'D', 'd2'), false, 'so its old requests are fenced');
  await heartbeat(db, beat('d3'));
  assert.equal(await stillRegistered(db, 'D', 'd3'), true);
  // an expired row of another incarnation is not "taken": it can be replaced
  await heartbeat(db, beat('d4', 100));
  await sleep(300);
  assert.equal(await renewHeartbeat(db, beat('d3')), 'gone');
}

test('leases, heartbeats and sweeps on SQLite', async () => {
  const db = await openStore({ kind: 'sqlite', file: path.join(dir, 'c.db') });
  try { await exercise(db); } finally { await db.destroy(); }
});

test('leases, heartbeats and sweeps on PostgreSQL', async () => {
  const db = await openStore({ kind: 'postgres', url: pg.url });
  try { await exercise(db); } finally { await db.destroy(); }
});

test('a status flush that deadlocks with another transaction is retried until it lands, never dropped (PostgreSQL)', async () => {
  const { StatusWriter } = await import('../../src/control/status.js');
  const { default: pgLib } = await import('pg');
  const db = await openStore({ kind: 'postgres', url: pg.url });
  const other = new pgLib.Client({ connectionString: pg.url });
  await other.connect();
  const errors: unknown[] = [];
  const writer = new StatusWriter(db, 'S', (e) => errors.push(e), 10);
  try {
    const [h1, h2] = await hostIds(db, 2, 'dl');
    await heartbeat(db, { id: 'S', name: 's', startedAt: 'x', feedPosition: 0, ttlMs: 60_000, incarnation: 'i1' });
    await acquireLeases(db, 'S', [{ hostId: h1, hostname: 'a1' }, { hostId: h2, hostname: 'a2' }], 60_000);
    // Only the flush's own session detects the deadlock (the other waits 60 s first), so the flush is
    // the transaction PostgreSQL aborts, each time.
    await other.query("set deadlock_timeout = '60s'");
    const otherPid = (await other.query('select pg_backend_pid() as pid')).rows[0].pid;
    const flushBlocked = async () => {
      for (let i = 0; i < 200; i++) {
        const r = await other.query("select count(*)::int as n from pg_stat_activity where wait_event_type = 'Lock' and pid <> $1", [otherPid]);
        if (r.rows[0].n > 0) return;
        await sleep(25);
      }
      throw new Error('the flush never waited for the lock');
    };
    const deadlocks = 5; // more than the flush's give-up count for other errors
    const done = (async () => {
      for (let k = 0; k < deadlocks; k++) {
        await other.query('begin');
        await other.query('select id from hosts where id = $1 for update', [h2]);
        await flushBlocked(); // the flush holds h1 and waits for h2 ...
        await other.query('select id from hosts where id = $1 for update', [h1]); // ... and now for h1: deadlock
        await other.query('commit');
      }
    })();
    writer.host(h1, { state: 'Up', acked_revision: 42 });
    writer.host(h2, { state: 'Up', acked_revision: 43 });
    await done;
    for (let i = 0; i < 100; i++) {
      const rows = await db.selectFrom('hosts').select(['id', 'acked_revision']).where('id', 'in', [h1, h2]).orderBy('id').execute();
      if (rows.every((r) => Number(r.acked_revision) > 0)) break;
      await sleep(100);
    }
    const rows = await db.selectFrom('hosts').select(['acked_revision']).where('id', 'in', [h1, h2]).orderBy('id').execute();
    assert.deepEqual(rows.map((r) => Number(r.acked_revision)), [42, 43], 'the status landed after the deadlocks');
    assert.ok(errors.some((e) => /deadlock/i.test(String((e as Error).message))), 'the deadlock was seen (and reported once)');
    assert.ok(!errors.some((e) => /dropped/.test(String((e as Error).message))), 'nothing was dropped');
  } finally {
    await writer.flush().catch(() => undefined);
    await other.end();
    await db.destroy();
  }
});

test('a status flush failing on its own data is given up after three tries (the twin: not a conflict)', async () => {
  const { StatusWriter } = await import('../../src/control/status.js');
  const db = await openStore({ kind: 'postgres', url: pg.url });
  const errors: unknown[] = [];
  const writer = new StatusWriter(db, 'T', (e) => errors.push(e), 10);
  try {
    const [h1] = await hostIds(db, 1, 'bad');
    await heartbeat(db, { id: 'T', name: 't', startedAt: 'x', feedPosition: 0, ttlMs: 60_000, incarnation: 'i1' });
    await acquireLeases(db, 'T', [{ hostId: h1, hostname: 't1' }], 60_000);
    // a revision the column cannot hold: the write itself fails, every time
    writer.host(h1, { acked_revision: Number.MAX_SAFE_INTEGER * 1e6 });
    for (let i = 0; i < 100 && !errors.some((e) => /dropped/.test(String((e as Error).message))); i++) await sleep(100);
    assert.ok(errors.some((e) => /status writes dropped after 3 failures/.test(String((e as Error).message))), JSON.stringify(errors.map(String)));
  } finally {
    await writer.flush().catch(() => undefined);
    await db.destroy();
  }
});

/**
 * The race of the lock-order tests below: with index scans off (so a plain multi-row UPDATE visits rows
 * in heap order), another transaction — standing for a status flush, which locks in id order — holds
 * the lower id's row of `table`, waits until `write` waits for it, then asks for the higher id's. A
 * `write` that locks in id order holds nothing yet and lets it through; one that took the higher id
 * first deadlocks, which its own session detects (the other's deadlock_timeout is a minute). Returns
 * what `write` failed with (null: nothing).
 */
async function lowThenHigh(table: 'hosts' | 'vms', lo: number, hi: number, write: (db: Db) => Promise<unknown>): Promise<unknown> {
  const { default: pgLib } = await import('pg');
  const holder = new pgLib.Client({ connectionString: pg.url });
  await holder.connect();
  await holder.query('alter database postgres set enable_indexscan = off');
  await holder.query('alter database postgres set enable_bitmapscan = off');
  const db = await openStore({ kind: 'postgres', url: pg.url });   // new connections: the settings above
  try {
    await holder.query("set deadlock_timeout = '60s'");
    const holderPid = (await holder.query('select pg_backend_pid() as pid')).rows[0].pid;
    await holder.query('begin');
    await holder.query(`select id from ${table} where id = $1 for update`, [lo]);
    const writing = write(db).then(() => null, (e: unknown) => e);
    let waited = false;
    for (let i = 0; i < 200 && !waited; i++) {
      const r = await holder.query("select count(*)::int as n from pg_stat_activity where wait_event_type = 'Lock' and pid <> $1", [holderPid]);
      waited = r.rows[0].n > 0;
      if (!waited) await sleep(25);
    }
    assert.ok(waited, 'the write under test waited for the row the other transaction holds');
    await holder.query(`select id from ${table} where id = $1 for update`, [hi]);
    await holder.query('commit');
    return await writing;
  } finally {
    await holder.query('rollback').catch(() => undefined);
    await holder.query('alter database postgres reset enable_indexscan');
    await holder.query('alter database postgres reset enable_bitmapscan');
    await holder.end();
    await db.destroy();
  }
}

// The heartbeat's writes to hosts against a status flush (lock.ts): the heap's order is made the
// reverse of the ids' (the lower id's row updated last).
for (const [what, setup, write, expected] of [
  ['reasserting held hosts\' states', 'Disconnected', (db: Db, ids: number[]) => reassertHostStates(db, 'R', new Map([['Up', ids]])), 'Up'],
  ['the sweep marking unheld hosts Disconnected', 'Up', (db: Db) => sweepLeases(db).then(() => undefined), 'Disconnected'],
] as const) {
  test(`${what} locks host rows in id order: no deadlock with a status flush (PostgreSQL)`, async () => {
    const db = await openStore({ kind: 'postgres', url: pg.url });
    try {
      const [lo, hi] = await hostIds(db, 2, `order-${setup}-`);
      // Every other host is out of the way (removed), so the sweep's statement touches these two only.
      await db.updateTable('hosts').set({ removed: new Date().toISOString() }).where('id', 'not in', [lo!, hi!]).where('removed', 'is', null).execute();
      await db.updateTable('hosts').set({ state: setup }).where('id', '=', hi!).execute();
      await db.updateTable('hosts').set({ state: setup }).where('id', '=', lo!).execute();
      await heartbeat(db, { id: 'R', name: 'r', startedAt: 'x', feedPosition: 0, ttlMs: 60_000, incarnation: 'i1' });
      if (setup === 'Disconnected') await acquireLeases(db, 'R', [{ hostId: lo!, hostname: 'o1' }, { hostId: hi!, hostname: 'o2' }], 60_000);
      else await db.deleteFrom('host_leases').execute();
      const failure = await lowThenHigh('hosts', lo!, hi!, (other) => write(other, [lo!, hi!]));
      assert.equal(failure, null, `no deadlock: ${String((failure as Error | null)?.message)}`);
      const states = await db.selectFrom('hosts').select('state').where('id', 'in', [lo!, hi!]).execute();
      assert.deepEqual(states.map((h) => h.state), [expected, expected]);
    } finally { await db.destroy(); }
  });
}

// The same for VM rows: two servers' flushes both mark the VMs of a host nobody holds Pending; a
// StatusWriter's flush must not deadlock with the other (it would be retried, but each deadlock is
// reported, and under load they repeated).
test('a status flush locks the VM rows other servers may write in id order: no deadlock (PostgreSQL)', async () => {
  const { StatusWriter } = await import('../../src/control/status.js');
  const db = await openStore({ kind: 'postgres', url: pg.url });
  try {
    const [host] = await hostIds(db, 1, 'vmorder');
    await db.deleteFrom('host_leases').where('host_id', '=', host!).execute();
    const now = new Date().toISOString();
    const vm = (name: string) => db.insertInto('vms').values({
      uuid: crypto.randomUUID(), name, display_name: name, instance_name: name, account_id: 1, domain_id: 1, zone_id: 1, host_id: host!, last_host_id: null,
      state: 'Running', service_offering_id: null, template_id: null, sync_state: 'Synced', sync_error: null, created: now, removed: null,
    }).returning('id').executeTakeFirstOrThrow();
    const lo = Number((await vm('order-vm-1')).id);
    const hi = Number((await vm('order-vm-2')).id);
    await db.updateTable('vms').set({ sync_error: null }).where('id', '=', lo).execute();   // heap order: hi, then lo
    const errors: unknown[] = [];
    const failure = await lowThenHigh('vms', lo, hi, async (other) => {
      const writer = new StatusWriter(other, 'V', (e) => errors.push(e), 10);
      const unheld = { hostId: host!, placed: true, owned: false };
      writer.vm(lo, 'Pending', null, unheld);
      writer.vm(hi, 'Pending', null, unheld);
      try { await writer.flush(); } finally { await writer.close(); }
    });
    assert.equal(failure, null, `no deadlock: ${String((failure as Error | null)?.message)}`);
    assert.deepEqual(errors, []);
    const states = await db.selectFrom('vms').select('sync_state').where('id', 'in', [lo, hi]).execute();
    assert.deepEqual(states.map((v) => v.sync_state), ['Pending', 'Pending']);
  } finally { await db.destroy(); }
});
