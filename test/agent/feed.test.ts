// The change feed and its reader, in this process on a real SQLite file: the API appends one feed row
// per transaction, the control plane reads it back like any other server's, and store failures in the
// middle (injected into the control plane's own connection) delay changes but never lose or repeat
// them. An agent speaking the real protocol receives the result.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { KyselyPlugin, PluginTransformQueryArgs, PluginTransformResultArgs, QueryResult, RootOperationNode, UnknownRow } from 'kysely';
import { openSqlite, migrate, type Db } from '../../src/store/db.js';
import { bootstrap } from '../../src/api/bootstrap.js';
import { buildServer } from '../../src/api/server.js';
import { deadServerJobResult } from '../../src/api/dispatcher.js';
import { createControlPlane, type ControlPlane } from '../../src/control/index.js';
import { loadCloudState } from '../../src/control/load.js';
import type { TestServer } from '../helpers/server.js';
import { apiClient, freePort } from '../helpers/server.js';
import { failOnUnhandledRejection } from '../helpers/rejections.js';
import { addHost, createCloud, deploy, hostRow, job, ok, silentLog, simAgent, sleep, waitFor, type Cloud } from './helpers.js';

failOnUnhandledRejection();

/** Fails queries that mention `table` while armed (`left` times, or until disarmed). */
class Faults implements KyselyPlugin {
  table: string | null = null;
  left = 0;
  hits = 0;
  arm(table: string, times = Infinity): void { this.table = table; this.left = times; }
  disarm(): void { this.table = null; }
  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    if (this.table && this.left > 0 && JSON.stringify(args.node).includes(`"name":"${this.table}"`)) {
      this.left--;
      this.hits++;
      throw new Error(`injected store failure (${this.table})`);
    }
    return args.node;
  }
  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> { return args.result; }
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-feed-'));
const file = path.join(dir, 'palisade.db');
let apiDb: Db;
let controlDb: Db;
const faults = new Faults();
let cp: ControlPlane;
let app: FastifyInstance;
let srv: TestServer;
let cloud: Cloud;
let agent: ReturnType<typeof simAgent>;
let host: { id: string; token: string };
let group: string;

before(async () => {
  apiDb = openSqlite(file);
  await migrate(apiDb);
  const boot = await bootstrap(apiDb);
  controlDb = openSqlite(file).withPlugin(faults);
  cp = await createControlPlane(controlDb, silentLog, {
    serverId: 'feed-test', serverName: 'feed-test', jobFailure: (s) => deadServerJobResult(s.name, new Date(s.heartbeatAt)),
    timing: { heartbeatMs: 200, serverTtlMs: 2000, leaseTtlMs: 2000, unhealthyAfterMs: 60_000, stalledAfterMs: 60_000 },
  });
  app = await buildServer({ db: apiDb, sink: cp.sink, log: silentLog, serverId: 'feed-test' });
  await cp.register(app);
  const port = await freePort();
  await app.listen({ host: '127.0.0.1', port });
  const url = `http://127.0.0.1:${port}/client/api`;
  const { call, callAndWait } = apiClient(url, boot, 20);
  srv = { port, url, call, callAndWait } as unknown as TestServer;
  cloud = await createCloud(srv);
  host = await addHost(srv, 'feed-h1');
  group = ok(await srv.call('createSecurityGroup', { name: 'feed-web' }), 'createSecurityGroup').createsecuritygroupresponse.securitygroup.id;
  await deploy(srv, cloud, { hostid: host.id, name: 'feed-vm', securitygroupids: group });
  agent = simAgent(srv, host.token, 'feed-agent');
  await agent.start();
  await waitFor('agent synced', async () => (await hostRow(srv, host.id)).securitygroupsynced && agent.connected);
});

after(async () => {
  faults.disarm();
  await agent?.stop();
  if (agent) fs.rmSync(agent.dir, { recursive: true, force: true });
  await app?.close();
  await cp?.close();
  await apiDb?.destroy();
  await controlDb?.destroy();
  fs.rmSync(dir, { recursive: true, force: true });
});

const ports = () => new Set((agent.state?.vms ?? []).flatMap((v) => v.v4.ingress.map((r) => r.ports?.from)).filter((p): p is number => p !== undefined));
const authorize = (port: number) => job(srv, 'authorizeSecurityGroupIngress', { securitygroupid: group, protocol: 'tcp', startport: port, endport: port, cidrlist: '0.0.0.0/0' });

test('every API transaction that changes something appends one feed row, numbered in commit order', async () => {
  const before = await apiDb.selectFrom('change_seq').select('seq').executeTakeFirstOrThrow();
  // The control plane neither reads nor prunes the feed meanwhile (its queries of `changes` fail): else
  // it may read a row and prune it before it is counted here (seen: [6] for [5, 6]).
  faults.arm('changes');
  await authorize(7001);
  await authorize(7003);
  await srv.call('listSecurityGroups');                                     // reads append nothing
  const rows = await apiDb.selectFrom('changes').select(['seq', 'body', 'server_id']).where('seq', '>', Number(before.seq)).orderBy('seq').execute();
  faults.disarm();
  assert.deepEqual(rows.map((r) => Number(r.seq)), [Number(before.seq) + 1, Number(before.seq) + 2]);
  for (const r of rows) {
    assert.equal(r.server_id, 'feed-test');
    assert.deepEqual(JSON.parse(r.body).map((c: any) => c.kind), ['rules']);
  }
  await waitFor('both rules at the agent', () => ports().has(7001) && ports().has(7003));
});

test('a batch whose store read fails stays queued and is retried from its position: nothing lost, nothing applied twice', async () => {
  const impl = cp.impl!;
  const retries = impl.batches.stats.retries;
  const deltas = agent.counters.deltas;
  faults.arm('security_group_rules', 4);   // the batch's reload of the group's rules fails four times
  await authorize(7005);
  await authorize(7007);
  await waitFor('failed reads', () => faults.hits >= 1);
  await waitFor('all rules at the agent after the retries', () => ports().has(7005) && ports().has(7007), 20_000);
  faults.disarm();
  assert.ok(impl.batches.stats.retries > retries, 'the batch was retried');
  assert.ok(agent.counters.deltas - deltas <= 3, `a few deltas, not one per retry (${agent.counters.deltas - deltas})`);
  await impl.settle();
  // The in-memory state equals the store's.
  const fresh = await loadCloudState(apiDb);
  const gid = Number((await apiDb.selectFrom('security_groups').select('id').where('uuid', '=', group).executeTakeFirstOrThrow()).id);
  assert.deepEqual(impl.fleet.state.rulesByGroup.get(gid), fresh.rulesByGroup.get(gid));
  await waitFor('host synced', async () => (await hostRow(srv, host.id)).securitygroupsynced);
});

test('a feed read that fails is retried from the same position; what was committed meanwhile arrives in order', async () => {
  const impl = cp.impl!;
  const failures = impl.reader.stats.failures;
  faults.arm('changes');
  const fails = faults.hits;
  await authorize(7009);
  await authorize(7011);
  await waitFor('the reader failed', () => faults.hits > fails);
  await sleep(300);
  assert.ok(!ports().has(7009), 'nothing arrives while the feed cannot be read');
  faults.disarm();
  await waitFor('both arrive once the feed reads again', () => ports().has(7009) && ports().has(7011), 20_000);
  assert.ok(impl.reader.stats.failures > failures);
});

test('feed rows every live server has read are pruned; the counter keeps counting', async () => {
  const impl = cp.impl!;
  await impl.settle();
  const pos = impl.batches.processed;
  await waitFor('rows below the position pruned', async () => {
    const r = await apiDb.selectFrom('changes').select('seq').where('seq', '<', pos).execute();
    return r.length === 0;
  }, 20_000, 100);
  await authorize(7013);
  const seq = Number((await apiDb.selectFrom('change_seq').select('seq').executeTakeFirstOrThrow()).seq);
  assert.ok(seq > pos, 'positions never go back after a prune');
  await waitFor('7013 at the agent', () => ports().has(7013));
});
