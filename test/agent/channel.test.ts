// The agent channel under hostile input (issue 8 items 1–3 and the agent half of item 14), against the
// REAL server process: frames crafted byte by byte (several in one TCP write, lying lengths, invalid
// UTF-8, bad opcodes), invalid messages before and after a hello, oversized frames before a hello. The
// server must close only the offending connection, with the reason logged, store nothing from it, keep
// serving the API and the other agents, and never reach its last-resort rejection handler. And the
// agent side: a real Agent given invalid server messages keeps its state and moves on.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import SqliteDatabase from 'better-sqlite3';
import { WebSocketServer } from 'ws';
import { startServer, type TestServer } from '../helpers/server.js';
import { UNHANDLED_REJECTION } from '../../src/api/serve.js';
import { frame, rawConnect, endsWithin, type RawConnection } from '../helpers/ws-raw.js';
import { mulberry32 } from '../helpers/prng.js';
import { AGENT_FRAME_MAX_BYTES, PRE_HELLO_MAX_BYTES, PROTOCOL_VERSION, decodeAgentMessage } from '../../src/protocol/index.js';
import { Agent } from '../../src/agent/agent.js';
import { NullDataplane } from '../../src/agent/null-dataplane.js';
import { simulatedPorts } from '../../src/agent/sim-ports.js';
import { addHost, createCloud, deploy, hostRow, ok, silentLog, simAgent, sleep, waitFor, type Cloud } from './helpers.js';

let srv: TestServer;
let cloud: Cloud;
let target: { id: string; token: string };
let bystander: ReturnType<typeof simAgent>;
let vmId: string;

const hello = (token: string, extra: Record<string, unknown> = {}) => JSON.stringify({ type: 'hello', version: PROTOCOL_VERSION, token, hostname: 'fuzz', revision: null, ...extra });

before(async () => {
  srv = await startServer();
  cloud = await createCloud(srv);
  target = await addHost(srv, 'chan-target');
  const b = await addHost(srv, 'chan-bystander');
  vmId = (await deploy(srv, cloud, { hostid: target.id, name: 'chan-vm' })).id;
  await deploy(srv, cloud, { hostid: b.id, name: 'chan-other' });
  bystander = simAgent(srv, b.token, 'bystander');
  await bystander.start();
  await waitFor('bystander applied', () => bystander.appliedRevision !== null && bystander.connected);
});

after(async () => {
  await bystander?.stop();
  if (bystander) fs.rmSync(bystander.dir, { recursive: true, force: true });
  await srv?.stop();
});

function rssMb(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
}

async function apiAlive(): Promise<number> {
  const t0 = performance.now();
  const r = await srv.call('listZones');
  assert.equal(r.status, 200, `the API answers: ${JSON.stringify(r.body)}`);
  return performance.now() - t0;
}

/**
 * What agent messages can write, read from the database file: the hosts' reported data and acks, and
 * the size of everything else. (An accepted hello changes a host's state, contact time and its VMs'
 * sync state: those are left out, since the inputs after a hello come after a valid one.)
 */
function fingerprint(): string {
  const db = new SqliteDatabase(path.join(srv.dataDir, 'palisade.db'), { readonly: true, fileMustExist: true });
  try {
    const h = db.prepare('select preflight, repairs, repair_count, acked_revision, dataplane, name, token_hash from hosts where name = ?').all('chan-target');
    const n = db.prepare('select (select count(*) from events) e, (select count(*) from async_jobs) j, (select seq from change_seq) c, (select count(*) from security_group_rules) r, (select count(*) from vms) v').get();
    return process.env.FUZZ_DEBUG ? JSON.stringify([h, n]) : createHash('sha256').update(JSON.stringify([h, n])).digest('hex');
  } finally { db.close(); }
}

async function accepted(c: RawConnection): Promise<void> {
  await c.waitFor((m) => m?.type === 'welcome');
  await c.waitFor((m) => m?.type === 'snapshot' || m?.type === 'delta');
}

test('item 1: a hello followed by a bad frame in the same TCP write closes that connection only; the server keeps serving', async () => {
  const seconds = ['null', '{"type":"report","preflight":[null],"repairs":[]}', '[]', '"hello"', '{"type":"ack"}', '{"type":"ack","revision":-1,"vms":{}}', '{"type":"nonsense"}'];
  for (const second of seconds) {
    const c = await rawConnect(srv.port);
    c.write(frame(hello(target.token)), frame(second));
    assert.ok(await endsWithin(c, 5000), `closed after ${second}`);
    assert.ok(c.closeCode === 1008 || c.closeCode === 0, `policy-violation close for ${second}: ${c.closeCode}`);
    await apiAlive();
  }
  await waitFor('reasons logged', () => (srv.output().match(/agent connection closed: invalid message/g) ?? []).length >= seconds.length);
  assert.ok(bystander.connected && bystander.counters.connects === 1, 'the other agent never noticed');
  // The twin: the same hello alone is accepted.
  const good = await rawConnect(srv.port);
  good.write(frame(hello(target.token)));
  await accepted(good);
  good.destroy();
});

test('item 2: a report with a null finding is refused before anything is stored; the host can connect again and lists fine', async () => {
  const before = fingerprint();
  const c = await rawConnect(srv.port);
  c.write(frame(hello(target.token)));
  await accepted(c);
  c.write(frame('{"type":"report","preflight":[null],"repairs":[]}'));
  assert.ok(await endsWithin(c, 5000));
  assert.equal(c.closeCode, 1008);
  assert.ok(c.messages.some((m: any) => m?.type === 'error' && /invalid message/.test(m.message)), 'told why');
  await sleep(200);
  assert.equal(fingerprint(), before, 'nothing stored from the bad report');
  const row = await hostRow(srv, target.id);
  assert.ok(Array.isArray(row.preflight));
  for (let i = 0; i < 3; i++) {
    const again = await rawConnect(srv.port);
    again.write(frame(hello(target.token)));
    await accepted(again);
    // A valid report is stored, and the host still lists.
    again.write(frame(JSON.stringify({ type: 'report', preflight: [{ check: 'tool x', ok: false, detail: 'missing' }], repairs: [] })));
    await waitFor('Alert stored', async () => (await hostRow(srv, target.id)).state === 'Alert');
    again.destroy();
    await again.ended;
  }
});

test('item 3: before a hello only a few KB are read; a 64 MB frame costs the server next to no memory; after it, frames are bounded', async () => {
  const pid = srv.pid();
  await apiAlive();
  const rss0 = rssMb(pid);
  const c = await rawConnect(srv.port);
  const size = 64 * 1024 * 1024;
  const chunk = Buffer.alloc(1024 * 1024, 0x61);
  c.socket.write(frame(Buffer.alloc(0), { declaredLength: size }).subarray(0, 14));   // header of a masked 64 MiB text frame
  let sent = 0;
  while (sent < size && !c.socket.destroyed && c.socket.writable) {
    if (!c.socket.write(chunk)) await Promise.race([new Promise((r) => c.socket.once('drain', r)), c.ended]);
    sent += chunk.length;
  }
  assert.ok(await endsWithin(c, 10_000), 'the server cut the connection');
  await sleep(300);
  const rss1 = rssMb(pid);
  console.log(`# 64 MB pre-hello frame: server RSS ${rss0.toFixed(0)} MB before, ${rss1.toFixed(0)} MB after (+${(rss1 - rss0).toFixed(1)} MB); client wrote ${(sent / 2 ** 20).toFixed(0)} MB before the cut`);
  assert.ok(rss1 - rss0 < 32, `RSS grew by ${(rss1 - rss0).toFixed(1)} MB`);

  // Many small frames before a hello add up the same way (a big frame may already be refused by its
  // header, 1009, when that arrives alone). Unsolicited pongs get no answer, so only the count stops them.
  const logged = (srv.output().match(/bytes before its hello was accepted/g) ?? []).length;
  const d = await rawConnect(srv.port);
  for (let i = 0; i < 2 * PRE_HELLO_MAX_BYTES / 100; i++) d.write(frame(Buffer.alloc(100, 0x20), { opcode: 10 }));
  assert.ok(await endsWithin(d, 5000), 'pongs past the bound end the connection');
  await waitFor('logged', () => (srv.output().match(/bytes before its hello was accepted/g) ?? []).length > logged);
  // A ping flood ends too: by the count, or earlier by ws's own bound on pongs it still has to write
  // (it then ends the connection without a log line of ours, so only the end is asserted).
  const pings = await rawConnect(srv.port);
  for (let i = 0; i < 2 * PRE_HELLO_MAX_BYTES / 100; i++) pings.write(frame(Buffer.alloc(100, 0x20), { opcode: 9 }));
  assert.ok(await endsWithin(pings, 5000), 'pings past the bound end the connection');
  // The twin: fewer bytes than the bound, then a hello, is a normal session.
  const few = await rawConnect(srv.port);
  for (let i = 0; i < 20; i++) few.write(frame(Buffer.alloc(100, 0x20), { opcode: 10 }));
  few.write(frame(hello(target.token)));
  await accepted(few);
  assert.equal(await endsWithin(few, 300), false, 'a few frames before a hello are fine');
  few.destroy();
  await few.ended;

  // After a hello: a frame over AGENT_FRAME_MAX_BYTES is refused by its header (1009) …
  const e = await rawConnect(srv.port);
  e.write(frame(hello(target.token)));
  await accepted(e);
  e.write(frame(Buffer.alloc(0), { declaredLength: AGENT_FRAME_MAX_BYTES + 1 }).subarray(0, 14));
  assert.ok(await endsWithin(e, 5000));
  assert.equal(e.closeCode, 1009);
  // A peer's bad frame is one warning line, never an error with a stack (anyone could fill the log).
  const unmasked = await rawConnect(srv.port);
  unmasked.socket.write(Buffer.from([0x81, 0xff, 0, 0, 0, 0, 0x10, 0, 0, 0]));   // unmasked, 256 MiB declared
  assert.ok(await endsWithin(unmasked, 5000));
  await waitFor('warned', () => (srv.output().match(/agent connection: protocol error; closed/g) ?? []).length >= 2);
  const errorLines = srv.output().split('\n').filter((l) => l.includes('"level":50') && /payload|MASK|RangeError/i.test(l));
  assert.deepEqual(errorLines, [], 'no error-level line for a peer\'s bad frame');
  // … while a large legitimate one (an ack of thousands of VMs, ~1 MB) is fine.
  const f = await rawConnect(srv.port);
  f.write(frame(hello(target.token)));
  await accepted(f);
  const vms: Record<string, { ok: boolean; error?: string }> = {};
  for (let i = 0; i < 5000; i++) vms[`00000000-0000-4000-8000-${String(i).padStart(12, '0')}`] = { ok: false, error: 'x'.repeat(150) };
  f.write(frame(JSON.stringify({ type: 'ack', revision: 0, vms })));
  f.write(frame('{"type":"ping"}'));
  await f.waitFor((m) => m?.type === 'pong');
  f.destroy();
  await apiAlive();
});

// ---- the bounded fuzz ----------------------------------------------------------------------------

const rand = mulberry32(0x5eed);
const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)];
const int = (n: number) => Math.floor(rand() * n);

function randomJson(depth = 0): unknown {
  const k = int(depth > 3 ? 6 : 9);
  switch (k) {
    case 0: return null;
    case 1: return rand() < 0.5;
    case 2: return pick([0, -1, 1.5, 1e308, -1e308, Number.MAX_SAFE_INTEGER + 2, 2 ** 31, 7]);
    case 3: return pick(['', 'hello', 'ack', 'report', 'ping', '\u0000', '\ud800', 'x'.repeat(int(3000)), '__proto__']);
    case 4: return pick(['tcp', 'constructor', 'toString']);
    case 5: return [];
    case 6: return Array.from({ length: int(5) }, () => randomJson(depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = int(5); i > 0; i--) o[pick(['type', 'version', 'token', 'hostname', 'revision', 'vms', 'preflight', 'repairs', '__proto__', 'constructor', 'dataplane', 'x'])] = randomJson(depth + 1);
      return o;
    }
  }
}

/** A plausible message with one field broken. */
function mutated(token: string): unknown {
  const bases: Record<string, unknown>[] = [
    JSON.parse(hello(token)),
    { type: 'ack', revision: 1, vms: { [vmId]: { ok: true } } },
    { type: 'report', preflight: [{ check: 'c', ok: true, detail: 'd' }], repairs: [{ at: 'now', what: 'w', count: 1 }] },
    { type: 'ping' },
  ];
  const m = structuredClone(pick(bases));
  const keys = Object.keys(m);
  const key = pick(keys.length > 1 ? keys.filter((k) => k !== 'type') : keys);
  const how = int(6);
  if (how === 0) delete m[key];
  else if (how === 1) m[key] = randomJson();
  else if (how === 2) m[key] = 'x'.repeat(pick([300, 5000, 70_000]));
  else if (how === 3) m[key] = pick([-5, 1.5, 2 ** 60, '1', null, [], {}]);
  else if (how === 4 && Array.isArray(m.preflight)) m.preflight = Array.from({ length: pick([65, 2, 1000]) }, () => pick([null, { check: 'c', ok: 'yes', detail: 1 }, { check: 'c', ok: true, detail: 'd' }]));
  else if (how === 5 && m.vms) m.vms = { [vmId]: pick([null, { ok: 'true' }, { ok: false, error: 'e'.repeat(600) }, { ok: true }]) };
  else m.type = pick(['hits', 'drops', 'HELLO', '', 5]);
  return m;
}

interface Input { label: string; frames: Buffer[]; afterHello: boolean; invalid: boolean; text?: string }

function nextInput(token: string): Input {
  const kind = int(10);
  const afterHello = rand() < 0.45;
  const text = (t: string) => {
    const d = decodeAgentMessage(t);
    return { frames: [frame(t)], text: t, invalid: !d.ok || (!afterHello && d.message.type !== 'hello') };
  };
  switch (kind) {
    case 0: { const b = Buffer.from(Array.from({ length: 1 + int(200) }, () => int(256))); return { label: 'random bytes as text', frames: [frame(b)], afterHello, invalid: true }; }
    case 1: return { label: 'binary frame', frames: [frame(Buffer.from(hello(token)), { opcode: 2 })], afterHello, invalid: true };
    case 2: return { label: 'random JSON', ...text(JSON.stringify(randomJson())), afterHello };
    case 3: case 4: case 5: { const m = JSON.stringify(mutated(token)); return { label: 'mutated message', ...text(m), afterHello }; }
    case 6: { const t = hello(token); const cut = 1 + int(t.length - 2); return { label: 'fragmented hello', frames: [frame(t.slice(0, cut), { fin: false }), frame(t.slice(cut), { opcode: 0 })], afterHello, invalid: false }; }
    case 7: return { label: 'reserved opcode / rsv bits', frames: [frame('{"type":"ping"}', pick([{ opcode: 3 }, { rsv: 4 }, { opcode: 11 }]))], afterHello, invalid: true };
    case 8: return { label: 'unmasked frame', frames: [frame('{"type":"ping"}', { mask: false })], afterHello, invalid: true };
    default: return { label: 'oversized control frame', frames: [frame(Buffer.alloc(200, 0x41), { opcode: 9 })], afterHello, invalid: true };
  }
}

test('fuzz: malformed agent frames before and after a hello (bounded)', async () => {
  const N = Number(process.env.PALISADE_FUZZ_AGENT_INPUTS ?? 400);
  const baseline = await apiAlive();
  const counts = { inputs: 0, closedByServer: 0, keptOpen: 0, serverErrors: 0, partialWrites: 0, crashes: 0 };
  const closeCodes = new Map<number, number>();
  const t0 = Date.now();
  for (let i = 0; i < N; i++) {
    const input = nextInput(target.token);
    counts.inputs++;
    const fp = input.invalid ? fingerprint() : '';
    const c = await rawConnect(srv.port);
    if (input.afterHello) { c.write(frame(hello(target.token))); await accepted(c); }
    c.write(...input.frames);
    const closed = await endsWithin(c, input.invalid ? 5000 : 300);
    if (closed) {
      counts.closedByServer++;
      closeCodes.set(c.closeCode ?? -1, (closeCodes.get(c.closeCode ?? -1) ?? 0) + 1);
      if (c.closeCode === 1011 || c.messages.some((m: any) => m?.type === 'error' && m.code >= 500)) counts.serverErrors++;
    } else counts.keptOpen++;
    if (input.invalid) assert.ok(closed, `invalid input (${input.label}) must close the connection`);
    c.destroy();
    await c.ended;
    if (!input.invalid && input.afterHello && input.text) {
      // A valid report's repairs are added to the store up to a second later (batched): let them land
      // before the next input's fingerprint.
      const d = decodeAgentMessage(input.text);
      if (d.ok && d.message.type === 'report' && d.message.repairs.length) await sleep(1200);
    }
    if (input.invalid) {
      await sleep(60);   // longer than the status writer's coalescing delay
      if (fingerprint() !== fp) { counts.partialWrites++; assert.fail(`a rejected input (${input.label}${input.afterHello ? ', after a hello' : ''}: ${(input.text ?? '').slice(0, 300)}) changed the store:\n${fp}\n${fingerprint()}`); }
    }
    if (srv.output().includes('exited') || !fs.existsSync(`/proc/${srv.pid()}`)) counts.crashes++;
    if (i % 50 === 49) await apiAlive();
  }
  const after = await apiAlive();
  console.log(`# agent-channel fuzz: ${JSON.stringify(counts)}; close codes ${JSON.stringify(Object.fromEntries(closeCodes))}; listZones ${baseline.toFixed(1)} ms before, ${after.toFixed(1)} ms after; ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  assert.equal(counts.crashes, 0);
  assert.equal(counts.serverErrors, 0, 'no input is answered as an internal error');
  assert.ok(bystander.connected && bystander.counters.connects === 1, 'the other agent stayed connected throughout');
  const row = ok(await srv.call('listHosts', { id: target.id }), 'listHosts').listhostsresponse.host[0];
  assert.ok(row.name === 'chan-target');
});

// ---- the agent side --------------------------------------------------------------------------------

test('an agent given invalid server messages closes that connection, keeps what it holds, and moves to the next server', async () => {
  const bad = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await new Promise<void>((r) => bad.once('listening', () => r()));
  const badPort = (bad.address() as { port: number }).port;
  const payloads = ['not json', '{"type":"snapshot","state":{"hostId":"h","revision":"7","vms":[],"sets":[]}}', '{"type":"delta","fromRevision":0}', '{"type":"welcome"}', '{"type":"mystery"}'];
  let served = 0;
  bad.on('connection', (ws) => { ws.on('message', () => { ws.send(payloads[served++ % payloads.length]); }); });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-agent-bad-'));
  const dp = new NullDataplane();
  const a = new Agent({
    server: [`http://127.0.0.1:${badPort}`, `http://127.0.0.1:${srv.port}`], serverOrder: 'listed', token: target.token, hostname: 'fuzz',
    stateDir: dir, dataplane: dp, discover: async (s) => simulatedPorts(s), preflight: null, reconcileMs: 60_000, log: silentLog, backoffMinMs: 20, backoffMaxMs: 100,
  });
  try {
    await a.start();
    // The bad server answers the hello with garbage: the agent drops it and reaches the real one.
    await waitFor('connected to the real server', () => a.connected && a.server === `http://127.0.0.1:${srv.port}` && a.appliedRevision !== null, 15_000);
    assert.ok(served >= 1, 'the bad server was tried first');
    assert.ok(a.state!.vms.some((v) => v.vmId === vmId), 'the real snapshot applied');
    const held = JSON.stringify(a.state);
    // Now only the bad server: the agent keeps what it holds (fail static) through several rounds.
    // (The same agent restarted: its state file is applied only under the hostname and token it was written for.)
    const b2 = new Agent({
      server: `http://127.0.0.1:${badPort}`, token: target.token, hostname: 'fuzz', stateDir: dir, dataplane: new NullDataplane(),
      discover: async (s) => simulatedPorts(s), preflight: null, reconcileMs: 60_000, log: silentLog, backoffMinMs: 20, backoffMaxMs: 50,
    });
    await a.stop();
    await b2.start();
    const before = served;
    await waitFor('several bad rounds', () => served >= before + payloads.length, 10_000);
    assert.equal(JSON.stringify(b2.state), held, 'the held state is untouched by invalid messages');
    assert.equal(b2.connected, false);
    await b2.stop();
  } finally {
    await a.stop();
    bad.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// ---- per-rule hits and drops from agents (issue 11) -------------------------------------------------

test('hits: counted only for the sending host\'s VMs and their rules; hostile hits frames are refused or ignored; settings follow the welcome and every change', async () => {
  const sg = ok(await srv.call('createSecurityGroup', { name: 'chan-hits' }), 'createSecurityGroup').createsecuritygroupresponse.securitygroup.id;
  const rule = (await srv.callAndWait('authorizeSecurityGroupIngress', { securitygroupid: sg, protocol: 'TCP', startport: 80, endport: 80, cidrlist: '10.0.0.0/8' })).body.jobresult.securitygroup.ingressrule[0].ruleid;
  const otherVm = ok(await srv.call('listVirtualMachines', { name: 'chan-other', listall: true }), 'listVirtualMachines').listvirtualmachinesresponse.virtualmachine[0].id;
  for (const id of [vmId, otherVm]) await srv.callAndWait('updateVirtualMachine', { id, securitygroupids: sg }).then((r) => ok(r, 'updateVirtualMachine'));
  const hitcount = async () => {
    const g = ok(await srv.call('listSecurityGroups', { id: sg }), 'listSecurityGroups').listsecuritygroupsresponse.securitygroup[0];
    return g.ingressrule.find((r: any) => r.ruleid === rule).hitcount as number;
  };
  const hitRows = () => {
    const db = new SqliteDatabase(path.join(srv.dataDir, 'palisade.db'), { readonly: true, fileMustExist: true });
    try { return (db.prepare('select count(*) n from security_group_rule_hits').get() as { n: number }).n; } finally { db.close(); }
  };
  const hits = (vms: unknown, at: unknown = new Date().toISOString()) => JSON.stringify({ type: 'hits', at, vms });

  const c = await rawConnect(srv.port);
  try {
    c.write(frame(hello(target.token)));
    await accepted(c);
    const types = c.messages.map((m: any) => m?.type);
    assert.ok(types.indexOf('settings') > types.indexOf('welcome') && types.indexOf('settings') < types.findIndex((t) => t === 'snapshot' || t === 'delta'), `settings between welcome and the desired state: ${types.join(',')}`);
    assert.deepEqual((c.messages.find((m: any) => m?.type === 'settings') as any).dropLog, { rate: 10, burst: 50 });
    const snap = await c.waitFor((m) => m?.type === 'snapshot' && m.state.vms.some((v: any) => v.vmId === vmId && v.v4.ingress.length));
    const kernelId = snap.state.vms.find((v: any) => v.vmId === vmId).v4.ingress.find((r: any) => r.ports?.from === 80).id as string;

    // The twin: the host's own VM and rule count.
    c.write(frame(hits({ [vmId]: { [kernelId]: 5 } })));
    await waitFor('hitcount 5', async () => (await hitcount()) === 5);
    // Ignored, the session kept: another host's VM (same group, same kernel rule), an unknown VM, an unknown rule.
    c.write(frame(hits({ [otherVm]: { [kernelId]: 1000 } })), frame(hits({ '00000000-0000-4000-8000-000000000000': { [kernelId]: 1000 } })),
      frame(hits({ [vmId]: { ffffffffffff: 1000 } })), frame(hits({ [vmId]: { [kernelId]: 1 } }, '2000-01-01T00:00:00Z')));
    await waitFor('hitcount 6', async () => (await hitcount()) === 6);
    await sleep(300);
    assert.equal(await hitcount(), 6, 'nothing counted for a VM of another host, an unknown VM or an unknown rule');
    assert.equal(c.closeCode, null, 'ignored, not refused');
    // Drops the server cannot use are counted rejected, the session kept.
    c.write(frame(JSON.stringify({ type: 'drops', records: [null, {}, 'x', { at: 'yesterday' }] })));
    // Huge but valid deltas saturate at 2^53-1 instead of overflowing.
    c.write(frame(hits({ [vmId]: { [kernelId]: Number.MAX_SAFE_INTEGER } })), frame(hits({ [vmId]: { [kernelId]: Number.MAX_SAFE_INTEGER } })));
    await waitFor('hitcount saturated', async () => (await hitcount()) === Number.MAX_SAFE_INTEGER);
    await sleep(300);
    assert.equal(c.closeCode, null);
    assert.equal(await hitcount(), Number.MAX_SAFE_INTEGER);

    // A settings change reaches the session at once.
    ok(await srv.call('updateConfiguration', { name: 'security.group.drop.log.rate', value: '20' }), 'updateConfiguration');
    await c.waitFor((m) => m?.type === 'settings' && m.dropLog.rate === 20 && m.dropLog.burst === 50, 10_000);
    ok(await srv.call('resetConfiguration', { name: 'security.group.drop.log.rate' }), 'resetConfiguration');
    await c.waitFor((m) => m?.type === 'settings' && m.dropLog.rate === 10, 10_000);
  } finally { c.destroy(); await c.ended; }

  // Malformed hits end that connection and store nothing.
  const rows = hitRows();
  const many: Record<string, Record<string, number>> = {};
  for (let i = 0; i < 5001; i++) many[`00000000-0000-4000-8000-${String(i).padStart(12, '0')}`] = { abc: 1 };
  const bad = [
    hits([]), hits({ [vmId]: { abc: '12' } }), hits({ [vmId]: { abc: -1 } }), hits({ [vmId]: { abc: 1.5 } }), hits({ [vmId]: { abc: 2 ** 60 } }),
    hits({ 'not-a-uuid': { abc: 1 } }), hits({ [vmId]: { 'a.b': 1 } }), hits({ [vmId]: { abc: 1 } }, 'yesterday'), hits(many),
    JSON.stringify({ type: 'hits', vms: {} }), JSON.stringify({ type: 'drops', records: new Array(5001).fill(null) }),
  ];
  for (const text of bad) {
    const b = await rawConnect(srv.port);
    b.write(frame(hello(target.token)));
    await accepted(b);
    b.write(frame(text));
    assert.ok(await endsWithin(b, 5000), `refused: ${text.slice(0, 80)}`);
    assert.equal(b.closeCode, 1008, `policy close for ${text.slice(0, 80)}`);
    b.destroy();
  }
  await sleep(300);
  assert.equal(await hitcount(), Number.MAX_SAFE_INTEGER, 'nothing from the refused frames');
  assert.equal(hitRows(), rows, 'no rows from them either');
  await apiAlive();
  assert.ok(bystander.connected, 'the other agent stayed connected');
});

test('resyncs asked on an open channel join one another; an agent that does not read is cut off, a reading one is not', async () => {
  // A host whose snapshot is ~1 MB: 8 VMs in a group of 600 rules.
  const fat = await addHost(srv, 'chan-noread');
  const group = ok(await srv.call('createSecurityGroup', { name: 'noread-fat' }), 'createSecurityGroup').createsecuritygroupresponse.securitygroup.id;
  ok(await srv.call('updateConfiguration', { name: 'security.group.max.rules', value: '10000' }), 'updateConfiguration');
  // Ten rules of 600 scattered /32s each (no two merge into a shorter prefix, no two ports into a range).
  for (let k = 0; k < 10; k++) {
    const cidrs = Array.from({ length: 600 }, (_, i) => `${11 + ((i + k * 7) % 200)}.${(i * 37 + k) % 256}.${(i * 101) % 256}.${(i * 7 + k * 2) % 256 | 1}/32`).join(',');
    assert.equal((await srv.callAndWait('authorizeSecurityGroupIngress', { securitygroupid: group, protocol: 'tcp', startport: 1000 + 2 * k, endport: 1000 + 2 * k, cidrlist: cidrs })).body.jobstatus, 1);
  }
  for (let i = 0; i < 8; i++) await deploy(srv, cloud, { hostid: fat.id, name: `noread-${i}`, securitygroupids: group });
  const snapshots = (c: RawConnection) => c.messages.filter((m: any) => m?.type === 'snapshot').length;

  // Fifty asks in one write, while the first is queued: one resync answers them (not fifty snapshots).
  const reader = await rawConnect(srv.port);
  reader.write(frame(hello(fat.token)));
  await accepted(reader);
  const first = snapshots(reader);
  reader.write(...Array.from({ length: 50 }, () => frame(hello(fat.token))));
  await reader.waitFor(() => snapshots(reader) > first, 10_000);
  await sleep(500);
  assert.ok(snapshots(reader) - first <= 3, `asks joined: ${snapshots(reader) - first} snapshots for 50 asks`);
  // The twin of the cut below: a reading agent asking again and again keeps its session. Each ask waits
  // for the answer to the one before (paced by a timer instead, a loaded server joined them all into one
  // or two resyncs and the count below was never reached).
  for (let i = 0; i < 5; i++) {
    const had = snapshots(reader);
    reader.write(frame(hello(fat.token)));
    await reader.waitFor(() => snapshots(reader) > had, 30_000);
  }
  assert.equal(reader.closeCode, null, 'a reading agent is not cut');
  reader.destroy();
  await reader.ended;

  // The same asks from an agent that never reads: what waits for it is bounded, then it is cut.
  const pid = srv.pid();
  const rssBefore = rssMb(pid);
  const deaf = await rawConnect(srv.port);
  deaf.write(frame(hello(fat.token)));
  await accepted(deaf);
  deaf.socket.pause();
  let cut = false;
  for (let i = 0; i < 400 && !cut; i++) {
    deaf.write(frame(hello(fat.token)));
    await sleep(15);
    cut = /agent connection cut: it does not read/.test(srv.output());
  }
  assert.ok(cut, 'the server cut the agent that does not read');
  const rssGrowth = rssMb(pid) - rssBefore;
  assert.ok(rssGrowth < 300, `server RSS grew by ${Math.round(rssGrowth)} MB`);
  deaf.socket.resume();
  assert.ok(await endsWithin(deaf, 10_000), 'its connection ended');
  await apiAlive();
  assert.ok(bystander.connected, 'the other agent stayed connected');
});

test('an agent asking for resyncs again and again (reading every snapshot) is throttled once their time is past its host\'s budget, not cut', async () => {
  // A host whose snapshot is ~1 MB (the group of the test above: 10 rules of 600 addresses).
  const host = await addHost(srv, 'chan-resyncs');
  const group = ok(await srv.call('listSecurityGroups', { securitygroupname: 'noread-fat' }), 'listSecurityGroups').listsecuritygroupsresponse.securitygroup[0].id;
  for (let i = 0; i < 8; i++) await deploy(srv, cloud, { hostid: host.id, name: `resyncs-${i}`, securitygroupids: group });
  const lines = () => (srv.output().match(/agent connection throttled/g) ?? []).length;
  const before = lines();
  const c = await rawConnect(srv.port);
  c.write(frame(hello(host.token)));
  await accepted(c);
  // The twin: connecting (one resync, the first snapshot) does not throttle the host.
  assert.equal(lines(), before, 'one resync is within the budget');
  // Each snapshot read at once and answered with a new ask: tiny frames, but a snapshot built and sent
  // in the serial section (which every change waits for) each time. (Bounded: before, it never ended.)
  let asks = 0;
  for (; asks < 3000 && lines() === before && c.closeCode === null; asks++) {
    c.messages.length = 0;
    c.write(frame(hello(host.token)));
    await c.waitFor((m) => m?.type === 'snapshot', 120_000);
  }
  assert.ok(lines() > before, `throttled within ${asks} asks`);
  const throttledAfter = asks;
  // Not cut: it is read again once the host's debt is paid back.
  c.write(frame(JSON.stringify({ type: 'ping' })));
  await c.waitFor((m) => m?.type === 'pong', 180_000);
  assert.equal(c.closeCode, null, 'still connected');
  console.log(`# resyncs asked before the host was throttled: ${throttledAfter}`);
  c.destroy();
  await c.ended;
  await apiAlive();
});

test('an agent whose valid frames take too much of the server\'s time is throttled (not read for a while), not cut; the API keeps answering', async () => {
  const c = await rawConnect(srv.port);
  c.write(frame(hello(target.token)));
  await accepted(c);
  // Hits frames within every bound (5,000 VMs × 6 rules, ~2 MB; a few hundred ms of decoding each,
  // here), sent without pause until the server has spent more than its 2 s burst on them. (Once
  // throttled, every further frame is paid for at 50 ms per second: the fewer sent beyond the burst,
  // the sooner the ping after them is answered.)
  const uuid = (i: number) => `00000000-0000-4000-8000-${i.toString(16).padStart(12, '0')}`;
  const vms: Record<string, Record<string, number>> = {};
  for (let i = 0; i < 5000; i++) { const rules: Record<string, number> = {}; for (let j = 0; j < 6; j++) rules[`r${j}x${i.toString(36)}`] = 1; vms[uuid(i)] = rules; }
  const big = frame(JSON.stringify({ type: 'hits', at: new Date().toISOString(), vms }));
  assert.ok(big.length < AGENT_FRAME_MAX_BYTES);
  const before = (srv.output().match(/agent connection throttled/g) ?? []).length;
  const throttled = () => (srv.output().match(/agent connection throttled/g) ?? []).length > before;
  for (let i = 0; i < 200 && !throttled(); i++) { c.write(big); await new Promise<void>((r) => c.socket.write('', () => r())); await sleep(400); }
  await waitFor('throttled', throttled, 60_000);
  const t0 = performance.now();
  // Not read meanwhile (for at least 2 s): its ping waits; the API is answered.
  c.write(frame(JSON.stringify({ type: 'ping' })));
  await assert.rejects(c.waitFor((m) => m?.type === 'pong', 500), 'not read while throttled');
  assert.ok(await apiAlive() < 1000, 'the API answers while the agent is throttled');
  // Not cut: once paid back, it is read again (its ping is answered after the frames before it).
  await c.waitFor((m) => m?.type === 'pong', 180_000);
  assert.equal(c.closeCode, null, 'still connected');
  if (process.env.DEBUG_THROTTLE) console.log('pong after', Math.round(performance.now() - t0), 'ms');
  c.destroy();
  await c.ended;
});

test('the handling budget is the host\'s: an agent throttled on one connection is throttled on the next at once, not given a new burst', async () => {
  const host = await addHost(srv, 'chan-rethrottle');
  const uuid = (i: number) => `00000000-0000-4000-8000-${i.toString(16).padStart(12, '0')}`;
  const vms: Record<string, Record<string, number>> = {};
  for (let i = 0; i < 5000; i++) { const rules: Record<string, number> = {}; for (let j = 0; j < 6; j++) rules[`r${j}x${i.toString(36)}`] = 1; vms[uuid(i)] = rules; }
  const big = frame(JSON.stringify({ type: 'hits', at: new Date().toISOString(), vms }));
  const lines = () => (srv.output().match(/agent connection throttled/g) ?? []).length;
  // First connection: valid frames (each hundreds of ms of decoding) without pause until throttled.
  const a = await rawConnect(srv.port);
  a.write(frame(hello(host.token)));
  await accepted(a);
  const before = lines();
  for (let i = 0; i < 200 && lines() === before; i++) { a.write(big); await new Promise<void>((r) => a.socket.write('', () => r())); await sleep(400); }
  await waitFor('first connection throttled', () => lines() > before, 60_000);
  // The agent reconnects at once: while its host is in debt its hello is refused (503, told why), before
  // any work — no lease, no resync. Before, each reconnect was accepted and given a snapshot built in the
  // serial section, so reconnecting in a loop undid the charge of resyncs to the host's budget.
  // The debt is what the last frame overshot the budget by (at 50 ms a second): a few ms of it can be paid
  // back before the reconnect's hello is read on a loaded machine. Then that hello is accepted, and the new
  // connection is throttled again (one frame: the budget is the host's, near empty) and left, up to five
  // times. Before the fix no such hello was ever refused.
  let throttled = a;
  let r: Awaited<ReturnType<typeof rawConnect>> | null = null;
  for (let attempt = 0; attempt < 5 && !r; attempt++) {
    throttled.destroy();
    await throttled.ended;
    const c = await rawConnect(srv.port);
    c.write(frame(hello(host.token)));
    const m = await c.waitFor((x) => x?.type === 'welcome' || x?.type === 'error', 10_000);
    if (m.type === 'error') { r = c; break; }
    const again = lines();
    await accepted(c);
    for (let i = 0; i < 200 && lines() === again; i++) { c.write(big); await new Promise<void>((res) => c.socket.write('', () => res())); await sleep(400); }
    await waitFor('throttled again', () => lines() > again, 60_000);
    throttled = c;
  }
  assert.ok(r, 'a hello while the host is in debt is refused');
  assert.ok(await endsWithin(r, 10_000), 'and its connection closed');
  assert.equal(r.closeCode, 4503, JSON.stringify(r.messages).slice(0, 300));
  assert.match((r.messages.find((m: any) => m?.type === 'error') as { message: string }).message, /more than its share of this server's time; try again in \d+ s/);
  assert.ok(!r.messages.some((m: any) => m?.type === 'welcome' || m?.type === 'snapshot' || m?.type === 'delta'), 'no session, no resync');
  // Once the debt is paid back a hello is accepted; its hello and ONE such frame, far less than a fresh
  // connection's 2 s burst, throttle it. Before, every reconnect started with a full burst.
  const b = await waitFor('accepted once the debt is paid back', async () => {
    const c = await rawConnect(srv.port);
    c.write(frame(hello(host.token)));
    const m = await c.waitFor((x) => x?.type === 'welcome' || x?.type === 'error', 10_000);
    if (m.type === 'welcome') return c;
    await c.ended;
    await sleep(250);
    return null;
  }, 120_000);
  assert.ok(b);
  const second = lines();
  await accepted(b);
  b.write(big);
  await waitFor('second connection throttled after one frame', () => lines() > second, 60_000);
  // Throttled, not cut: it is read again once the host's debt is paid back.
  b.write(frame(JSON.stringify({ type: 'ping' })));
  await b.waitFor((m) => m?.type === 'pong', 180_000);
  assert.equal(b.closeCode, null, 'still connected');
  b.destroy();
  await b.ended;
  await apiAlive();
});

test('drop batches sent without pause: the host\'s telemetry is held back to its budget (records shed), its session is not', async () => {
  const host = await addHost(srv, 'chan-drops');
  const c = await rawConnect(srv.port);
  c.write(frame(hello(host.token)));
  await accepted(c);
  const dropRows = () => {
    const db = new SqliteDatabase(path.join(srv.dataDir, 'palisade.db'), { readonly: true, fileMustExist: true });
    try { return (db.prepare("select count(*) n from security_group_drops where src_address = '192.0.2.77'").get() as { n: number }).n; } finally { db.close(); }
  };
  const heldBack = () => srv.output().split('\n').filter((l) => l.includes('telemetry of this host held back') && l.includes(`"host":`)).length;
  const record = () => ({ at: new Date().toISOString(), reason: 'unknown-port', direction: 'ingress', protocol: 'tcp', src: '192.0.2.77', dst: '192.0.2.78', srcPort: 1, dstPort: 2 });
  const batch = (n: number) => frame(JSON.stringify({ type: 'drops', records: Array.from({ length: n }, record) }));
  try {
    // The twin first: a batch at an honest pace is stored, nothing held back.
    const before = heldBack();
    c.write(batch(10));
    await waitFor('10 stored', () => dropRows() === 10);
    assert.equal(heldBack(), before);
    // Full batches without pause: held back (logged once), while the session answers its pings.
    for (let i = 0; i < 200 && heldBack() === before; i++) { c.write(batch(5000)); await new Promise<void>((r) => c.socket.write('', () => r())); }
    await waitFor('held back', () => heldBack() > before, 60_000);
    c.write(frame(JSON.stringify({ type: 'ping' })));
    await c.waitFor((m) => m?.type === 'pong', 10_000);
    assert.equal(c.closeCode, null);
  } finally { c.destroy(); await c.ended; }
});

test('drift reports: counted within bounds and logged once per host per minute, however often and however large', async () => {
  const host = await addHost(srv, 'chan-reports');
  const c = await rawConnect(srv.port);
  c.write(frame(hello(host.token)));
  await accepted(c);
  const logged = () => (srv.output().match(/agent repaired drift/g) ?? []).length;
  const before = logged();
  // The largest report the schema lets through: 100 repairs of a billion each, with long texts.
  const repairs = Array.from({ length: 100 }, (_, i) => ({ at: new Date().toISOString(), what: `chain ${i} ${'x'.repeat(1900)}`, count: 1_000_000_000 }));
  for (let i = 0; i < 5; i++) c.write(frame(JSON.stringify({ type: 'report', preflight: [], repairs })));
  await waitFor('five reports counted', async () => (await hostRow(srv, host.id)).driftrepairs === 5_000_000);
  await sleep(300);
  assert.equal((await hostRow(srv, host.id)).driftrepairs, 5_000_000, 'a million per report at most');
  assert.equal(logged() - before, 1, 'one log line for five reports');
  const line = srv.output().split('\n').find((l) => l.includes('agent repaired drift') && l.includes('chain 0'))!;
  assert.ok(line.length < 1000, `a short line: ${line.length} characters`);
  c.destroy();
  await c.ended;
});

test('refused hellos: a storm is logged as a count after the first lines; two at once for one host are told apart from another server\'s', async () => {
  const refusedLines = () => (srv.output().match(/agent refused: /g) ?? []).length;
  const before = refusedLines();
  const stale = 'stale-token-' + 'x'.repeat(32);
  const storm = await Promise.all(Array.from({ length: 60 }, () => rawConnect(srv.port)));
  for (const c of storm) c.write(frame(hello(stale)));
  for (const c of storm) assert.ok(await endsWithin(c, 10_000), 'every stale hello is refused');
  assert.ok(storm.every((c) => c.messages.some((m: any) => m?.type === 'error' && /unknown agent token/.test(m.message))), 'each is told why');
  const logged = refusedLines() - before;
  assert.ok(logged >= 1 && logged <= 20, `at most 20 lines for 60 refusals: ${logged}`);

  // Two connections of one host at the same moment, on the one server: one is used, the other is not
  // told the host is held by another server.
  const host = await addHost(srv, 'chan-twins');
  const [a, b] = await Promise.all([rawConnect(srv.port), rawConnect(srv.port)]);
  a.write(frame(hello(host.token)));
  b.write(frame(hello(host.token)));
  const outcome = async (c: RawConnection) => Promise.race([c.waitFor((m) => m?.type === 'welcome', 10_000).then(() => 'welcome'), c.ended.then(() => 'ended')]);
  const results = await Promise.all([outcome(a), outcome(b)]);
  assert.ok(results.includes('welcome'), `one is accepted: ${results}`);
  for (const c of [a, b]) {
    const error = c.messages.find((m: any) => m?.type === 'error') as { message: string } | undefined;
    if (error) assert.doesNotMatch(error.message, /another server/, 'not sent to look for another server');
  }
  a.destroy(); b.destroy();
  await Promise.all([a.ended, b.ended]);
});

test('an agent reconnecting in a loop: its connect and disconnect lines are bounded per host, another host\'s are still logged', async () => {
  const loop = await addHost(srv, 'chan-loop');
  const other = await addHost(srv, 'chan-loop-other');
  const linesOf = (name: string, msg: string) => srv.output().split('\n').filter((l) => l.includes(`"host":"${name}"`) && l.includes(`"msg":"${msg}"`)).length;
  for (let i = 0; i < 40; i++) {
    const c = await rawConnect(srv.port);
    c.write(frame(hello(loop.token)));
    await accepted(c);
    c.destroy();
    await c.ended;
  }
  await sleep(300);
  const connected = linesOf('chan-loop', 'agent connected');
  const disconnected = linesOf('chan-loop', 'agent disconnected');
  assert.ok(connected >= 1 && connected <= 10 && disconnected <= 10, `at most 10 lines each for 40 reconnects: ${connected} connected, ${disconnected} disconnected`);
  // The twin: another host's connect in the same minute is logged.
  const c = await rawConnect(srv.port);
  c.write(frame(hello(other.token)));
  await accepted(c);
  await waitFor('the other host\'s connect logged', () => linesOf('chan-loop-other', 'agent connected') === 1);
  c.destroy();
  await c.ended;
});

test('connections breaking the protocol before a hello (no token needed): each is closed and told why, the log gets a bounded number of lines; a host\'s are logged apart', async () => {
  const closedLines = () => (srv.output().match(/agent connection closed: invalid message/g) ?? []).length;
  const before = closedLines();
  for (let i = 0; i < 60; i++) {
    const c = await rawConnect(srv.port);
    c.write(frame(JSON.stringify({ type: 'ping' })));
    assert.ok(await endsWithin(c, 5000), 'closed');
    assert.equal(c.closeCode, 1008);
    assert.ok(c.messages.some((m: any) => m?.type === 'error' && /expected hello first, got ping/.test(m.message)), 'told why');
  }
  const logged = closedLines() - before;
  assert.ok(logged <= 20, `at most 20 lines for 60 connections: ${logged}`);
  // The twin: a host's own bad frame, after its hello, is logged (its lines are counted per host).
  const host = await addHost(srv, 'chan-badframe');
  const c = await rawConnect(srv.port);
  c.write(frame(hello(host.token)));
  await accepted(c);
  const mid = closedLines();
  c.write(frame('{"type":"nonsense"}'));
  assert.ok(await endsWithin(c, 5000));
  await waitFor('the host\'s bad frame logged', () => closedLines() === mid + 1);
});

test('close reasons in letters of several bytes (a CJK VM id in an invalid ack, a CJK hostname quoted in a refusal): the connection is closed with its code, no error line, no unhandled rejection', async () => {
  // (The two-agents line is an error by design: it is not the one looked for.)
  const errorLines = () => srv.output().split('\n').filter((l) => (l.includes('"level":50') && !l.includes('two agents use one host token')) || l.includes(UNHANDLED_REJECTION)).length;
  const before = errorLines();
  // Before a hello (no token needed), an invalid ack whose VM id is 64 CJK letters (its reason quotes the id: 192 bytes).
  const c = await rawConnect(srv.port);
  c.write(frame(JSON.stringify({ type: 'ack', revision: 1, vms: { ['中'.repeat(64)]: { ok: 'yes' } } })));
  assert.ok(await endsWithin(c, 5000));
  assert.equal(c.closeCode, 1008);
  assert.equal(c.messages.filter((m: any) => m?.type === 'error').length, 1, `told once: ${JSON.stringify(c.messages).slice(0, 300)}`);
  // Two agent processes on one token and a hostname in CJK letters (the refusal quotes it): the one
  // replaced coming back is refused 409 (4409).
  const host = await addHost(srv, 'chan-cjk');
  const name = '中'.repeat(60);
  const first = await rawConnect(srv.port);
  first.write(frame(hello(host.token, { hostname: name, instance: 'first-1' })));
  await accepted(first);
  const second = await rawConnect(srv.port);
  second.write(frame(hello(host.token, { hostname: name, instance: 'second-2' })));
  await accepted(second);
  assert.ok(await endsWithin(first, 10_000), 'the first was replaced');
  const back = await rawConnect(srv.port);
  back.write(frame(hello(host.token, { hostname: name, instance: 'first-1' })));
  assert.ok(await endsWithin(back, 10_000), 'the replaced one coming back is refused');
  assert.equal(back.closeCode, 4409);
  assert.match((back.messages.find((m: any) => m?.type === 'error') as { message: string }).message, /two agents use the token of host chan-cjk/);
  await sleep(300);
  assert.equal(errorLines(), before, srv.output().split('\n').filter((l) => l.includes('"level":50')).slice(-2).join('\n'));
  second.destroy();
  await second.ended;
});

test('an agent reconnecting in a loop is refused once its accepted hellos are past its host\'s budget (each takes a lease write); the first reconnects are not', async () => {
  const host = await addHost(srv, 'chan-reconnect-loop');
  let accepted = 0;
  let refused: RawConnection | null = null;
  for (let i = 0; i < 600 && !refused; i++) {
    const c = await rawConnect(srv.port);
    c.write(frame(hello(host.token)));
    const m = await c.waitFor((x) => x?.type === 'welcome' || x?.type === 'error', 10_000);
    if (m.type === 'error') { refused = c; break; }
    accepted++;
    c.destroy();
    await c.ended;
  }
  // Before, an empty host's hello cost only its resync (well under a ms): 600 reconnects never got there.
  assert.ok(refused, `a hello was refused within 600 reconnects (${accepted} accepted)`);
  assert.ok(await endsWithin(refused, 10_000));
  assert.equal(refused.closeCode, 4503);
  assert.match((refused.messages.find((m: any) => m?.type === 'error') as { message: string }).message, /more than its share of this server's time/);
  // The twin: reconnecting now and then is nothing (a burst's worth of hellos was accepted first).
  assert.ok(accepted >= 20, `the first reconnects were accepted (${accepted})`);
  await apiAlive();
});

test('connections awaiting a hello are bounded per server (anyone can open them): over the bound one is refused at once with 4503; every way out of waiting frees its place exactly once; an accepted session is unaffected', async () => {
  const BOUND = 20;
  const small = await startServer({ args: ['--pending-agents-max', String(BOUND)] });
  const open: RawConnection[] = [];
  const connect = async (o: { answerClose?: boolean } = {}) => { const c = await rawConnect(small.port, '/agent', o); open.push(c); return c; };
  const refusedBusy = (c: RawConnection) => c.closeCode === 4503 && /too many agent connections awaiting a hello/.test(c.closeReason)
    && c.messages.some((m: any) => m?.type === 'error' && m.code === 503 && /too many agent connections awaiting a hello; try another server or later/.test(m.message));
  try {
    const [hostA, hostB] = [await addHost(small, 'pend-a'), await addHost(small, 'pend-b')];
    const a = await connect();
    a.write(frame(hello(hostA.token)));
    await accepted(a);

    // BOUND idle connections (no frame at all) fill the bound; the next is refused at once, told why.
    // (The server counts a connection before its upgrade's answer is written: once every client has its
    // 101, every one is counted.)
    const idle = await Promise.all(Array.from({ length: BOUND }, () => connect()));
    const over = await connect();
    assert.ok(await endsWithin(over, 5000), 'the connection over the bound is closed at once');
    assert.ok(refusedBusy(over), `refused 4503, told why: ${over.closeCode} ${over.closeReason} ${JSON.stringify(over.messages)}`);
    // Blocked: a real agent's hello with a valid token gets the same while the bound is full.
    const blocked = await connect();
    blocked.write(frame(hello(hostB.token)));
    assert.ok(await endsWithin(blocked, 5000));
    assert.ok(refusedBusy(blocked), `a valid hello is refused too while full: ${blocked.closeCode} ${JSON.stringify(blocked.messages)}`);
    assert.ok(!blocked.messages.some((m: any) => m?.type === 'welcome'), 'no session for it');
    // The accepted session is not touched by the flood.
    a.write(frame(JSON.stringify({ type: 'ping' })));
    await a.waitFor((m) => m?.type === 'pong');
    assert.equal(a.closeCode, null);
    await waitFor('refusals logged', () => small.output().includes('agent refused: too many agent connections awaiting a hello'));

    // Allowed: once some waiting connections are gone, the same hello is accepted (retried until the
    // server has seen them go; each try is refused at once until then).
    for (const c of idle.splice(0, 5)) { c.destroy(); await c.ended; }
    const b = await waitFor('a valid hello accepted once places are free', async () => {
      const c = await connect();
      c.write(frame(hello(hostB.token)));
      const m = await Promise.race([c.waitFor((x) => x?.type === 'welcome' || x?.type === 'error', 10_000), c.ended.then(() => null)]);
      return m?.type === 'welcome' ? c : null;
    });
    assert.ok(b);
    await accepted(b);
    b.destroy();   // accepted, then gone: its place was freed at the welcome, not again now
    await b.ended;

    // Every other way out of waiting, with the 15 idle connections still waiting (they time out below):
    const garbage = await connect();
    garbage.write(frame('null'));
    const stale = await connect();
    stale.write(frame(hello('stale-token-' + 'x'.repeat(32))));
    const midHello = await connect();
    midHello.write(frame(hello(hostB.token)));
    midHello.destroy();
    const tooMuch = await connect();
    tooMuch.write(frame(Buffer.alloc(0), { declaredLength: 64 * 1024 }).subarray(0, 14), Buffer.alloc(PRE_HELLO_MAX_BYTES + 1024, 0x61));
    // A peer that never answers the server's close: its TCP connection is ended by the server once the
    // close frame is written (ws alone kept it, and its place, for 30 s more).
    const deaf = await connect({ answerClose: false });
    deaf.write(frame('[]'));
    for (const [c, code] of [[garbage, 1008], [stale, 4401], [tooMuch, 0], [deaf, 1008]] as const) {
      assert.ok(await endsWithin(c, 5000), `closed: ${code}`);
      assert.equal(c.closeCode, code, JSON.stringify(c.messages).slice(0, 300));
    }
    await midHello.ended;
    for (const c of idle) {
      assert.ok(await endsWithin(c, 20_000), 'an idle connection is refused once its hello time is out');
      assert.equal(c.closeCode, 4503);
      assert.match((c.messages.find((m: any) => m?.type === 'error') as { message: string }).message, /no hello accepted in time/);
    }

    // No place leaked and none given twice: BOUND new connections all wait (each answered on its own
    // hello: unknown token, not "too many"), and the one after them is refused.
    const again = await Promise.all(Array.from({ length: BOUND }, () => connect()));
    const overAgain = await connect();
    assert.ok(await endsWithin(overAgain, 5000));
    assert.ok(refusedBusy(overAgain), `the bound holds again: ${overAgain.closeCode} ${JSON.stringify(overAgain.messages)}`);
    for (const c of again) c.write(frame(hello('stale-token-' + 'y'.repeat(32))));
    for (const c of again) {
      assert.ok(await endsWithin(c, 10_000));
      assert.equal(c.closeCode, 4401, `each waited for its hello: ${JSON.stringify(c.messages).slice(0, 300)}`);
    }
    a.write(frame(JSON.stringify({ type: 'ping' })));
    await a.waitFor((m) => m?.type === 'pong' && a.messages.filter((x: any) => x?.type === 'pong').length === 2);
    assert.equal(a.closeCode, null, 'the accepted session lived through it all');
  } finally {
    for (const c of open) c.destroy();
    await small.stop();
  }
});

test('agent text in the server log: C1 controls, U+2028/U+2029 and bidi controls are written escaped (JSON leaves them raw); what is stored stays as sent', async () => {
  const raw = /[\u0080-\u009f\u2028-\u202e\u2066-\u2069]/;
  const host = await addHost(srv, 'chan-logtext');
  // A drift report whose text holds an 8-bit CSI, NEL, a line separator and a right-to-left override: logged, and stored.
  const what = 'logtext-chain \u009b31mred\u0085 next\u2028line\u2029end\u202edrow';
  const c = await rawConnect(srv.port);
  c.write(frame(hello(host.token)));
  await accepted(c);
  c.write(frame(JSON.stringify({ type: 'report', preflight: [], repairs: [{ at: new Date().toISOString(), what, count: 1 }] })));
  await waitFor('the repair stored', async () => (await hostRow(srv, host.id)).driftrepairs === 1);
  assert.equal((await hostRow(srv, host.id)).lastrepairs[0].what, what, 'stored (and listed) as the agent sent it');
  // An invalid ack on the same session: its reason quotes the VM id it names.
  c.write(frame(JSON.stringify({ type: 'ack', revision: 1, vms: { 'logtext-vm\u009b2J\u2028x': { ok: 'yes' } } })));
  assert.ok(await endsWithin(c, 5000));
  assert.equal(c.closeCode, 1008);
  const lines = await waitFor('both lines logged', () => {
    const ls = srv.output().split('\n').filter((l) => l.includes('logtext-chain') || l.includes('logtext-vm'));
    return ls.length >= 2 ? ls : null;
  }) ?? [];
  for (const l of lines) assert.ok(!raw.test(l), `no raw C1 or line separator in: ${JSON.stringify(l)}`);
  const repairLine = lines.find((l) => l.includes('agent repaired drift'))!;
  assert.ok(repairLine.includes('logtext-chain \\\\u009b31mred\\\\u0085 next\\\\u2028line\\\\u2029end\\\\u202edrow'), `escaped, still readable: ${repairLine}`);
});
