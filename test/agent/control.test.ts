// Control plane against the REAL server process, with agents in this process speaking the real
// protocol (render-only dataplane): snapshot, deltas, host isolation, tokens, lifecycle, coalescing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import WebSocket from 'ws';
import { startServer, type TestServer } from '../helpers/server.js';
import { AGENT_PATH, PROTOCOL_VERSION } from '../../src/protocol/index.js';
import { addHost, createCloud, deploy, hostRow, job, ok, rawAgent, simAgent, vmIds, vmRow, waitFor, type Cloud } from './helpers.js';

let srv: TestServer;
let cloud: Cloud;
let h1: { id: string; token: string };
let h2: { id: string; token: string };
const agents: ReturnType<typeof simAgent>[] = [];

before(async () => {
  srv = await startServer();
  cloud = await createCloud(srv);
  h1 = await addHost(srv, 'ctl-h1');
  h2 = await addHost(srv, 'ctl-h2');
});

after(async () => {
  for (const a of agents) { await a.stop(); fs.rmSync(a.dir, { recursive: true, force: true }); }
  await srv?.stop();
});

function agent(token: string, name: string) { const a = simAgent(srv, token, name); agents.push(a); return a; }

/** Raw protocol: hello with `token`, return the first server message and the close code. */
async function rawHello(token: string, hostname = 'raw'): Promise<{ first: any; code: number }> {
  const ws = new WebSocket(`ws://127.0.0.1:${srv.port}${AGENT_PATH}`);
  return new Promise((resolve, reject) => {
    let first: any = null;
    ws.on('open', () => ws.send(JSON.stringify({ type: 'hello', version: PROTOCOL_VERSION, token, hostname, revision: null })));
    ws.on('message', (d) => { if (!first) first = JSON.parse(String(d)); });
    ws.on('close', (code) => resolve({ first, code }));
    ws.on('error', reject);
    setTimeout(() => { ws.terminate(); }, 5000);
  });
}

test('each agent gets a snapshot of exactly its own host\'s VMs, and the hosts show Up and synced', async () => {
  const v1 = await deploy(srv, cloud, { hostid: h1.id, name: 'ctl-a' });
  const v2 = await deploy(srv, cloud, { hostid: h2.id, name: 'ctl-b' });
  const a1 = agent(h1.token, 'agent-1');
  const a2 = agent(h2.token, 'agent-2');
  await a1.start(); await a2.start();
  await waitFor('snapshots', () => a1.appliedRevision !== null && a2.appliedRevision !== null);
  assert.deepEqual(vmIds(a1), [v1.id]);
  assert.deepEqual(vmIds(a2), [v2.id]);
  assert.equal(a1.counters.snapshots, 1);
  assert.equal(a1.state!.hostId, h1.id);
  const row = await waitFor('host 1 synced', async () => { const r = await hostRow(srv, h1.id); return r.securitygroupsynced && r.state === 'Up' ? r : null; });
  assert.equal(row.securitygroupsyncrevision, row.desiredrevision);
  assert.ok(row.lastpinged);
  await waitFor('VM a Synced', async () => (await vmRow(srv, v1.id)).securitygroupsyncstate === 'Synced');
});

test('a new VM reaches its host as a delta, never the other host; a stopped VM leaves and its address leaves the sets', async () => {
  const [a1, a2] = agents;
  const snaps = a1.counters.snapshots;
  const before2 = vmIds(a2);
  const v = await deploy(srv, cloud, { hostid: h1.id, name: 'ctl-c' });
  await waitFor('delta with ctl-c', () => vmIds(a1).includes(v.id) && a1.appliedRevision === a1.state!.revision);
  assert.equal(a1.counters.snapshots, snaps, 'no new snapshot: a delta');
  assert.ok(a1.counters.deltas >= 1);
  assert.deepEqual(vmIds(a2), before2, 'host 2 never sees host 1\'s VM');
  await waitFor('ctl-c Synced', async () => (await vmRow(srv, v.id)).securitygroupsyncstate === 'Synced');

  await job(srv, 'stopVirtualMachine', { id: v.id });
  await waitFor('ctl-c removed from host 1', () => !vmIds(a1).includes(v.id));
  await waitFor('stopped VM Synced (removal acked)', async () => (await vmRow(srv, v.id)).securitygroupsyncstate === 'Synced');
  await job(srv, 'startVirtualMachine', { id: v.id, hostid: h1.id });
  await waitFor('ctl-c back on host 1', () => vmIds(a1).includes(v.id));
});

test('migration moves the VM from the source host\'s state to the target\'s', async () => {
  const [a1, a2] = agents;
  const v = await deploy(srv, cloud, { hostid: h1.id, name: 'ctl-m' });
  await waitFor('on host 1', () => vmIds(a1).includes(v.id));
  await job(srv, 'migrateVirtualMachine', { virtualmachineid: v.id, hostid: h2.id });
  await waitFor('on host 2 and gone from host 1', () => vmIds(a2).includes(v.id) && !vmIds(a1).includes(v.id));
  await waitFor('Synced on host 2', async () => (await vmRow(srv, v.id)).securitygroupsyncstate === 'Synced');
});

test('start and migrate onto an explicit host need it Up: a host without an agent is refused (431), an Up one takes the VM', async () => {
  const [a1, a2] = agents;
  const idle = await addHost(srv, 'ctl-idle'); // never connected: Disconnected
  // deploy may lay a VM out on a host whose agent has never connected (it gets it in its first snapshot)
  const early = await deploy(srv, cloud, { hostid: idle.id, name: 'ctl-early' });
  assert.equal((await vmRow(srv, early.id)).hostid, idle.id);
  // its host has no agent: hostcontrolstate Offline (CloudStack's ControlState), to its owner too
  assert.equal((await vmRow(srv, early.id)).hostcontrolstate, 'Offline');
  await job(srv, 'destroyVirtualMachine', { id: early.id, expunge: true });
  const v = await deploy(srv, cloud, { hostid: h1.id, name: 'ctl-up' });
  await waitFor('on host 1', () => vmIds(a1).includes(v.id));
  assert.equal((await vmRow(srv, v.id)).hostcontrolstate, 'Enabled', 'an Up host with its agent: Enabled');
  const refused = await srv.callAndWait('migrateVirtualMachine', { virtualmachineid: v.id, hostid: idle.id });
  assert.equal(refused.body.jobresult?.errorcode, 431, JSON.stringify(refused.body));
  assert.equal(refused.body.jobresult.errortext, 'Cannot migrate VM, destination host is not in correct state, has status: Disconnected, state: Enabled (hostid)');
  assert.equal((await vmRow(srv, v.id)).hostid, h1.id, 'still on host 1');
  await job(srv, 'migrateVirtualMachine', { virtualmachineid: v.id, hostid: h2.id });
  await waitFor('on host 2', () => vmIds(a2).includes(v.id) && !vmIds(a1).includes(v.id));
  await job(srv, 'stopVirtualMachine', { id: v.id });
  const notStarted = await srv.callAndWait('startVirtualMachine', { id: v.id, hostid: idle.id });
  assert.equal(notStarted.body.jobresult?.errorcode, 431, JSON.stringify(notStarted.body));
  assert.equal(notStarted.body.jobresult.errortext, 'Unable to deploy the VM as the host: ctl-idle is not in the right state (hostid)');
  assert.equal((await vmRow(srv, v.id)).state, 'Stopped');
  await job(srv, 'startVirtualMachine', { id: v.id, hostid: h1.id });
  await waitFor('started on host 1', () => vmIds(a1).includes(v.id));
  assert.equal((await hostRow(srv, idle.id)).state, 'Disconnected');
});

test('a referenced group is an address set on the other host: secondary IPs join it, a stopped member leaves it', async () => {
  const [a1, a2] = agents;
  const mk = async (name: string) => ok(await srv.call('createSecurityGroup', { name }), 'createSecurityGroup').createsecuritygroupresponse.securitygroup.id;
  const web = await mk('ctl-web');
  const db = await mk('ctl-db');
  await job(srv, 'authorizeSecurityGroupIngress', { securitygroupid: db, protocol: 'tcp', startport: 5432, endport: 5432, 'usersecuritygrouplist[0].account': 'admin', 'usersecuritygrouplist[0].group': 'ctl-web' });
  const w = await deploy(srv, cloud, { hostid: h1.id, name: 'ctl-w', securitygroupids: web });
  const d = await deploy(srv, cloud, { hostid: h2.id, name: 'ctl-d', securitygroupids: db });
  const wIp: string = w.nic[0].ipaddress;
  const setOn = (a: typeof a1) => {
    const vm = a.state?.vms.find((v) => v.vmId === d.id);
    const id = vm?.v4.ingress.flatMap((r) => r.sets)[0];
    return id ? a.state!.sets.find((x) => x.id === id) : undefined;
  };
  const set = (await waitFor('web set on host 2', () => { const x = setOn(a2); return x?.members.includes(wIp) ? x : null; }))!;
  assert.ok(!a1.state!.sets.some((x) => x.id === set.id), 'host 1 has no VM referencing the set: it does not get it');
  await job(srv, 'addIpToNic', { nicid: w.nic[0].id, ipaddress: '10.1.7.7' });
  await waitFor('secondary IP joins the set on host 2', () => setOn(a2)?.members.includes('10.1.7.7'));
  await job(srv, 'stopVirtualMachine', { id: w.id });
  await waitFor('stopped member leaves the set on host 2', () => { const x = setOn(a2); return x && !x.members.includes(wIp) && !x.members.includes('10.1.7.7'); });
  assert.ok(!vmIds(a1).includes(w.id), 'and its rules left host 1');
  await job(srv, 'startVirtualMachine', { id: w.id, hostid: h1.id });
  await waitFor('back in the set after start', () => setOn(a2)?.members.includes(wIp));
});

test('a wrong token is refused with an error and logged; a token in use by another connected agent is refused', async () => {
  const bad = await rawHello('not-a-token');
  assert.equal(bad.first?.type, 'error');
  assert.equal(bad.first.code, 401);
  assert.notEqual(bad.code, 1000);
  await waitFor('refusal logged', () => /agent refused: unknown token/.test(srv.output()));

  const dup = await rawHello(h1.token, 'somebody-else');
  assert.equal(dup.first?.type, 'error');
  assert.equal(dup.first.code, 409);
  assert.ok(agents[0].connected, 'the legitimate agent stays connected');

  // The matching allowed case: the right token gets a welcome.
  const h3 = await addHost(srv, 'ctl-h3');
  const good = new WebSocket(`ws://127.0.0.1:${srv.port}${AGENT_PATH}`);
  const first = await new Promise<any>((resolve, reject) => {
    good.on('open', () => good.send(JSON.stringify({ type: 'hello', version: PROTOCOL_VERSION, token: h3.token, hostname: 'h3', revision: null })));
    good.on('message', (d) => resolve(JSON.parse(String(d))));
    good.on('error', reject);
  });
  good.close();
  assert.equal(first.type, 'welcome');
  assert.equal(first.hostId, h3.id);
});

/** Raw protocol: a hello with an instance id; resolves with the first message, the socket and its close (code). */
async function instanceHello(token: string, hostname: string, instance: string): Promise<{ first: any; ws: WebSocket; closed: Promise<number> }> {
  const { ws, message, closed } = await rawAgent(srv.port, token, hostname, { instance });
  return { first: message, ws, closed };
}

test('two agent processes on one token and hostname: a restarted one takes the session, a replaced one coming back is refused and named', async () => {
  const h = await addHost(srv, 'ctl-twin');
  const a = await instanceHello(h.token, 'twin', 'inst-a');
  assert.equal(a.first.type, 'welcome');
  // Another process with the same hostname (a restart whose predecessor's socket still looks open): accepted.
  const b = await instanceHello(h.token, 'twin', 'inst-b');
  assert.equal(b.first.type, 'welcome');
  assert.equal(await a.closed, 4000, 'the earlier session is replaced');
  // The replaced process comes back while the other holds the host: a second agent, refused.
  const again = await instanceHello(h.token, 'twin', 'inst-a');
  assert.equal(again.first.type, 'error');
  assert.equal(again.first.code, 409);
  assert.match(again.first.message, /two agents use the token of host ctl-twin with hostname twin/);
  assert.equal(await again.closed, 4409);
  assert.equal(b.ws.readyState, WebSocket.OPEN, 'the holder keeps its session');
  await waitFor('named in the log', () => /two agents use one host token and hostname/.test(srv.output()));
  // Twin: the holder's own reconnect (same instance) and a later restart (a new instance) are accepted.
  const bAgain = await instanceHello(h.token, 'twin', 'inst-b');
  assert.equal(bAgain.first.type, 'welcome');
  assert.equal(await b.closed, 4000);
  const c = await instanceHello(h.token, 'twin', 'inst-c');
  assert.equal(c.first.type, 'welcome');
  assert.equal(await bAgain.closed, 4000);
  c.ws.close();
});

test('a replaced agent refused while the other holds its host stops writing the kernel (no tug of war); it writes again once the host is its own', async () => {
  const h = await addHost(srv, 'ctl-twin-kernel');
  const a = simAgent(srv, h.token, 'twin-kernel');
  const b = simAgent(srv, h.token, 'twin-kernel');
  try {
    a.start();
    await waitFor('a applied', () => a.connected && a.dataplane.applies > 0);
    b.start();
    await waitFor('b holds the host, a refused', () => b.connected && a.standingDown, 15_000);
    // Drift on both: the holder repairs its kernel, the refused one leaves it alone.
    const [aWrites, bWrites] = [a.dataplane.writes, b.dataplane.writes];
    a.dataplane.applied = 'someone else wrote this';
    b.dataplane.applied = 'someone else wrote this';
    await a.reconcile();
    await b.reconcile();
    assert.equal(a.dataplane.writes, aWrites, 'the refused agent wrote nothing');
    assert.equal(b.dataplane.writes, bWrites + 1, 'the holder repaired its kernel');
    // The holder goes away: the other is accepted again and repairs.
    b.stop();
    await waitFor('a holds the host again', () => a.connected && !a.standingDown, 30_000);
    await a.reconcile();
    assert.ok(a.dataplane.writes > aWrites, 'writing again');
  } finally {
    a.stop();
    b.stop();
  }
});

test('an ack of an older revision does not take the host\'s acknowledged revision back', async () => {
  const h = await addHost(srv, 'ctl-ackback');
  const { ws, message: snapshot } = await rawAgent(srv.port, h.token, 'ackback', {}, (m) => m.type === 'snapshot');
  try {
    const rev = snapshot.state.revision as number;
    ws.send(JSON.stringify({ type: 'ack', revision: rev, vms: {} }));
    await waitFor('acked', async () => (await hostRow(srv, h.id)).securitygroupsyncrevision === rev);
    ws.send(JSON.stringify({ type: 'ack', revision: 0, vms: {} }));
    ws.send(JSON.stringify({ type: 'ping' }));
    await new Promise<void>((resolve) => ws.on('message', (d) => { if (JSON.parse(String(d)).type === 'pong') resolve(); }));
    await new Promise((r) => setTimeout(r, 700));   // past the status writer's flush
    const row = await hostRow(srv, h.id);
    assert.equal(row.securitygroupsyncrevision, rev);
    assert.equal(row.securitygroupsynced, true);
  } finally { ws.close(); }
});

test('an agent that cannot save its state still applies and acks what it is sent; the host shows the failed check', async () => {
  const h = await addHost(srv, 'ctl-nosave');
  const v = await deploy(srv, cloud, { hostid: h.id, name: 'ctl-nosave-vm' });
  // a file where the state dir should be: nothing can be saved (nor loaded: the agent starts closed)
  const notADir = path.join(os.tmpdir(), `palisade-notadir-${process.pid}`);
  fs.writeFileSync(notADir, 'x');
  const a = agent(h.token, 'nosave');
  const blocked = simAgent(srv, h.token, 'nosave', notADir);
  agents.push(blocked);
  await blocked.start();
  await waitFor('VM Synced', async () => (await vmRow(srv, v.id)).securitygroupsyncstate === 'Synced');
  assert.ok(vmIds(blocked).includes(v.id));
  const row = await waitFor('Alert', async () => { const x = await hostRow(srv, h.id); return x.state === 'Alert' ? x : null; });
  assert.ok(row.preflight.some((f: any) => f.check === 'state dir' && !f.ok && /cannot save the desired state/.test(f.detail)), JSON.stringify(row.preflight));
  // Twin: the same host's agent with a state dir it can write: Up, no such finding.
  await blocked.stop();
  await a.start();
  const up = await waitFor('Up', async () => { const x = await hostRow(srv, h.id); return x.state === 'Up' ? x : null; });
  assert.ok(!(up.preflight ?? []).some((f: any) => f.check === 'state dir'));
  assert.ok(fs.existsSync(path.join(a.dir, 'desired-state.json')));
});

test('an agent reconnecting without the state it acked (lost, unreadable) shows its VMs Pending until it acks again', async () => {
  const h = await addHost(srv, 'ctl-forgot');
  const v = await deploy(srv, cloud, { hostid: h.id, name: 'ctl-forgot-vm' });
  const session = async (revision: number | null, ack: boolean) => {
    const { ws, message: snap } = await rawAgent(srv.port, h.token, 'forgot', { revision }, (m) => m.type === 'snapshot' || m.type === 'delta');
    const rev = snap.type === 'snapshot' ? snap.state.revision : snap.revision;
    if (ack) ws.send(JSON.stringify({ type: 'ack', revision: rev, vms: { [v.id]: { ok: true } } }));
    return { ws, rev };
  };
  const first = await session(null, true);
  await waitFor('Synced', async () => (await vmRow(srv, v.id)).securitygroupsyncstate === 'Synced');
  first.ws.close();
  // Back holding nothing, and not acking: its kernel holds nothing of what it acked before.
  const second = await session(null, false);
  await waitFor('Pending again', async () => (await vmRow(srv, v.id)).securitygroupsyncstate === 'Pending');
  assert.equal((await hostRow(srv, h.id)).securitygroupsynced, false);
  second.ws.send(JSON.stringify({ type: 'ack', revision: second.rev, vms: { [v.id]: { ok: true } } }));
  await waitFor('Synced after its ack', async () => (await vmRow(srv, v.id)).securitygroupsyncstate === 'Synced');
  second.ws.close();
  // Twin: back holding what it acked: Synced throughout.
  const third = await session(second.rev, false);
  await new Promise((r) => setTimeout(r, 700));
  assert.equal((await vmRow(srv, v.id)).securitygroupsyncstate, 'Synced');
  third.ws.close();
});

test('preflight findings reach listHosts: an unfixable one puts the host in Alert, a fixed one keeps it Up', async () => {
  const h = await addHost(srv, 'ctl-alert');
  const { ws } = await rawAgent(srv.port, h.token, 'alert', {}, (m) => m.type === 'snapshot');
  try {
    const bad = { check: 'sysctl net.bridge.bridge-nf-call-iptables', ok: false, detail: 'is 0 and cannot be set to 1' };
    ws.send(JSON.stringify({ type: 'report', preflight: [bad], repairs: [] }));
    const r = await waitFor('Alert', async () => { const x = await hostRow(srv, h.id); return x.state === 'Alert' ? x : null; });
    assert.equal(r.preflight[0].check, bad.check);
    const fixed = { ...bad, ok: true, fixed: true, detail: 'was 0, set to 1' };
    ws.send(JSON.stringify({ type: 'report', preflight: [fixed], repairs: [{ at: new Date().toISOString(), what: 'preflight: sysctl', count: 1 }] }));
    const up = await waitFor('Up again', async () => { const x = await hostRow(srv, h.id); return x.state === 'Up' ? x : null; });
    assert.equal(up.preflight[0].fixed, true);
    await waitFor('repair counted', async () => (await hostRow(srv, h.id)).driftrepairs === 1);
  } finally { ws.close(); }
});

test('an agent restarted from its state dir resyncs by delta from the revision it holds; while it is away its host takes no new VM', async () => {
  const a1 = agents[0];
  const v = await deploy(srv, cloud, { hostid: h1.id, name: 'ctl-r' });
  await waitFor('on host 1', () => vmIds(a1).includes(v.id) && a1.appliedRevision === a1.state!.revision);
  await a1.stop();
  const held = a1.state!.revision;
  await waitFor('host 1 Disconnected', async () => (await hostRow(srv, h1.id)).state === 'Disconnected');
  // a host that was Up and is away is refused as an explicit destination (CloudStack's text), nothing made
  const refused = await srv.callAndWait('deployVirtualMachine', { networkids: cloud.networkId, hostid: h1.id, name: 'ctl-r-away' });
  assert.equal(refused.body.jobresult?.errorcode, 431, JSON.stringify(refused.body));
  assert.equal(refused.body.jobresult.errortext, 'Unable to deploy the VM as the host: ctl-h1 is not in the right state (hostid)');
  assert.equal(ok(await srv.call('listVirtualMachines', { name: 'ctl-r-away', listall: true }), 'listVirtualMachines').listvirtualmachinesresponse.count, undefined);
  await job(srv, 'stopVirtualMachine', { id: v.id });   // a change while the agent is away
  const again = simAgent(srv, h1.token, 'agent-1', a1.dir);
  agents[0] = again;
  await again.start();
  assert.equal(again.state!.revision, held, 'the saved state is loaded (and re-applied) before the server answers');
  assert.ok(again.dataplane.applies >= 1);
  await waitFor('resynced', () => again.connected && !vmIds(again).includes(v.id) && again.appliedRevision === again.state!.revision);
  assert.equal(again.counters.snapshots, 0, 'resync by delta, not snapshot');
  await waitFor('host 1 synced', async () => (await hostRow(srv, h1.id)).securitygroupsynced);
});

test('a burst of changes coalesces into few pushes per host, and the agent ends at the last state', async () => {
  const a2 = agents[1];
  const before = a2.counters.deltas;
  const N = 40;
  const jobs = [];
  for (let i = 0; i < N; i++) jobs.push(deploy(srv, cloud, { hostid: h2.id, name: `ctl-burst-${i}` }));
  const vms = await Promise.all(jobs);
  await waitFor('all burst VMs on host 2', () => vms.every((v) => vmIds(a2).includes(v.id)) && a2.appliedRevision === a2.state!.revision);
  const pushes = a2.counters.deltas - before;
  console.log(`# burst of ${N} deploys: ${pushes} pushes to the host`);
  assert.ok(pushes < N, `coalesced: ${pushes} pushes for ${N} changes`);
  await waitFor('host 2 synced', async () => (await hostRow(srv, h2.id)).securitygroupsynced);
});

test('a server restart: agents reconnect, get a snapshot, and converge', async () => {
  const [a1, a2] = agents;
  const snaps = a1.counters.snapshots;
  await srv.restart();
  await waitFor('reconnected with snapshots', () => a1.counters.snapshots > snaps && a2.connected && a1.connected, 30_000);
  // an explicit destination must show Up again (the restart left it Disconnected until its agent's hello is recorded)
  await waitFor('host 2 Up', async () => (await hostRow(srv, h2.id)).state === 'Up');
  const v = await deploy(srv, cloud, { hostid: h2.id, name: 'ctl-after-restart' });
  await waitFor('change after restart arrives', () => vmIds(a2).includes(v.id));
  const r1 = await waitFor('host 1 synced', async () => { const r = await hostRow(srv, h1.id); return r.securitygroupsynced && r.state === 'Up' ? r : null; });
  assert.ok(r1.desiredrevision > 0);
});

test('after a server restart, a VM stopped while its host was away turns Synced once the host acks its snapshot', async () => {
  const a1 = agents[0];
  const v = await deploy(srv, cloud, { hostid: h1.id, name: 'ctl-stop-restart' });
  await waitFor('on host 1 and Synced', async () => vmIds(a1).includes(v.id) && (await vmRow(srv, v.id)).securitygroupsyncstate === 'Synced');
  await a1.stop();
  await waitFor('host 1 Disconnected', async () => (await hostRow(srv, h1.id)).state === 'Disconnected');
  await job(srv, 'stopVirtualMachine', { id: v.id });
  assert.equal((await vmRow(srv, v.id)).securitygroupsyncstate, 'Pending', 'the removal is not acked: Pending');
  await srv.restart();
  assert.equal((await vmRow(srv, v.id)).securitygroupsyncstate, 'Pending', 'still Pending after the restart: host 1 has not confirmed the removal');
  const again = simAgent(srv, h1.token, 'agent-1', a1.dir);
  agents[0] = again;
  await again.start();
  assert.ok(vmIds(again).includes(v.id), 'the saved state still has the VM');
  await waitFor('removed on host 1 and Synced', async () => !vmIds(again).includes(v.id) && again.appliedRevision === again.state!.revision
    && (await vmRow(srv, v.id)).securitygroupsyncstate === 'Synced', 30_000);
  assert.ok(again.counters.snapshots >= 1, 'resynced by snapshot');
});

test('agents hold policies without rule sources, hashed over exactly what they hold', async () => {
  const a1 = agents[0];
  const mk = ok(await srv.call('createSecurityGroup', { name: 'ctl-src' }), 'createSecurityGroup').createsecuritygroupresponse.securitygroup.id;
  const v = await deploy(srv, cloud, { hostid: h1.id, name: 'ctl-src-vm', securitygroupids: mk });
  await job(srv, 'authorizeSecurityGroupIngress', { securitygroupid: mk, protocol: 'tcp', startport: 80, endport: 80, cidrlist: '0.0.0.0/0' });
  await job(srv, 'authorizeSecurityGroupIngress', { securitygroupid: mk, protocol: 'tcp', startport: 81, endport: 81, cidrlist: '0.0.0.0/0' });
  const held = await waitFor('merged 80-81 on host 1', () => a1.state?.vms.find((x) => x.vmId === v.id && x.v4.ingress.some((r) => r.ports?.from === 80 && r.ports.to === 81)));
  for (const p of a1.state!.vms) {
    for (const r of [...p.v4.ingress, ...p.v4.egress, ...p.v6.ingress, ...p.v6.egress]) assert.deepEqual(r.sources, [], 'no sources on the wire');
    const { hash, ...body } = p;
    assert.equal(hash, createHash('sha256').update(JSON.stringify(body)).digest('hex'), 'hash of what the agent holds');
  }
  // A rule that only adds sources (its ports lie inside 80–81 from the same peers) changes nothing the
  // host enforces: no push; a real change still arrives.
  const deltas = a1.counters.deltas;
  await job(srv, 'authorizeSecurityGroupIngress', { securitygroupid: mk, protocol: 'tcp', startport: 81, endport: 81, cidrlist: '0.0.0.0/1,128.0.0.0/1' });
  await job(srv, 'authorizeSecurityGroupIngress', { securitygroupid: mk, protocol: 'tcp', startport: 82, endport: 82, cidrlist: '0.0.0.0/0' });
  await waitFor('82 on host 1', () => a1.state?.vms.find((x) => x.vmId === v.id && x.v4.ingress.some((r) => r.ports?.to === 82)));
  assert.equal(a1.counters.deltas - deltas, 1, 'one push: for the 82 rule only');
  assert.equal(held!.v4.ingress.length, a1.state!.vms.find((x) => x.vmId === v.id)!.v4.ingress.length);
});

test('a disconnected agent shows its host Disconnected', async () => {
  const a2 = agents[1];
  await a2.stop();
  await waitFor('host 2 Disconnected', async () => (await hostRow(srv, h2.id)).state === 'Disconnected');
  assert.equal((await hostRow(srv, h1.id)).state, 'Up');
});
