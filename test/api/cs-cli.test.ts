// The seed scenario through the real third-party CloudStack client (Debian's python3-cs, `cloudstack`).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cloudstack, startServer, type TestServer } from '../helpers/server.js';

let s: TestServer;
before(async () => { s = await startServer(); });
after(async () => { await s?.stop(); });

const cs = (...args: string[]) => cloudstack(s, ...args);

const ruleKey = (r: any) => r.protocol === 'icmp' ? `icmp ${r.icmptype}/${r.icmpcode} ${r.cidr}` : `${r.protocol} ${r.startport}-${r.endport} ${r.cidr}`;

test('seed scenario: Production_Web_Tier through the cloudstack CLI', async () => {
  const created = await cs('createSecurityGroup', 'name=Production_Web_Tier', 'description=Public web servers');
  assert.equal(created.code, 0, created.stderr);
  const g = created.out.securitygroup;
  assert.equal(g.name, 'Production_Web_Tier');

  // async commands: the CLI polls queryAsyncJobResult and prints the job result
  const ssh = await cs('authorizeSecurityGroupIngress', `securitygroupid=${g.id}`, 'protocol=TCP', 'startport=22', 'endport=22', 'cidrlist=203.0.113.50/32');
  assert.equal(ssh.code, 0, ssh.stderr);
  assert.deepEqual(ssh.out.securitygroup.ingressrule.map(ruleKey), ['tcp 22-22 203.0.113.50/32'], 'the CLI prints the job result');
  const web = await cs('--post', 'authorizeSecurityGroupIngress', 'securitygroupname=Production_Web_Tier', 'protocol=tcp', 'startport=80', 'endport=443', 'cidrlist=0.0.0.0/0');
  assert.equal(web.code, 0, web.stderr);
  const icmp = await cs('authorizeSecurityGroupIngress', `securitygroupid=${g.id}`, 'protocol=icmp', 'icmptype=-1', 'icmpcode=-1', 'cidrlist=10.0.0.0/8');
  assert.equal(icmp.code, 0, icmp.stderr);

  const listed = await cs('listSecurityGroups', 'securitygroupname=Production_Web_Tier');
  assert.equal(listed.code, 0, listed.stderr);
  assert.equal(listed.out.count, 1);
  const rules = listed.out.securitygroup[0].ingressrule;
  assert.deepEqual(rules.map(ruleKey).sort(), ['icmp -1/-1 10.0.0.0/8', 'tcp 22-22 203.0.113.50/32', 'tcp 80-443 0.0.0.0/0']);
  assert.deepEqual(listed.out.securitygroup[0].egressrule, []);

  // revoke one; the list shows exactly the other two
  const sshRule = rules.find((r: any) => r.startport === 22).ruleid;
  const rv = await cs('revokeSecurityGroupIngress', `id=${sshRule}`);
  assert.equal(rv.code, 0, rv.stderr);
  assert.deepEqual(rv.out, { success: true });
  const after2 = await cs('listSecurityGroups', `id=${g.id}`);
  assert.deepEqual(after2.out.securitygroup[0].ingressrule.map(ruleKey).sort(), ['icmp -1/-1 10.0.0.0/8', 'tcp 80-443 0.0.0.0/0']);

  // the events record the changes (and the runbook alias works through the CLI)
  const ev = await cs('listEvents', 'state=Completed');
  const done = ev.out.event.filter((e: any) => e.state === 'Completed').map((e: any) => e.type);
  assert.deepEqual(done.filter((t: string) => t.startsWith('SG.')).sort(), ['SG.AUTH.INGRESS', 'SG.AUTH.INGRESS', 'SG.AUTH.INGRESS', 'SG.CREATE', 'SG.REVOKE.INGRESS']);
  const alias = await cs('listEvents', 'type=SECURITY.GROUP.AUTHORIZE');
  assert.ok(alias.out.event.every((e: any) => e.type === 'SG.AUTH.INGRESS'));
  assert.equal(alias.out.event.filter((e: any) => e.state === 'Completed').length, 3);
});

test('map parameters (usersecuritygrouplist) and tags through the CLI', async () => {
  const r = await cs('authorizeSecurityGroupEgress', 'securitygroupname=Production_Web_Tier', 'protocol=tcp', 'startport=5432', 'endport=5432',
    'usersecuritygrouplist[0].account=admin', 'usersecuritygrouplist[0].group=default');
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.out.securitygroup.egressrule.map((x: any) => [x.securitygroupname, x.account]), [['default', 'admin']]);
  const g = (await cs('listSecurityGroups', 'securitygroupname=Production_Web_Tier')).out.securitygroup[0].id;
  const t = await cs('createTags', 'resourcetype=SecurityGroup', `resourceids=${g}`, 'tags[0].key=tier', 'tags[0].value=web');
  assert.equal(t.code, 0, t.stderr);
  const byTag = await cs('listSecurityGroups', 'tags[0].key=tier', 'tags[0].value=web');
  assert.deepEqual(byTag.out.securitygroup.map((x: any) => x.id), [g]);
});

test('the CLI reports API errors and failed jobs with a non-zero exit', async () => {
  const dup = await cs('createSecurityGroup', 'name=Production_Web_Tier');
  assert.notEqual(dup.code, 0);
  assert.equal(dup.out.createsecuritygroupresponse.errorcode, 431);
  assert.match(dup.stderr, /CloudStack error/);
  const badPort = await cs('authorizeSecurityGroupIngress', 'securitygroupname=Production_Web_Tier', 'protocol=tcp', 'startport=100', 'endport=50', 'cidrlist=0.0.0.0/0');
  assert.notEqual(badPort.code, 0);
  assert.equal(badPort.out.queryasyncjobresultresponse.jobstatus, 2);
  assert.equal(badPort.out.queryasyncjobresultresponse.jobresult.errortext, 'Invalid port range 100:50');
  const wrongKey = await cloudstack({ url: s.url, apikey: s.apikey, secretkey: 'wrong' }, 'listZones');
  assert.notEqual(wrongKey.code, 0, 'a wrong secret must fail');
  assert.match(wrongKey.stdout + wrongKey.stderr, /unable to verify user credentials and\/or request signature/);
});
