// Accounts, domains, roles and scoping; permission denials between accounts; a rule referencing
// another account's group; groups in use by VMs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer, type Creds } from '../helpers/server.js';

let s: TestServer;
let d1: string; let d2: string;
let alice: Creds; let bob: Creds; let carol: Creds; let dadmin: Creds;

async function makeUser(name: string, domainid: string, accounttype = 0): Promise<Creds & { accountId: string }> {
  const r = await s.call('createAccount', { username: name, password: 'pw-' + name, email: `${name}@example.org`, firstname: name, lastname: 'Test', domainid, accounttype });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const acct = r.body.createaccountresponse.account;
  assert.equal(acct.name, name);
  assert.equal(acct.accounttype, accounttype);
  assert.equal(acct.user[0].username, name);
  const k = await s.call('registerUserKeys', { id: acct.user[0].id });
  assert.equal(k.status, 200, JSON.stringify(k.body));
  const { apikey, secretkey } = k.body.registeruserkeysresponse.userkeys;
  return { apikey, secretkey, accountId: acct.id };
}
const groupsOf = (r: { body: any }) => (r.body.listsecuritygroupsresponse.securitygroup ?? []).map((g: any) => `${g.account}/${g.name}`).sort();

before(async () => {
  s = await startServer();
  d1 = (await s.call('createDomain', { name: 'd1' })).body.createdomainresponse.domain.id;
  d2 = (await s.call('createDomain', { name: 'd2' })).body.createdomainresponse.domain.id;
  alice = await makeUser('alice', d1);
  bob = await makeUser('bob', d1);
  carol = await makeUser('carol', d2);
  dadmin = await makeUser('dadmin', d1, 2);
});
after(async () => { await s?.stop(); });

test('createAccount creates the account default group; listDomains/listAccounts/listUsers', async () => {
  const g = await s.call('listSecurityGroups', {}, alice);
  const def = g.body.listsecuritygroupsresponse.securitygroup;
  assert.equal(def.length, 1);
  assert.equal(def[0].name, 'default');
  assert.equal(def[0].description, 'Default Security Group');
  assert.deepEqual(def[0].ingressrule, []);
  assert.deepEqual(def[0].egressrule, []);
  assert.equal(def[0].domainpath, 'ROOT/d1');
  const doms = (await s.call('listDomains', { listall: true })).body.listdomainsresponse;
  assert.deepEqual(doms.domain.map((d: any) => d.path).sort(), ['ROOT', 'ROOT/d1', 'ROOT/d2']);
  assert.equal(doms.domain.find((d: any) => d.name === 'd1').parentdomainname, 'ROOT');
  const dup = await s.call('createDomain', { name: 'd1' });
  assert.equal(dup.status, 431);
  const accts = (await s.call('listAccounts', {})).body.listaccountsresponse;
  assert.deepEqual(accts.account.map((a: any) => a.name).sort(), ['admin', 'alice', 'bob', 'carol', 'dadmin']);
  assert.deepEqual((await s.call('listAccounts', {}, alice)).body.listaccountsresponse.account.map((a: any) => a.name), ['alice']);
  const d1accts = (await s.call('listAccounts', {}, dadmin)).body.listaccountsresponse.account.map((a: any) => a.name).sort();
  assert.deepEqual(d1accts, ['alice', 'bob', 'dadmin']);
  const users = (await s.call('listUsers', { domainid: d1 })).body.listusersresponse.user.map((u: any) => u.username).sort();
  assert.deepEqual(users, ['alice', 'bob', 'dadmin']);
  assert.ok(!JSON.stringify((await s.call('listUsers', {})).body).includes('secretkey'), 'listUsers never shows secret keys');
  const dupAcct = await s.call('createAccount', { username: 'alice', password: 'x', email: 'a@b', firstname: 'a', lastname: 'b', domainid: d1 });
  assert.equal(dupAcct.status, 431);
  assert.equal(dupAcct.body.createaccountresponse.errortext, 'The specified account: alice already exists');
  // names are compared as CloudStack's collation does: without regard to case
  const dupCase = await s.call('createAccount', { username: 'ALICE', password: 'x', email: 'a@b', firstname: 'a', lastname: 'b', domainid: d1 });
  assert.equal(dupCase.status, 431);
  assert.equal(dupCase.body.createaccountresponse.errortext, 'The specified account: ALICE already exists');
  const dupUser = await s.call('createAccount', { account: 'fresh', username: 'Bob', password: 'x', email: 'a@b', firstname: 'a', lastname: 'b', domainid: d1 });
  assert.equal(dupUser.status, 431);
  assert.match(dupUser.body.createaccountresponse.errortext, /The user Bob already exists in domain/);
  assert.equal((await s.call('listAccounts', { domainid: d1 })).body.listaccountsresponse.account.some((a: any) => a.name === 'fresh'), false, 'nothing created');
  assert.deepEqual((await s.call('listAccounts', { name: 'ALICE', domainid: d1 })).body.listaccountsresponse.account.map((a: any) => a.name), ['alice']);
  assert.deepEqual((await s.call('listUsers', { username: 'BOB', domainid: d1 })).body.listusersresponse.user.map((u: any) => u.username), ['bob']);
  // and an account named in another case is that account (the twin: a name no account has is refused)
  assert.equal((await s.call('listSecurityGroups', { account: 'Alice', domainid: d1 })).status, 200);
  assert.equal((await s.call('listSecurityGroups', { account: 'alicia', domainid: d1 })).status, 431);
});

test('role checks: users cannot call admin commands (432, as CloudStack hides them)', async () => {
  for (const [cmd, params] of [['createAccount', { username: 'x', password: 'x', email: 'x@y', firstname: 'x', lastname: 'y' }], ['createDomain', { name: 'x' }], ['listDomains', {}]] as const) {
    const r = await s.call(cmd, params, alice);
    assert.equal(r.status, 432, cmd);
    assert.equal(r.body.errorresponse.errortext, 'The given command does not exist or it is not available for user');
  }
  const own = (await s.call('listSecurityGroups', {}, alice)).body.listsecuritygroupsresponse.securitygroup[0].id;
  const upd = await s.call('updateSecurityGroup', { id: own, name: 'x' }, alice);
  assert.equal(upd.status, 432);
  const apis = (await s.call('listApis', {}, alice)).body.listapisresponse.api.map((a: any) => a.name);
  assert.ok(apis.includes('authorizeSecurityGroupIngress') && !apis.includes('createAccount'));
});

test('permission denials between two accounts of a domain', async () => {
  const a1 = (await s.call('createSecurityGroup', { name: 'alice-web' }, alice)).body.createsecuritygroupresponse.securitygroup.id;
  const snapshot = async () => JSON.stringify((await s.call('listSecurityGroups', { id: a1 }, alice)).body);
  const before0 = await snapshot();
  // bob cannot see it, cannot change it, cannot delete it
  assert.equal((await s.call('listSecurityGroups', { id: a1 }, bob)).body.listsecuritygroupsresponse.count, undefined);
  // refused at submission (as CloudStack's ACL check of securitygroupid): no job
  const auth = await s.call('authorizeSecurityGroupIngress', { securitygroupid: a1, protocol: 'tcp', startport: 22, endport: 22, cidrlist: '0.0.0.0/0' }, bob);
  assert.equal(auth.status, 531);
  assert.equal(auth.body.authorizesecuritygroupingressresponse.cserrorcode, 4365);
  assert.equal(auth.body.authorizesecuritygroupingressresponse.jobid, undefined);
  const del = await s.call('deleteSecurityGroup', { id: a1 }, bob);
  assert.equal(del.status, 531);
  const lst = await s.call('listSecurityGroups', { account: 'alice', domainid: d1 }, bob);
  assert.equal(lst.status, 531);
  const asAlice = await s.call('createSecurityGroup', { name: 'sneaky', account: 'alice', domainid: d1 }, bob);
  assert.equal(asAlice.status, 531);
  const tag = await s.callAndWait('createTags', { resourcetype: 'SecurityGroup', resourceids: a1, 'tags[0].key': 'k', 'tags[0].value': 'v' }, bob);
  assert.equal(tag.body.jobstatus, 2);
  assert.equal(tag.body.jobresult.errorcode, 531);
  assert.equal(await snapshot(), before0, 'denied requests changed nothing');
  // alice may; bob's revoke of alice's rule is denied
  const ok = await s.callAndWait('authorizeSecurityGroupIngress', { securitygroupid: a1, protocol: 'tcp', startport: 22, endport: 22, cidrlist: '0.0.0.0/0' }, alice);
  assert.equal(ok.body.jobstatus, 1);
  const rule = ok.body.jobresult.securitygroup.ingressrule[0].ruleid;
  const rv = await s.call('revokeSecurityGroupIngress', { id: rule }, bob);
  assert.equal(rv.status, 531);
  // bob cannot read alice's async job either
  const q = await s.call('queryAsyncJobResult', { jobid: ok.body.jobid }, bob);
  assert.equal(q.status, 531);
  // carol (another domain) is denied too; the domain admin of d1 may act on alice's group
  const c = await s.call('authorizeSecurityGroupIngress', { securitygroupid: a1, protocol: 'udp', startport: 53, endport: 53, cidrlist: '0.0.0.0/0' }, carol);
  assert.equal(c.status, 531);
  const da = await s.callAndWait('authorizeSecurityGroupIngress', { securitygroupid: a1, protocol: 'udp', startport: 53, endport: 53, cidrlist: '0.0.0.0/0' }, dadmin);
  assert.equal(da.body.jobstatus, 1, JSON.stringify(da.body));
});

test('list scoping: default own account, account+domainid, domainid, isrecursive, listall', async () => {
  await s.call('createSecurityGroup', { name: 'carol-db' }, carol);
  assert.deepEqual(groupsOf(await s.call('listSecurityGroups', {})), ['admin/default']);
  assert.deepEqual(groupsOf(await s.call('listSecurityGroups', { account: 'bob', domainid: d1 })), ['bob/default']);
  assert.deepEqual(groupsOf(await s.call('listSecurityGroups', { domainid: d1 })), ['alice/alice-web', 'alice/default', 'bob/default', 'dadmin/default']);
  const root = (await s.call('listDomains', {})).body.listdomainsresponse.domain[0].id;
  assert.deepEqual(groupsOf(await s.call('listSecurityGroups', { domainid: root })), ['admin/default']);
  assert.equal(groupsOf(await s.call('listSecurityGroups', { domainid: root, isrecursive: true })).length, 7);
  assert.equal(groupsOf(await s.call('listSecurityGroups', { listall: true })).length, 7);
  // domain admin: its domain tree only
  assert.deepEqual(groupsOf(await s.call('listSecurityGroups', { listall: true }, dadmin)), ['alice/alice-web', 'alice/default', 'bob/default', 'dadmin/default']);
  const other = await s.call('listSecurityGroups', { domainid: d2 }, dadmin);
  assert.equal(other.status, 531);
  // a user with listall still sees only its own account
  assert.deepEqual(groupsOf(await s.call('listSecurityGroups', { listall: true }, bob)), ['bob/default']);
});

test('listAccounts/listUsers: a domainid the caller may not see is refused (531), its own domain lists its own', async () => {
  const names = (r: { body: any }, cmd: string, key: string, field: string) => (r.body[`${cmd}response`][key] ?? []).map((x: any) => x[field]).sort();
  for (const [cmd, key, field] of [['listAccounts', 'account', 'name'], ['listUsers', 'user', 'username']] as const) {
    const lc = cmd.toLowerCase();
    // alice (a user of d1) naming d2
    const foreign = await s.call(cmd, { domainid: d2 }, alice);
    assert.equal(foreign.status, 531, `${cmd}: ${JSON.stringify(foreign.body)}`);
    assert.equal(foreign.body[`${lc}response`].errortext, `Account alice does not have permission to operate within domain id=${d2}`);
    assert.equal((await s.call(cmd, { domainid: d2, listall: true, isrecursive: true }, alice)).status, 531);
    // the twin: her own domain answers with her own account
    const own = await s.call(cmd, { domainid: d1 }, alice);
    assert.equal(own.status, 200);
    assert.deepEqual(names(own, lc, key, field), ['alice']);
    // a domain that does not exist is 431; the domain admin of d1 is refused d2 too, and sees d1
    assert.equal((await s.call(cmd, { domainid: '00000000-0000-4000-8000-000000000000' }, alice)).status, 431);
    assert.equal((await s.call(cmd, { domainid: d2 }, dadmin)).status, 531);
    assert.ok(names(await s.call(cmd, { domainid: d1 }, dadmin), lc, key, field).includes('bob'));
  }
  // listUsers naming another account of her domain is refused as well (its twin: her own account)
  const bobs = await s.call('listUsers', { account: 'bob', domainid: d1 }, alice);
  assert.equal(bobs.status, 531);
  assert.deepEqual((await s.call('listUsers', { account: 'alice', domainid: d1 }, alice)).body.listusersresponse.user.map((u: any) => u.username), ['alice']);
});

test('listUsers by a user shows that user alone, not the other users of its account; another user\'s id is refused (531)', async () => {
  const second = (await s.call('createUser', { account: 'alice', domainid: d1, username: 'alice2', password: 'pw-alice2', email: 'a2@example.org', firstname: 'a', lastname: 'two' })).body.createuserresponse.user;
  assert.ok(second?.id, 'second user of alice\'s account');
  const mine = (await s.call('listUsers', {}, alice)).body.listusersresponse;
  assert.deepEqual(mine.user.map((u: any) => u.username), ['alice']);
  assert.equal(mine.count, 1);
  assert.deepEqual((await s.call('listUsers', { listall: true, account: 'alice', domainid: d1 }, alice)).body.listusersresponse.user.map((u: any) => u.username), ['alice']);
  const other = await s.call('listUsers', { id: second.id }, alice);
  assert.equal(other.status, 531);
  assert.equal(other.body.listusersresponse.errortext, 'Calling user is not authorized to see the user requested by id');
  const self = mine.user[0].id;
  assert.deepEqual((await s.call('listUsers', { id: self }, alice)).body.listusersresponse.user.map((u: any) => u.username), ['alice']);
  // the twin: an admin of the domain sees both users of the account
  assert.deepEqual((await s.call('listUsers', { account: 'alice', domainid: d1 }, dadmin)).body.listusersresponse.user.map((u: any) => u.username).sort(), ['alice', 'alice2']);
});

test('a rule may reference another account\'s group in the same domain, not another domain\'s', async () => {
  const r = await s.callAndWait('authorizeSecurityGroupIngress', {
    securitygroupname: 'alice-web', protocol: 'tcp', startport: 5432, endport: 5432,
    'usersecuritygrouplist[0].account': 'bob', 'usersecuritygrouplist[0].group': 'default',
  }, alice);
  assert.equal(r.body.jobstatus, 1, JSON.stringify(r.body));
  const rule = r.body.jobresult.securitygroup.ingressrule[0];
  assert.equal(rule.securitygroupname, 'default');
  assert.equal(rule.account, 'bob');
  // carol's domain has no account alice: the lookup happens in the owner's domain
  const x = await s.callAndWait('authorizeSecurityGroupIngress', {
    securitygroupname: 'carol-db', 'usersecuritygrouplist[0].account': 'alice', 'usersecuritygrouplist[0].group': 'alice-web',
  }, carol);
  assert.equal(x.body.jobstatus, 2);
  assert.match(x.body.jobresult.errortext, /^Nonexistent account: alice when trying to authorize security group rule {2}for /);
  // bob's default is referenced by alice's rule: reserved anyway; a referenced non-default group is in use
  await s.call('createSecurityGroup', { name: 'bob-app' }, bob);
  const ref = await s.callAndWait('authorizeSecurityGroupEgress', {
    securitygroupname: 'alice-web', protocol: 'all', 'usersecuritygrouplist[0].account': 'bob', 'usersecuritygrouplist[0].group': 'bob-app',
  }, alice);
  assert.equal(ref.body.jobstatus, 1);
  const del = await s.call('deleteSecurityGroup', { name: 'bob-app' }, bob);
  assert.equal(del.status, 536);
  assert.equal(del.body.deletesecuritygroupresponse.errortext, 'Cannot delete group when there are security rules that allow this group');
});

test('a group in use by a VM cannot be deleted; listSecurityGroups by virtualmachineid', async () => {
  const net = await s.call('createNetwork', { name: 'shared1', gateway: '10.50.0.1', netmask: '255.255.255.0', startip: '10.50.0.10', endip: '10.50.0.200', account: 'bob', domainid: d1 });
  assert.equal(net.status, 200, JSON.stringify(net.body));
  const netId = net.body.createnetworkresponse.network.id;
  const g = (await s.call('createSecurityGroup', { name: 'bob-vm' }, bob)).body.createsecuritygroupresponse.securitygroup.id;
  const vm = await s.callAndWait('deployVirtualMachine', { networkids: netId, securitygroupids: g, name: 'bobvm', startvm: false }, bob);
  assert.equal(vm.body.jobstatus, 1, JSON.stringify(vm.body));
  const vmId = vm.body.jobresult.virtualmachine.id;
  const del = await s.call('deleteSecurityGroup', { id: g }, bob);
  assert.equal(del.status, 536);
  assert.equal(del.body.deletesecuritygroupresponse.errortext, "Cannot delete group when it's in use by virtual machines");
  const byVm = (await s.call('listSecurityGroups', { virtualmachineid: vmId }, bob)).body.listsecuritygroupsresponse;
  assert.deepEqual(byVm.securitygroup.map((x: any) => x.name), ['bob-vm']);
  assert.deepEqual(byVm.securitygroup[0].virtualmachineids, [vmId]);
  assert.equal(byVm.securitygroup[0].virtualmachinecount, 1);
  const denied = await s.call('listSecurityGroups', { virtualmachineid: vmId }, alice);
  assert.equal(denied.status, 531);
  const missing = await s.call('listSecurityGroups', { virtualmachineid: '00000000-0000-4000-8000-000000000009' }, bob);
  assert.equal(missing.status, 431);
  assert.equal(missing.body.listsecuritygroupsresponse.errortext, 'Unable to list network groups for virtual machine instance 00000000-0000-4000-8000-000000000009; instance not found.');
});

test('deleteAccount removes its groups and the rules that referenced them; its keys stop working', async () => {
  const tmp = await makeUser('tmp', d1);
  await s.call('createSecurityGroup', { name: 'tmp-g' }, tmp);
  const r = await s.callAndWait('authorizeSecurityGroupIngress', { securitygroupname: 'alice-web', 'usersecuritygrouplist[0].account': 'tmp', 'usersecuritygrouplist[0].group': 'tmp-g' }, alice);
  assert.equal(r.body.jobstatus, 1);
  const del = await s.callAndWait('deleteAccount', { id: tmp.accountId });
  assert.equal(del.body.jobstatus, 1, JSON.stringify(del.body));
  assert.deepEqual(del.body.jobresult, { success: true });
  const after = (await s.call('listSecurityGroups', { securitygroupname: 'alice-web' }, alice)).body.listsecuritygroupsresponse.securitygroup[0];
  assert.ok(!after.ingressrule.some((x: any) => x.account === 'tmp'));
  assert.equal((await s.call('listZones', {}, tmp)).status, 401);
});

test('a domain admin cannot take over or delete a root-admin account inside its domain; it can manage users there', async () => {
  const root = await makeUser('rootish', d1, 1);
  const users = await s.call('listUsers', { account: 'rootish', domainid: d1 });
  const rootUser = users.body.listusersresponse.user[0].id;
  const steal = await s.call('registerUserKeys', { id: rootUser }, dadmin);
  assert.equal(steal.status, 531, JSON.stringify(steal.body));
  assert.match(steal.body.registeruserkeysresponse.errortext, /root admin/);
  // The root admin's keys still work: nothing was regenerated.
  assert.equal((await s.call('listHosts', {}, root)).status, 200);
  const del = await s.callAndWait('deleteAccount', { id: root.accountId }, dadmin);
  assert.notEqual(del.body.jobstatus ?? del.status, 1, JSON.stringify(del.body));
  assert.equal((await s.call('listAccounts', { id: root.accountId })).body.listaccountsresponse.account.length, 1);
  // The allowed counterpart: the same domain admin manages an ordinary user of its domain.
  const aliceUsers = await s.call('listUsers', { account: 'alice', domainid: d1 }, dadmin);
  const ok = await s.call('registerUserKeys', { id: aliceUsers.body.listusersresponse.user[0].id }, dadmin);
  assert.equal(ok.status, 200, JSON.stringify(ok.body));
  alice = ok.body.registeruserkeysresponse.userkeys;
});
