// Agent pieces without a server or kernel: the state file, URL and duration parsing, port comparison,
// reconnecting when another agent keeps taking the session.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadState, saveState } from '../../src/agent/state-file.js';
import { parseDuration } from '../../src/agent/run.js';
import { samePorts } from '../../src/agent/merge.js';
import net, { type AddressInfo } from 'node:net';
import pino from 'pino';
import { WebSocketServer } from 'ws';
import { Agent, agentUrl, parseServers } from '../../src/agent/agent.js';
import { parseListen as parseServerListen } from '../../src/api/serve.js';
import { NullDataplane } from '../../src/agent/null-dataplane.js';
import { simulatedPorts } from '../../src/agent/sim-ports.js';
import { CLOSE_HELD_ELSEWHERE, CLOSE_REPLACED } from '../../src/protocol/index.js';

test('the held state survives a round trip through the state dir; a corrupt file is an error, a missing one is null', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-state-'));
  try {
    assert.equal(await loadState(dir), null);
    const held = { serverUrl: 'http://x', savedAt: 'now', state: { hostId: 'h', revision: 7, vms: [], sets: [{ id: 'sg1v4', family: 4 as const, members: ['10.0.0.1'] }] },
      host: { hostname: 'kvm01', tokenSha256: 'ab'.repeat(32) } };
    await saveState(dir, held);
    assert.deepEqual(await loadState(dir), held);
    assert.deepEqual(fs.readdirSync(dir), ['desired-state.json'], 'no temp file left behind');
    assert.equal(fs.statSync(path.join(dir, 'desired-state.json')).mode & 0o777, 0o600);
    fs.writeFileSync(path.join(dir, 'desired-state.json'), '{"state":');
    await assert.rejects(loadState(dir));
    fs.writeFileSync(path.join(dir, 'desired-state.json'), '{"state":{"revision":"x"}}');
    await assert.rejects(loadState(dir), /not a saved desired state/);
  } finally { fs.rmSync(dir, { recursive: true, force: true }); }
});

test('server URLs and durations', () => {
  assert.equal(agentUrl('http://10.0.0.1:8080'), 'ws://10.0.0.1:8080/agent');
  assert.equal(agentUrl('https://mgmt.example'), 'wss://mgmt.example/agent');
  assert.equal(agentUrl('ws://mgmt:8080/custom'), 'ws://mgmt:8080/custom');
  assert.equal(parseDuration('10s'), 10_000);
  assert.equal(parseDuration('250ms'), 250);
  assert.equal(parseDuration('2m'), 120_000);
  assert.equal(parseDuration('1500'), 1500);
  assert.throws(() => parseDuration('soon'), /not a duration/);
  // flags checked before anything is touched, naming the flag
  assert.deepEqual(parseServers('http://a:8080, ws://b:8080/agent'), ['http://a:8080', 'ws://b:8080/agent']);
  assert.throws(() => parseServers('notaurl'), /--server: "notaurl" is not a URL/);
  assert.throws(() => parseServers('http://a:8080,ftp://b'), /--server: "ftp:\/\/b" must be http, https, ws or wss/);
  assert.deepEqual(parseServerListen('127.0.0.1:8080'), { host: '127.0.0.1', port: 8080 });
  assert.throws(() => parseServerListen('127.0.0.1:99999'), /--listen: the port must be from 1 to 65535/);
});

test('a renamed tap is a port change; the same ports in another order are not', () => {
  const a = { nics: { n1: { device: 'vnet0', bridge: 'cloudbr0' }, n2: { device: 'vnet1', bridge: 'cloudbr0' } }, bridges: { cloudbr0: { uplinks: ['eth0'], unknownTaps: [] } } };
  const b = { nics: { n2: { device: 'vnet1', bridge: 'cloudbr0' }, n1: { device: 'vnet0', bridge: 'cloudbr0' } }, bridges: { cloudbr0: { uplinks: ['eth0'], unknownTaps: [] } } };
  assert.ok(samePorts(a, b));
  const c = { ...a, nics: { ...a.nics, n1: { device: 'vnet7', bridge: 'cloudbr0' } } };
  assert.ok(!samePorts(a, c));
});

/**
 * A stand-in server that welcomes every hello and ends the session 30 ms later with `closeCode`:
 * how many connections an agent makes in `ms`, and what it logged at error level.
 */
async function sessionsEndedWith(closeCode: number, ms: number): Promise<{ connections: number; errors: string[] }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
  let connections = 0;
  wss.on('connection', (ws) => {
    connections++;
    ws.once('message', () => {
      ws.send(JSON.stringify({ type: 'welcome', hostId: 'h', hostName: 'h' }));
      setTimeout(() => ws.close(closeCode, 'ended'), 30);
    });
  });
  const errors: string[] = [];
  const log = pino({ level: 'error' }, { write: (line: string) => { errors.push(JSON.parse(line).msg); } });
  const agent = new Agent({
    server: `http://127.0.0.1:${(wss.address() as AddressInfo).port}`, token: 't', hostname: 'twin', stateDir: null, dataplane: new NullDataplane(),
    discover: async (s) => simulatedPorts(s), preflight: null, reconcileMs: 60_000, log, backoffMinMs: 20, backoffMaxMs: 2000,
  });
  try {
    await agent.start();
    await new Promise((r) => setTimeout(r, ms));
  } finally {
    await agent.stop();
    await new Promise((r) => wss.close(r));
  }
  return { connections, errors };
}

test('an agent taken off its host\'s session again and again says another agent uses its token, and comes back slowly', async () => {
  const displaced = await sessionsEndedWith(CLOSE_REPLACED, 2500);
  assert.ok(displaced.errors.some((m) => /another agent uses this host's token and hostname/.test(m)), displaced.errors.join('; '));
  assert.ok(displaced.connections <= 4, `longest backoff after the second time: ${displaced.connections} connections`);
  const elsewhere = await sessionsEndedWith(CLOSE_HELD_ELSEWHERE, 2500);
  assert.ok(elsewhere.errors.some((m) => /another agent uses this host's token/.test(m)));
  assert.ok(elsewhere.connections <= 4);
  // Twin: sessions ended for another reason (a server shutting down) are neither reported nor slowed.
  const shutdown = await sessionsEndedWith(1001, 2500);
  assert.deepEqual(shutdown.errors, []);
  assert.ok(shutdown.connections >= 8, `reconnects at once: ${shutdown.connections} connections`);
});

test('an agent that cannot reach any server says so, once, with the last error; one that can does not', async () => {
  const lines: { level: number; msg: string; lastError?: string }[] = [];
  const log = pino({ level: 'warn' }, { write: (line: string) => { lines.push(JSON.parse(line)); } });
  const closed = net.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', () => r()));
  const port = (closed.address() as AddressInfo).port;
  await new Promise((r) => closed.close(r));   // nothing listens there now
  const opts = { token: 't', hostname: 'lonely', stateDir: null, discover: async (s: any) => simulatedPorts(s), preflight: null, reconcileMs: 60_000, log, backoffMinMs: 20, backoffMaxMs: 100 };
  const lonely = new Agent({ ...opts, server: `http://127.0.0.1:${port}`, dataplane: new NullDataplane() });
  await lonely.start();
  await new Promise((r) => setTimeout(r, 1500));
  await lonely.stop();
  const said = lines.filter((l) => /no server could be reached/.test(l.msg));
  assert.equal(said.length, 1, 'once (a minute), not per attempt');
  assert.match(said[0].lastError ?? '', /ECONNREFUSED/);
  // Twin: a server that welcomes it.
  lines.length = 0;
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
  wss.on('connection', (ws) => ws.once('message', () => ws.send(JSON.stringify({ type: 'welcome', hostId: 'h', hostName: 'h' }))));
  const fine = new Agent({ ...opts, server: `http://127.0.0.1:${(wss.address() as AddressInfo).port}`, dataplane: new NullDataplane() });
  await fine.start();
  await new Promise((r) => setTimeout(r, 500));
  await fine.stop();
  await new Promise((r) => wss.close(r));
  assert.deepEqual(lines.filter((l) => /no server could be reached/.test(l.msg)), []);
});

test('ruleset watcher: a transaction counts when it touched a palisade table and its writer is not the agent\'s', async () => {
  const { foreignTransactions } = await import('../../src/agent/link-watch.js');
  const ours = new Set([100]);
  const count = foreignTransactions((pid) => ours.has(pid));
  const feed = (lines: string[]) => lines.map(count).some(Boolean);
  // the agent's own write: not counted
  assert.equal(feed(['add rule inet palisade to-x ip saddr 10.0.0.1 accept', '# new generation 5 by process 100 (nft)']), false);
  // someone else's flush of everything, ours included: counted
  assert.equal(feed(['delete table inet foreign', 'delete table inet palisade', '# new generation 6 by process 4242 (nft)']), true);
  // someone else's change to another table only (kube-proxy, Docker): not counted
  assert.equal(feed(['add rule ip filter FORWARD accept', '# new generation 7 by process 4243 (iptables-nft)']), false);
  // a bridge-table edit by someone else: counted; and the next transaction starts clean
  assert.equal(feed(['delete element bridge palisade own4 { "vnet0" . 10.0.0.1 }', '# new generation 8 by process 4244 (nft)']), true);
  assert.equal(feed(['# new generation 9 by process 4245 (nft)']), false);
});
