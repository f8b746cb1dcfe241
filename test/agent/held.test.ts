// Several servers do the per-host work only for the hosts they hold (DESIGN.md §6, control/fleet.ts and
// control/activity.ts): two control planes in this process on one real PostgreSQL, each with its API,
// agents speaking the real protocol (render-only dataplane). A server compiles nothing for a host the
// other holds and writes nothing about its VMs; a host nobody holds still has its VMs marked Pending on a
// change; an agent moving to the server that held nothing for it gets the same content (an empty
// delta: it already holds it) and the changes after it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { PROTOCOL_VERSION } from '../../src/protocol/index.js';
import { frame, rawConnect, type RawConnection } from '../helpers/ws-raw.js';
import { openStore, type Db } from '../../src/store/db.js';
import { bootstrap } from '../../src/api/bootstrap.js';
import { buildServer } from '../../src/api/server.js';
import { deadServerJobResult } from '../../src/api/dispatcher.js';
import { createControlPlane, type ControlPlane } from '../../src/control/index.js';
import type { ControlPlaneImpl } from '../../src/control/plane.js';
import { startPostgres, type PgCluster } from '../helpers/postgres.js';
import { apiClient, freePort, type TestServer } from '../helpers/server.js';
import { failOnUnhandledRejection } from '../helpers/rejections.js';
import { addHost, createCloud, deploy, hostRow, job, ok, silentLog, simAgent, sleep, vmRow, waitFor, type Cloud } from './helpers.js';

failOnUnhandledRejection();

interface Server { name: string; db: Db; cp: ControlPlane; impl: ControlPlaneImpl; app: FastifyInstance; srv: TestServer }

let pg: PgCluster;
const servers: Server[] = [];
let A: Server;
let B: Server;
let cloud: Cloud;
let web: string;
const hosts: Record<'h1' | 'h2' | 'h3', { id: string; token: string; internal: number }> = {} as never;
const vms: Record<'v1' | 'v2' | 'v3', { id: string; internal: number }> = {} as never;
const agents: ReturnType<typeof simAgent>[] = [];
/** VM ids server A wrote a sync state for (its StatusWriter, instrumented). */
const writtenByA: number[] = [];

async function startServer(name: string, creds: { apikey: string; secretkey: string }): Promise<Server> {
  const db = await openStore({ kind: 'postgres', url: pg.url });
  const cp = await createControlPlane(db, silentLog, {
    serverId: name, serverName: name, listenUrl: pg.url, jobFailure: (s) => deadServerJobResult(s.name, new Date(s.heartbeatAt)),
    pollMs: 200, timing: { heartbeatMs: 200, serverTtlMs: 3000, leaseTtlMs: 2000, unhealthyAfterMs: 60_000, stalledAfterMs: 60_000 },
  });
  const app = await buildServer({ db, sink: cp.sink, log: silentLog, serverId: name });
  await cp.register(app);
  const port = await freePort();
  await app.listen({ host: '127.0.0.1', port });
  const url = `http://127.0.0.1:${port}/client/api`;
  const { call, callAndWait } = apiClient(url, creds, 20);
  const s: Server = { name, db, cp, impl: cp.impl!, app, srv: { port, url, call, callAndWait } as unknown as TestServer };
  servers.push(s);
  return s;
}

const internalId = async (db: Db, table: 'hosts' | 'vms', uuid: string) => Number((await db.selectFrom(table).select('id').where('uuid', '=', uuid).executeTakeFirstOrThrow()).id);
/** Does the agent's state let tcp `port` in (adjacent ports merge into one range)? */
const allows = (a: ReturnType<typeof simAgent>, port: number) => (a.state?.vms ?? []).some((v) => v.v4.ingress.some((r) => r.ports && r.ports.from <= port && r.ports.to >= port));
const content = (s: { vms: unknown[]; sets: unknown[] } | null | undefined) => ({ vms: s?.vms, sets: s?.sets });
function agentFor(h: 'h1' | 'h2' | 'h3', on: Server, dir?: string): ReturnType<typeof simAgent> {
  const a = simAgent(on.srv, hosts[h].token, `held-${h}`, dir);
  agents.push(a);
  return a;
}

before(async () => {
  pg = await startPostgres();
  const db = await openStore({ kind: 'postgres', url: pg.url });
  const boot = await bootstrap(db);
  await db.destroy();
  const creds = { apikey: boot.apikey, secretkey: boot.secretkey };
  A = await startServer('held-a', creds);
  B = await startServer('held-b', creds);
  // A's sync writes, recorded by VM.
  const status = A.impl.sync.status;
  const vm = status.vm.bind(status);
  status.vm = (id, ...rest) => { writtenByA.push(id); vm(id, ...rest); };
  cloud = await createCloud(A.srv);
  web = ok(await A.srv.call('createSecurityGroup', { name: 'held-web' }), 'createSecurityGroup').createsecuritygroupresponse.securitygroup.id;
  await job(A.srv, 'authorizeSecurityGroupIngress', { securitygroupid: web, protocol: 'tcp', startport: 80, endport: 80, cidrlist: '0.0.0.0/0' });
  for (const [i, h] of (['h1', 'h2', 'h3'] as const).entries()) {
    const added = await addHost(A.srv, `held-${h}`);
    hosts[h] = { ...added, internal: await internalId(A.db, 'hosts', added.id) };
    const v = await deploy(A.srv, cloud, { hostid: added.id, name: `held-v${i + 1}`, securitygroupids: web });
    vms[`v${i + 1}` as 'v1'] = { id: v.id, internal: await internalId(A.db, 'vms', v.id) };
  }
});

const stopped = new Set<Server>();
async function stop(s: Server): Promise<void> {
  if (stopped.has(s)) return;
  stopped.add(s);
  await s.app.close();
  await s.cp.close();
  await s.db.destroy();
}

after(async () => {
  for (const a of agents) { await a.stop(); fs.rmSync(a.dir, { recursive: true, force: true }); }
  for (const s of servers) await stop(s);
  await pg?.stop();
});

test('each server compiles only the hosts it holds (or nobody holds) and writes nothing about VMs on hosts the other holds', async () => {
  const a1 = agentFor('h1', A);
  const a2 = agentFor('h2', B);
  const a3 = agentFor('h3', A);
  for (const a of [a1, a2, a3]) await a.start();
  await waitFor('every VM synced', async () => {
    for (const v of Object.values(vms)) if ((await vmRow(A.srv, v.id)).securitygroupsyncstate !== 'Synced') return false;
    return true;
  }, 30_000, 100);
  const { h1, h2, h3 } = hosts;
  await waitFor('A takes h2 as held by B, B takes h1 and h3 as held by A', () => A.impl.fleet.isPassive(h2.internal) && B.impl.fleet.isPassive(h1.internal) && B.impl.fleet.isPassive(h3.internal), 15_000, 50);
  // Nothing compiled or given for the other server's hosts; its own are.
  assert.ok(!A.impl.fleet.policies.has(vms.v2.internal) && A.impl.fleet.hosts.get(h2.internal)!.vms.size === 0);
  assert.ok(A.impl.fleet.policies.has(vms.v1.internal) && A.impl.fleet.policies.has(vms.v3.internal));
  assert.ok(!B.impl.fleet.policies.has(vms.v1.internal) && !B.impl.fleet.policies.has(vms.v3.internal));
  assert.ok(B.impl.fleet.policies.has(vms.v2.internal) && B.impl.fleet.hosts.get(h2.internal)!.vms.size === 1);
  // A change through A reaches h2's agent (on B); A writes nothing about v2, and v2 ends Synced by B.
  writtenByA.length = 0;
  await job(A.srv, 'authorizeSecurityGroupIngress', { securitygroupid: web, protocol: 'tcp', startport: 8080, endport: 8080, cidrlist: '0.0.0.0/0' });
  await waitFor('8080 at every agent', () => [a1, a2, a3].every((a) => allows(a, 8080)), 15_000);
  await waitFor('v2 synced again', async () => (await vmRow(A.srv, vms.v2.id)).securitygroupsyncstate === 'Synced', 15_000, 50);
  await A.impl.settle();
  await A.impl.sync.status.flush();
  assert.ok(!writtenByA.includes(vms.v2.internal), 'A wrote nothing about the VM on the host B holds');
  assert.ok(writtenByA.includes(vms.v1.internal) && writtenByA.includes(vms.v3.internal), 'the twin: A wrote its own hosts\' VMs');
});

test('a host nobody holds: its VMs stay as its last holder left them, and go Pending on a change through either server', async () => {
  const a3 = agents[2];
  await a3.stop();
  const { h3 } = hosts;
  // A held h3 and stays active for it; B compiles it only if it is the warden (after a lease period).
  const warden = [A, B].find((s) => s.impl.activity.warden)!;
  assert.ok(warden, 'one of the two is the warden');
  assert.equal([A, B].filter((s) => s.impl.activity.warden).length, 1, 'exactly one');
  await waitFor('the warden is active for h3', () => !warden.impl.fleet.isPassive(h3.internal), 15_000, 50);
  assert.ok(!A.impl.fleet.isPassive(h3.internal));
  await sleep(500);
  for (const s of [A, B]) { await s.impl.settle(); await s.impl.sync.status.flush(); }
  assert.equal((await vmRow(B.srv, vms.v3.id)).securitygroupsyncstate, 'Synced', 'nothing changed since its agent acked: Synced stands');
  // Through B: v3 (nobody holds h3) goes Pending and h3's desired revision passes what its agent acked.
  await job(B.srv, 'authorizeSecurityGroupIngress', { securitygroupid: web, protocol: 'tcp', startport: 8181, endport: 8181, cidrlist: '0.0.0.0/0' });
  await waitFor('v3 Pending', async () => (await vmRow(B.srv, vms.v3.id)).securitygroupsyncstate === 'Pending', 15_000, 50);
  const row = await B.db.selectFrom('hosts').select(['desired_revision', 'acked_revision']).where('id', '=', h3.internal).executeTakeFirstOrThrow();
  assert.ok(Number(row.desired_revision) > Number(row.acked_revision), `desired ${row.desired_revision} > acked ${row.acked_revision}`);
  assert.equal((await hostRow(B.srv, h3.id)).securitygroupsynced, false);
  // The twin: the held hosts' VMs are Synced once their agents applied it.
  await waitFor('v1 and v2 synced', async () => (await vmRow(B.srv, vms.v1.id)).securitygroupsyncstate === 'Synced' && (await vmRow(B.srv, vms.v2.id)).securitygroupsyncstate === 'Synced', 15_000, 50);
});

test('an agent moving to the server that held nothing for its host gets the same content (an empty delta) and what changes after', async () => {
  const a2 = agents[1];
  const { h2 } = hosts;
  assert.ok(A.impl.fleet.isPassive(h2.internal));
  const heldBefore = B.impl.fleet.snapshot(h2.internal);
  const stateBefore = a2.state;
  const revision = a2.appliedRevision;
  await a2.stop();
  const moved = agentFor('h2', A, a2.dir);   // same state dir: it holds what B gave it
  await moved.start();
  // (not its applies: restarted from its state dir, it applies what it holds before it connects)
  await waitFor('moved agent resynced on A', () => moved.counters.deltas + moved.counters.snapshots > 0, 15_000);
  await waitFor('A holds h2', () => A.impl.hub.holds(h2.internal) && !A.impl.fleet.isPassive(h2.internal), 15_000);
  assert.equal(moved.counters.snapshots, 0, 'no snapshot: the agent already holds the current content');
  assert.ok(moved.counters.deltas >= 1);
  assert.deepEqual(content(A.impl.fleet.snapshot(h2.internal)), content(heldBefore), 'A compiled the same VMs (same hashes) and sets as B gave');
  assert.deepEqual(content(moved.state), content(stateBefore));
  assert.ok((moved.appliedRevision ?? -1) >= (revision ?? 0));
  await waitFor('B lets h2 go (passive there)', () => B.impl.fleet.isPassive(h2.internal), 15_000, 50);
  // A change through B reaches it on A, and v2 ends Synced (by A).
  await job(B.srv, 'authorizeSecurityGroupIngress', { securitygroupid: web, protocol: 'tcp', startport: 8282, endport: 8282, cidrlist: '0.0.0.0/0' });
  await waitFor('8282 at the moved agent', () => allows(moved, 8282), 15_000).catch((e) => {
    const h = A.impl.fleet.hosts.get(h2.internal)!;
    throw new Error(`${e.message}: A passive ${A.impl.fleet.isPassive(h2.internal)} holds ${A.impl.hub.holds(h2.internal)} rev ${h.revision} vms ${h.vms.size} policy ${A.impl.fleet.policies.has(vms.v2.internal)}; agent ${moved.appliedRevision} ${moved.connected}; A processed ${A.impl.batches.processed}; B passive ${B.impl.fleet.isPassive(h2.internal)}; stats ${JSON.stringify(A.impl.activity.stats)}`);
  });
  await waitFor('v2 synced', async () => (await vmRow(A.srv, vms.v2.id)).securitygroupsyncstate === 'Synced', 15_000, 50);
  assert.deepEqual(content(moved.state), content(A.impl.fleet.snapshot(h2.internal)));
});

test('a server that stops: the survivor becomes the warden, compiles the hosts nobody holds now and marks their VMs Pending on a change', async () => {
  const { h1, h2 } = hosts;
  assert.ok(B.impl.fleet.isPassive(h1.internal) && B.impl.fleet.isPassive(h2.internal), 'B compiled nothing for A\'s hosts');
  // A stops (its leases and heartbeat row go); its agents know only A and stay away.
  await stop(A);
  await waitFor('B is the warden', () => B.impl.activity.warden, 15_000, 50);
  await waitFor('B active for h1 and h2', () => !B.impl.fleet.isPassive(h1.internal) && !B.impl.fleet.isPassive(h2.internal), 15_000, 50);
  assert.ok(B.impl.fleet.policies.has(vms.v1.internal) && B.impl.fleet.policies.has(vms.v2.internal));
  await job(B.srv, 'authorizeSecurityGroupIngress', { securitygroupid: web, protocol: 'tcp', startport: 8383, endport: 8383, cidrlist: '0.0.0.0/0' });
  await waitFor('v1 and v2 Pending', async () => (await vmRow(B.srv, vms.v1.id)).securitygroupsyncstate === 'Pending' && (await vmRow(B.srv, vms.v2.id)).securitygroupsyncstate === 'Pending', 15_000, 50);
  for (const h of [h1, h2]) assert.equal((await hostRow(B.srv, h.id)).securitygroupsynced, false);
});

/** A bare agent connection (the real handshake, raw frames) that has sent its hello. */
async function rawAgent(on: Server, token: string, hostname: string): Promise<RawConnection> {
  const c = await rawConnect(on.srv.port);
  c.write(frame(JSON.stringify({ type: 'hello', version: PROTOCOL_VERSION, token, hostname, revision: null })));
  return c;
}

test('a hello accepted while the serial section is busy waits for its resync, not refused at the hello bound; one that cannot be accepted in time is refused', async () => {
  const serial = (B.impl as unknown as { serial: { run(fn: () => Promise<void>): Promise<void> } }).serial;
  // Accepted (token, lease, welcome) while a long section runs: the resync waits its turn.
  let release!: () => void;
  const hold = serial.run(() => new Promise<void>((r) => { release = r; }));
  const c = await rawAgent(B, hosts.h3.token, 'held-h3');
  await c.waitFor((m) => m?.type === 'welcome', 5000);
  await sleep(11_000);   // past the 10 s bound on accepting a hello
  assert.ok(c.closeCode === null && !c.messages.some((m: any) => m?.type === 'error'), `still connected: ${JSON.stringify(c.messages).slice(0, 300)}`);
  assert.ok(!c.messages.some((m: any) => m?.type === 'snapshot' || m?.type === 'delta'), 'no state before the section is free');
  release();
  await hold;
  const state = await c.waitFor((m) => m?.type === 'snapshot' || m?.type === 'delta', 5000);
  assert.equal(state.type, 'snapshot');
  c.destroy();
  await waitFor('B lets the session go', () => !B.impl.hub.holds(hosts.h3.internal), 10_000, 50);
  // The twin: a change committed but not yet processed here (its batch waits behind the section), so
  // the hello cannot be accepted (it must catch up first): refused with 503 at the bound.
  let release2!: () => void;
  const hold2 = serial.run(() => new Promise<void>((r) => { release2 = r; }));
  try {
    await job(B.srv, 'authorizeSecurityGroupIngress', { securitygroupid: web, protocol: 'tcp', startport: 8484, endport: 8484, cidrlist: '0.0.0.0/0' });
    const d = await rawAgent(B, hosts.h3.token, 'held-h3');
    const refused = await d.waitFor((m) => m?.type === 'error', 15_000);
    assert.equal(refused.code, 503);
    assert.match(refused.message, /no hello accepted in time/);
    assert.ok(!d.messages.some((m: any) => m?.type === 'welcome'));
    await waitFor('refused connection closed', () => d.closeCode !== null, 5000, 20);
  } finally {
    release2();
    await hold2;
  }
});
