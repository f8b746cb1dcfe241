// Connections that hold no request (silent since their accept, or idle between keep-alive requests) are
// bounded per server (src/api/idle-connections.ts), against the REAL server process: past the bound the
// connection idle longest is closed, so a flood of silent connections cannot lock an honest client out,
// and upgraded agent connections and requests in flight are never counted or closed. Counts are read from
// the server's own metrics; every connection here is raw and sequential (the server accepts in order),
// and every API call asks `Connection: close`, so no pooled connection the test does not know of is idle.
// (The silent connections live about a second, well within the 10 s the server gives a request head.)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { once } from 'node:events';
import pino from 'pino';
import { startServer, type TestServer } from '../helpers/server.js';
import { runPalisade } from '../helpers/palisade.js';
import { frame, rawConnect, type RawConnection } from '../helpers/ws-raw.js';
import { signParams, formatExpires } from '../../src/api/signing.js';
import { PROTOCOL_VERSION } from '../../src/protocol/index.js';
import { openStore } from '../../src/store/db.js';
import { buildServer } from '../../src/api/server.js';
import { HEADERS_TIMEOUT_MS, KEEP_ALIVE_TIMEOUT_MS, REQUEST_TIMEOUT_MS } from '../../src/api/limits.js';
import { waitFor } from '../agent/helpers.js';

const BOUND = 20;
let srv: TestServer;

before(async () => {
  srv = await startServer({ args: ['--idle-connections-max', String(BOUND)] });
  // The helper's start-up probe (fetch) leaves a pooled keep-alive connection, idle on the server: a
  // request the server refuses with `Connection: close` (headers over 16 KiB: 431) makes fetch drop the
  // pooled connection it was sent on, until none is left.
  await waitFor('no pooled connection of this process left idle on the server', async () => {
    const r = await fetch(srv.url, { headers: { 'x-big': 'a'.repeat(20_000) } });
    await r.text();
    assert.equal(r.status, 431);
    return (await idleMetrics()).idle === 0;
  });
});
after(async () => { await srv?.stop(); });

/** A raw client connection: what it received, and whether the server ended it. */
interface Conn { socket: net.Socket; received: string; closed: boolean; ended: Promise<void> }

async function connect(): Promise<Conn> {
  const socket = net.connect(srv.port, '127.0.0.1');
  const c: Conn = { socket, received: '', closed: false, ended: once(socket, 'close').then(() => { c.closed = true; }) };
  socket.on('data', (d) => { c.received += d; });
  socket.on('error', () => {});
  await once(socket, 'connect');
  return c;
}

/** Send one whole request on a new connection (it asks `Connection: close`); the server's answer. */
async function request(head: string, body = ''): Promise<{ status: number; body: string }> {
  const c = await connect();
  c.socket.write(`${head}\r\nHost: 127.0.0.1\r\nConnection: close\r\n${body ? `Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\n` : ''}\r\n${body}`);
  await c.ended;
  const m = /^HTTP\/1\.1 (\d{3})[^]*?\r\n\r\n([^]*)$/.exec(c.received);
  assert.ok(m, `an HTTP answer: ${JSON.stringify(c.received.slice(0, 200))}`);
  return { status: Number(m[1]), body: m[2]! };
}

/** A signed API call (what an honest CloudStack client sends), on a connection of its own. */
async function call(command: string, params: Record<string, string> = {}): Promise<{ status: number; body: any }> {
  const p: Record<string, string> = { command, response: 'json', apiKey: srv.apikey, signatureVersion: '3', expires: formatExpires(new Date(Date.now() + 600_000)), ...params };
  p.signature = signParams(p, srv.secretkey);
  const r = await request('POST /client/api HTTP/1.1', new URLSearchParams(p).toString());
  return { status: r.status, body: JSON.parse(r.body) };
}

/** The server's idle connection gauge and shed counter (read while the scrape's own request is in flight: not counted). */
async function idleMetrics(): Promise<{ idle: number; shed: number }> {
  const r = await request('GET /metrics HTTP/1.1');
  assert.equal(r.status, 200);
  const value = (name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(r.body)?.[1]);
  return { idle: value('palisade_api_idle_connections'), shed: value('palisade_api_idle_connections_shed_total') };
}

const hello = (token: string) => JSON.stringify({ type: 'hello', version: PROTOCOL_VERSION, token, hostname: 'idle-test', revision: null });

test('past the bound the connection longest without a whole request is closed (one dripping its body, a keep-alive one between requests, then silent ones), a fresh API call succeeds; agent connections are never counted or closed; below the bound nothing is closed', async () => {
  // An agent session (upgraded, then accepted).
  const added = await call('addHost', { name: 'idle-host', hypervisor: 'KVM' });
  assert.equal(added.status, 200, JSON.stringify(added.body));
  const agent = await rawConnect(srv.port);
  agent.write(frame(hello(added.body.addhostresponse.host[0].token)));
  await agent.waitFor((m) => m?.type === 'welcome');

  // A request whose head is in and whose body comes slowly (within the 30 s request bound): counted, as
  // a connection without a whole request (a client dripping its body must not escape the bound).
  const body = 'command=listZones&response=json';
  const slow = await connect();
  slow.socket.write(`POST /client/api HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 5)}`);

  // More upgraded agent connections than the bound, awaiting their hello (the agent channel's own bound
  // covers them): none is idle for HTTP.
  const pending: RawConnection[] = [];
  for (let i = 0; i < BOUND + 5; i++) pending.push(await rawConnect(srv.port));
  await waitFor('only the request dripping its body is counted', async () => (await idleMetrics()).idle === 1);
  assert.equal((await idleMetrics()).shed, 0, 'nothing shed: upgraded connections are not counted');
  assert.ok(pending.every((c) => c.closeCode === null), 'every upgraded connection is open');
  for (const c of pending) { c.destroy(); await c.ended; }

  // Below the bound: the dripping one, a keep-alive connection idle after its request, then silent ones, BOUND - 1 in all;
  // the scrape's connection makes BOUND while it has not sent its request: nothing is closed.
  const keepAlive = await connect();
  keepAlive.socket.write('GET /client/api?command=listZones&response=json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
  await waitFor('the keep-alive request answered', () => /\r\n\r\n\{/.test(keepAlive.received));
  const silent: Conn[] = [];
  for (let i = 0; i < BOUND - 3; i++) silent.push(await connect());
  const below = await idleMetrics();
  assert.deepEqual(below, { idle: BOUND - 1, shed: 0 }, 'the dripping, keep-alive and silent connections are counted; none is closed');
  assert.ok(!slow.closed && !keepAlive.closed && silent.every((c) => !c.closed), 'every connection is open');

  // Past the bound: 4 more silent connections close the 3 longest without a whole request: the
  // dripping one (connected first), the keep-alive one, the first silent one.
  const later: Conn[] = [];
  for (let i = 0; i < 4; i++) later.push(await connect());
  for (const c of [slow, keepAlive, silent[0]!]) await c.ended;
  assert.equal(slow.received, '', 'the dripping request is closed without an answer');
  assert.equal(silent[0]!.received, '', 'a shed connection is closed without an answer');

  // An honest client connecting now (the bound full of silent connections) is served: its connection
  // closes the one idle longest, not itself.
  const zones = await call('listZones');
  assert.equal(zones.status, 200, JSON.stringify(zones.body));
  assert.ok(zones.body.listzonesresponse.zone.length >= 1);
  await silent[1]!.ended;
  assert.deepEqual(await idleMetrics(), { idle: BOUND - 1, shed: 4 });
  assert.ok(silent.slice(2).every((c) => !c.closed) && later.every((c) => !c.closed), 'the newer idle connections are open');

  // The agent session was not touched.
  agent.write(frame(JSON.stringify({ type: 'ping' })));
  await agent.waitFor((m) => m?.type === 'pong');
  assert.equal(agent.closeCode, null);
  await waitFor('the shedding logged', () => srv.output().includes('connection closed: too many connections without a request'));

  for (const c of [...silent, ...later]) c.socket.destroy();
  agent.destroy();
  await agent.ended;
});

test('a connection whose answer went out before its body arrived is counted again once the body is in: a request answered unread, its body sent afterwards, does not let the keep-alive connection escape the bound', async () => {
  await waitFor('no connection of earlier tests counted', async () => (await idleMetrics()).idle === 0);
  // A route that answers without reading the body (no such route: 404), on a keep-alive connection.
  const c = await connect();
  c.socket.write('POST /no-such-route HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 10\r\n\r\n');
  await waitFor('the request answered before its body', () => /^HTTP\/1\.1 404/.test(c.received) && /\r\n\r\n[^]+/.test(c.received));
  assert.equal((await idleMetrics()).idle, 1, 'answered, its body still to come: counted');
  c.socket.write('a=12345678');
  // The body's end comes after the answer: the connection is idle between keep-alive requests, still counted.
  // (The body is written before the scrape's connection is opened: the server reads it first. Were it read
  // later, this would pass on the code before the fix, never fail on the fixed one.)
  assert.ok(!c.closed, 'the keep-alive connection is open');
  assert.equal((await idleMetrics()).idle, 1, 'idle between requests, its late body in: counted');
  c.socket.destroy();
  await c.ended;
});

test('a pipelined request whose body is still arriving is counted: a whole request first does not let the body behind it drip uncounted', async () => {
  await waitFor('no connection of earlier tests counted', async () => (await idleMetrics()).idle === 0);
  const c = await connect();
  const body = 'command=listZones&response=json';
  c.socket.write('GET /client/api?command=listZones&response=json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'
    + `POST /client/api HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 5)}`);
  await waitFor('the first request answered', () => /\r\n\r\n\{/.test(c.received));
  assert.equal((await idleMetrics()).idle, 1, 'the second request\'s body still to come: counted');
  c.socket.write(body.slice(5));
  await waitFor('the second request answered', () => (c.received.match(/HTTP\/1\.1 \d{3}/g) ?? []).length === 2);
  c.socket.destroy();
  await c.ended;
});

test('--idle-connections-max must be a whole number, at least 1: anything else is refused at start, before the data dir is created', async () => {
  const dataDir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-idle-flag-')), 'data');
  try {
    await Promise.all(['0', '1.5', 'many'].map(async (bad) => {
      const r = await runPalisade(['server', '--listen', '127.0.0.1:1', '--data-dir', dataDir, '--idle-connections-max', bad]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /--idle-connections-max expects a whole number of connections, at least 1/);
    }));
    assert.equal(fs.existsSync(dataDir), false, 'no data dir was created');
  } finally {
    fs.rmSync(path.dirname(dataDir), { recursive: true, force: true });
  }
});

test('the server\'s time bounds: a request head within HEADERS_TIMEOUT_MS (shorter than the whole request\'s), keep-alive idle KEEP_ALIVE_TIMEOUT_MS', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-idle-'));
  const db = await openStore({ kind: 'sqlite', file: path.join(dir, 'p.db') });
  const app = await buildServer({ db, sink: { publish() {} }, log: pino({ level: 'silent' }), console: false });
  try {
    assert.ok(HEADERS_TIMEOUT_MS < REQUEST_TIMEOUT_MS);
    assert.equal(app.server.headersTimeout, HEADERS_TIMEOUT_MS);
    assert.equal(app.server.requestTimeout, REQUEST_TIMEOUT_MS);
    assert.equal(app.server.keepAliveTimeout, KEEP_ALIVE_TIMEOUT_MS);
  } finally {
    await app.close();
    await db.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
