// The control plane on the PostgreSQL store: the real server process with --db against a throwaway
// cluster, agents in this process (render-only dataplane): snapshot, delta, acks and sync status,
// resync after a server restart; a flood of valid reports from one agent.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startPostgres, type PgCluster } from '../helpers/postgres.js';
import { apiClient, assertNoUnhandledRejection, freePort, type TestServer } from '../helpers/server.js';
import pgLib from 'pg';
import { addHost, createCloud, deploy, hostRow, job, rawAgent, simAgent, vmIds, vmRow, waitFor } from './helpers.js';

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));
let pg: PgCluster;
let child: ChildProcess | null = null;
let out = '';
let srv: TestServer;
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-pgsrv-'));
const agents: ReturnType<typeof simAgent>[] = [];

async function launch(port: number): Promise<void> {
  const c = spawn(process.execPath, ['--import', 'tsx', MAIN, 'server', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, '--db', pg.url],
    { cwd: path.dirname(path.dirname(MAIN)), stdio: ['ignore', 'pipe', 'pipe'] });
  child = c;
  c.stdout!.on('data', (d) => { out += d; });
  c.stderr!.on('data', (d) => { out += d; });
  await waitFor('server listening', async () => {
    if (c.exitCode !== null) throw new Error(`server exited:\n${out}`);
    try { await (await fetch(`http://127.0.0.1:${port}/client/api?command=listZones&response=json`)).text(); return true; } catch { return false; }
  }, 30_000, 100);
}
async function kill(): Promise<void> {
  const c = child;
  if (!c || c.exitCode !== null) return;
  const done = new Promise((r) => c.once('exit', r));
  c.kill('SIGTERM');
  await done;
}

before(async () => {
  pg = await startPostgres();
  const port = await freePort();
  await launch(port);
  const creds = JSON.parse(fs.readFileSync(path.join(dataDir, 'admin-credentials.json'), 'utf8'));
  const { call, callAndWait } = apiClient(`http://127.0.0.1:${port}/client/api`, creds, 50);
  srv = { port, call, callAndWait, restart: async () => { await kill(); await launch(port); }, output: () => out } as unknown as TestServer;
});

after(async () => {
  for (const a of agents) { await a.stop(); fs.rmSync(a.dir, { recursive: true, force: true }); }
  await kill();
  await pg?.stop();
  fs.rmSync(dataDir, { recursive: true, force: true });
  assertNoUnhandledRejection(out);
});

test('on PostgreSQL: snapshot, delta, acks and sync status, resync after a server restart', async (t) => {
  const cloud = await createCloud(srv);
  const h1 = await addHost(srv, 'pg-h1');
  const h2 = await addHost(srv, 'pg-h2');
  const v1 = await deploy(srv, cloud, { hostid: h1.id, name: 'pg-a' });
  const a1 = simAgent(srv, h1.token, 'pg-agent-1');
  const a2 = simAgent(srv, h2.token, 'pg-agent-2');
  agents.push(a1, a2);
  await a1.start(); await a2.start();
  await waitFor('snapshot on host 1', () => vmIds(a1).includes(v1.id) && a1.appliedRevision === a1.state!.revision);
  assert.deepEqual(vmIds(a2), []);
  const v2 = await deploy(srv, cloud, { hostid: h2.id, name: 'pg-b' });
  await waitFor('delta on host 2', () => vmIds(a2).includes(v2.id));
  await waitFor('both hosts synced', async () => (await hostRow(srv, h1.id)).securitygroupsynced && (await hostRow(srv, h2.id)).securitygroupsynced && (await hostRow(srv, h2.id)).state === 'Up');
  await waitFor('VM Synced', async () => (await vmRow(srv, v2.id)).securitygroupsyncstate === 'Synced');
  const sg = (await srv.call('createSecurityGroup', { name: 'pg-web' })).body.createsecuritygroupresponse.securitygroup.id;
  await job(srv, 'authorizeSecurityGroupIngress', { securitygroupid: sg, protocol: 'tcp', startport: 80, endport: 80, cidrlist: '0.0.0.0/0' });
  const r = (await srv.call('updateVirtualMachine', { id: v1.id, securitygroupids: sg })).body;
  assert.ok(r.updatevirtualmachineresponse, JSON.stringify(r));
  await waitFor('group change reaches host 1', () => a1.state?.vms.find((v) => v.vmId === v1.id)?.v4.ingress.some((x) => x.ports?.from === 80));
  const before = (await hostRow(srv, h1.id)).desiredrevision;
  const connects = a1.counters.connects;
  const resyncs = a1.counters.snapshots + a1.counters.deltas;
  await srv.restart();
  // Back with the restarted server: welcomed again, resynced (a delta or a snapshot), then Up and in
  // sync at a revision not below the one before. (Not "above": with nothing changed meanwhile the new
  // process may label the same state with the same feed position — and the status row read before
  // the restart may or may not have caught up with the last change yet.)
  await waitFor('resynced after restart', async () => {
    if (a1.counters.connects <= connects || a1.counters.snapshots + a1.counters.deltas <= resyncs) return false;
    const x = await hostRow(srv, h1.id);
    return x.state === 'Up' && x.securitygroupsynced && x.desiredrevision >= before;
  }, 30_000, 100);
  t.diagnostic(`desired revision before the restart ${before}, after ${(await hostRow(srv, h1.id)).desiredrevision}`);
  assert.ok(vmIds(a1).includes(v1.id));
});

test('on PostgreSQL: one agent flooding valid drift reports neither exhausts the pool nor floods the log; every repair is counted', async () => {
  const host = await addHost(srv, 'pg-flood');
  const { ws } = await rawAgent(srv.port, host.token, 'flood', {}, (m) => m.type === 'welcome');
  // Writes to `hosts` as PostgreSQL counts them (its statistics reach the view within ~10 s of a backend going idle).
  const stats = new pgLib.Client({ connectionString: pg.url });
  await stats.connect();
  const hostUpdates = async () => Number((await stats.query("select n_tup_upd from pg_stat_user_tables where relname = 'hosts'")).rows[0].n_tup_upd);
  const settled = async () => {
    let last = -1;
    for (let i = 0; i < 30; i++) { const n = await hostUpdates(); if (n === last) return n; last = n; await new Promise((r) => setTimeout(r, 1000)); }
    return last;
  };
  const updatesBefore = await settled();
  const mark = out.length;
  const report = JSON.stringify({ type: 'report', preflight: [], repairs: [{ at: new Date().toISOString(), what: 'chain x', count: 1 }] });
  const FRAMES = 20_000;
  for (let i = 0; i < FRAMES; i++) ws.send(report);
  // API calls while the server reads the flood: answered, not 530 for an exhausted pool.
  for (let i = 0; i < 5; i++) {
    const r = await srv.call('listSecurityGroups', {});
    assert.equal(r.status, 200, JSON.stringify(r.body));
  }
  await waitFor('every repair counted', async () => (await hostRow(srv, host.id)).driftrepairs === FRAMES, 120_000, 200);
  ws.close();
  await new Promise((r) => setTimeout(r, 11_000));   // past PostgreSQL's idle statistics flush
  const updates = await settled() - updatesBefore;
  await stats.end();
  // The twin of "every repair counted": not one write per report (that flood of writes is what exhausted the pool).
  assert.ok(updates < FRAMES / 100, `${updates} updates of hosts rows for ${FRAMES} reports`);
  const errors = out.slice(mark).split('\n').filter((l) => l.includes('"level":50'));
  assert.deepEqual(errors.slice(0, 3), [], `${errors.length} error lines`);
});
