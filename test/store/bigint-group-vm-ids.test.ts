// Migration 016 (64-bit group, VM, NIC, secondary-address and network ids, and every column holding
// one, on PostgreSQL) on both dialects: a store at migration 015 whose ids of those tables reached int4's
// largest value. Before 016, PostgreSQL refuses the next group, VM, NIC, secondary address and network,
// and a rule, membership or logged drop naming a group or VM past 2^31 (SQLite's integers are 64-bit: it
// never did); after it, the API (built in-process on that store) creates groups past 2^31, authorizes a
// rule in one allowing another, deploys VMs into them with NICs and secondary addresses past 2^31 on
// networks past 2^31, lists them all, compiles them through the control plane's loaders, explains and
// dry-runs on them, logs a drop of one, changes them (membership, a NIC, an address, renames, stop/start,
// destroy/recover) and deletes everything. Two checks are on reads typecheck cannot see (text compared
// with a number): a second NIC in the same network is refused, a group renamed in other case is not
// taken for another group.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { sql } from 'kysely';
import { migrate } from '../../src/store/db.js';
import { isSqlite } from '../../src/store/dialect.js';
import { loadCloudState, reloadPart } from '../../src/control/load.js';
import { compileVm } from '../../src/policy/api.js';
import { loadPolicyInput } from '../../src/store/queries/cloud.js';
import { ingestDrops } from '../../src/observe/index.js';
import { apiOn } from '../helpers/api-on-store.js';
import { MIGRATION_TEST_NOW as NOW, openMigrationStores, storeBefore, type MigrationStores } from '../helpers/migration-stores.js';

const INT4_MAX = 2 ** 31 - 1;
const PAST = INT4_MAX + 1;
/** The tables whose serial ids 016 widens. */
const SERIALS = ['security_groups', 'vms', 'nics', 'nic_secondary_ips', 'networks'];

let both: MigrationStores;
before(async () => { both = await openMigrationStores('bigint-group-vm-ids'); });
after(async () => { await both?.close(); });

const drop = (vmId: number, hostId: number) => ({
  vm_id: vmId, host_id: hostId, nic_uuid: null, direction: 'ingress', protocol: 'tcp', src_address: '192.0.2.1', src_port: 40000,
  dst_address: '10.1.1.10', dst_port: 22, icmp_type: null, icmp_code: null, reason: 'no rule', created: NOW,
});

test('migration 016: group, VM, NIC, address and network ids past 2^31 on a store that was at 015', async () => {
  for (const [name, db] of both.stores) {
    const raw = await storeBefore(db, '016', name);
    const atMax = async () => {
      for (const table of SERIALS) {
        if (isSqlite(db)) await sql`insert or replace into sqlite_sequence (name, seq) values (${table}, ${INT4_MAX})`.execute(raw);
        else await sql`select setval(pg_get_serial_sequence(${table}, 'id'), ${INT4_MAX})`.execute(raw);
      }
    };
    await atMax();
    // Before 016: PostgreSQL cannot take the next id of any of them, nor hold a group or VM id past 2^31
    // where one is referenced; SQLite can.
    const rows: Record<string, Record<string, unknown>> = {
      security_groups: { uuid: crypto.randomUUID(), name: 'g', description: '', account_id: 1, domain_id: 1, created: NOW },
      vms: { uuid: crypto.randomUUID(), name: 'v', display_name: 'v', instance_name: 'i-1-1-VM', account_id: 1, domain_id: 1, zone_id: 1, host_id: null, last_host_id: null,
        state: 'Stopped', service_offering_id: null, template_id: null, sync_state: 'Synced', sync_error: null, created: NOW, removed: null },
      nics: { uuid: crypto.randomUUID(), vm_id: 1, network_id: 1, mac: '02:00:00:00:00:01', ipv4: null, ipv6: null, is_default: 1, device_id: 0, device_name: null, created: NOW, removed: null },
      nic_secondary_ips: { uuid: crypto.randomUUID(), nic_id: 1, vm_id: 1, network_id: 1, address: '10.9.9.9', family: 4, created: NOW },
      networks: { uuid: crypto.randomUUID(), name: 'n', display_text: 'n', zone_id: 1, account_id: 1, domain_id: 1, gateway: null, netmask: null, start_ip: null, end_ip: null,
        ip6_gateway: null, ip6_cidr: null, start_ipv6: null, end_ipv6: null, vlan: null, created: NOW, removed: null },
    };
    const rule = (groupId: number, allowed: number | null) => ({ uuid: crypto.randomUUID(), group_id: groupId, account_id: 1, type: 'ingress', protocol: 'tcp', start_port: 22, end_port: 22,
      cidr: allowed === null ? '192.0.2.0/24' : null, allowed_group_id: allowed, created: NOW });
    const writes: [string, () => Promise<unknown>, RegExp][] = [
      ...Object.entries(rows).map(([table, row]): [string, () => Promise<unknown>, RegExp] => [`the next ${table} id`, () => raw.insertInto(table).values(row).execute(), /reached maximum value of sequence/]),
      ['a rule in a group past 2^31', () => raw.insertInto('security_group_rules').values(rule(PAST, null)).execute(), /out of range for type integer/],
      ['a rule allowing a group past 2^31', () => raw.insertInto('security_group_rules').values(rule(1, PAST)).execute(), /out of range for type integer/],
      ['a membership of a group past 2^31', () => raw.insertInto('security_group_vm_map').values({ group_id: PAST, vm_id: 1 }).execute(), /out of range for type integer/],
      ['a membership of a VM past 2^31', () => raw.insertInto('security_group_vm_map').values({ group_id: 1, vm_id: PAST }).execute(), /out of range for type integer/],
      ['a logged drop of a VM past 2^31', () => raw.insertInto('security_group_drops').values(drop(PAST, 1)).execute(), /out of range for type integer/],
    ];
    for (const [what, write, refused] of writes) {
      if (isSqlite(db)) await write();
      else await assert.rejects(write, refused, `${name}: ${what}`);
    }
    for (const table of [...SERIALS, 'security_group_rules', 'security_group_vm_map', 'security_group_drops']) await raw.deleteFrom(table).execute();
    await atMax();

    await migrate(db);

    const { app, ok, fails } = await apiOn(db);
    try {
      const zoneId = (await ok('listZones')).zone[0].id;
      const network = async (n: number) => (await ok('createNetwork', { name: `n${n}`, displaytext: `n${n}`, zoneid: zoneId, gateway: `10.${n}.1.1`, netmask: '255.255.255.0',
        startip: `10.${n}.1.10`, endip: `10.${n}.1.200` })).network;
      const net1 = await network(1), net2 = await network(2);
      const host = (await ok('addHost', { name: 'kvm-a' })).host[0];
      const web = (await ok('createSecurityGroup', { name: 'web' })).securitygroup;
      const dbGroup = (await ok('createSecurityGroup', { name: 'db' })).securitygroup;
      // A rule in web allowing db (a group past 2^31 referencing another), and a CIDR rule.
      await ok('authorizeSecurityGroupIngress', { securitygroupid: web.id, protocol: 'tcp', startport: 5432, endport: 5432, cidrlist: '192.0.2.0/24',
        'usersecuritygrouplist[0].account': 'admin', 'usersecuritygrouplist[0].group': 'db' });
      const vm1 = (await ok('deployVirtualMachine', { name: 'vm1', networkids: net1.id, hostid: host.id, securitygroupids: web.id })).virtualmachine;
      const vm2 = (await ok('deployVirtualMachine', { name: 'vm2', networkids: net1.id, hostid: host.id, securitygroupids: dbGroup.id })).virtualmachine;
      const secondary = (await ok('addIpToNic', { nicid: vm2.nic[0].id, ipaddress: '10.1.1.99' })).nicsecondaryip;

      const idsOf = async (table: string) => (await (db as any).selectFrom(table).select('id').orderBy('id').execute()).map((r: { id: number | string }) => Number(r.id)) as number[];
      for (const table of SERIALS) {
        const ids = await idsOf(table);
        assert.ok(ids.length > 0 && ids.every((id) => id > INT4_MAX), `${name}: ${table} ids ${ids.join(', ')}`);
      }
      const idOf = async (table: 'security_groups' | 'vms' | 'networks' | 'nics', uuid: string) =>
        Number((await db.selectFrom(table).select('id').where('uuid', '=', uuid).executeTakeFirstOrThrow()).id);
      const webId = await idOf('security_groups', web.id), dbGroupId = await idOf('security_groups', dbGroup.id);
      const vm1Id = await idOf('vms', vm1.id), vm2Id = await idOf('vms', vm2.id);
      const nic2Id = await idOf('nics', vm2.nic[0].id), net1Id = await idOf('networks', net1.id);

      // Listed through the API: the rule names db, the groups their members, the VMs their groups and NICs.
      const group = async (id: string) => (await ok('listSecurityGroups', { id })).securitygroup[0];
      const ruleRow = (await db.selectFrom('security_group_rules').select(['uuid', 'group_id', 'allowed_group_id', 'cidr']).orderBy('id').execute())
        .map((r) => [Number(r.group_id), r.allowed_group_id === null ? null : Number(r.allowed_group_id), r.cidr]);
      assert.deepEqual(ruleRow, [[webId, dbGroupId, null], [webId, null, '192.0.2.0/24']], `${name}: stored rules`);
      assert.deepEqual((await group(web.id)).ingressrule.map((r: any) => [r.startport, r.securitygroupname ?? r.cidr, r.account]), [[5432, 'db', 'admin'], [5432, '192.0.2.0/24', undefined]], name);
      assert.deepEqual((await group(web.id)).virtualmachineids, [vm1.id], `${name}: web's members`);
      assert.deepEqual((await group(dbGroup.id)).virtualmachineids, [vm2.id], `${name}: db's members`);
      assert.deepEqual((await ok('listSecurityGroups', { virtualmachineid: vm1.id })).securitygroup.map((g: any) => g.name), ['web'], `${name}: vm1's groups`);
      const vmListed = async (id: string) => (await ok('listVirtualMachines', { id })).virtualmachine[0];
      assert.deepEqual((await vmListed(vm1.id)).securitygroup.map((g: any) => g.name), ['web'], name);
      assert.deepEqual((await vmListed(vm2.id)).nic.map((n: any) => [n.id, n.networkid, n.ipaddress, n.secondaryip.map((s: any) => s.ipaddress)]),
        [[vm2.nic[0].id, net1.id, vm2.nic[0].ipaddress, ['10.1.1.99']]], `${name}: vm2's NIC`);
      assert.deepEqual((await ok('listNics', { virtualmachineid: vm2.id })).nic.map((n: any) => n.secondaryip.map((s: any) => s.id)), [[secondary.id]], name);
      assert.deepEqual((await ok('listVirtualMachines', { securitygroupid: dbGroup.id })).virtualmachine.map((v: any) => v.id), [vm2.id], `${name}: VMs by group`);
      assert.deepEqual((await ok('listVirtualMachines', { networkid: net1.id })).virtualmachine.map((v: any) => v.id).sort(), [vm1.id, vm2.id].sort(), `${name}: VMs by network`);

      // The control plane's loaders: numeric ids, as stored; vm1's policy allows db's members, vm2's
      // secondary address included.
      const state = await loadCloudState(db);
      assert.deepEqual([...state.groups.keys()].filter((g) => g === webId || g === dbGroupId).sort(), [webId, dbGroupId].sort(), `${name}: loadCloudState groups`);
      assert.deepEqual(state.groupsByVm.get(vm1Id), [webId], `${name}: loadCloudState membership`);
      assert.deepEqual(state.membersByGroup.get(dbGroupId), [vm2Id], name);
      assert.deepEqual(state.nicsByVm.get(vm2Id)?.map((n) => [n.id, n.vmId, n.networkId, n.secondaryIps]), [[nic2Id, vm2Id, net1Id, ['10.1.1.99']]], `${name}: loadCloudState NICs`);
      assert.deepEqual(state.rulesByGroup.get(webId)?.map((r) => [r.groupId, r.allowedGroupId]), [[webId, dbGroupId], [webId, null]], `${name}: loadCloudState rules`);
      const part = await reloadPart(db, [webId, dbGroupId], [vm1Id, vm2Id]);
      assert.deepEqual([part.membersOfGroup.get(webId), part.groupsOfVm.get(vm2Id), part.nics.get(vm2Id)?.map((n) => n.id)], [[vm1Id], [dbGroupId], [nic2Id]], `${name}: reloadPart`);
      assert.equal(part.groups.get(webId)?.uuid, web.id, name);
      const policy = compileVm(state, vm1Id);
      assert.deepEqual(compileVm(await loadPolicyInput(db, [vm1Id]), vm1Id), policy, `${name}: loadPolicyInput compiles the same policy`);
      assert.deepEqual(policy.v4.ingress.map((r) => [r.ports?.from, r.cidrs, r.sets]), [[5432, ['192.0.2.0/24'], [`sg${dbGroupId}v4`]]], `${name}: compiled`);
      const members = compileVm(state, vm2Id);
      assert.equal(members.nics[0]?.nicId, vm2.nic[0].id, name);

      // Explained and dry-run through the API: vm2's secondary address is let in by the rule allowing db.
      const explain = async (address: string) => (await ok('explainSecurityGroupTraffic', { virtualmachineid: vm1.id, direction: 'ingress', protocol: 'tcp', port: 5432, address })).securitygrouptraffic;
      const allowedFromDb = await explain('10.1.1.99');
      const refRule = (await group(web.id)).ingressrule.find((r: any) => r.securitygroupname === 'db');
      assert.deepEqual([allowedFromDb.allowed, allowedFromDb.ruleid, allowedFromDb.securitygroupname], [true, refRule.ruleid, 'web'], `${name}: explain, allowed`);
      assert.equal((await explain('203.0.113.5')).allowed, false, `${name}: explain, not allowed`);
      const dry = await ok('authorizeSecurityGroupIngress', { securitygroupid: web.id, protocol: 'tcp', startport: 80, endport: 80, cidrlist: '203.0.113.0/24', dryrun: true });
      assert.deepEqual(dry.dryrun.affectedvirtualmachines.map((v: any) => v.name), ['vm1'], `${name}: dry run`);

      // A dropped packet of a VM past 2^31, as its host's agent reports it, listed by that VM.
      const hostId = Number((await db.selectFrom('hosts').select('id').executeTakeFirstOrThrow()).id);
      const ingested = await ingestDrops(db, hostId, { records: [{ at: new Date().toISOString(), vm: vm1.id, reason: 'ingress-default-deny', direction: 'ingress', protocol: 6, dstPort: 22 }] });
      assert.equal(ingested.accepted, 1, `${name}: ${JSON.stringify(ingested)}`);
      assert.deepEqual((await db.selectFrom('security_group_drops').select('vm_id').execute()).map((d) => Number(d.vm_id)), [vm1Id], `${name}: the drop's VM`);
      assert.deepEqual((await ok('listSecurityGroupDrops', { virtualmachineid: vm1.id })).securitygroupdrop?.map((d: any) => d.virtualmachineid), [vm1.id], `${name}: drops`);

      // Changes: a second NIC (and not a second one in the same network), a renamed group (its own name
      // in other case is not another group's), vm1 moved into db too; then all removed again.
      assert.match(await fails('addNicToVirtualMachine', { virtualmachineid: vm2.id, networkid: net1.id }), /A NIC already exists/, `${name}: a second NIC in net1`);
      const withNic = (await ok('addNicToVirtualMachine', { virtualmachineid: vm2.id, networkid: net2.id })).virtualmachine;
      const nic2b = withNic.nic.find((n: any) => n.networkid === net2.id);
      assert.ok(nic2b && (await idOf('nics', nic2b.id)) > INT4_MAX, `${name}: second NIC`);
      assert.deepEqual((await loadCloudState(db)).nicsByVm.get(vm2Id)?.map((n) => n.uuid), [vm2.nic[0].id, nic2b.id], name);
      await ok('removeNicFromVirtualMachine', { virtualmachineid: vm2.id, nicid: nic2b.id });
      await ok('updateSecurityGroup', { id: web.id, name: 'Web' });
      assert.match(await fails('updateSecurityGroup', { id: web.id, name: 'DB' }), /already exists/, `${name}: another group's name`);
      await ok('updateVirtualMachine', { id: vm1.id, securitygroupids: `${web.id},${dbGroup.id}`, name: 'vm1b' });
      assert.match(await fails('updateVirtualMachine', { id: vm2.id, name: 'VM1B' }), /already exists/, `${name}: vm1's new name in the same network`);
      await ok('stopVirtualMachine', { id: vm1.id });
      await ok('startVirtualMachine', { id: vm1.id });
      await ok('destroyVirtualMachine', { id: vm2.id });
      await ok('recoverVirtualMachine', { id: vm2.id });
      await ok('startVirtualMachine', { id: vm2.id });
      assert.deepEqual((await ok('listVirtualMachines', { networkid: net1.id })).virtualmachine.map((v: any) => [v.name, v.state]).sort(), [['vm1b', 'Running'], ['vm2', 'Running']], name);
      assert.deepEqual((await group(dbGroup.id)).virtualmachineids.sort(), [vm1.id, vm2.id].sort(), `${name}: db's members after update`);
      assert.deepEqual((await loadCloudState(db)).groupsByVm.get(vm1Id)?.sort(), [webId, dbGroupId].sort(), name);
      // db is in use (a rule allows it, VMs are in it); then everything goes.
      assert.match(await fails('deleteSecurityGroup', { id: dbGroup.id }), /security rules that allow this group/, name);
      await ok('removeIpFromNic', { id: secondary.id });
      for (const vm of [vm1, vm2]) await ok('destroyVirtualMachine', { id: vm.id, expunge: true });
      await ok('deleteSecurityGroup', { id: web.id });
      await ok('deleteSecurityGroup', { id: dbGroup.id });
      for (const n of [net1, net2]) await ok('deleteNetwork', { id: n.id });
      assert.deepEqual((await ok('listSecurityGroups')).securitygroup.map((g: any) => g.name), ['default'], `${name}: only the default group is left`);
      for (const table of ['vms', 'nics', 'nic_secondary_ips', 'networks', 'security_group_rules', 'security_group_vm_map']) {
        assert.equal((await (db as any).selectFrom(table).selectAll().execute()).length, 0, `${name}: ${table} emptied`);
      }
      const after = await loadCloudState(db);
      assert.equal(after.vms.size, 0, name);
      assert.deepEqual([...after.groups.values()].map((g) => g.name), ['default'], name);
    } finally {
      await app.close();
    }
  }
});
