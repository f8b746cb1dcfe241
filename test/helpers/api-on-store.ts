// The API of a server built in-process on a given store (a migration test's store after the migration
// under test): bootstrap's admin signs every call. `ok` is a sync call's answer or an async call's job
// result and asserts success; `fails` asserts failure and returns its error text (a sync call's answer or
// the failed job's result).
import assert from 'node:assert/strict';
import pino from 'pino';
import type { FastifyInstance } from 'fastify';
import type { Db } from '../../src/store/db.js';
import { bootstrap } from '../../src/api/bootstrap.js';
import { buildServer, dispatcherOf } from '../../src/api/server.js';
import { SessionAuth } from '../../src/api/sessions.js';
import { signParams, formatExpires } from '../../src/api/signing.js';

export type ApiParams = Record<string, string | number | boolean>;

export interface StoreApi {
  app: FastifyInstance;
  ok(command: string, params?: ApiParams): Promise<any>;
  fails(command: string, params?: ApiParams): Promise<string>;
}

export async function apiOn(db: Db): Promise<StoreApi> {
  const admin = await bootstrap(db);
  const log = pino({ level: 'silent' });
  const app = await buildServer({ db, sink: { publish() {} }, log, sessions: new SessionAuth({ db, log }), console: false });
  const call = async (command: string, params: ApiParams) => {
    const p: Record<string, string> = { command, response: 'json', apiKey: admin.apikey, signatureVersion: '3', expires: formatExpires(new Date(Date.now() + 60_000)) };
    for (const [k, v] of Object.entries(params)) p[k] = String(v);
    p.signature = signParams(p, admin.secretkey);
    const r = await app.inject({ method: 'POST', url: '/client/api', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: new URLSearchParams(p).toString() });
    return { status: r.statusCode, body: JSON.parse(r.body) };
  };
  /** A sync call's answer, or an async call's finished job. */
  const run = async (command: string, params: ApiParams) => {
    const r = await call(command, params);
    const inner = r.body[`${command.toLowerCase()}response`];
    if (r.status !== 200 || !inner?.jobid) return { sync: true, ...r, inner };
    await dispatcherOf(app).idle();
    const j = (await call('queryAsyncJobResult', { jobid: inner.jobid })).body.queryasyncjobresultresponse;
    return { sync: false, status: j.jobstatus === 1 ? 200 : 0, body: j, inner: j.jobresult };
  };
  return {
    app,
    async ok(command, params = {}) {
      const r = await run(command, params);
      assert.equal(r.status, 200, `${command}: ${JSON.stringify(r.body)}`);
      return r.inner;
    },
    async fails(command, params = {}) {
      const r = await run(command, params);
      assert.notEqual(r.status, 200, `${command} succeeded: ${JSON.stringify(r.body)}`);
      return String(r.inner?.errortext ?? JSON.stringify(r.body));
    },
  };
}
