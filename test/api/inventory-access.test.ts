// Who may do what with the inventory: two user accounts in ROOT, one in a subdomain, and the root admin.
// Every denial is checked to have changed nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type Creds, type TestServer } from '../helpers/server.js';

let s: TestServer;
type P = Record<string, string | number | boolean>;

async function ok(command: string, params: P = {}, who?: Creds): Promise<any> {
  const r = await s.call(command, params, who);
  assert.equal(r.status, 200, `${command} failed: ${JSON.stringify(r.body)}`);
  return r.body[`${command.toLowerCase()}response`];
}
async function fails(command: string, params: P, code: number, message: RegExp, who?: Creds): Promise<void> {
  const r = await s.call(command, params, who);
  assert.equal(r.status, code, `${command}: expected ${code}, got ${r.status} ${JSON.stringify(r.body)}`);
  const inner = Object.values(r.body)[0] as any;
  assert.match(inner.errortext, message);
}
async function job(command: string, params: P, who?: Creds): Promise<any> {
  const r = await s.callAndWait(command, params, who);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.jobstatus, 1, `${command} job failed: ${JSON.stringify(r.body.jobresult)}`);
  return r.body.jobresult;
}
async function jobFails(command: string, params: P, code: number, message: RegExp, who?: Creds): Promise<void> {
  const r = await s.callAndWait(command, params, who);
  if (r.status !== 200) {
    assert.equal(r.status, code, JSON.stringify(r.body));
    assert.match((Object.values(r.body)[0] as any).errortext, message);
    return;
  }
  assert.equal(r.body.jobstatus, 2, `${command} should have failed: ${JSON.stringify(r.body.jobresult)}`);
  assert.equal(r.body.jobresult.errorcode, code, JSON.stringify(r.body.jobresult));
  assert.match(r.body.jobresult.errortext, message);
}

/** A user account with API keys, through the real account commands. */
async function makeUser(name: string, domainid?: string): Promise<{ creds: Creds; accountId: string; domainId: string }> {
  const acct = (await ok('createAccount', {
    username: name, password: 'secret-pw', email: `${name}@example.test`, firstname: name, lastname: 'Test', accounttype: 0,
    ...(domainid ? { domainid } : {}),
  })).account;
  const keys = (await ok('registerUserKeys', { id: acct.user[0].id })).userkeys;
  return { creds: { apikey: keys.apikey, secretkey: keys.secretkey }, accountId: acct.id, domainId: acct.domainid };
}

let alice: Awaited<ReturnType<typeof makeUser>>, bob: typeof alice, carol: typeof alice;
let net: any, subNet: any, host: any, aliceVm: any, aliceGroup: any;

before(async () => {
  s = await startServer();
  alice = await makeUser('alice');
  bob = await makeUser('bob');
  const sub = (await ok('createDomain', { name: 'sub' })).domain;
  carol = await makeUser('carol', sub.id);
  net = (await ok('createNetwork', { name: 'rootnet', gateway: '10.7.0.1', netmask: '255.255.255.0', startip: '10.7.0.10', endip: '10.7.0.99' })).network;
  subNet = (await ok('createNetwork', { name: 'subnet', domainid: sub.id, gateway: '10.8.0.1', netmask: '255.255.255.0', startip: '10.8.0.10', endip: '10.8.0.99' })).network;
  host = (await ok('addHost', { name: 'hv1' })).host[0];
});
after(async () => { await s?.stop(); });

test('a user deploys into a shared network of an ancestor domain; admin-only fields are hidden from it', async () => {
  aliceGroup = (await ok('createSecurityGroup', { name: 'alice-web' }, alice.creds)).securitygroup;
  aliceVm = (await job('deployVirtualMachine', { networkids: net.id, name: 'alice1', securitygroupids: aliceGroup.id }, alice.creds)).virtualmachine;
  assert.equal(aliceVm.account, 'alice');
  assert.equal(aliceVm.state, 'Running');
  assert.equal(aliceVm.instancename, undefined, 'instancename is for admins');
  assert.equal(aliceVm.hostid, undefined, 'hostid is for admins');
  const asAdmin = (await ok('listVirtualMachines', { id: aliceVm.id, listall: true })).virtualmachine[0];
  assert.equal(asAdmin.hostid, host.id);
  assert.match(asAdmin.instancename, /^i-\d+-\d+-VM$/);
  // networks the user may use are listed to it; the subdomain's is not
  const nets = (await ok('listNetworks', {}, alice.creds)).network.map((n: any) => n.id);
  assert.ok(nets.includes(net.id));
  assert.ok(!nets.includes(subNet.id));
});

test('a user cannot use a network of a domain it is not in (531); a subdomain user can use the parent\'s', async () => {
  await jobFails('deployVirtualMachine', { networkids: subNet.id, name: 'nope' }, 531, /Unable to use network/, alice.creds);
  const c = (await job('deployVirtualMachine', { networkids: net.id, name: 'carol1' }, carol.creds)).virtualmachine;
  assert.equal(c.account, 'carol');
  const c2 = (await job('deployVirtualMachine', { networkids: subNet.id, name: 'carol2' }, carol.creds)).virtualmachine;
  assert.equal(c2.nic[0].ipaddress, '10.8.0.10');
  assert.equal((await ok('listVirtualMachines', {}, alice.creds)).virtualmachine.length, 1, 'alice sees only her VM');
});

test('another account can neither see nor touch the VM (531), and nothing changes', async () => {
  assert.deepEqual(await ok('listVirtualMachines', { id: aliceVm.id }, bob.creds), {});
  assert.deepEqual(await ok('listVirtualMachines', { listall: true }, bob.creds), {});
  await jobFails('stopVirtualMachine', { id: aliceVm.id }, 531, /permission/, bob.creds);
  await jobFails('rebootVirtualMachine', { id: aliceVm.id }, 531, /permission/, bob.creds);
  await jobFails('destroyVirtualMachine', { id: aliceVm.id, expunge: true }, 531, /permission/, bob.creds);
  await fails('updateVirtualMachine', { id: aliceVm.id, displayname: 'pwned' }, 531, /permission/, bob.creds);
  await fails('listNics', { virtualmachineid: aliceVm.id }, 531, /permission/, bob.creds);
  await jobFails('addIpToNic', { nicid: aliceVm.nic[0].id }, 531, /permission/, bob.creds);
  await jobFails('addNicToVirtualMachine', { virtualmachineid: aliceVm.id, networkid: net.id }, 531, /permission/, bob.creds);
  const sec = (await job('addIpToNic', { nicid: aliceVm.nic[0].id }, alice.creds)).nicsecondaryip;
  await jobFails('removeIpFromNic', { id: sec.id }, 531, /permission/, bob.creds);
  const still = (await ok('listVirtualMachines', { id: aliceVm.id }, alice.creds)).virtualmachine[0];
  assert.equal(still.state, 'Running');
  assert.equal(still.displayname, 'alice1');
  assert.deepEqual(still.nic[0].secondaryip.map((x: any) => x.id), [sec.id]);
});

test('a VM may only join groups of its own account', async () => {
  await jobFails('deployVirtualMachine', { networkids: net.id, securitygroupids: aliceGroup.id }, 531, /belongs to an account other than the owner/, bob.creds);
  await jobFails('deployVirtualMachine', { networkids: net.id, securitygroupnames: 'alice-web' }, 431, /Unable to find group by name alice-web/, bob.creds);
  const bobVm = (await job('deployVirtualMachine', { networkids: net.id, name: 'bob1' }, bob.creds)).virtualmachine;
  assert.deepEqual(bobVm.securitygroup.map((g: any) => g.name), ['default']);
  assert.equal(bobVm.securitygroup[0].account, 'bob');
  await fails('updateVirtualMachine', { id: bobVm.id, securitygroupids: aliceGroup.id }, 531, /belongs to an account other than the owner/, bob.creds);
  const refused = await s.call('updateVirtualMachine', { id: bobVm.id, securitygroupids: aliceGroup.id }, bob.creds);
  assert.ok(!JSON.stringify(refused.body).includes(aliceGroup.name), 'the refusal does not name another account\'s group');
  // the root admin acting on bob's VM is bound by the same rule: groups come from the VM's owner
  await fails('updateVirtualMachine', { id: bobVm.id, securitygroupids: aliceGroup.id }, 531, /belongs to an account other than the owner/);
  const again = (await ok('listVirtualMachines', { id: bobVm.id }, bob.creds)).virtualmachine[0];
  assert.deepEqual(again.securitygroup.map((g: any) => g.name), ['default']);
});

test('the root admin deploys on behalf of an account (account + domainid): groups resolve in that account', async () => {
  const root = (await ok('listDomains', { name: 'ROOT' })).domain[0];
  const vm = (await job('deployVirtualMachine', { networkids: net.id, name: 'for-alice', account: 'alice', domainid: root.id, securitygroupnames: 'alice-web' })).virtualmachine;
  assert.equal(vm.account, 'alice');
  assert.deepEqual(vm.securitygroup.map((g: any) => g.id), [aliceGroup.id]);
  await jobFails('deployVirtualMachine', { networkids: net.id, account: 'alice' }, 431, /together/);
  // a user cannot deploy for someone else
  await jobFails('deployVirtualMachine', { networkids: net.id, account: 'alice', domainid: root.id }, 531, /permission denied/, bob.creds);
});

test('admin-only inventory commands are not available to users (432); hostid is refused (531)', async () => {
  await fails('addHost', { name: 'evil' }, 432, /does not exist or it is not available/, bob.creds);
  await fails('listHosts', {}, 432, /does not exist or it is not available/, bob.creds);
  await fails('deleteHost', { id: host.id }, 432, /does not exist or it is not available/, bob.creds);
  await fails('createNetwork', { name: 'x', gateway: '10.9.0.1', netmask: '255.255.255.0', startip: '10.9.0.5' }, 432, /does not exist or it is not available/, bob.creds);
  await fails('migrateVirtualMachine', { virtualmachineid: aliceVm.id }, 432, /does not exist or it is not available/, alice.creds);
  await jobFails('deployVirtualMachine', { networkids: net.id, hostid: host.id }, 531, /hostid/, bob.creds);
  assert.equal((await ok('listHosts')).count, 1);
  assert.equal((await ok('listNetworks', { listall: true })).count, 2);
});

test('a user may destroy its own VM but not expunge it (admin only, as CloudStack); an admin may', async () => {
  const vm = (await job('deployVirtualMachine', { networkids: net.id, name: 'alice-tmp' }, alice.creds)).virtualmachine;
  await jobFails('destroyVirtualMachine', { id: vm.id, expunge: true }, 531, /admin only/, alice.creds);
  assert.equal((await ok('listVirtualMachines', { id: vm.id }, alice.creds)).virtualmachine[0].state, 'Running', 'nothing changed');
  assert.equal((await job('destroyVirtualMachine', { id: vm.id }, alice.creds)).virtualmachine.state, 'Destroyed');
  await job('destroyVirtualMachine', { id: vm.id, expunge: true });
  assert.deepEqual(await ok('listVirtualMachines', { id: vm.id, listall: true }), {});
});

test('networks on one VLAN of a zone may not overlap: a domain admin cannot create one over another domain\'s subnet (IPv4, IPv6); only the root admin may bypass', async () => {
  const sub = (await ok('listDomains', { name: 'sub', listall: true })).domain[0];
  const dadm = (await ok('createAccount', {
    username: 'dadm', password: 'secret-pw', email: 'dadm@example.test', firstname: 'd', lastname: 'a', accounttype: 2, domainid: sub.id,
  })).account;
  const keys = (await ok('registerUserKeys', { id: dadm.user[0].id })).userkeys;
  const da: Creds = { apikey: keys.apikey, secretkey: keys.secretkey };
  const count = async () => (await ok('listNetworks', { listall: true })).count;
  const before = await count();
  // Over the root domain's 10.7.0.0/24 (a wider mask, a narrower one, and the very same subnet): refused, nothing made.
  for (const [gateway, netmask, startip] of [['10.7.255.254', '255.255.0.0', '10.7.0.1'], ['10.7.0.129', '255.255.255.128', '10.7.0.130'], ['10.7.0.2', '255.255.255.0', '10.7.0.3']]) {
    await fails('createNetwork', { name: 'ovl', domainid: sub.id, gateway, netmask, startip }, 431, /IP range with tag: untagged in zone .* has overlapped with the subnet\. Please specify a different gateway\/netmask/, da);
  }
  await fails('createNetwork', { name: 'ovl', domainid: sub.id, gateway: '10.7.0.1', netmask: '255.255.0.0', startip: '10.7.200.1', bypassvlanoverlapcheck: true }, 431, /Only ROOT admin is allowed to specify vlanId or bypass vlan overlap check \(bypassvlanoverlapcheck\)/, da);
  assert.equal(await count(), before, 'nothing created');
  // The twin: a subnet of its own is fine; then IPv6 over it is refused likewise.
  await ok('createNetwork', { name: 'own', domainid: sub.id, gateway: '10.9.0.1', netmask: '255.255.255.0', startip: '10.9.0.10', ip6gateway: '2001:db8:90::1', ip6cidr: '2001:db8:90::/64' }, da);
  await fails('createNetwork', { name: 'ovl6', domainid: sub.id, ip6gateway: '2001:db8:90:0:1::1', ip6cidr: '2001:db8:90:0:1::/80' }, 431, /IPv6 range with tag: untagged .* has overlapped with the subnet\. Please specify a different ip6gateway\/ip6cidr/, da);
  assert.equal(await count(), before + 1);
  // The root admin: another VLAN is another segment; on the same one only with the bypass.
  await ok('createNetwork', { name: 'v100', gateway: '10.7.0.1', netmask: '255.255.255.0', startip: '10.7.0.10', vlan: '100' });
  await fails('createNetwork', { name: 'v100b', gateway: '10.7.0.1', netmask: '255.255.255.0', startip: '10.7.0.10', vlan: 'vlan://100' }, 431, /tag: vlan:\/\/100 .* has overlapped/);
  await ok('createNetwork', { name: 'bypass', gateway: '10.7.0.1', netmask: '255.255.255.0', startip: '10.7.0.10', bypassvlanoverlapcheck: true });
  assert.equal(await count(), before + 3);
});
