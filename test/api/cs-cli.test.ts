// The seed scenario through the real third-party CloudStack client (Debian's python3-cs, `cloudstack`).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startServer, type TestServer } from '../helpers/server.js';

const run = promisify(execFile);
let s: TestServer;
before(async () => { s = await startServer(); });
after(async () => { await s?.stop(); });

/** Run `cloudstack` with the server's endpoint and admin keys in its environment; parse its JSON output. */
async function cs(...args: string[]): Promise<{ code: number; out: any; err: string }> {
  const env = { ...process.env, CLOUDSTACK_ENDPOINT: s.url, CLOUDSTACK_KEY: s.apikey, CLOUDSTACK_SECRET: s.secretkey, CLOUDSTACK_TIMEOUT: '20' };
  delete env.CLOUDSTACK_CONFIG; delete env.CLOUDSTACK_REGION;
  try {
    const r = await run('cloudstack', args, { env, timeout: 60_000 });
    return { code: 0, out: r.stdout.trim() ? JSON.parse(r.stdout) : null, err: r.stderr };
  } catch (e: any) {
    return { code: e.code ?? 1, out: e.stdout?.trim() ? JSON.parse(e.stdout) : null, err: e.stderr ?? '' };
  }
}

const ruleKey = (r: any) => r.protocol === 'icmp' ? `icmp ${r.icmptype}/${r.icmpcode} ${r.cidr}` : `${r.protocol} ${r.startport}-${r.endport} ${r.cidr}`;

test('seed scenario: Production_Web_Tier through the cloudstack CLI', async () => {
  const created = await cs('createSecurityGroup', 'name=Production_Web_Tier', 'description=Public web servers');
  assert.equal(created.code, 0, created.err);
  const g = created.out.securitygroup;
  assert.equal(g.name, 'Production_Web_Tier');

  // async commands: the CLI polls queryAsyncJobResult and prints the job result
  const ssh = await cs('authorizeSecurityGroupIngress', `securitygroupid=${g.id}`, 'protocol=TCP', 'startport=22', 'endport=22', 'cidrlist=203.0.113.50/32');
  assert.equal(ssh.code, 0, ssh.err);
  assert.deepEqual(ssh.out.securitygroup.ingressrule.map(ruleKey), ['tcp 22-22 203.0.113.50/32'], 'the CLI prints the job result');
  const web = await cs('--post', 'authorizeSecurityGroupIngress', 'securitygroupname=Production_Web_Tier', 'protocol=tcp', 'startport=80', 'endport=443', 'cidrlist=0.0.0.0/0');
  assert.equal(web.code, 0, web.err);
  const icmp = await cs('authorizeSecurityGroupIngress', `securitygroupid=${g.id}`, 'protocol=icmp', 'icmptype=-1', 'icmpcode=-1', 'cidrlist=10.0.0.0/8');
  assert.equal(icmp.code, 0, icmp.err);

  const listed = await cs('listSecurityGroups', 'securitygroupname=Production_Web_Tier');
  assert.equal(listed.code, 0, listed.err);
  assert.equal(listed.out.count, 1);
  const rules = listed.out.securitygroup[0].ingressrule;
  assert.deepEqual(rules.map(ruleKey).sort(), ['icmp -1/-1 10.0.0.0/8', 'tcp 22-22 203.0.113.50/32', 'tcp 80-443 0.0.0.0/0']);
  assert.deepEqual(listed.out.securitygroup[0].egressrule, []);

  // revoke one; the list shows exactly the other two
  const sshRule = rules.find((r: any) => r.startport === 22).ruleid;
  const rv = await cs('revokeSecurityGroupIngress', `id=${sshRule}`);
  assert.equal(rv.code, 0, rv.err);
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
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(r.out.securitygroup.egressrule.map((x: any) => [x.securitygroupname, x.account]), [['default', 'admin']]);
  const g = (await cs('listSecurityGroups', 'securitygroupname=Production_Web_Tier')).out.securitygroup[0].id;
  const t = await cs('createTags', 'resourcetype=SecurityGroup', `resourceids=${g}`, 'tags[0].key=tier', 'tags[0].value=web');
  assert.equal(t.code, 0, t.err);
  const byTag = await cs('listSecurityGroups', 'tags[0].key=tier', 'tags[0].value=web');
  assert.deepEqual(byTag.out.securitygroup.map((x: any) => x.id), [g]);
});

test('the CLI reports API errors and failed jobs with a non-zero exit', async () => {
  const dup = await cs('createSecurityGroup', 'name=Production_Web_Tier');
  assert.notEqual(dup.code, 0);
  assert.equal(dup.out.createsecuritygroupresponse.errorcode, 431);
  assert.match(dup.err, /CloudStack error/);
  const badPort = await cs('authorizeSecurityGroupIngress', 'securitygroupname=Production_Web_Tier', 'protocol=tcp', 'startport=100', 'endport=50', 'cidrlist=0.0.0.0/0');
  assert.notEqual(badPort.code, 0);
  assert.equal(badPort.out.queryasyncjobresultresponse.jobstatus, 2);
  assert.equal(badPort.out.queryasyncjobresultresponse.jobresult.errortext, 'Invalid port range 100:50');
  const wrongKey = await run('cloudstack', ['listZones'], { env: { ...process.env, CLOUDSTACK_ENDPOINT: s.url, CLOUDSTACK_KEY: s.apikey, CLOUDSTACK_SECRET: 'wrong' } }).then(() => null, (e) => e);
  assert.ok(wrongKey, 'a wrong secret must fail');
  assert.match(wrongKey.stdout + wrongKey.stderr, /unable to verify user credentials and\/or request signature/);
});
