// Behind a reverse proxy (the way to serve the API and console over TLS), every request comes from the
// proxy's address. The login limiter bounds failures per address, so without the client's own address
// 30 failures from anyone locked the console for everyone. `--trust-proxy` names the proxies whose
// X-Forwarded-For / -Proto / -Host are believed; without it those headers are ignored, so a client cannot
// pick an address to dodge the limiter. Two real server processes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startServer, type TestServer } from '../helpers/server.js';
import { login } from '../helpers/session.js';

let proxied: TestServer;
let direct: TestServer;
const password = (s: TestServer) => JSON.parse(fs.readFileSync(path.join(s.dataDir, 'admin-credentials.json'), 'utf8')).password as string;

before(async () => {
  [proxied, direct] = await Promise.all([startServer({ args: ['--trust-proxy', '127.0.0.1/32,::1'] }), startServer()]);
});
after(async () => { await Promise.all([proxied?.stop(), direct?.stop()]); });

/** 30 failed logins (made-up users) as seen from `from`: enough to lock one address. */
async function lockAddress(s: TestServer, from: () => string): Promise<void> {
  for (let i = 0; i < 30; i++) {
    const r = await login(s.url, `nobody-${i}`, 'wrong', {}, { 'x-forwarded-for': from() });
    assert.equal(r.status, 531, JSON.stringify(r.body));
  }
}

test('with --trust-proxy: each client is limited on its own address, and X-Forwarded-Proto https gives a Secure cookie', async () => {
  await lockAddress(proxied, () => '198.51.100.7');
  assert.equal((await login(proxied.url, 'admin', password(proxied), {}, { 'x-forwarded-for': '198.51.100.7' })).status, 429, 'the guessing address is locked');
  // another client behind the proxy (which appends the address it saw; what the client claimed before it does not count)
  const other = await login(proxied.url, 'admin', password(proxied), {}, { 'x-forwarded-for': '198.51.100.7, 203.0.113.9', 'x-forwarded-proto': 'https' });
  assert.equal(other.status, 200, 'another client behind the same proxy is not locked');
  assert.match(other.setCookie[0]!, /; Secure/);
  // a browser page behind the proxy: Origin is the public host the proxy reports
  const page = await login(proxied.url, 'admin', password(proxied), {}, { 'x-forwarded-for': '203.0.113.10', 'x-forwarded-host': 'cloud.example.org', origin: 'https://cloud.example.org', 'x-forwarded-proto': 'https' });
  assert.equal(page.status, 200, JSON.stringify(page.body));
});

test('without it: forwarded headers are ignored — no address to pick, no Secure cookie over plain HTTP', async () => {
  let n = 0;
  await lockAddress(direct, () => `192.0.2.${++n}`);
  assert.equal((await login(direct.url, 'admin', password(direct), {}, { 'x-forwarded-for': '203.0.113.9' })).status, 429, 'a made-up forwarded address does not escape the lock');
  const forged = await login(direct.url, 'admin', password(direct), {}, { origin: 'https://cloud.example.org', 'x-forwarded-host': 'cloud.example.org' });
  assert.equal(forged.status, 401, 'X-Forwarded-Host from anyone does not make another origin ours');
});
