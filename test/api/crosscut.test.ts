// Where the API's hardening, login sessions and the observability commands meet, tried the way an
// outside attacker or a careless script would, against the real server process. Each refusal has its
// accepted twin.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type Creds, type TestServer } from '../helpers/server.js';
import { login } from '../helpers/session.js';

let s: TestServer;
let d1: string;
const users: Record<string, Creds & { userId: string; accountId: string }> = {};
let web: string;      // alice's group, with a member VM on a host
let sshRule: string;

async function ok(command: string, params: Record<string, string | number | boolean> = {}, who?: Creds): Promise<any> {
  const r = await s.callAndWait(command, params, who);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const body = r.body?.jobstatus !== undefined ? r.body : r.body[`${command.toLowerCase()}response`];
  if (body.jobstatus !== undefined) { assert.equal(body.jobstatus, 1, JSON.stringify(body)); return body.jobresult; }
  return body;
}

before(async () => {
  s = await startServer();
  d1 = (await ok('createDomain', { name: 'd1' })).domain.id;
  for (const [name, type] of [['alice', 0], ['dadmin', 2], ['carol', 0]] as const) {
    const a = (await ok('createAccount', { username: name, password: `${name}-password`, email: `${name}@example.org`, firstname: name, lastname: 'L', domainid: d1, accounttype: type })).account;
    users[name] = { ...(await ok('registerUserKeys', { id: a.user[0].id })).userkeys, userId: a.user[0].id, accountId: a.id };
  }
  const zone = (await ok('listZones')).zone[0].id;
  const net = (await ok('createNetwork', { name: 'n', zoneid: zone, gateway: '10.0.0.1', netmask: '255.255.255.0', startip: '10.0.0.10', endip: '10.0.0.99' })).network;
  const host = (await ok('addHost', { name: 'kvm-secret-rack7' })).host[0];
  web = (await ok('createSecurityGroup', { name: 'web' }, users.alice)).securitygroup.id;
  sshRule = (await ok('authorizeSecurityGroupIngress', { securitygroupid: web, protocol: 'tcp', startport: 22, endport: 22, cidrlist: '192.0.2.0/24' }, users.alice)).securitygroup.ingressrule[0].ruleid;
  await ok('deployVirtualMachine', { name: 'vm1', networkids: net.id, hostid: host.id, account: 'alice', domainid: d1, securitygroupids: web });
});
after(async () => { await s?.stop(); });

const ruleCount = async () => (await ok('listSecurityGroups', { id: web }, users.alice)).securitygroup[0].ingressrule.length;

test('dryrun is true or false: a value a script meant as "yes" is refused, never read as false (which would make the change)', async () => {
  const events = (await ok('listEvents', { listall: true })).count;
  const rules = await ruleCount();
  for (const value of ['1', 'yes', 'on', 'y', '', ' ', 'tru']) {
    const auth = await s.call('authorizeSecurityGroupIngress', { securitygroupid: web, protocol: 'tcp', startport: 8080, endport: 8080, cidrlist: '203.0.113.0/24', dryrun: value }, users.alice);
    assert.equal(auth.status, 431, `authorize dryrun=${JSON.stringify(value)}: ${JSON.stringify(auth.body)}`);
    assert.match(auth.body.authorizesecuritygroupingressresponse.errortext, /for parameter dryrun$/);
    const revoke = await s.call('revokeSecurityGroupIngress', { id: sshRule, dryrun: value }, users.alice);
    assert.equal(revoke.status, 431, `revoke dryrun=${JSON.stringify(value)}: ${JSON.stringify(revoke.body)}`);
  }
  assert.equal(await ruleCount(), rules, 'nothing was authorized or revoked');
  assert.equal((await ok('listEvents', { listall: true })).count, events, 'and nothing recorded');
  // true in any case is a dry run; false is the real call
  const dry = await ok('revokeSecurityGroupIngress', { id: sshRule, dryrun: 'TRUE' }, users.alice);
  assert.equal(dry.dryrun.affectedvirtualmachinecount, 1);
  assert.equal(await ruleCount(), rules);
  const real = await ok('authorizeSecurityGroupIngress', { securitygroupid: web, protocol: 'tcp', startport: 8080, endport: 8080, cidrlist: '203.0.113.0/24', dryrun: 'False' }, users.alice);
  assert.equal(real.dryrun, undefined);
  assert.equal(await ruleCount(), rules + 1);
});

test('a dry run names the affected hosts to root admins only, as listVirtualMachines does; others get the count', async () => {
  for (const who of [users.alice, users.dadmin]) {
    const vm = (await ok('listVirtualMachines', { listall: true }, who)).virtualmachine[0];
    assert.equal(vm.hostname, undefined, 'a VM\'s host is not shown to tenants or domain admins');
    for (const d of [
      (await ok('revokeSecurityGroupIngress', { id: sshRule, dryrun: true }, who)).dryrun,
      (await ok('authorizeSecurityGroupIngress', { securitygroupid: web, protocol: 'udp', startport: 53, endport: 53, cidrlist: '0.0.0.0/0', dryrun: true }, who)).dryrun,
    ]) {
      assert.equal(d.affectedhostcount, 1);
      assert.equal(d.affectedvirtualmachinecount, 1);
      assert.equal(d.affectedhosts, undefined, JSON.stringify(d));
      assert.ok(!JSON.stringify(d).includes('kvm-secret-rack7'));
    }
  }
  // explain, the other observability command about the same VM, reads as English too
  const vm = (await ok('listVirtualMachines', {}, users.alice)).virtualmachine[0];
  const e = (await ok('explainSecurityGroupTraffic', { virtualmachineid: vm.id, direction: 'ingress', protocol: 'tcp', port: 22, address: '192.0.2.7' }, users.alice)).securitygrouptraffic;
  assert.deepEqual([e.allowed, e.detail], [true, 'allowed by an ingress rule']);
  const root = (await ok('revokeSecurityGroupIngress', { id: sshRule, dryrun: true })).dryrun;
  assert.deepEqual(root.affectedhosts.map((h: any) => h.name), ['kvm-secret-rack7']);
  assert.equal(root.affectedhostcount, 1);
});

test('guessing your current password through updateUser is bounded like login, and shares its lock', async () => {
  const carol = users.carol;
  const change = (currentpassword: string) => s.call('updateUser', { id: carol.userId, password: 'carol-new-password', currentpassword }, carol);
  for (let i = 0; i < 4; i++) {
    const r = await change(`guess-${i}`);
    assert.equal(r.status, 431, JSON.stringify(r.body));
    assert.equal(r.body.updateuserresponse.errortext, 'Current password is incorrect.');
  }
  // the fifth wrong guess locks (user, address): from then on even the right one is refused, and so is login
  assert.equal((await change('guess-4')).status, 431);
  const locked = await change('carol-password');
  assert.equal(locked.status, 429, JSON.stringify(locked.body));
  assert.match(locked.body.updateuserresponse.errortext, /^Too many failed password attempts; try again in \d+ seconds$/);
  assert.equal((await login(s.url, 'carol', 'carol-password', { domain: '/d1' })).status, 429);
  // the twin: another user's guesses do not touch carol's lock, and a right current password works
  const alice = users.alice;
  const r = await s.call('updateUser', { id: alice.userId, password: 'alice-new-password', currentpassword: 'alice-password' }, alice);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal((await login(s.url, 'alice', 'alice-new-password', { domain: '/d1' })).status, 200);
  assert.equal((await login(s.url, 'carol', 'carol-password', { domain: '/d1' })).status, 429, 'carol stays locked');
});

test('a user account\'s user cannot mint API keys for another user of the same account (as updateUser cannot change them)', async () => {
  const alice = users.alice;
  const second = (await ok('createUser', { account: 'alice', domainid: d1, username: 'alice-ci', password: 'alice-ci-password', firstname: 'CI', lastname: 'Bot' })).user;
  const ciKeys = (await ok('registerUserKeys', { id: second.id })).userkeys;
  const before = await s.call('listZones', {}, ciKeys);
  assert.equal(before.status, 200);
  const r = await s.call('registerUserKeys', { id: second.id }, alice);
  assert.equal(r.status, 531, JSON.stringify(r.body));
  assert.equal((await s.call('updateUser', { id: second.id, firstname: 'x' }, alice)).status, 531, 'updateUser says the same');
  assert.equal((await s.call('listZones', {}, ciKeys)).status, 200, 'the other user\'s keys still work');
  // the twins: your own keys, and a domain admin for a user of its domain
  const own = await s.call('registerUserKeys', { id: alice.userId }, alice);
  assert.equal(own.status, 200, JSON.stringify(own.body));
  Object.assign(alice, own.body.registeruserkeysresponse.userkeys);
  assert.equal((await s.call('registerUserKeys', { id: second.id }, users.dadmin)).status, 200);
});

test('history does not grow for ever: finished jobs and old events are purged as CloudStack\'s job.expire.minutes / event.purge.delay say', async () => {
  // CloudStack's settings, root admin only, validated
  const listed = (await ok('listConfigurations', { category: 'Advanced' })).configuration;
  assert.deepEqual(listed.filter((c: any) => !c.name.startsWith('api.throttling.')).map((c: any) => [c.name, c.value]), [['event.purge.delay', '15'], ['job.expire.minutes', '1440']]);
  assert.equal((await s.call('updateConfiguration', { name: 'job.expire.minutes', value: '59' })).status, 431);
  assert.equal((await s.call('updateConfiguration', { name: 'event.purge.delay', value: '-1' })).status, 431);
  assert.equal((await s.call('listConfigurations', {}, users.dadmin)).status, 432);
  // a tenant's flood of failing async calls leaves jobs and events; as if it were weeks ago:
  // (a revoke of an ingress rule as egress: the job fails; an unknown rule would be refused before any job)
  const ingress = (await ok('authorizeSecurityGroupIngress', { securitygroupid: web, protocol: 'tcp', startport: 2222, endport: 2222, cidrlist: '192.0.2.0/24' }, users.alice))
    .securitygroup.ingressrule.find((r: any) => r.startport === 2222).ruleid;
  for (let i = 0; i < 5; i++) {
    const r = await s.callAndWait('revokeSecurityGroupEgress', { id: ingress }, users.alice);
    assert.equal(r.body.jobstatus, 2);
  }
  const { default: Database } = await import('better-sqlite3');
  const file = `${s.dataDir}/palisade.db`;
  const old = new Date(Date.now() - 20 * 86_400_000).toISOString();
  const sql = new Database(file);
  const jobs = sql.prepare(`update async_jobs set created = ?, completed = ? where command = 'org.apache.cloudstack.api.command.user.securitygroup.RevokeSecurityGroupEgressCmd' and status = 2`).run(old, old).changes;
  const events = sql.prepare(`update events set created = ? where type = 'SG.REVOKE.EGRESS'`).run(old).changes;
  const recentEvents = (sql.prepare(`select count(*) as n from events where created > ?`).get(old) as { n: number }).n;
  sql.close();
  assert.deepEqual([jobs, events], [5, 15]);
  // the server purges at start (and hourly): after a restart they are gone, the rest stays
  await s.restart();
  const count = () => {
    const db = new Database(file, { readonly: true });
    try {
      return [(db.prepare(`select count(*) as n from async_jobs where created = ?`).get(old) as { n: number }).n,
        (db.prepare(`select count(*) as n from events where created = ?`).get(old) as { n: number }).n,
        (db.prepare(`select count(*) as n from events where created > ?`).get(old) as { n: number }).n];
    } finally { db.close(); }
  };
  for (let i = 0; i < 100 && count()[0] + count()[1] > 0; i++) await new Promise((r) => setTimeout(r, 100));
  const [oldJobs, oldEvents, newer] = count();
  assert.deepEqual([oldJobs, oldEvents], [0, 0]);
  assert.ok(newer >= recentEvents, 'recent events stay');
  assert.equal((await s.call('listZones', {}, users.alice)).status, 200);
});

test('login refuses a password in the URL even over POST (it would stay in access logs); in the body it works', async () => {
  const creds = JSON.parse((await import('node:fs')).readFileSync(`${s.dataDir}/admin-credentials.json`, 'utf8'));
  const inUrl = await fetch(`${s.url}?command=login&response=json&username=admin&Password=${encodeURIComponent(creds.password)}`, { method: 'POST' });
  assert.equal(inUrl.status, 405);
  assert.match((await inUrl.json()).loginresponse.errortext, /body/);
  assert.equal(inUrl.headers.getSetCookie().length, 0);
  // the twin: the same POST with the password in the body (other parameters may stay in the URL)
  const inBody = await fetch(`${s.url}?command=login&response=json`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ username: 'admin', password: creds.password }).toString() });
  assert.equal(inBody.status, 200);
});
