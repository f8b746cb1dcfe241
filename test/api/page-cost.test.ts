// A page of a list costs what the page holds, not what the tenant ever stored. Async jobs (one per async
// call, failed and dry-run ones included, each with its result) and tags grow with every call a tenant
// makes; listing them must not read them all to show one page. The server is built in-process on a real
// store (SQLite, then a throwaway PostgreSQL cluster), through a Kysely plugin that counts the rows the
// store returns.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import pino from 'pino';
import type { FastifyInstance } from 'fastify';
import type { KyselyPlugin, PluginTransformQueryArgs, PluginTransformResultArgs, QueryResult, RootOperationNode, UnknownRow } from 'kysely';
import { openStore, type Db } from '../../src/store/db.js';
import { bootstrap } from '../../src/api/bootstrap.js';
import { buildServer } from '../../src/api/server.js';
import { signParams, formatExpires } from '../../src/api/signing.js';
import { startPostgres, type PgCluster } from '../helpers/postgres.js';

class RowCounter implements KyselyPlugin {
  rows = 0;
  transformQuery(args: PluginTransformQueryArgs): RootOperationNode { return args.node; }
  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    this.rows += args.result.rows.length;
    return args.result;
  }
}

for (const kind of ['sqlite', 'postgres'] as const) describe(`on ${kind}`, () => {
  let dir: string;
  let pg: PgCluster | undefined;
  let db: Db;
  let app: FastifyInstance;
  const counter = new RowCounter();
  let admin: { apikey: string; secretkey: string };
  const STORED = 3000;

  async function call(command: string, params: Record<string, string | number> = {}): Promise<any> {
    const p: Record<string, string> = { command, response: 'json', apiKey: admin.apikey, signatureVersion: '3', expires: formatExpires(new Date(Date.now() + 60_000)) };
    for (const [k, v] of Object.entries(params)) p[k] = String(v);
    p.signature = signParams(p, admin.secretkey);
    const r = await app.inject({ method: 'POST', url: '/client/api', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: new URLSearchParams(p).toString() });
    const body = JSON.parse(r.body);
    assert.equal(r.statusCode, 200, JSON.stringify(body));
    return body[`${command.toLowerCase()}response`];
  }

  /** Rows the store returned while `fn` ran. */
  async function rowsRead(fn: () => Promise<unknown>): Promise<number> {
    const before = counter.rows;
    await fn();
    return counter.rows - before;
  }

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-pagecost-'));
    if (kind === 'postgres') pg = await startPostgres();
    db = await openStore(pg ? { kind: 'postgres', url: pg.url } : { kind: 'sqlite', file: path.join(dir, 'p.db') });
    admin = await bootstrap(db);
    app = await buildServer({ db: db.withPlugin(counter), sink: { publish() {} }, log: pino({ level: 'silent' }), console: false });
    const owner = await db.selectFrom('users').select(['id', 'account_id']).executeTakeFirstOrThrow();
    const domainId = (await db.selectFrom('accounts').select('domain_id').where('id', '=', owner.account_id).executeTakeFirstOrThrow()).domain_id;
    const group = (await call('createSecurityGroup', { name: 'web' })).securitygroup;
    const groupId = (await db.selectFrom('security_groups').select('id').where('uuid', '=', group.id).executeTakeFirstOrThrow()).id;
    const now = new Date().toISOString();
    const result = JSON.stringify({ success: true, dryrun: { padding: 'x'.repeat(2000) } });
    for (let i = 0; i < STORED; i += 500) {
      await db.insertInto('async_jobs').values(Array.from({ length: 500 }, (_, j) => ({
        uuid: randomUUID(), command: `revokeSecurityGroupIngress`, account_id: owner.account_id, user_id: owner.id, status: 1, result_code: 0,
        result_type: 'object', result: JSON.stringify({ n: i + j, ...JSON.parse(result) }), instance_type: 'SecurityGroup', instance_uuid: null, created: now, completed: now,
      }))).execute();
      await db.insertInto('tags').values(Array.from({ length: 500 }, (_, j) => ({
        uuid: randomUUID(), resource_type: 'SecurityGroup', resource_id: groupId, resource_uuid: group.id, key: `k${i + j}`, value: `v${i + j}`,
        account_id: owner.account_id, domain_id: domainId, customer: null, created: now,
      }))).execute();
    }
  });

  after(async () => {
    await app?.close();
    await db?.destroy();
    await pg?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('listAsyncJobs: one page reads one page of jobs, and the count and paging stay exact', async () => {
    let page: any;
    const read = await rowsRead(async () => { page = await call('listAsyncJobs', { page: 2, pagesize: 10 }); });
    assert.equal(page.count, STORED);
    assert.equal(page.asyncjobs.length, 10);
    // newest first: page 2 holds the 11th to 20th newest
    assert.deepEqual(page.asyncjobs.map((j: any) => j.jobresult.n), Array.from({ length: 10 }, (_, i) => STORED - 11 - i));
    assert.ok(read < 100, `read ${read} rows from the store for a page of 10`);
    // the twin: asking for everything reads everything
    const all = await call('listAsyncJobs', { pagesize: -1 });
    assert.equal(all.asyncjobs.length, STORED);
  });

  test('listTags: one page reads one page of tags, and the count and paging stay exact', async () => {
    let page: any;
    const read = await rowsRead(async () => { page = await call('listTags', { page: 3, pagesize: 7 }); });
    assert.equal(page.count, STORED);
    assert.deepEqual(page.tag.map((t: any) => t.key), Array.from({ length: 7 }, (_, i) => `k${14 + i}`));
    assert.ok(read < 100, `read ${read} rows from the store for a page of 7`);
    const filtered = await call('listTags', { key: 'k2999' });
    assert.deepEqual([filtered.count, filtered.tag.map((t: any) => t.value)], [1, ['v2999']]);
  });
});
