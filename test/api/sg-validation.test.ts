// Every validation rule of reference §4 through the real server: code, message, and proof that
// nothing changed (the group list is identical before and after each rejected request).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.js';

let s: TestServer;
let gid: string;

const snapshot = async () => JSON.stringify((await s.call('listSecurityGroups', { listall: true })).body);

before(async () => {
  s = await startServer();
  const r = await s.call('createSecurityGroup', { name: 'web', description: 'web tier' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  gid = r.body.createsecuritygroupresponse.securitygroup.id;
  const ok = await s.callAndWait('authorizeSecurityGroupIngress', { securitygroupid: gid, protocol: 'tcp', startport: 22, endport: 22, cidrlist: '192.0.2.1/32' });
  assert.equal(ok.body.jobstatus, 1, JSON.stringify(ok.body));
});
after(async () => { await s?.stop(); });

/** Authorize (async): the job must fail with this code and message, and change nothing. */
async function authorizeFails(dir: 'Ingress' | 'Egress', params: Record<string, string | number>, code: number, message: string | RegExp) {
  const beforeState = await snapshot();
  const r = await s.callAndWait(`authorizeSecurityGroup${dir}`, params);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.jobstatus, 2, `expected failure for ${JSON.stringify(params)}: ${JSON.stringify(r.body)}`);
  assert.equal(r.body.jobresultcode, code);
  assert.equal(r.body.jobresult.errorcode, code);
  if (typeof message === 'string') assert.equal(r.body.jobresult.errortext, message);
  else assert.match(r.body.jobresult.errortext, message);
  assert.equal(await snapshot(), beforeState, 'a rejected request changed state');
}

async function syncFails(command: string, params: Record<string, string | number | boolean>, code: number, message: string | RegExp) {
  const beforeState = await snapshot();
  const r = await s.call(command, params);
  assert.equal(r.status, code, JSON.stringify(r.body));
  const inner = r.body[`${command.toLowerCase()}response`];
  assert.equal(inner.errorcode, code);
  if (typeof message === 'string') assert.equal(inner.errortext, message);
  else assert.match(inner.errortext, message);
  assert.ok(!('stack' in inner) && !JSON.stringify(r.body).includes('    at '), 'no stack traces');
  assert.equal(await snapshot(), beforeState, 'a rejected request changed state');
}

const jobCount = async () => Number((await s.call('listAsyncJobs', { listall: true })).body.listasyncjobsresponse.count ?? 0);

/**
 * Refused at submission, as CloudStack resolves an async command's group or rule before queueing it:
 * the answer itself is the error (no jobid), and no job, event or state change is left behind.
 */
async function submitFails(command: string, params: Record<string, string | number>, code: number, message: string | RegExp) {
  const [beforeState, jobs, events] = [await snapshot(), await jobCount(), JSON.stringify((await s.call('listEvents', { listall: true })).body)];
  await syncFails(command, params, code, message);
  assert.equal(await jobCount(), jobs, 'no job was created');
  assert.equal(JSON.stringify((await s.call('listEvents', { listall: true })).body), events, 'no event was recorded');
  assert.equal(await snapshot(), beforeState);
}

test('authorize: group selection (step 1) is answered at submission, without a job', async () => {
  await submitFails('authorizeSecurityGroupIngress', { securitygroupid: gid, securitygroupname: 'web', cidrlist: '10.0.0.0/8' }, 431, 'securityGroupId and securityGroupName parameters are mutually exclusive');
  await submitFails('authorizeSecurityGroupIngress', { cidrlist: '10.0.0.0/8' }, 431, 'Either securityGroupId or securityGroupName is required by authorizeSecurityGroupIngress command');
  await submitFails('authorizeSecurityGroupEgress', { cidrlist: '10.0.0.0/8' }, 431, 'Either securityGroupId or securityGroupName is required by authorizeSecurityGroupEgress command');
  await submitFails('authorizeSecurityGroupIngress', { securitygroupid: '00000000-0000-4000-8000-000000000000', cidrlist: '10.0.0.0/8' }, 431, 'Unable to find security group by id 00000000-0000-4000-8000-000000000000');
  await submitFails('authorizeSecurityGroupIngress', { securitygroupname: 'nope', cidrlist: '10.0.0.0/8' }, 431, /^Unable to find security group nope for account id=\d+$/);
  // The twin: a group that exists gets a job (which then fails on what the job checks: nothing to allow).
  const jobs = await jobCount();
  const r = await s.call('authorizeSecurityGroupIngress', { securitygroupname: 'web', protocol: 'tcp', startport: 80, endport: 80 });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.match(r.body.authorizesecuritygroupingressresponse.jobid, /^[0-9a-f-]{36}$/);
  assert.equal(await jobCount(), jobs + 1);
});

test('authorize: something to allow (step 2), CIDRs (step 4)', async () => {
  await authorizeFails('Ingress', { securitygroupid: gid, protocol: 'tcp', startport: 80, endport: 80 }, 431, 'At least one cidr or at least one security group needs to be specified');
  for (const bad of ['10.0.0.0', '300.1.1.1/8', '10.0.0.0/33', '2001:db8::/129', 'fe80::1%eth0/64', 'abc']) {
    await authorizeFails('Ingress', { securitygroupid: gid, protocol: 'tcp', startport: 80, endport: 80, cidrlist: `10.1.0.0/16,${bad}` }, 431, `Invalid cidr ${bad}`);
  }
});

test('authorize: protocols (step 5)', async () => {
  await authorizeFails('Ingress', { securitygroupid: gid, protocol: '256', cidrlist: '10.0.0.0/8' }, 431, 'Invalid protocol number: 256');
  await authorizeFails('Ingress', { securitygroupid: gid, protocol: 'foo', cidrlist: '10.0.0.0/8' }, 431, 'Invalid protocol foo');
  await authorizeFails('Ingress', { securitygroupid: gid, protocol: '-5', cidrlist: '10.0.0.0/8' }, 431, 'Invalid protocol -5');
});

test('authorize: ICMP type/code (step 6)', async () => {
  const base = { securitygroupid: gid, protocol: 'icmp', cidrlist: '10.0.0.0/8' };
  await authorizeFails('Ingress', { ...base, icmptype: 8 }, 431, 'Invalid ICMP type/code specified, icmpType = 8, icmpCode = null');
  await authorizeFails('Ingress', { ...base }, 431, 'Invalid ICMP type/code specified, icmpType = null, icmpCode = null');
  await authorizeFails('Ingress', { ...base, icmptype: -1, icmpcode: 0 }, 431, 'Invalid icmp code');
  await authorizeFails('Ingress', { ...base, icmptype: 8, icmpcode: -1 }, 431, 'Invalid icmp code: need non-negative icmp code ');
  await authorizeFails('Ingress', { ...base, icmptype: 256, icmpcode: 0 }, 431, 'Invalid icmp type/code ');
  await authorizeFails('Ingress', { ...base, icmptype: 3, icmpcode: -2 }, 431, 'Invalid icmp type/code ');
});

test('authorize: ports (steps 7–8)', async () => {
  await authorizeFails('Ingress', { securitygroupid: gid, protocol: 'all', startport: 1, endport: 2, cidrlist: '10.0.0.0/8' }, 431, 'Cannot specify startPort or endPort without specifying protocol');
  await authorizeFails('Ingress', { securitygroupid: gid, cidrlist: '10.0.0.0/8', endport: 2 }, 431, 'Cannot specify startPort or endPort without specifying protocol');
  const tcp = { securitygroupid: gid, protocol: 'tcp', cidrlist: '10.0.0.0/8' };
  await authorizeFails('Ingress', { ...tcp, startport: 22 }, 431, 'Invalid port range specified, startPort = 22, endPort = null');
  await authorizeFails('Ingress', { ...tcp, startport: 100, endport: 50 }, 431, 'Invalid port range 100:50');
  await authorizeFails('Ingress', { ...tcp, startport: 1, endport: 70000 }, 431, 'Invalid port numbers 1:70000');
  await authorizeFails('Ingress', { ...tcp, startport: -2, endport: 5 }, 431, 'Invalid port numbers -2:5');
  await authorizeFails('Ingress', { ...tcp, startport: -1, endport: 5 }, 431, 'Invalid port range -1:5');
  await authorizeFails('Egress', { ...tcp, protocol: 'udp', startport: 9, endport: 8 }, 431, 'Invalid port range 9:8');
});

test('authorize: referenced groups (step 9)', async () => {
  await authorizeFails('Ingress', { securitygroupid: gid, 'usersecuritygrouplist[0].group': 'default' }, 431,
    "Invalid user group specified, fields 'group' and 'account' cannot be null, please specify groups in the form:  userGroupList[0].group=XXX&userGroupList[0].account=YYY");
  await authorizeFails('Ingress', { securitygroupid: gid, protocol: 'tcp', startport: 5, endport: 6, 'usersecuritygrouplist[0].group': 'default', 'usersecuritygrouplist[0].account': 'ghost' }, 431,
    `Nonexistent account: ghost when trying to authorize security group rule  for ${gid}:tcp:5:6`);
  await authorizeFails('Ingress', { securitygroupid: gid, 'usersecuritygrouplist[0].group': 'ghost', 'usersecuritygrouplist[0].account': 'admin' }, 431,
    /^Nonexistent group ghost for account admin\/\d+ is given, unable to authorize security group rule\.$/);
});

test('authorize: exact duplicates fail with 530 (per direction); partial duplicates add only new rules', async () => {
  await authorizeFails('Ingress', { securitygroupid: gid, protocol: 'tcp', startport: 22, endport: 22, cidrlist: '192.0.2.1/32' }, 530, 'Failed to authorize security group ingress rule(s)');
  const eg = await s.callAndWait('authorizeSecurityGroupEgress', { securitygroupid: gid, protocol: 'tcp', startport: 22, endport: 22, cidrlist: '192.0.2.1/32' });
  assert.equal(eg.body.jobstatus, 1, 'the same rule in the other direction is not a duplicate');
  await authorizeFails('Egress', { securitygroupid: gid, protocol: 'tcp', startport: 22, endport: 22, cidrlist: '192.0.2.1/32' }, 530, 'Failed to authorize security group egress rule(s)');
  const partial = await s.callAndWait('authorizeSecurityGroupIngress', { securitygroupid: gid, protocol: 'TCP ', startport: 22, endport: 22, cidrlist: '192.0.2.1/32,192.0.2.2/32,192.0.2.2/32' });
  assert.equal(partial.body.jobstatus, 1);
  const rules = partial.body.jobresult.securitygroup.ingressrule;
  assert.deepEqual(rules.map((r: any) => r.cidr), ['192.0.2.2/32']);
  // Only the new rules; the other direction and the members as empty lists (CloudStack's fresh SecurityGroupResponse).
  assert.deepEqual(partial.body.jobresult.securitygroup.egressrule, []);
  assert.deepEqual(partial.body.jobresult.securitygroup.virtualmachineids, []);
  assert.equal(partial.body.jobresult.securitygroup.virtualmachinecount, undefined);
});

test('authorize: accepted forms are stored as CloudStack stores them', async () => {
  const g = (await s.call('createSecurityGroup', { name: 'forms' })).body.createsecuritygroupresponse.securitygroup.id;
  const cases: [Record<string, string | number>, Record<string, unknown>][] = [
    [{ protocol: 'tcp', startport: 0, endport: 0, cidrlist: '0.0.0.0/0' }, { protocol: 'tcp', startport: 0, endport: 65535 }],
    [{ protocol: '1', cidrlist: '10.0.0.0/8' }, { protocol: 'icmp', icmptype: -1, icmpcode: -1 }],
    [{ protocol: '47', startport: 5, endport: 9, cidrlist: '10.0.0.0/8' }, { protocol: '47', startport: 0, endport: 0 }],
    [{ cidrlist: '2001:db8::/32' }, { protocol: 'all', startport: 0, endport: 0, cidr: '2001:db8::/32' }],
    [{ protocol: 'icmp', icmptype: 8, icmpcode: 0, cidrlist: '::/0' }, { protocol: 'icmp', icmptype: 8, icmpcode: 0, cidr: '::/0' }],
    [{ protocol: 'udp', startport: 53, endport: 53, cidrlist: '10.0.0.0/8,fd00::/8' }, { protocol: 'udp', startport: 53, endport: 53 }],
  ];
  for (const [p, expect] of cases) {
    const r = await s.callAndWait('authorizeSecurityGroupIngress', { securitygroupid: g, ...p });
    assert.equal(r.body.jobstatus, 1, JSON.stringify(r.body));
    const rule = r.body.jobresult.securitygroup.ingressrule[0];
    for (const [k, v] of Object.entries(expect)) assert.equal(rule[k], v, `${JSON.stringify(p)} → ${k}`);
    if (expect.protocol === 'icmp') assert.ok(!('startport' in rule));
    else assert.ok(!('icmptype' in rule));
  }
  const udp = await s.call('listSecurityGroups', { id: g });
  const n = udp.body.listsecuritygroupsresponse.securitygroup[0].ingressrule.length;
  assert.equal(n, 7, 'one rule per CIDR: the two-CIDR call created two rules');
});

test('revoke: an unknown rule is answered at submission; a direction mismatch fails the job', async () => {
  const list = await s.call('listSecurityGroups', { id: gid });
  const ingress = list.body.listsecuritygroupsresponse.securitygroup[0].ingressrule[0].ruleid;
  const missing = '00000000-0000-4000-8000-000000000001';
  for (const cmd of ['revokeSecurityGroupIngress', 'revokeSecurityGroupEgress']) {
    await submitFails(cmd, { id: missing }, 431, `Unable to find security rule with id ${missing}`);
  }
  const beforeState = await snapshot();
  const r = await s.callAndWait('revokeSecurityGroupEgress', { id: ingress });
  assert.equal(r.body.jobstatus, 2);
  assert.equal(r.body.jobresult.errorcode, 431);
  assert.equal(r.body.jobresult.errortext, `Mismatch in rule type for security rule with id ${ingress}`);
  assert.equal(await snapshot(), beforeState);
});

test('create: blank and duplicate names', async () => {
  await syncFails('createSecurityGroup', { name: '  ' }, 431, 'Security group name cannot be empty');
  await syncFails('createSecurityGroup', { name: 'WEB' }, 431, 'Unable to create security group, a group with name WEB already exists.');
  await syncFails('createSecurityGroup', { name: 'default' }, 431, 'Unable to create security group, a group with name default already exists.');
  // trailing spaces do not make another name (MySQL's PAD SPACE collation), leading ones do
  await syncFails('createSecurityGroup', { name: 'web  ' }, 431, 'Unable to create security group, a group with name web   already exists.');
  await syncFails('createSecurityGroup', { name: 'Default ' }, 431, 'Unable to create security group, a group with name Default  already exists.');
  const lead = await s.call('createSecurityGroup', { name: ' web' });
  assert.equal(lead.status, 200, JSON.stringify(lead.body));
  assert.equal((await s.call('deleteSecurityGroup', { id: lead.body.createsecuritygroupresponse.securitygroup.id })).status, 200);
  await syncFails('createSecurityGroup', {}, 431, 'Unable to execute API command createsecuritygroup due to missing parameter name');
});

test('update: not found, blank, reserved name, default group, no-op', async () => {
  const missing = '00000000-0000-4000-8000-000000000002';
  await syncFails('updateSecurityGroup', { id: missing, name: 'x' }, 431, `Unable to find security group: ${missing}; failed to update security group.`);
  await syncFails('updateSecurityGroup', { id: gid, name: ' ' }, 431, 'Security group name cannot be empty');
  await syncFails('updateSecurityGroup', { id: gid, name: 'DEFAULT' }, 431, 'The security group name default is reserved');
  const def = (await s.call('listSecurityGroups', { securitygroupname: 'default' })).body.listsecuritygroupsresponse.securitygroup[0].id;
  await syncFails('updateSecurityGroup', { id: def, name: 'renamed' }, 431, 'The default security group cannot be renamed');
  // its own name again is a no-op, as for any group (CloudStack checks for an unchanged name first)
  const unchanged = await s.call('updateSecurityGroup', { id: def, name: 'default' });
  assert.equal(unchanged.status, 200, JSON.stringify(unchanged.body));
  assert.equal(unchanged.body.updatesecuritygroupresponse.securitygroup.name, 'default');
  await syncFails('updateSecurityGroup', { id: gid, name: 'forms' }, 431, 'Unable to update security group, a group with name forms already exists.');
  const same = await s.call('updateSecurityGroup', { id: gid, name: 'web' });
  assert.equal(same.status, 200);
  assert.equal(same.body.updatesecuritygroupresponse.securitygroup.name, 'web');
  const custom = '11111111-2222-4333-8444-555555555555';
  const moved = await s.call('updateSecurityGroup', { id: gid, customid: custom });
  assert.equal(moved.body.updatesecuritygroupresponse.securitygroup.id, custom);
  assert.equal((await s.call('updateSecurityGroup', { id: custom, customid: gid })).body.updatesecuritygroupresponse.securitygroup.id, gid);
  await syncFails('updateSecurityGroup', { id: gid, customid: 'nope' }, 431, "UUID: nope doesn't follow the UUID format");
  // Upper case is not CloudStack's uuid format (ids are looked up lower-cased: the group would be lost by id).
  const upper = 'AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE';
  await syncFails('updateSecurityGroup', { id: gid, customid: upper }, 431, `UUID: ${upper} doesn't follow the UUID format`);
  await syncFails('updateSecurityGroup', { id: gid, customid: gid }, 431, `UUID: ${gid} already exists so can't create/update with custom id`);
  assert.equal((await s.call('listSecurityGroups', { id: gid })).body.listsecuritygroupsresponse.securitygroup[0].id, gid, 'still found by its id');
  const renamed = await s.call('updateSecurityGroup', { id: gid, name: 'web2' });
  assert.equal(renamed.body.updatesecuritygroupresponse.securitygroup.name, 'web2');
  assert.equal((await s.call('updateSecurityGroup', { id: gid, name: 'web' })).status, 200);
});

test('delete: id/name selection, not found, default reserved, referenced group in use', async () => {
  const missing = '00000000-0000-4000-8000-000000000003';
  await syncFails('deleteSecurityGroup', { id: gid, name: 'web' }, 431, 'name and id parameters are mutually exclusive');
  await syncFails('deleteSecurityGroup', {}, 431, 'Either id or name parameter is required by deleteSecurityGroup command');
  await syncFails('deleteSecurityGroup', { id: missing }, 431, `Unable to find network group: ${missing}; failed to delete group.`);
  await syncFails('deleteSecurityGroup', { name: 'ghost' }, 431, /^Unable to find security group by name ghost for the account id=\d+$/);
  await syncFails('deleteSecurityGroup', { name: 'default' }, 431, 'The network group default is reserved');
  // The owner of a group named by name: finalizeAccountId's texts (createSecurityGroup has finalizeOwner's)
  const rootDomain = (await s.call('listDomains', {})).body.listdomainsresponse.domain.find((d: any) => d.name === 'ROOT').id;
  await syncFails('deleteSecurityGroup', { name: 'web', account: 'admin' }, 431, 'Account must be specified with domainId parameter');
  await syncFails('deleteSecurityGroup', { name: 'web', account: 'nobody', domainid: rootDomain }, 431, 'Unable to find account by name nobody in domain with specified id');
  await syncFails('createSecurityGroup', { name: 'web-x', account: 'admin' }, 431, 'AccountName and domainId must be specified together');
  // A domain without an account names no owner: the caller's account (the twin: created, in admin's account)
  const own = await s.call('createSecurityGroup', { name: 'domain-only', domainid: rootDomain });
  assert.equal(own.status, 200, JSON.stringify(own.body));
  assert.equal(own.body.createsecuritygroupresponse.securitygroup.account, 'admin');
  assert.equal((await s.call('deleteSecurityGroup', { name: 'domain-only', domainid: rootDomain })).status, 200);
  const ref = (await s.call('createSecurityGroup', { name: 'referenced' })).body.createsecuritygroupresponse.securitygroup.id;
  const a = await s.callAndWait('authorizeSecurityGroupIngress', { securitygroupid: gid, 'usersecuritygrouplist[0].group': 'referenced', 'usersecuritygrouplist[0].account': 'admin' });
  assert.equal(a.body.jobstatus, 1);
  assert.equal(a.body.jobresult.securitygroup.ingressrule[0].securitygroupname, 'referenced');
  assert.equal(a.body.jobresult.securitygroup.ingressrule[0].account, 'admin');
  assert.ok(!('cidr' in a.body.jobresult.securitygroup.ingressrule[0]));
  await syncFails('deleteSecurityGroup', { id: ref }, 536, 'Cannot delete group when there are security rules that allow this group');
  // once the rule is revoked the group can go; a group whose rules reference only itself can go too
  const rule = a.body.jobresult.securitygroup.ingressrule[0].ruleid;
  assert.equal((await s.callAndWait('revokeSecurityGroupIngress', { id: rule })).body.jobstatus, 1);
  const self = await s.callAndWait('authorizeSecurityGroupIngress', { securitygroupid: ref, 'usersecuritygrouplist[0].group': 'referenced', 'usersecuritygrouplist[0].account': 'admin' });
  assert.equal(self.body.jobstatus, 1);
  const del = await s.call('deleteSecurityGroup', { name: 'referenced' });
  assert.equal(del.status, 200, JSON.stringify(del.body));
  assert.deepEqual(del.body, { deletesecuritygroupresponse: { success: true } });
  assert.equal((await s.call('listSecurityGroups', { id: ref })).body.listsecuritygroupsresponse.count, undefined);
});

test('list paging rules (BaseListCmd)', async () => {
  await syncFails('listSecurityGroups', { page: 1, pagesize: 501 }, 431, "Page size can't exceed max allowed page size value: 500");
  await syncFails('listSecurityGroups', { page: 1, pagesize: -1 }, 431, "Can't specify page parameter when pagesize is -1 (Unlimited)");
  await syncFails('listSecurityGroups', { page: 2 }, 431, '"pagesize" parameter is required when "page" is specified');
  await syncFails('listSecurityGroups', { pagesize: 2 }, 431, '"page" parameter is required when "pagesize" is specified');
  await syncFails('listSecurityGroups', { pagesize: 'x', page: 1 }, 431, 'Unable to execute API command listsecuritygroups due to invalid value x for parameter pagesize');
  await syncFails('listSecurityGroups', { id: 'not-a-uuid' }, 431, /^Unable to execute API command listsecuritygroups due to invalid value\. Invalid parameter id value=not-a-uuid/);
  const all = (await s.call('listSecurityGroups', { pagesize: -1 })).body.listsecuritygroupsresponse;
  assert.ok(all.count >= 3);
  const p1 = (await s.call('listSecurityGroups', { page: 1, pagesize: 2 })).body.listsecuritygroupsresponse;
  const p2 = (await s.call('listSecurityGroups', { page: 2, pagesize: 2 })).body.listsecuritygroupsresponse;
  assert.equal(p1.count, all.count);
  assert.deepEqual([...p1.securitygroup, ...p2.securitygroup].map((g: any) => g.id), all.securitygroup.slice(0, 4).map((g: any) => g.id));
  const kw = (await s.call('listSecurityGroups', { keyword: 'web tier' })).body.listsecuritygroupsresponse;
  assert.deepEqual(kw.securitygroup.map((g: any) => g.name), ['web'], 'keyword matches the description');
  const none = await s.call('listSecurityGroups', { securitygroupname: 'no-such' });
  assert.deepEqual(none.body, { listsecuritygroupsresponse: {} });
});

test('concurrent identical authorizations: exactly one rule is created', async () => {
  const g = (await s.call('createSecurityGroup', { name: 'race' })).body.createsecuritygroupresponse.securitygroup.id;
  const rs = await Promise.all(Array.from({ length: 8 }, () => s.callAndWait('authorizeSecurityGroupIngress', { securitygroupid: g, protocol: 'tcp', startport: 443, endport: 443, cidrlist: '0.0.0.0/0' })));
  assert.deepEqual(rs.map((r) => r.body.jobstatus).sort(), [1, 2, 2, 2, 2, 2, 2, 2]);
  assert.equal((await s.call('listSecurityGroups', { id: g })).body.listsecuritygroupsresponse.securitygroup[0].ingressrule.length, 1);
});

test('names and ids are found without regard to case, as CloudStack\'s collation finds them; other names still are not', async () => {
  const made = await s.call('createSecurityGroup', { name: 'Mixed-Case' });
  assert.equal(made.status, 200, JSON.stringify(made.body));
  const id = made.body.createsecuritygroupresponse.securitygroup.id as string;
  const listed = async (name: string) => ((await s.call('listSecurityGroups', { securitygroupname: name })).body.listsecuritygroupsresponse.securitygroup ?? []).map((g: any) => g.id);
  assert.deepEqual(await listed('mixed-case'), [id]);
  assert.deepEqual(await listed('MIXED-CASE'), [id]);
  assert.deepEqual(await listed('mixed-cas'), [], 'a different name is not found');
  // outside ASCII too (SQLite's own lower() folds ASCII only)
  const umlaut = (await s.call('createSecurityGroup', { name: 'Äpfel' })).body.createsecuritygroupresponse.securitygroup.id;
  assert.deepEqual(await listed('äPFEL'), [umlaut]);
  assert.equal((await s.call('createSecurityGroup', { name: 'äpfel' })).status, 431, 'unique ignoring case, as before');
  // authorize by name, and a referenced group by name
  const auth = await s.callAndWait('authorizeSecurityGroupIngress', { securitygroupname: 'MIXED-case', protocol: 'tcp', startport: 80, endport: 80, cidrlist: '198.51.100.0/24' });
  assert.equal(auth.body.jobstatus, 1, JSON.stringify(auth.body));
  const ref = await s.callAndWait('authorizeSecurityGroupIngress', { securitygroupid: gid, protocol: 'tcp', startport: 5432, endport: 5432, 'usersecuritygrouplist[0].account': 'admin', 'usersecuritygrouplist[0].group': 'mixed-CASE' });
  assert.equal(ref.body.jobstatus, 1, JSON.stringify(ref.body));
  assert.equal(ref.body.jobresult.securitygroup.ingressrule[0].securitygroupname, 'Mixed-Case');
  await submitFails('authorizeSecurityGroupIngress', { securitygroupname: 'mixed-cas', protocol: 'tcp', startport: 80, endport: 80, cidrlist: '198.51.100.0/24' }, 431, /Unable to find security group mixed-cas/);
  // a rule id in upper case is the same rule
  const rule = auth.body.jobresult.securitygroup.ingressrule[0].ruleid as string;
  const revoked = await s.callAndWait('revokeSecurityGroupIngress', { id: rule.toUpperCase() });
  assert.equal(revoked.body.jobstatus, 1, JSON.stringify(revoked.body));
  assert.deepEqual((await s.call('listSecurityGroups', { id: id.toUpperCase() })).body.listsecuritygroupsresponse.securitygroup[0].ingressrule ?? [], [], 'gone, and the group found by its id in upper case');
  // the default group by another case is still reserved, not "not found"
  await syncFails('deleteSecurityGroup', { name: 'DEFAULT' }, 431, 'The network group default is reserved');
  // the group referenced by name in another case is in use (536), then its own deletion by name in another case works
  await syncFails('deleteSecurityGroup', { name: 'MIXED-CASE' }, 536, 'Cannot delete group when there are security rules that allow this group');
  const r = (await s.call('listSecurityGroups', { id: gid })).body.listsecuritygroupsresponse.securitygroup[0].ingressrule.find((x: any) => x.securitygroupname === 'Mixed-Case');
  assert.equal((await s.callAndWait('revokeSecurityGroupIngress', { id: r.ruleid })).body.jobstatus, 1);
  assert.equal((await s.call('deleteSecurityGroup', { name: 'MIXED-CASE' })).status, 200);
  assert.deepEqual(await listed('mixed-case'), []);
});

test('create: without a description the group has none (CloudStack stores null and omits it); with one it is kept', async () => {
  const bare = await s.call('createSecurityGroup', { name: 'no-description' });
  assert.equal(bare.status, 200, JSON.stringify(bare.body));
  assert.ok(!('description' in bare.body.createsecuritygroupresponse.securitygroup), JSON.stringify(bare.body));
  const listed = (await s.call('listSecurityGroups', { securitygroupname: 'no-description' })).body.listsecuritygroupsresponse.securitygroup[0];
  assert.ok(!('description' in listed), JSON.stringify(listed));
  const described = (await s.call('createSecurityGroup', { name: 'with-description', description: 'the web tier' })).body.createsecuritygroupresponse.securitygroup;
  assert.equal(described.description, 'the web tier');
  for (const id of [bare.body.createsecuritygroupresponse.securitygroup.id, described.id]) assert.equal((await s.call('deleteSecurityGroup', { id })).status, 200);
});
