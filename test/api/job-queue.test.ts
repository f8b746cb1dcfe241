// Async jobs wait their turn, and requests are served meanwhile. The store's queries resolve without
// returning to the event loop (better-sqlite3 is synchronous), so jobs all started at once ran back to
// back and no request was read until the last had finished. Checked by order, not by time: while one
// tenant's many heavy dry runs are under way, another tenant's listZones is answered before they are
// all done. In-process server on a real SQLite store, real HTTP. Then the queue alone: accounts take turns.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import pino from 'pino';
import type { FastifyInstance } from 'fastify';
import { openStore, type Db } from '../../src/store/db.js';
import { bootstrap } from '../../src/api/bootstrap.js';
import { buildServer, dispatcherOf } from '../../src/api/server.js';
import { signParams, formatExpires } from '../../src/api/signing.js';
import { JobQueue } from '../../src/api/job-queue.js';

let dir: string;
let db: Db;
let app: FastifyInstance;
let url: string;
let admin: { apikey: string; secretkey: string };

async function call(command: string, params: Record<string, string | number | boolean> = {}): Promise<any> {
  const p: Record<string, string> = { command, response: 'json', apiKey: admin.apikey, signatureVersion: '3', expires: formatExpires(new Date(Date.now() + 600_000)) };
  for (const [k, v] of Object.entries(params)) p[k] = String(v);
  p.signature = signParams(p, admin.secretkey);
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(p).toString() });
  const body = await r.json() as any;
  assert.equal(r.status, 200, JSON.stringify(body));
  return body[`${command.toLowerCase()}response`];
}

const cidrs = (k: number) => Array.from({ length: 1000 }, (_, i) => `10.${k}.${i >> 8}.${i & 255}/32`).join(',');
let group: string;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-jobq-'));
  db = await openStore({ kind: 'sqlite', file: path.join(dir, 'p.db') });
  admin = await bootstrap(db);
  app = await buildServer({ db, sink: { publish() {} }, log: pino({ level: 'silent' }), console: false });
  await app.listen({ host: '127.0.0.1', port: 0 });
  url = `http://127.0.0.1:${(app.server.address() as net.AddressInfo).port}/client/api`;
  // A group bigger than a tenant may build by default (security.group.max.rules): the operator allowed it.
  await call('updateConfiguration', { name: 'security.group.max.rules', value: '20000' });
  group = (await call('createSecurityGroup', { name: 'big' })).securitygroup.id;
  for (let k = 0; k < 10; k++) await call('authorizeSecurityGroupIngress', { securitygroupid: group, protocol: 'tcp', startport: 22, endport: 22, cidrlist: cidrs(k) });
  await dispatcherOf(app).idle();
  const rules = await db.selectFrom('security_group_rules').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
  assert.equal(Number(rules.n), 10_000, 'the big group was built');
});
after(async () => {
  await app?.close();
  await db?.destroy();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('many heavy jobs at once: the event loop keeps turning between them, so requests are served meanwhile', async () => {
  const jobs = 16; // each reads the group's 10,000 rules: a few hundred ms
  const pendingNow = async () => Number((await db.selectFrom('async_jobs').select((eb) => eb.fn.countAll<number>().as('n')).where('status', '=', 0).executeTakeFirstOrThrow()).n);
  // Submitted through the dispatcher (the HTTP handler's call) in one go, as requests arriving together are.
  const d = dispatcherOf(app);
  const signed = () => {
    const p: Record<string, string> = { command: 'authorizeSecurityGroupIngress', response: 'json', apiKey: admin.apikey, signatureVersion: '3', expires: formatExpires(new Date(Date.now() + 600_000)),
      securitygroupid: group, protocol: 'tcp', startport: '22', endport: '22', cidrlist: cidrs(1), dryrun: 'true' };
    return { ...p, signature: signParams(p, admin.secretkey) };
  };
  const submitted = await Promise.all(Array.from({ length: jobs }, () => d.handle(signed())));
  assert.deepEqual(submitted.map((r) => r.status), Array(jobs).fill(200));
  // The next timer: before, every job that was ready ran back to back before any timer or socket got a
  // turn, so by then all were done; now only the first ones have run.
  await new Promise((r) => setTimeout(r, 0));
  assert.ok(await pendingNow() > jobs / 2, `jobs still waiting (${await pendingNow()} of ${jobs}) while timers and sockets get turns`);
  // a request over HTTP meanwhile is answered (before the last job is done)
  const zones = await call('listZones');
  assert.equal(zones.count, 1);
  assert.ok(await pendingNow() > 0, 'listZones was answered while jobs were still waiting');
  // and every job still completes
  await dispatcherOf(app).idle();
  assert.equal(await pendingNow(), 0);
  const done = await db.selectFrom('async_jobs').select(['status']).where('command', '=', 'org.apache.cloudstack.api.command.user.securitygroup.AuthorizeSecurityGroupIngressCmd').where('result', 'like', '%dryrun%').execute();
  assert.equal(done.filter((j) => j.status === 1).length, jobs);
});

test('the queue: bounded concurrency, accounts take turns, a failing job does not stop the rest', async () => {
  const q = new JobQueue(1);
  const order: string[] = [];
  let running = 0, most = 0;
  const job = (name: string, fail = false) => async () => {
    running++; most = Math.max(most, running);
    await new Promise((r) => setTimeout(r, 1));
    order.push(name);
    running--;
    if (fail) throw new Error('boom');
  };
  const all = [
    ...Array.from({ length: 5 }, (_, i) => q.submit(1, job(`flood${i}`, i === 1))),
    q.submit(2, job('other')),
    q.submit(3, job('third')),
  ];
  await Promise.all(all);
  assert.equal(most, 1);
  assert.deepEqual(order, ['flood0', 'other', 'third', 'flood1', 'flood2', 'flood3', 'flood4'], 'one flood job, then the others, then the rest of the flood');
  assert.equal(q.size, 0);
});
