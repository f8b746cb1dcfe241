// Observability benchmark (not a test), on a SQLite store, each figure beside its floor measured in the
// same run:
// - listSecurityGroups, one page of 500 groups: with a hit counter on every rule vs none (the cost
//   of hitcount/lasthit on the hot listing);
// - a drop-log batch of 5,000 records through ingestDrops (validation, ownership, bounds) vs a plain
//   insert of the same rows;
// - a rule-counter report of one host (VMS_PER_HOST VMs) through ingestRuleCounters;
// - explainSecurityGroupTraffic for a VM whose group references a group with MEMBERS members;
// - an authorize dry run on a group with GROUP_RULES rules and MEMBERS members.
// Run: node --import tsx bench/observe.ts [--groups 2000 --rules 20000 --members 2000]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import pino from 'pino';
import Table from 'cli-table3';
import { openStore, type Db } from '../src/store/db.js';
import { bootstrap } from '../src/api/bootstrap.js';
import { buildServer, dispatcherOf } from '../src/api/server.js';
import type { Caller } from '../src/api/command.js';
import { ingestDrops, ingestRuleCounters } from '../src/observe/index.js';
import { loadPolicyInput } from '../src/store/queries/cloud.js';
import { compileVm } from '../src/policy/api.js';
import type { VmPolicy } from '../src/policy/ir.js';
import { summary } from './summary.js';

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const GROUPS = arg('groups', 2000);
const RULES = arg('rules', 20_000);
const MEMBERS = arg('members', 2000);
const VMS_PER_HOST = 200;
const GROUP_RULES = 1000;

const pct = (xs: number[], p: number) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!; };
const ms = (x: number) => x.toFixed(2);
async function batches<T>(rows: T[], n: number, f: (chunk: T[]) => Promise<unknown>) { for (let i = 0; i < rows.length; i += n) await f(rows.slice(i, i + n)); }

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-bench-observe-'));
  try {
    const db = await openStore({ kind: 'sqlite', file: path.join(dir, 'p.db') });
    await bootstrap(db);
    const now = new Date().toISOString();
    const root = await db.selectFrom('domains').select('id').executeTakeFirstOrThrow();
    const admin = await db.selectFrom('users as u').innerJoin('accounts as a', 'a.id', 'u.account_id').innerJoin('domains as dm', 'dm.id', 'a.domain_id')
      .select(['u.id as userId', 'u.uuid as userUuid', 'u.username', 'a.id as accountId', 'a.uuid as accountUuid', 'a.name as accountName',
        'dm.id as domainId', 'dm.uuid as domainUuid', 'dm.name as domainName', 'dm.path as domainPath']).executeTakeFirstOrThrow();
    const caller: Caller = { ...admin, role: 'admin' };
    const zone = await db.selectFrom('zones').select('id').executeTakeFirstOrThrow();
    const host = await db.insertInto('hosts').values({ uuid: randomUUID(), name: 'h', zone_id: zone.id, token_hash: 'x', state: 'Up', last_contact: null, acked_revision: 0, desired_revision: 0, preflight: null, repairs: null, repair_count: 0, created: now, removed: null }).returning('id').executeTakeFirstOrThrow();
    const net = await db.insertInto('networks').values({ uuid: randomUUID(), name: 'n', display_text: 'n', zone_id: zone.id, account_id: admin.accountId, domain_id: root.id, gateway: '10.0.0.1', netmask: '255.0.0.0', start_ip: '10.0.0.2', end_ip: '10.255.255.254', ip6_gateway: null, ip6_cidr: null, start_ipv6: null, end_ipv6: null, vlan: null, created: now, removed: null }).returning('id').executeTakeFirstOrThrow();

    // groups and rules; group 0 has GROUP_RULES rules and is the big one's referencer; group 1 has MEMBERS members
    const groups = Array.from({ length: GROUPS }, (_, i) => ({ uuid: randomUUID(), name: `g${i}`, description: '', account_id: admin.accountId, domain_id: root.id, created: now }));
    const groupIds: number[] = [];
    await batches(groups, 1000, async (c) => { groupIds.push(...(await db.insertInto('security_groups').values(c).returning('id').execute()).map((r) => Number(r.id))); });
    const rules = Array.from({ length: RULES }, (_, i) => {
      const g = i < GROUP_RULES ? groupIds[0]! : groupIds[1 + (i % (GROUPS - 1))]!;
      const ref = i === 0;
      return { uuid: randomUUID(), group_id: g, account_id: admin.accountId, type: 'ingress', protocol: 'tcp', start_port: 1 + (i % 60000), end_port: 1 + (i % 60000), cidr: ref ? null : `10.${(i >> 8) & 255}.${i & 255}.0/24`, allowed_group_id: ref ? groupIds[1]! : null, created: now };
    });
    const ruleIds: number[] = [];
    await batches(rules, 1000, async (c) => { ruleIds.push(...(await db.insertInto('security_group_rules').values(c).returning('id').execute()).map((r) => Number(r.id))); });
    const vmRows = Array.from({ length: MEMBERS + VMS_PER_HOST }, (_, i) => ({ uuid: randomUUID(), name: `vm${i}`, display_name: `vm${i}`, instance_name: `i-1-${i}-VM`, account_id: admin.accountId, domain_id: root.id, zone_id: zone.id, host_id: i >= MEMBERS ? host.id : null, last_host_id: null, state: 'Running', service_offering_id: null, template_id: null, sync_state: 'Synced', sync_error: null, created: now, removed: null }));
    const vmIds: number[] = [];
    await batches(vmRows, 1000, async (c) => { vmIds.push(...(await db.insertInto('vms').values(c).returning('id').execute()).map((r) => Number(r.id))); });
    await batches(vmIds.map((id, i) => ({ uuid: randomUUID(), vm_id: id, network_id: net.id, mac: `02:00:00:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`, ipv4: `10.200.${(i >> 8) & 255}.${i & 255}`, ipv6: null, is_default: 1, device_id: 0, device_name: null, created: now, removed: null })), 1000, (c) => db.insertInto('nics').values(c).execute());
    const maps = vmIds.map((vm, i) => ({ group_id: i < MEMBERS ? groupIds[1]! : groupIds[0]!, vm_id: vm }));
    await batches(maps, 1000, (c) => db.insertInto('security_group_vm_map').values(c).execute());
    const hostVms = vmIds.slice(MEMBERS);
    const hostVmUuids = vmRows.slice(MEMBERS).map((v) => v.uuid);

    const app = await buildServer({ db, sink: { publish() {} }, log: pino({ level: 'warn' }) });
    const d = dispatcherOf(app);
    const cmd = (n: string) => d.commands.get(n)!;
    // Pages 2 and 3 hold the same number of groups and rules; only page 2's rules get hit counters.
    // The two are listed alternately, so a change in machine load hits both alike.
    const listPage = async (n: number) => {
      const t0 = performance.now();
      const r = await d.run(cmd('listSecurityGroups'), { listall: 'true', page: String(n), pagesize: '500' }, caller);
      if (r.status !== 200) throw new Error(JSON.stringify(r.body));
      return performance.now() - t0;
    };
    const page2 = await db.selectFrom('security_groups').select('id').orderBy('id').limit(500).offset(500).execute();
    const page2Rules = await db.selectFrom('security_group_rules').select('id').where('group_id', 'in', page2.map((g) => g.id)).execute();
    await batches(page2Rules.map((r) => ({ rule_id: r.id, hitcount: 12345, lasthit: now })), 1000, (c) => db.insertInto('security_group_rule_hits').values(c).execute());
    const pageHits: number[] = [], pageBare: number[] = [];
    for (let i = 0; i < 24; i++) {
      const hits = await listPage(2), bare = await listPage(3);
      if (i >= 4) { pageHits.push(hits); pageBare.push(bare); }
    }

    // drop log: 5,000 records over the host's VMs, vs a plain insert of the same rows
    const mkRecords = () => Array.from({ length: 5000 }, (_, i) => ({ at: new Date().toISOString(), vm: hostVmUuids[i % hostVmUuids.length]!, reason: 'ingress-default-deny', direction: 'ingress', protocol: 'tcp', src: `203.0.113.${i % 250}`, dst: '10.200.0.1', srcPort: 40000 + (i % 1000), dstPort: 22 }));
    const ingestLat: number[] = [], floorLat: number[] = [];
    for (let r = 0; r < 5; r++) {
      const records = mkRecords();
      let t0 = performance.now();
      const res = await ingestDrops(db, host.id, { records });
      ingestLat.push(performance.now() - t0);
      if (res.accepted !== 5000) throw new Error(JSON.stringify(res));
      const rows = records.map((x, i) => ({ vm_id: hostVms[i % hostVms.length]!, host_id: host.id, nic_uuid: null, direction: x.direction, protocol: x.protocol, src_address: x.src, src_port: x.srcPort, dst_address: x.dst, dst_port: x.dstPort, icmp_type: null, icmp_code: null, reason: x.reason, created: x.at }));
      t0 = performance.now();
      await db.transaction().execute(async (trx) => { await batches(rows, 200, (c) => trx.insertInto('security_group_drops').values(c).execute()); });
      floorLat.push(performance.now() - t0);
      await db.deleteFrom('security_group_drops').execute();
    }

    // rule counters of one host: every VM, every kernel rule
    const policies = new Map<string, VmPolicy>();
    const state = await loadPolicyInput(db, hostVms);
    hostVms.forEach((id, i) => policies.set(hostVmUuids[i]!, compileVm(state, id)));
    const report = { at: new Date().toISOString(), vms: Object.fromEntries([...policies].map(([u, p]) => [u, Object.fromEntries(p.v4.ingress.map((r) => [r.id, 3]))])) };
    const kernelRules = Object.values(report.vms).reduce((n, m) => n + Object.keys(m).length, 0);
    const countLat: number[] = [];
    for (let r = 0; r < 5; r++) {
      const t0 = performance.now();
      await ingestRuleCounters(db, report, (u) => policies.get(u));
      countLat.push(performance.now() - t0);
    }

    // explain and dry run
    const vmUuid = hostVmUuids[0]!;
    const explainLat: number[] = [];
    for (let i = 0; i < 22; i++) {
      const t0 = performance.now();
      const r = await d.run(cmd('explainSecurityGroupTraffic'), { virtualmachineid: vmUuid, direction: 'ingress', protocol: 'tcp', port: '1', address: '10.200.0.5' }, caller);
      if (r.status !== 200) throw new Error(JSON.stringify(r.body));
      if (i >= 2) explainLat.push(performance.now() - t0);
    }
    if (process.env.BENCH_DEBUG) {
      const vmId = hostVms[0]!;
      for (let i = 0; i < 3; i++) {
        let t0 = performance.now();
        const st = await loadPolicyInput(db, [vmId]);
        const tl = performance.now() - t0; t0 = performance.now();
        compileVm(st, vmId);
        console.log(`explain parts: load ${ms(tl)} ms, compile ${ms(performance.now() - t0)} ms`);
      }
    }
    const dryLat: number[] = [];
    for (let i = 0; i < 12; i++) {
      const t0 = performance.now();
      await d.run(cmd('authorizeSecurityGroupIngress'), { securitygroupid: groups[0]!.uuid, protocol: 'tcp', startport: '5', endport: '9', cidrlist: '10.0.0.0/8', dryrun: 'true' }, caller);
      await d.idle();
      if (i >= 2) dryLat.push(performance.now() - t0);
    }

    const table = new Table({ head: ['measure', 'p50 ms', 'p99 ms', 'floor p50 ms', 'ratio'], style: { head: [], border: [] } });
    table.push(
      [`listSecurityGroups page of 500 (${page2Rules.length} rules): hit counters on every rule vs none`, ms(pct(pageHits, 50)), ms(pct(pageHits, 99)), ms(pct(pageBare, 50)), (pct(pageHits, 50) / pct(pageBare, 50)).toFixed(2)],
      ['ingestDrops, 5,000 records vs plain insert', ms(pct(ingestLat, 50)), ms(pct(ingestLat, 99)), ms(pct(floorLat, 50)), (pct(ingestLat, 50) / pct(floorLat, 50)).toFixed(2)],
      [`ingestRuleCounters, one host (${VMS_PER_HOST} VMs, ${kernelRules} kernel rules)`, ms(pct(countLat, 50)), ms(pct(countLat, 99)), '', ''],
      [`explainSecurityGroupTraffic (group of ${GROUP_RULES} rules, a referenced group of ${MEMBERS})`, ms(pct(explainLat, 50)), ms(pct(explainLat, 99)), '', ''],
      [`authorize dry run (group of ${GROUP_RULES} rules, ${VMS_PER_HOST} members)`, ms(pct(dryLat, 50)), ms(pct(dryLat, 99)), '', ''],
    );
    console.log(table.toString());
    console.log(`store: ${GROUPS} groups, ${RULES} rules, ${vmIds.length} VMs; machine: ${os.cpus().length} CPUs, load average ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}`);
    summary('observe', 'listSecurityGroups page with hit counters / without', pct(pageHits, 50) / pct(pageBare, 50), '×');
    summary('observe', 'ingestDrops 5,000 records / plain insert', pct(ingestLat, 50) / pct(floorLat, 50), '×');
    summary('observe', 'ingestRuleCounters, one host p50', pct(countLat, 50), 'ms');
    summary('observe', 'explainSecurityGroupTraffic p99', pct(explainLat, 99), 'ms');
    summary('observe', 'authorize dry run p99', pct(dryLat, 99), 'ms');
    await app.close();
    await db.destroy();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => { console.error(e); process.exitCode = 1; });
