// Slow steps of a request must not hold the store. On SQLite the store is ONE connection: whatever runs
// inside a command's transaction holds every other request (and every agent report) until it ends, so a
// tenant repeating a slow call would wedge the server for everyone. The slow steps here are password
// hashing and checking (scrypt, ~0.1 s of CPU each: createAccount, createUser, updateUser) and a revoke
// dry run asking agents about tracked connections (up to seconds when a host does not answer).
//
// How it is checked, without timing: while the slow step runs, the test asks the same store a question.
// If a transaction holds the store the question cannot be answered until the slow step ends — which
// waits for the answer — so it is not answered within a generous bound; otherwise it is at once.
// The server is built in-process on a real SQLite store (the ConnectionInspector and scrypt are the
// seams); the login limiter is the server's own.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import pino from 'pino';
import type { FastifyInstance } from 'fastify';
import { openStore, type Db } from '../../src/store/db.js';
import { bootstrap } from '../../src/api/bootstrap.js';
import { buildServer, dispatcherOf } from '../../src/api/server.js';
import { SessionAuth } from '../../src/api/sessions.js';
import { signParams, formatExpires } from '../../src/api/signing.js';
import type { ConnectionInspector } from '../../src/model/telemetry.js';

const require = createRequire(import.meta.url);
const crypto = require('node:crypto') as typeof import('node:crypto');

let dir: string;
let db: Db;
let app: FastifyInstance;
let admin: { apikey: string; secretkey: string };
/** What the slow steps saw: for each, whether the store answered a question while it ran. */
const observed: { step: string; storeFree: boolean }[] = [];
let watchScrypt = false;

/** Can the store answer now? (false if no answer within the bound: a transaction holds it) */
async function storeAnswers(): Promise<boolean> {
  const bound = new Promise<false>((r) => { const t = setTimeout(() => r(false), 5000); t.unref(); });
  return Promise.race([db.selectFrom('zones').select('id').execute().then(() => true as const), bound]);
}

type Creds = { apikey: string; secretkey: string };
async function call(command: string, params: Record<string, string | number | boolean> = {}, who: Creds = admin): Promise<{ status: number; body: any }> {
  const p: Record<string, string> = { command, response: 'json', apiKey: who.apikey, signatureVersion: '3', expires: formatExpires(new Date(Date.now() + 60_000)) };
  for (const [k, v] of Object.entries(params)) p[k] = String(v);
  p.signature = signParams(p, who.secretkey);
  const r = await app.inject({ method: 'POST', url: '/client/api', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: new URLSearchParams(p).toString() });
  return { status: r.statusCode, body: JSON.parse(r.body) };
}
async function ok(command: string, params: Record<string, string | number | boolean> = {}, who: Creds = admin): Promise<any> {
  const r = await call(command, params, who);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const inner = r.body[`${command.toLowerCase()}response`];
  if (!inner.jobid) return inner;
  await dispatcherOf(app).idle();
  const j = (await call('queryAsyncJobResult', { jobid: inner.jobid }, who)).body.queryasyncjobresultresponse;
  assert.equal(j.jobstatus, 1, JSON.stringify(j));
  return j.jobresult;
}

let alice: Creds & { userId: string };
let rule: string;
let webId: string;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-held-'));
  db = await openStore({ kind: 'sqlite', file: path.join(dir, 'p.db') });
  admin = await bootstrap(db);
  const log = pino({ level: 'silent' });
  const inspector: ConnectionInspector = {
    trackedConnections: async (req) => {
      observed.push({ step: 'agents asked', storeFree: await storeAnswers() });
      return req.hostIds.map((hostId) => ({ hostId, answered: true, truncated: false, connections: [] }));
    },
  };
  app = await buildServer({ db, sink: { publish() {} }, log, sessions: new SessionAuth({ db, log }), connections: inspector, console: false });

  // scrypt as the server calls it (node:crypto's callback form), watched: the store must answer meanwhile.
  const real = crypto.scrypt;
  (crypto as any).scrypt = (...args: any[]) => {
    if (!watchScrypt) return (real as any)(...args);
    void storeAnswers().then((storeFree) => {
      observed.push({ step: 'scrypt', storeFree });
      (real as any)(...args);
    });
  };
  syncBuiltinESMExports();

  const acct = (await ok('createAccount', { username: 'alice', password: 'alice-pw-1', email: 'a@example.org', firstname: 'A', lastname: 'L' })).account;
  alice = { ...(await ok('registerUserKeys', { id: acct.user[0].id })).userkeys, userId: acct.user[0].id };
  const zone = (await ok('listZones')).zone[0].id;
  const net = (await ok('createNetwork', { name: 'n', zoneid: zone, gateway: '10.0.0.1', netmask: '255.255.255.0', startip: '10.0.0.10', endip: '10.0.0.99' })).network;
  const host = (await ok('addHost', { name: 'h1' })).host[0];
  const web = (await ok('createSecurityGroup', { name: 'web', account: 'alice', domainid: acct.domainid })).securitygroup;
  webId = web.id;
  rule = (await ok('authorizeSecurityGroupIngress', { securitygroupid: web.id, protocol: 'tcp', startport: 22, endport: 22, cidrlist: '192.0.2.0/24' }, alice)).securitygroup.ingressrule[0].ruleid;
  await ok('deployVirtualMachine', { name: 'vm1', networkids: net.id, hostid: host.id, account: 'alice', domainid: acct.domainid, securitygroupids: web.id });
});

after(async () => {
  await app?.close();
  await db?.destroy();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a revoke dry run waits for the agents without holding the store', async () => {
  observed.length = 0;
  const r = await ok('revokeSecurityGroupIngress', { id: rule, dryrun: true }, alice);
  assert.equal(r.dryrun.trackedconnections.status, 'complete');
  assert.deepEqual(observed, [{ step: 'agents asked', storeFree: true }], 'the store answered while the agents were asked');
  // the dry run did not touch the rule
  assert.equal((await ok('listSecurityGroups', { id: webId }, alice)).securitygroup[0].ingressrule.length, 1);
});

test('password hashing and checking run outside the command transaction (createAccount, createUser, updateUser)', async () => {
  observed.length = 0;
  watchScrypt = true;
  try {
    const acct = (await ok('createAccount', { username: 'carol', password: 'carol-pw-1', email: 'c@example.org', firstname: 'C', lastname: 'L' })).account;
    await ok('createUser', { account: 'carol', username: 'carol2', password: 'carol2-pw', firstname: 'C', lastname: 'L' });
    await ok('updateUser', { id: acct.user[0].id, password: 'carol-reset' });                                      // admin reset: hash
    await ok('updateUser', { id: alice.userId, password: 'alice-pw-2', currentpassword: 'alice-pw-1' }, alice);   // own: check + hash
    const wrong = await call('updateUser', { id: alice.userId, password: 'alice-pw-3', currentpassword: 'not-it' }, alice);
    assert.equal(wrong.status, 431);
    assert.equal(wrong.body.updateuserresponse.errortext, 'Current password is incorrect.');
  } finally {
    watchScrypt = false;
  }
  assert.equal(observed.length, 6, JSON.stringify(observed));
  assert.deepEqual(observed.filter((o) => !o.storeFree), [], 'the store answered during every scrypt');
});
