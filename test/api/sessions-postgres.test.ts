// Login sessions on PostgreSQL: they live in the store, so a session opened on one server works on
// another server of the same database and survives a restart; logout on one ends it on both.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startPostgres, type PgCluster } from '../helpers/postgres.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { login, mustLogin, sessionCall } from '../helpers/session.js';

let pg: PgCluster;
let a: TestServer;
let b: TestServer;
let password: string;

before(async () => {
  pg = await startPostgres();
  a = await startServer({ db: pg.url });
  b = await startServer({ db: pg.url });
  password = JSON.parse(fs.readFileSync(path.join(a.dataDir, 'admin-credentials.json'), 'utf8')).password;
});
after(async () => { await a?.stop(); await b?.stop(); await pg?.stop(); });

test('the first server wrote the admin password; the second one did not invent another', async () => {
  assert.ok(password);
  const second = JSON.parse(fs.readFileSync(path.join(b.dataDir, 'admin-credentials.json'), 'utf8'));
  assert.equal(second.password, undefined, 'only the start that set it knows it');
  assert.equal((await login(b.url, 'admin', password)).status, 200);
  assert.equal((await login(b.url, 'admin', 'wrong')).status, 531);
});

test('a session from server A works on server B and after A restarts; logout on B ends it everywhere', async () => {
  const sess = await mustLogin(a.url, 'admin', password);
  assert.equal((await sessionCall(a.url, sess, 'listZones')).status, 200);
  assert.equal((await sessionCall(b.url, sess, 'listZones')).status, 200, 'another server of the same store');
  assert.equal((await sessionCall(b.url, { ...sess, sessionkey: 'forged' }, 'listZones')).status, 401);
  await a.restart();
  assert.equal((await sessionCall(a.url, sess, 'listZones')).status, 200, 'after a restart');
  assert.equal((await sessionCall(b.url, sess, 'logout')).status, 200);
  assert.equal((await sessionCall(a.url, sess, 'listZones')).status, 401);
  assert.equal((await sessionCall(b.url, sess, 'listZones')).status, 401);
});
