// A representative day of the API on PostgreSQL: a throwaway cluster, the REAL server process with
// --db, security groups (CIDRs of both families, a group reference, a rejected request, a revoke),
// inventory (network, host, two VMs, a live group change, LIKE filters), events and jobs, the in-use
// refusal, concurrent creates of one name (READ COMMITTED races), a restart on the same database that
// must show exactly the same state, the unique indexes of migration 002, and an agent syncing from it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { startPostgres, type PgCluster } from '../helpers/postgres.js';
import { startServer, type TestServer, type Creds } from '../helpers/server.js';
import { sql } from 'kysely';
import { openPostgres } from '../../src/store/db.js';
import { simAgent, vmIds, waitFor } from '../agent/helpers.js';

let pg: PgCluster;
let s: TestServer;
before(async () => { pg = await startPostgres(); s = await startServer({ db: pg.url }); });
after(async () => { await s?.stop(); await pg?.stop(); });

type P = Record<string, string | number | boolean>;

async function ok(command: string, params: P = {}, who?: Creds): Promise<any> {
  const r = await s.call(command, params, who);
  assert.equal(r.status, 200, `${command} failed: ${JSON.stringify(r.body)}`);
  return r.body[`${command.toLowerCase()}response`];
}
async function job(command: string, params: P = {}, who?: Creds): Promise<any> {
  const r = await s.callAndWait(command, params, who);
  assert.equal(r.status, 200, `${command} submit failed: ${JSON.stringify(r.body)}`);
  assert.equal(r.body.jobstatus, 1, `${command} job failed: ${JSON.stringify(r.body.jobresult)}`);
  return r.body.jobresult;
}
/** An async command whose job must fail with this code; returns the error text. */
async function jobFails(command: string, params: P, code: number, who?: Creds): Promise<string> {
  const r = await s.callAndWait(command, params, who);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.jobstatus, 2, `${command} ${JSON.stringify(params)} should have failed: ${JSON.stringify(r.body)}`);
  assert.equal(r.body.jobresult.errorcode, code, JSON.stringify(r.body.jobresult));
  return r.body.jobresult.errortext;
}
async function fails(command: string, params: P, code: number, message: RegExp, who?: Creds): Promise<void> {
  const r = await s.call(command, params, who);
  assert.equal(r.status, code, `${command}: expected ${code}, got ${r.status} ${JSON.stringify(r.body)}`);
  const inner = r.body[`${command.toLowerCase()}response`];
  assert.equal(inner.errorcode, code);
  assert.match(inner.errortext, message);
}

let alice: Creds;
let web: any, dbg: any, net: any, host: any, vm1: any, vm2: any;
const sgSnapshot = async (who?: Creds) => JSON.stringify(await ok('listSecurityGroups', { listall: true }, who));
const cidrsOf = (g: any) => (g.ingressrule ?? []).filter((r: any) => r.cidr).map((r: any) => r.cidr).sort();

test('accounts and security groups: CIDRs of both families, a group reference, a rejected request, a revoke', async () => {
  const acct = (await ok('createAccount', {
    username: 'alice', password: 'secret-pw', email: 'alice@example.test', firstname: 'Alice', lastname: 'Test', accounttype: 0,
  })).account;
  const keys = (await ok('registerUserKeys', { id: acct.user[0].id })).userkeys;
  alice = { apikey: keys.apikey, secretkey: keys.secretkey };
  // createAccount made the account's default group
  const own = await ok('listSecurityGroups', {}, alice);
  assert.equal(own.count, 1);
  assert.equal(typeof own.count, 'number', 'count is a number, not the bigint string pg returns');
  assert.equal(own.securitygroup[0].name, 'default');

  web = (await ok('createSecurityGroup', { name: 'web', description: 'web tier' }, alice)).securitygroup;
  dbg = (await ok('createSecurityGroup', { name: 'db', description: 'database tier' }, alice)).securitygroup;
  // names are unique per account ignoring case, as in CloudStack
  await fails('createSecurityGroup', { name: 'WEB' }, 431, /already exists/, alice);
  // ...but another account may use the same name
  const adminWeb = (await ok('createSecurityGroup', { name: 'web' })).securitygroup;
  assert.notEqual(adminWeb.id, web.id);

  const cidrs = ['10.0.0.0/8', '192.0.2.0/24', '2001:db8::/32', '::/0'];
  const auth = (await job('authorizeSecurityGroupIngress', { securitygroupid: web.id, protocol: 'tcp', startport: 80, endport: 443, cidrlist: cidrs.join(',') }, alice)).securitygroup;
  assert.deepEqual(cidrsOf(auth), [...cidrs].sort());
  await job('authorizeSecurityGroupIngress', {
    securitygroupid: dbg.id, protocol: 'tcp', startport: 5432, endport: 5432,
    'usersecuritygrouplist[0].account': 'alice', 'usersecuritygrouplist[0].group': 'web',
  }, alice);
  await job('authorizeSecurityGroupIngress', { securitygroupid: web.id, protocol: 'icmp', icmptype: -1, icmpcode: -1, cidrlist: '0.0.0.0/0' }, alice);

  const listed = (await ok('listSecurityGroups', { id: web.id }, alice)).securitygroup[0];
  assert.equal(listed.ingressrule.length, 5);
  assert.deepEqual(cidrsOf(listed), [...cidrs, '0.0.0.0/0'].sort());
  for (const r of listed.ingressrule.filter((x: any) => x.protocol === 'tcp')) {
    assert.equal(r.startport, 80); assert.equal(r.endport, 443);
  }
  const icmp = listed.ingressrule.find((x: any) => x.protocol === 'icmp');
  assert.equal(icmp.icmptype, -1); assert.equal(icmp.icmpcode, -1);
  const dbListed = (await ok('listSecurityGroups', { securitygroupname: 'db' }, alice)).securitygroup[0];
  assert.equal(dbListed.ingressrule.length, 1);
  assert.equal(dbListed.ingressrule[0].securitygroupname, 'web');
  assert.equal(dbListed.ingressrule[0].account, 'alice');
  assert.equal(dbListed.ingressrule[0].cidr, undefined);

  // one bad CIDR among good ones: the whole request is refused and nothing changes
  const before0 = await sgSnapshot(alice);
  const text = await jobFails('authorizeSecurityGroupIngress', { securitygroupid: web.id, protocol: 'udp', startport: 53, endport: 53, cidrlist: '198.51.100.0/24,10.0.0.0/33' }, 431, alice);
  assert.match(text, /10\.0\.0\.0\/33/);
  // a request that adds nothing (an exact duplicate) is refused too
  assert.match(await jobFails('authorizeSecurityGroupIngress', { securitygroupid: web.id, protocol: 'tcp', startport: 80, endport: 443, cidrlist: '192.0.2.0/24' }, 530, alice),
    /Failed to authorize/);
  assert.equal(await sgSnapshot(alice), before0, 'rejected requests changed state');

  // revoke one rule: exactly that rule goes
  const v6 = listed.ingressrule.find((x: any) => x.cidr === '::/0');
  assert.equal((await job('revokeSecurityGroupIngress', { id: v6.ruleid }, alice)).success, true);
  const afterRevoke = (await ok('listSecurityGroups', { id: web.id }, alice)).securitygroup[0];
  assert.deepEqual(cidrsOf(afterRevoke), ['0.0.0.0/0', '10.0.0.0/8', '192.0.2.0/24', '2001:db8::/32']);
  assert.ok(!afterRevoke.ingressrule.some((x: any) => x.ruleid === v6.ruleid));
  // keyword search is case-insensitive on PostgreSQL too
  assert.deepEqual((await ok('listSecurityGroups', { keyword: 'DATABASE' }, alice)).securitygroup.map((g: any) => g.name), ['db']);
});

test('inventory: network, host, two VMs, a live group change, listings', async () => {
  net = (await ok('createNetwork', {
    name: 'pgnet', displaytext: 'PG network', gateway: '10.20.0.1', netmask: '255.255.255.0', startip: '10.20.0.10', endip: '10.20.0.20',
    ip6gateway: '2001:db8:20::1', ip6cidr: '2001:db8:20::/64',
  })).network;
  host = (await ok('addHost', { name: 'pg-hv1' })).host[0];
  assert.ok(host.token, 'addHost returns a one-time token');
  vm1 = (await job('deployVirtualMachine', { networkids: net.id, name: 'pg-vm1', securitygroupids: web.id }, alice)).virtualmachine;
  vm2 = (await job('deployVirtualMachine', { networkids: net.id, name: 'pg-vm2', securitygroupnames: 'web,db', ipaddress: '10.20.0.15' }, alice)).virtualmachine;
  assert.equal(vm1.state, 'Running'); assert.equal(vm2.state, 'Running');
  assert.equal(vm1.nic[0].ipaddress, '10.20.0.10', 'the lowest free address');
  assert.equal(vm2.nic[0].ipaddress, '10.20.0.15');
  assert.ok(vm1.nic[0].ip6address && vm2.nic[0].ip6address && vm1.nic[0].ip6address !== vm2.nic[0].ip6address);
  assert.notEqual(vm1.nic[0].macaddress, vm2.nic[0].macaddress);
  // a taken address is refused, and the failed deployment leaves nothing behind
  const t = await jobFails('deployVirtualMachine', { networkids: net.id, name: 'pg-vm3', ipaddress: '10.20.0.15' }, 431, alice);
  assert.match(t, /already in use/);

  const u = (await ok('updateVirtualMachine', { id: vm1.id, securitygroupids: `${web.id},${dbg.id}` }, alice)).virtualmachine;
  assert.equal(u.state, 'Running');
  assert.deepEqual(u.securitygroup.map((g: any) => g.name).sort(), ['db', 'web']);

  const vms = await ok('listVirtualMachines', {}, alice);
  assert.equal(vms.count, 2);
  assert.equal(typeof vms.count, 'number');
  assert.deepEqual(vms.virtualmachine.map((v: any) => v.name).sort(), ['pg-vm1', 'pg-vm2']);
  for (const v of vms.virtualmachine) assert.deepEqual(v.securitygroup.map((g: any) => g.name).sort(), ['db', 'web']);
  assert.deepEqual((await ok('listVirtualMachines', { name: 'PG-VM1' }, alice)).virtualmachine.map((v: any) => v.id), [vm1.id], 'name filter ignores case');
  assert.deepEqual((await ok('listVirtualMachines', { keyword: 'vm2' }, alice)).virtualmachine.map((v: any) => v.id), [vm2.id]);
  // LIKE metacharacters are literal, and a backslash (PostgreSQL's default LIKE escape) is no error
  assert.equal((await ok('listVirtualMachines', { name: 'pg_vm1' }, alice)).count, undefined, '_ is not a wildcard');
  assert.equal((await ok('listVirtualMachines', { keyword: 'pg%1' }, alice)).count, undefined, '% is not a wildcard');
  await ok('updateVirtualMachine', { id: vm2.id, displayname: '100% back\\slash' }, alice);
  assert.deepEqual((await ok('listVirtualMachines', { keyword: '\\' }, alice)).virtualmachine.map((v: any) => v.id), [vm2.id]);
  assert.deepEqual((await ok('listVirtualMachines', { keyword: '100% B' }, alice)).virtualmachine.map((v: any) => v.id), [vm2.id]);
  assert.equal((await ok('listVirtualMachines', { keyword: 'vm1\\' }, alice)).count, undefined);
  const members = (await ok('listSecurityGroups', { id: dbg.id }, alice)).securitygroup[0];
  assert.equal(members.virtualmachinecount, 2);
  assert.deepEqual([...members.virtualmachineids].sort(), [vm1.id, vm2.id].sort());
  const hosts = await ok('listHosts', { id: host.id });
  assert.equal(hosts.count, 1);

  const ev = await ok('listEvents', { type: 'VM.CREATE', listall: true });
  assert.equal(typeof ev.count, 'number');
  assert.ok(ev.count >= 2, JSON.stringify(ev));
  const sgev = await ok('listEvents', { type: 'SG.AUTH.INGRESS' }, alice);
  assert.ok(sgev.count >= 3, JSON.stringify(sgev));
  // newest first
  const all = (await ok('listEvents', { pagesize: 500, page: 1, listall: true })).event as any[];
  const ids = all.map((e) => e.created);
  assert.deepEqual([...ids].sort().reverse(), ids);
  const jobs = await ok('listAsyncJobs', {}, alice);
  assert.equal(typeof jobs.count, 'number');
  const cmds = (jobs.asyncjobs as any[]).map((j) => j.cmd);
  assert.ok(cmds.some((c) => /DeployVM|deployVirtualMachine/i.test(c)), JSON.stringify(cmds));
  assert.ok((jobs.asyncjobs as any[]).some((j) => j.jobstatus === 2), 'the failed deployment is a failed job');
});

test('deleteSecurityGroup of a group in use is refused with 536 and changes nothing', async () => {
  const before0 = await sgSnapshot(alice);
  await fails('deleteSecurityGroup', { id: dbg.id }, 536, /in use by virtual machines/, alice);
  await fails('deleteSecurityGroup', { id: web.id }, 536, /security rules that allow this group/, alice);
  assert.equal(await sgSnapshot(alice), before0);
  // a free group goes
  const tmp = (await ok('createSecurityGroup', { name: 'tmp' }, alice)).securitygroup;
  assert.equal((await ok('deleteSecurityGroup', { id: tmp.id }, alice)).success, true);
  assert.equal(await sgSnapshot(alice), before0);
});

test('concurrent creates of one group name (any case) in one account: exactly one wins, the rest get 431', async () => {
  const names = ['race', 'RACE', 'Race', 'rAcE', 'race', 'raCe'];
  const rs = await Promise.all(names.map((name) => s.call('createSecurityGroup', { name }, alice)));
  const codes = rs.map((r) => r.status);
  assert.equal(codes.filter((c) => c === 200).length, 1, JSON.stringify(rs.map((r) => r.body)));
  assert.deepEqual(codes.filter((c) => c !== 200), [431, 431, 431, 431, 431], JSON.stringify(rs.map((r) => r.body)));
  const listed = (await ok('listSecurityGroups', { keyword: 'race' }, alice)).securitygroup;
  assert.equal(listed.length, 1);
  assert.equal((await ok('deleteSecurityGroup', { id: listed[0].id }, alice)).success, true);
});

test('concurrent addHost / createDomain with one name: exactly one row, every loser gets an error', async () => {
  for (const [cmd, params, list, key] of [
    ['addHost', { name: 'race-hv' }, 'listHosts', 'host'],
    ['createDomain', { name: 'racedom' }, 'listDomains', 'domain'],
  ] as const) {
    const rs = await Promise.all(Array.from({ length: 5 }, () => s.call(cmd, params)));
    const codes = rs.map((r) => r.status);
    assert.equal(codes.filter((c) => c === 200).length, 1, JSON.stringify(rs.map((r) => r.body)));
    // the losers see the winner (431) or, when they checked first, the unique index of migration 002 (530)
    assert.ok(codes.every((c) => c === 200 || c === 431 || c === 530), JSON.stringify(codes));
    const rows = ((await ok(list, { listall: true }))[key] as any[]).filter((x) => x.name === params.name);
    assert.equal(rows.length, 1, `${cmd}: one ${params.name}`);
  }
});

test('a restart on the same PostgreSQL database shows the same state', async () => {
  const views = async () => ({
    sg: await ok('listSecurityGroups', { listall: true }),
    vms: await ok('listVirtualMachines', { listall: true }),
    nets: await ok('listNetworks', { listall: true }),
    accounts: await ok('listAccounts', { listall: true }),
  });
  const before0 = await views();
  const jobsBefore = (await ok('listAsyncJobs', { listall: true })).count;
  await s.restart();
  assert.deepEqual(await views(), before0);
  assert.equal((await ok('listAsyncJobs', { listall: true })).count, jobsBefore);
  // alice's keys still work and the server keeps allocating from the stored state
  const vm3 = (await job('deployVirtualMachine', { networkids: net.id, name: 'pg-vm3', securitygroupids: web.id }, alice)).virtualmachine;
  assert.equal(vm3.nic[0].ipaddress, '10.20.0.11');
  assert.equal((await ok('listVirtualMachines', {}, alice)).count, 3);
});

test('migration 002: the database itself refuses duplicate addresses, MACs and group names', async (t) => {
  const db = openPostgres(pg.url);
  t.after(() => db.destroy());
  const nic = await db.selectFrom('nics').selectAll().where('ipv4', '=', '10.20.0.15').executeTakeFirstOrThrow();
  const vm = await db.selectFrom('vms').select('id').where('name', '=', 'pg-vm1').executeTakeFirstOrThrow();
  const base = { ...nic, id: undefined, uuid: crypto.randomUUID(), vm_id: vm.id, device_id: 5, ipv4: '10.20.0.19', ipv6: null, mac: '02:00:00:aa:bb:cc' };
  delete (base as any).id;
  await assert.rejects(db.insertInto('nics').values({ ...base, ipv4: nic.ipv4 }).execute(), /nics_network_ipv4_uq/);
  await assert.rejects(db.insertInto('nics').values({ ...base, ipv6: nic.ipv6 }).execute(), /nics_network_ipv6_uq/);
  await assert.rejects(db.insertInto('nics').values({ ...base, mac: nic.mac }).execute(), /nics_mac_uq/);
  const g = await db.selectFrom('security_groups').selectAll().where('uuid', '=', web.id).executeTakeFirstOrThrow();
  await assert.rejects(db.insertInto('security_groups').values({ ...g, id: undefined as never, uuid: crypto.randomUUID() }).execute(), /sg_account_name_uq/);
  // the matching allowed cases: a removed NIC's address and MAC are free, NICs without IPv6 do not collide
  const removed = { ...base, uuid: crypto.randomUUID(), ipv4: nic.ipv4, ipv6: nic.ipv6, mac: nic.mac, removed: new Date().toISOString() };
  await db.transaction().execute(async (trx) => {
    await trx.insertInto('nics').values(removed).execute();
    await trx.insertInto('nics').values({ ...base, uuid: crypto.randomUUID(), device_id: 6, ipv4: '10.20.0.18', mac: '02:00:00:aa:bb:cd' }).execute();
    await trx.insertInto('nics').values({ ...base, uuid: crypto.randomUUID(), device_id: 7, ipv4: '10.20.0.17', mac: '02:00:00:aa:bb:ce' }).execute();
    throw new Error('rollback');
  }).catch((e) => assert.match(String(e), /rollback/));
  assert.equal((await db.selectFrom('nics').select('id').where('vm_id', '=', vm.id).execute()).length, 1, 'rolled back');
});

test('an agent on a PostgreSQL-backed server: snapshot of its host, Up and synced, then a delta', async (t) => {
  const a = simAgent(s, host.token, 'pg-agent');
  t.after(async () => { await a.stop(); fs.rmSync(a.dir, { recursive: true, force: true }); });
  await a.start();
  await waitFor('snapshot', () => a.appliedRevision !== null);
  const mine = (await ok('listVirtualMachines', { listall: true, hostid: host.id })).virtualmachine.map((v: any) => v.id).sort();
  assert.ok(mine.includes(vm1.id) && mine.includes(vm2.id), 'pg-vm3 went to the less loaded race-hv');
  assert.equal(mine.length, 2);
  assert.deepEqual(vmIds(a), mine);
  const cidrsFor = (vmId: string, fam: 'v4' | 'v6') =>
    a.state!.vms.find((v) => v.vmId === vmId)![fam].ingress.flatMap((r) => r.cidrs).sort();
  assert.deepEqual(cidrsFor(vm1.id, 'v4'), ['0.0.0.0/0', '10.0.0.0/8', '192.0.2.0/24']);
  assert.deepEqual(cidrsFor(vm1.id, 'v6'), ['2001:db8::/32']);
  const synced = await waitFor('host synced', async () => { const r = (await ok('listHosts', { id: host.id })).host[0]; return r.state === 'Up' && r.securitygroupsynced ? r : null; });
  assert.equal(synced.securitygroupsyncrevision, synced.desiredrevision);
  await waitFor('VMs Synced', async () => (await ok('listVirtualMachines', { listall: true, hostid: host.id })).virtualmachine.every((v: any) => v.securitygroupsyncstate === 'Synced'));
  // a new rule reaches the agent and the host is synced again at a higher revision
  const rev0 = a.appliedRevision!;
  await job('authorizeSecurityGroupIngress', { securitygroupid: web.id, protocol: 'udp', startport: 53, endport: 53, cidrlist: '198.51.100.0/24' }, alice);
  await waitFor('delta applied', () => a.appliedRevision! > rev0 && cidrsFor(vm1.id, 'v4').includes('198.51.100.0/24'));
  await waitFor('host synced again', async () => {
    const r = (await ok('listHosts', { id: host.id })).host[0];
    return r.securitygroupsynced && r.securitygroupsyncrevision > synced.securitygroupsyncrevision;
  });
  assert.ok(cidrsFor(vm2.id, 'v4').includes('198.51.100.0/24'), 'vm2 is in web too');
});

test('the server outlives lost database connections: PostgreSQL ends them all, the next requests reconnect', async (t) => {
  const admin = openPostgres(pg.url);
  t.after(() => admin.destroy());
  await ok('listZones'); // the server's pool holds idle connections now
  const others = (await sql<{ pid: number }>`select pid from pg_stat_activity
    where pid <> pg_backend_pid() and backend_type = 'client backend'`.execute(admin)).rows;
  assert.ok(others.length > 0, 'the server has connections to end');
  for (const { pid } of others) await sql`select pg_terminate_backend(${pid})`.execute(admin);
  await new Promise((r) => setTimeout(r, 300)); // let the idle clients see their connection go
  assert.match(s.output(), /idle PostgreSQL connection was lost/);
  assert.equal((await ok('listZones')).count, 1, 'still serving: ' + s.output().slice(-2000));
  await job('authorizeSecurityGroupIngress', { securitygroupid: web.id, protocol: 'tcp', startport: 8443, endport: 8443, cidrlist: '192.0.2.0/24' }, alice);
});

test('two processes on one data dir (one server id): the later one serves, the earlier steps back and refuses writes; alone again, it rejoins', async () => {
  const twin = await startServer({ db: pg.url, dataDir: s.dataDir });
  try {
    assert.equal((await twin.call('createSecurityGroup', { name: 'twin-ok' })).status, 200, 'the later process serves');
    // the earlier one finds a live heartbeat row of another incarnation under its id at its next beat
    await waitUntil(() => /another server process runs with this server's id/.test(s.output()), 15_000);
    const refused = await s.call('createSecurityGroup', { name: 'twin-refused' });
    assert.equal(refused.status, 530, JSON.stringify(refused.body));
    assert.equal((await twin.call('listSecurityGroups', { securitygroupname: 'twin-refused' })).body.listsecuritygroupsresponse.count, undefined, 'nothing created');
    assert.equal((await s.call('listZones')).status, 200, 'reads still answer');
  } finally {
    await twin.stop();   // (its data dir is the first one's: kept)
  }
  // the twin stopped (its row removed): the first rejoins and writes again
  await waitUntil(async () => (await s.call('createSecurityGroup', { name: 'twin-back' })).status === 200, 20_000);
});

async function waitUntil(cond: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) { if (await cond()) return; await new Promise((r) => setTimeout(r, 200)); }
  assert.fail(`not within ${ms} ms`);
}
