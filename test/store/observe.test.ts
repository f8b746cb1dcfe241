// The observability store code (migration 007) on both dialects: a SQLite file and a throwaway
// PostgreSQL cluster. Rule hit upserts from concurrent writers lose nothing and lasthit only moves
// forward; 64-bit counts survive; drop-log bounds hold; settings round-trip; the API-side policy
// input compiles the same policy on both.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { migrate, openPostgres, openSqlite, type Db } from '../../src/store/db.js';
import { startPostgres, type PgCluster } from '../helpers/postgres.js';
import { addRuleHits, ruleHits, deleteRuleHits } from '../../src/store/queries/rulehits.js';
import { readSettings, writeSetting } from '../../src/store/queries/settings.js';
import { countDrops, listDrops, pruneDrops } from '../../src/store/queries/drops.js';
import { loadPolicyInput } from '../../src/store/queries/cloud.js';
import { ingestDrops, ingestRuleCounters } from '../../src/observe/index.js';
import { compileVm } from '../../src/policy/api.js';

let pg: PgCluster;
let dir: string;
const stores: [string, Db][] = [];

before(async () => {
  pg = await startPostgres();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-observe-'));
  stores.push(['sqlite', openSqlite(path.join(dir, 'p.db'))], ['postgres', openPostgres(pg.url)]);
  for (const [, db] of stores) await migrate(db);
});
after(async () => {
  for (const [, db] of stores) await db.destroy();
  await pg?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const NOW = '2026-01-01T00:00:00.000Z';
const U = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;

/** A domain, an account, a host, two VMs (one with a referenced group's member), rules. Returns ids. */
async function seed(db: Db) {
  const d = await db.insertInto('domains').values({ uuid: U(1), name: 'ROOT', path: '/', parent_id: null, created: NOW, removed: null }).returning('id').executeTakeFirstOrThrow();
  const a = await db.insertInto('accounts').values({ uuid: U(2), name: 'acct', domain_id: d.id, type: 0, state: 'enabled', created: NOW, removed: null }).returning('id').executeTakeFirstOrThrow();
  const z = await db.insertInto('zones').values({ uuid: U(3), name: 'z', description: 'z', created: NOW }).returning('id').executeTakeFirstOrThrow();
  const h = await db.insertInto('hosts').values({ uuid: U(4), name: 'h', zone_id: z.id, token_hash: 'x', state: 'Up', last_contact: null, acked_revision: 0, desired_revision: 0, preflight: null, repairs: null, repair_count: 0, created: NOW, removed: null }).returning('id').executeTakeFirstOrThrow();
  const vm = async (n: number, ip: string) => {
    const v = await db.insertInto('vms').values({ uuid: U(10 + n), name: `vm${n}`, display_name: `vm${n}`, instance_name: `i-1-${n}-VM`, account_id: a.id, domain_id: d.id, zone_id: z.id, host_id: h.id, last_host_id: null, state: 'Running', service_offering_id: null, template_id: null, sync_state: 'Pending', sync_error: null, created: NOW, removed: null }).returning('id').executeTakeFirstOrThrow();
    await db.insertInto('nics').values({ uuid: U(20 + n), vm_id: v.id, network_id: 1, mac: `02:00:00:00:00:0${n}`, ipv4: ip, ipv6: null, is_default: 1, device_id: 0, device_name: null, created: NOW, removed: null }).execute();
    return Number(v.id);
  };
  const vm1 = await vm(1, '10.0.0.1');
  const vm2 = await vm(2, '10.0.0.2');
  const g = async (n: number, name: string) => Number((await db.insertInto('security_groups').values({ uuid: U(30 + n), name, description: '', account_id: a.id, domain_id: d.id, created: NOW }).returning('id').executeTakeFirstOrThrow()).id);
  const web = await g(1, 'web'), dbg = await g(2, 'db');
  await db.insertInto('security_group_vm_map').values([{ group_id: web, vm_id: vm1 }, { group_id: dbg, vm_id: vm2 }]).execute();
  const rule = async (n: number, port: number, cidr: string | null, ref: number | null) => Number((await db.insertInto('security_group_rules').values({
    uuid: U(40 + n), group_id: web, account_id: a.id, type: 'ingress', protocol: 'tcp', start_port: port, end_port: port, cidr, allowed_group_id: ref, created: NOW,
  }).returning('id').executeTakeFirstOrThrow()).id);
  const r1 = await rule(1, 22, '192.0.2.0/24', null);
  const r2 = await rule(2, 22, '198.51.100.0/24', null);
  const r3 = await rule(3, 5432, null, dbg);
  return { host: h.id, vm1, vm2, dbGroup: dbg, rules: [r1, r2, r3] };
}

for (const which of ['sqlite', 'postgres']) {
  test(`${which}: rule hits, drops, settings and policy input`, async () => {
    const db = stores.find(([n]) => n === which)![1];
    const ids = await seed(db);
    // policy input: vm1's policy with the referenced group's member address in its set
    const state = await loadPolicyInput(db, [ids.vm1]);
    const policy = compileVm(state, ids.vm1);
    assert.deepEqual(policy.v4.ingress.map((r) => [r.ports?.from, r.cidrs, r.sets, r.sources.length]), [[22, ['192.0.2.0/24', '198.51.100.0/24'], [], 2], [5432, [], [`sg${ids.dbGroup}v4`], 1]]);
    assert.deepEqual(state.membersByGroup.get(ids.dbGroup), [ids.vm2]);

    // concurrent additions (several servers) add up; lasthit is the latest
    await Promise.all(Array.from({ length: 20 }, (_, i) => addRuleHits(db, new Map([[U(41), 1], [U(43), 1000]]), `2026-01-01T00:00:${String(i).padStart(2, '0')}.000Z`)));
    let hits = await ruleHits(db, ids.rules);
    assert.deepEqual(hits.get(ids.rules[0]), { hitcount: 20, lasthit: '2026-01-01T00:00:19.000Z' });
    assert.equal(hits.get(ids.rules[2])!.hitcount, 20_000);
    assert.equal(hits.has(ids.rules[1]), false);
    await addRuleHits(db, new Map([[U(41), 1]]), '2025-12-31T00:00:00.000Z');
    assert.equal((await ruleHits(db, [ids.rules[0]])).get(ids.rules[0])!.lasthit, '2026-01-01T00:00:19.000Z', 'an older report does not move lasthit back');
    // 64-bit counts
    await addRuleHits(db, new Map([[U(42), 2 ** 52]]), NOW);
    await addRuleHits(db, new Map([[U(42), 2 ** 52 - 1], [U(99), 5]]), NOW);
    assert.equal((await ruleHits(db, [ids.rules[1]])).get(ids.rules[1])!.hitcount, 2 ** 53 - 1);
    // through the ingestion function: a merged kernel rule credits both of its API rules
    const r = await ingestRuleCounters(db, { at: new Date().toISOString(), vms: { [U(11)]: { [policy.v4.ingress[0]!.id]: 7 } } }, (u) => (u === U(11) ? policy : undefined));
    assert.deepEqual([r.rules, r.attributedPackets], [2, 14]);
    hits = await ruleHits(db, ids.rules);
    assert.equal(hits.get(ids.rules[0])!.hitcount, 28);
    await deleteRuleHits(db, [ids.rules[0]]);
    assert.equal((await ruleHits(db, ids.rules)).has(ids.rules[0]), false);

    // drop log bounds on this dialect
    const limits = { perVm: 4, perHostUnowned: 2, perHost: 100_000, maxAgeMs: 3600_000, total: 1_000_000 };
    const now = new Date();
    const rec = (i: number, vm?: string) => ({ at: new Date(now.getTime() - 60_000 + i).toISOString(), ...(vm ? { vm } : {}), reason: vm ? 'egress-default-deny' : 'unknown-port', direction: 'egress', protocol: 17, dstPort: i });
    const res = await ingestDrops(db, ids.host, { records: [...Array.from({ length: 7 }, (_, i) => rec(i, U(11))), ...Array.from({ length: 5 }, (_, i) => rec(i))] }, { limits, now });
    assert.deepEqual(res, { accepted: 12, rejected: 0, stale: 0 });
    const rows = await db.selectFrom('security_group_drops').select(['vm_id', 'dst_port', 'protocol']).orderBy('id').execute();
    assert.deepEqual(rows.filter((x) => x.vm_id !== null).map((x) => x.dst_port), [3, 4, 5, 6]);
    assert.deepEqual(rows.filter((x) => x.vm_id === null).map((x) => x.dst_port), [3, 4]);
    assert.equal(rows[0]!.protocol, '17');
    // listing: scoped by account, unowned only when asked, keyword over addresses and VM names, paging
    const all = { accountIds: null, domainIds: null, unowned: true };
    assert.equal(await countDrops(db, all, now), 6);
    const acct = (await db.selectFrom('accounts').select('id').executeTakeFirstOrThrow()).id;
    assert.equal(await countDrops(db, { accountIds: [acct], domainIds: null, unowned: false }, now), 4);
    assert.equal(await countDrops(db, { accountIds: [acct + 1], domainIds: null, unowned: false }, now), 0);
    assert.equal(await countDrops(db, { ...all, keyword: 'VM1' }, now), 4);
    assert.equal(await countDrops(db, { ...all, reason: 'unknown-port', since: new Date(now.getTime() - 60_000).toISOString() }, now), 2);
    const page = await listDrops(db, all, now, { limit: 3, offset: 3 });
    assert.deepEqual(page.map((x) => [x.vm_name, x.dst_port, x.host_name]), [['vm1', 4, 'h'], [null, 3, 'h'], ['vm1', 3, 'h']]);
    assert.equal(await countDrops(db, all, new Date(now.getTime() + 2 * 3600_000), limits.maxAgeMs), 0, 'listing hides what is older than the age bound');
    await pruneDrops(db, new Date(now.getTime() + 2 * 3600_000), limits);
    assert.equal((await db.selectFrom('security_group_drops').select('id').execute()).length, 0, 'the age bound without new input');
    await ingestDrops(db, ids.host, { records: Array.from({ length: 6 }, (_, i) => rec(i, U(12))) }, { limits: { ...limits, perVm: 100, total: 4 }, now });
    assert.equal((await db.selectFrom('security_group_drops').select('id').execute()).length, 4, 'the global cap');
    // Ids advance with every insert: a VM whose rows are pruned as fast as they come must not push
    // another's out through the global cap (it counts rows; it once deleted by distance from the newest id).
    await db.deleteFrom('security_group_drops').execute();
    const capped = { ...limits, perVm: 4, total: 10 };
    await ingestDrops(db, ids.host, { records: Array.from({ length: 3 }, (_, i) => rec(i, U(11))) }, { limits: capped, now });
    for (let round = 0; round < 8; round++) await ingestDrops(db, ids.host, { records: Array.from({ length: 6 }, (_, i) => rec(i, U(12))) }, { limits: capped, now });
    const perVm = async () => (await db.selectFrom('security_group_drops').select('vm_id').execute()).reduce((m, x) => m.set(x.vm_id === null ? null : Number(x.vm_id), (m.get(x.vm_id === null ? null : Number(x.vm_id)) ?? 0) + 1), new Map<number | null, number>());
    assert.deepEqual([...(await perVm()).values()].sort(), [3, 4], 'vm1 keeps its 3 rows beside vm2\'s newest 4');
    // one host's share of the table: its newest perHost rows
    await ingestDrops(db, ids.host, { records: [rec(9, U(11))] }, { limits: { ...capped, perHost: 5 }, now });
    assert.equal((await db.selectFrom('security_group_drops').select('id').execute()).length, 5, 'the per-host cap');

    // settings
    assert.deepEqual(await readSettings(db), { revokeCutConnections: false, dropLogRate: 10, dropLogBurst: 50 });
    await writeSetting(db, 'security.group.drop.log.rate', '3', NOW);
    await writeSetting(db, 'security.group.drop.log.rate', '4', NOW);
    await writeSetting(db, 'security.group.revoke.cut.connections', 'true', NOW);
    assert.deepEqual(await readSettings(db), { revokeCutConnections: true, dropLogRate: 4, dropLogBurst: 50 });
    await writeSetting(db, 'security.group.drop.log.rate', 'garbage', NOW);
    assert.equal((await readSettings(db)).dropLogRate, 10, 'an unreadable stored value falls back to the default');
    await writeSetting(db, 'security.group.drop.log.rate', null, NOW);
    assert.equal((await db.selectFrom('configuration').select('name').execute()).length, 1);
  });
}
