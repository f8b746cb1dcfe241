// The HTTP framework against the real process: signatures, envelopes, errors, async jobs,
// events, tags, listApis, and that a restart keeps everything.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startServer, type TestServer } from '../helpers/server.js';
import { signParams, formatExpires, encodeRfc3986 } from '../../src/api/signing.js';
import { createHmac, randomUUID } from 'node:crypto';
import Database from 'better-sqlite3';

let s: TestServer;
before(async () => { s = await startServer(); });
after(async () => { await s?.stop(); });

const AUTH = 'unable to verify user credentials and/or request signature';

async function raw(params: Record<string, string>, method: 'GET' | 'POST' = 'GET', query?: string) {
  const qs = query ?? new URLSearchParams(params).toString();
  const r = method === 'GET'
    ? await fetch(`${s.url}?${qs}`)
    : await fetch(s.url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: qs });
  const text = await r.text();
  // a request without response=json is answered in XML (CloudStack's default): kept as text
  return { status: r.status, type: r.headers.get('content-type'), body: r.headers.get('content-type')?.startsWith('application/json') ? JSON.parse(text) : text };
}
const future = () => formatExpires(new Date(Date.now() + 300_000));

test('first start wrote admin credentials with mode 0600; the store (every secret key) is owner-only too', () => {
  const f = path.join(s.dataDir, 'admin-credentials.json');
  assert.equal(fs.statSync(f).mode & 0o777, 0o600);
  const store = fs.readdirSync(s.dataDir).filter((n) => n.startsWith('palisade.db'));
  assert.ok(store.includes('palisade.db') && store.includes('palisade.db-wal'), store.join(' '));
  for (const n of store) assert.equal(fs.statSync(path.join(s.dataDir, n)).mode & 0o077, 0, n);
  const c = JSON.parse(fs.readFileSync(f, 'utf8'));
  assert.equal(c.apikey, s.apikey);
  assert.equal(c.secretkey.length, 86);
});

test('signatures: good (v2, v3, GET, POST), bad, missing, expired, unknown key → 401', async () => {
  const base = { command: 'listZones', response: 'json', apiKey: s.apikey };
  const v2 = await raw({ ...base, signature: signParams(base, s.secretkey) });
  assert.equal(v2.status, 200);
  assert.equal(v2.type, 'application/json; charset=UTF-8');
  const v3p = { ...base, signatureVersion: '3', expires: future() };
  assert.equal((await raw({ ...v3p, signature: signParams(v3p, s.secretkey) }, 'POST')).status, 200);
  const lower = { ...base, signatureversion: '3', expires: future() };
  assert.equal((await raw({ ...lower, signature: signParams(lower, s.secretkey) })).status, 200);

  const denied = [
    { ...base },                                                                        // missing signature
    { ...base, signature: signParams(base, s.secretkey + 'x') },                         // wrong secret
    { ...base, signature: 'not base64 at all' },
    { ...base, command: 'listZones', apiKey: 'nope', signature: signParams({ ...base, apiKey: 'nope' }, s.secretkey) },
    (() => { const p = { ...base, signatureVersion: '3' }; return { ...p, signature: signParams(p, s.secretkey) }; })(), // v3 without expires
    (() => { const p = { ...base, signatureVersion: '3', expires: formatExpires(new Date(Date.now() - 1000)) }; return { ...p, signature: signParams(p, s.secretkey) }; })(),
    (() => { const p = { ...base, signatureVersion: '3', expires: 'soon' }; return { ...p, signature: signParams(p, s.secretkey) }; })(),
    { command: 'listZones', response: 'json', signature: 'x' },                          // no apiKey
  ];
  for (const p of denied) {
    const r = await raw(p as Record<string, string>);
    assert.equal(r.status, 401, JSON.stringify(p));
    assert.deepEqual(r.body, { listzonesresponse: { uuidList: [], errorcode: 401, errortext: AUTH } });
  }
  // tampering after signing
  const signed = { ...base, keyword: 'a', signature: signParams({ ...base, keyword: 'a' }, s.secretkey) };
  assert.equal((await raw({ ...signed, keyword: 'b' })).status, 401);
  // Replay of an expired v3 request with two signed parameters folded into one name: the string to sign
  // is the same, but the folded name would hide signatureVersion=3 and with it the expiry check.
  const old = { ...base, signatureVersion: '3', expires: formatExpires(new Date(Date.now() - 3_600_000)) };
  const sig = signParams(old, s.secretkey);
  assert.equal((await raw({ ...old, signature: sig })).status, 401);
  const folded = `apiKey=${encodeURIComponent(s.apikey)}&command=listZones&expires=${encodeURIComponent(old.expires)}`
    + `&response%3Djson%26signatureVersion=3&signature=${encodeURIComponent(sig)}`;
  const replay = await raw({}, 'GET', folded);
  assert.equal(replay.status, 401, JSON.stringify(replay.body));
  // Map parameter names (brackets, dots) remain fine.
  const mp = { command: 'listSecurityGroups', response: 'json', apiKey: s.apikey, 'tags[0].key': 'k', 'tags[0].value': 'v' };
  assert.equal((await raw({ ...mp, signature: signParams(mp, s.secretkey) })).status, 200);
});

test('query strings: + decodes to a space; RFC 3986 client escaping verifies', async () => {
  const p = { command: 'createSecurityGroup', response: 'json', apiKey: s.apikey, name: 'plus sign', description: "it's (a) test!*~" };
  const sig = signParams(p, s.secretkey);
  const qs = Object.entries({ ...p, signature: sig }).map(([k, v]) => `${k}=${encodeURIComponent(v).replace(/%20/g, '+')}`).join('&');
  const r = await raw({}, 'GET', qs);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.createsecuritygroupresponse.securitygroup.name, 'plus sign');
  assert.equal(r.body.createsecuritygroupresponse.securitygroup.description, "it's (a) test!*~");
  // a go-cloudstack/csclient style signature (RFC 3986 escaping of `* ' ( ) !`)
  const q = { command: 'listSecurityGroups', response: 'json', apiKey: s.apikey, keyword: "it's (a)" };
  const text = Object.keys(q).sort().map((k) => `${k}=${encodeRfc3986((q as Record<string, string>)[k]!)}`).join('&').toLowerCase();
  const goSig = createHmac('sha1', s.secretkey).update(text).digest('base64');
  const g = await raw({ ...q, signature: goSig });
  assert.equal(g.status, 200, JSON.stringify(g.body));
  assert.equal(g.body.listsecuritygroupsresponse.count, 1);
});

test('unknown command → 401 (signed: CloudStack refuses it before the signature); missing and malformed parameters → 431 naming them', async () => {
  const u = await s.call('listFoo');
  assert.equal(u.status, 401);
  assert.deepEqual(u.body, { errorresponse: { uuidList: [], errorcode: 401, errortext: AUTH } });
  const m = await s.call('queryAsyncJobResult');
  assert.equal(m.status, 431);
  assert.deepEqual(m.body, { queryasyncjobresultresponse: { uuidList: [], errorcode: 431, cserrorcode: 9999, errortext: 'Unable to execute API command queryasyncjobresult due to missing parameter jobid' } });
  const bad = await s.call('authorizeSecurityGroupIngress', { securitygroupname: 'default', protocol: 'tcp', startport: 'twenty', endport: 22, cidrlist: '0.0.0.0/0' });
  assert.equal(bad.status, 431);
  assert.equal(bad.body.authorizesecuritygroupingressresponse.errortext, 'Unable to execute API command authorizesecuritygroupingress due to invalid value twenty for parameter startport');
  // a command's name is matched exactly, as CloudStack's command map (401 when signed); its parameters'
  // names in any case (ParamUnpackWorker lower-cases them), so SecurityGroupName filters as securitygroupname
  assert.equal((await s.call('LISTSECURITYGROUPS', { securitygroupname: 'default' })).status, 401);
  const exact = await s.call('listSecurityGroups', { securitygroupname: 'default' });
  assert.equal(exact.body.listsecuritygroupsresponse.securitygroup[0].name, 'default');
  await s.call('createSecurityGroup', { name: 'case-other' });
  const folded = await s.call('listSecurityGroups', { SecurityGroupName: 'default' });
  assert.deepEqual(folded.body.listsecuritygroupsresponse.securitygroup.map((g: any) => g.name), ['default'], 'SecurityGroupName filters');
  const unknown = await s.call('listSecurityGroups', { SecurityGroupNames: 'default' });
  assert.ok(unknown.body.listsecuritygroupsresponse.securitygroup.some((g: any) => g.name === 'case-other'), 'an unknown name filters nothing');
  const missing = await s.call('createSecurityGroup', { Nme: 'x' });
  assert.equal(missing.body.createsecuritygroupresponse.errortext, 'Unable to execute API command createsecuritygroup due to missing parameter name');
});

test('async jobs: submission, success, failure, listAsyncJobs; events Scheduled/Started/Completed', async () => {
  const g = (await s.call('createSecurityGroup', { name: 'jobs' })).body.createsecuritygroupresponse.securitygroup;
  const sub = await s.call('authorizeSecurityGroupIngress', { securitygroupid: g.id, protocol: 'tcp', startport: 80, endport: 443, cidrlist: '0.0.0.0/0' });
  assert.equal(sub.status, 200);
  const jobid = sub.body.authorizesecuritygroupingressresponse.jobid;
  assert.match(jobid, /^[0-9a-f-]{36}$/);
  const done = await s.waitJob(jobid);
  assert.equal(done.jobstatus, 1);
  assert.equal(done.jobresultcode, 0);
  assert.equal(done.jobresulttype, 'object');
  assert.equal(done.jobinstancetype, 'SecurityGroup');
  assert.equal(done.jobinstanceid, g.id);
  assert.equal(done.cmd, 'org.apache.cloudstack.api.command.user.securitygroup.AuthorizeSecurityGroupIngressCmd');
  assert.deepEqual(done.jobresult.securitygroup.ingressrule.map((r: any) => [r.protocol, r.startport, r.endport, r.cidr]), [['tcp', 80, 443, '0.0.0.0/0']]);
  const fail = await s.callAndWait('authorizeSecurityGroupIngress', { securitygroupid: g.id, protocol: 'tcp', startport: 80, endport: 443, cidrlist: '0.0.0.0/0' });
  assert.equal(fail.body.jobstatus, 2);
  assert.equal(fail.body.jobinstancetype, 'SecurityGroup');
  assert.equal(fail.body.jobinstanceid, g.id, 'a failed job names its group too');
  assert.deepEqual(fail.body.jobresult, { uuidList: [], errorcode: 530, cserrorcode: 9999, errortext: 'Failed to authorize security group ingress rule(s)' });
  const jobs = (await s.call('listAsyncJobs', {})).body.listasyncjobsresponse.asyncjobs;
  assert.ok(jobs.some((j: any) => j.jobid === jobid && j.jobstatus === 1));
  assert.ok(jobs.some((j: any) => j.jobid === fail.body.jobid && j.jobstatus === 2));
  const ev = (await s.call('listEvents', { type: 'SG.AUTH.INGRESS' })).body.listeventsresponse.event;
  const states = ev.map((e: any) => `${e.state}/${e.level}`);
  assert.deepEqual(states.slice().sort(), ['Completed/ERROR', 'Completed/INFO', 'Scheduled/INFO', 'Scheduled/INFO', 'Started/INFO', 'Started/INFO']);
  const completed = ev.find((e: any) => e.state === 'Completed' && e.level === 'INFO');
  assert.equal(completed.description, `authorizing ingress to group: ${g.id} to cidr list: 0.0.0.0/0`);
  assert.equal(completed.resourceid, g.id);
  assert.equal(completed.resourcetype, 'SecurityGroup');
  assert.equal(completed.username, 'admin');
  const unknownJob = await s.call('queryAsyncJobResult', { jobid: '00000000-0000-4000-8000-000000000000' });
  assert.equal(unknownJob.status, 431);
});

test('listEvents filters: alias type, level, dates, keyword, id, paging', async () => {
  const alias = (await s.call('listEvents', { type: 'SECURITY.GROUP.AUTHORIZE' })).body.listeventsresponse;
  const direct = (await s.call('listEvents', { type: 'SG.AUTH.INGRESS' })).body.listeventsresponse;
  assert.ok(alias.count > 0);
  assert.deepEqual(alias, direct);
  const errors = (await s.call('listEvents', { level: 'ERROR' })).body.listeventsresponse.event;
  assert.ok(errors.length >= 1 && errors.every((e: any) => e.level === 'ERROR'));
  const today = new Date().toISOString().slice(0, 10);
  assert.ok((await s.call('listEvents', { startdate: today })).body.listeventsresponse.count > 0);
  assert.equal((await s.call('listEvents', { enddate: '2000-01-01' })).body.listeventsresponse.count, undefined);
  assert.equal((await s.call('listEvents', { startdate: '2999-01-01 00:00:00' })).body.listeventsresponse.count, undefined);
  const bad = await s.call('listEvents', { startdate: 'yesterday' });
  assert.equal(bad.status, 431);
  for (const startdate of ['2026-13-45', '2026-02-31', '2026-13-45 10:00:00']) {
    assert.equal((await s.call('listEvents', { startdate })).status, 431, startdate);
    assert.equal((await s.call('listAsyncJobs', { startdate })).status, 431, startdate);
  }
  assert.equal((await s.call('listAsyncJobs', { startdate: today })).status, 200);
  const kw = (await s.call('listEvents', { keyword: 'creating security group' })).body.listeventsresponse.event;
  assert.ok(kw.length >= 1 && kw.every((e: any) => e.type === 'SG.CREATE'));
  const one = (await s.call('listEvents', { id: kw[0].id })).body.listeventsresponse;
  assert.equal(one.count, 1);
  const all = (await s.call('listEvents', { pagesize: -1 })).body.listeventsresponse;
  const p1 = (await s.call('listEvents', { page: 1, pagesize: 2 })).body.listeventsresponse;
  assert.equal(p1.event.length, 2);
  assert.equal(p1.count, all.count);
  assert.deepEqual(p1.event.map((e: any) => e.id), all.event.slice(0, 2).map((e: any) => e.id));
});

test('tags on security groups: createTags, listSecurityGroups by tags, listTags, deleteTags', async () => {
  const g = (await s.call('createSecurityGroup', { name: 'tagged' })).body.createsecuritygroupresponse.securitygroup.id;
  const c = await s.callAndWait('createTags', { resourcetype: 'SecurityGroup', resourceids: g, 'tags[0].key': 'env', 'tags[0].value': 'prod', 'tags[1].key': 'team', 'tags[1].value': 'web' });
  assert.equal(c.body.jobstatus, 1, JSON.stringify(c.body));
  const dup = await s.callAndWait('createTags', { resourcetype: 'SecurityGroup', resourceids: g, 'tags[0].key': 'env', 'tags[0].value': 'x' });
  assert.equal(dup.body.jobstatus, 2);
  const badType = await s.callAndWait('createTags', { resourcetype: 'Galaxy', resourceids: g, 'tags[0].key': 'a', 'tags[0].value': 'b' });
  assert.equal(badType.body.jobresult.errortext, 'Invalid resource type: Galaxy');
  const byTag = (await s.call('listSecurityGroups', { 'tags[0].key': 'env', 'tags[0].value': 'prod' })).body.listsecuritygroupsresponse;
  assert.deepEqual(byTag.securitygroup.map((x: any) => x.name), ['tagged']);
  assert.deepEqual(byTag.securitygroup[0].tags.map((t: any) => `${t.key}=${t.value}`).sort(), ['env=prod', 'team=web']);
  assert.equal(byTag.securitygroup[0].tags[0].resourcetype, 'SecurityGroup');
  assert.equal((await s.call('listSecurityGroups', { 'tags[0].key': 'env', 'tags[0].value': 'dev' })).body.listsecuritygroupsresponse.count, undefined);
  // A malformed object-array name is refused for the whole request (ParamUnpackWorker), not ignored.
  for (const bad of ['tags[0]', 'tags[0][1].key', 'tags[x].key', 'tags]0[.key', 'whatever[0]']) {
    const r = await s.call('listSecurityGroups', { [bad]: 'env' });
    assert.equal(r.status, 430, bad);
    assert.equal(r.body.listsecuritygroupsresponse.errortext, `Unable to decode parameter ${bad}; if specifying an object array, please use parameter[index].field=XXX, e.g. userGroupList[0].group=httpGroup`);
    assert.equal(r.body.listsecuritygroupsresponse.cserrorcode, 9999);
  }
  assert.equal((await s.call('listSecurityGroups', { 'whatever[3].x': 'y', 'tags[0].key': 'env' })).body.listsecuritygroupsresponse.count, 1, 'well-formed names pass');
  // resource_tags compares as CloudStack's utf8_general_ci: the filters ignore case (another value still does not match)
  assert.equal((await s.call('listSecurityGroups', { 'tags[0].key': 'ENV', 'tags[0].value': 'Prod' })).body.listsecuritygroupsresponse.count, 1);
  assert.equal((await s.call('listTags', { resourcetype: 'SecurityGroup', key: 'Team', value: 'WEB' })).body.listtagsresponse.count, 1);
  assert.equal((await s.call('listTags', { resourcetype: 'SecurityGroup', key: 'Team', value: 'webs' })).body.listtagsresponse.count, undefined);
  const lt = (await s.call('listTags', { resourcetype: 'SecurityGroup', key: 'team' })).body.listtagsresponse;
  assert.deepEqual(lt.tag.map((t: any) => [t.resourceid, t.value]), [[g, 'web']]);
  const d = await s.callAndWait('deleteTags', { resourcetype: 'SecurityGroup', resourceids: g, 'tags[0].key': 'env' });
  assert.equal(d.body.jobstatus, 1);
  assert.deepEqual((await s.call('listTags', { resourceid: g })).body.listtagsresponse.tag.map((t: any) => t.key), ['team']);
});

test('listApis describes every command with its parameters', async () => {
  const apis = (await s.call('listApis')).body.listapisresponse;
  const byName = new Map(apis.api.map((a: any) => [a.name, a]));
  for (const n of ['createSecurityGroup', 'deleteSecurityGroup', 'updateSecurityGroup', 'listSecurityGroups', 'authorizeSecurityGroupIngress',
    'authorizeSecurityGroupEgress', 'revokeSecurityGroupIngress', 'revokeSecurityGroupEgress', 'createTags', 'deleteTags', 'listTags',
    'queryAsyncJobResult', 'listAsyncJobs', 'listEvents', 'createAccount', 'listAccounts', 'deleteAccount', 'listDomains', 'createDomain',
    'listUsers', 'registerUserKeys', 'listApis', 'listZones']) assert.ok(byName.has(n), n);
  const auth: any = byName.get('authorizeSecurityGroupIngress');
  assert.equal(auth.isasync, true);
  const params = new Map(auth.params.map((p: any) => [p.name, p]));
  assert.equal((params.get('usersecuritygrouplist') as any).type, 'map');
  assert.equal((params.get('cidrlist') as any).type, 'list');
  assert.equal((params.get('startport') as any).type, 'integer');
  assert.equal((byName.get('createSecurityGroup') as any).params.find((p: any) => p.name === 'name').required, true);
  assert.equal((byName.get('createSecurityGroup') as any).isasync, false);
  assert.ok((byName.get('listSecurityGroups') as any).response.some((r: any) => r.name === 'ingressrule'));
  const one = (await s.call('listApis', { name: 'listEvents' })).body.listapisresponse;
  assert.equal(one.count, 1);
});

test('restart keeps state and credentials', async () => {
  const g = (await s.call('createSecurityGroup', { name: 'survivor' })).body.createsecuritygroupresponse.securitygroup.id;
  const a = await s.callAndWait('authorizeSecurityGroupIngress', { securitygroupid: g, protocol: 'udp', startport: 53, endport: 53, cidrlist: '10.0.0.0/8' });
  assert.equal(a.body.jobstatus, 1);
  const beforeList = (await s.call('listSecurityGroups', { listall: true })).body;
  const beforeEvents = (await s.call('listEvents', { pagesize: -1 })).body.listeventsresponse.count;
  const creds = fs.readFileSync(path.join(s.dataDir, 'admin-credentials.json'), 'utf8');
  // two jobs left pending: one of this server (interrupted by the restart), one of another server on a shared store
  const serverId = fs.readFileSync(path.join(s.dataDir, 'server-id'), 'utf8').trim();
  const sqlite = new Database(path.join(s.dataDir, 'palisade.db'));
  sqlite.pragma('busy_timeout = 5000');
  const acct = sqlite.prepare("select a.id as a, u.id as u from users u join accounts a on a.id = u.account_id where u.username = 'admin'").get() as { a: number; u: number };
  const ins = sqlite.prepare("insert into async_jobs (uuid, command, account_id, user_id, status, result_code, result_type, created, server_id) values (?, 'authorizeSecurityGroupIngress', ?, ?, 0, 0, 'object', ?, ?)");
  const mine = randomUUID(); const theirs = randomUUID();
  ins.run(mine, acct.a, acct.u, new Date().toISOString(), serverId);
  ins.run(theirs, acct.a, acct.u, new Date().toISOString(), 'another-server');
  sqlite.close();
  await s.restart();
  const m = (await s.call('queryAsyncJobResult', { jobid: mine })).body.queryasyncjobresultresponse;
  assert.equal(m.jobstatus, 2);
  assert.equal(m.jobresult.errortext, 'Job was cancelled because of management server restart or shutdown');
  assert.equal((await s.call('queryAsyncJobResult', { jobid: theirs })).body.queryasyncjobresultresponse.jobstatus, 0, "another server's job is left alone");
  assert.deepEqual((await s.call('listSecurityGroups', { listall: true })).body, beforeList);
  assert.equal((await s.call('listEvents', { pagesize: -1 })).body.listeventsresponse.count, beforeEvents);
  assert.equal(fs.readFileSync(path.join(s.dataDir, 'admin-credentials.json'), 'utf8'), creds);
  assert.ok(/graceful|shutting down/.test(s.output()), 'the server shut down on SIGTERM');
});
