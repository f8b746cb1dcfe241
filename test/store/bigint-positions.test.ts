// Migration 014 (64-bit host revisions and 64-bit ids of the tables that take one per call or per drop,
// on PostgreSQL) on both dialects: a store at migration 013 holding a host at int4's largest revision,
// and whose event, job, drop-log and session ids reached it. Before 014, PostgreSQL refuses the next
// revision and the next row of each (SQLite's integers are 64-bit: it never did); after it, the status
// writer's statements store revisions past 2^31, the writers of those rows work again, and every reader
// gets numbers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { sql } from 'kysely';
import { migrate } from '../../src/store/db.js';
import { isSqlite } from '../../src/store/dialect.js';
import { StatusWriter } from '../../src/control/status.js';
import { loadHosts } from '../../src/control/load.js';
import { acquireLeases, ackedRevisions, heartbeat } from '../../src/store/queries/cluster.js';
import { insertDrops, listDrops } from '../../src/store/queries/drops.js';
import { findSession, insertSession, pruneSessions, touchSession } from '../../src/store/queries/sessions.js';
import { insertEvents } from '../../src/api/events.js';
import type { Caller } from '../../src/api/command.js';
import { MIGRATION_TEST_NOW as NOW, openMigrationStores, rootWithAccounts, storeBefore, type MigrationStores } from '../helpers/migration-stores.js';

const INT4_MAX = 2 ** 31 - 1;

let both: MigrationStores;
before(async () => { both = await openMigrationStores('bigint-positions'); });
after(async () => { await both?.close(); });

const drop = (hostId: number) => ({
  vm_id: null, host_id: hostId, nic_uuid: null, direction: 'ingress', protocol: 'tcp', src_address: '192.0.2.1', src_port: 40000,
  dst_address: '10.0.0.1', dst_port: 22, icmp_type: null, icmp_code: null, reason: 'unknown port', created: NOW,
});

test('migration 014: revisions and per-call ids past 2^31 on a store that was at 013', async () => {
  for (const [name, db] of both.stores) {
    const raw = await storeBefore(db, '014', name);
    const zone = await raw.insertInto('zones').values({ uuid: crypto.randomUUID(), name: 'z', description: '', created: NOW }).returning('id').executeTakeFirstOrThrow();
    const host = async (n: string) => (await raw.insertInto('hosts').values({
      uuid: crypto.randomUUID(), name: n, zone_id: zone.id, token_hash: 't', state: 'Up', last_contact: null, acked_revision: INT4_MAX,
      desired_revision: INT4_MAX, preflight: null, repairs: null, repair_count: 0, created: NOW, removed: null,
    }).returning('id').executeTakeFirstOrThrow()).id as number;
    const held = await host('held'), unheld = await host('unheld');
    const { domainId, account } = await rootWithAccounts(raw);
    const accountId = await account('carol');
    const userId = (await raw.insertInto('users').values({ uuid: crypto.randomUUID(), account_id: accountId, username: 'carol', firstname: 'c', lastname: 'c', email: null,
      password_hash: null, apikey: null, secretkey: null, state: 'enabled', created: NOW, removed: null }).returning('id').executeTakeFirstOrThrow()).id as number;
    // One row of each table whose id is taken per call (per drop), as 013 has them.
    const rows: Record<string, Record<string, unknown>> = {
      security_group_drops: drop(held),
      events: { uuid: crypto.randomUUID(), type: 'USER.LOGIN', level: 'INFO', description: 'd', state: 'Completed', account_id: accountId, domain_id: domainId,
        user_id: userId, resource_type: null, resource_uuid: null, resource_name: null, parent_uuid: null, created: NOW, archived: 0 },
      async_jobs: { uuid: crypto.randomUUID(), command: 'c', account_id: accountId, user_id: userId, status: 1, result_code: 0, result_type: 'object', result: '{}',
        instance_type: null, instance_uuid: null, created: NOW, completed: NOW, server_id: null },
      sessions: { token_hash: 'old', key_hash: 'k', user_id: userId, address: null, created: NOW, last_seen: NOW, expires: NOW },
    };
    // Their ids have reached int4's largest value.
    for (const table of Object.keys(rows)) {
      if (isSqlite(db)) await sql`insert into sqlite_sequence (name, seq) values (${table}, ${INT4_MAX})`.execute(raw);
      else await sql`select setval(pg_get_serial_sequence(${table}, 'id'), ${INT4_MAX})`.execute(raw);
    }

    // Before 014: PostgreSQL cannot take the next revision nor the next id; SQLite can.
    const nextRevision = () => raw.updateTable('hosts').set({ desired_revision: INT4_MAX + 1 }).where('id', '=', held).execute();
    if (isSqlite(db)) {
      await nextRevision();
      await raw.updateTable('hosts').set({ desired_revision: INT4_MAX }).where('id', '=', held).execute();
    } else {
      await assert.rejects(nextRevision, /out of range for type integer/, `${name}: int4 revision`);
    }
    for (const [table, row] of Object.entries(rows)) {
      const next = () => raw.insertInto(table).values(row).execute();
      if (isSqlite(db)) { await next(); await raw.deleteFrom(table).execute(); }
      else await assert.rejects(next, /reached maximum value of sequence/, `${name}: int4 ${table} ids`);
    }

    await migrate(db);

    // The old values read back as numbers.
    assert.deepEqual((await loadHosts(db, [held, unheld])).map((h) => [h.desiredRevision, h.ackedRevision]), [[INT4_MAX, INT4_MAX], [INT4_MAX, INT4_MAX]], name);
    // The status writer's statements: a held host's revisions (CASE), an unheld host's raised desired
    // revision (greatest()), both past 2^31.
    await heartbeat(db, { id: 'S', name: 's', startedAt: NOW, feedPosition: 0, ttlMs: 60_000, incarnation: 'i' });
    await acquireLeases(db, 'S', [{ hostId: held, hostname: 'held' }], 60_000);
    const errors: unknown[] = [];
    const writer = new StatusWriter(db, 'S', (e) => errors.push(e), 1);
    writer.host(held, { acked_revision: INT4_MAX + 3, desired_revision: INT4_MAX + 5 });
    writer.desired(unheld, INT4_MAX + 7, false);
    await writer.close();
    assert.deepEqual(errors, [], `${name}: status writes`);
    assert.deepEqual((await loadHosts(db, [held, unheld])).map((h) => [h.desiredRevision, h.ackedRevision]), [[INT4_MAX + 5, INT4_MAX + 3], [INT4_MAX + 7, INT4_MAX]], name);
    assert.deepEqual([...await ackedRevisions(db, [held])], [[held, INT4_MAX + 3]], name);
    // A revision below the stored one does not lower an unheld host's (greatest() compares as integers).
    const againErrors: unknown[] = [];
    const again = new StatusWriter(db, 'S', (e) => againErrors.push(e), 1);
    again.desired(unheld, 999, false);
    await again.close();
    assert.deepEqual(againErrors, [], `${name}: status writes`);
    assert.deepEqual((await loadHosts(db, [unheld])).map((h) => h.desiredRevision), [INT4_MAX + 7], name);

    // Drops are logged again, with ids past 2^31.
    await insertDrops(db, [drop(held), drop(held)], new Date(NOW));
    const ids = (await db.selectFrom('security_group_drops').select('id').orderBy('id').execute()).map((r) => Number(r.id));
    assert.equal(ids.length, 2, name);
    assert.ok(ids.every((id) => id > INT4_MAX), `${name}: ${ids.join(', ')}`);
    const listed = await listDrops(db, { accountIds: null, domainIds: null, unowned: true }, new Date(NOW), { limit: null, offset: 0 });
    assert.equal(listed.length, 2, name);

    // Events, jobs and sessions are written again, with ids past 2^31; a session's id reads as a number.
    const caller = { userId, accountId, domainId } as Caller;
    await insertEvents(db, caller, [{ type: 'USER.LOGIN', description: 'd', state: 'Completed' }], NOW);
    await db.insertInto('async_jobs').values(rows.async_jobs as never).execute();
    await insertSession(db, { tokenHash: 'new', keyHash: 'k', userId, address: null, now: NOW, expires: '2027-01-01T00:00:00.000Z' });
    for (const table of ['events', 'async_jobs', 'sessions'] as const) {
      const got = (await db.selectFrom(table).select('id').execute()).map((r) => Number(r.id));
      assert.ok(got.length === 1 && got[0]! > INT4_MAX, `${name}: ${table} ids ${got.join(', ')}`);
    }
    const session = await findSession(db, 'new', NOW);
    assert.ok(session && typeof session.sessionId === 'number' && session.sessionId > INT4_MAX, `${name}: session ${JSON.stringify(session)}`);
    await touchSession(db, session.sessionId, NOW, '2027-02-01T00:00:00.000Z');
    assert.equal((await findSession(db, 'new', NOW))?.expires, '2027-02-01T00:00:00.000Z', name);
    await pruneSessions(db, NOW, userId, 0);   // keeps none: the newest goes too
    assert.equal(await findSession(db, 'new', NOW), undefined, name);
  }
});
