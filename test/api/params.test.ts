// Pure pieces of the API: parameter access and validation, rule-spec validation, CIDR syntax, paging.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RequestParams, validateParams } from '../../src/api/params.js';
import { validateRuleSpec } from '../../src/api/commands/securitygroups.js';
import { isValidCidr } from '../../src/api/commands/cidr.js';
import { parseCidr } from '../../src/policy/cidr.js';
import { paging } from '../../src/api/commands/common.js';
import { ApiError, type CommandDef } from '../../src/api/command.js';

test('RequestParams: names in any case (as CloudStack\'s ParamUnpackWorker), map fields as sent, lists, maps by index', () => {
  const p = new RequestParams({ securitygroupname: 'web', cidrlist: '10.0.0.0/8, ::/0,', 'usersecuritygrouplist[1].group': 'b', 'usersecuritygrouplist[0].account': 'a', 'usersecuritygrouplist[0].group': 'g', 'usersecuritygrouplist[1].account': 'c', flag: 'TRUE', n: ' 42 ' });
  assert.equal(p.str('securitygroupname'), 'web');
  assert.deepEqual(p.list('cidrlist'), ['10.0.0.0/8', '::/0']);
  assert.deepEqual(p.map('usersecuritygrouplist'), [{ account: 'a', group: 'g' }, { group: 'b', account: 'c' }]);
  assert.equal(p.bool('flag'), true);
  assert.equal(p.int('n'), 42);
  assert.equal(p.int('missing'), undefined);
  // another case of a name is the same parameter (the first sent wins); a map parameter's name likewise,
  // while its field names keep their spelling (CloudStack reads userGroup.get("account") exactly)
  const q = new RequestParams({ SecurityGroupName: 'web', securitygroupname: 'later', 'UserSecurityGroupList[0].group': 'g', 'usersecuritygrouplist[0].Account': 'A', 'tags[0].Key': 'k' });
  assert.equal(q.str('securitygroupname'), 'web');
  assert.equal(q.has('usersecuritygrouplist'), true);
  assert.deepEqual(q.map('usersecuritygrouplist'), [{ group: 'g', Account: 'A' }]);
  assert.deepEqual(q.map('tags'), [{ Key: 'k' }]);
  // login reads its parameters by exact name (DefaultLoginAPIAuthenticatorCmd: params.get("username"))
  const login = new RequestParams({ UserName: 'u', password: 'p' }, { exact: true });
  assert.equal(login.str('username'), undefined);
  assert.equal(login.str('password'), 'p');
});

test('validateParams: CloudStack messages for missing and malformed parameters', () => {
  const def = { name: 'doThing', description: '', params: [
    { name: 'id', type: 'uuid', required: true, description: '' }, { name: 'n', type: 'integer', description: '' },
    { name: 'ids', type: 'list', of: 'uuid', description: '' }, { name: 'm', type: 'map', required: true, description: '' },
  ], handle: async () => ({ success: true }) } as CommandDef;
  const err = (raw: Record<string, string>) => { try { validateParams(def, new RequestParams(raw)); return null; } catch (e) { return e as ApiError; } };
  const u = '6f1c2a3b-1111-4222-8333-944455566677';
  assert.equal(err({ m: 'x' })?.message, 'Unable to execute API command dothing due to missing parameter id');
  assert.equal(err({ id: u })?.message, 'Unable to execute API command dothing due to missing parameter m');
  assert.equal(err({ id: u, 'm[0].k': 'v', n: '1.5' })?.message, 'Unable to execute API command dothing due to invalid value 1.5 for parameter n');
  assert.equal(err({ id: u, 'm[0].k': 'v', n: '99999999999' })?.code, 431);
  assert.match(err({ id: 'x', 'm[0].k': 'v' })!.message, /invalid value\. Invalid parameter id value=x/);
  assert.match(err({ id: u, 'm[0].k': 'v', ids: `${u},nope` })!.message, /Invalid parameter ids value=nope/);
  assert.equal(err({ id: u, 'm[0].k': 'v', n: '' }), null, 'blank integers count as absent');
  assert.equal(err({ id: u.toUpperCase(), 'm[0].k': 'v', n: '-3' }), null);
  assert.equal(err({ ID: u, 'M[0].k': 'v', N: '-3' }), null, 'names in any case (ParamUnpackWorker)');
  assert.equal(err({ id: u, 'mm[0].k': 'v' })?.message, 'Unable to execute API command dothing due to missing parameter m');
});

test('validateRuleSpec: table of accepted forms and errors', () => {
  const ok: [Parameters<typeof validateRuleSpec>, ReturnType<typeof validateRuleSpec>][] = [
    [[undefined], { protocol: 'all', start: 0, end: 0 }],
    [['ALL '], { protocol: 'all', start: 0, end: 0 }],
    [['tcp', 0, 0], { protocol: 'tcp', start: 0, end: 65535 }],
    [['udp', 0, 65535], { protocol: 'udp', start: 0, end: 65535 }],
    [['tcp', 22, 22], { protocol: 'tcp', start: 22, end: 22 }],
    [['icmp', undefined, undefined, -1, -1], { protocol: 'icmp', start: -1, end: -1 }],
    [['icmp', 5, 6, 8, 0], { protocol: 'icmp', start: 8, end: 0 }],
    [['1'], { protocol: 'icmp', start: -1, end: -1 }],
    [['0'], { protocol: '0', start: 0, end: 0 }],
    [['255', 1, 2], { protocol: '255', start: 0, end: 0 }],
    [['6', 22, 22], { protocol: '6', start: 0, end: 0 }],
  ];
  for (const [args, want] of ok) assert.deepEqual(validateRuleSpec(...args), want, JSON.stringify(args));
  const bad: [Parameters<typeof validateRuleSpec>, string][] = [
    [['256'], 'Invalid protocol number: 256'], [['gre'], 'Invalid protocol gre'], [['-1'], 'Invalid protocol -1'],
    [['tcp', 1], 'Invalid port range specified, startPort = 1, endPort = null'],
    [['tcp', undefined, 1], 'Invalid port range specified, startPort = null, endPort = 1'],
    [['tcp', 0, 65536], 'Invalid port numbers 0:65536'], [['udp', 5, 4], 'Invalid port range 5:4'], [['udp', -1, -1], 'Invalid port range -1:-1'],
    [['all', undefined, 5], 'Cannot specify startPort or endPort without specifying protocol'],
    [['icmp', undefined, undefined, 0], 'Invalid ICMP type/code specified, icmpType = 0, icmpCode = null'],
    [['icmp', undefined, undefined, -1, 3], 'Invalid icmp code'],
    [['icmp', undefined, undefined, 3, -1], 'Invalid icmp code: need non-negative icmp code '],
    [['icmp', undefined, undefined, 3, 256], 'Invalid icmp type/code '],
  ];
  for (const [args, msg] of bad) {
    assert.throws(() => validateRuleSpec(...args), (e: unknown) => e instanceof ApiError && e.code === 431 && e.message === msg, JSON.stringify(args));
  }
});

test('CIDR syntax: IPv4 and IPv6 with a prefix', () => {
  for (const c of ['0.0.0.0/0', '10.0.0.0/8', '203.0.113.50/32', '10.1.2.3/24', '::/0', '2001:db8::/32', 'fd00::1/128', '::ffff:10.0.0.1/128']) assert.ok(isValidCidr(c), c);
  for (const c of ['10.0.0.0', '10.0.0.0/33', '256.0.0.0/8', '10.0.0/8', ' 10.0.0.0/8', '2001:db8::', '2001:db8::/129', 'fe80::1%eth0/64', 'x/8', '10.0.0.0/-1']) assert.ok(!isValidCidr(c), c);
  // What the API accepts, the compiler must understand: a rule it would skip is never stored.
  for (const c of ['010.0.0.0/8', '10.0.0.0/08', '2001:db8::/032']) {
    assert.equal(parseCidr(c), null, c);
    assert.ok(!isValidCidr(c), c);
  }
  for (const c of ['10.0.0.0/ 8', '10.0.0.0 /8']) assert.ok(!isValidCidr(c), c);
});

test('paging: defaults, unlimited, limits', () => {
  assert.deepEqual(paging(new RequestParams({})), { limit: 500, offset: 0 });
  assert.deepEqual(paging(new RequestParams({ pagesize: '-1' })), { limit: null, offset: 0 });
  assert.deepEqual(paging(new RequestParams({ page: '3', pagesize: '20' })), { limit: 20, offset: 40 });
  assert.throws(() => paging(new RequestParams({ page: '1', pagesize: '501' })), /Page size can't exceed max allowed page size value: 500/);
});
