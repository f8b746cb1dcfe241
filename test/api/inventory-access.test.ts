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
  // which host is the admin's to know; whether its agent is there is the owner's too (no agent runs here)
  assert.equal(aliceVm.hostcontrolstate, 'Offline');
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

test('bounds an agent needs are enforced before anything is written: VMs per host, NICs per VM, secondary IPs per NIC; reserved address blocks are refused', async () => {
  const { default: Database } = await import('better-sqlite3');
  const { randomUUID } = await import('node:crypto');
  const { MAX_VMS_PER_HOST, MAX_NICS_PER_VM, MAX_SECONDARY_IPS_PER_NIC } = await import('../../src/protocol/limits.js');
  const count = async (command: string, key: string) => (await ok(command, { listall: true })).count ?? 0;
  // Reserved blocks: none may be a guest network (a tenant owning fe80::1 or 169.254.169.254 could pose as a router or metadata service).
  for (const [gateway, netmask] of [['169.254.169.1', '255.255.255.0'], ['127.0.0.1', '255.255.255.0'], ['224.0.0.1', '255.255.255.0'], ['0.0.0.1', '255.255.255.0'], ['255.255.255.1', '255.255.255.252']]) {
    await fails('createNetwork', { name: 'rsv', gateway, netmask, startip: gateway.replace(/\d+$/, '2') }, 431, /Invalid gateway\/netmask .*overlaps .*a guest network may not use/);
  }
  for (const ip6cidr of ['fe80::/64', 'ff02::/64', '::/120', '::ffff:10.1.0.0/120']) {
    await fails('createNetwork', { name: 'rsv6', ip6gateway: ip6cidr.replace(/\/\d+$/, '').replace(/::$/, '::1').replace(/0\/?$/, '1'), ip6cidr }, 431, /Invalid ip6cidr .*overlaps .*a guest network may not use/);
  }
  const nets = await count('listNetworks', 'network');

  // NICs per VM: more networks than a VM may have is refused before they are even looked up.
  const tooMany = Array.from({ length: MAX_NICS_PER_VM + 1 }, () => randomUUID()).join(',');
  await jobFails('deployVirtualMachine', { networkids: tooMany }, 431, new RegExp(`Invalid networkids: ${MAX_NICS_PER_VM + 1} networks, a virtual machine may have at most ${MAX_NICS_PER_VM} NICs`));
  const many: string[] = [];
  for (let i = 0; i < MAX_NICS_PER_VM; i++) {
    many.push((await ok('createNetwork', { name: `cap-${i}`, gateway: `10.120.${i}.1`, netmask: '255.255.255.252', startip: `10.120.${i}.2` })).network.id);
  }
  const full = (await job('deployVirtualMachine', { networkids: many.join(','), name: 'full-nics' })).virtualmachine;
  assert.equal(full.nic.length, MAX_NICS_PER_VM, 'the most a VM may have is allowed');
  const extra = (await ok('createNetwork', { name: 'cap-extra', gateway: '10.121.0.1', netmask: '255.255.255.0', startip: '10.121.0.10' })).network.id;
  await jobFails('addNicToVirtualMachine', { virtualmachineid: full.id, networkid: extra }, 431, /has 256 NICs, the most a virtual machine may have/);
  assert.equal((await ok('listNics', { virtualmachineid: full.id })).count, MAX_NICS_PER_VM, 'nothing added');

  // Secondary IPs per NIC.
  const wide = (await ok('createNetwork', { name: 'cap-wide', gateway: '10.122.0.1', netmask: '255.255.0.0', startip: '10.122.0.10', endip: '10.122.255.250' })).network.id;
  const vm = (await job('deployVirtualMachine', { networkids: wide, name: 'sec-ips' })).virtualmachine;
  for (let i = 0; i < MAX_SECONDARY_IPS_PER_NIC; i++) await job('addIpToNic', { nicid: vm.nic[0].id });
  await jobFails('addIpToNic', { nicid: vm.nic[0].id }, 431, /has 256 secondary addresses, the most a NIC may have/);
  assert.equal((await ok('listNics', { virtualmachineid: vm.id })).nic[0].secondaryip.length, MAX_SECONDARY_IPS_PER_NIC);
  assert.ok(await count('listNetworks', 'network') > nets);

  // VMs per host: a host holding the most its agent can take gets no more (533, nothing written).
  const hosts = (await ok('listHosts', {})).host;
  const db = new Database(`${s.dataDir}/palisade.db`);
  const fillers = () => db.prepare(`delete from vms where name like 'filler-%'`).run();
  try {
    const ref = db.prepare('select * from vms where uuid = ?').get(vm.id) as Record<string, unknown>;
    const placed = Number((db.prepare(`select count(*) as n from vms where host_id = ? and removed is null and state in ('Starting','Running','Stopping','Migrating')`).get(ref.host_id) as { n: number }).n);
    const insert = db.prepare(`insert into vms (uuid, name, display_name, instance_name, account_id, domain_id, zone_id, host_id, last_host_id, state, service_offering_id, template_id, sync_state, sync_error, created, removed)
      values (?, ?, ?, ?, ?, ?, ?, ?, null, 'Running', null, null, 'Synced', null, ?, null)`);
    db.transaction(() => {
      for (let i = placed; i < MAX_VMS_PER_HOST; i++) insert.run(randomUUID(), `filler-${i}`, `filler-${i}`, `i-0-${900000 + i}-VM`, ref.account_id, ref.domain_id, ref.zone_id, ref.host_id, ref.created);
    })();
    assert.equal(hosts.length, 1);
    const vmsBefore = await count('listVirtualMachines', 'virtualmachine');
    await jobFails('deployVirtualMachine', { networkids: wide, name: 'one-too-many' }, 533, new RegExp(`every host in the zone runs ${MAX_VMS_PER_HOST} VMs`));
    await jobFails('deployVirtualMachine', { networkids: wide, name: 'one-too-many', hostid: hosts[0].id }, 533, new RegExp(`Unable to place the VM on host .* \\(hostid\\): it runs ${MAX_VMS_PER_HOST} VMs`));
    assert.equal(await count('listVirtualMachines', 'virtualmachine'), vmsBefore, 'nothing written');
    // the twin: with room again, the same deploy is placed
    fillers();
    await job('deployVirtualMachine', { networkids: wide, name: 'one-too-many' });
  } finally {
    fillers();
    db.close();
  }
});

test('VM names are unique in a network ignoring case (as CloudStack\'s collation and DNS); a recovered VM does not take a name given away meanwhile', async () => {
  const first = (await job('deployVirtualMachine', { networkids: net.id, name: 'Dup1' })).virtualmachine;
  await jobFails('deployVirtualMachine', { networkids: net.id, name: 'dup1' }, 431, /the vm with hostName dup1 already exists in the network domain of network rootnet/);
  await job('deployVirtualMachine', { networkids: net.id, name: 'dup2' });
  // destroyed (not expunged): its name is free again; the first one then cannot be recovered under it
  await job('destroyVirtualMachine', { id: first.id });
  const second = (await job('deployVirtualMachine', { networkids: net.id, name: 'DUP1' })).virtualmachine;
  await fails('recoverVirtualMachine', { id: first.id }, 431, /the vm with hostName Dup1 already exists/);
  assert.equal((await ok('listVirtualMachines', { id: first.id, listall: true })).virtualmachine[0].state, 'Destroyed', 'nothing changed');
  // the twin: once the name is free, the recovery works
  await job('destroyVirtualMachine', { id: second.id, expunge: true });
  assert.equal((await ok('recoverVirtualMachine', { id: first.id })).virtualmachine.state, 'Stopped');
});
