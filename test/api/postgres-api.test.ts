// The same API on PostgreSQL: a throwaway cluster, the real server with --db, and the queries that
// differ most between dialects (LIKE with escapes and case, counts, paging, tags, locks, restart).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startPostgres, type PgCluster } from '../helpers/postgres.js';
import { startServer, type TestServer } from '../helpers/server.js';

let pg: PgCluster;
let s: TestServer;
before(async () => { pg = await startPostgres(); s = await startServer({ db: pg.url }); });
after(async () => { await s?.stop(); await pg?.stop(); });

test('security groups on PostgreSQL', async () => {
  const g = (await s.call('createSecurityGroup', { name: 'Prod_Web', description: '100% web_tier' })).body.createsecuritygroupresponse.securitygroup;
  assert.equal(g.name, 'Prod_Web');
  const ruleParams: Record<string, string | number>[] = [
    { protocol: 'tcp', startport: 22, endport: 22, cidrlist: '203.0.113.50/32' },
    { protocol: 'tcp', startport: 80, endport: 443, cidrlist: '0.0.0.0/0,::/0' },
    { protocol: 'icmp', icmptype: -1, icmpcode: -1, cidrlist: '10.0.0.0/8' },
    { protocol: 'all', 'usersecuritygrouplist[0].account': 'admin', 'usersecuritygrouplist[0].group': 'default' },
  ];
  for (const p of ruleParams) {
    const r = await s.callAndWait('authorizeSecurityGroupIngress', { securitygroupid: g.id, ...p });
    assert.equal(r.body.jobstatus, 1, JSON.stringify(r.body));
  }
  const dup = await s.callAndWait('authorizeSecurityGroupIngress', { securitygroupid: g.id, protocol: 'tcp', startport: 22, endport: 22, cidrlist: '203.0.113.50/32' });
  assert.equal(dup.body.jobresult.errorcode, 530);
  // concurrent identical authorizations: exactly one succeeds (the group row lock)
  const racers = await Promise.all(Array.from({ length: 4 }, () => s.callAndWait('authorizeSecurityGroupIngress', { securitygroupid: g.id, protocol: 'udp', startport: 53, endport: 53, cidrlist: '192.0.2.0/24' })));
  assert.deepEqual(racers.map((r) => r.body.jobstatus).sort(), [1, 2, 2, 2]);
  const listed = (await s.call('listSecurityGroups', { id: g.id })).body.listsecuritygroupsresponse.securitygroup[0];
  assert.equal(listed.ingressrule.length, 6);
  // keyword: case-insensitive, and % / _ are literal characters
  assert.equal((await s.call('listSecurityGroups', { keyword: 'prod_' })).body.listsecuritygroupsresponse.count, 1);
  assert.equal((await s.call('listSecurityGroups', { keyword: '100%' })).body.listsecuritygroupsresponse.count, 1);
  assert.equal((await s.call('listSecurityGroups', { keyword: 'prod%' })).body.listsecuritygroupsresponse.count, undefined);
  const all = (await s.call('listSecurityGroups', { pagesize: -1 })).body.listsecuritygroupsresponse;
  assert.equal(all.count, 2);
  assert.equal((await s.call('listSecurityGroups', { page: 2, pagesize: 1 })).body.listsecuritygroupsresponse.securitygroup[0].id, all.securitygroup[1].id);
  const t = await s.callAndWait('createTags', { resourcetype: 'SecurityGroup', resourceids: g.id, 'tags[0].key': 'env', 'tags[0].value': 'prod' });
  assert.equal(t.body.jobstatus, 1);
  assert.equal((await s.call('listSecurityGroups', { 'tags[0].key': 'env', 'tags[0].value': 'prod' })).body.listsecuritygroupsresponse.count, 1);
  const ev = (await s.call('listEvents', { type: 'SECURITY.GROUP.AUTHORIZE', keyword: 'CIDR LIST' })).body.listeventsresponse;
  assert.ok(ev.count >= 3);
  const d = (await s.call('createDomain', { name: 'pgdom' })).body.createdomainresponse.domain;
  const a = await s.call('createAccount', { username: 'pguser', password: 'x', email: 'p@g', firstname: 'p', lastname: 'g', domainid: d.id });
  assert.equal(a.status, 200, JSON.stringify(a.body));
  assert.deepEqual((await s.call('listAccounts', { keyword: 'PGU' })).body.listaccountsresponse.account.map((x: any) => x.name), ['pguser']);
  assert.equal((await s.call('listSecurityGroups', { domainid: d.id })).body.listsecuritygroupsresponse.count, 1);
  const before0 = (await s.call('listSecurityGroups', { listall: true })).body;
  await s.restart();
  assert.deepEqual((await s.call('listSecurityGroups', { listall: true })).body, before0);
});
