// Issue 11, server side, against the real server process and its SQLite store: /metrics, per-rule
// hits (ingested through the function the control plane calls, into the running server's store),
// the drop log and listSecurityGroupDrops, explainSecurityGroupTraffic, dry runs, and the settings
// commands. Tenants see their own VMs only.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { startServer, cloudstack, type TestServer, type Creds } from '../helpers/server.js';
import { openSqlite, type Db } from '../../src/store/db.js';
import { ingestDrops, ingestRuleCounters, readSettings } from '../../src/observe/index.js';
import { loadPolicyInput } from '../../src/store/queries/cloud.js';
import { compileVm } from '../../src/policy/api.js';
import type { VmPolicy } from '../../src/policy/ir.js';
import { ALL_METRICS } from '../../src/metrics/catalog.js';
import { runPalisade } from '../helpers/palisade.js';
import fs from 'node:fs';
import os from 'node:os';

type P = Record<string, string | number | boolean>;

let s: TestServer;
let db: Db;
let admin: Creds;
let alice: Creds & { accountId: string; account: string };
let bob: Creds & { accountId: string; account: string };
let domainId: string;
let net: any, hostA: any, hostB: any;
let web1: any, web2: any, db1: any;
let webGroup: any;

async function ok(command: string, params: P = {}, who?: Creds): Promise<any> {
  const r = await s.call(command, params, who);
  assert.equal(r.status, 200, `${command} failed: ${JSON.stringify(r.body)}`);
  return r.body[`${command.toLowerCase()}response`];
}
async function fails(command: string, params: P, code: number, message: RegExp, who?: Creds): Promise<void> {
  const r = await s.call(command, params, who);
  const inner = r.body[`${command.toLowerCase()}response`] ?? r.body.errorresponse;
  assert.equal(r.status, code, `${command} ${JSON.stringify(params)}: expected ${code}, got ${r.status} ${JSON.stringify(r.body)}`);
  assert.match(inner.errortext, message);
}
async function job(command: string, params: P = {}, who?: Creds): Promise<any> {
  const r = await s.callAndWait(command, params, who);
  assert.equal(r.status, 200, `${command} submit failed: ${JSON.stringify(r.body)}`);
  assert.equal(r.body.jobstatus, 1, `${command} job failed: ${JSON.stringify(r.body.jobresult)}`);
  return r.body.jobresult;
}

async function makeUser(name: string): Promise<Creds & { accountId: string; account: string }> {
  const acct = (await ok('createAccount', { username: name, password: 'pw-' + name, email: `${name}@example.org`, firstname: name, lastname: 'T', domainid: domainId, accounttype: 0 })).account;
  const keys = (await ok('registerUserKeys', { id: acct.user[0].id })).userkeys;
  return { apikey: keys.apikey, secretkey: keys.secretkey, accountId: acct.id, account: name };
}

const groupOf = async (id: string, who?: Creds) => (await ok('listSecurityGroups', { id }, who)).securitygroup[0];

/** The VM's policy as the server compiles it (what the control plane hands to ingestRuleCounters). */
async function policyOf(vmUuid: string): Promise<VmPolicy> {
  const vm = await db.selectFrom('vms').select('id').where('uuid', '=', vmUuid).executeTakeFirstOrThrow();
  return compileVm(await loadPolicyInput(db, [Number(vm.id)]), Number(vm.id));
}
const hostInternalId = async (uuid: string) => (await db.selectFrom('hosts').select('id').where('uuid', '=', uuid).executeTakeFirstOrThrow()).id;

before(async () => {
  s = await startServer();
  admin = { apikey: s.apikey, secretkey: s.secretkey };
  db = openSqlite(path.join(s.dataDir, 'palisade.db'));
  domainId = (await ok('listDomains')).domain[0].id;
  const zoneId = (await ok('listZones')).zone[0].id;
  net = (await ok('createNetwork', { name: 'n1', displaytext: 'n1', zoneid: zoneId, gateway: '10.1.1.1', netmask: '255.255.255.0', startip: '10.1.1.10', endip: '10.1.1.200', ip6gateway: '2001:db8:1::1', ip6cidr: '2001:db8:1::/64' })).network;
  hostA = (await ok('addHost', { name: 'kvm-a' })).host[0];
  hostB = (await ok('addHost', { name: 'kvm-b' })).host[0];
  alice = await makeUser('alice');
  bob = await makeUser('bob');
  webGroup = (await ok('createSecurityGroup', { name: 'web' }, alice)).securitygroup;
  const deploy = async (name: string, who: { account: string }, host: any, groups: string) => (await job('deployVirtualMachine', {
    name, networkids: net.id, hostid: host.id, account: who.account, domainid: domainId, securitygroupnames: groups,
  })).virtualmachine;
  web1 = await deploy('web1', alice, hostA, 'web');
  web2 = await deploy('web2', alice, hostB, 'web');
  db1 = await deploy('db1', bob, hostA, 'default');
});
after(async () => { await db?.destroy(); await s?.stop(); });

// ---------------------------------------------------------------- /metrics

async function scrape(srv: TestServer = s): Promise<{ status: number; type: string | null; text: string }> {
  const r = await fetch(`http://127.0.0.1:${srv.port}/metrics`);
  return { status: r.status, type: r.headers.get('content-type'), text: await r.text() };
}
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    const m = /^([a-z_:]+)(\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[3] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[4]);
  }
  return undefined;
}

test('/metrics: Prometheus text with API, job and inventory metrics; bounded labels, no ids', async () => {
  await ok('listZones');
  await fails('listZones', { id: 'nope' }, 431, /parameter id/);
  await s.call('noSuchCommand' + Math.random().toString(36).slice(2));
  await s.call('anotherMadeUpCommand');
  const m = await scrape();
  assert.equal(m.status, 200);
  assert.match(m.type ?? '', /^text\/plain; version=0\.0\.4/);
  assert.ok((sample(m.text, 'palisade_api_requests_total', { command: 'listZones', code: '200' }) ?? 0) >= 1, 'success counted');
  assert.ok((sample(m.text, 'palisade_api_requests_total', { command: 'listZones', code: '431' }) ?? 0) >= 1, 'error code counted');
  assert.equal(sample(m.text, 'palisade_api_requests_total', { command: 'unknown', code: '401' }), 2, 'unknown commands share one label value (401 without a session, as CloudStack)');
  assert.doesNotMatch(m.text, /noSuchCommand|anotherMadeUp/);
  assert.ok((sample(m.text, 'palisade_api_request_duration_seconds_count', { command: 'listZones', code: '200' }) ?? 0) >= 1);
  assert.ok((sample(m.text, 'palisade_async_jobs_finished_total', { command: 'deployVirtualMachine', result: 'succeeded' }) ?? 0) >= 3);
  assert.ok((sample(m.text, 'palisade_async_jobs', { state: 'succeeded' }) ?? 0) >= 3);
  assert.equal(sample(m.text, 'palisade_async_jobs', { state: 'pending' }), 0);
  assert.equal(sample(m.text, 'palisade_hosts', { state: 'Disconnected' }), 2, 'no agent connected: both hosts Disconnected');
  assert.equal(sample(m.text, 'palisade_hosts', { state: 'Up' }), 0);
  const vms = ['Synced', 'Pending', 'Failed'].reduce((n, st) => n + (sample(m.text, 'palisade_vms', { sync_state: st }) ?? 0), 0);
  assert.equal(vms, 3);
  assert.ok(sample(m.text, 'process_resident_memory_bytes') !== undefined, 'process metrics');
  assert.doesNotMatch(m.text, /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/, 'no uuid anywhere');
  for (const line of m.text.split('\n').filter((l) => l.startsWith('# TYPE palisade_'))) {
    const name = line.split(' ')[2]!;
    assert.ok(ALL_METRICS.some((d) => d.name === name), `${name} is in the catalog`);
  }
  // the catalog follows the conventions
  for (const d of ALL_METRICS) {
    assert.match(d.name, /^palisade_[a-z0-9_]+$/);
    if (d.type === 'counter') assert.match(d.name, /_total$/);
    else assert.doesNotMatch(d.name, /_total$/);
    for (const l of d.labels) assert.ok(!/(^|_)(id|uuid|vm|rule|host|address|ip)$/.test(l), `${d.name}: label ${l} must not identify an object`);
  }
});

test('/metrics can be switched off or limited to an allow-list', async () => {
  const off = await startServer({ args: ['--metrics', 'off'] });
  const denied = await startServer({ args: ['--metrics-allow', '10.0.0.0/8,192.0.2.1'] });
  const allowed = await startServer({ args: ['--metrics-allow', '10.0.0.0/8,127.0.0.1'] });
  try {
    assert.equal((await scrape(off)).status, 404);
    assert.equal((await off.call('listZones')).status, 200, 'the API still answers');
    assert.equal((await scrape(denied)).status, 403);
    const a = await scrape(allowed);
    assert.equal(a.status, 200);
    assert.match(a.text, /palisade_api_requests_total/);
  } finally {
    await Promise.all([off.stop(), denied.stop(), allowed.stop()]);
  }
});

// ---------------------------------------------------------------- per-rule hits

test('hitcount and lasthit: 0 until counted, summed over VMs and hosts, merged kernel rules credit each API rule, kept across re-renders, gone with the rule', async () => {
  const sshA = (await job('authorizeSecurityGroupIngress', { securitygroupid: webGroup.id, protocol: 'tcp', startport: 22, endport: 22, cidrlist: '192.0.2.0/24' }, alice)).securitygroup.ingressrule[0];
  assert.equal(sshA.hitcount, 0, 'the authorize response carries hitcount');
  assert.equal(sshA.lasthit, undefined);
  const sshB = (await job('authorizeSecurityGroupIngress', { securitygroupid: webGroup.id, protocol: 'tcp', startport: 22, endport: 22, cidrlist: '198.51.100.0/24' }, alice)).securitygroup.ingressrule[0];
  const http = (await job('authorizeSecurityGroupIngress', { securitygroupid: webGroup.id, protocol: 'tcp', startport: 80, endport: 80, cidrlist: '0.0.0.0/0' }, alice)).securitygroup.ingressrule[0];
  for (const r of (await groupOf(webGroup.id, alice)).ingressrule) assert.deepEqual([r.hitcount, r.lasthit], [0, undefined]);

  // The agents of both hosts report counter deltas per VM and kernel rule id.
  const p1 = await policyOf(web1.id), p2 = await policyOf(web2.id);
  const kernelId = (p: VmPolicy, port: number) => p.v4.ingress.find((r) => r.ports?.from === port)!.id;
  assert.deepEqual(p1.v4.ingress.find((r) => r.ports?.from === 22)!.sources.sort(), [sshA.ruleid, sshB.ruleid].sort(), 'the two ssh rules are one kernel rule');
  const byVm = new Map([[web1.id, p1], [web2.id, p2]]);
  const onHost = (hostVms: string[]) => (uuid: string) => (hostVms.includes(uuid) ? byVm.get(uuid) : undefined);
  const at = new Date(Date.now() - 2000).toISOString();
  let r = await ingestRuleCounters(db, { at, vms: { [web1.id]: { [kernelId(p1, 22)]: 5, [kernelId(p1, 80)]: 100 } } }, onHost([web1.id]));
  assert.deepEqual([r.rules, r.attributedPackets, r.unknownVms, r.error], [3, 110, 0, undefined]);
  r = await ingestRuleCounters(db, { at, vms: { [web2.id]: { [kernelId(p2, 80)]: 23, ffffffffffff: 9 }, [web1.id]: { [kernelId(p1, 80)]: 1 } } }, onHost([web2.id]));
  assert.deepEqual([r.attributedPackets, r.unattributedPackets, r.unknownVms], [23, 9, 1], 'a host cannot count for a VM it does not run');
  const hits = async () => Object.fromEntries((await groupOf(webGroup.id, alice)).ingressrule.map((x: any) => [x.ruleid, [x.hitcount, x.lasthit]]));
  let h = await hits();
  assert.equal(h[sshA.ruleid][0], 5);
  assert.equal(h[sshB.ruleid][0], 5, 'merged: both API rules of the kernel rule are credited');
  assert.equal(h[http.ruleid][0], 123, 'summed over VMs on both hosts');
  assert.match(h[http.ruleid][1], /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+0000$/);
  // bad reports change nothing
  for (const bad of [{ at, vms: { [web1.id]: { [kernelId(p1, 80)]: -4 } } }, { at: 'yesterday', vms: {} }, { at, vms: {}, extra: 1 }, null, 'x']) {
    const res = await ingestRuleCounters(db, bad, onHost([web1.id]));
    assert.ok(res.error, JSON.stringify(bad));
  }
  // another rule's change re-renders the group's kernel rules: the counts stay
  await job('authorizeSecurityGroupIngress', { securitygroupid: webGroup.id, protocol: 'udp', startport: 53, endport: 53, cidrlist: '0.0.0.0/0' }, alice);
  h = await hits();
  assert.equal(h[http.ruleid][0], 123);
  // revoking a rule removes its counter row; the others stay
  await job('revokeSecurityGroupIngress', { id: sshB.ruleid }, alice);
  const rows = await db.selectFrom('security_group_rule_hits as h').innerJoin('security_group_rules as r', 'r.id', 'h.rule_id').select(['r.uuid']).execute();
  assert.deepEqual(rows.map((x) => x.uuid).sort(), [sshA.ruleid, http.ruleid].sort());
  assert.equal((await db.selectFrom('security_group_rule_hits').select('rule_id').execute()).length, 2, 'no orphan counters');
});

test('python3-cs: hitcount/lasthit in listSecurityGroups disturb nothing', async () => {
  const cs = await cloudstack({ url: s.url, apikey: alice.apikey, secretkey: alice.secretkey }, 'listSecurityGroups', 'securitygroupname=web');
  assert.equal(cs.code, 0, cs.stderr);
  const g = cs.out.securitygroup[0];
  assert.equal(g.name, 'web');
  const http = g.ingressrule.find((r: any) => r.startport === 80);
  assert.deepEqual([http.protocol, http.endport, http.cidr, http.hitcount], ['tcp', 80, '0.0.0.0/0', 123]);
});

// ---------------------------------------------------------------- drop log

test('drop log: ingestion validates, keeps only the sending host\'s VMs; listSecurityGroupDrops filters, pages and scopes by tenant', async () => {
  const a = await hostInternalId(hostA.id);
  const now = Date.now();
  const t = (ago: number) => new Date(now - ago).toISOString();
  const nicOf = (vm: any) => vm.nic[0].id;
  const records: unknown[] = [
    { at: t(50_000), vm: web1.id, nic: nicOf(web1), reason: 'ingress-default-deny', direction: 'ingress', protocol: 'tcp', src: '203.0.113.9', dst: web1.nic[0].ipaddress, srcPort: 40001, dstPort: 23 },
    { at: t(40_000), vm: web1.id, reason: 'spoofed-ip', direction: 'egress', protocol: 'udp', src: '10.1.1.250', dst: '198.51.100.1', srcPort: 5000, dstPort: 53 },
    { at: t(30_000), vm: web1.id, nic: nicOf(db1), reason: 'egress-default-deny', direction: 'egress', protocol: 'icmp', src: web1.nic[0].ipaddress, dst: '2001:DB8::0:1', icmpType: 8, icmpCode: 0 },
    { at: t(20_000), vm: db1.id, reason: 'rogue-dhcp', direction: 'egress', protocol: 'udp', src: db1.nic[0].ipaddress, dst: '255.255.255.255', srcPort: 67, dstPort: 68 },
    { at: t(10_000), reason: 'unknown-port', direction: 'egress', protocol: 'arp', src: '52:54:00:AA:BB:CC' },
    { at: new Date(now + 3600_000).toISOString(), vm: web1.id, reason: 'spoofed-mac', direction: 'egress', protocol: 'other', src: 'fe:54:00:00:00:01' },
    // rejected: VM on another host, no VM for a VM reason, bad reason, bad address, unknown field, bad port
    { at: t(1000), vm: web2.id, reason: 'ingress-default-deny', direction: 'ingress', protocol: 'tcp' },
    { at: t(1000), reason: 'ingress-default-deny', direction: 'ingress', protocol: 'tcp' },
    { at: t(1000), vm: web1.id, reason: 'because', direction: 'ingress', protocol: 'tcp' },
    { at: t(1000), vm: web1.id, reason: 'ingress-default-deny', direction: 'ingress', protocol: 'tcp', src: 'not-an-address' },
    { at: t(1000), vm: web1.id, reason: 'ingress-default-deny', direction: 'ingress', protocol: 'tcp', comment: 'x' },
    { at: t(1000), vm: web1.id, reason: 'ingress-default-deny', direction: 'ingress', protocol: 'tcp', dstPort: 70000 },
    // stale: older than the log keeps
    { at: t(25 * 3600_000), vm: web1.id, reason: 'ingress-default-deny', direction: 'ingress', protocol: 'tcp' },
  ];
  const res = await ingestDrops(db, a, { records });
  assert.deepEqual(res, { accepted: 6, rejected: 6, stale: 1 });
  assert.deepEqual(await ingestDrops(db, a, { records: [], more: true }), { accepted: 0, rejected: 0, stale: 0, error: 'batch: Unrecognized key: "more"' });
  assert.equal((await ingestDrops(db, a, { records: new Array(5001).fill({}) })).accepted, 0, 'oversized batches are refused whole');

  const list = async (params: P, who?: Creds) => (await ok('listSecurityGroupDrops', params, who));
  const mine = await list({}, alice);
  assert.equal(mine.count, 4, 'alice sees her VM\'s drops only');
  assert.ok(mine.securitygroupdrop.every((d: any) => d.virtualmachineid === web1.id && d.hostid === undefined));
  const newest = mine.securitygroupdrop[0];
  assert.equal(newest.reason, 'spoofed-mac', 'a timestamp from the future is clamped to now: newest');
  const deny = mine.securitygroupdrop.find((d: any) => d.reason === 'ingress-default-deny');
  assert.deepEqual(deny, {
    virtualmachineid: web1.id, virtualmachinename: 'web1', nicid: nicOf(web1), direction: 'ingress', protocol: 'tcp',
    srcaddress: '203.0.113.9', srcport: 40001, dstaddress: web1.nic[0].ipaddress, dstport: 23, reason: 'ingress-default-deny', created: deny.created,
  });
  const icmp = mine.securitygroupdrop.find((d: any) => d.protocol === 'icmp');
  assert.deepEqual([icmp.dstaddress, icmp.icmptype, icmp.icmpcode, icmp.nicid], ['2001:db8::1', 8, 0, undefined], 'canonical address; a NIC of another VM is dropped');
  assert.equal((await list({}, bob)).securitygroupdrop[0].reason, 'rogue-dhcp');
  assert.equal((await list({}, bob)).count, 1);
  await fails('listSecurityGroupDrops', { virtualmachineid: db1.id }, 531, /permission/, alice);
  assert.deepEqual(await list({}), {}, 'root admin without listall: its own account has no VMs');
  const all = await list({ listall: true });
  assert.equal(all.count, 6);
  const unowned = all.securitygroupdrop.find((d: any) => d.reason === 'unknown-port');
  assert.deepEqual([unowned.virtualmachineid, unowned.hostname, unowned.srcaddress], [undefined, 'kvm-a', '52:54:00:aa:bb:cc']);
  // filters
  assert.equal((await list({ virtualmachineid: web1.id, reason: 'spoofed-ip' }, alice)).count, 1);
  assert.equal((await list({ direction: 'egress' }, alice)).count, 3);
  assert.equal((await list({ keyword: '203.0.113' }, alice)).count, 1);
  assert.equal((await list({ keyword: 'SPOOFED' }, alice)).count, 2);
  const day = new Date(now).toISOString().slice(0, 10);
  assert.equal((await list({ startdate: day, enddate: day }, alice)).count, 4);
  assert.deepEqual(await list({ enddate: '2000-01-01' }, alice), {});
  const t0 = new Date(now - 35_000).toISOString().replace('T', ' ').slice(0, 19);
  assert.equal((await list({ startdate: t0 }, alice)).count, 2);
  // paging: newest first, stable
  const p1 = await list({ page: 1, pagesize: 3 }, alice), p2 = await list({ page: 2, pagesize: 3 }, alice);
  assert.deepEqual([p1.count, p1.securitygroupdrop.length, p2.securitygroupdrop.length], [4, 3, 1]);
  assert.deepEqual([...p1.securitygroupdrop, ...p2.securitygroupdrop].map((d: any) => d.created), mine.securitygroupdrop.map((d: any) => d.created));
  // bad parameters
  await fails('listSecurityGroupDrops', { reason: 'nope' }, 431, /parameter reason/, alice);
  await fails('listSecurityGroupDrops', { direction: 'up' }, 431, /parameter direction/, alice);
  await fails('listSecurityGroupDrops', { startdate: '2026-02-31' }, 431, /Unable to parse date/, alice);
  await fails('listSecurityGroupDrops', { virtualmachineid: 'x' }, 431, /virtualmachineid/, alice);
  await fails('listSecurityGroupDrops', { pagesize: 501, page: 1 }, 431, /Page size/, alice);
});

test('drop log bounds: per VM the newest N, unowned per host, a global cap, nothing older than the age bound', async () => {
  const a = await hostInternalId(hostA.id);
  const limits = { perVm: 5, perHostUnowned: 3, perHost: 100_000, maxAgeMs: 24 * 3600_000, total: 12 };
  const rec = (i: number, vm?: string) => ({ at: new Date(Date.now() - 1000 + i).toISOString(), ...(vm ? { vm } : {}), reason: vm ? 'ingress-default-deny' : 'unknown-port', direction: 'ingress', protocol: 'tcp', dstPort: 1000 + i });
  await ingestDrops(db, a, { records: Array.from({ length: 9 }, (_, i) => rec(i, web1.id)) }, { limits });
  await ingestDrops(db, a, { records: Array.from({ length: 7 }, (_, i) => rec(i)) }, { limits });
  const count = async (where: (q: any) => any) => Number((await where(db.selectFrom('security_group_drops').select((eb) => eb.fn.countAll<number>().as('n'))).executeTakeFirstOrThrow()).n);
  assert.equal(await count((q) => q.where('vm_id', 'is not', null).where('vm_id', '=', (db as any).selectFrom('vms').select('id').where('uuid', '=', web1.id))), 5);
  assert.equal(await count((q) => q.where('vm_id', 'is', null)), 3);
  const kept = (await ok('listSecurityGroupDrops', { virtualmachineid: web1.id }, alice)).securitygroupdrop.map((d: any) => d.dstport);
  assert.deepEqual(kept, [1008, 1007, 1006, 1005, 1004], 'the newest five');
  await ingestDrops(db, a, { records: Array.from({ length: 10 }, (_, i) => rec(20 + i, db1.id)) }, { limits: { ...limits, perVm: 100 } });
  assert.ok(await count((q) => q) <= 12, 'global cap');
  // an age bound enforced on prune and on listing
  await ingestDrops(db, a, { records: [rec(50, web1.id)] }, { limits: { ...limits, maxAgeMs: 500 } });
  assert.ok(await count((q) => q.where('created', '<', new Date(Date.now() - 5000).toISOString())) === 0);
});

// ---------------------------------------------------------------- explain

test('explainSecurityGroupTraffic: verdict, reason, deciding rule with group and hitcount, sync state; tenants only their VMs', async () => {
  const ex = async (params: P, who: Creds = alice) => (await ok('explainSecurityGroupTraffic', { virtualmachineid: web1.id, ...params }, who)).securitygrouptraffic;
  const http = await ex({ direction: 'ingress', protocol: 'tcp', port: 80, address: '203.0.113.77' });
  assert.equal(http.allowed, true);
  assert.equal(http.reason, 'rule');
  assert.equal(http.securitygroupname, 'web');
  assert.equal(http.securitygroupid, webGroup.id);
  assert.equal(http.hitcount, 123);
  assert.match(http.lasthit, /\+0000$/);
  assert.equal(http.nicid, web1.nic[0].id);
  assert.ok(['Pending', 'Synced', 'Failed'].includes(http.securitygroupsyncstate));
  assert.equal(http.virtualmachinestate, 'Running');
  const rules = (await groupOf(webGroup.id, alice)).ingressrule;
  assert.equal(http.ruleid, rules.find((r: any) => r.startport === 80).ruleid);
  const denied = await ex({ direction: 'ingress', protocol: 'tcp', port: 81, address: '203.0.113.77' });
  assert.deepEqual([denied.allowed, denied.reason, denied.ruleid], [false, 'default-deny', undefined]);
  const ssh = await ex({ direction: 'ingress', protocol: 'TCP', port: 22, address: '192.0.2.200' });
  assert.deepEqual([ssh.allowed, ssh.ruleid], [true, rules.find((r: any) => r.startport === 22).ruleid]);
  assert.equal((await ex({ direction: 'ingress', protocol: 'tcp', port: 22, address: '198.51.100.1' })).allowed, false, 'the revoked half of the merged rule no longer allows');
  assert.equal((await ex({ direction: 'egress', protocol: 'udp', port: 9999, address: '2001:db8:ff::1' })).reason, 'egress-open');
  assert.equal((await ex({ direction: 'egress', protocol: 'icmpv6', icmptype: 134, address: 'ff02::1' })).reason, 'anti-spoofing');
  assert.equal((await ex({ direction: 'ingress', protocol: 'icmp', icmptype: 8, address: '203.0.113.1' })).allowed, false);
  assert.equal((await ex({ direction: 'egress', protocol: 'udp', port: 53, address: '198.51.100.53' })).reason, 'baseline', 'DNS passes whatever the rules');
  // bad parameters name themselves; another tenant's VM is refused
  await fails('explainSecurityGroupTraffic', { virtualmachineid: web1.id, direction: 'sideways', protocol: 'tcp', port: 1, address: '192.0.2.1' }, 431, /parameter direction/, alice);
  await fails('explainSecurityGroupTraffic', { virtualmachineid: web1.id, direction: 'ingress', protocol: 'tcp', address: '192.0.2.1' }, 431, /parameter port/, alice);
  await fails('explainSecurityGroupTraffic', { virtualmachineid: web1.id, direction: 'ingress', protocol: 'tcp', port: 65536, address: '192.0.2.1' }, 431, /parameter port/, alice);
  await fails('explainSecurityGroupTraffic', { virtualmachineid: web1.id, direction: 'ingress', protocol: 'icmp', address: '192.0.2.1' }, 431, /parameter icmptype/, alice);
  await fails('explainSecurityGroupTraffic', { virtualmachineid: web1.id, direction: 'ingress', protocol: 'gre', address: '192.0.2.1' }, 431, /parameter protocol/, alice);
  await fails('explainSecurityGroupTraffic', { virtualmachineid: web1.id, direction: 'ingress', protocol: 'tcp', port: 1, address: '192.0.2.300' }, 431, /parameter address/, alice);
  await fails('explainSecurityGroupTraffic', { virtualmachineid: web1.id, direction: 'ingress', protocol: 'tcp', port: 1, address: '192.0.2.1', nicid: db1.nic[0].id }, 431, /NIC/, alice);
  await fails('explainSecurityGroupTraffic', { virtualmachineid: web1.id, direction: 'ingress', protocol: 'tcp', address: '192.0.2.1' + 'x'.repeat(10) }, 431, /parameter/, alice);
  await fails('explainSecurityGroupTraffic', { virtualmachineid: db1.id, direction: 'ingress', protocol: 'tcp', port: 1, address: '192.0.2.1' }, 531, /permission/, alice);
  await fails('explainSecurityGroupTraffic', { direction: 'ingress', protocol: 'tcp', port: 1, address: '192.0.2.1' }, 431, /missing parameter virtualmachineid/, alice);
  // the admin may explain any VM
  assert.equal((await ex({ direction: 'ingress', protocol: 'tcp', port: 80, address: '203.0.113.77' }, admin)).allowed, true);
});

test('explainSecurityGroupTraffic: a rule referencing the caller\'s own group names its members; another account\'s group does not tell who is in it', async () => {
  const ex = async (params: P, who: Creds = alice) => (await ok('explainSecurityGroupTraffic', { virtualmachineid: web1.id, direction: 'ingress', protocol: 'tcp', ...params }, who)).securitygrouptraffic;
  const ref = async (port: number, account: string, group: string) => (await job('authorizeSecurityGroupIngress', {
    securitygroupid: webGroup.id, protocol: 'tcp', startport: port, endport: port, 'usersecuritygrouplist[0].account': account, 'usersecuritygrouplist[0].group': group,
  }, alice)).securitygroup.ingressrule[0];
  const own = await ref(6001, 'alice', 'web');
  const foreign = await ref(6002, 'bob', 'default');
  const web2Ip = web2.nic[0].ipaddress, db1Ip = db1.nic[0].ipaddress, nobody = '10.1.1.199';
  assert.notEqual(db1Ip, nobody);
  try {
    // Alice's own group: members are hers to see, so the verdict turns on membership.
    const member = await ex({ port: 6001, address: web2Ip });
    assert.deepEqual([member.allowed, member.reason, member.ruleid], [true, 'rule', own.ruleid]);
    const stranger = await ex({ port: 6001, address: nobody });
    assert.deepEqual([stranger.allowed, stranger.reason, stranger.ruleid], [false, 'default-deny', undefined]);
    // Bob's group: the same answer for his VM's address and for an address nobody holds.
    const strip = (x: any) => { const { address: _a, ...rest } = x; return rest; };
    const asked = await ex({ port: 6002, address: db1Ip });
    const unasked = await ex({ port: 6002, address: nobody });
    assert.deepEqual(strip(asked), strip(unasked), 'nothing in the answer depends on whether the address is a member');
    assert.equal(asked.allowed, undefined);
    assert.equal(asked.reason, 'referenced-group');
    assert.equal(asked.ruleid, foreign.ruleid, 'the caller still sees its own rule');
    assert.match(asked.detail, /another account's/);
    // A rule that allows the address on its own (a CIDR) still decides plainly, members or not.
    const cidr = (await job('authorizeSecurityGroupIngress', { securitygroupid: webGroup.id, protocol: 'tcp', startport: 6002, endport: 6002, cidrlist: `${db1Ip}/32` }, alice)).securitygroup.ingressrule[0];
    try {
      const byCidr = await ex({ port: 6002, address: db1Ip });
      assert.deepEqual([byCidr.allowed, byCidr.reason, byCidr.ruleid, byCidr.matchingruleids], [true, 'rule', cidr.ruleid, undefined], 'the foreign-group rule is not named beside it');
    } finally {
      await job('revokeSecurityGroupIngress', { id: cidr.ruleid }, alice);
    }
    // The root admin may see bob's VMs: its answer is the real one.
    const adminMember = await ex({ port: 6002, address: db1Ip }, admin);
    assert.deepEqual([adminMember.allowed, adminMember.reason, adminMember.ruleid], [true, 'rule', foreign.ruleid]);
    const adminStranger = await ex({ port: 6002, address: nobody }, admin);
    assert.deepEqual([adminStranger.allowed, adminStranger.reason], [false, 'default-deny']);
  } finally {
    for (const r of [own, foreign]) await job('revokeSecurityGroupIngress', { id: r.ruleid }, alice);
  }
});

test('the palisade CLI gets explain and the drop log for free (verb + noun from listApis)', async () => {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-cli-'));
  try {
    const env = { ...process.env, HOME: home, PALISADE_CONFIG: path.join(home, 'config'), CLOUDSTACK_ENDPOINT: s.url, CLOUDSTACK_KEY: alice.apikey, CLOUDSTACK_SECRET: alice.secretkey };
    const r = await runPalisade(['explain', 'securitygrouptraffic', `virtualmachineid=${web1.id}`, 'direction=ingress', 'protocol=tcp', 'port=80', 'address=203.0.113.77'], { env });
    assert.equal(r.code, 0, r.stderr);
    const t = JSON.parse(r.stdout).securitygrouptraffic;
    assert.deepEqual([t.allowed, t.reason, t.securitygroupname], [true, 'rule', 'web']);
    await ingestDrops(db, await hostInternalId(hostA.id), { records: [{ at: new Date().toISOString(), vm: web1.id, reason: 'spoofed-ip', direction: 'egress', protocol: 'udp', src: '10.1.1.250' }] });
    const d = await runPalisade(['list', 'securitygroupdrops', 'reason=spoofed-ip', 'filter=reason,srcaddress', '--output', 'csv'], { env });
    assert.equal(d.code, 0, d.stderr);
    assert.deepEqual(d.stdout.trim().split('\n'), ['reason,srcaddress', 'spoofed-ip,10.1.1.250']);
  } finally {
    fs.rmSync(home, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------- dry runs

/** Everything in the store but the async job rows, as text (a dry run must leave it identical). */
async function storeSnapshot(): Promise<string> {
  const tables = ['security_groups', 'security_group_rules', 'security_group_vm_map', 'tags', 'events', 'hosts', 'vms', 'nics', 'security_group_rule_hits', 'configuration'] as const;
  const out: Record<string, unknown> = {};
  for (const t of tables) out[t] = await db.selectFrom(t as any).selectAll().execute();
  return JSON.stringify(out);
}

test('dry runs: authorize reports affected VMs and hosts and redundancy, revoke reports connections as partial without agents; nothing changes', async () => {
  const before = await storeSnapshot();
  const events = (await ok('listEvents', { pagesize: 1, page: 1 }, alice)).count;
  // covered by the existing tcp/80 rule: redundant
  let r = await job('authorizeSecurityGroupIngress', { securitygroupid: webGroup.id, protocol: 'tcp', startport: 80, endport: 80, cidrlist: '203.0.113.0/24', dryrun: true }, alice);
  assert.equal(r.securitygroup.id, webGroup.id);
  assert.deepEqual(r.securitygroup.ingressrule, [{ protocol: 'tcp', startport: 80, endport: 80, cidr: '203.0.113.0/24' }]);
  const d = r.dryrun;
  assert.deepEqual(d.affectedvirtualmachines.map((v: any) => v.name).sort(), ['web1', 'web2']);
  assert.equal(d.affectedvirtualmachinecount, 2);
  assert.equal(d.affectedhostcount, 2);
  assert.equal(d.affectedhosts, undefined, 'a tenant is not told which hosts (root admins are: see below)');
  const asRoot = await job('authorizeSecurityGroupIngress', { securitygroupid: webGroup.id, protocol: 'tcp', startport: 80, endport: 80, cidrlist: '203.0.113.0/24', dryrun: true }, admin);
  assert.deepEqual(asRoot.dryrun.affectedhosts.map((h: any) => h.name).sort(), ['kvm-a', 'kvm-b']);
  assert.equal(d.redundant, true);
  assert.equal(d.newrulecount, 1);
  assert.deepEqual(d.redundancy.map((f: any) => [f.family, f.redundant, f.coveredby.length]), [['ipv4', true, 1]]);
  assert.equal(d.restrictsegress, false);
  // wider: not redundant, with the packet that shows it
  r = await job('authorizeSecurityGroupIngress', { securitygroupid: webGroup.id, protocol: 'tcp', startport: 80, endport: 81, cidrlist: '203.0.113.0/24,2001:db8::/32', dryrun: true }, alice);
  assert.equal(r.dryrun.redundant, false);
  assert.deepEqual(r.dryrun.redundancy.find((f: any) => f.family === 'ipv4').notcovered, { protocol: 'tcp', port: 81, address: '203.0.113.0' });
  assert.deepEqual(r.dryrun.redundancy.find((f: any) => f.family === 'ipv6').notcovered, { protocol: 'tcp', port: 80, address: '2001:db8::' });
  // an exact duplicate: redundant and nothing to create (the real call would fail)
  r = await job('authorizeSecurityGroupIngress', { securitygroupid: webGroup.id, protocol: 'tcp', startport: 80, endport: 80, cidrlist: '0.0.0.0/0', dryrun: true }, alice);
  assert.deepEqual([r.dryrun.redundant, r.dryrun.newrulecount], [true, 0]);
  // the first egress rule closes open egress
  r = await job('authorizeSecurityGroupEgress', { securitygroupid: webGroup.id, protocol: 'tcp', startport: 443, endport: 443, cidrlist: '0.0.0.0/0', dryrun: true }, alice);
  assert.deepEqual([r.dryrun.redundant, r.dryrun.restrictsegress], [false, true]);
  // a referenced group is structural: covered only by the same group
  r = await job('authorizeSecurityGroupIngress', { securitygroupid: webGroup.id, protocol: 'tcp', startport: 80, endport: 80, 'usersecuritygrouplist[0].account': 'alice', 'usersecuritygrouplist[0].group': 'web', dryrun: true }, alice);
  assert.deepEqual(r.dryrun.redundancy.map((f: any) => [f.family, f.redundant]), [['ipv4', true], ['ipv6', false]], 'IPv4: covered by 0.0.0.0/0; IPv6: nothing allows tcp/80');
  assert.equal(r.dryrun.redundant, false);
  r = await job('authorizeSecurityGroupIngress', { securitygroupid: webGroup.id, protocol: 'tcp', startport: 5432, endport: 5432, 'usersecuritygrouplist[0].account': 'alice', 'usersecuritygrouplist[0].group': 'web', dryrun: true }, alice);
  assert.deepEqual(r.dryrun.redundancy.map((f: any) => f.notcovered.securitygroupname), ['web', 'web']);
  // the would-be rule names the referenced group as a stored rule does: name and account, never its id
  assert.deepEqual(r.securitygroup.ingressrule.map((x: any) => [x.securitygroupname, x.account, x.securitygroupid]), [['web', 'alice', undefined]]);
  // revoke
  const rule = (await groupOf(webGroup.id, alice)).ingressrule.find((x: any) => x.startport === 80);
  r = await job('revokeSecurityGroupIngress', { id: rule.ruleid, dryrun: true }, alice);
  assert.equal(r.success, true);
  assert.deepEqual([r.dryrun.affectedvirtualmachinecount, r.dryrun.affectedhostcount, r.dryrun.redundant, r.dryrun.opensegress], [2, 2, false, false]);
  // the hosts have no agent connected: asked of nobody, answered by nobody (test/agent/conntrack-lab.test.ts has agents)
  assert.deepEqual([r.dryrun.trackedconnections.status, r.dryrun.trackedconnections.hostsasked, r.dryrun.trackedconnections.hostsanswered], ['partial', 2, 0]);
  // failing validation in a dry run fails the job, still without an event
  const bad = await s.callAndWait('authorizeSecurityGroupIngress', { securitygroupid: webGroup.id, protocol: 'tcp', startport: 90, endport: 80, cidrlist: '0.0.0.0/0', dryrun: true }, alice);
  assert.equal(bad.body.jobstatus, 2);
  assert.equal(bad.body.jobresult.errorcode, 431);
  const other = await s.call('revokeSecurityGroupIngress', { id: rule.ruleid, dryrun: true }, bob);
  assert.equal(other.status, 531, 'a dry run checks permissions like the real call (at submission)');
  // nothing changed: rules, events, hosts' desired revisions (no change reached the control plane)
  assert.equal(await storeSnapshot(), before);
  assert.equal((await ok('listEvents', { pagesize: 1, page: 1 }, alice)).count, events);
  // and the real call still works afterwards
  const real = await job('authorizeSecurityGroupIngress', { securitygroupid: webGroup.id, protocol: 'tcp', startport: 81, endport: 81, cidrlist: '203.0.113.0/24' }, alice);
  assert.equal(real.dryrun, undefined);
  assert.notEqual(await storeSnapshot(), before);
});

// ---------------------------------------------------------------- settings

test('listConfigurations / updateConfiguration / resetConfiguration: CloudStack shapes and errors, root admin only, evented, readable by other layers', async () => {
  const all = await ok('listConfigurations');
  assert.deepEqual(all.configuration.map((c: any) => [c.name, c.value, c.defaultvalue]), [
    ['api.throttling.cachesize', '50000', '50000'], ['api.throttling.enabled', 'false', 'false'],
    ['api.throttling.interval', '1', '1'], ['api.throttling.max', '25', '25'],
    ['event.purge.delay', '15', '15'], ['job.expire.minutes', '1440', '1440'],
    ['security.group.drop.log.burst', '50', '50'], ['security.group.drop.log.rate', '10', '10'],
    ['security.group.max.per.account', '1000', '1000'], ['security.group.max.rules', '1000', '1000'], ['security.group.max.rules.per.account', '20000', '20000'],
    ['security.group.max.tags.per.account', '10000', '10000'], ['security.group.revoke.cut.connections', 'false', 'false'],
  ]);
  const cut = all.configuration.find((c: any) => c.name === 'security.group.revoke.cut.connections');
  assert.deepEqual([cut.category, cut.type, cut.isdynamic], ['Network', 'Boolean', true]);
  assert.equal((await ok('listConfigurations', { name: 'drop.log' })).count, 2, 'name matches a part, as CloudStack');
  assert.equal((await ok('listConfigurations', { keyword: 'revoke' })).count, 1);
  assert.equal((await ok('listConfigurations', { category: 'network' })).count, 7);
  assert.deepEqual(await ok('listConfigurations', { zoneid: (await ok('listZones')).zone[0].id }), {}, 'no zone-scoped settings');
  await fails('listConfigurations', {}, 432, /does not exist/, alice);
  await fails('updateConfiguration', { name: 'security.group.drop.log.rate', value: '1' }, 432, /does not exist/, alice);

  const evBefore = (await ok('listEvents', { type: 'CONFIGURATION.VALUE.EDIT' })).count ?? 0;
  const up = (await ok('updateConfiguration', { name: 'security.group.revoke.cut.connections', value: ' true ' })).configuration;
  assert.deepEqual([up.name, up.value, up.defaultvalue], ['security.group.revoke.cut.connections', 'true', 'false']);
  assert.deepEqual(await readSettings(db), { revokeCutConnections: true, dropLogRate: 10, dropLogBurst: 50 });
  await ok('updateConfiguration', { name: 'SECURITY.GROUP.DROP.LOG.RATE', value: '25' });
  assert.equal((await readSettings(db)).dropLogRate, 25);
  const ev = (await ok('listEvents', { type: 'CONFIGURATION.VALUE.EDIT' })).event;
  assert.equal(ev.length, evBefore + 2);
  assert.match(ev[0].description, /Name: security\.group\.drop\.log\.rate New Value: 25/);
  // without a value: shows the current one, changes nothing
  assert.equal((await ok('updateConfiguration', { name: 'security.group.drop.log.rate' })).configuration.value, '25');
  // errors in CloudStack's words; nothing stored
  await fails('updateConfiguration', { name: 'security.group.revoke.cut.connections', value: 'yes' }, 431, /^Please enter either 'true' or 'false'\.$/);
  await fails('updateConfiguration', { name: 'security.group.revoke.cut.connections', value: 'TRUE' }, 431, /true' or 'false/);
  await fails('updateConfiguration', { name: 'security.group.drop.log.rate', value: 'ten' }, 431, /Please enter a valid integer value for parameter security\.group\.drop\.log\.rate/);
  await fails('updateConfiguration', { name: 'security.group.drop.log.rate', value: '10001' }, 431, /range: \[0-10000\]/);
  await fails('updateConfiguration', { name: 'security.group.drop.log.burst', value: '0' }, 431, /range: \[1-100000\]/);
  await fails('updateConfiguration', { name: 'security.group.drop.log.burst', value: '' }, 431, /valid integer/);
  await fails('updateConfiguration', { name: 'no.such.setting', value: '1' }, 431, /^Config parameter with name no\.such\.setting doesn't exist$/);
  await fails('updateConfiguration', { name: ' ', value: '1' }, 431, /Empty configuration name provided/);
  await fails('updateConfiguration', { name: 'security.group.drop.log.rate', value: '5', zoneid: (await ok('listZones')).zone[0].id }, 431, /Invalid scope id provided for the parameter security\.group\.drop\.log\.rate/);
  await fails('updateConfiguration', { value: '5' }, 431, /missing parameter name/);
  assert.deepEqual(await readSettings(db), { revokeCutConnections: true, dropLogRate: 25, dropLogBurst: 50 });
  // reset; setting the default again stores nothing
  assert.equal((await ok('resetConfiguration', { name: 'security.group.revoke.cut.connections' })).configuration.value, 'false');
  await ok('updateConfiguration', { name: 'security.group.drop.log.rate', value: '10' });
  assert.deepEqual(await readSettings(db), { revokeCutConnections: false, dropLogRate: 10, dropLogBurst: 50 });
  assert.deepEqual(await db.selectFrom('configuration').selectAll().execute(), []);
  // through the real CloudStack client
  const cs = await cloudstack(s, 'updateConfiguration', 'name=security.group.drop.log.burst', 'value=80');
  assert.equal(cs.code, 0, cs.stderr);
  assert.equal(cs.out.configuration.value, '80');
  const listed = await cloudstack(s, 'listConfigurations', 'name=security.group.drop.log.burst');
  assert.equal(listed.out.configuration[0].value, '80');
  await ok('resetConfiguration', { name: 'security.group.drop.log.burst' });
});
