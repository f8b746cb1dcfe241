// History retention on a real SQLite file and a real PostgreSQL cluster: finished async jobs older than
// job.expire.minutes and events older than event.purge.delay days are purged, in batches; pending jobs,
// recent history, and events when the delay is 0, stay.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { openStore, type Db } from '../../src/store/db.js';
import { bootstrap } from '../../src/api/bootstrap.js';
import { purgeHistory } from '../../src/store/queries/retention.js';
import { readRetention, writeSetting } from '../../src/store/queries/settings.js';
import { startPostgres, type PgCluster } from '../helpers/postgres.js';

let pg: PgCluster;
let dir: string;
const stores: { name: string; db: Db }[] = [];

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-retention-'));
  stores.push({ name: 'sqlite', db: await openStore({ kind: 'sqlite', file: path.join(dir, 'p.db') }) });
  pg = await startPostgres();
  stores.push({ name: 'postgres', db: await openStore({ kind: 'postgres', url: pg.url }) });
  for (const s of stores) await bootstrap(s.db);
});
after(async () => {
  for (const s of stores) await s.db.destroy();
  await pg?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const now = new Date('2026-06-01T12:00:00.000Z');
const ago = (ms: number) => new Date(now.getTime() - ms).toISOString();
const HOUR = 3600_000, DAY = 24 * HOUR;

async function fill(db: Db): Promise<void> {
  const u = await db.selectFrom('users').select(['id', 'account_id']).executeTakeFirstOrThrow();
  const a = await db.selectFrom('accounts').select('domain_id').where('id', '=', u.account_id).executeTakeFirstOrThrow();
  const job = (tag: string, status: number, created: string, completed: string | null) => ({
    uuid: randomUUID(), command: tag, account_id: u.account_id, user_id: u.id, status, result_code: 0, result_type: 'object',
    result: null, instance_type: null, instance_uuid: null, created, completed,
  });
  // 23 expired finished jobs (more than two batches of 10), one recent, one old but still pending
  await db.insertInto('async_jobs').values([
    ...Array.from({ length: 23 }, (_, i) => job('expired', i % 2 ? 1 : 2, ago(3 * DAY), ago(2 * DAY))),
    job('recent', 1, ago(2 * HOUR), ago(90 * 60_000)),
    job('pending', 0, ago(3 * DAY), null),
  ]).execute();
  const event = (tag: string, created: string) => ({
    uuid: randomUUID(), type: tag, level: 'INFO', description: tag, state: 'Completed', account_id: u.account_id, domain_id: a.domain_id,
    user_id: u.id, resource_type: null, resource_uuid: null, resource_name: null, parent_uuid: null, created, archived: 0,
  });
  await db.insertInto('events').values([
    ...Array.from({ length: 12 }, () => event('OLD', ago(16 * DAY))),
    event('NEW', ago(14 * DAY)),
  ]).execute();
}

const kinds = async (db: Db, table: 'async_jobs' | 'events') => (table === 'async_jobs'
  ? (await db.selectFrom('async_jobs').select('command as k').execute())
  : (await db.selectFrom('events').select('type as k').where('type', 'in', ['OLD', 'NEW']).execute())).map((r) => r.k).sort();

test('finished jobs older than job.expire.minutes and events older than event.purge.delay go; the rest stays', async () => {
  for (const { name, db } of stores) {
    await fill(db);
    const retention = await readRetention(db);
    assert.deepEqual(retention, { jobExpireMinutes: 1440, eventPurgeDays: 15 }, 'CloudStack\'s defaults');
    // event.purge.delay = 0: events are kept for ever
    await writeSetting(db, 'event.purge.delay', '0', now.toISOString());
    let r = await purgeHistory(db, now, await readRetention(db), 10);
    assert.deepEqual(r, { jobs: 23, events: 0 }, name);
    assert.deepEqual(await kinds(db, 'async_jobs'), ['pending', 'recent'], name);
    assert.equal((await kinds(db, 'events')).length, 13, name);
    await writeSetting(db, 'event.purge.delay', null, now.toISOString());
    r = await purgeHistory(db, now, await readRetention(db), 10);
    assert.deepEqual(r, { jobs: 0, events: 12 }, name);
    assert.deepEqual(await kinds(db, 'events'), ['NEW'], name);
    // a shorter job.expire.minutes takes the recent one too, never the pending one
    await writeSetting(db, 'job.expire.minutes', '60', now.toISOString());
    r = await purgeHistory(db, now, await readRetention(db));
    assert.deepEqual([r.jobs, await kinds(db, 'async_jobs')], [1, ['pending']], name);
  }
});
