// API benchmark (not a test): a store with 10,000 groups, 100,000 rules and 20,000 VMs; authorize and
// revoke latency (submission → job committed, p50/p99) and throughput through the real dispatcher
// (validation, access checks, transactions, async job rows, events), and one 500-group page of
// listSecurityGroups. The change sink is a no-op: this measures the API and the store only.
// Run: node --import tsx bench/api.ts [--groups 10000 --rules 100000 --vms 20000 --ops 1000]
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
import { signParams } from '../src/api/signing.js';
import { summary } from './summary.js';

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const GROUPS = arg('groups', 10_000);
const RULES = arg('rules', 100_000);
const VMS = arg('vms', 20_000);
const OPS = arg('ops', 1_000);
const ACCOUNTS = 100;

function rng(seed: number) {
  let a = seed >>> 0;
  return () => { a = (a + 0x6d2b79f5) >>> 0; let t = a; t = Math.imul(t ^ (t >>> 15), t | 1); t ^= t + Math.imul(t ^ (t >>> 7), t | 61); return ((t ^ (t >>> 14)) >>> 0) / 4294967296; };
}
const rnd = rng(7);
const pick = (n: number) => 1 + Math.floor(rnd() * n);

async function batches<T>(rows: T[], n: number, f: (chunk: T[]) => Promise<unknown>) {
  for (let i = 0; i < rows.length; i += n) await f(rows.slice(i, i + n));
}

async function populate(db: Db): Promise<{ groupUuids: string[]; accountIds: number[] }> {
  const now = new Date().toISOString();
  const root = await db.selectFrom('domains').select('id').where('parent_id', 'is', null).executeTakeFirstOrThrow();
  const zone = await db.selectFrom('zones').select('id').executeTakeFirstOrThrow();
  return db.transaction().execute(async (trx) => {
    const accounts = Array.from({ length: ACCOUNTS }, (_, i) => ({ uuid: randomUUID(), name: `acct${i}`, domain_id: root.id, type: 0, state: 'enabled', created: now, removed: null }));
    const accountIds = (await trx.insertInto('accounts').values(accounts).returning('id').execute()).map((r) => r.id);
    const groups = Array.from({ length: GROUPS }, (_, i) => ({ uuid: randomUUID(), name: `group${i}`, description: `benchmark group ${i}`, account_id: accountIds[i % ACCOUNTS]!, domain_id: root.id, created: now }));
    const groupIds: number[] = [];
    await batches(groups, 1000, async (c) => { groupIds.push(...(await trx.insertInto('security_groups').values(c).returning('id').execute()).map((r) => Number(r.id))); });
    const rules = Array.from({ length: RULES }, (_, i) => {
      const g = groupIds[i % GROUPS]!;
      const r = rnd();
      const proto = r < 0.6 ? 'tcp' : r < 0.8 ? 'udp' : r < 0.95 ? 'icmp' : 'all';
      const port = pick(60000);
      const ref = rnd() < 0.1;
      return {
        uuid: randomUUID(), group_id: g, account_id: accountIds[(i % GROUPS) % ACCOUNTS]!, type: rnd() < 0.8 ? 'ingress' : 'egress', protocol: proto,
        start_port: proto === 'icmp' ? -1 : proto === 'all' ? 0 : port, end_port: proto === 'icmp' ? -1 : proto === 'all' ? 0 : port + pick(10),
        cidr: ref ? null : `10.${pick(250)}.${pick(250)}.0/24`, allowed_group_id: ref ? groupIds[pick(GROUPS) - 1]! : null, created: now,
      };
    });
    await batches(rules, 1000, (c) => trx.insertInto('security_group_rules').values(c).execute());
    const net = await trx.insertInto('networks').values({
      uuid: randomUUID(), name: 'bench', display_text: 'bench', zone_id: zone.id, account_id: accountIds[0]!, domain_id: root.id,
      gateway: '10.0.0.1', netmask: '255.0.0.0', start_ip: '10.0.0.2', end_ip: '10.255.255.254', ip6_gateway: null, ip6_cidr: null,
      start_ipv6: null, end_ipv6: null, vlan: null, created: now, removed: null,
    }).returning('id').executeTakeFirstOrThrow();
    const vms = Array.from({ length: VMS }, (_, i) => ({
      uuid: randomUUID(), name: `vm${i}`, display_name: `vm${i}`, instance_name: `i-x-${i}-VM`, account_id: accountIds[i % ACCOUNTS]!, domain_id: root.id,
      zone_id: zone.id, host_id: null, last_host_id: null, state: 'Running', service_offering_id: null, template_id: null,
      sync_state: 'Synced', sync_error: null, created: now, removed: null,
    }));
    const vmIds: number[] = [];
    await batches(vms, 1000, async (c) => { vmIds.push(...(await trx.insertInto('vms').values(c).returning('id').execute()).map((r) => Number(r.id))); });
    const nics = vmIds.map((id, i) => ({
      uuid: randomUUID(), vm_id: id, network_id: net.id, mac: `02:00:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}:01`,
      ipv4: `10.${((i + 2) >> 16) & 255}.${((i + 2) >> 8) & 255}.${(i + 2) & 255}`, ipv6: null, is_default: 1, device_id: 0, device_name: null, created: now, removed: null,
    }));
    await batches(nics, 1000, (c) => trx.insertInto('nics').values(c).execute());
    const maps = new Map<string, { group_id: number; vm_id: number }>();
    vmIds.forEach((vm, i) => {
      // each VM joins one or two groups of its own account
      const acct = i % ACCOUNTS;
      for (let k = 0; k < 1 + (rnd() < 0.5 ? 1 : 0); k++) {
        const g = groupIds[acct + ACCOUNTS * Math.floor(rnd() * (GROUPS / ACCOUNTS))]!;
        maps.set(`${g}:${vm}`, { group_id: g, vm_id: vm });
      }
    });
    await batches([...maps.values()], 1000, (c) => trx.insertInto('security_group_vm_map').values(c).execute());
    return { groupUuids: groups.map((g) => g.uuid), accountIds };
  });
}

const pct = (xs: number[], p: number) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!; };
const ms = (x: number) => x.toFixed(2);

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-bench-'));
  const log = pino({ level: 'warn' });
  try {
    const db = await openStore({ kind: 'sqlite', file: path.join(dir, 'palisade.db') });
    const keys = await bootstrap(db);
    let t = performance.now();
    const { groupUuids } = await populate(db);
    const populateMs = performance.now() - t;
    (globalThis as { gc?: () => void }).gc?.(); // start measuring with the populate garbage collected (run with --expose-gc)
    const app = await buildServer({ db, sink: { publish() {} }, log });
    const d = dispatcherOf(app);
    const admin = await db.selectFrom('users as u').innerJoin('accounts as a', 'a.id', 'u.account_id').innerJoin('domains as dm', 'dm.id', 'a.domain_id')
      .select(['u.id as userId', 'u.uuid as userUuid', 'u.username', 'a.id as accountId', 'a.uuid as accountUuid', 'a.name as accountName',
        'dm.id as domainId', 'dm.uuid as domainUuid', 'dm.name as domainName', 'dm.path as domainPath'])
      .where('u.username', '=', 'admin').executeTakeFirstOrThrow();
    const caller: Caller = { ...admin, role: 'admin' };
    const cmd = (n: string) => d.commands.get(n)!;
    const jobResult = async (jobid: string) => {
      const j = await db.selectFrom('async_jobs').select(['status', 'result']).where('uuid', '=', jobid).executeTakeFirstOrThrow();
      if (j.status !== 1) throw new Error(`job failed: ${j.result}`);
      return JSON.parse(j.result!);
    };

    // warm-up (JIT, statement caches): 50 authorize + revoke pairs, not measured
    for (let i = 0; i < 50; i++) {
      const r = await d.run(cmd('authorizeSecurityGroupIngress'), { securitygroupid: groupUuids[pick(GROUPS) - 1]!, protocol: 'tcp', startport: '9', endport: '9', cidrlist: `192.0.2.${i}/32` }, caller);
      await d.idle();
      const id = (await jobResult((r.body.authorizesecuritygroupingressresponse as { jobid: string }).jobid)).securitygroup.ingressrule[0].ruleid;
      await d.run(cmd('revokeSecurityGroupIngress'), { id }, caller);
      await d.idle();
    }
    // authorize, one at a time: submission → job committed
    const authLat: number[] = [];
    const ruleIds: string[] = [];
    let cpu = process.cpuUsage();
    for (let i = 0; i < OPS; i++) {
      const g = groupUuids[pick(GROUPS) - 1]!;
      const t0 = performance.now();
      const r = await d.run(cmd('authorizeSecurityGroupIngress'), { securitygroupid: g, protocol: 'tcp', startport: String(1000 + i), endport: String(1000 + i), cidrlist: `198.51.100.${i % 250}/32` }, caller);
      const jobid = (r.body.authorizesecuritygroupingressresponse as { jobid: string }).jobid;
      await d.idle();
      authLat.push(performance.now() - t0);
      ruleIds.push((await jobResult(jobid)).securitygroup.ingressrule[0].ruleid);
    }
    const authCpu = process.cpuUsage(cpu);
    const revLat: number[] = [];
    cpu = process.cpuUsage();
    for (const id of ruleIds) {
      const t0 = performance.now();
      await d.run(cmd('revokeSecurityGroupIngress'), { id }, caller);
      await d.idle();
      revLat.push(performance.now() - t0);
    }
    const revCpu = process.cpuUsage(cpu);
    // throughput: OPS authorizations submitted at once, until all committed
    t = performance.now();
    await Promise.all(Array.from({ length: OPS }, (_, i) => d.run(cmd('authorizeSecurityGroupIngress'), {
      securitygroupid: groupUuids[pick(GROUPS) - 1]!, protocol: 'udp', startport: String(2000 + i), endport: String(2000 + i), cidrlist: `203.0.113.${i % 250}/32`,
    }, caller)));
    await d.idle();
    const thrMs = performance.now() - t;
    const failed = await db.selectFrom('async_jobs').select((eb) => eb.fn.countAll<number>().as('n')).where('status', '=', 2).executeTakeFirstOrThrow();

    // the same over HTTP: signed POST (signature verified, user looked up) → job committed
    await app.listen({ host: '127.0.0.1', port: 0 });
    const url = `http://127.0.0.1:${(app.server.address() as import('node:net').AddressInfo).port}/client/api`;
    const post = async (params: Record<string, string>) => {
      const p = { ...params, response: 'json', apiKey: keys.apikey };
      const body = new URLSearchParams({ ...p, signature: signParams(p, keys.secretkey) }).toString();
      const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body });
      return JSON.parse(await r.text());
    };
    const httpLat: number[] = [];
    const httpRules: string[] = [];
    for (let i = 0; i < Math.min(OPS, 500); i++) {
      const t0 = performance.now();
      const r = await post({ command: 'authorizeSecurityGroupIngress', securitygroupid: groupUuids[pick(GROUPS) - 1]!, protocol: 'tcp', startport: String(3000 + i), endport: String(3000 + i), cidrlist: '192.0.2.0/24' });
      await d.idle();
      httpLat.push(performance.now() - t0);
      httpRules.push((await jobResult(r.authorizesecuritygroupingressresponse.jobid)).securitygroup.ingressrule[0].ruleid);
    }
    const httpRevLat: number[] = [];
    for (const id of httpRules) {
      const t0 = performance.now();
      await post({ command: 'revokeSecurityGroupIngress', id });
      await d.idle();
      httpRevLat.push(performance.now() - t0);
    }

    // one page of 500 groups (rules, tags, member VM ids, owners)
    const pageLat: number[] = [];
    let pageItems = 0; let pageRules = 0;
    cpu = process.cpuUsage();
    for (let i = 0; i < 10; i++) {
      const t0 = performance.now();
      const r = await d.run(cmd('listSecurityGroups'), { listall: 'true', page: String(1 + (i % 20)), pagesize: '500' }, caller);
      pageLat.push(performance.now() - t0);
      const body = r.body.listsecuritygroupsresponse as { securitygroup: { ingressrule: unknown[]; egressrule: unknown[] }[] };
      pageItems = body.securitygroup.length;
      pageRules = body.securitygroup.reduce((n, g) => n + g.ingressrule.length + g.egressrule.length, 0);
    }
    const pageCpu = process.cpuUsage(cpu);
    const kwLat: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      await d.run(cmd('listSecurityGroups'), { listall: 'true', keyword: `group${i}9`, page: '1', pagesize: '500' }, caller);
      kwLat.push(performance.now() - t0);
    }

    if (process.env.BENCH_DEBUG) console.log('slowest authorizations (index: ms)', authLat.map((x, i) => [i, +x.toFixed(1)]).sort((a, b) => b[1]! - a[1]!).slice(0, 12));
    const table = new Table({ head: ['measure', 'n', 'p50 ms', 'p99 ms', 'other'], style: { head: [], border: [] } });
    table.push(
      ['populate store', `${GROUPS} groups, ${RULES} rules, ${VMS} VMs`, '', '', `${(populateMs / 1000).toFixed(1)} s`],
      ['authorizeSecurityGroupIngress (submit → committed)', OPS, ms(pct(authLat, 50)), ms(pct(authLat, 99)), `${(1000 / (authLat.reduce((a, b) => a + b, 0) / OPS)).toFixed(0)} ops/s sequential; CPU ${((authCpu.user + authCpu.system) / 1000 / OPS).toFixed(2)} ms/op`],
      ['revokeSecurityGroupIngress (submit → committed)', OPS, ms(pct(revLat, 50)), ms(pct(revLat, 99)), `${(1000 / (revLat.reduce((a, b) => a + b, 0) / OPS)).toFixed(0)} ops/s sequential; CPU ${((revCpu.user + revCpu.system) / 1000 / OPS).toFixed(2)} ms/op`],
      ['authorize over HTTP (signed POST → committed)', httpLat.length, ms(pct(httpLat, 50)), ms(pct(httpLat, 99)), ''],
      ['revoke over HTTP (signed POST → committed)', httpRevLat.length, ms(pct(httpRevLat, 50)), ms(pct(httpRevLat, 99)), ''],
      ['authorize, all submitted at once', OPS, '', '', `${(OPS / (thrMs / 1000)).toFixed(0)} ops/s; failed jobs ${failed.n}`],
      ['listSecurityGroups page (pagesize 500)', 10, ms(pct(pageLat, 50)), ms(pct(pageLat, 99)), `${pageItems} groups, ${pageRules} rules on the last page; CPU ${((pageCpu.user + pageCpu.system) / 1000 / 10).toFixed(1)} ms/page`],
      ['listSecurityGroups keyword (pagesize 500)', 5, ms(pct(kwLat, 50)), ms(pct(kwLat, 99)), ''],
    );
    console.log(table.toString());
    console.log('targets: authorize p99 < 20 ms; a 500-group page < 100 ms');
    console.log(`machine: ${os.cpus().length} CPUs, load average ${os.loadavg().map((x) => x.toFixed(1)).join(' ')} (latency tails include waiting for a CPU)`);
    summary('api', 'authorize p50 (submit → committed)', pct(authLat, 50), 'ms');
    summary('api', 'authorize p99 (submit → committed)', pct(authLat, 99), 'ms', '< 20');
    summary('api', 'revoke p99 (submit → committed)', pct(revLat, 99), 'ms');
    summary('api', 'authorize over HTTP p99', pct(httpLat, 99), 'ms');
    summary('api', 'authorize throughput, 1000 at once', OPS / (thrMs / 1000), 'ops/s');
    summary('api', 'listSecurityGroups page of 500 p99', pct(pageLat, 99), 'ms', '< 100');
    await app.close();
    await db.destroy();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => { console.error(e); process.exitCode = 1; });
