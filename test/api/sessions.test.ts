// Username/password sessions against the real server process: login/logout, the cookie + sessionkey
// pair, cross-origin refusal, expiry, passwords (hash, change, reset), createUser, and the bound on
// password guessing. Every accepted case has its refused twin.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import net from 'node:net';
import Database from 'better-sqlite3';
import { startServer, type TestServer } from '../helpers/server.js';
import { runPalisade } from '../helpers/palisade.js';
import { login, mustLogin, rawRequest, sessionCall, type SessionCreds } from '../helpers/session.js';
import { signParams, formatExpires } from '../../src/api/signing.js';

let s: TestServer;
let adminPassword: string;
let d1: string;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const zones = (r: { body: any }) => r.body?.listzonesresponse?.zone?.length;

before(async () => {
  s = await startServer();
  adminPassword = JSON.parse(fs.readFileSync(path.join(s.dataDir, 'admin-credentials.json'), 'utf8')).password;
  d1 = (await s.call('createDomain', { name: 'd1' })).body.createdomainresponse.domain.id;
  for (const [u, domainid] of [['alice', d1], ['bob', d1], ['mallory', d1]] as const) {
    const r = await s.call('createAccount', { username: u, password: `pw-${u}-secret`, email: `${u}@example.org`, firstname: u, lastname: 'T', domainid });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  }
});
after(async () => { await s?.stop(); });

test('first start writes an admin password; login answers like CloudStack with an HttpOnly, SameSite cookie', async () => {
  const creds = JSON.parse(fs.readFileSync(path.join(s.dataDir, 'admin-credentials.json'), 'utf8'));
  assert.equal(creds.username, 'admin');
  assert.ok(typeof creds.password === 'string' && creds.password.length >= 16);
  assert.equal(fs.statSync(path.join(s.dataDir, 'admin-credentials.json')).mode & 0o777, 0o600);
  const r = await login(s.url, 'admin', adminPassword);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const lr = r.body.loginresponse;
  assert.equal(lr.username, 'admin');
  assert.equal(lr.account, 'admin');
  assert.equal(lr.type, '1');
  assert.equal(lr.timeout, 1800);
  assert.match(lr.userid, /^[0-9a-f-]{36}$/);
  assert.ok(lr.sessionkey && lr.sessionkey.length >= 20);
  assert.equal(r.setCookie.length, 2);
  assert.match(r.setCookie[0]!, /^JSESSIONID=[A-Za-z0-9_-]{40,}; Path=\/client; HttpOnly; SameSite=Strict$/);
  assert.equal(r.headers.get('cache-control'), 'no-store');
  assert.ok(!r.setCookie[0]!.includes(lr.sessionkey), 'the session cookie is not the sessionkey');
  // As CloudStack, the sessionkey also comes as a cookie (cloudmonkey reads it there), HttpOnly and SameSite;
  // it is never read back: with both cookies but no sessionkey parameter a call is refused.
  assert.equal(r.setCookie[1], `sessionkey=${lr.sessionkey}; Path=/client; HttpOnly; SameSite=Strict`);
  const jsession = /^JSESSIONID=([^;]+)/.exec(r.setCookie[0]!)![1];
  const cookiesOnly = await sessionCall(s.url, { cookie: `${jsession}; sessionkey=${lr.sessionkey}`, sessionkey: null }, 'listZones');
  assert.equal(cookiesOnly.status, 401);
  assert.equal(zones(await sessionCall(s.url, { cookie: `${jsession}; sessionkey=${lr.sessionkey}`, sessionkey: lr.sessionkey }, 'listZones')), 1, 'the way cloudmonkey calls');
  // The same user's API keys still work (signed calls are unaffected).
  assert.equal((await s.call('listZones')).status, 200);
});

test('wrong password and unknown user: 531, no cookie, nothing learnt about which one it was', async () => {
  const wrong = await login(s.url, 'alice', 'not-her-password', { domain: '/d1' });
  const unknown = await login(s.url, 'nobody', 'whatever', { domain: '/d1' });
  for (const r of [wrong, unknown]) {
    assert.equal(r.status, 531);
    assert.equal(r.setCookie.length, 0);
    assert.match(r.body.loginresponse.errortext, /^Failed to authenticate user \S+ in domain \S+; please provide valid credentials$/);
  }
  assert.equal(wrong.body.loginresponse.errortext.replace('alice', 'X'), unknown.body.loginresponse.errortext.replace('nobody', 'X'));
  assert.ok(!wrong.body.loginresponse.errortext.includes(d1), 'the domain\'s uuid is not told to someone not logged in');
  // The right password in the wrong domain fails too; the right domain (path, ROOT/ spelling, or id) works.
  assert.equal((await login(s.url, 'alice', 'pw-alice-secret')).status, 531);
  assert.equal((await login(s.url, 'alice', 'pw-alice-secret', { domain: '/nope' })).status, 531);
  assert.equal((await login(s.url, 'alice', 'pw-alice-secret', { domain: 'd1' })).status, 200);
  assert.equal((await login(s.url, 'alice', 'pw-alice-secret', { domain: 'ROOT/d1' })).status, 200);
  assert.equal((await login(s.url, 'alice', 'pw-alice-secret', { domainid: d1 })).status, 200);
  assert.equal((await login(s.url, 'alice', 'pw-alice-secret', { domainid: 'not-a-uuid' })).status, 401);
  // An empty password never matches.
  assert.equal((await login(s.url, 'alice', '', { domain: '/d1' })).status, 531);
});

test('login only over POST: a password never travels in a URL', async () => {
  const r = await fetch(`${s.url}?command=login&response=json&username=admin&password=${encodeURIComponent(adminPassword)}`);
  assert.equal(r.status, 405);
  assert.match((await r.json()).loginresponse.errortext, /POST/);
  assert.equal(r.headers.getSetCookie().length, 0);
});

test('a session call needs the cookie AND the matching sessionkey', async () => {
  const a = await mustLogin(s.url, 'alice', 'pw-alice-secret', { domain: '/d1' });
  const b = await mustLogin(s.url, 'bob', 'pw-bob-secret', { domain: '/d1' });
  assert.equal(zones(await sessionCall(s.url, a, 'listZones')), 1);
  const groups = await sessionCall(s.url, a, 'listSecurityGroups');
  assert.equal(groups.status, 200);
  assert.deepEqual(groups.body.listsecuritygroupsresponse.securitygroup.map((g: any) => g.account), ['alice'], 'the session acts as alice, and only sees hers');
  const refused = [
    await sessionCall(s.url, { cookie: a.cookie, sessionkey: null }, 'listZones'),                 // no sessionkey
    await sessionCall(s.url, { sessionkey: a.sessionkey }, 'listZones'),                           // no cookie
    await sessionCall(s.url, { cookie: a.cookie, sessionkey: 'forged' + a.sessionkey }, 'listZones'),
    await sessionCall(s.url, { cookie: a.cookie, sessionkey: b.sessionkey }, 'listZones'),          // another session's key
    await sessionCall(s.url, { cookie: 'x' + a.cookie, sessionkey: a.sessionkey }, 'listZones'),    // forged cookie
    await sessionCall(s.url, { cookie: '', sessionkey: a.sessionkey }, 'listZones'),
  ];
  for (const r of refused) {
    assert.equal(r.status, 401, JSON.stringify(r.body));
    assert.equal(r.body.listzonesresponse.errortext, 'unable to verify user credentials');
  }
  // The refusals did not end the real session.
  assert.equal(zones(await sessionCall(s.url, a, 'listZones')), 1);
  // A cookie planted ahead of ours (another page on this host can set `JSESSIONID=x; Path=/client/api`,
  // which the browser sends first) does not lock the user out: the session is the one whose key is presented.
  assert.equal(zones(await sessionCall(s.url, { cookie: `planted; JSESSIONID=${a.cookie}`, sessionkey: a.sessionkey }, 'listZones')), 1);
  assert.equal(zones(await sessionCall(s.url, { cookie: `${b.cookie}; JSESSIONID=${a.cookie}`, sessionkey: a.sessionkey }, 'listZones')), 1);
  const planted = await sessionCall(s.url, { cookie: `planted; JSESSIONID=${a.cookie}`, sessionkey: a.sessionkey }, 'listSecurityGroups');
  assert.deepEqual(planted.body.listsecuritygroupsresponse.securitygroup.map((g: any) => g.account), ['alice'], 'still alice');
  // Its twin: the planted cookie alone, or beside another session's cookie with the wrong key, is refused.
  assert.equal((await sessionCall(s.url, { cookie: 'planted', sessionkey: a.sessionkey }, 'listZones')).status, 401);
  assert.equal((await sessionCall(s.url, { cookie: `planted; JSESSIONID=${b.cookie}`, sessionkey: a.sessionkey }, 'listZones')).status, 401);
  // A session answer is never cached.
  assert.equal((await sessionCall(s.url, a, 'listZones')).headers.get('cache-control'), 'no-store');
});

test('cross-origin: a request from another site cannot use a session, nor log in', async () => {
  const a = await mustLogin(s.url, 'alice', 'pw-alice-secret', { domain: '/d1' });
  const host = new URL(s.url).host;
  assert.equal((await sessionCall(s.url, a, 'listZones', {}, { origin: `http://${host}` })).status, 200, 'same origin');
  assert.equal((await sessionCall(s.url, a, 'listZones', {}, { 'sec-fetch-site': 'same-origin' })).status, 200, 'same origin (fetch metadata)');
  for (const headers of <Record<string, string>[]>[{ origin: 'http://evil.example' }, { origin: `http://${host}.evil.example` }, { origin: 'null' },
    { origin: `https://evil.example`, 'sec-fetch-site': 'cross-site' }, { 'sec-fetch-site': 'cross-site' }, { 'sec-fetch-site': 'same-site' }]) {
    const r = await sessionCall(s.url, a, 'createSecurityGroup', { name: `csrf-${Object.values(headers).join('')}` }, headers);
    assert.equal(r.status, 401, JSON.stringify(headers));
    assert.match(r.body.createsecuritygroupresponse.errortext, /another origin/);
    const l = await login(s.url, 'alice', 'pw-alice-secret', { domain: '/d1' }, headers);
    assert.equal(l.status, 401, `login ${JSON.stringify(headers)}`);
    assert.equal(l.setCookie.length, 0);
  }
  const names = (await sessionCall(s.url, a, 'listSecurityGroups')).body.listsecuritygroupsresponse.securitygroup.map((g: any) => g.name);
  assert.deepEqual(names, ['default'], 'no cross-origin request created anything');
});

test('logout ends the session: the old cookie and sessionkey then fail; logout needs the sessionkey', async () => {
  const a = await mustLogin(s.url, 'alice', 'pw-alice-secret', { domain: '/d1' });
  const other = await mustLogin(s.url, 'alice', 'pw-alice-secret', { domain: '/d1' });
  const forged = await sessionCall(s.url, { cookie: a.cookie, sessionkey: 'wrong' }, 'logout');
  assert.equal(forged.status, 401, 'a logout without the sessionkey is refused');
  assert.equal(zones(await sessionCall(s.url, a, 'listZones')), 1, 'and the session lives on');
  const out = await sessionCall(s.url, a, 'logout');
  assert.equal(out.status, 200);
  assert.deepEqual(out.body, { logoutresponse: { description: 'success' } });
  assert.match(out.headers.getSetCookie()[0] ?? '', /^JSESSIONID=; .*Max-Age=0/);
  const after = await sessionCall(s.url, a, 'listZones');
  assert.equal(after.status, 401);
  assert.equal(zones(await sessionCall(s.url, other, 'listZones')), 1, 'another session of the same user is untouched');
  // Logging out twice, or without a session, is harmless.
  assert.equal((await sessionCall(s.url, a, 'logout')).status, 200);
  // Behind a planted cookie, logout still finds and ends the session its key proves.
  const c = await mustLogin(s.url, 'alice', 'pw-alice-secret', { domain: '/d1' });
  const withPlanted = { cookie: `planted; JSESSIONID=${c.cookie}`, sessionkey: c.sessionkey };
  assert.equal((await sessionCall(s.url, { ...withPlanted, sessionkey: 'wrong' }, 'logout')).status, 401, 'not without its key');
  assert.equal((await sessionCall(s.url, withPlanted, 'logout')).status, 200);
  assert.equal((await sessionCall(s.url, c, 'listZones')).status, 401, 'that session is over');
});

test('sessions are stored as digests only', async () => {
  const a = await mustLogin(s.url, 'bob', 'pw-bob-secret', { domain: '/d1' });
  const db = new Database(path.join(s.dataDir, 'palisade.db'), { readonly: true, fileMustExist: true });
  try {
    const rows = db.prepare('select token_hash, key_hash from sessions').all() as { token_hash: string; key_hash: string }[];
    assert.ok(rows.length >= 1);
    const dump = JSON.stringify(rows);
    assert.ok(!dump.includes(a.cookie) && !dump.includes(a.sessionkey));
    const pw = db.prepare("select password_hash from users where username = 'bob'").get() as { password_hash: string };
    assert.match(pw.password_hash, /^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
    assert.ok(!pw.password_hash.includes('pw-bob-secret'));
  } finally { db.close(); }
});

test('passwords: your own needs the current one; a change ends your other sessions; admins reset without it', async () => {
  const first = await mustLogin(s.url, 'bob', 'pw-bob-secret', { domain: '/d1' });
  const second = await mustLogin(s.url, 'bob', 'pw-bob-secret', { domain: '/d1' });
  const me = (await sessionCall(s.url, first, 'listUsers')).body.listusersresponse.user[0];
  assert.equal(me.username, 'bob');
  const noCurrent = await sessionCall(s.url, first, 'updateUser', { id: me.id, password: 'new-bob-pass' });
  assert.equal(noCurrent.status, 431);
  assert.equal(noCurrent.body.updateuserresponse.errortext, 'To set a new password the current password must be provided.');
  const badCurrent = await sessionCall(s.url, first, 'updateUser', { id: me.id, password: 'new-bob-pass', currentpassword: 'guess' });
  assert.equal(badCurrent.status, 431);
  assert.equal(badCurrent.body.updateuserresponse.errortext, 'Current password is incorrect.');
  assert.equal((await login(s.url, 'bob', 'new-bob-pass', { domain: '/d1' })).status, 531, 'refused changes changed nothing');
  const blank = await sessionCall(s.url, first, 'updateUser', { id: me.id, password: '   ', currentpassword: 'pw-bob-secret' });
  assert.equal(blank.status, 431);
  const changed = await sessionCall(s.url, first, 'updateUser', { id: me.id, password: 'new-bob-pass', currentpassword: 'pw-bob-secret' });
  assert.equal(changed.status, 200, JSON.stringify(changed.body));
  assert.equal(changed.body.updateuserresponse.user.username, 'bob');
  assert.equal(zones(await sessionCall(s.url, first, 'listZones')), 1, 'the session that changed it lives on');
  assert.equal((await sessionCall(s.url, second, 'listZones')).status, 401, 'the other session ended');
  assert.equal((await login(s.url, 'bob', 'pw-bob-secret', { domain: '/d1' })).status, 531, 'old password refused');
  assert.equal((await login(s.url, 'bob', 'new-bob-pass', { domain: '/d1' })).status, 200, 'new password works');
  // Another user may not change bob's password; the root admin may, without knowing it.
  const alice = await mustLogin(s.url, 'alice', 'pw-alice-secret', { domain: '/d1' });
  const denied = await sessionCall(s.url, alice, 'updateUser', { id: me.id, password: 'alice-was-here', currentpassword: 'pw-alice-secret' });
  assert.equal(denied.status, 531);
  const reset = await s.call('updateUser', { id: me.id, password: 'reset-by-admin' });
  assert.equal(reset.status, 200, JSON.stringify(reset.body));
  assert.equal((await sessionCall(s.url, first, 'listZones')).status, 401, 'an admin reset ends all of bob\'s sessions');
  assert.equal((await login(s.url, 'bob', 'reset-by-admin', { domain: '/d1' })).status, 200);
});

test('createUser adds a user with a password to an existing account; tenants cannot call it', async () => {
  const r = await s.call('createUser', { account: 'alice', domainid: d1, username: 'alice2', password: 'alice2-secret', firstname: 'A', lastname: 'Two', email: 'a2@example.org' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const u = r.body.createuserresponse.user;
  assert.equal(u.username, 'alice2');
  assert.equal(u.account, 'alice');
  const a2 = await mustLogin(s.url, 'alice2', 'alice2-secret', { domain: '/d1' });
  const groups = (await sessionCall(s.url, a2, 'listSecurityGroups')).body.listsecuritygroupsresponse.securitygroup;
  assert.deepEqual(groups.map((g: any) => g.account), ['alice'], 'the new user acts for its account');
  const dup = await s.call('createUser', { account: 'alice', domainid: d1, username: 'alice2', password: 'x', firstname: 'A', lastname: 'B' });
  assert.equal(dup.status, 431);
  const noAcct = await s.call('createUser', { account: 'ghost', domainid: d1, username: 'g', password: 'x', firstname: 'A', lastname: 'B' });
  assert.equal(noAcct.status, 431);
  const byTenant = await sessionCall(s.url, a2, 'createUser', { account: 'alice', username: 'alice3', password: 'x', firstname: 'A', lastname: 'B' });
  assert.equal(byTenant.status, 432);
  assert.equal((await login(s.url, 'alice3', 'x', { domain: '/d1' })).status, 531);
  const apis = (await sessionCall(s.url, a2, 'listApis')).body.listapisresponse.api.map((x: any) => x.name);
  assert.ok(apis.includes('login') && apis.includes('logout') && apis.includes('updateUser') && !apis.includes('createUser'));
});

test('password guessing is bounded per user and address: 429 with Retry-After, even for the right password', async () => {
  // usernames are found ignoring case, so guesses under other spellings count against the same user
  for (let i = 0; i < 5; i++) assert.equal((await login(s.url, ['mallory', 'MALLORY', 'Mallory'][i % 3]!, `guess-${i}`, { domain: '/d1' })).status, 531, `guess ${i}`);
  const locked = await login(s.url, 'mallory', 'pw-mallory-secret', { domain: '/d1' });
  assert.equal(locked.status, 429, JSON.stringify(locked.body));
  assert.match(locked.body.loginresponse.errortext, /Too many failed login attempts; try again in \d+ seconds/);
  assert.ok(Number(locked.headers.get('retry-after')) > 0);
  assert.equal(locked.setCookie.length, 0);
  // Parallel guesses cannot slip past the bound either.
  const burst = await Promise.all(Array.from({ length: 5 }, (_, i) => login(s.url, 'mallory', `burst-${i}`, { domain: '/d1' })));
  assert.ok(burst.every((r) => r.status === 429));
  // Other users from the same address are not locked out (a user logs in under any case of its name).
  assert.equal((await login(s.url, 'alice', 'pw-alice-secret', { domain: '/d1' })).status, 200);
  assert.equal((await login(s.url, 'ALICE', 'pw-alice-secret', { domain: '/d1' })).status, 200);
  assert.equal((await login(s.url, 'ALICE', 'pw-wrong', { domain: '/d1' })).status, 531);
});

test('sessions expire after the idle timeout; calls keep a session alive, a console\'s polling without user input does not', async () => {
  const short = await startServer({ args: ['--session-timeout', '3'] });
  try {
    const pw = JSON.parse(fs.readFileSync(path.join(short.dataDir, 'admin-credentials.json'), 'utf8')).password;
    const r = await login(short.url, 'admin', pw);
    assert.equal(r.body.loginresponse.timeout, 3);
    const sess: SessionCreds = { cookie: r.cookie!, sessionkey: r.sessionkey! };
    const idle = await mustLogin(short.url, 'admin', pw);
    // A console tab nobody touches: it polls every 500 ms, each call saying the user's last input was
    // that long ago (x-palisade-idle-ms); its polling does not keep the session alive.
    const polled = await mustLogin(short.url, 'admin', pw);
    const openedAt = Date.now();
    let polledEnded = false;
    // Busy for ~5 s (longer than the timeout): still valid.
    for (let i = 0; i < 10; i++) {
      assert.equal((await sessionCall(short.url, sess, 'listZones')).status, 200, `busy call ${i}`);
      if (!polledEnded) polledEnded = (await sessionCall(short.url, polled, 'listZones', {}, { 'x-palisade-idle-ms': String(Date.now() - openedAt) })).status === 401;
      await sleep(500);
    }
    assert.ok(polledEnded, 'the polled but untouched session ended at its timeout');
    assert.equal((await sessionCall(short.url, idle, 'listZones')).status, 401, 'the idle session expired');
    await sleep(4500);
    assert.equal((await sessionCall(short.url, sess, 'listZones')).status, 401, 'and so does the busy one once idle');
  } finally { await short.stop(); }
});

test('the console is served at / with a strict Content-Security-Policy; the API stays at /client/api', async () => {
  const base = s.url.replace(/\/client\/api$/, '');
  const r = await fetch(`${base}/`);
  if (r.status === 404) {
    assert.match(await r.text(), /npm run build/, 'without a build, / says how to build it');
    return;
  }
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type') ?? '', /text\/html/);
  const csp = r.headers.get('content-security-policy') ?? '';
  assert.match(csp, /default-src 'self'/);
  assert.match(csp, /script-src 'self'(;|$)/);
  assert.match(csp, /frame-ancestors 'none'/);
  const html = await r.text();
  assert.ok(!/https?:\/\//.test(html.replace(/http:\/\/www\.w3\.org\/2000\/svg/g, '')), 'no external URL in the page');
  const scripts = [...html.matchAll(/src="\.?\/?(assets\/[^"]+\.js)"/g)].map((m) => m[1]);
  assert.ok(scripts.length >= 1);
  const js = await fetch(`${base}/${scripts[0]}`);
  assert.equal(js.status, 200);
  assert.match(js.headers.get('cache-control') ?? '', /immutable/);
  assert.equal((await fetch(`${base}/../../etc/passwd`)).status, 404);
  assert.equal((await fetch(`${base}/assets/../../package.json`)).status, 404);
  assert.equal((await fetch(`${base}/index.html/x`)).status, 404);
});

test('--allowed-hosts: a page reaching the server under another name (DNS rebinding) gets no console, metrics, login or session; signed calls and listed names do', async () => {
  const t = await startServer({ args: ['--allowed-hosts', 'palisade.example, 127.0.0.1'] });
  try {
    const { port } = new URL(t.url);
    const base = t.url.replace(/\/client\/api$/, '');
    const good = `palisade.example:${port}`, evil = `rebind.example:${port}`;
    const password = JSON.parse(fs.readFileSync(path.join(t.dataDir, 'admin-credentials.json'), 'utf8')).password;
    // the console and /metrics: 421 under a foreign name, served under a listed one (any port: none given)
    for (const route of ['/', '/metrics']) {
      const refused = await rawRequest(`${base}${route}`, { headers: { host: evil } });
      assert.equal(refused.status, 421, `${route} as ${evil}`);
      assert.match(refused.text, /does not answer to that host name/);
      assert.notEqual((await rawRequest(`${base}${route}`, { headers: { host: good } })).status, 421, `${route} as ${good}`);
    }
    // login: the rebinding page's Origin matches the Host it sends, so only the name can tell
    const foreign = await login(t.url, 'admin', password, {}, { host: evil, origin: `http://${evil}` });
    assert.equal(foreign.status, 401);
    assert.match(foreign.body.loginresponse.errortext, /host this server does not answer to/);
    assert.equal(foreign.setCookie.length, 0);
    const ok = await login(t.url, 'admin', password, {}, { host: good, origin: `http://${good}` });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    const creds = { cookie: ok.cookie!, sessionkey: ok.sessionkey! };
    // a session call: listed name yes, foreign no (the cookie would be the victim's, were it sent)
    assert.equal((await sessionCall(t.url, creds, 'listZones', {}, { host: good, origin: `http://${good}` })).status, 200);
    const stolen = await sessionCall(t.url, creds, 'listZones', {}, { host: evil, origin: `http://${evil}` });
    assert.equal(stolen.status, 401);
    assert.match(stolen.body.listzonesresponse.errortext, /host this server does not answer to/);
    // logout likewise: refused under the foreign name, so the session lives on
    assert.equal((await sessionCall(t.url, creds, 'logout', {}, { host: evil })).status, 401);
    assert.equal((await sessionCall(t.url, creds, 'listZones', {}, { host: good })).status, 200);
    // a signed call needs the secret key, which no page has: it answers under any name (tools by address)
    const { apikey, secretkey } = JSON.parse(fs.readFileSync(path.join(t.dataDir, 'admin-credentials.json'), 'utf8'));
    const p: Record<string, string> = { command: 'listZones', response: 'json', apiKey: apikey, signatureVersion: '3', expires: formatExpires(new Date(Date.now() + 600_000)) };
    p.signature = signParams(p, secretkey);
    const signed = await rawRequest(`${t.url}?${new URLSearchParams(p)}`, { headers: { host: evil } });
    assert.equal(signed.status, 200, signed.text);
    assert.ok(JSON.parse(signed.text).listzonesresponse.zone.length >= 1);
  } finally {
    await t.stop();
  }
  // a malformed list is refused at start, naming the entry
  const bad = await runPalisade(['server', '--allowed-hosts', 'ok.example,bad host', '--listen', '127.0.0.1:1']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--allowed-hosts: 'bad host' is not a host name/);
});

test('a server that cannot listen says so and writes nothing (no data dir, no credentials)', async () => {
  const holder = net.createServer();
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  const port = (holder.address() as net.AddressInfo).port;
  const dataDir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-busy-')), 'data');
  try {
    const busy = await runPalisade(['server', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir]);
    assert.equal(busy.code, 2, busy.stderr);
    assert.match(busy.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: EADDRINUSE`));
    assert.equal(fs.existsSync(dataDir), false, 'no data dir was created');
  } finally {
    holder.close();
    fs.rmSync(path.dirname(dataDir), { recursive: true, force: true });
  }
});
