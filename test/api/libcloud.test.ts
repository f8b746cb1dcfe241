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

const NODES = String.raw`
import json, sys
from libcloud.compute.providers import get_driver
from libcloud.compute.types import Provider
port, key, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3]
d = get_driver(Provider.CLOUDSTACK)(key=key, secret=secret, host='127.0.0.1', port=port, path='/client/api', secure=False)
nodes = d.list_nodes()
out = {'nodes': [{'id': n.id, 'name': n.name, 'private': n.private_ips, 'public': n.public_ips, 'state': str(n.state)} for n in nodes]}
out['keypairs'] = [k.name for k in d.list_key_pairs()]
print(json.dumps(out))
`;

test('libcloud: list_nodes and list_key_pairs work (a basic zone has no public IPs, forwarding rules or key pairs: empty lists, not 432)', async () => {
  const run = () => runProcess('/usr/bin/python3', ['-c', NODES, String(s.port), s.apikey, s.secretkey], { timeoutMs: 60_000 });
  const empty = await run();
  assert.equal(empty.code, 0, empty.stdout + empty.stderr);
  assert.deepEqual(JSON.parse(empty.stdout.trim().split('\n').pop()!), { nodes: [], keypairs: [] });
  const ok = async (command: string, params: Record<string, string>) => {
    const r = command === 'deployVirtualMachine' ? await s.callAndWait(command, params) : await s.call(command, params);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body;
  };
  await ok('addHost', { name: 'lc-hv' });
  const net = (await ok('createNetwork', { name: 'lc-net', gateway: '10.61.0.1', netmask: '255.255.255.0', startip: '10.61.0.10', endip: '10.61.0.20' })).createnetworkresponse.network;
  const vm = (await ok('deployVirtualMachine', { networkids: net.id, name: 'lc-vm', ipaddress: '10.61.0.15' })).jobresult.virtualmachine;
  const r = await run();
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.deepEqual(out.nodes.map((n: any) => [n.id, n.name, n.private, n.public]), [[vm.id, 'lc-vm', ['10.61.0.15'], []]]);
  assert.deepEqual(out.keypairs, []);
  // The calls themselves: CloudStack's empty-list shape, and their scope checked like any list.
  for (const [command, root] of [['listPublicIpAddresses', 'listpublicipaddressesresponse'], ['listPortForwardingRules', 'listportforwardingrulesresponse'], ['listIpForwardingRules', 'listipforwardingrulesresponse'], ['listSSHKeyPairs', 'listsshkeypairsresponse']]) {
    assert.deepEqual((await s.call(command, { listall: 'true' })).body, { [root]: {} }, command);
    assert.equal((await s.call(command, { account: 'nobody', domainid: vm.domainid })).status, 431, `${command}: an unknown account is refused`);
  }
});
