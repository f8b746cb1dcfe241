// Two servers on one PostgreSQL database, the same calls raced through both: a check and the write it
// guards must not be split by the other server's call (store/queries/lock.ts). Each race is run for
// several rounds; every round must end in a state one order of the two calls could have produced.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pgLib from 'pg';
import { startPostgres, type PgCluster } from '../helpers/postgres.js';
import { apiClient, startServer, type TestServer } from '../helpers/server.js';

const ROUNDS = 10;
let pg: PgCluster;
let s1: TestServer;
let s2: TestServer;
/** The same admin, through the second server. */
let via2: ReturnType<typeof apiClient>;

before(async () => {
  pg = await startPostgres();
  s1 = await startServer({ db: pg.url });
  s2 = await startServer({ db: pg.url });
  via2 = apiClient(`http://127.0.0.1:${s2.port}/client/api`, { apikey: s1.apikey, secretkey: s1.secretkey });
});
after(async () => { await s2?.stop(); await s1?.stop(); await pg?.stop(); });

async function ok(command: string, params: Record<string, string | number | boolean> = {}): Promise<any> {
  const r = await s1.call(command, params);
  assert.equal(r.status, 200, `${command}: ${JSON.stringify(r.body)}`);
  return r.body[`${command.toLowerCase()}response`];
}

test('deleting a group while another server authorizes a rule referencing it: one of the two wins, no rule points at a deleted group', async () => {
  const outcomes = new Map<string, number>();
  for (let i = 0; i < ROUNDS; i++) {
    const target = (await ok('createSecurityGroup', { name: `ref-target-${i}` })).securitygroup.id;
    const holder = (await ok('createSecurityGroup', { name: `ref-holder-${i}` })).securitygroup.id;
    const [del, auth] = await Promise.all([
      s1.call('deleteSecurityGroup', { id: target }),
      via2.callAndWait('authorizeSecurityGroupIngress', { securitygroupid: holder, protocol: 'tcp', startport: 22, endport: 22, 'usersecuritygrouplist[0].group': `ref-target-${i}`, 'usersecuritygrouplist[0].account': 'admin' }),
    ]);
    const deleted = del.status === 200;
    const authorized = auth.body.jobstatus === 1;
    const key = `${deleted ? 'deleted' : `delete ${del.status}`} / ${authorized ? 'authorized' : 'authorize failed'}`;
    outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
    assert.notEqual(deleted, authorized, `round ${i}: exactly one wins (${key})`);
    const rules = (await ok('listSecurityGroups', { id: holder })).securitygroup[0].ingressrule ?? [];
    assert.equal(rules.length, authorized ? 1 : 0, `round ${i}`);
    for (const r of rules) assert.equal(r.securitygroupname, `ref-target-${i}`, `round ${i}: the rule names an existing group`);
    assert.equal((await ok('listSecurityGroups', { id: target })).securitygroup?.length ?? 0, deleted ? 0 : 1);
  }
  console.log(`# delete vs reference: ${JSON.stringify(Object.fromEntries(outcomes))}`);
});

test('the same tag key created through both servers at once: stored once, every other call refused', async () => {
  for (let i = 0; i < ROUNDS; i++) {
    const g = (await ok('createSecurityGroup', { name: `tagged-${i}` })).securitygroup.id;
    const params = { resourcetype: 'SecurityGroup', resourceids: g, 'tags[0].key': 'env', 'tags[0].value': 'prod' };
    const results = await Promise.all([s1.callAndWait('createTags', params), via2.callAndWait('createTags', params), s1.callAndWait('createTags', params), via2.callAndWait('createTags', params)]);
    assert.equal(results.filter((r) => r.body.jobstatus === 1).length, 1, `round ${i}: ${JSON.stringify(results.map((r) => r.body.jobresult))}`);
    for (const r of results.filter((x) => x.body.jobstatus !== 1)) assert.match(r.body.jobresult.errortext, /tag env already on SecurityGroup/);
    assert.equal((await ok('listTags', { resourceid: g })).count, 1, `round ${i}`);
  }
});

test('one VM\'s group set changed through both servers at once: every call answers, the VM ends in one of the sets', async () => {
  const net = (await ok('createNetwork', { name: 'racenet', displaytext: 'race', gateway: '10.30.0.1', netmask: '255.255.255.0', startip: '10.30.0.10', endip: '10.30.0.200' })).network;
  await ok('addHost', { name: 'race-hv' });
  const groups = await Promise.all(['ga', 'gb', 'gc', 'gd'].map(async (n) => (await ok('createSecurityGroup', { name: n })).securitygroup.id as string));
  const vm = (await s1.callAndWait('deployVirtualMachine', { networkids: net.id, name: 'race-vm', securitygroupids: groups[0] })).body.jobresult.virtualmachine;
  for (let i = 0; i < ROUNDS; i++) {
    const results = await Promise.all(groups.map((g, k) => (k % 2 ? via2 : s1).call('updateVirtualMachine', { id: vm.id, securitygroupids: g })));
    assert.deepEqual(results.map((r) => r.status), [200, 200, 200, 200], `round ${i}: ${JSON.stringify(results.filter((r) => r.status !== 200).map((r) => r.body))}`);
    const now = (await ok('listVirtualMachines', { id: vm.id })).virtualmachine[0].securitygroup.map((x: any) => x.id);
    assert.equal(now.length, 1, `round ${i}: one group, not a mix: ${now}`);
    assert.ok(groups.includes(now[0]));
  }
});

test('deleting an account while another server deploys a VM for it: never a live VM of a deleted account', async () => {
  const domain = (await ok('listDomains', {})).domain.find((d: any) => d.name === 'ROOT').id;
  const net = (await ok('listNetworks', {})).network.find((n: any) => n.name === 'racenet').id;
  const outcomes = new Map<string, number>();
  for (let i = 0; i < ROUNDS; i++) {
    const name = `doomed-${i}`;
    const account = (await ok('createAccount', { username: name, password: `${name}-password`, email: `${name}@example.org`, firstname: 'd', lastname: 'd', accounttype: 0, domainid: domain })).account;
    const [del, dep] = await Promise.all([
      s1.callAndWait('deleteAccount', { id: account.id }),
      via2.callAndWait('deployVirtualMachine', { networkids: net, name: `doomed-vm-${i}`, account: name, domainid: domain }),
    ]);
    const deleted = del.body.jobstatus === 1;
    const deployed = dep.body.jobstatus === 1;
    const key = `${deleted ? 'deleted' : 'delete failed'} / ${deployed ? 'deployed' : 'deploy failed'}`;
    outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
    assert.ok(!(deleted && deployed), `round ${i}: ${key}`);
    if (deployed) {
      // the account stays and owns its VM; clean up for the next round
      const vmId = dep.body.jobresult.virtualmachine.id;
      assert.equal((await s1.callAndWait('destroyVirtualMachine', { id: vmId, expunge: true })).body.jobstatus, 1);
    }
  }
  console.log(`# delete account vs deploy: ${JSON.stringify(Object.fromEntries(outcomes))}`);
});

test('one network added to a VM through both servers at once: one NIC; a secondary IP added while its NIC is removed: never an address of a removed NIC', async () => {
  const base = (await ok('listNetworks', {})).network.find((n: any) => n.name === 'racenet').id;
  const vm = (await s1.callAndWait('deployVirtualMachine', { networkids: base, name: 'nic-race-vm' })).body.jobresult.virtualmachine;
  for (let i = 0; i < ROUNDS; i++) {
    const net = (await ok('createNetwork', { name: `nicrace-${i}`, gateway: `10.31.${i}.1`, netmask: '255.255.255.0', startip: `10.31.${i}.10`, endip: `10.31.${i}.200` })).network.id;
    const [a, b] = await Promise.all([s1, via2].map((s) => s.callAndWait('addNicToVirtualMachine', { virtualmachineid: vm.id, networkid: net })));
    assert.deepEqual([a.body.jobstatus, b.body.jobstatus].sort(), [1, 2], `round ${i}: exactly one NIC added: ${JSON.stringify([a.body.jobresult, b.body.jobresult])}`);
    const nics = (await ok('listNics', { virtualmachineid: vm.id })).nic.filter((n: any) => n.networkid === net);
    assert.equal(nics.length, 1, `round ${i}: one NIC in the network`);
    const [added, removed] = await Promise.all([
      s1.callAndWait('addIpToNic', { nicid: nics[0].id }),
      via2.callAndWait('removeNicFromVirtualMachine', { virtualmachineid: vm.id, nicid: nics[0].id }),
    ]);
    assert.equal(removed.body.jobstatus, 1, JSON.stringify(removed.body));
    // the address either went with the NIC or was refused: in neither case is it still held in the network
    const client = new pgLib.Client({ connectionString: pg.url });
    await client.connect();
    const held = await client.query('select count(*)::int as n from nic_secondary_ips s left join nics n on n.id = s.nic_id where n.id is null or n.removed is not null')
      .finally(() => client.end());
    assert.equal(held.rows[0].n, 0, `round ${i}: no secondary address of a removed NIC (addIpToNic ${added.body.jobstatus})`);
  }
});

test('the same requested MAC through both servers at once: one deploy wins, the other is refused with 431 naming it (not 530)', async () => {
  // two networks: the deploys share no network lock, only the MAC's uniqueness
  const nets = [(await ok('listNetworks', {})).network.find((n: any) => n.name === 'racenet').id,
    (await ok('createNetwork', { name: 'racenet-mac', gateway: '10.32.0.1', netmask: '255.255.255.0', startip: '10.32.0.10', endip: '10.32.0.200' })).network.id];
  for (let i = 0; i < ROUNDS; i++) {
    const mac = `52:54:00:7a:00:${(0x10 + i).toString(16)}`;
    const [a, b] = await Promise.all([s1, via2].map((s, k) => s.callAndWait('deployVirtualMachine', { networkids: nets[k], name: `mac-race-${i}-${k}`, macaddress: mac })));
    const outcomes = [a, b].map((r) => (r.body.jobstatus === 1 ? 'ok' : `${r.body.jobresult?.errorcode}`)).sort();
    assert.deepEqual(outcomes, ['431', 'ok'], `round ${i}: ${JSON.stringify([a.body.jobresult, b.body.jobresult])}`);
    const loser = [a, b].find((r) => r.body.jobstatus === 2)!;
    assert.match(loser.body.jobresult.errortext, /MAC address is already in use|mac given is already in use/);
  }
});

test('the same VM name deployed through both servers at once into one network: one wins, the other is refused 431; different names both pass', async () => {
  const net = (await ok('listNetworks', {})).network.find((n: any) => n.name === 'racenet').id;
  for (let i = 0; i < ROUNDS; i++) {
    const name = `name-race-${i}`;
    const [a, b] = await Promise.all([s1, via2].map((s) => s.callAndWait('deployVirtualMachine', { networkids: net, name })));
    const outcomes = [a, b].map((r) => (r.body.jobstatus === 1 ? 'ok' : `${r.body.jobresult?.errorcode}`)).sort();
    assert.deepEqual(outcomes, ['431', 'ok'], `round ${i}: ${JSON.stringify([a.body.jobresult, b.body.jobresult])}`);
    const loser = [a, b].find((r) => r.body.jobstatus === 2)!;
    assert.match(loser.body.jobresult.errortext, new RegExp(`hostName ${name} already exists`));
    const named = (await ok('listVirtualMachines', { name, listall: true })).virtualmachine.filter((v: any) => v.name === name);
    assert.equal(named.length, 1, `round ${i}: one VM of that name`);
    // the twin: two names at once both pass (the lock serialises, it refuses nothing)
    const [c, d] = await Promise.all([s1, via2].map((s, k) => s.callAndWait('deployVirtualMachine', { networkids: net, name: `${name}-${k}` })));
    assert.deepEqual([c.body.jobstatus, d.body.jobstatus], [1, 1], JSON.stringify([c.body.jobresult, d.body.jobresult]));
    for (const r of [a, b, c, d].filter((x) => x.body.jobstatus === 1)) {
      assert.equal((await s1.callAndWait('destroyVirtualMachine', { id: r.body.jobresult.virtualmachine.id, expunge: true })).body.jobstatus, 1);
    }
  }
});

test('renaming a VM through one server while the other deploys that name into its network: never two VMs of one name', async () => {
  const net = (await ok('listNetworks', {})).network.find((n: any) => n.name === 'racenet').id;
  for (let i = 0; i < ROUNDS; i++) {
    const name = `rename-race-${i}`;
    const vm = (await s1.callAndWait('deployVirtualMachine', { networkids: net, name: `${name}-old` })).body.jobresult.virtualmachine;
    const [ren, dep] = await Promise.all([s1.call('updateVirtualMachine', { id: vm.id, name }), via2.callAndWait('deployVirtualMachine', { networkids: net, name })]);
    const renamed = ren.status === 200, deployed = dep.body.jobstatus === 1;
    assert.ok(renamed !== deployed, `round ${i}: exactly one takes the name: rename ${ren.status} ${JSON.stringify(ren.body)}, deploy ${JSON.stringify(dep.body.jobresult)}`);
    if (!renamed) assert.equal(ren.status, 431);
    const named = (await ok('listVirtualMachines', { name, listall: true })).virtualmachine.filter((v: any) => v.name === name);
    assert.equal(named.length, 1, `round ${i}: one VM of that name`);
    for (const id of [vm.id, ...(deployed ? [dep.body.jobresult.virtualmachine.id] : [])]) {
      assert.equal((await s1.callAndWait('destroyVirtualMachine', { id, expunge: true })).body.jobstatus, 1);
    }
  }
});

test('two servers placing VMs onto a host one short of its bound at once: one is placed, the other refused 533; with room, both are', async () => {
  const { MAX_VMS_PER_HOST } = await import('../../src/protocol/limits.js');
  // two networks: the deploys share no network lock, only the host
  const nets = await Promise.all(['room-a', 'room-b'].map(async (name, k) => (await ok('createNetwork', { name, gateway: `10.33.${k}.1`, netmask: '255.255.255.0', startip: `10.33.${k}.10`, endip: `10.33.${k}.200` })).network.id as string));
  const host = (await ok('addHost', { name: 'room-hv' })).host[0];
  const client = new pgLib.Client({ connectionString: pg.url });
  await client.connect();
  try {
    // fill the host behind the servers' backs (placement counts rows in the database): fillers named room-fill-*
    const fill = (n: number) => client.query(`insert into vms (uuid, name, display_name, instance_name, account_id, domain_id, zone_id, host_id, state, sync_state, created)
      select gen_random_uuid()::text, 'room-fill-' || g, 'room-fill-' || g, 'i-room-' || g, a.id, a.domain_id, h.zone_id, h.id, 'Running', 'Synced', now()::text
      from generate_series(1, $2::int) g, hosts h, accounts a where h.uuid = $1 and a.name = 'admin'`, [host.id, n]);
    const placed = async () => Number((await client.query(`select count(*)::int as n from vms v join hosts h on h.id = v.host_id where h.uuid = $1 and v.removed is null and v.state = 'Running'`, [host.id])).rows[0].n);
    await fill(MAX_VMS_PER_HOST - 3);
    const deployBoth = (round: string) => Promise.all([s1, via2].map((s, k) => s.callAndWait('deployVirtualMachine', { networkids: nets[k], name: `room-${round}-${k}`, hostid: host.id })));
    // the twin: with two places left, both deploys are placed
    const roomy = await deployBoth('roomy');
    assert.deepEqual(roomy.map((r) => r.body.jobstatus), [1, 1], JSON.stringify(roomy.map((r) => r.body.jobresult)));
    assert.equal(await placed(), MAX_VMS_PER_HOST - 1);
    for (let i = 0; i < ROUNDS; i++) {
      const both = await deployBoth(`r${i}`);
      const outcomes = both.map((r) => (r.body.jobstatus === 1 ? 'ok' : `${r.body.jobresult?.errorcode}`)).sort();
      assert.deepEqual(outcomes, ['533', 'ok'], `round ${i}: ${JSON.stringify(both.map((r) => r.body.jobresult))}`);
      assert.equal(await placed(), MAX_VMS_PER_HOST, `round ${i}: the host holds its bound, not more`);
      const loser = both.find((r) => r.body.jobstatus === 2)!;
      assert.match(loser.body.jobresult.errortext, /room-hv.*16,?384 VMs|16,?384 VMs.*room-hv/);
      // one filler leaves, so the next round starts one short again
      await client.query(`delete from vms where id = (select min(v.id) from vms v where v.name like 'room-fill-%')`);
    }
  } finally {
    await client.query(`delete from vms where name like 'room-fill-%'`).catch(() => {});
    await client.end();
  }
});
