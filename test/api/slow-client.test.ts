// A client that sends its request a byte at a time must not hold a connection for ever (each one a file
// descriptor: enough of them and the server accepts no API call and no agent). The server is built
// in-process with a short request timeout; the client is a raw socket. Timing bounds here are generous
// (the server must close within 20 s a request it had to finish in 1.5 s): no tight assertions.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import pino from 'pino';
import type { FastifyInstance } from 'fastify';
import { openStore, type Db } from '../../src/store/db.js';
import { bootstrap } from '../../src/api/bootstrap.js';
import { buildServer } from '../../src/api/server.js';
import { REQUEST_TIMEOUT_MS } from '../../src/api/limits.js';

let dir: string;
let db: Db;
let app: FastifyInstance;
let port: number;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-slow-'));
  db = await openStore({ kind: 'sqlite', file: path.join(dir, 'p.db') });
  await bootstrap(db);
  app = await buildServer({ db, sink: { publish() {} }, log: pino({ level: 'silent' }), console: false, requestTimeoutMs: 1500 });
  await app.listen({ host: '127.0.0.1', port: 0 });
  port = (app.server.address() as net.AddressInfo).port;
});
after(async () => {
  await app?.close();
  await db?.destroy();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Opens a connection, sends `head`, then one byte of `drip` every `everyMs`; resolves with what the server sent when it closes (or null after `giveUpMs`). */
function slowRequest(head: string, drip: string, everyMs: number, giveUpMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    let i = 0;
    s.on('data', (d) => { got += d; });
    s.on('error', () => {});
    const timer = setInterval(() => { if (i < drip.length) s.write(drip[i++]!); }, everyMs);
    const giveUp = setTimeout(() => { clearInterval(timer); s.destroy(); resolve(null); }, giveUpMs);
    s.on('close', () => { clearInterval(timer); clearTimeout(giveUp); resolve(got); });
    s.write(head);
  });
}

test('a request that does not arrive whole within the bound is answered 408 and its connection closed', async () => {
  assert.ok(REQUEST_TIMEOUT_MS > 0 && REQUEST_TIMEOUT_MS <= 60_000, 'the real server has a bound too');
  const body = 'command=listZones&response=json&' + 'x'.repeat(200);
  // headers complete, the body a byte every 300 ms (it would take a minute)
  const slowBody = await slowRequest(`POST /client/api HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\n\r\n`, body, 300, 20_000);
  assert.notEqual(slowBody, null, 'the server closed the connection');
  assert.match(slowBody!, /^HTTP\/1\.1 408 /);
  // headers never finished
  const slowHeaders = await slowRequest('GET /client/api?command=listZones HTTP/1.1\r\n', 'X-Slow: ' + 'a'.repeat(200), 300, 20_000);
  assert.notEqual(slowHeaders, null, 'the server closed the connection');
  // the twin: a whole request within the bound is answered
  const quick = await slowRequest(`POST /client/api HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`, '', 1000, 20_000);
  assert.match(quick!, /^HTTP\/1\.1 401 /, 'answered (unsigned: 401)');
});

test('a request Node cannot parse (raw non-UTF-8 bytes in the URL, headers too large) gets a CloudStack-shaped error; its encoded twin is an API call', async () => {
  const raw = (bytes: Buffer) => new Promise<string>((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    s.on('data', (d) => { got += d; });
    s.on('error', () => {});
    s.on('close', () => resolve(got));
    s.write(bytes);
  });
  const bad = await raw(Buffer.concat([Buffer.from('GET /client/api?command=listZones&response=json&x='), Buffer.from([0xff, 0xfe]), Buffer.from(' HTTP/1.1\r\nHost: t\r\n\r\n')]));
  assert.match(bad, /^HTTP\/1\.1 400 /);
  assert.deepEqual(JSON.parse(bad.split('\r\n\r\n')[1]!), { errorresponse: { uuidList: [], errorcode: 400, errortext: 'Malformed request' } });
  const big = await raw(Buffer.from(`GET /client/api?command=listZones HTTP/1.1\r\nHost: t\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`));
  assert.match(big, /^HTTP\/1\.1 431 /);
  assert.equal(JSON.parse(big.split('\r\n\r\n')[1]!).errorresponse.errorcode, 431);
  const encoded = await raw(Buffer.from('GET /client/api?command=listZones&response=json&x=%FF%FE HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n'));
  assert.match(encoded, /^HTTP\/1\.1 401 /, 'percent-encoded, the same bytes reach the API (unsigned: 401)');
  assert.match(encoded, /"listzonesresponse"/);
});

test('while the cluster finds the database unreachable, calls are answered 530 at once, not after waiting on the store', async () => {
  let reachable = false;
  const reads: string[] = [];
  // every read of the store is counted: the call must not reach it
  const selectFrom = db.selectFrom.bind(db);
  (db as { selectFrom: unknown }).selectFrom = (...args: Parameters<Db['selectFrom']>) => { reads.push(String(args[0])); return selectFrom(...args); };
  const cut = await buildServer({ db, sink: { publish() {} }, log: pino({ level: 'silent' }), console: false, storeReachable: () => reachable });
  try {
    const r = await cut.inject({ method: 'GET', url: '/client/api?command=listZones&response=json' });
    assert.equal(r.statusCode, 530);
    assert.match(JSON.parse(r.body).listzonesresponse.errortext, /cannot reach its database; nothing was changed/);
    assert.deepEqual(reads, [], 'the store was not asked');
    // the twin: reachable again, the same call goes to the store (unsigned here: 401 after the key lookup)
    reachable = true;
    const back = await cut.inject({ method: 'GET', url: '/client/api?command=listZones&response=json&apiKey=nokey&signature=x' });
    assert.equal(back.statusCode, 401);
    assert.ok(reads.length > 0, 'the store was asked');
  } finally {
    delete (db as { selectFrom?: unknown }).selectFrom;
    await cut.close();
  }
});
