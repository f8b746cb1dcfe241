// CloudStack-compatibility details against the real server process, each checked against CloudStack's
// source: listCapabilities, listApis' `related`, how an unknown command is answered, the `expires`
// spellings DateUtil.parseTZDateString takes, names' case, async job fields, session + apiKey.
// Every accepted case has its refused twin.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
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
    // CloudStack leaves the API-limit fields out while throttling is off; Palisade has none.
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
});
