// What a domain admin may list, against the real server: exactly what it may act on. Its domain's subtree
// is compared by exact path (SQLite's LIKE ignores case, so /D1/ once matched a sibling /d1/), and
// root-admin accounts inside its domain stay out of every list, as they stay out of its writes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import Database from 'better-sqlite3';
import { startServer, type TestServer, type Creds } from '../helpers/server.js';

let s: TestServer;
let D1: { id: string; path: string };
let dadmin: Creds;
let rootish: Creds & { accountId: string };
let sibling: Creds & { accountId: string };
let rootishJob: string;

async function makeUser(name: string, domainid: string, accounttype = 0): Promise<Creds & { accountId: string }> {
  const r = await s.call('createAccount', { username: name, password: 'pw-' + name, email: `${name}@example.org`, firstname: name, lastname: 'T', domainid, accounttype });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const acct = r.body.createaccountresponse.account;
  const k = await s.call('registerUserKeys', { id: acct.user[0].id });
  assert.equal(k.status, 200, JSON.stringify(k.body));
  return { ...k.body.registeruserkeysresponse.userkeys, accountId: acct.id };
}

before(async () => {
  s = await startServer();
  const d = (await s.call('createDomain', { name: 'D1' })).body.createdomainresponse.domain;
  D1 = { id: d.id, path: d.path };
  dadmin = await makeUser('d1admin', d.id, 2);
  await makeUser('d1user', d.id);
  // A sibling `d1`, as a store written before createDomain refused it holds it (written directly: the API
  // now refuses it, see below).
  const db = new Database(path.join(s.dataDir, 'palisade.db'));
  db.pragma('busy_timeout = 5000');
  db.prepare(`insert into domains (uuid, name, path, parent_id, created, removed) values (?, 'd1', '/d1/', 1, ?, null)`).run(randomUUID(), new Date().toISOString());
  const siblingId = (db.prepare(`select uuid from domains where path = '/d1/'`).get() as { uuid: string }).uuid;
  db.close();
  sibling = await makeUser('siblinguser', siblingId);
  const g = await s.call('createSecurityGroup', { name: 'sibling-secret', description: 'must stay in d1' }, sibling);
  assert.equal(g.status, 200);
  assert.equal((await s.callAndWait('authorizeSecurityGroupIngress', { securitygroupname: 'sibling-secret', protocol: 'tcp', startport: 1, endport: 2, cidrlist: '192.0.2.0/24' }, sibling)).body.jobstatus, 1);
  // A root-admin account inside D1, with a group, a rule (an async job) and a tag.
  rootish = await makeUser('rootish', d.id, 1);
  const rg = await s.call('createSecurityGroup', { name: 'root-secret' }, rootish);
  assert.equal(rg.status, 200);
  const sub = await s.call('authorizeSecurityGroupIngress', { securitygroupname: 'root-secret', protocol: 'tcp', startport: 22, endport: 22, cidrlist: '198.51.100.0/24' }, rootish);
  rootishJob = sub.body.authorizesecuritygroupingressresponse.jobid;
  assert.equal((await s.waitJob(rootishJob, rootish)).jobstatus, 1);
  assert.equal((await s.callAndWait('createTags', { resourcetype: 'SecurityGroup', resourceids: rg.body.createsecuritygroupresponse.securitygroup.id, 'tags[0].key': 'owner', 'tags[0].value': 'root' }, rootish)).body.jobstatus, 1);
});
after(async () => { await s?.stop(); });

const names = (list: any[] | undefined, key = 'name') => (list ?? []).map((x) => x[key]).sort();

test('createDomain refuses a sibling whose name differs only in case; another parent may use it', async () => {
  const dup = await s.call('createDomain', { name: 'd1' });
  assert.equal(dup.status, 431, JSON.stringify(dup.body));
  assert.match(dup.body.createdomainresponse.errortext, /already exists/);
  const dup2 = await s.call('createDomain', { name: 'D1 '.trim().toUpperCase() });
  assert.equal(dup2.status, 431);
  const other = await s.call('createDomain', { name: 'd1', parentdomainid: D1.id });
  assert.equal(other.status, 200, 'a child of D1 named d1 is not a sibling of D1');
  const fresh = await s.call('createDomain', { name: 'D2' });
  assert.equal(fresh.status, 200);
});

test('a domain admin of D1 sees nothing of the sibling domain d1 (exact path comparison)', async () => {
  const groups = await s.call('listSecurityGroups', { listall: true }, dadmin);
  assert.equal(groups.status, 200);
  const seen = names(groups.body.listsecuritygroupsresponse.securitygroup);
  assert.ok(!seen.includes('sibling-secret'), seen.join(','));
  assert.ok(seen.includes('default'), 'its own domain is still listed');
  const accounts = names((await s.call('listAccounts', { listall: true }, dadmin)).body.listaccountsresponse.account);
  assert.deepEqual(accounts, ['d1admin', 'd1user']);
  const users = (await s.call('listUsers', { listall: true }, dadmin)).body.listusersresponse.user;
  assert.deepEqual(names(users, 'username'), ['d1admin', 'd1user']);
  const events = (await s.call('listEvents', { listall: true, pagesize: -1 }, dadmin)).body.listeventsresponse.event ?? [];
  assert.ok(events.every((e: any) => e.domain === 'D1'), JSON.stringify(events.map((e: any) => e.domain)));
  const jobs = (await s.call('listAsyncJobs', { listall: true }, dadmin)).body.listasyncjobsresponse.asyncjobs ?? [];
  assert.ok(jobs.every((j: any) => j.accountid !== sibling.accountId));
  const domains = names((await s.call('listDomains', { listall: true }, dadmin)).body.listdomainsresponse.domain, 'path');
  assert.ok(domains.length >= 1 && domains.every((p) => p === 'ROOT/D1' || p.startsWith('ROOT/D1/')), domains.join(','));
  // the allowed counterpart: the root admin sees the sibling's group
  const all = names((await s.call('listSecurityGroups', { listall: true })).body.listsecuritygroupsresponse.securitygroup);
  assert.ok(all.includes('sibling-secret'));
});

test('a domain admin cannot list a root-admin account of its domain, by name or with listall', async () => {
  for (const cmd of ['listSecurityGroups', 'listEvents', 'listAsyncJobs', 'listTags', 'listVirtualMachines', 'listUsers']) {
    const r = await s.call(cmd, { account: 'rootish', domainid: D1.id }, dadmin);
    assert.equal(r.status, 531, `${cmd}: ${JSON.stringify(r.body)}`);
    assert.match(r.body[`${cmd.toLowerCase()}response`].errortext, /root admin/);
  }
  const groups = names((await s.call('listSecurityGroups', { listall: true }, dadmin)).body.listsecuritygroupsresponse.securitygroup);
  assert.ok(!groups.includes('root-secret'), groups.join(','));
  const byDomain = names((await s.call('listSecurityGroups', { domainid: D1.id }, dadmin)).body.listsecuritygroupsresponse.securitygroup);
  assert.ok(!byDomain.includes('root-secret'), byDomain.join(','));
  const jobs = (await s.call('listAsyncJobs', { listall: true }, dadmin)).body.listasyncjobsresponse.asyncjobs ?? [];
  assert.ok(!jobs.some((j: any) => j.jobid === rootishJob), 'the job queryAsyncJobResult refuses is not listed either');
  assert.equal((await s.call('queryAsyncJobResult', { jobid: rootishJob }, dadmin)).status, 531);
  const events = (await s.call('listEvents', { listall: true, pagesize: -1 }, dadmin)).body.listeventsresponse.event ?? [];
  assert.ok(!events.some((e: any) => e.account === 'rootish'));
  const tags = (await s.call('listTags', { listall: true }, dadmin)).body.listtagsresponse.tag ?? [];
  assert.ok(!tags.some((t: any) => t.account === 'rootish'));
  const accounts = names((await s.call('listAccounts', { listall: true }, dadmin)).body.listaccountsresponse.account);
  assert.ok(!accounts.includes('rootish'), accounts.join(','));
  const users = (await s.call('listUsers', { listall: true }, dadmin)).body.listusersresponse.user ?? [];
  assert.ok(!users.some((u: any) => u.username === 'rootish'), 'nor its user and API key');
  // the allowed counterparts: an ordinary account of D1 by name; the root admin sees rootish
  const ordinary = await s.call('listSecurityGroups', { account: 'd1user', domainid: D1.id }, dadmin);
  assert.equal(ordinary.status, 200);
  assert.deepEqual(names(ordinary.body.listsecuritygroupsresponse.securitygroup), ['default']);
  const root = await s.call('listSecurityGroups', { account: 'rootish', domainid: D1.id });
  assert.deepEqual(names(root.body.listsecuritygroupsresponse.securitygroup), ['default', 'root-secret']);
});

test('a domain admin cannot create for a root-admin account of its domain (group, network, VM in its group); for an ordinary account it can', async () => {
  const before = names((await s.call('listSecurityGroups', { account: 'rootish', domainid: D1.id })).body.listsecuritygroupsresponse.securitygroup);
  const group = await s.call('createSecurityGroup', { name: 'planted', account: 'rootish', domainid: D1.id }, dadmin);
  assert.equal(group.status, 531, JSON.stringify(group.body));
  assert.match(group.body.createsecuritygroupresponse.errortext, /root admin account/);
  const net = await s.call('createNetwork', { name: 'planted-net', account: 'rootish', domainid: D1.id, gateway: '10.9.0.1', netmask: '255.255.255.0', startip: '10.9.0.10', endip: '10.9.0.99' }, dadmin);
  assert.equal(net.status, 531, JSON.stringify(net.body));
  // A VM put into the root-admin account's group (it would gain what other rules grant that group's members).
  const rootNet = await s.call('createNetwork', { name: 'root-net', account: 'rootish', domainid: D1.id, gateway: '10.10.0.1', netmask: '255.255.255.0', startip: '10.10.0.10', endip: '10.10.0.99' });
  assert.equal(rootNet.status, 200, JSON.stringify(rootNet.body));
  const vm = await s.call('deployVirtualMachine', { networkids: rootNet.body.createnetworkresponse.network.id, name: 'sneaky', account: 'rootish', domainid: D1.id, securitygroupnames: 'root-secret' }, dadmin);
  if (vm.status === 200) assert.equal((await s.waitJob(vm.body.deployvirtualmachineresponse.jobid)).jobstatus, 2, 'the deploy job fails');
  else assert.equal(vm.status, 531, JSON.stringify(vm.body));
  const root = (await s.call('listSecurityGroups', { account: 'rootish', domainid: D1.id })).body.listsecuritygroupsresponse.securitygroup;
  assert.deepEqual(names(root), before, 'nothing was created in the root-admin account');
  assert.deepEqual(root.find((g: any) => g.name === 'root-secret').virtualmachineids ?? [], [], 'no VM joined its group');
  // the allowed counterpart: the same calls for an ordinary account of D1
  const mine = await s.call('createSecurityGroup', { name: 'for-d1user', account: 'd1user', domainid: D1.id }, dadmin);
  assert.equal(mine.status, 200, JSON.stringify(mine.body));
  assert.equal(mine.body.createsecuritygroupresponse.securitygroup.account, 'd1user');
});

test('listing by id: an admin finds a group of any account it may see without listall; a user only its own', async () => {
  const groupId = async (name: string, who?: Creds) => {
    const r = await s.call('listSecurityGroups', { securitygroupname: name, listall: true }, who);
    return r.body.listsecuritygroupsresponse.securitygroup[0].id as string;
  };
  const d1user = await makeUser('d1byid', D1.id);
  assert.equal((await s.call('createSecurityGroup', { name: 'd1-group' }, d1user)).status, 200);
  const d1Group = await groupId('d1-group', d1user);
  const siblingGroup = await groupId('sibling-secret', sibling);
  const rootGroup = await groupId('root-secret', rootish);
  const byId = async (id: string, who?: Creds) => names((await s.call('listSecurityGroups', { id }, who)).body.listsecuritygroupsresponse.securitygroup);
  // The root admin: by id, any account's group; without id, its own account's only (the default scope).
  assert.deepEqual(await byId(siblingGroup), ['sibling-secret']);
  assert.deepEqual(await byId(d1Group), ['d1-group']);
  assert.ok(!names((await s.call('listSecurityGroups', {})).body.listsecuritygroupsresponse.securitygroup).includes('d1-group'));
  // A domain admin: a group of its domain by id; not the sibling domain's, not a root-admin account's.
  assert.deepEqual(await byId(d1Group, dadmin), ['d1-group']);
  assert.deepEqual(await byId(siblingGroup, dadmin), []);
  assert.deepEqual(await byId(rootGroup, dadmin), []);
  assert.ok(!names((await s.call('listSecurityGroups', {}, dadmin)).body.listsecuritygroupsresponse.securitygroup).includes('d1-group'));
  // A user: its own group by id, nobody else's.
  assert.deepEqual(await byId(d1Group, d1user), ['d1-group']);
  assert.deepEqual(await byId(siblingGroup, d1user), []);
});

test('projectid: Palisade has no projects; -1 lists nothing, any other id is refused and creates nothing', async () => {
  const unknown = '00000000-0000-4000-8000-0000000000aa';
  const before = (await s.call('listSecurityGroups', { listall: true })).body.listsecuritygroupsresponse.count;
  const created = await s.call('createSecurityGroup', { name: 'in-project', projectid: unknown });
  assert.equal(created.status, 431, JSON.stringify(created.body));
  assert.equal(created.body.createsecuritygroupresponse.errortext,
    `Unable to execute API command createsecuritygroup due to invalid value. Invalid parameter projectid value=${unknown} due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class.`);
  assert.equal((await s.call('createSecurityGroup', { name: 'in-project', projectid: '-1' })).status, 431);
  assert.equal((await s.call('listSecurityGroups', { listall: true })).body.listsecuritygroupsresponse.count, before, 'nothing was created');
  // Listing: -1 (every project of the caller) is empty; an unknown project is refused.
  const all = await s.call('listSecurityGroups', { projectid: '-1', listall: true });
  assert.equal(all.status, 200);
  assert.deepEqual(all.body.listsecuritygroupsresponse, {});
  for (const cmd of ['listVirtualMachines', 'listNetworks', 'listEvents']) {
    const r = await s.call(cmd, { projectid: '-1' });
    assert.equal(r.status, 200, `${cmd}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body[`${cmd.toLowerCase()}response`].count ?? 0, 0, cmd);
  }
  assert.equal((await s.call('listEvents', {})).body.listeventsresponse.count > 0, true, 'the twin: without projectid there are events');
  assert.equal((await s.call('listSecurityGroups', { projectid: unknown })).status, 431);
  // Authorize names its group in a project: refused before anything is queued or changed.
  const auth = await s.call('authorizeSecurityGroupIngress', { securitygroupname: 'default', projectid: unknown, protocol: 'tcp', startport: 1, endport: 1, cidrlist: '192.0.2.9/32' });
  assert.equal(auth.status, 431, JSON.stringify(auth.body));
});
