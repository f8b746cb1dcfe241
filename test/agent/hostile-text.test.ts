// Texts from a hostile or broken agent that the store cannot hold, against the REAL server process on
// PostgreSQL (whose `text` cannot hold U+0000; SQLite can, which is why the SQLite-backed channel
// tests never saw it). The server writes every host's status in one transaction and takes the leases
// of concurrent hellos in one statement, so one such string used to fail those writes for every host:
// an agent acking an error with a NUL kept other hosts' VMs Pending for as long as it kept acking, and
// a hello with a NUL in its hostname was refused as a server failure (503, an error line with a stack).
// Now the protocol refuses such frames (1008, the field named), nothing is stored from them, other
// hosts are not affected; and the agent itself never sends one (a tool's NUL becomes U+FFFD).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { palisadeCommand } from '../helpers/palisade.js';
import { REPO } from '../helpers/process.js';
import { startPostgres, type PgCluster } from '../helpers/postgres.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { frame, rawConnect, endsWithin, type RawConnection } from '../helpers/ws-raw.js';
import { PROTOCOL_VERSION } from '../../src/protocol/index.js';
import { Agent } from '../../src/agent/agent.js';
import { NullDataplane } from '../../src/agent/null-dataplane.js';
import { simulatedPorts } from '../../src/agent/sim-ports.js';
import type { ApplyResult, DataplaneInput } from '../../src/dataplane/backend.js';
import { addHost, createCloud, deploy, hostRow, silentLog, simAgent, sleep, vmRow, waitFor, type Cloud } from './helpers.js';

let pg: PgCluster;
let srv: TestServer;
let cloud: Cloud;
let bystander: ReturnType<typeof simAgent>;
let bystanderHost: { id: string; token: string };
const dirs: string[] = [];

const hello = (token: string, hostname: string) => JSON.stringify({ type: 'hello', version: PROTOCOL_VERSION, token, hostname, revision: null });

before(async () => {
  pg = await startPostgres();
  srv = await startServer({ db: pg.url });
  cloud = await createCloud(srv);
  bystanderHost = await addHost(srv, 'text-bystander');
  bystander = simAgent(srv, bystanderHost.token, 'bystander');
  dirs.push(bystander.dir);
  await bystander.start();
  await waitFor('bystander applied', () => bystander.connected && bystander.appliedRevision !== null);
});

after(async () => {
  await bystander?.stop();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  await srv?.stop();
  await pg?.stop();
});

async function session(token: string, hostname: string): Promise<{ c: RawConnection; revision: number }> {
  const c = await rawConnect(srv.port);
  c.write(frame(hello(token, hostname)));
  await c.waitFor((m) => m?.type === 'welcome', 10_000);
  const desired = await c.waitFor((m) => m?.type === 'snapshot' || m?.type === 'delta', 10_000);
  return { c, revision: desired.type === 'snapshot' ? desired.state.revision : desired.revision };
}

const errorLines = () => srv.output().split('\n').filter((l) => l.includes('"level":50'));

test('an ack whose error holds a NUL closes that connection only; other hosts\' VMs still become Synced; a NUL-free error is stored', async () => {
  const host = await addHost(srv, 'text-acker');
  const vm = await deploy(srv, cloud, { hostid: host.id, name: 'text-acked' });
  const { c, revision } = await session(host.token, 'acker');
  const errorsBefore = errorLines().length;
  // A broken or hostile agent acking without pause, two different errors so no write is skipped as unchanged.
  for (let i = 0; i < 20 && c.closeCode === null; i++) {
    c.write(frame(JSON.stringify({ type: 'ack', revision, vms: { [vm.id]: { ok: false, error: `boom ${i % 2}\u0000tail` } } })));
    await sleep(30);
  }
  assert.ok(await endsWithin(c, 5000), 'the connection is closed');
  assert.equal(c.closeCode, 1008);
  const told = c.messages.find((m: any) => m?.type === 'error') as { message: string } | undefined;
  assert.match(told?.message ?? '', new RegExp(`invalid vms\\.${vm.id}\\.error: contains a NUL character`));
  // Another host's change is acknowledged and shows Synced (it was kept Pending by the failing status writes).
  const other = await deploy(srv, cloud, { hostid: bystanderHost.id, name: 'text-other' });
  await waitFor('the other host\'s VM Synced', async () => (await vmRow(srv, other.id)).securitygroupsyncstate === 'Synced', 20_000);
  assert.notEqual((await vmRow(srv, vm.id)).securitygroupsyncstate, 'Failed', 'nothing stored from the refused acks');
  assert.deepEqual(errorLines().slice(errorsBefore), [], 'no store failure logged');
  // The twin: an error without a NUL (several lines, a tab) is stored and shown.
  const again = await session(host.token, 'acker');
  again.c.write(frame(JSON.stringify({ type: 'ack', revision: again.revision, vms: { [vm.id]: { ok: false, error: 'nft: line 1\n\tline 2' } } })));
  await waitFor('Failed with the error', async () => { const r = await vmRow(srv, vm.id); return r.securitygroupsyncstate === 'Failed' && r.securitygroupsyncerror === 'nft: line 1\n\tline 2'; }, 10_000);
  assert.equal(again.c.closeCode, null);
  again.c.destroy();
  await again.c.ended;
});

test('a hello whose hostname holds a control character is refused as invalid (1008), not as a server failure; hellos arriving with it are accepted', async () => {
  const hostile = await addHost(srv, 'text-hostname');
  const honest = await addHost(srv, 'text-honest');
  const errorsBefore = errorLines().length;
  for (const bad of ['x\u0000y', 'line\nbreak', 'esc\u001b[31m', 'del\u007f']) {
    // The honest hello goes in the same moment (the server takes concurrent hellos' leases in one statement).
    const [c, h] = await Promise.all([rawConnect(srv.port), rawConnect(srv.port)]);
    c.write(frame(hello(hostile.token, bad)));
    h.write(frame(hello(honest.token, 'honest')));
    assert.ok(await endsWithin(c, 10_000), `refused: ${JSON.stringify(bad)}`);
    assert.equal(c.closeCode, 1008, `invalid, not a server failure: ${JSON.stringify(bad)} ${JSON.stringify(c.messages)}`);
    assert.match((c.messages.find((m: any) => m?.type === 'error') as { message: string }).message, /invalid hostname: contains a control character/);
    await h.waitFor((m) => m?.type === 'welcome', 10_000);
    h.destroy();
    await h.ended;
  }
  assert.deepEqual(errorLines().slice(errorsBefore), [], 'no error-level line');
  // The twin: a long name with non-ASCII letters is a hostname like any other.
  const { c } = await session(hostile.token, `hyperviseur-é-${'x'.repeat(200)}`);
  await waitFor('Up', async () => (await hostRow(srv, hostile.id)).state === 'Up');
  c.destroy();
  await c.ended;
});

test('a report whose finding or repair holds a NUL is refused before anything is stored; one without is stored', async () => {
  const host = await addHost(srv, 'text-reporter');
  for (const report of [
    { preflight: [{ check: 'nft', ok: false, detail: 'a\u0000b' }], repairs: [] },
    { preflight: [{ check: 'n\u0000ft', ok: false, detail: 'ab' }], repairs: [] },
    { preflight: [], repairs: [{ at: 'now', what: 'chain\u0000x', count: 1 }] },
  ]) {
    const { c } = await session(host.token, 'reporter');
    c.write(frame(JSON.stringify({ type: 'report', ...report })));
    assert.ok(await endsWithin(c, 5000));
    assert.equal(c.closeCode, 1008);
  }
  await sleep(300);
  const row = await hostRow(srv, host.id);
  assert.deepEqual([row.preflight, row.driftrepairs, row.lastrepairs], [[], 0, []], 'nothing stored');
  const { c } = await session(host.token, 'reporter');
  c.write(frame(JSON.stringify({ type: 'report', preflight: [{ check: 'nft', ok: false, detail: 'missing\tbinary' }], repairs: [] })));
  await waitFor('Alert stored', async () => (await hostRow(srv, host.id)).state === 'Alert');
  c.destroy();
  await c.ended;
});

class NulErrors extends NullDataplane {
  override async apply(input: DataplaneInput): Promise<ApplyResult> {
    const r = await super.apply(input);
    for (const id of Object.keys(r.vms)) r.vms[id] = { ok: false, error: 'nft: unexpected \u0000 in output' };
    return r;
  }
}

test('the agent never sends a NUL: a dataplane error holding one reaches the server as U+FFFD, and the agent stays connected', async () => {
  const host = await addHost(srv, 'text-agent');
  const vm = await deploy(srv, cloud, { hostid: host.id, name: 'text-agent-vm' });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-agent-'));
  dirs.push(dir);
  const a = new Agent({
    server: `http://127.0.0.1:${srv.port}`, token: host.token, hostname: 'nul-errors', stateDir: dir, dataplane: new NulErrors(),
    discover: async (s) => simulatedPorts(s), preflight: null, reconcileMs: 60_000, log: silentLog, backoffMinMs: 100, backoffMaxMs: 1000,
  });
  try {
    let connects = 0;
    a.on('connected', () => { connects++; });
    await a.start();
    await waitFor('Failed with the error', async () => (await vmRow(srv, vm.id)).securitygroupsyncerror === 'nft: unexpected \uFFFD in output', 15_000);
    await sleep(500);
    assert.ok(a.connected);
    assert.ok(connects <= 1, `not cut and reconnecting: ${connects} connects`);
  } finally { await a.stop(); }
});

test('the agent refuses at start a --hostname the server would refuse (control characters, too long), naming the flag; a valid one connects', async () => {
  const host = await addHost(srv, 'text-cli');
  const pal = palisadeCommand();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-agent-cli-'));
  dirs.push(dir);
  let connected = false;
  const run = (hostname: string, untilConnected = false) => new Promise<{ code: number | null; err: string }>((resolve) => {
    const c = spawn(pal.cmd, [...pal.args, 'agent', '--server', `http://127.0.0.1:${srv.port}`, '--token', host.token, '--state-dir', dir, '--dataplane', 'null', '--hostname', hostname],
      { cwd: REPO, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    c.stderr!.on('data', (d) => { err += d; });
    const t = setTimeout(() => c.kill('SIGKILL'), 60_000);
    if (untilConnected) void waitFor('agent connected', async () => (await hostRow(srv, host.id)).state === 'Up', 50_000).then(() => { connected = true; c.kill('SIGTERM'); }, () => c.kill('SIGTERM'));
    c.once('exit', (code) => { clearTimeout(t); resolve({ code, err }); });
  });
  for (const bad of ['kvm\n01', 'kvm\u001b01', 'h'.repeat(256)]) {
    const r = await run(bad);
    assert.equal(r.code, 2, `${JSON.stringify(bad.slice(0, 20))}: exit 2 (${r.err})`);
    assert.match(r.err, /--hostname must be at most 255 characters without control characters/);
  }
  const good = await run(`kvm-é-${'h'.repeat(240)}`, true);
  assert.ok(connected, `the agent connected: ${good.err.slice(-500)}`);
});

test('a lone surrogate (JSON "\\ud800") in a hostname or an ack error is stored as U+FFFD by PostgreSQL: accepted, nothing fails, other hosts unaffected', async () => {
  // Measured on PostgreSQL 15 through node-postgres: a text parameter holding U+D800 is sent as UTF-8
  // EF BF BD (U+FFFD), never as an invalid sequence; (jsonb would refuse "\ud800", but no column is jsonb).
  const host = await addHost(srv, 'text-surrogate');
  const vm = await deploy(srv, cloud, { hostid: host.id, name: 'text-surrogate-vm' });
  const errorsBefore = errorLines().length;
  const { c, revision } = await session(host.token, 'kvm-\uD800-01');
  c.write(frame(JSON.stringify({ type: 'ack', revision, vms: { [vm.id]: { ok: false, error: 'nft: \uDC00 half' } } })));
  await waitFor('Failed with the error', async () => (await vmRow(srv, vm.id)).securitygroupsyncerror === 'nft: \uFFFD half', 10_000);
  assert.equal(c.closeCode, null);
  const other = await deploy(srv, cloud, { hostid: bystanderHost.id, name: 'text-surrogate-other' });
  await waitFor('the other host\'s VM Synced', async () => (await vmRow(srv, other.id)).securitygroupsyncstate === 'Synced', 20_000);
  assert.deepEqual(errorLines().slice(errorsBefore), [], 'no store failure logged');
  c.destroy();
  await c.ended;
});
