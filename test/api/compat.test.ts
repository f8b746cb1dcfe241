// CloudStack-compatibility details against the real server process, each checked against CloudStack's
// source: listCapabilities, listApis' `related`, how an unknown command is answered, the `expires`
// spellings DateUtil.parseTZDateString takes, names' case, async job fields, session + apiKey.
// Every accepted case has its refused twin.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { startServer, type TestServer, type Creds } from '../helpers/server.js';
import { mustLogin, postForm, sessionCall } from '../helpers/session.js';
import { signParams, formatExpires } from '../../src/api/signing.js';

let s: TestServer;
let user: Creds;
let adminPassword: string;
const AUTH = 'unable to verify user credentials and/or request signature';

before(async () => {
  s = await startServer();
  adminPassword = JSON.parse(fs.readFileSync(path.join(s.dataDir, 'admin-credentials.json'), 'utf8')).password;
  const a = await s.call('createAccount', { username: 'carol', password: 'pw-carol-secret', email: 'c@example.org', firstname: 'c', lastname: 'T', accounttype: 0 });
  assert.equal(a.status, 200, JSON.stringify(a.body));
  const k = await s.call('registerUserKeys', { id: a.body.createaccountresponse.account.user[0].id });
  user = { apikey: k.body.registeruserkeysresponse.userkeys.apikey, secretkey: k.body.registeruserkeysresponse.userkeys.secretkey };
});
after(async () => { await s?.stop(); });

/** A signed POST of exactly these parameters (names as given), signature version 2. */
async function signed(params: Record<string, string>, creds: Creds = { apikey: s.apikey, secretkey: s.secretkey }) {
  const p = { ...params, apiKey: creds.apikey };
  return postForm(s.url, { ...p, signature: signParams(p, creds.secretkey) });
}

test('listCapabilities: every role gets the capability object, with honest values', async () => {
  for (const who of [undefined, user]) {
    const r = await s.call('listCapabilities', {}, who);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const c = r.body.listcapabilitiesresponse.capability;
    assert.equal(c.securitygroupsenabled, true);
    assert.equal(c.cloudstackversion, '4.19.0.0');
    assert.equal(c.allowusercreateprojects, false);
    assert.equal(c.userpublictemplateenabled, false);
    assert.equal(c.supportELB, 'false');
    assert.equal(c.customdiskofferingminsize, 1);
    assert.equal(c.customdiskofferingmaxsize, 1024);
    assert.equal(c.kvmsnapshotenabled, false);
    assert.equal(c.allowuserviewdestroyedvm, true);
    // CloudStack leaves the API-limit fields out while throttling is off (the default; apilimits test: on).
    assert.ok(!('apilimitinterval' in c) && !('apilimitmax' in c));
  }
  // and it is a command like any other: unsigned, it is refused
  const unsigned = await postForm(s.url, { command: 'listCapabilities', response: 'json' });
  assert.equal(unsigned.status, 401);
});

test('listApis lists listCapabilities; related = the other commands answering with the same object', async () => {
  const r = await s.call('listApis', {}, user);
  const apis: any[] = r.body.listapisresponse.api;
  const byName = new Map(apis.map((a) => [a.name, a]));
  assert.ok(byName.has('listCapabilities'));
  assert.equal(byName.get('listCapabilities').related, '');
  const create = byName.get('createSecurityGroup');
  const related = create.related.split(',');
  assert.ok(related.includes('listSecurityGroups') && related.includes('authorizeSecurityGroupIngress'), create.related);
  assert.ok(!related.includes('createSecurityGroup'), 'not itself');
  assert.ok(!related.includes('deleteSecurityGroup'), 'a bare success is no relation');
  // a command answering a bare success has none; nor has a parameter naming no entity
  assert.ok(!('related' in byName.get('deleteSecurityGroup')));
  const sgid = byName.get('deleteSecurityGroup').params.find((p: any) => p.name === 'id');
  assert.ok(sgid.related.split(',').includes('listSecurityGroups'), sgid.related);
  const name = create.params.find((p: any) => p.name === 'name');
  assert.ok(!('related' in name));
  // name= finds an API by its exact name, as the discovery plugin's map
  assert.equal((await s.call('listApis', { name: 'listCapabilities' }, user)).body.listapisresponse.count, 1);
  const lower = await s.call('listApis', { name: 'listcapabilities' }, user);
  assert.equal(lower.status, 431);
});

test('an unknown command: 401 signed or unsigned (CloudStack checks the name before the signature); 432 to a live session', async () => {
  const signedUnknown = await signed({ command: 'listFoo', response: 'json' });
  assert.equal(signedUnknown.status, 401);
  assert.deepEqual(signedUnknown.body, { errorresponse: { uuidList: [], errorcode: 401, errortext: AUTH } });
  assert.equal((await postForm(s.url, { command: 'listFoo', response: 'json' })).status, 401);
  // the twin: a known command with the same signing passes
  assert.equal((await signed({ command: 'listZones', response: 'json' })).status, 200);
  const admin = await mustLogin(s.url, 'admin', adminPassword);
  const viaSession = await sessionCall(s.url, admin, 'listFoo');
  assert.equal(viaSession.status, 432);
  assert.equal(viaSession.body.errorresponse.errortext, 'Unknown API command: listFoo');
  const carol = await mustLogin(s.url, 'carol', 'pw-carol-secret');
  const byUser = await sessionCall(s.url, carol, 'listFoo');
  assert.equal(byUser.status, 432);
  assert.equal(byUser.body.errorresponse.errortext, 'The given command does not exist or it is not available for user');
  // a 432 is a ServerApiException: its cserrorcode (9999, CSExceptionErrorCode's for ServerApiException) is
  // in the body, where the 401s (getSerializedApiError(int, …)) have none
  for (const r of [viaSession, byUser]) assert.equal(r.body.errorresponse.cserrorcode, 9999);
  // a session cookie with the wrong key does not learn that much
  const wrongKey = await sessionCall(s.url, { cookie: admin.cookie, sessionkey: 'wrong' }, 'listFoo');
  assert.equal(wrongKey.status, 401);
  assert.ok(!('cserrorcode' in wrongKey.body.errorresponse));
});

test('a signed call to a command the key\'s role may not use: 432 before the signature is looked at (verifyRequest); 401 until the key is an enabled user\'s', async () => {
  const DENIED = { errorresponse: { uuidList: [], errorcode: 432, cserrorcode: 9999, errortext: 'The given command does not exist or it is not available for user' } };
  const forged = { apikey: user.apikey, secretkey: 'not-carols-secret' };
  // carol (a user) and listHosts (root admin only): refused by role whether the signature is good or not,
  // as CloudStack's commandAvailable runs before it reads the secret key
  for (const creds of [user, forged]) {
    const r = await signed({ command: 'listHosts', response: 'json' }, creds);
    assert.equal(r.status, 432);
    assert.deepEqual(r.body, DENIED);
  }
  // the twins: a command her role has, badly signed, is 401 (no cserrorcode); well signed, 200
  const bad = await signed({ command: 'listZones', response: 'json' }, forged);
  assert.equal(bad.status, 401);
  assert.deepEqual(bad.body, { listzonesresponse: { uuidList: [], errorcode: 401, errortext: AUTH } });
  assert.equal((await signed({ command: 'listZones', response: 'json' }, user)).status, 200);
  // no more than CloudStack tells: a key of no user, a missing signature, or a stale version-3 request is
  // 401 before the role is looked at
  assert.equal((await signed({ command: 'listHosts', response: 'json' }, { apikey: 'no-such-key', secretkey: 'x' })).status, 401);
  assert.equal((await postForm(s.url, { command: 'listHosts', response: 'json', apiKey: user.apikey })).status, 401);
  const stale = await signed({ command: 'listHosts', response: 'json', signatureVersion: '3', expires: formatExpires(new Date(Date.now() - 60_000)) }, forged);
  assert.equal(stale.status, 401);
});

test('the role check before the signature uses the key\'s own role, and only an enabled user\'s: domain admin 432 on a root-admin command, past it on its own; disabled user or account 401', async () => {
  const keysOf = async (username: string, accounttype: number): Promise<Creds & { userId: string; accountId: string }> => {
    const a = (await s.call('createAccount', { username, password: `pw-${username}-secret`, email: `${username}@example.org`, firstname: username, lastname: 'T', accounttype })).body.createaccountresponse.account;
    const k = (await s.call('registerUserKeys', { id: a.user[0].id })).body.registeruserkeysresponse.userkeys;
    return { apikey: k.apikey, secretkey: k.secretkey, userId: a.user[0].id, accountId: a.id };
  };
  // a domain admin: listHosts (root admin only) is 432 forged or not; listDomains (root and domain
  // admins) passes the role check, so forged it meets the signature (401) and signed it is answered
  const rolf = await keysOf('rolf', 2);
  const rolfForged = { apikey: rolf.apikey, secretkey: 'not-rolfs-secret' };
  for (const creds of [rolf, rolfForged]) assert.equal((await signed({ command: 'listHosts', response: 'json' }, creds)).status, 432);
  assert.equal((await signed({ command: 'listDomains', response: 'json' }, rolfForged)).status, 401);
  assert.equal((await signed({ command: 'listDomains', response: 'json' }, rolf)).status, 200);
  // a root admin's key never meets the role check: forged, listHosts is 401
  assert.equal((await signed({ command: 'listHosts', response: 'json' }, { apikey: s.apikey, secretkey: 'not-the-admins-secret' })).status, 401);
  // a disabled user, then a disabled account (states an operator sets in the store): 401 for a command
  // the role lacks, signed well or not — the key is not an enabled user's, so its role is not told
  const erin = await keysOf('rolecheck-erin', 0);
  const erinForged = { apikey: erin.apikey, secretkey: 'not-erins-secret' };
  assert.equal((await signed({ command: 'listHosts', response: 'json' }, erinForged)).status, 432, 'enabled: the role answers');
  const file = new Database(path.join(s.dataDir, 'palisade.db'));
  try {
    for (const [table, uuid] of [['users', erin.userId], ['accounts', erin.accountId]] as const) {
      file.prepare(`UPDATE ${table} SET state = 'disabled' WHERE uuid = ?`).run(uuid);
      for (const creds of [erin, erinForged]) {
        for (const command of ['listHosts', 'listZones']) {
          const r = await signed({ command, response: 'json' }, creds);
          assert.equal(r.status, 401, `${table} disabled, ${command}, ${creds === erin ? 'good' : 'forged'} signature`);
          assert.ok(!('cserrorcode' in Object.values(r.body as Record<string, any>)[0]));
        }
      }
      // unsigned, with the key alone: 401 as well
      assert.equal((await postForm(s.url, { command: 'listHosts', response: 'json', apiKey: erin.apikey })).status, 401);
      file.prepare(`UPDATE ${table} SET state = 'enabled' WHERE uuid = ?`).run(uuid);
    }
  } finally {
    file.close();
  }
  assert.equal((await signed({ command: 'listZones', response: 'json' }, erin)).status, 200, 'enabled again');
});

test('a live session call that also carries an apiKey is a session call (200); a stale cookie falls back to the signature', async () => {
  const admin = await mustLogin(s.url, 'admin', adminPassword);
  const both = await sessionCall(s.url, admin, 'listZones', { apiKey: s.apikey });
  assert.equal(both.status, 200, JSON.stringify(both.body));
  // the session still needs its key: the apiKey does not stand in for it
  assert.equal((await sessionCall(s.url, { cookie: admin.cookie }, 'listZones', { apiKey: s.apikey })).status, 401);
  // a cookie naming no session: the request is judged by its signature, unsigned → 401, signed → 200
  const stale = { cookie: 'no-such-session', sessionkey: 'x' };
  assert.equal((await sessionCall(s.url, stale, 'listZones', { apiKey: s.apikey })).status, 401);
  const p = { command: 'listZones', response: 'json', apiKey: s.apikey };
  const signedWithStale = await postForm(s.url, { ...p, signature: signParams(p, s.secretkey) }, { cookie: 'JSESSIONID=no-such-session' });
  assert.equal(signedWithStale.status, 200, JSON.stringify(signedWithStale.body));
});

test('expires in the spellings CloudStack parses is accepted end to end; a near miss is 401 and changes nothing', async () => {
  const t = new Date(Date.now() + 600_000);
  const iso = t.toISOString();                       // 2026-12-07T16:00:00.000Z
  const accepted = [iso.slice(0, 16) + 'Z', iso.toLowerCase(), iso.slice(0, 19) + 'Z+0000', iso.slice(0, 19) + '+00', formatExpires(t)];
  for (const expires of accepted) {
    const r = await signed({ command: 'createSecurityGroup', response: 'json', name: `exp-${accepted.indexOf(expires)}`, signatureVersion: '3', expires });
    assert.equal(r.status, 200, `${expires}: ${JSON.stringify(r.body)}`);
  }
  const refused = [iso.slice(0, 13) + 'Z', iso.slice(0, 19) + 'Z+00:00', iso.slice(0, 19) + '+0', ` ${iso}`, iso.slice(0, 19).replace('T', 't') + '+0000'];
  for (const expires of refused) {
    const r = await signed({ command: 'createSecurityGroup', response: 'json', name: 'exp-refused', signatureVersion: '3', expires });
    assert.equal(r.status, 401, expires);
    assert.equal(r.body.createsecuritygroupresponse.errortext, AUTH);
  }
  const groups = await s.call('listSecurityGroups', { securitygroupname: 'exp-refused' });
  assert.equal(groups.body.listsecuritygroupsresponse.count, undefined, 'nothing created');
});

test('async jobs: cmd is the Java class CloudStack records; a failed authorize names its group (jobinstanceid) like a good one', async () => {
  const g = (await s.call('createSecurityGroup', { name: 'jobs-compat' }, user)).body.createsecuritygroupresponse.securitygroup;
  const rule = { securitygroupid: g.id, protocol: 'tcp', startport: 22, endport: 22, cidrlist: '192.0.2.0/24' };
  const good = await s.callAndWait('authorizeSecurityGroupIngress', rule, user);
  assert.equal(good.body.jobstatus, 1);
  const bad = await s.callAndWait('authorizeSecurityGroupIngress', rule, user);   // the same rule again: the job fails
  assert.equal(bad.body.jobstatus, 2);
  for (const j of [good.body, bad.body]) {
    assert.equal(j.cmd, 'org.apache.cloudstack.api.command.user.securitygroup.AuthorizeSecurityGroupIngressCmd');
    assert.equal(j.jobinstancetype, 'SecurityGroup');
    assert.equal(j.jobinstanceid, g.id);
  }
  // a revoke's job is of type SecurityGroup too (RevokeSecurityGroupIngressCmd.getApiResourceType) and
  // names the rule's group — done or failed (egress revoke of an ingress rule: the job fails)
  const ruleId = good.body.jobresult.securitygroup.ingressrule[0].ruleid;
  const wrongWay = await s.callAndWait('revokeSecurityGroupEgress', { id: ruleId }, user);
  assert.equal(wrongWay.body.jobstatus, 2);
  assert.equal(wrongWay.body.cmd, 'org.apache.cloudstack.api.command.user.securitygroup.RevokeSecurityGroupEgressCmd');
  const revoke = await s.callAndWait('revokeSecurityGroupIngress', { id: ruleId }, user);
  assert.equal(revoke.body.jobstatus, 1);
  assert.equal(revoke.body.cmd, 'org.apache.cloudstack.api.command.user.securitygroup.RevokeSecurityGroupIngressCmd');
  for (const j of [wrongWay.body, revoke.body]) {
    assert.equal(j.jobinstancetype, 'SecurityGroup');
    assert.equal(j.jobinstanceid, g.id);
  }
  const viaQuery = (await s.call('queryAsyncJobResult', { jobid: revoke.body.jobid }, user)).body.queryasyncjobresultresponse;
  assert.equal(viaQuery.jobinstanceid, g.id);
  // the blocked twin: a rule that does not exist is refused at submission, so there is no job to name anything
  const unknown = await s.call('revokeSecurityGroupIngress', { id: '00000000-0000-0000-0000-000000000042' }, user);
  assert.equal(unknown.status, 431);
  assert.ok(!('jobid' in unknown.body.revokesecuritygroupingressresponse));
  // listAsyncJobs shows the same, and its keyword searches the class name, as CloudStack's job_cmd
  const listed = (await s.call('listAsyncJobs', { keyword: 'AuthorizeSecurityGroupIngressCmd' }, user)).body.listasyncjobsresponse;
  assert.equal(listed.count, 2);
  assert.equal((await s.call('listAsyncJobs', { keyword: 'NoSuchCmd' }, user)).body.listasyncjobsresponse.count, undefined);
});

test('a job stored before cmd was the class (its API name) is shown with the class after the upgrade (migration 013)', async () => {
  const t = await startServer();
  try {
    const g = (await t.call('createSecurityGroup', { name: 'old-job' })).body.createsecuritygroupresponse.securitygroup;
    const done = await t.callAndWait('authorizeSecurityGroupIngress', { securitygroupid: g.id, protocol: 'tcp', startport: 22, endport: 22, cidrlist: '192.0.2.0/24' });
    const renewed = await t.callAndWait('authorizeSecurityGroupIngress', { securitygroupid: g.id, protocol: 'tcp', startport: 23, endport: 23, cidrlist: '192.0.2.0/24' });
    await t.kill('SIGTERM');
    // the store as the previous version left it: the API name in cmd, migration 013 (and the later ones,
    // no-ops on SQLite) not yet run
    const file = new Database(path.join(t.dataDir, 'palisade.db'));
    file.prepare('UPDATE async_jobs SET command = ? WHERE uuid = ?').run('authorizeSecurityGroupIngress', done.body.jobid);
    assert.ok(file.prepare('DELETE FROM kysely_migration WHERE name >= ?').run('013_job_classes').changes >= 1);
    file.close();
    await t.start();
    const CLASS = 'org.apache.cloudstack.api.command.user.securitygroup.AuthorizeSecurityGroupIngressCmd';
    const q = (await t.call('queryAsyncJobResult', { jobid: done.body.jobid })).body.queryasyncjobresultresponse;
    assert.equal(q.cmd, CLASS);
    assert.equal(q.jobinstanceid, g.id);
    const listed = (await t.call('listAsyncJobs', { keyword: 'AuthorizeSecurityGroupIngressCmd' })).body.listasyncjobsresponse;
    assert.deepEqual(listed.asyncjobs.map((j: any) => [j.jobid, j.cmd]).sort(), [[done.body.jobid, CLASS], [renewed.body.jobid, CLASS]].sort());
    // the twin: nothing still answers with the API name
    assert.equal((await t.call('listAsyncJobs', { keyword: 'authorizeSecurityGroupIngress' })).body.listasyncjobsresponse.count, 2, 'the class contains the name');
    assert.ok(listed.asyncjobs.every((j: any) => j.cmd !== 'authorizeSecurityGroupIngress'));
  } finally {
    await t.stop();
  }
});

test('job classes: a root admin runs the ByAdmin variant where CloudStack has one; every async command has a class', async () => {
  const { jobClass, JOB_CLASS_APIS } = await import('../../src/model/job-classes.js');
  const { allCommands } = await import('../../src/api/registry.js');
  assert.equal(jobClass('deployVirtualMachine', 'admin'), 'org.apache.cloudstack.api.command.admin.vm.DeployVMCmdByAdmin');
  assert.equal(jobClass('deployVirtualMachine', 'domainadmin'), 'org.apache.cloudstack.api.command.user.vm.DeployVMCmd');
  assert.equal(jobClass('authorizeSecurityGroupEgress', 'admin'), 'org.apache.cloudstack.api.command.user.securitygroup.AuthorizeSecurityGroupEgressCmd');
  const async = allCommands().filter((c) => c.async).map((c) => c.name).sort();
  assert.deepEqual(async, [...JOB_CLASS_APIS].sort());
});

test('names: command, response, sessionkey and login\'s parameters exactly, a command\'s parameters in any case (ParamUnpackWorker); signing names in any case', async () => {
  // `command` by that exact name and value (ApiServer's command map); signed: 401 either way
  assert.equal((await signed({ Command: 'listZones', response: 'json' })).status, 401);
  assert.equal((await signed({ command: 'listzones', response: 'json' })).status, 401);
  assert.equal((await signed({ command: 'listZones', response: 'json' })).status, 200);
  // apiKey, signature, signatureVersion, expires: any case (verifyRequest compares them ignoring case)
  const p = { command: 'listZones', response: 'json', APIKEY: s.apikey, SignatureVersion: '3', EXPIRES: formatExpires(new Date(Date.now() + 600_000)) };
  assert.equal((await postForm(s.url, { ...p, SIGNATURE: signParams(p, s.secretkey) })).status, 200);
  // a session: another case of a command is 432, no `command` at all 400; `sessionkey` only by that name
  const admin = await mustLogin(s.url, 'admin', adminPassword);
  assert.equal((await sessionCall(s.url, admin, 'listzones')).status, 432);
  const none = await postForm(s.url, { Command: 'listZones', response: 'json', sessionkey: admin.sessionkey }, { cookie: `JSESSIONID=${admin.cookie}` });
  assert.deepEqual(none.body, { errorresponse: { uuidList: [], errorcode: 400, errortext: 'no command specified' } });
  const badKeyName = await postForm(s.url, { command: 'listZones', response: 'json', SessionKey: admin.sessionkey }, { cookie: `JSESSIONID=${admin.cookie}` });
  assert.equal(badKeyName.status, 401);
  assert.equal((await sessionCall(s.url, admin, 'listZones')).status, 200);
  // login and logout are found in any case (APIAuthenticationManagerImpl lower-cases their names)
  const login = await postForm(s.url, { command: 'LOGIN', response: 'json', username: 'carol', password: 'pw-carol-secret' });
  assert.equal(login.status, 200, JSON.stringify(login.body));
  const wrongName = await postForm(s.url, { command: 'login', response: 'json', UserName: 'carol', password: 'pw-carol-secret' });
  assert.equal(wrongName.status, 431, 'username is read by its exact name');
  // a command's parameters in any case: CloudStack's ParamUnpackWorker lower-cases every name before
  // ParamProcessWorker reads it (a map parameter's name too; its field names stay as sent)
  const created = await s.call('createSecurityGroup', { Name: 'case-x', Description: 'D' }, user);
  assert.equal(created.status, 200, JSON.stringify(created.body));
  assert.equal(created.body.createsecuritygroupresponse.securitygroup.description, 'D');
  assert.equal((await s.call('createSecurityGroup', { name: 'case-x' }, user)).status, 431, 'the same name again is a duplicate');
  const listed = await s.call('listSecurityGroups', { SecurityGroupName: 'case-x' }, user);
  assert.deepEqual(listed.body.listsecuritygroupsresponse.securitygroup.map((g: any) => g.name), ['case-x'], 'SecurityGroupName filters');
  const missing = await s.call('createSecurityGroup', { Nam: 'case-y' }, user);
  assert.equal(missing.body.createsecuritygroupresponse.errortext, 'Unable to execute API command createsecuritygroup due to missing parameter name');
  // a map parameter's name in any case, its field names as sent (CloudStack reads userGroup.get("account"))
  const mapped = await s.callAndWait('authorizeSecurityGroupIngress', { SecurityGroupName: 'case-x', Protocol: 'TCP', StartPort: 5432, EndPort: 5432, 'UserSecurityGroupList[0].account': 'carol', 'UserSecurityGroupList[0].group': 'case-x' }, user);
  assert.equal(mapped.body.jobstatus, 1, JSON.stringify(mapped.body));
  assert.deepEqual(mapped.body.jobresult.securitygroup.ingressrule.map((r: any) => [r.startport, r.securitygroupname, r.account]), [[5432, 'case-x', 'carol']]);
  const fieldCase = await s.callAndWait('authorizeSecurityGroupIngress', { securitygroupname: 'case-x', protocol: 'tcp', startport: 5433, endport: 5433, 'usersecuritygrouplist[0].Account': 'carol', 'usersecuritygrouplist[0].Group': 'case-x' }, user);
  assert.notEqual(fieldCase.status === 200 && fieldCase.body.jobstatus, 1, 'Account/Group are no account/group: ' + JSON.stringify(fieldCase.body));
  const rules = (await s.call('listSecurityGroups', { securitygroupname: 'case-x' }, user)).body.listsecuritygroupsresponse.securitygroup[0].ingressrule;
  assert.deepEqual(rules.map((r: any) => r.startport), [5432], 'nothing was added by the near miss');
});

test('login: domainid, or domainId when domainid is absent (DefaultLoginAPIAuthenticatorCmd reads both names); any other spelling is no domain', async () => {
  const d = (await s.call('createDomain', { name: 'logindom' })).body.createdomainresponse.domain;
  const a = await s.call('createAccount', { username: 'dora', password: 'pw-dora-secret', email: 'd@example.org', firstname: 'd', lastname: 'T', accounttype: 0, domainid: d.id });
  assert.equal(a.status, 200, JSON.stringify(a.body));
  const attempt = (extra: Record<string, string>) => postForm(s.url, { command: 'login', response: 'json', username: 'dora', password: 'pw-dora-secret', ...extra });
  const lower = await attempt({ domainid: d.id });
  assert.equal(lower.status, 200, JSON.stringify(lower.body));
  const camel = await attempt({ domainId: d.id });
  assert.equal(camel.status, 200, JSON.stringify(camel.body));
  assert.equal(camel.body.loginresponse.domainid, d.id);
  // the near misses: another spelling is ignored, so the user is looked for in ROOT and not found there
  const other = await attempt({ DomainId: d.id });
  assert.equal(other.status, 531, JSON.stringify(other.body));
  assert.match(other.body.loginresponse.errortext, /Failed to authenticate user dora/);
  // domainid takes precedence over domainId
  const both = await attempt({ domainid: d.id, domainId: '00000000-0000-0000-0000-000000000000' });
  assert.equal(both.status, 200, JSON.stringify(both.body));
  const bothWrong = await attempt({ domainId: d.id, domainid: '00000000-0000-0000-0000-000000000000' });
  assert.equal(bothWrong.status, 531);
});
