// Migration 010 (each rule carries its group's account) on both dialects: a store at migration 009
// with rules in two accounts is upgraded; every old rule gets its group's account, the per-account
// count reads it through the index, and a rule of another account is not counted.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { sql } from 'kysely';
import { migrate } from '../../src/store/db.js';
import { MIGRATION_TEST_NOW as NOW, openMigrationStores, rootWithAccounts, storeBefore, type MigrationStores } from '../helpers/migration-stores.js';

let both: MigrationStores;
before(async () => { both = await openMigrationStores('rule-account'); });
after(async () => { await both?.close(); });

test('migration 010: old rules get their group\'s account; the per-account count uses the index', async () => {
  for (const [name, db] of both.stores) {
    // the store as migration 009 left it
    const raw = await storeBefore(db, '010', name);
    const { domainId, account } = await rootWithAccounts(raw);
    const a1 = await account('one'), a2 = await account('two');
    const group = async (acct: number, n: string) => (await raw.insertInto('security_groups').values({ uuid: crypto.randomUUID(), name: n, description: '', account_id: acct, domain_id: domainId, created: NOW }).returning('id').executeTakeFirstOrThrow()).id as number;
    const g1 = await group(a1, 'web'), g1b = await group(a1, 'db'), g2 = await group(a2, 'web');
    const rule = (g: number, port: number) => ({ uuid: crypto.randomUUID(), group_id: g, type: 'ingress', protocol: 'tcp', start_port: port, end_port: port, cidr: '10.0.0.0/8', allowed_group_id: null, created: NOW });
    await raw.insertInto('security_group_rules').values([rule(g1, 22), rule(g1, 80), rule(g1b, 5432), rule(g2, 22)]).execute();

    await migrate(db);
    const rows = await db.selectFrom('security_group_rules').select(['group_id', 'account_id']).execute();
    assert.equal(rows.length, 4);
    for (const r of rows) assert.equal(r.account_id, Number(r.group_id) === g2 ? a2 : a1, `${name}: rule of group ${r.group_id}`);   // bigint since 016: pg returns text
    const count = async (acct: number) => Number((await db.selectFrom('security_group_rules').select((eb) => eb.fn.countAll<number>().as('n')).where('account_id', '=', acct).executeTakeFirstOrThrow()).n);
    assert.equal(await count(a1), 3, `${name}: account one's rules over both its groups`);
    assert.equal(await count(a2), 1, `${name}: account two's rule only`);
    // the count is an index lookup, not a scan of every rule
    const plan = name !== 'sqlite' ? '' : (await sql<{ detail: string }>`EXPLAIN QUERY PLAN SELECT count(*) FROM security_group_rules WHERE account_id = ${a1}`.execute(db)).rows.map((p) => p.detail).join('\n');
    if (name === 'sqlite') assert.match(plan, /USING COVERING INDEX sg_rules_account/, plan);
    else {
      // PostgreSQL scans a 4-row table rather than use an index; forbid the scan to see the index is there
      // (in one transaction: the pool's connections each have their own settings)
      const forced = await db.transaction().execute(async (trx) => {
        await sql`SET LOCAL enable_seqscan = off`.execute(trx);
        return (await sql<{ 'QUERY PLAN': string }>`EXPLAIN (COSTS OFF) SELECT count(*) FROM security_group_rules WHERE account_id = ${a1}`.execute(trx)).rows.map((p) => p['QUERY PLAN']).join('\n');
      });
      assert.match(forced, /sg_rules_account/, forced);
    }
  }
});
