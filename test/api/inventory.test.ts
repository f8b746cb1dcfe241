// Inventory commands over real HTTP against the real server process and its SQLite store:
// zones, shared networks, hosts, the VM lifecycle, NICs and secondary IPs, address allocation.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import path from 'node:path';
import Database from 'better-sqlite3';
import { cloudstack, startServer, type TestServer } from '../helpers/server.js';

let s: TestServer;
before(async () => { s = await startServer(); });
after(async () => { await s?.stop(); });

type P = Record<string, string | number | boolean>;

/** Sync command that must succeed: returns the inner response object. */
async function ok(command: string, params: P = {}): Promise<any> {
  const r = await s.call(command, params);
  assert.equal(r.status, 200, `${command} failed: ${JSON.stringify(r.body)}`);
  return r.body[`${command.toLowerCase()}response`];
}
/** Sync command that must fail with this code; the message must match. */
async function fails(command: string, params: P, code: number, message: RegExp): Promise<string> {
  const r = await s.call(command, params);
  const inner = r.body[`${command.toLowerCase()}response`];
  assert.equal(r.status, code, `${command} ${JSON.stringify(params)}: expected ${code}, got ${r.status} ${JSON.stringify(r.body)}`);
  assert.equal(inner.errorcode, code);
  assert.match(inner.errortext, message);
  return inner.errortext;
}
/** Async command that must succeed: returns the job result. */
async function job(command: string, params: P = {}): Promise<any> {
  const r = await s.callAndWait(command, params);
  assert.equal(r.status, 200, `${command} submit failed: ${JSON.stringify(r.body)}`);
  assert.equal(r.body.jobstatus, 1, `${command} job failed: ${JSON.stringify(r.body.jobresult)}`);
  return r.body.jobresult;
}
/** Async command whose job (or submission) must fail with this code and message. */
async function jobFails(command: string, params: P, code: number, message: RegExp): Promise<void> {
  const r = await s.callAndWait(command, params);
  if (r.status !== 200) {
    const inner = r.body[`${command.toLowerCase()}response`];
    assert.equal(r.status, code, JSON.stringify(r.body));
    assert.match(inner.errortext, message);
    return;
  }
  assert.equal(r.body.jobstatus, 2, `${command} ${JSON.stringify(params)} should have failed: ${JSON.stringify(r.body.jobresult)}`);
  assert.equal(r.body.jobresult.errorcode, code, JSON.stringify(r.body.jobresult));
  assert.match(r.body.jobresult.errortext, message);
}

/** A copy of the parameters without some keys (the helper would send `undefined` as a string). */
const omit = (o: P, ...keys: string[]) => Object.fromEntries(Object.entries(o).filter(([k]) => !keys.includes(k)));
const listVms = async (params: P = {}) => (await ok('listVirtualMachines', { listall: true, ...params })).virtualmachine ?? [];
const getVm = async (id: string) => {
  const l = await listVms({ id });
  assert.equal(l.length, 1, `VM ${id} not listed`);
  return l[0];
};
const deploy = async (params: P) => (await job('deployVirtualMachine', params)).virtualmachine;

let zoneId: string;
let net1: any;       // 10.1.1.0/24, range .10–.40, IPv6
let hostA: any, hostB: any;

test('listZones shows the bootstrap zone, filters by id', async () => {
  const z = await ok('listZones');
  assert.equal(z.count, 1);
  const zone = z.zone[0];
  assert.equal(zone.name, 'zone1');
  assert.equal(zone.networktype, 'Advanced');
  assert.equal(zone.securitygroupsenabled, true);
  zoneId = zone.id;
  assert.equal((await ok('listZones', { id: zoneId })).zone[0].id, zoneId);
  assert.deepEqual(await ok('listZones', { id: '00000000-0000-0000-0000-000000000000' }), {});
  await fails('listZones', { id: 'not-a-uuid' }, 431, /parameter id/);
});

test('createNetwork: shared network with IPv4 and IPv6 ranges', async () => {
  net1 = (await ok('createNetwork', {
    name: 'guest1', displaytext: 'Guest network 1', zoneid: zoneId, gateway: '10.1.1.1', netmask: '255.255.255.0',
    startip: '10.1.1.10', endip: '10.1.1.40', ip6gateway: '2001:db8:1::1', ip6cidr: '2001:db8:1::/64', vlan: '100',
  })).network;
  assert.equal(net1.name, 'guest1');
  assert.equal(net1.displaytext, 'Guest network 1');
  assert.equal(net1.cidr, '10.1.1.0/24');
  assert.equal(net1.type, 'Shared');
  assert.equal(net1.zoneid, zoneId);
  assert.equal(net1.broadcasturi, 'vlan://100');
  assert.equal(net1.ip6cidr, '2001:db8:1::/64');
  const listed = await ok('listNetworks', { id: net1.id });
  assert.equal(listed.count, 1);
  assert.equal(listed.network[0].startip, '10.1.1.10');
  assert.equal((await ok('listNetworks', { keyword: 'guest1' })).network[0].id, net1.id);
  assert.deepEqual(await ok('listNetworks', { keyword: 'no-such-network' }), {});
});

test('createNetwork: every bad parameter is refused with 431 naming it, and nothing is created', async () => {
  const base = { name: 'bad', gateway: '10.9.0.1', netmask: '255.255.255.0', startip: '10.9.0.10', endip: '10.9.0.20' };
  const before = (await ok('listNetworks', { listall: true })).count;
  await fails('createNetwork', omit(base, 'name'), 431, /missing parameter name/);
  await fails('createNetwork', { name: 'bad' }, 431, /startip|startipv6/i);
  await fails('createNetwork', { ...base, startip: '10.9.0.300' }, 431, /startIp/i);
  await fails('createNetwork', { ...base, endip: 'x' }, 431, /endIp/i);
  await fails('createNetwork', omit(base, 'gateway'), 431, /gateway and netmask/);
  await fails('createNetwork', { ...base, netmask: '255.0.255.0' }, 431, /netmask/);
  await fails('createNetwork', { ...base, gateway: '10.9.0.0' }, 431, /gateway/i);
  await fails('createNetwork', { ...base, startip: '10.9.1.10', endip: '10.9.1.20' }, 431, /startip/);
  await fails('createNetwork', { ...base, startip: '10.9.0.30', endip: '10.9.0.20' }, 431, /startip .* greater than endip/);
  await fails('createNetwork', { ...base, startip: '10.9.0.1' }, 431, /gateway ip should not be the part of the ip range/);
  await fails('createNetwork', { ...base, ip6gateway: '2001:db8:9::1', ip6cidr: '2001:db8:9::/200' }, 431, /ip6cidr/);
  await fails('createNetwork', { ...base, ip6gateway: '2001:db8:8::1', ip6cidr: '2001:db8:9::/64' }, 431, /ip6gateway/);
  await fails('createNetwork', { ...base, ip6gateway: '2001:db8:9::1', ip6cidr: '2001:db8:9::/64', startipv6: 'zz' }, 431, /startIPv6/i);
  await fails('createNetwork', { ...base, vlan: '5000' }, 431, /vlan/);
  await fails('createNetwork', { ...base, zoneid: '00000000-0000-0000-0000-000000000001' }, 431, /parameter zoneid/);
  await fails('createNetwork', { ...base, zoneid: 'nope' }, 431, /parameter zoneid/);
  assert.equal((await ok('listNetworks', { listall: true })).count, before);
});

test('addHost returns a one-time token whose sha256 is all the store keeps; listHosts shows sync status', async () => {
  const r = await ok('addHost', { name: 'hv-a', zoneid: zoneId });
  assert.equal(r.count, 1);
  hostA = r.host[0];
  assert.match(hostA.token, /^[A-Za-z0-9_-]{43}$/);
  assert.equal(hostA.state, 'Disconnected');
  hostB = (await ok('addHost', { name: 'hv-b' })).host[0];
  assert.notEqual(hostA.token, hostB.token);
  const db = new Database(path.join(s.dataDir, 'palisade.db'), { readonly: true, fileMustExist: true });
  try {
    const row = db.prepare('select token_hash from hosts where uuid = ?').get(hostA.id) as { token_hash: string };
    assert.equal(row.token_hash, createHash('sha256').update(hostA.token).digest('hex'));
    const all = JSON.stringify(db.prepare('select * from hosts').all());
    assert.ok(!all.includes(hostA.token), 'the token itself is never stored');
  } finally { db.close(); }
  const listed = (await ok('listHosts', { id: hostA.id })).host[0];
  assert.equal(listed.token, undefined, 'listHosts never shows the token');
  assert.equal(listed.name, 'hv-a');
  assert.equal(listed.state, 'Disconnected');
  for (const f of ['securitygroupsyncrevision', 'desiredrevision', 'driftrepairs', 'preflight']) assert.ok(f in listed, `listHosts lacks ${f}`);
  assert.equal((await ok('listHosts', { name: 'hv-b' })).host[0].id, hostB.id);
  assert.deepEqual(await ok('listHosts', { state: 'Up' }), {});
});

test('addHost validation: missing or duplicate name, bad zone, wrong hypervisor', async () => {
  await fails('addHost', {}, 431, /missing parameter name/);
  await fails('addHost', { name: 'hv-a' }, 431, /name hv-a: a host with this name already exists/);
  await fails('addHost', { name: 'bad name!' }, 431, /Invalid name/);
  await fails('addHost', { name: 'hv-x', zoneid: '00000000-0000-0000-0000-000000000002' }, 431, /parameter zoneid/);
  await fails('addHost', { name: 'hv-x', hypervisor: 'VMware' }, 431, /hypervisor/);
  assert.equal((await ok('listHosts')).count, 2);
});

test('deployVirtualMachine: allocates the next free IPv4, an IPv6 and a unique 02: MAC; joins default; instance name', async () => {
  const vm1 = await deploy({ networkids: net1.id, name: 'web1', displayname: 'Web one', serviceofferingid: '11111111-1111-1111-1111-111111111111', templateid: '22222222-2222-2222-2222-222222222222' });
  const vm2 = await deploy({ networkids: net1.id, name: 'web2' });
  assert.equal(vm1.state, 'Running');
  assert.equal(vm1.displayname, 'Web one');
  assert.equal(vm1.serviceofferingid, '11111111-1111-1111-1111-111111111111');
  assert.equal(vm1.templateid, '22222222-2222-2222-2222-222222222222');
  assert.equal(vm1.nic.length, 1);
  assert.equal(vm1.nic[0].ipaddress, '10.1.1.10');
  assert.equal(vm2.nic[0].ipaddress, '10.1.1.11');
  assert.equal(vm1.nic[0].ip6address, '2001:db8:1::2', 'the gateway ::1 is skipped');
  assert.equal(vm2.nic[0].ip6address, '2001:db8:1::3');
  assert.match(vm1.nic[0].macaddress, /^02(:[0-9a-f]{2}){5}$/);
  assert.notEqual(vm1.nic[0].macaddress, vm2.nic[0].macaddress);
  assert.equal(vm1.nic[0].isdefault, true);
  assert.deepEqual(vm1.securitygroup.map((g: any) => g.name), ['default']);
  assert.match(vm1.instancename, /^i-\d+-\d+-VM$/);
  assert.notEqual(vm1.instancename, vm2.instancename);
  assert.equal(vm1.securitygroupsyncstate, 'Pending');
  assert.ok(vm1.hostid === hostA.id || vm1.hostid === hostB.id);
  const listed = await getVm(vm1.id);
  assert.equal(listed.nic[0].ipaddress, '10.1.1.10');
  assert.equal(listed.zoneid, zoneId);
  assert.ok('securitygroupsyncstate' in listed);
});

test('deployVirtualMachine: requested addresses are validated against the network and what is in use', async () => {
  const vm = await deploy({ networkids: net1.id, name: 'fixed1', ipaddress: '10.1.1.30', ip6address: '2001:db8:1::30', macaddress: '02:AA:bb:cc:dd:01' });
  assert.equal(vm.nic[0].ipaddress, '10.1.1.30');
  assert.equal(vm.nic[0].ip6address, '2001:db8:1::30');
  assert.equal(vm.nic[0].macaddress, '02:aa:bb:cc:dd:01');
  await jobFails('deployVirtualMachine', { networkids: net1.id, ipaddress: '10.1.1.30' }, 431, /ipaddress 10\.1\.1\.30: the IP address is already in use/);
  await jobFails('deployVirtualMachine', { networkids: net1.id, ipaddress: '10.1.1.41' }, 431, /ipaddress 10\.1\.1\.41: it is not in the IP range/);
  await jobFails('deployVirtualMachine', { networkids: net1.id, ipaddress: '10.1.1.1' }, 431, /ipaddress/);
  await jobFails('deployVirtualMachine', { networkids: net1.id, ipaddress: 'ten' }, 431, /ipaddress/);
  await jobFails('deployVirtualMachine', { networkids: net1.id, ip6address: '2001:db9::5' }, 431, /ip6address/);
  await jobFails('deployVirtualMachine', { networkids: net1.id, ip6address: '2001:db8:1::30' }, 431, /ip6address .* already in use/);
  await jobFails('deployVirtualMachine', { networkids: net1.id, macaddress: '02:aa:bb:cc:dd:01' }, 431, /macaddress .* already in use/);
  await jobFails('deployVirtualMachine', { networkids: net1.id, macaddress: '03:aa:bb:cc:dd:01' }, 431, /macaddress .*multicast/);
  await jobFails('deployVirtualMachine', { networkids: net1.id, macaddress: 'not-a-mac' }, 431, /macaddress/);
  // mixed separators are refused, naming the parameter; one separator throughout (CloudStack's forms) is taken
  await jobFails('deployVirtualMachine', { networkids: net1.id, macaddress: '02:00-00:00:00:01' }, 431, /^Mac address is not valid: 02:00-00:00:00:01 \(parameter macaddress\)$/);
  await jobFails('deployVirtualMachine', { 'iptonetworklist[0].networkid': net1.id, 'iptonetworklist[0].mac': '02-00:00:00:00:01' }, 431, /parameter iptonetworklist\[0\]\.mac/);
  // twelve bare hex digits: CloudStack's NetUtils.isValidMac needs a separator, so they are refused too
  await jobFails('deployVirtualMachine', { networkids: net1.id, macaddress: '0a1b2c3d4e5f' }, 431, /^Mac address is not valid: 0a1b2c3d4e5f \(parameter macaddress\)$/);
  await jobFails('deployVirtualMachine', { 'iptonetworklist[0].networkid': net1.id, 'iptonetworklist[0].mac': '020000000042' }, 431, /^Mac address is not valid: 020000000042 \(parameter iptonetworklist\[0\]\.mac\)$/);
  const dotted = await deploy({ networkids: net1.id, name: 'dotted-mac', macaddress: '2.0.0.0.0.41' });
  assert.equal(dotted.nic[0].macaddress, '02:00:00:00:00:41');
  await job('destroyVirtualMachine', { id: dotted.id, expunge: true });
  await jobFails('deployVirtualMachine', { networkids: net1.id, name: '9lives' }, 431, /Invalid name/);
  await jobFails('deployVirtualMachine', { networkids: net1.id, name: 'web1' }, 431, /web1 already exists/);
  await jobFails('deployVirtualMachine', {}, 431, /networkids/);
  await jobFails('deployVirtualMachine', { networkids: '00000000-0000-0000-0000-000000000003' }, 431, /parameter networkids/);
  await jobFails('deployVirtualMachine', { networkids: 'garbage' }, 431, /parameter networkids/);
  await jobFails('deployVirtualMachine', { networkids: net1.id, hostid: '00000000-0000-0000-0000-000000000004' }, 431, /parameter hostid/);
  await jobFails('deployVirtualMachine', { networkids: `${net1.id},${net1.id}` }, 431, /networkids: network .* more than once/);
  // none of the failures took an address: the next allocation continues where it was
  const next = await deploy({ networkids: net1.id, name: 'after-failures' });
  assert.equal(next.nic[0].ipaddress, '10.1.1.12');
  await job('destroyVirtualMachine', { id: next.id, expunge: true });
});

test('IPv6: the subnet-router anycast address (all-zero host part) is no VM address: deploy, iptonetworklist, addIpToNic and ranges refuse it, 431 naming the parameter', async () => {
  const count = async () => (await listVms()).length;
  const before = await count();
  for (const anycast of ['2001:db8:1::', '2001:DB8:1:0:0:0:0:0']) {
    await jobFails('deployVirtualMachine', { networkids: net1.id, ip6address: anycast }, 431, /ip6address .*subnet-router anycast address of 2001:db8:1::\/64/);
    await jobFails('deployVirtualMachine', { 'iptonetworklist[0].networkid': net1.id, 'iptonetworklist[0].ipv6': anycast }, 431, /iptonetworklist\[0\]\.ipv6 .*subnet-router anycast/);
  }
  assert.equal(await count(), before, 'the refused deploys left nothing behind');
  // the twin: the next address is a host's
  const vm = await deploy({ networkids: net1.id, name: 'anycast-twin', ip6address: '2001:db8:1::31' });
  assert.equal(vm.nic[0].ip6address, '2001:db8:1::31');
  await jobFails('addIpToNic', { nicid: vm.nic[0].id, ipaddress: '2001:db8:1::' }, 431, /ipaddress 2001:db8:1::: it is the subnet-router anycast address/);
  assert.equal((await getVm(vm.id)).nic[0].secondaryip?.length ?? 0, 0, 'no secondary address was added');
  assert.equal((await job('addIpToNic', { nicid: vm.nic[0].id, ipaddress: '2001:db8:1::32' })).nicsecondaryip.ipaddress, '2001:db8:1::32');
  await job('destroyVirtualMachine', { id: vm.id, expunge: true });
  // a range may not start or end there either (as startip/endip may not be the IPv4 network address)
  const v6 = { name: 'anycast-range', ip6gateway: 'fd00:77::1', ip6cidr: 'fd00:77::/64' };
  await fails('createNetwork', { ...v6, startipv6: 'fd00:77::', endipv6: 'fd00:77::20' }, 431, /startipv6 fd00:77::: it is the subnet-router anycast address/);
  const ranged = (await ok('createNetwork', { ...v6, startipv6: 'fd00:77::10', endipv6: 'fd00:77::20' })).network;
  assert.equal(ranged.ip6cidr, 'fd00:77::/64');
  await job('deleteNetwork', { id: ranged.id });
});

test('deployVirtualMachine: security groups by ids xor names, unknown ones refused', async () => {
  const web = (await ok('createSecurityGroup', { name: 'inv-web' })).securitygroup;
  const db = (await ok('createSecurityGroup', { name: 'inv-db' })).securitygroup;
  const byIds = await deploy({ networkids: net1.id, name: 'sg-ids', securitygroupids: `${web.id},${db.id}` });
  assert.deepEqual(byIds.securitygroup.map((g: any) => g.name).sort(), ['inv-db', 'inv-web']);
  const byNames = await deploy({ networkids: net1.id, name: 'sg-names', securitygroupnames: 'inv-web' });
  assert.deepEqual(byNames.securitygroup.map((g: any) => g.id), [web.id]);
  await jobFails('deployVirtualMachine', { networkids: net1.id, securitygroupids: web.id, securitygroupnames: 'inv-web' }, 431,
    /securitygroupids parameter is mutually exclusive with securitygroupnames parameter/);
  await jobFails('deployVirtualMachine', { networkids: net1.id, securitygroupnames: 'no-such-group' }, 431, /Unable to find group by name no-such-group/);
  await jobFails('deployVirtualMachine', { networkids: net1.id, securitygroupids: '00000000-0000-0000-0000-000000000005' }, 431, /parameter securitygroupids/);
  // the group is in use now: deleting it is refused
  await fails('deleteSecurityGroup', { id: web.id }, 536, /in use by virtual machines/);
  for (const v of [byIds, byNames]) await job('destroyVirtualMachine', { id: v.id, expunge: true });
});

test('IP range exhaustion: 533, and the failed deploy leaves nothing behind', async () => {
  const small = (await ok('createNetwork', { name: 'tiny', gateway: '10.2.2.1', netmask: '255.255.255.248', startip: '10.2.2.2', endip: '10.2.2.3' })).network;
  const a = await deploy({ networkids: small.id, name: 'tiny-a' });
  const b = await deploy({ networkids: small.id, name: 'tiny-b' });
  assert.deepEqual([a.nic[0].ipaddress, b.nic[0].ipaddress], ['10.2.2.2', '10.2.2.3']);
  const countBefore = (await listVms()).length;
  // two NICs: the first (net1) is allocated, the second (tiny) is exhausted → the whole deploy rolls back
  await jobFails('deployVirtualMachine', { networkids: `${net1.id},${small.id}`, name: 'tiny-c' }, 533, /no free IPv4 address left in network tiny/);
  assert.equal((await listVms()).length, countBefore);
  assert.equal((await listVms({ name: 'tiny-c' })).length, 0);
  // expunging frees the address for the next VM
  await job('destroyVirtualMachine', { id: a.id, expunge: true });
  const c = await deploy({ networkids: small.id, name: 'tiny-c' });
  assert.equal(c.nic[0].ipaddress, '10.2.2.2');
  const probe = await deploy({ networkids: net1.id, name: 'probe' });
  assert.equal(probe.nic[0].ipaddress, '10.1.1.12', 'the rolled-back deploy did not keep 10.1.1.12');
  for (const v of [b, c, probe]) await job('destroyVirtualMachine', { id: v.id, expunge: true });
  await job('deleteNetwork', { id: small.id });
});

test('concurrent deploys into one network get distinct addresses and MACs until the range is full', async () => {
  const net = (await ok('createNetwork', { name: 'busy', gateway: '10.6.6.1', netmask: '255.255.255.0', startip: '10.6.6.10', endip: '10.6.6.17' })).network;
  const results = await Promise.all(Array.from({ length: 10 }, (_, i) => s.callAndWait('deployVirtualMachine', { networkids: net.id, name: `busy-${i}` })));
  const okJobs = results.filter((r) => r.body.jobstatus === 1).map((r) => r.body.jobresult.virtualmachine);
  const failed = results.filter((r) => r.body.jobstatus === 2).map((r) => r.body.jobresult);
  assert.equal(okJobs.length, 8, 'exactly the 8 addresses of the range were handed out');
  assert.equal(new Set(okJobs.map((v) => v.nic[0].ipaddress)).size, 8);
  assert.equal(new Set(okJobs.map((v) => v.nic[0].macaddress)).size, 8);
  assert.equal(failed.length, 2);
  for (const f of failed) assert.equal(f.errorcode, 533);
  for (const v of okJobs) await job('destroyVirtualMachine', { id: v.id, expunge: true });
  await job('deleteNetwork', { id: net.id });
});

test('placement: without hostid a VM goes to the least loaded host (ties: the oldest)', async () => {
  const load = async () => {
    const hs = (await ok('listHosts')).host as any[];
    return new Map(hs.map((h) => [h.id, h.virtualmachinecount as number]));
  };
  const made: string[] = [];
  for (let i = 0; i < 4; i++) {
    const l = await load();
    const min = Math.min(...l.values());
    const expected = [hostA.id, hostB.id].find((h) => l.get(h) === min);
    const vm = await deploy({ networkids: net1.id, name: `spread-${i}` });
    made.push(vm.id);
    assert.equal(vm.hostid, expected, `deploy ${i}: loads ${JSON.stringify([...l])}`);
  }
  const l = await load();
  assert.ok(Math.abs(l.get(hostA.id)! - l.get(hostB.id)!) <= 1, 'the VMs are spread evenly');
  // an explicit hostid wins over the load
  const busiest = l.get(hostA.id)! >= l.get(hostB.id)! ? hostA.id : hostB.id;
  const pinned = await deploy({ networkids: net1.id, name: 'pinned', hostid: busiest });
  assert.equal(pinned.hostid, busiest);
  for (const id of [...made, pinned.id]) await job('destroyVirtualMachine', { id, expunge: true });
});

test('lifecycle: stop, start on the last host, reboot, migrate, with the errors of each', async () => {
  const vm = await deploy({ networkids: net1.id, name: 'life', hostid: hostA.id });
  assert.equal(vm.hostid, hostA.id);
  const stopped = (await job('stopVirtualMachine', { id: vm.id })).virtualmachine;
  assert.equal(stopped.state, 'Stopped');
  assert.equal(stopped.hostid, undefined);
  assert.equal((await job('stopVirtualMachine', { id: vm.id })).virtualmachine.state, 'Stopped', 'stopping a stopped VM succeeds');
  await jobFails('rebootVirtualMachine', { id: vm.id }, 431, /not Running/);
  await jobFails('migrateVirtualMachine', { virtualmachineid: vm.id, hostid: hostB.id }, 431, /VM is not Running, unable to migrate/);
  const started = (await job('startVirtualMachine', { id: vm.id })).virtualmachine;
  assert.equal(started.state, 'Running');
  assert.equal(started.hostid, hostA.id, 'restarted on its last host');
  await jobFails('startVirtualMachine', { id: vm.id }, 431, /not Stopped/);
  assert.equal((await job('rebootVirtualMachine', { id: vm.id })).virtualmachine.state, 'Running');
  await jobFails('migrateVirtualMachine', { virtualmachineid: vm.id, hostid: hostA.id }, 431, /same host/);
  await jobFails('migrateVirtualMachine', { virtualmachineid: vm.id, hostid: '00000000-0000-0000-0000-000000000006' }, 431, /parameter hostid/);
  // no agent runs here, so every host is Disconnected: an explicit destination is refused, as in
  // CloudStack (test/agent/control.test.ts migrates and starts onto Up hosts)
  await jobFails('migrateVirtualMachine', { virtualmachineid: vm.id, hostid: hostB.id }, 431,
    /^Cannot migrate VM, destination host is not in correct state, has status: Disconnected, state: Enabled \(hostid\)$/);
  assert.equal((await getVm(vm.id)).hostid, hostA.id, 'the refused migration moved nothing');
  // without hostid: the least loaded other host
  const migrated = (await job('migrateVirtualMachine', { virtualmachineid: vm.id })).virtualmachine;
  assert.equal(migrated.hostid, hostB.id);
  assert.equal(migrated.state, 'Running');
  assert.equal(migrated.securitygroupsyncstate, 'Pending');
  assert.equal((await getVm(vm.id)).hostid, hostB.id);
  const back = (await job('migrateVirtualMachine', { virtualmachineid: vm.id })).virtualmachine;
  assert.equal(back.hostid, hostA.id);
  // startvm=false records a Stopped VM with no host; start places it
  const cold = await deploy({ networkids: net1.id, name: 'cold', startvm: false });
  assert.equal(cold.state, 'Stopped');
  assert.equal(cold.hostid, undefined);
  await jobFails('startVirtualMachine', { id: cold.id, hostid: hostB.id }, 431, /^Unable to deploy the VM as the host: \S+ is not in the right state \(hostid\)$/);
  assert.equal((await getVm(cold.id)).state, 'Stopped', 'the refused start changed nothing');
  const warm = (await job('startVirtualMachine', { id: cold.id })).virtualmachine;
  assert.ok([hostA.id, hostB.id].includes(warm.hostid));
  for (const id of [vm.id, cold.id]) await job('destroyVirtualMachine', { id, expunge: true });
});

test('deployVirtualMachine onto a host whose agent was Up and is away: 431, and nothing is kept — the name, address and MAC asked for stay free', async () => {
  const away = (await ok('addHost', { name: 'hv-away' })).host[0];
  // the host as its agent's departure leaves it (control/status, store/queries/cluster): Disconnected with a last contact
  const file = new Database(path.join(s.dataDir, 'palisade.db'));
  try { file.prepare('UPDATE hosts SET last_contact = ? WHERE uuid = ?').run(new Date(Date.now() - 60_000).toISOString(), away.id); } finally { file.close(); }
  const asked = { networkids: net1.id, name: 'asked-for', ipaddress: '10.1.1.33', macaddress: '02:00:00:00:0a:33' };
  await jobFails('deployVirtualMachine', { ...asked, hostid: away.id }, 431, /^Unable to deploy the VM as the host: hv-away is not in the right state \(hostid\)$/);
  assert.deepEqual(await listVms({ name: 'asked-for' }), []);
  // the twin: the same request elsewhere (a host never connected, as every host here) takes all of it
  const vm = await deploy({ ...asked, hostid: hostA.id });
  assert.deepEqual([vm.hostid, vm.name, vm.nic[0].ipaddress, vm.nic[0].macaddress], [hostA.id, 'asked-for', '10.1.1.33', '02:00:00:00:0a:33']);
  await job('destroyVirtualMachine', { id: vm.id, expunge: true });
  await ok('deleteHost', { id: away.id });
});

test('deleteHost refuses while VMs are placed on it (536), succeeds once they are gone', async () => {
  const h = (await ok('addHost', { name: 'hv-tmp' })).host[0];
  const vm = await deploy({ networkids: net1.id, name: 'on-tmp', hostid: h.id });
  await fails('deleteHost', { id: h.id }, 536, /virtual machine\(s\) are placed on it/);
  assert.equal((await ok('listHosts', { id: h.id })).count, 1);
  await job('stopVirtualMachine', { id: vm.id });
  assert.equal((await ok('deleteHost', { id: h.id })).success, true);
  assert.deepEqual(await ok('listHosts', { id: h.id }), {});
  await fails('deleteHost', { id: h.id }, 431, /parameter id/);
  // the stopped VM forgot the deleted host: it starts elsewhere
  const started = (await job('startVirtualMachine', { id: vm.id })).virtualmachine;
  assert.ok([hostA.id, hostB.id].includes(started.hostid));
  await job('destroyVirtualMachine', { id: vm.id, expunge: true });
});

test('destroy without expunge keeps the VM (Destroyed) and its address; expunge removes both', async () => {
  const vm = await deploy({ networkids: net1.id, name: 'doomed', ipaddress: '10.1.1.35' });
  const d = (await job('destroyVirtualMachine', { id: vm.id })).virtualmachine;
  assert.equal(d.state, 'Destroyed');
  assert.equal((await getVm(vm.id)).state, 'Destroyed');
  assert.equal((await listVms({ state: 'Destroyed', id: vm.id })).length, 1);
  await jobFails('deployVirtualMachine', { networkids: net1.id, ipaddress: '10.1.1.35' }, 431, /already in use/);
  await jobFails('destroyVirtualMachine', { id: vm.id }, 431, /already destroyed/);
  await jobFails('startVirtualMachine', { id: vm.id }, 431, /destroyed/);
  // recover brings it back Stopped with its address; destroy again, then expunge
  const rec = (await ok('recoverVirtualMachine', { id: vm.id })).virtualmachine;
  assert.equal(rec.state, 'Stopped');
  assert.equal(rec.nic[0].ipaddress, '10.1.1.35');
  await fails('recoverVirtualMachine', { id: vm.id }, 431, /not Destroyed/);
  await jobFails('expungeVirtualMachine', { id: vm.id }, 431, /only destroyed VMs can be expunged/);
  await job('destroyVirtualMachine', { id: vm.id });
  const e = (await job('destroyVirtualMachine', { id: vm.id, expunge: true })).virtualmachine;
  assert.equal(e.state, 'Expunging');
  assert.equal((await listVms({ id: vm.id })).length, 0);
  await jobFails('destroyVirtualMachine', { id: vm.id }, 431, /parameter id/);
  const reuse = await deploy({ networkids: net1.id, name: 'reuse', ipaddress: '10.1.1.35' });
  assert.equal(reuse.nic[0].ipaddress, '10.1.1.35');
  // expungeVirtualMachine is the two-step way
  await job('destroyVirtualMachine', { id: reuse.id });
  assert.equal((await job('expungeVirtualMachine', { id: reuse.id })).success, true);
  assert.equal((await listVms({ id: reuse.id })).length, 0);
});

test('a destroyed VM\'s NICs and secondary addresses are frozen: removeIpFromNic, addIpToNic, add/removeNic refuse (431); once recovered they work', async () => {
  const side = (await ok('createNetwork', { name: 'frozen-side', gateway: '10.6.6.1', netmask: '255.255.255.0', startip: '10.6.6.10', endip: '10.6.6.20' })).network;
  const third = (await ok('createNetwork', { name: 'frozen-third', gateway: '10.6.7.1', netmask: '255.255.255.0', startip: '10.6.7.10', endip: '10.6.7.20' })).network;
  const vm = await deploy({ networkids: `${net1.id},${side.id}`, name: 'frozen' });
  const primary = vm.nic.find((n: any) => n.networkid === net1.id), extra = vm.nic.find((n: any) => n.networkid === side.id);
  const sec = (await job('addIpToNic', { nicid: primary.id })).nicsecondaryip;
  await job('destroyVirtualMachine', { id: vm.id });
  const snapshot = async () => JSON.stringify((await ok('listNics', { virtualmachineid: vm.id })).nic);
  const before = await snapshot();
  await jobFails('removeIpFromNic', { id: sec.id }, 431, new RegExp(`Invalid id: virtual machine ${vm.id} of secondary IP ${sec.id} is destroyed`));
  await jobFails('addIpToNic', { nicid: primary.id }, 431, /Invalid nicid: virtual machine .* is destroyed/);
  await jobFails('addNicToVirtualMachine', { virtualmachineid: vm.id, networkid: third.id }, 431, /virtualmachineid.*destroyed/);
  await jobFails('removeNicFromVirtualMachine', { virtualmachineid: vm.id, nicid: extra.id }, 431, /virtualmachineid.*destroyed/);
  assert.equal(await snapshot(), before, 'nothing changed');
  // the twin: recovered (Stopped), the same calls work
  await ok('recoverVirtualMachine', { id: vm.id });
  assert.equal((await job('removeIpFromNic', { id: sec.id })).success, true);
  await job('removeNicFromVirtualMachine', { virtualmachineid: vm.id, nicid: extra.id });
  assert.deepEqual((await ok('listNics', { virtualmachineid: vm.id })).nic.map((n: any) => [n.networkid, n.secondaryip?.length ?? 0]), [[net1.id, 0]]);
  await job('destroyVirtualMachine', { id: vm.id, expunge: true });
  for (const n of [side, third]) await job('deleteNetwork', { id: n.id });
});

test('updateVirtualMachine changes the groups of a RUNNING VM; a bad request changes nothing', async () => {
  const g1 = (await ok('createSecurityGroup', { name: 'upd-1' })).securitygroup;
  const g2 = (await ok('createSecurityGroup', { name: 'upd-2' })).securitygroup;
  const vm = await deploy({ networkids: net1.id, name: 'live', securitygroupids: g1.id });
  assert.equal(vm.state, 'Running');
  const u = (await ok('updateVirtualMachine', { id: vm.id, securitygroupids: `${g1.id},${g2.id}`, displayname: 'Live one' })).virtualmachine;
  assert.equal(u.state, 'Running', 'no stop needed');
  assert.deepEqual(u.securitygroup.map((g: any) => g.name).sort(), ['upd-1', 'upd-2']);
  assert.equal(u.displayname, 'Live one');
  assert.equal(u.securitygroupsyncstate, 'Pending');
  const byName = (await ok('updateVirtualMachine', { id: vm.id, securitygroupnames: 'upd-2' })).virtualmachine;
  assert.deepEqual(byName.securitygroup.map((g: any) => g.name), ['upd-2']);
  await fails('updateVirtualMachine', { id: vm.id, securitygroupnames: 'upd-1,nope', displayname: 'changed?' }, 431, /Unable to find group by name nope/);
  await fails('updateVirtualMachine', { id: vm.id, securitygroupids: g1.id, securitygroupnames: 'upd-1' }, 431, /mutually exclusive/);
  await fails('updateVirtualMachine', { id: vm.id, name: '-bad-' }, 431, /Invalid name/);
  await fails('updateVirtualMachine', { id: '00000000-0000-0000-0000-000000000007' }, 431, /parameter id/);
  await fails('updateVirtualMachine', {}, 431, /missing parameter id/);
  const after = await getVm(vm.id);
  assert.deepEqual(after.securitygroup.map((g: any) => g.name), ['upd-2'], 'the failed updates left the groups alone');
  assert.equal(after.displayname, 'Live one');
  // the groups a VM uses are what listSecurityGroups?virtualmachineid shows
  const sg = await ok('listSecurityGroups', { virtualmachineid: vm.id });
  assert.deepEqual(sg.securitygroup.map((g: any) => g.name), ['upd-2']);
  await job('destroyVirtualMachine', { id: vm.id, expunge: true });
});

test('listVirtualMachines filters: id, ids, name, state, hostid, networkid, keyword, paging', async () => {
  const net2 = (await ok('createNetwork', { name: 'guest2', gateway: '10.3.3.1', netmask: '255.255.255.0', startip: '10.3.3.10', endip: '10.3.3.50' })).network;
  const a = await deploy({ networkids: net1.id, name: 'flt-a', hostid: hostA.id });
  const b = await deploy({ networkids: net2.id, name: 'flt-b', hostid: hostB.id });
  const c = await deploy({ networkids: net2.id, name: 'other-c', hostid: hostB.id, startvm: false });
  const ids = (l: any[]) => l.map((v) => v.id).sort();
  assert.deepEqual(ids(await listVms({ ids: `${a.id},${b.id}` })), [a.id, b.id].sort());
  assert.deepEqual(ids(await listVms({ name: 'flt' })), [a.id, b.id].sort());
  assert.deepEqual(ids(await listVms({ networkid: net2.id })), [b.id, c.id].sort());
  assert.deepEqual(ids(await listVms({ hostid: hostB.id, networkid: net2.id })), [b.id]);
  assert.deepEqual(ids(await listVms({ state: 'Stopped', networkid: net2.id })), [c.id]);
  assert.deepEqual(ids(await listVms({ keyword: 'other' })), [c.id]);
  const p1 = await ok('listVirtualMachines', { networkid: net2.id, page: 1, pagesize: 1 });
  const p2 = await ok('listVirtualMachines', { networkid: net2.id, page: 2, pagesize: 1 });
  assert.equal(p1.count, 2);
  assert.equal(p1.virtualmachine.length, 1);
  assert.notEqual(p1.virtualmachine[0].id, p2.virtualmachine[0].id);
  await fails('listVirtualMachines', { pagesize: 501, page: 1 }, 431, /Page size can't exceed/);
  await fails('listVirtualMachines', { state: 'Sleeping' }, 431, /Invalid state/);
  await fails('listVirtualMachines', { id: 'zzz' }, 431, /parameter id/);
  // a network with NICs cannot be deleted (536) until its VMs are expunged
  await jobFails('deleteNetwork', { id: net2.id }, 536, /in use by 2 NIC/);
  for (const v of [a, b, c]) await job('destroyVirtualMachine', { id: v.id, expunge: true });
  assert.equal((await job('deleteNetwork', { id: net2.id })).success, true);
  assert.deepEqual(await ok('listNetworks', { id: net2.id }), {});
});

test('NICs and secondary IPs: add, list, remove, with their errors', async () => {
  const net3 = (await ok('createNetwork', { name: 'guest3', gateway: '10.4.4.1', netmask: '255.255.255.0', startip: '10.4.4.10', endip: '10.4.4.20', ip6gateway: 'fd00:4::1', ip6cidr: 'fd00:4::/64', startipv6: 'fd00:4::100', endipv6: 'fd00:4::1ff' })).network;
  const vm = await deploy({ networkids: net1.id, name: 'multi' });
  // a MAC of twelve bare hex digits is refused (NetUtils.isValidMac) and adds nothing: the next add works
  await jobFails('addNicToVirtualMachine', { virtualmachineid: vm.id, networkid: net3.id, macaddress: '0a1b2c3d4e5f' }, 431, /^Mac address is not valid: 0a1b2c3d4e5f \(parameter macaddress\)$/);
  const withNic = (await job('addNicToVirtualMachine', { virtualmachineid: vm.id, networkid: net3.id, ipaddress: '10.4.4.15' })).virtualmachine;
  assert.equal(withNic.nic.length, 2);
  const second = withNic.nic.find((n: any) => n.networkid === net3.id);
  assert.equal(second.ipaddress, '10.4.4.15');
  assert.equal(second.ip6address, 'fd00:4::100', 'IPv6 comes from startipv6');
  assert.equal(second.isdefault, false);
  assert.equal(withNic.securitygroupsyncstate, 'Pending');
  await jobFails('addNicToVirtualMachine', { virtualmachineid: vm.id, networkid: net3.id }, 530, /A NIC already exists/);
  await jobFails('addNicToVirtualMachine', { virtualmachineid: vm.id, networkid: '00000000-0000-0000-0000-000000000008' }, 431, /parameter networkid/);
  await jobFails('addNicToVirtualMachine', { virtualmachineid: vm.id }, 431, /missing parameter networkid/);

  const nics = (await ok('listNics', { virtualmachineid: vm.id })).nic;
  assert.equal(nics.length, 2);
  assert.equal((await ok('listNics', { virtualmachineid: vm.id, networkid: net3.id })).nic[0].id, second.id);
  await fails('listNics', {}, 431, /missing parameter virtualmachineid/);

  const ip4 = (await job('addIpToNic', { nicid: second.id })).nicsecondaryip;
  assert.equal(ip4.ipaddress, '10.4.4.10', 'lowest free address of the range');
  assert.equal(ip4.nicid, second.id);
  assert.equal(ip4.virtualmachineid, vm.id);
  const ip6 = (await job('addIpToNic', { nicid: second.id, ipaddress: 'fd00:4::1a0' })).nicsecondaryip;
  assert.equal(ip6.ipaddress, 'fd00:4::1a0');
  await jobFails('addIpToNic', { nicid: second.id, ipaddress: '10.4.4.15' }, 431, /ipaddress 10\.4\.4\.15: the IP address is already in use/);
  await jobFails('addIpToNic', { nicid: second.id, ipaddress: '10.5.5.5' }, 431, /ipaddress 10\.5\.5\.5: it is not in the IP range/);
  await jobFails('addIpToNic', { nicid: second.id, ipaddress: 'x.y' }, 431, /ipaddress/);
  await jobFails('addIpToNic', { nicid: '00000000-0000-0000-0000-000000000009' }, 431, /parameter nicid/);
  const listed = (await getVm(vm.id)).nic.find((n: any) => n.id === second.id);
  assert.deepEqual(listed.secondaryip.map((x: any) => x.ipaddress).sort(), ['10.4.4.10', 'fd00:4::1a0']);
  // a secondary address is in use for primaries too
  await jobFails('deployVirtualMachine', { networkids: net3.id, ipaddress: '10.4.4.10' }, 431, /already in use/);

  assert.equal((await job('removeIpFromNic', { id: ip4.id })).success, true);
  await jobFails('removeIpFromNic', { id: ip4.id }, 431, /parameter id/);
  assert.deepEqual((await getVm(vm.id)).nic.find((n: any) => n.id === second.id).secondaryip.map((x: any) => x.id), [ip6.id]);

  const def = withNic.nic.find((n: any) => n.isdefault);
  await jobFails('removeNicFromVirtualMachine', { virtualmachineid: vm.id, nicid: def.id }, 431, /NIC is default/);
  const other = await deploy({ networkids: net1.id, name: 'other-owner-of-nic' });
  await jobFails('removeNicFromVirtualMachine', { virtualmachineid: other.id, nicid: second.id }, 431, /nicid: NIC .* is not a NIC on VM/);
  const without = (await job('removeNicFromVirtualMachine', { virtualmachineid: vm.id, nicid: second.id })).virtualmachine;
  assert.deepEqual(without.nic.map((n: any) => n.id), [def.id]);
  // its addresses (primary and secondary) are free again
  const again = await deploy({ networkids: net3.id, name: 'takes-freed', ipaddress: '10.4.4.15', ip6address: 'fd00:4::1a0' });
  assert.equal(again.nic[0].ipaddress, '10.4.4.15');
  for (const v of [vm, other, again]) await job('destroyVirtualMachine', { id: v.id, expunge: true });
  await job('deleteNetwork', { id: net3.id });
});

test('addNicToVirtualMachine keeps host names unique per network: a NIC in a network where another VM has the name is refused (530, as CloudStack)', async () => {
  const other = (await ok('createNetwork', { name: 'names-other', gateway: '10.7.7.1', netmask: '255.255.255.0', startip: '10.7.7.10', endip: '10.7.7.20' })).network;
  const third = (await ok('createNetwork', { name: 'names-third', gateway: '10.7.8.1', netmask: '255.255.255.0', startip: '10.7.8.10', endip: '10.7.8.20' })).network;
  const a = await deploy({ networkids: net1.id, name: 'twin-name' });
  const b = await deploy({ networkids: other.id, name: 'twin-name' }); // another network: the name is free there
  await jobFails('addNicToVirtualMachine', { virtualmachineid: b.id, networkid: net1.id }, 530, /^Network guest1 already has a vm with host name: twin-name$/);
  assert.equal((await ok('listNics', { virtualmachineid: b.id })).nic.length, 1, 'no NIC was added');
  // the twin: a network where nobody has the name
  assert.equal((await job('addNicToVirtualMachine', { virtualmachineid: b.id, networkid: third.id })).virtualmachine.nic.length, 2);
  for (const v of [a, b]) await job('destroyVirtualMachine', { id: v.id, expunge: true });
  for (const n of [other, third]) await job('deleteNetwork', { id: n.id });
});

test('every inventory write reaches the control plane: the affected hosts\' desired revision grows', async () => {
  const rev = async () => new Map(((await ok('listHosts')).host as any[]).map((h) => [h.id, h.desiredrevision as number]));
  /** Run a write, then wait (bounded) until each named host's desired revision passed its value before the write. */
  async function bumps(what: string, hosts: string[], write: () => Promise<unknown>): Promise<void> {
    const before = await rev();
    await write();
    for (let i = 0; ; i++) {
      const now = await rev();
      if (hosts.every((h) => now.get(h)! > before.get(h)!)) return;
      assert.ok(i < 200, `${what}: desired revision of ${hosts.join(', ')} did not grow (before ${JSON.stringify([...before])}, now ${JSON.stringify([...now])})`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const g = (await ok('createSecurityGroup', { name: 'sync-g' })).securitygroup;
  const r = await s.callAndWait('authorizeSecurityGroupIngress', { securitygroupid: g.id, protocol: 'tcp', startport: 22, endport: 22, cidrlist: '192.0.2.0/24' });
  assert.equal(r.body.jobstatus, 1, JSON.stringify(r.body));
  let vm: any;
  await bumps('deploy', [hostA.id], async () => { vm = await deploy({ networkids: net1.id, name: 'sync1', hostid: hostA.id }); });
  await bumps('migrate', [hostA.id, hostB.id], () => job('migrateVirtualMachine', { virtualmachineid: vm.id }));
  await bumps('group change while running', [hostB.id], () => ok('updateVirtualMachine', { id: vm.id, securitygroupids: g.id }));
  await bumps('secondary IP', [hostB.id], () => job('addIpToNic', { nicid: vm.nic[0].id }));
  await bumps('stop', [hostB.id], () => job('stopVirtualMachine', { id: vm.id }));
  await bumps('start', [hostB.id], () => job('startVirtualMachine', { id: vm.id }));
  await bumps('destroy', [hostB.id], () => job('destroyVirtualMachine', { id: vm.id, expunge: true }));
  // no agent is connected, so nothing is acknowledged: the hosts are behind and say so
  const h = (await ok('listHosts', { id: hostB.id })).host[0];
  assert.ok(h.desiredrevision > h.securitygroupsyncrevision);
});

test('events: the VM lifecycle is recorded with CloudStack event types', async () => {
  const vm = await deploy({ networkids: net1.id, name: 'evt1' });
  await job('stopVirtualMachine', { id: vm.id });
  await job('destroyVirtualMachine', { id: vm.id, expunge: true });
  const ev = ((await ok('listEvents', { pagesize: 500, page: 1 })).event ?? []) as any[];
  for (const type of ['VM.CREATE', 'VM.START', 'VM.STOP', 'VM.DESTROY', 'VM.EXPUNGE', 'NETWORK.CREATE']) {
    assert.ok(ev.some((e) => e.type === type && e.state === 'Completed'), `no Completed ${type} event`);
  }
  const created = ev.find((e) => e.type === 'VM.CREATE' && e.state === 'Completed' && e.resourceid === vm.id);
  assert.ok(created, 'VM.CREATE names the VM');
  assert.ok(ev.some((e) => e.type === 'VM.CREATE' && e.state === 'Scheduled'), 'async commands also record Scheduled');
});

test('a real CloudStack client (python3-cs `cloudstack`) deploys, lists and stops a VM', async () => {
  const cs = async (...args: string[]) => {
    const r = await cloudstack(s, ...args);
    assert.equal(r.code, 0, `cloudstack ${args[0]}: ${r.stdout}${r.stderr}`);
    return r.out;
  };
  const d = await cs('deployVirtualMachine', `networkids=${net1.id}`, 'name=cli-vm', `securitygroupnames=default`);
  const vm = d.virtualmachine;
  assert.equal(vm.name, 'cli-vm');
  assert.equal(vm.state, 'Running');
  const l = await cs('listVirtualMachines', 'name=cli-vm');
  assert.equal(l.virtualmachine[0].id, vm.id);
  assert.equal(l.virtualmachine[0].nic[0].ipaddress, vm.nic[0].ipaddress);
  assert.equal((await cs('stopVirtualMachine', `id=${vm.id}`)).virtualmachine.state, 'Stopped');
  // a failing job makes the client exit non-zero with CloudStack's error text
  const failed = await cloudstack(s, 'startVirtualMachine', `id=${vm.id}`, 'hostid=00000000-0000-0000-0000-00000000000b');
  assert.notEqual(failed.code, 0);
  assert.match(failed.stdout + failed.stderr, /parameter hostid/);
  await cs('destroyVirtualMachine', `id=${vm.id}`, 'expunge=true');
  assert.equal((await listVms({ id: vm.id })).length, 0);
});

test('deleteNetwork: unknown id 431; the state survives a restart', async () => {
  await jobFails('deleteNetwork', { id: '00000000-0000-0000-0000-00000000000a' }, 431, /parameter id/);
  const vm = await deploy({ networkids: net1.id, name: 'persist' });
  await s.restart();
  const back = await getVm(vm.id);
  assert.equal(back.nic[0].ipaddress, vm.nic[0].ipaddress);
  assert.equal(back.nic[0].macaddress, vm.nic[0].macaddress);
  assert.equal(back.hostid, vm.hostid);
  assert.equal((await ok('listHosts')).count, 2);
  assert.equal((await ok('listNetworks', { id: net1.id })).count, 1);
  await job('destroyVirtualMachine', { id: vm.id, expunge: true });
});
