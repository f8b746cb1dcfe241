// Migration 015 (64-bit rule and tag ids, and the columns holding a rule id, on PostgreSQL) on both
// dialects: a store at migration 014 whose rule and tag ids reached int4's largest value. Before 015,
// PostgreSQL refuses the next rule and tag, a hit counter for a rule past 2^31 and a tag on one (SQLite's
// integers are 64-bit: it never did); after it, the API (built in-process on that store) authorizes rules
// with ids past 2^31 that list, take tags, compile through the control plane's loaders, count their own
// hits and revoke, and tags past 2^31 list and delete.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { sql } from 'kysely';
import { migrate } from '../../src/store/db.js';
import { isSqlite } from '../../src/store/dialect.js';
import { loadCloudState, reloadPart } from '../../src/control/load.js';
import { compileVm } from '../../src/policy/api.js';
import { ingestRuleCounters } from '../../src/observe/index.js';
import { addRuleHits, ruleHits } from '../../src/store/queries/rulehits.js';
import { loadPolicyInput } from '../../src/store/queries/cloud.js';
import { apiOn } from '../helpers/api-on-store.js';
import { MIGRATION_TEST_NOW as NOW, openMigrationStores, storeBefore, type MigrationStores } from '../helpers/migration-stores.js';

const INT4_MAX = 2 ** 31 - 1;

let both: MigrationStores;
before(async () => { both = await openMigrationStores('bigint-rule-tag-ids'); });
after(async () => { await both?.close(); });

test('migration 015: rule and tag ids past 2^31 on a store that was at 014', async () => {
  for (const [name, db] of both.stores) {
    const raw = await storeBefore(db, '015', name);
    // Their ids have reached int4's largest value.
    for (const table of ['security_group_rules', 'tags']) {
      if (isSqlite(db)) await sql`insert into sqlite_sequence (name, seq) values (${table}, ${INT4_MAX})`.execute(raw);
      else await sql`select setval(pg_get_serial_sequence(${table}, 'id'), ${INT4_MAX})`.execute(raw);
    }
    // Before 015: PostgreSQL cannot take the next rule or tag id, nor a rule id past 2^31 where one is
    // held (hit counters, a rule's tags); SQLite can.
    const rule = { uuid: crypto.randomUUID(), group_id: 1, account_id: 1, type: 'ingress', protocol: 'tcp', start_port: 22, end_port: 22, cidr: '192.0.2.0/24', allowed_group_id: null, created: NOW };
    const tag = (resourceId: number) => ({ uuid: crypto.randomUUID(), resource_type: 'SecurityGroupRule', resource_id: resourceId, resource_uuid: rule.uuid, key: 'k', value: 'v',
      account_id: 1, domain_id: 1, customer: null, created: NOW });
    const writes: [string, () => Promise<unknown>, RegExp][] = [
      ['the next rule', () => raw.insertInto('security_group_rules').values(rule).execute(), /reached maximum value of sequence/],
      ['the next tag', () => raw.insertInto('tags').values(tag(1)).execute(), /reached maximum value of sequence/],
      ['hits of a rule past 2^31', () => raw.insertInto('security_group_rule_hits').values({ rule_id: INT4_MAX + 1, hitcount: 1, lasthit: NOW }).execute(), /out of range for type integer/],
    ];
    // (a tag id to spare for this one)
    const spareTagId = async () => { if (!isSqlite(db)) await sql`select setval(pg_get_serial_sequence('tags', 'id'), 1)`.execute(raw); };
    writes.push(['a tag of a rule past 2^31', async () => { await spareTagId(); await raw.insertInto('tags').values(tag(INT4_MAX + 1)).execute(); }, /out of range for type integer/]);
    for (const [what, write, refused] of writes) {
      if (isSqlite(db)) await write();
      else await assert.rejects(write, refused, `${name}: ${what}`);
    }
    for (const table of ['security_group_rules', 'tags', 'security_group_rule_hits']) await raw.deleteFrom(table).execute();
    if (!isSqlite(db)) await sql`select setval(pg_get_serial_sequence('tags', 'id'), ${INT4_MAX})`.execute(raw);

    await migrate(db);

    const { app, ok } = await apiOn(db);
    try {
      const zoneId = (await ok('listZones')).zone[0].id;
      const net = (await ok('createNetwork', { name: 'n1', displaytext: 'n1', zoneid: zoneId, gateway: '10.1.1.1', netmask: '255.255.255.0', startip: '10.1.1.10', endip: '10.1.1.200' })).network;
      const host = (await ok('addHost', { name: 'kvm-a' })).host[0];
      const web = (await ok('createSecurityGroup', { name: 'web' })).securitygroup;
      const dbGroup = (await ok('createSecurityGroup', { name: 'db' })).securitygroup;
      // One call, one rule per CIDR and per allowed group; a second call on another port.
      await ok('authorizeSecurityGroupIngress', { securitygroupid: web.id, protocol: 'tcp', startport: 22, endport: 22, cidrlist: '192.0.2.0/24,198.51.100.0/24',
        'usersecuritygrouplist[0].account': 'admin', 'usersecuritygrouplist[0].group': 'db' });
      const authorized = (await ok('authorizeSecurityGroupIngress', { securitygroupid: web.id, protocol: 'tcp', startport: 5432, endport: 5432, cidrlist: '203.0.113.0/24' })).securitygroup;
      assert.deepEqual(authorized.ingressrule.map((r: any) => [r.startport, r.cidr]), [[5432, '203.0.113.0/24']], `${name}: the authorize answer`);
      const vm = (await ok('deployVirtualMachine', { name: 'vm1', networkids: net.id, hostid: host.id, securitygroupids: web.id })).virtualmachine;
      // (a member of db, so that the rule allowing db compiles to something)
      await ok('deployVirtualMachine', { name: 'vm2', networkids: net.id, hostid: host.id, securitygroupids: dbGroup.id });

      const stored = (await db.selectFrom('security_group_rules').select(['id', 'uuid']).orderBy('id').execute()).map((r) => ({ id: Number(r.id), uuid: r.uuid }));
      assert.equal(stored.length, 4, name);
      assert.ok(stored.every((r) => r.id > INT4_MAX), `${name}: rule ids ${stored.map((r) => r.id).join(', ')}`);
      const listed = async () => (await ok('listSecurityGroups', { id: web.id })).securitygroup[0];
      const rules = (await listed()).ingressrule as any[];
      assert.deepEqual(rules.map((r) => [r.ruleid, r.startport, r.cidr ?? r.securitygroupname]),
        [[stored[0]!.uuid, 22, 'db'], [stored[1]!.uuid, 22, '192.0.2.0/24'], [stored[2]!.uuid, 22, '198.51.100.0/24'], [stored[3]!.uuid, 5432, '203.0.113.0/24']], name);

      // Tags, past 2^31 themselves, on a rule past 2^31 and on the group.
      const tagged = stored[1]!;
      await ok('createTags', { resourcetype: 'SecurityGroupRule', resourceids: tagged.uuid, 'tags[0].key': 'role', 'tags[0].value': 'ssh', 'tags[1].key': 'team', 'tags[1].value': 'ops' });
      await ok('createTags', { resourcetype: 'SecurityGroup', resourceids: web.id, 'tags[0].key': 'tier', 'tags[0].value': 'front' });
      const tagIds = (await db.selectFrom('tags').select('id').execute()).map((r) => Number(r.id));
      assert.ok(tagIds.length === 3 && tagIds.every((id) => id > INT4_MAX), `${name}: tag ids ${tagIds.join(', ')}`);
      const tagsListed = async () => ((await ok('listTags')).tag ?? []).map((t: any) => [t.resourcetype, t.resourceid, t.key]).sort();
      assert.deepEqual(await tagsListed(), [['SecurityGroup', web.id, 'tier'], ['SecurityGroupRule', tagged.uuid, 'role'], ['SecurityGroupRule', tagged.uuid, 'team']], name);
      const withTags = await listed();
      assert.deepEqual(withTags.tags.map((t: any) => t.key), ['tier'], `${name}: the group's tags`);
      assert.deepEqual(withTags.ingressrule.map((r: any) => r.tags.map((t: any) => t.key)), [[], ['role', 'team'], [], []], `${name}: each rule's tags`);

      // The control plane's loaders: numeric ids, as stored; the VM's policy compiles from them.
      const state = await loadCloudState(db);
      const vmId = Number((await db.selectFrom('vms').select('id').where('uuid', '=', vm.id).executeTakeFirstOrThrow()).id);
      const webId = Number((await db.selectFrom('security_groups').select('id').where('uuid', '=', web.id).executeTakeFirstOrThrow()).id);
      const dbGroupId = Number((await db.selectFrom('security_groups').select('id').where('uuid', '=', dbGroup.id).executeTakeFirstOrThrow()).id);
      assert.deepEqual(state.rulesByGroup.get(webId)?.map((r) => r.id), stored.map((r) => r.id), `${name}: loadCloudState`);
      assert.deepEqual((await reloadPart(db, [webId], [vmId])).rules.get(webId)?.map((r) => r.id), stored.map((r) => r.id), `${name}: reloadPart`);
      const policy = compileVm(state, vmId);
      // (the API's reading of the same rules: dry runs, explain, policies for ingestion)
      const input = await loadPolicyInput(db, [vmId]);
      assert.deepEqual(input.rulesByGroup.get(webId)?.map((r) => r.id), stored.map((r) => r.id), `${name}: loadPolicyInput`);
      assert.deepEqual(compileVm(input, vmId), policy, `${name}: the same policy`);
      assert.deepEqual(policy.v4.ingress.map((r) => [r.ports?.from, r.cidrs, r.sets]), [[22, ['192.0.2.0/24', '198.51.100.0/24'], [`sg${dbGroupId}v4`]], [5432, ['203.0.113.0/24'], []]], `${name}: compiled`);

      // Hits, from kernel counters as the control plane ingests them, land on their own rules.
      const counters = Object.fromEntries(policy.v4.ingress.map((r, i) => [r.id, 10 ** i]));
      await ingestRuleCounters(db, { at: new Date().toISOString(), vms: { [vm.id]: counters } }, (u) => (u === vm.id ? policy : undefined));
      const expected = new Map<string, number>();
      for (const r of policy.v4.ingress) for (const uuid of r.sources) expected.set(uuid, (expected.get(uuid) ?? 0) + counters[r.id]!);
      assert.deepEqual((await listed()).ingressrule.map((r: any) => [r.ruleid, r.hitcount]), stored.map((r) => [r.uuid, expected.get(r.uuid)]), `${name}: hitcounts`);
      assert.ok(stored.every((r) => (expected.get(r.uuid) ?? 0) > 0), `${name}: every rule was hit`);
      const byId = await ruleHits(db, stored.map((r) => r.id));
      assert.deepEqual(stored.map((r) => byId.get(r.id)?.hitcount), stored.map((r) => expected.get(r.uuid)), `${name}: ruleHits by id`);

      // Revoke the tagged rule: it goes with its tags and its hits; the others stay, hits and all.
      await ok('revokeSecurityGroupIngress', { id: tagged.uuid });
      const left = stored.filter((r) => r !== tagged);
      assert.deepEqual((await listed()).ingressrule.map((r: any) => [r.ruleid, r.hitcount]), left.map((r) => [r.uuid, expected.get(r.uuid)]), `${name}: after revoke`);
      assert.deepEqual(await tagsListed(), [['SecurityGroup', web.id, 'tier']], `${name}: the rule's tags went with it`);
      assert.deepEqual((await db.selectFrom('security_group_rule_hits').select('rule_id').execute()).map((r) => Number(r.rule_id)).sort(), left.map((r) => r.id).sort(), `${name}: its hits too`);
      assert.deepEqual((await loadCloudState(db)).rulesByGroup.get(webId)?.map((r) => r.id), left.map((r) => r.id), `${name}: reloaded`);

      // A tag past 2^31 deletes.
      await ok('deleteTags', { resourcetype: 'SecurityGroup', resourceids: web.id, 'tags[0].key': 'tier' });
      assert.deepEqual(await tagsListed(), [], `${name}: deleted`);
      assert.equal((await db.selectFrom('tags').select('id').execute()).length, 0, name);

      // A group deleted with its rules past 2^31 takes their tags and hits along.
      const tmp = (await ok('createSecurityGroup', { name: 'tmp' })).securitygroup;
      const tmpRules = (await ok('authorizeSecurityGroupIngress', { securitygroupid: tmp.id, protocol: 'udp', startport: 53, endport: 53, cidrlist: '192.0.2.0/24,198.51.100.0/24' })).securitygroup.ingressrule;
      await ok('createTags', { resourcetype: 'SecurityGroupRule', resourceids: tmpRules[0].ruleid, 'tags[0].key': 'k', 'tags[0].value': 'v' });
      await addRuleHits(db, new Map(tmpRules.map((r: any) => [r.ruleid, 3])), NOW);
      assert.deepEqual((await listed()).ingressrule.map((r: any) => r.ruleid), left.map((r) => r.uuid), name);
      assert.deepEqual((await ok('listSecurityGroups', { id: tmp.id })).securitygroup[0].ingressrule.map((r: any) => [r.hitcount, r.tags.length]), [[3, 1], [3, 0]], name);
      await ok('deleteSecurityGroup', { id: tmp.id });
      assert.deepEqual(await tagsListed(), [], `${name}: the group's rule tags went with it`);
      assert.deepEqual((await db.selectFrom('security_group_rule_hits').select('rule_id').execute()).map((r) => Number(r.rule_id)).sort(), left.map((r) => r.id).sort(), `${name}: and its hits`);
    } finally {
      await app.close();
    }
  }
});
