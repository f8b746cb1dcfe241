// CloudStack's per-account API rate limit (api.throttling.*, getApiLimit, resetApiLimit) against the real
// server: off by default (no limit, the two commands 432); on, a tenant's call past `max` in its window is
// 429 with CloudStack's error body and runs nothing, while another tenant and the root admin go on; console
// session calls count like signed ones; getApiLimit reports the caller's window; resetApiLimit (root admin
// only) clears one account's count or all; a new window opens when the interval has passed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { cloudstack, startServer, type TestServer, type Creds, type ApiResult } from '../helpers/server.js';
import { mustLogin, sessionCall } from '../helpers/session.js';
import { ApiRateLimiter } from '../../src/api/rate-limit.js';

let s: TestServer;
type Tenant = Creds & { accountId: string; name: string; password: string };
let alice: Tenant;
let bob: Tenant;

async function tenant(name: string): Promise<Tenant> {
  const password = `pw-${randomUUID()}`;
  const a = await s.call('createAccount', { username: name, password, email: `${name}@example.org`, firstname: name, lastname: name });
  assert.equal(a.status, 200, JSON.stringify(a.body));
  const acct = a.body.createaccountresponse.account;
  const k = await s.call('registerUserKeys', { id: acct.user[0].id });
  return { ...k.body.registeruserkeysresponse.userkeys, accountId: acct.id, name, password };
}

before(async () => {
  s = await startServer();
  alice = await tenant('alice');
  bob = await tenant('bob');
});
after(async () => { await s?.stop(); });

const LIMIT_TEXT = /^The given user has reached his\/her account api limit, please retry after \[(\d+)\] ms\.$/;

/** The 429 answer, checked for CloudStack's shape; returns the ms it says to wait. */
function overLimit(r: ApiResult): number {
  assert.equal(r.status, 429, JSON.stringify(r.body));
  const e = r.body.errorresponse;
  assert.deepEqual(Object.keys(e), ['uuidList', 'errorcode', 'cserrorcode', 'errortext']);
  assert.deepEqual([e.uuidList, e.errorcode, e.cserrorcode], [[], 429, 9999]);
  const m = LIMIT_TEXT.exec(e.errortext);
  assert.ok(m, e.errortext);
  return Number(m[1]);
}

async function set(name: string, value: string): Promise<void> {
  const r = await s.call('updateConfiguration', { name, value });
  assert.equal(r.status, 200, JSON.stringify(r.body));
}

async function groupsNamed(name: string): Promise<number> {
  const r = await s.call('listSecurityGroups', { listall: true, securitygroupname: name });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.listsecuritygroupsresponse.count ?? 0;
}

test('off by default: a tenant is not limited, getApiLimit and resetApiLimit answer 432', async () => {
  const listed = (await s.call('listConfigurations', { name: 'api.throttling' })).body.listconfigurationsresponse.configuration;
  assert.deepEqual(listed.map((c: any) => [c.name, c.value, c.category, c.description]), [
    ['api.throttling.cachesize', '50000', 'Advanced', 'Account based API count cache size'],
    ['api.throttling.enabled', 'false', 'Advanced', 'Enable/disable Api rate limit'],
    ['api.throttling.interval', '1', 'Advanced', 'Time interval (in seconds) to reset API count'],
    ['api.throttling.max', '25', 'Advanced', 'Max allowed number of APIs within fixed interval'],
  ]);
  // max 5 per 30 s (a long interval, so a slow machine cannot end a window mid-test), still off: 8 calls answered
  await set('api.throttling.interval', '30');
  await set('api.throttling.max', '5');
  for (let i = 0; i < 8; i++) assert.equal((await s.call('listSecurityGroups', {}, alice)).status, 200);
  for (const [cmd, who] of [['getApiLimit', alice], ['resetApiLimit', undefined]] as const) {
    const r = await s.call(cmd, {}, who);
    assert.equal(r.status, 432, JSON.stringify(r.body));
    assert.equal(r.body.errorresponse.errortext, 'This api is only available when api.throttling.enabled = true.');
  }
  const caps = (await s.call('listCapabilities', {}, alice)).body.listcapabilitiesresponse.capability;
  assert.ok(!('apilimitinterval' in caps) && !('apilimitmax' in caps));
  const apis = (await s.call('listApis', {}, alice)).body.listapisresponse.api.map((a: any) => a.name);
  assert.ok(apis.includes('getApiLimit') && !apis.includes('resetApiLimit'), 'a tenant is told of getApiLimit only');
});

test('on: the 6th call of a tenant in its window is 429 and runs nothing; another tenant, the root admin and session counting', async () => {
  // (max 5 per 30 s, set above; the last test uses 2 s)
  await set('api.throttling.enabled', 'true');
  const caps = (await s.call('listCapabilities')).body.listcapabilitiesresponse.capability;
  assert.deepEqual([caps.apilimitinterval, caps.apilimitmax], [30, 5]);

  const first = await s.call('getApiLimit', {}, alice);
  assert.equal(first.status, 200, JSON.stringify(first.body));
  const lim = first.body.getapilimitresponse.apilimit;
  assert.deepEqual([lim.accountid, lim.account, lim.apiIssued, lim.apiAllowed], [alice.accountId, 'alice', 1, 4]);
  assert.ok(lim.expireAfter > 1000 && lim.expireAfter <= 30_000, `ms left in alice's window: ${lim.expireAfter}`);
  // The root admin is never counted, so has no window: CloudStack then reports the interval, in seconds.
  const root = (await s.call('getApiLimit')).body.getapilimitresponse.apilimit;
  assert.deepEqual([root.apiIssued, root.apiAllowed, root.expireAfter], [0, 5, 30]);
  for (let i = 0; i < 3; i++) assert.equal((await s.call('listSecurityGroups', {}, alice)).status, 200);
  const fifth = await s.call('createSecurityGroup', { name: 'fifth' }, alice);
  assert.equal(fifth.status, 200, JSON.stringify(fifth.body));

  const events = (await s.call('listEvents', { listall: true })).body.listeventsresponse.count;
  const sixth = await s.call('createSecurityGroup', { name: 'sixth' }, alice);
  const wait = overLimit(sixth);
  assert.ok(wait > 0 && wait <= 30_000, String(wait));
  assert.equal(await groupsNamed('fifth'), 1);
  assert.equal(await groupsNamed('sixth'), 0, 'the refused call created nothing');
  assert.equal((await s.call('listEvents', { listall: true })).body.listeventsresponse.count, events, 'and recorded no event');
  overLimit(await s.call('listSecurityGroups', {}, alice));
  overLimit(await s.call('getApiLimit', {}, alice));

  // Another tenant in the same interval has its own count: 5 calls, then its 6th — through a console
  // session (cookie + sessionkey) — is refused too: session calls count like signed ones.
  for (let i = 0; i < 4; i++) assert.equal((await s.call('listSecurityGroups', {}, bob)).status, 200);
  const session = await mustLogin(s.url, 'bob', bob.password);   // login itself is not counted
  assert.equal((await sessionCall(s.url, session, 'listSecurityGroups')).status, 200);
  overLimit(await sessionCall(s.url, session, 'listSecurityGroups'));
  overLimit(await s.call('listSecurityGroups', {}, bob));
  // a third-party client (python3-cs) is told why
  const viaCs = await cloudstack({ url: s.url, apikey: bob.apikey, secretkey: bob.secretkey }, 'listSecurityGroups');
  assert.notEqual(viaCs.code, 0);
  assert.match(viaCs.stdout + viaCs.stderr, /429[\s\S]*has reached his\/her account api limit/);

  // The root admin is not limited: 12 calls in the same interval, and getApiLimit shows nothing counted.
  for (let i = 0; i < 12; i++) assert.equal((await s.call('listSecurityGroups', { listall: true })).status, 200);
  const admin = (await s.call('getApiLimit')).body.getapilimitresponse.apilimit;
  assert.deepEqual([admin.account, admin.apiIssued, admin.apiAllowed], ['admin', 0, 5]);
  const adminCs = await cloudstack(s, 'getApiLimit');
  assert.equal(adminCs.code, 0, adminCs.stderr);
  assert.equal(adminCs.out.apilimit.apiIssued, 0);
});

test('resetApiLimit: root admin only; one account, unknown account, every account', async () => {
  // (a tenant is told the command is not for it, even over its limit)
  const denied = await s.call('resetApiLimit', { account: alice.accountId }, alice);
  assert.equal(denied.status, 432, JSON.stringify(denied.body));
  const unknown = await s.call('resetApiLimit', { account: randomUUID() });
  assert.equal(unknown.status, 431, JSON.stringify(unknown.body));
  overLimit(await s.call('listSecurityGroups', {}, alice));

  const r = await s.call('resetApiLimit', { account: alice.accountId });
  assert.deepEqual([r.status, r.body], [200, { resetapilimitresponse: { success: true } }]);
  assert.equal((await s.call('listSecurityGroups', {}, alice)).status, 200);
  const lim = (await s.call('getApiLimit', {}, alice)).body.getapilimitresponse.apilimit;
  assert.deepEqual([lim.apiIssued, lim.apiAllowed], [2, 3]);
  overLimit(await s.call('listSecurityGroups', {}, bob));   // only alice's count was reset

  assert.equal((await s.call('resetApiLimit')).status, 200);
  assert.equal((await s.call('listSecurityGroups', {}, bob)).status, 200);
});

test('after the interval a limited tenant may call again; turned off, no limit at once', async () => {
  await set('api.throttling.interval', '2');
  assert.equal((await s.call('resetApiLimit')).status, 200);   // windows opened with 30 s are dropped
  // Calls until refused (a slow machine may open a second 2 s window on the way: bounded).
  let refused: ApiResult | undefined;
  for (let i = 0; i < 30 && !refused; i++) {
    const r = await s.call('listSecurityGroups', {}, alice);
    if (r.status !== 200) refused = r;
  }
  assert.ok(refused, 'the limit was reached');
  const wait = overLimit(refused);
  assert.ok(wait <= 2000, String(wait));
  await new Promise((r) => setTimeout(r, wait + 50));
  assert.equal((await s.call('listSecurityGroups', {}, alice)).status, 200, 'a new window');

  // exhaust it again, then turn throttling off: the same tenant is answered at once
  let limited = false;
  for (let i = 0; i < 30 && !limited; i++) limited = (await s.call('listSecurityGroups', {}, alice)).status === 429;
  assert.ok(limited);
  await set('api.throttling.enabled', 'false');
  for (let i = 0; i < 10; i++) assert.equal((await s.call('listSecurityGroups', {}, alice)).status, 200);
});

test('a tenant calling on past its limit cannot fill the server log: refusals are logged one by one only up to a bound', async () => {
  await set('api.throttling.interval', '30');
  await set('api.throttling.max', '1');
  await set('api.throttling.enabled', 'true');
  assert.equal((await s.call('resetApiLimit')).status, 200);
  const lines = () => s.output().split('\n').filter((l) => l.includes('api rate limit reached')).length;
  const before = lines();
  assert.equal((await s.call('listSecurityGroups', {}, alice)).status, 200);
  for (let i = 0; i < 60; i++) overLimit(await s.call('listSecurityGroups', {}, alice));
  const logged = lines() - before;
  assert.ok(lines() >= 1, 'refusals are logged');
  assert.ok(logged <= 20, `${logged} lines for 60 refused calls`);
  await set('api.throttling.enabled', 'false');
});

test('pure: at most api.throttling.cachesize accounts are tracked; beyond it ended windows, then the oldest, are dropped', async () => {
  let now = 1_000_000;
  const limiter = new ApiRateLimiter(async () => ({ enabled: true, intervalSeconds: 10, max: 2, cacheSize: 3 }), () => now);
  for (const id of [1, 2, 3]) { assert.equal(await limiter.hit(id), undefined); now += 1000; }
  assert.equal(await limiter.hit(1), undefined);
  assert.equal(await limiter.hit(1), 7000, 'within the bound, account 1 keeps its count: its 3rd call is refused');
  assert.equal(limiter.tracked, 3);
  assert.equal(await limiter.hit(4), undefined);   // a 4th account: account 1's window, the oldest, is dropped
  assert.equal(limiter.tracked, 3);
  assert.deepEqual(await limiter.usage(1), { issued: 0, allowed: 2, expireAfterMs: 10_000, open: false });
  assert.equal((await limiter.usage(2)).issued, 1, 'the others are kept');
  now += 20_000;                                    // every window has ended: a new account drops them all
  assert.equal(await limiter.hit(5), undefined);
  assert.equal(limiter.tracked, 1);
  for (let id = 100; id < 1100; id++) await limiter.hit(id);
  assert.equal(limiter.tracked, 3, 'never more than cachesize');
});

test('pure: a settings read begun before a change was committed does not outlive the change', async () => {
  const off = { enabled: false, intervalSeconds: 10, max: 1, cacheSize: 10 };
  let stored = off;
  const pending: (() => void)[] = [];
  const read = () => new Promise<typeof off>((resolve) => { const v = stored; pending.push(() => resolve(v)); });
  const limiter = new ApiRateLimiter(read, () => 0);
  const before = limiter.settings();                 // a read of the old values, still under way
  stored = { ...off, enabled: true };
  limiter.invalidate();                              // the change committed (updateConfiguration)
  const after = limiter.settings();
  pending[1]!();                                     // the new read ends first,
  pending[0]!();                                     // the old one last
  assert.equal((await after).enabled, true);
  assert.equal((await before).enabled, false);
  assert.equal((await limiter.settings()).enabled, true, 'the old read was not kept');
  assert.equal(pending.length, 2, 'no read since: the new values are fresh');
  assert.equal(await limiter.hit(1), undefined);
  assert.equal(await limiter.hit(1), 10_000);
});

test('pure: a shorter api.throttling.interval applies to the windows already running (an account is not held to the old one)', async () => {
  let now = 1_000_000;
  let stored = { enabled: true, intervalSeconds: 86_400, max: 1, cacheSize: 10 };
  const limiter = new ApiRateLimiter(async () => stored, () => now);
  assert.equal(await limiter.hit(1), undefined);
  assert.equal(await limiter.hit(1), 86_400_000, 'refused for the rest of the day-long window');
  stored = { ...stored, intervalSeconds: 2 };      // the operator shortens the interval (updateConfiguration)
  limiter.invalidate();
  now += 1000;
  assert.equal(await limiter.hit(1), 1000, 'still in its window, now 2 s long: told the time left of that');
  assert.deepEqual(await limiter.usage(1), { issued: 1, allowed: 0, expireAfterMs: 1000, open: true });
  now += 1000;
  assert.equal(await limiter.hit(1), undefined, 'once 2 s have passed since it opened, a new window');
  stored = { ...stored, intervalSeconds: 60 };     // and a longer one lengthens the running window
  limiter.invalidate();
  now += 5000;
  assert.equal(await limiter.hit(1), 55_000);
});
