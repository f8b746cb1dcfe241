// Apache libcloud's CloudStack driver (Debian's python3-libcloud, installed by scripts/install-deps.sh)
// against the real server: its security-group calls work unchanged with Palisade's extra rule fields
// (hitcount, lasthit), and a dry run reaches it as an ordinary job result.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.js';
import { runProcess } from '../helpers/process.js';

let s: TestServer;
before(async () => { s = await startServer(); });
after(async () => { await s?.stop(); });

const SCRIPT = String.raw`
import json, sys
from libcloud.compute.providers import get_driver
from libcloud.compute.types import Provider
port, key, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3]
d = get_driver(Provider.CLOUDSTACK)(key=key, secret=secret, host='127.0.0.1', port=port, path='/client/api', secure=False)
out = {}
out['created'] = d.ex_create_security_group('lc-web', description='libcloud')
out['authorized'] = d.ex_authorize_security_group_ingress('lc-web', 'TCP', '203.0.113.0/24', startport=443)
out['icmp'] = d.ex_authorize_security_group_ingress('lc-web', 'ICMP', '10.0.0.0/8')
groups = d.ex_list_security_groups(securitygroupname='lc-web')
out['listed'] = groups
rule = [r for r in groups[0]['ingressrule'] if r.get('startport') == 443][0]
out['dryrun'] = d._async_request(command='revokeSecurityGroupIngress', params={'id': rule['ruleid'], 'dryrun': 'true'}, method='GET')
out['revoked'] = d.ex_revoke_security_group_ingress(rule['ruleid'])
out['after'] = d.ex_list_security_groups(securitygroupname='lc-web')
out['deleted'] = d.ex_delete_security_group('lc-web')
print(json.dumps(out))
`;

test('libcloud: create, authorize, list (with hitcount/lasthit), dry-run, revoke and delete a security group', async () => {
  const r = await runProcess('/usr/bin/python3', ['-c', SCRIPT, String(s.port), s.apikey, s.secretkey], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, `libcloud failed (python3-libcloud installed? scripts/install-deps.sh):\n${r.stdout}${r.stderr}`);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.equal(out.created.name, 'lc-web');
  assert.deepEqual(out.authorized.ingressrule.map((x: any) => [x.protocol, x.startport, x.endport, x.cidr, x.hitcount]), [['tcp', 443, 443, '203.0.113.0/24', 0]]);
  assert.deepEqual(out.icmp.ingressrule.map((x: any) => [x.protocol, x.icmptype, x.icmpcode, x.cidr]), [['icmp', -1, -1, '10.0.0.0/8']]);
  assert.equal(out.listed.length, 1);
  assert.equal(out.listed[0].ingressrule.length, 2);
  assert.ok(out.listed[0].ingressrule.every((x: any) => x.hitcount === 0 && !('lasthit' in x)));
  assert.equal(out.dryrun.success, true);
  assert.equal(out.dryrun.dryrun.affectedvirtualmachinecount, 0);
  assert.equal(out.revoked, true);
  assert.deepEqual(out.after[0].ingressrule.map((x: any) => x.protocol), ['icmp'], 'the dry run revoked nothing; the real revoke did');
  assert.equal(out.deleted, true);
});
