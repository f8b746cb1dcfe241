// The control plane on the PostgreSQL store: the real server process with --db against a throwaway
// cluster, agents in this process (render-only dataplane): snapshot, delta, acks and sync status,
// resync after a server restart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startPostgres, type PgCluster } from '../helpers/postgres.js';
import { apiClient, assertNoUnhandledRejection, freePort, type TestServer } from '../helpers/server.js';
import { addHost, createCloud, deploy, hostRow, job, simAgent, vmIds, vmRow, waitFor } from './helpers.js';

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

test('on PostgreSQL: snapshot, delta, acks and sync status, resync after a server restart', async () => {
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
  await srv.restart();
  await waitFor('resynced after restart', async () => { const x = await hostRow(srv, h1.id); return x.state === 'Up' && x.securitygroupsynced && x.desiredrevision > before; }, 30_000, 100);
  assert.ok(vmIds(a1).includes(v1.id));
});
