// The bounds of src/api/limits.ts against the real server: a hostile body is refused before it is decoded
// (and does not hold up other callers), values longer than CloudStack's column limits are refused with 431
// naming the parameter before anything is stored (no job, no event), list and map parameters are capped,
// stored event descriptions are bounded, no search parameter can produce a 5xx, and deletes succeed
// whatever a tenant stored (tens of thousands of rules in one group).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import Database from 'better-sqlite3';
import { startServer, type TestServer, type Creds } from '../helpers/server.js';
import { countPairs, readParams } from '../../src/api/form.js';
import { MAX_BODY_BYTES, MAX_LIST_ITEMS, MAX_MAP_ENTRIES, MAX_PARAMETERS, MAX_EVENT_DESCRIPTION } from '../../src/api/limits.js';

let s: TestServer;
let tenant: Creds & { accountId: string };

before(async () => {
  s = await startServer();
  const a = await s.call('createAccount', { username: 'tenant', password: 'pw', email: 't@example.org', firstname: 't', lastname: 't' });
  assert.equal(a.status, 200, JSON.stringify(a.body));
  const acct = a.body.createaccountresponse.account;
  const k = await s.call('registerUserKeys', { id: acct.user[0].id });
  tenant = { ...k.body.registeruserkeysresponse.userkeys, accountId: acct.id };
});
after(async () => { await s?.stop(); });

/** Row counts and the longest event description, read from the store file itself. */
function store() {
  const db = new Database(path.join(s.dataDir, 'palisade.db'), { readonly: true, fileMustExist: true });
  try {
    const n = (t: string) => (db.prepare(`select count(*) as n from ${t}`).get() as { n: number }).n;
    const longest = (db.prepare('select coalesce(max(length(description)), 0) as n from events').get() as { n: number }).n;
    return { events: n('events'), jobs: n('async_jobs'), groups: n('security_groups'), rules: n('security_group_rules'), tags: n('tags'), longestEvent: longest };
  } finally { db.close(); }
}

const post = (body: string, query = '') => fetch(`${s.url}${query ? '?' + query : ''}`, {
  method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body,
});

test('pure: a request with too many parameters is refused without decoding any of them', () => {
  const hostile = 'a=&'.repeat(340_000);  // ~1 MB, 340,000 keys, no apikey
  assert.ok(hostile.length < MAX_BODY_BYTES);
  const Real = globalThis.URLSearchParams;
  let decoded = 0;
  globalThis.URLSearchParams = class extends Real {
    constructor(init?: string) { super(init); decoded += [...this.keys()].length; }
  } as typeof URLSearchParams;
  try {
    const r = readParams('command=listZones&response=json', hostile);
    assert.equal(r.ok, false);
    assert.equal(decoded, 0, 'no parameter was decoded');
    // counting stops just past the bound: the scan does not even run to the end of the body
    assert.equal(countPairs(hostile, MAX_PARAMETERS), MAX_PARAMETERS + 1);
    const fine = readParams('command=listZones', 'a=1&'.repeat(MAX_PARAMETERS - 2) + 'b=2');
    assert.equal(fine.ok, true);
    assert.equal(decoded, MAX_PARAMETERS, 'a request within the bound is decoded in full');
  } finally {
    globalThis.URLSearchParams = Real;
  }
});

test('a hostile body is refused at once with a CloudStack error, and a concurrent normal call is answered', async () => {
  const hostile = 'a=&'.repeat(340_000);
  const t0 = performance.now();
  const [h1, h2, h3, normal] = await Promise.all([
    post(hostile, 'response=json'), post(hostile), post(hostile, 'response=json'),
    (async () => { await new Promise((r) => setTimeout(r, 5)); const t = performance.now(); const r = await s.call('listZones'); return { r, ms: performance.now() - t }; })(),
  ]);
  const took = performance.now() - t0;
  for (const h of [h1, h3]) {
    assert.equal(h.status, 431);
    assert.deepEqual(await h.json(), { errorresponse: { uuidList: [], errorcode: 431, errortext: `Too many parameters in the request: at most ${MAX_PARAMETERS} are accepted` } });
  }
  assert.equal(h2.status, 431);
  assert.match(await h2.text(), /^<\?xml version="1.0" encoding="UTF-8"\?><errorresponse cloud-stack-version="[^"]+"><errorcode>431<\/errorcode><errortext>Too many parameters/);
  assert.equal(normal.r.status, 200);
  console.log(`three hostile bodies and a listZones: listZones answered in ${normal.ms.toFixed(0)} ms, all four in ${took.toFixed(0)} ms`);
  // a generous bound (the unbounded decoder took ~2 s here): a loaded 2-core machine still stays far below
  assert.ok(normal.ms < 10_000, `listZones took ${normal.ms} ms`);
});

test('a body over 1 MiB is refused with a CloudStack error, before it is read further', async () => {
  const big = 'name=' + 'x'.repeat(MAX_BODY_BYTES + 10);
  const r = await post(big, 'response=json&command=createSecurityGroup');
  assert.equal(r.status, 431);
  assert.deepEqual(await r.json(), { errorresponse: { uuidList: [], errorcode: 431, errortext: `Request body too large: at most ${MAX_BODY_BYTES} bytes are accepted` } });
  assert.equal((await s.call('listZones')).status, 200);
});

test('values longer than CloudStack allows are refused with 431 naming the parameter; nothing is stored', async () => {
  const before0 = store();
  const huge = 'N'.repeat(200_000);
  const cases: [string, Record<string, string>, RegExp][] = [
    ['authorizeSecurityGroupIngress', { securitygroupname: huge, protocol: 'tcp', startport: '1', endport: '2', cidrlist: '10.0.0.0/8' }, /max allowed length 255 for param: securitygroupname/],
    ['createSecurityGroup', { name: 'n'.repeat(256) }, /max allowed length 255 for param: name/],
    ['createSecurityGroup', { name: 'ok', description: 'd'.repeat(256) }, /max allowed length 255 for param: description/],
    ['createTags', { resourcetype: 'SecurityGroup', resourceids: randomUUID(), 'tags[0].key': 'k'.repeat(1_000_000 / 4), 'tags[0].value': 'v' }, /max allowed length 255 for param: tags\[0\]\.key/],
    ['createTags', { resourcetype: 'SecurityGroup', resourceids: randomUUID(), 'tags[0].key': 'k', 'tags[0].value': 'v'.repeat(256) }, /max allowed length 255 for param: tags\[0\]\.value/],
    ['authorizeSecurityGroupIngress', { securitygroupname: 'default', protocol: 'tcp', startport: '1', endport: '2', cidrlist: 'c'.repeat(300) }, /element of param: cidrlist/],
    ['listSecurityGroups', { keyword: 'k'.repeat(256) }, /max allowed length 255 for param: keyword/],
    ['createSecurityGroup', { name: 'nul\u0000name' }, /Parameter name contains a control character/],
  ];
  for (const [cmd, params, want] of cases) {
    const r = await s.call(cmd, params, tenant);
    assert.equal(r.status, 431, `${cmd}: ${JSON.stringify(r.body).slice(0, 300)}`);
    const e = r.body[`${cmd.toLowerCase()}response`];
    assert.match(e.errortext, want);
    assert.ok(e.errortext.length < 1000, 'the error does not echo the whole value');
  }
  const after0 = store();
  assert.deepEqual(after0, before0, 'no job, no event, no row was written');
  // the allowed counterparts: exactly 255 characters
  const ok = await s.call('createSecurityGroup', { name: 'n'.repeat(255), description: 'd'.repeat(255) }, tenant);
  assert.equal(ok.status, 200, JSON.stringify(ok.body));
});

test('list and map parameters are capped with a clear 431; at the cap they work', async () => {
  const cidrs = (n: number, base = 0) => Array.from({ length: n }, (_, i) => `10.${(base + i) >> 8 & 255}.${(base + i) & 255}.0/24`).join(',');
  const over = await s.call('authorizeSecurityGroupIngress', { securitygroupname: 'default', protocol: 'tcp', startport: '80', endport: '80', cidrlist: cidrs(MAX_LIST_ITEMS + 1) }, tenant);
  assert.equal(over.status, 431);
  assert.match(over.body.authorizesecuritygroupingressresponse.errortext, new RegExp(`Too many values for parameter cidrlist: ${MAX_LIST_ITEMS + 1} given, at most ${MAX_LIST_ITEMS}`));
  const at = await s.callAndWait('authorizeSecurityGroupIngress', { securitygroupname: 'default', protocol: 'tcp', startport: '80', endport: '80', cidrlist: cidrs(MAX_LIST_ITEMS) }, tenant);
  assert.equal(at.body.jobstatus, 1, JSON.stringify(at.body).slice(0, 500));
  assert.equal(at.body.jobresult.securitygroup.ingressrule.length, MAX_LIST_ITEMS);
  // every stored event description is bounded (the job's events quote all 1,000 CIDRs)
  assert.ok(store().longestEvent <= MAX_EVENT_DESCRIPTION, String(store().longestEvent));
  const ids = (n: number) => Array.from({ length: n }, () => randomUUID()).join(',');
  assert.equal((await s.call('listVirtualMachines', { ids: ids(MAX_LIST_ITEMS + 1) })).status, 431);
  const vms = await s.call('listVirtualMachines', { ids: ids(MAX_LIST_ITEMS) });
  assert.equal(vms.status, 200, JSON.stringify(vms.body).slice(0, 300));
  const tags = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [[`tags[${i}].key`, `k${i}`], [`tags[${i}].value`, 'v']]).flat());
  const overTags = await s.call('listSecurityGroups', tags(MAX_MAP_ENTRIES + 1), tenant);
  assert.equal(overTags.status, 431);
  assert.match(overTags.body.listsecuritygroupsresponse.errortext, /Too many entries for parameter tags/);
  assert.equal((await s.call('listSecurityGroups', tags(MAX_MAP_ENTRIES), tenant)).status, 200);
  // an index past Integer.parseInt is malformed (430, as ParamUnpackWorker); one past our bound, 431
  assert.equal((await s.call('listSecurityGroups', { 'tags[12345678901].key': 'k' }, tenant)).status, 430);
  const badIndex = await s.call('listSecurityGroups', { 'tags[12345678].key': 'k' }, tenant);
  assert.equal(badIndex.status, 431);
  assert.match(badIndex.body.listsecuritygroupsresponse.errortext, /Invalid map parameter name tags\[12345678\]\.key/);
});

test('no keyword produces a 5xx on any list command: long, wildcard-laden, escaped', async () => {
  const apis = (await s.call('listApis')).body.listapisresponse.api as { name: string; params: { name: string }[] }[];
  const lists = apis.filter((a) => a.params.some((p) => p.name === 'keyword'));
  assert.ok(lists.length >= 8, lists.map((a) => a.name).join(','));
  const keywords = ['%_'.repeat(127) + '\\', '\\'.repeat(255), '%'.repeat(255), '[*?]'.repeat(63), 'ǅ'.repeat(255), '😀'.repeat(127), "' or 1=1 --"];
  for (const a of lists) {
    for (const keyword of keywords) {
      const r = await s.call(a.name, { keyword });
      assert.ok(r.status < 500, `${a.name} keyword=${keyword.slice(0, 20)}…: ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`);
      assert.equal(r.status, 200, `${a.name}: ${JSON.stringify(r.body).slice(0, 300)}`);
    }
    const long = await s.call(a.name, { keyword: '%'.repeat(60_000) });
    assert.equal(long.status, 431, `${a.name}: a keyword longer than 255 characters is a parameter error`);
  }
});

test('deletes succeed whatever a tenant stored: 34,000 rules in one group, then the group; again, then the account', async () => {
  // An operator allowed big groups (the tenant bounds are tested below).
  for (const name of ['security.group.max.rules', 'security.group.max.rules.per.account']) {
    assert.equal((await s.call('updateConfiguration', { name, value: '40000' })).status, 200);
  }
  const cidrs = (base: number) => Array.from({ length: MAX_LIST_ITEMS }, (_, i) => {
    const n = base * MAX_LIST_ITEMS + i;
    return `172.${16 + (n >> 16 & 15)}.${n >> 8 & 255}.${n & 255}/32`;
  }).join(',');
  async function fill(group: string, who: Creds) {
    const g = await s.call('createSecurityGroup', { name: group }, who);
    assert.equal(g.status, 200, JSON.stringify(g.body));
    for (let i = 0; i < 34; i++) {
      const r = await s.callAndWait('authorizeSecurityGroupIngress', { securitygroupname: group, protocol: 'udp', startport: '53', endport: '53', cidrlist: cidrs(i) }, who);
      assert.equal(r.body.jobstatus, 1, JSON.stringify(r.body).slice(0, 300));
    }
    // a tag on a rule too, so the rule-tag cascade has work
    const listed = await s.call('listSecurityGroups', { securitygroupname: group }, who);
    const g0 = listed.body.listsecuritygroupsresponse.securitygroup[0];
    assert.equal(g0.ingressrule.length, 34 * MAX_LIST_ITEMS);
    assert.equal((await s.callAndWait('createTags', { resourcetype: 'SecurityGroupRule', resourceids: g0.ingressrule[0].ruleid, 'tags[0].key': 'k', 'tags[0].value': 'v' }, who)).body.jobstatus, 1);
    return g0.id as string;
  }
  const gid = await fill('huge-1', tenant);
  const del = await s.call('deleteSecurityGroup', { id: gid }, tenant);
  assert.equal(del.status, 200, JSON.stringify(del.body));
  assert.equal((await s.call('listSecurityGroups', { id: gid }, tenant)).body.listsecuritygroupsresponse.count, undefined);
  await fill('huge-2', tenant);
  const rulesBefore = store().rules;
  assert.ok(rulesBefore >= 34 * MAX_LIST_ITEMS);
  const gone = await s.callAndWait('deleteAccount', { id: tenant.accountId });
  assert.equal(gone.body.jobstatus, 1, JSON.stringify(gone.body).slice(0, 500));
  assert.ok(store().rules <= rulesBefore - 34 * MAX_LIST_ITEMS);
  for (const name of ['security.group.max.rules', 'security.group.max.rules.per.account']) {
    assert.equal((await s.call('resetConfiguration', { name })).status, 200);
  }
});

test('tenant bounds: rules per group, rules per account, groups per account and tags per account; a call over one fails with 535 naming the setting and adds nothing', async () => {
  const a = await s.call('createAccount', { username: 'bounded', password: 'pw', email: 'b@example.org', firstname: 'b', lastname: 'b' });
  assert.equal(a.status, 200, JSON.stringify(a.body));
  const k = await s.call('registerUserKeys', { id: a.body.createaccountresponse.account.user[0].id });
  const who: Creds = k.body.registeruserkeysresponse.userkeys;
  const set = async (name: string, value: string) => assert.equal((await s.call('updateConfiguration', { name, value })).status, 200);
  const cidrs = (from: number, n: number) => Array.from({ length: n }, (_, i) => `203.0.113.${from + i}/32`).join(',');
  const authorize = (group: string, list: string) => s.callAndWait('authorizeSecurityGroupIngress', { securitygroupname: group, protocol: 'tcp', startport: 22, endport: 22, cidrlist: list }, who);
  const rulesOf = async (group: string) => (await s.call('listSecurityGroups', { securitygroupname: group }, who)).body.listsecuritygroupsresponse.securitygroup[0].ingressrule?.length ?? 0;
  try {
    await set('security.group.max.rules', '5');
    await set('security.group.max.rules.per.account', '7');
    await set('security.group.max.per.account', '3');
    assert.equal((await s.call('createSecurityGroup', { name: 'b1' }, who)).status, 200);
    // per group: 3 fit, 3 more would make 6 > 5, 2 more make exactly 5
    assert.equal((await authorize('b1', cidrs(1, 3))).body.jobstatus, 1);
    const over = await authorize('b1', cidrs(4, 3));
    assert.equal(over.body.jobstatus, 2);
    assert.equal(over.body.jobresult.errorcode, 535, JSON.stringify(over.body));
    assert.match(over.body.jobresult.errortext, /Maximum number of resources of type 'security_group_rule \(per group\)' for account name=bounded .* 3 exist, this call adds 3, the limit is 5 \(security\.group\.max\.rules\)/);
    assert.equal(await rulesOf('b1'), 3, 'nothing was added');
    assert.equal((await authorize('b1', cidrs(4, 2))).body.jobstatus, 1);
    assert.equal(await rulesOf('b1'), 5);
    // a duplicate adds nothing, so it is not counted against the bound
    assert.equal((await authorize('b1', cidrs(1, 1))).body.jobresult.errorcode, 530);
    // per account: 5 held, 3 more in another group would make 8 > 7; 2 fit
    assert.equal((await s.call('createSecurityGroup', { name: 'b2' }, who)).status, 200);
    const overAccount = await authorize('b2', cidrs(10, 3));
    assert.equal(overAccount.body.jobresult.errorcode, 535);
    assert.match(overAccount.body.jobresult.errortext, /security\.group\.max\.rules\.per\.account/);
    assert.equal(await rulesOf('b2'), 0);
    assert.equal((await authorize('b2', cidrs(10, 2))).body.jobstatus, 1);
    // the account is full (7); a revoke in b1 frees one place for b2, and only one
    assert.equal((await authorize('b2', cidrs(20, 1))).body.jobresult.errorcode, 535);
    const b1Rule = (await s.call('listSecurityGroups', { securitygroupname: 'b1' }, who)).body.listsecuritygroupsresponse.securitygroup[0].ingressrule[0].ruleid;
    assert.equal((await s.callAndWait('revokeSecurityGroupIngress', { id: b1Rule }, who)).body.jobstatus, 1);
    assert.equal((await authorize('b2', cidrs(20, 2))).body.jobresult.errorcode, 535);
    assert.equal((await authorize('b2', cidrs(20, 1))).body.jobstatus, 1);
    assert.equal(await rulesOf('b2'), 3);
    // groups per account: default, b1, b2 = 3; a fourth is refused and not created
    const fourth = await s.call('createSecurityGroup', { name: 'b3' }, who);
    assert.equal(fourth.status, 535, JSON.stringify(fourth.body));
    assert.match(fourth.body.createsecuritygroupresponse.errortext, /'security_group' .* the limit is 3 \(security\.group\.max\.per\.account\)/);
    assert.equal((await s.call('listSecurityGroups', { securitygroupname: 'b3' }, who)).body.listsecuritygroupsresponse.count, undefined);
    // raised by the operator, the same calls pass
    await set('security.group.max.per.account', '4');
    assert.equal((await s.call('createSecurityGroup', { name: 'b3' }, who)).status, 200);

    // tags: at most security.group.max.tags.per.account over the account's groups and rules; a call
    // that would pass it (tags × resources) adds none of them
    await set('security.group.max.tags.per.account', '10');
    const sg = (await s.call('listSecurityGroups', { securitygroupname: 'b1' }, who)).body.listsecuritygroupsresponse.securitygroup[0];
    const ruleIds = sg.ingressrule.map((r: any) => r.ruleid).join(',');
    const tagsOf = (n: number, prefix: string) => Object.fromEntries(Array.from({ length: n }, (_, i) => [[`tags[${i}].key`, `${prefix}${i}`], [`tags[${i}].value`, 'v']]).flat());
    const tag = (ids: string, type: string, params: Record<string, string>) => s.callAndWait('createTags', { resourcetype: type, resourceids: ids, ...params }, who);
    const tagCount = async () => (await s.call('listTags', { listall: true }, who)).body.listtagsresponse.count ?? 0;
    assert.equal((await tag(sg.id, 'SecurityGroup', tagsOf(6, 'g'))).body.jobstatus, 1);
    // 4 rules × 2 tags = 8 more would make 14 > 10
    const overTags = await tag(ruleIds, 'SecurityGroupRule', tagsOf(2, 'r'));
    assert.equal(overTags.body.jobresult.errorcode, 535, JSON.stringify(overTags.body));
    assert.match(overTags.body.jobresult.errortext, /'resource_tag' .* 6 exist, this call adds 8, the limit is 10 \(security\.group\.max\.tags\.per\.account\)/);
    assert.equal(await tagCount(), 6, 'nothing was added');
    // 4 rules × 1 tag = 10: fits exactly; one more does not
    assert.equal((await tag(ruleIds, 'SecurityGroupRule', tagsOf(1, 'r'))).body.jobstatus, 1);
    assert.equal(await tagCount(), 10);
    assert.equal((await tag(sg.id, 'SecurityGroup', tagsOf(1, 'x'))).body.jobresult.errorcode, 535);
    // a key already on a resource, or given twice: refused, nothing added
    assert.equal((await s.call('deleteTags', { resourcetype: 'SecurityGroup', resourceids: sg.id, 'tags[0].key': 'g5' }, who)).status, 200);
    await waitForCount(tagCount, 9);
    const dupKey = await tag(sg.id, 'SecurityGroup', { 'tags[0].key': 'g0', 'tags[0].value': 'v' });
    assert.equal(dupKey.body.jobresult.errorcode, 431);
    assert.match(dupKey.body.jobresult.errortext, /tag g0 already on SecurityGroup/);
    const twice = await tag(sg.id, 'SecurityGroup', { 'tags[0].key': 'new', 'tags[0].value': 'v', 'tags[1].key': 'new', 'tags[1].value': 'w' });
    assert.equal(twice.body.jobresult.errorcode, 431);
    assert.equal(await tagCount(), 9);
  } finally {
    for (const name of ['security.group.max.rules', 'security.group.max.rules.per.account', 'security.group.max.per.account', 'security.group.max.tags.per.account']) await s.call('resetConfiguration', { name });
  }
});

async function waitForCount(read: () => Promise<number>, want: number): Promise<void> {
  for (let i = 0; i < 100; i++) { if ((await read()) === want) return; await new Promise((r) => setTimeout(r, 50)); }
  assert.equal(await read(), want);
}
