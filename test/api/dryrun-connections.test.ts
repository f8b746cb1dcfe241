// The revoke dry run's `trackedconnections` through the ConnectionInspector seam (the control plane
// implements it in phase 2 of issue 11). The API server is built in-process on a real SQLite store; the
// inspector is a stand-in for the agents that answers with fixed conntrack entries, so the test
// checks what the API does with answers: evaluation against the remaining rules (the compiler's),
// per-host completeness, truncation, and the time bound it passes on.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import type { FastifyInstance } from 'fastify';
import { openStore, type Db } from '../../src/store/db.js';
import { bootstrap } from '../../src/api/bootstrap.js';
import { buildServer, dispatcherOf } from '../../src/api/server.js';
import { signParams, formatExpires } from '../../src/api/signing.js';
import type { ConnectionInspector, HostConnections, TrackedConnection } from '../../src/model/telemetry.js';

let dir: string;
let db: Db;
let app: FastifyInstance;
let keys: { apikey: string; secretkey: string };
let answer: (req: Parameters<ConnectionInspector['trackedConnections']>[0]) => HostConnections[] = () => [];
const asked: Parameters<ConnectionInspector['trackedConnections']>[0][] = [];

async function call(command: string, params: Record<string, string | number | boolean> = {}, who: { apikey: string; secretkey: string } = keys): Promise<any> {
  const p: Record<string, string> = { command, response: 'json', apiKey: who.apikey, signatureVersion: '3', expires: formatExpires(new Date(Date.now() + 60_000)) };
  for (const [k, v] of Object.entries(params)) p[k] = String(v);
  p.signature = signParams(p, who.secretkey);
  const r = await app.inject({ method: 'POST', url: '/client/api', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: new URLSearchParams(p).toString() });
  const body = JSON.parse(r.body);
  assert.equal(r.statusCode, 200, JSON.stringify(body));
  const inner = body[`${command.toLowerCase()}response`];
  if (!inner.jobid || command === 'queryAsyncJobResult') return inner;
  await dispatcherOf(app).idle();
  const j = await call('queryAsyncJobResult', { jobid: inner.jobid }, who);
  assert.equal(j.jobstatus, 1, JSON.stringify(j));
  return j.jobresult;
}

let web: any, vm1: any, vm2: any, hosts: any[], net: any;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-dryrun-'));
  db = await openStore({ kind: 'sqlite', file: path.join(dir, 'p.db') });
  keys = await bootstrap(db);
  const inspector: ConnectionInspector = { trackedConnections: async (req) => { asked.push(req); return answer(req); } };
  app = await buildServer({ db, sink: { publish() {} }, log: pino({ level: 'silent' }), connections: inspector });
  const zone = (await call('listZones')).zone[0].id;
  net = (await call('createNetwork', { name: 'n', zoneid: zone, gateway: '10.0.0.1', netmask: '255.255.255.0', startip: '10.0.0.10', endip: '10.0.0.99' })).network;
  hosts = [(await call('addHost', { name: 'h1' })).host[0], (await call('addHost', { name: 'h2' })).host[0]];
  web = (await call('createSecurityGroup', { name: 'web' })).securitygroup;
  await call('authorizeSecurityGroupIngress', { securitygroupid: web.id, protocol: 'tcp', startport: 22, endport: 22, cidrlist: '192.0.2.0/24' });
  await call('authorizeSecurityGroupIngress', { securitygroupid: web.id, protocol: 'tcp', startport: 80, endport: 80, cidrlist: '0.0.0.0/0' });
  vm1 = (await call('deployVirtualMachine', { name: 'vm1', networkids: net.id, ipaddress: '10.0.0.11', hostid: hosts[0].id, securitygroupids: web.id })).virtualmachine;
  vm2 = (await call('deployVirtualMachine', { name: 'vm2', networkids: net.id, ipaddress: '10.0.0.12', hostid: hosts[1].id, securitygroupids: web.id })).virtualmachine;
});
after(async () => { await app?.close(); await db?.destroy(); fs.rmSync(dir, { recursive: true, force: true }); });

const conn = (vm: any, src: string, dport: number, dst = vm.nic[0].ipaddress): TrackedConnection => ({ vmId: vm.id, family: 4, protocol: 'tcp', src, dst, sport: 50000, dport });

test('revoke dry run: counts the tracked connections no remaining rule allows, on every affected host', async () => {
  const ssh = (await call('listSecurityGroups', { id: web.id })).securitygroup[0].ingressrule.find((r: any) => r.startport === 22);
  answer = (req) => req.hostIds.map((hostId, i) => ({
    hostId, answered: true, truncated: false,
    connections: i === 0
      ? [conn(vm1, '192.0.2.5', 22), conn(vm1, '203.0.113.7', 80), conn(vm1, '10.0.0.11', 443, '198.51.100.1')]
      : [conn(vm2, '192.0.2.6', 22), conn(vm1, '192.0.2.9', 22)],
  }));
  const r = await call('revokeSecurityGroupIngress', { id: ssh.ruleid, dryrun: true });
  const t = r.dryrun.trackedconnections;
  assert.equal(t.status, 'complete');
  assert.deepEqual([t.count, t.hostsasked, t.hostsanswered], [3, 2, 2]);
  // ssh from 192.0.2.0/24 to either VM would be cut (twice for vm1: one reported by each host); http and egress stay
  assert.deepEqual(t.connection.map((c: any) => `${c.virtualmachineid === vm1.id ? 'vm1' : 'vm2'} ${c.srcaddress}:${c.dstport}`).sort(), ['vm1 192.0.2.5:22', 'vm1 192.0.2.9:22', 'vm2 192.0.2.6:22']);
  const q = asked.at(-1)!;
  assert.deepEqual(q.vmIds.sort(), [vm1.id, vm2.id].sort());
  assert.ok(q.timeoutMs > 0 && q.timeoutMs <= 10_000 && q.limitPerVm > 0, 'bounded in time and size');
  // nothing was revoked
  assert.equal((await call('listSecurityGroups', { id: web.id })).securitygroup[0].ingressrule.length, 2);
});

test('revoke dry run: a host that does not answer, or an answer cut at the limit, makes it partial', async () => {
  const http = (await call('listSecurityGroups', { id: web.id })).securitygroup[0].ingressrule.find((r: any) => r.startport === 80);
  answer = (req) => [
    { hostId: req.hostIds[0]!, answered: true, truncated: false, connections: [conn(vm1, '203.0.113.7', 80), conn(vm1, '192.0.2.5', 22)] },
    { hostId: req.hostIds[1]!, answered: false, truncated: false, connections: [] },
  ];
  let t = (await call('revokeSecurityGroupIngress', { id: http.ruleid, dryrun: true })).dryrun.trackedconnections;
  assert.deepEqual([t.status, t.count, t.hostsanswered], ['partial', 1, 1]);
  assert.equal(t.connection[0].srcaddress, '203.0.113.7');
  answer = (req) => req.hostIds.map((hostId) => ({ hostId, answered: true, truncated: true, connections: [] }));
  t = (await call('revokeSecurityGroupIngress', { id: http.ruleid, dryrun: true })).dryrun.trackedconnections;
  assert.deepEqual([t.status, t.count], ['partial', 0]);
});

test('revoke dry run: a connection from an address of another account\'s referenced group says the same whether that address is a member or not', async () => {
  const domainid = (await call('listDomains', {})).domain[0].id;
  const user = async (name: string) => {
    const a = (await call('createAccount', { username: name, password: `pw-${name}`, email: `${name}@example.org`, firstname: name, lastname: 'T', domainid, accounttype: 0 })).account;
    return { name, ...(await call('registerUserKeys', { id: a.user[0].id })).userkeys as { apikey: string; secretkey: string } };
  };
  const alice = await user('alice');
  await user('bob');
  const mine = (await call('createSecurityGroup', { name: 'mine' }, alice)).securitygroup;
  await call('createSecurityGroup', { name: 'peers' }, alice);
  const rule = async (p: Record<string, string | number>) => (await call('authorizeSecurityGroupIngress', { securitygroupid: mine.id, protocol: 'tcp', startport: 22, endport: 22, ...p }, alice)).securitygroup.ingressrule[0];
  const open = await rule({ cidrlist: '0.0.0.0/0' });
  await rule({ 'usersecuritygrouplist[0].account': 'bob', 'usersecuritygrouplist[0].group': 'default' });
  await rule({ 'usersecuritygrouplist[0].account': 'alice', 'usersecuritygrouplist[0].group': 'peers' });
  const deploy = (name: string, ip: string, owner: string, group: string) => call('deployVirtualMachine', { name, networkids: net.id, ipaddress: ip, hostid: hosts[0].id, account: owner, domainid, securitygroupnames: group });
  const target = (await deploy('a-target', '10.0.0.40', 'alice', 'mine')).virtualmachine;
  await deploy('b-member', '10.0.0.41', 'bob', 'default');
  await deploy('a-peer', '10.0.0.42', 'alice', 'peers');
  const nobody = '10.0.0.49';
  answer = (req) => req.hostIds.map((hostId) => ({
    hostId, answered: true, truncated: false,
    connections: [conn(target, '10.0.0.41', 22), conn(target, nobody, 22), conn(target, '10.0.0.42', 22)],
  }));
  const listed = async (who: { apikey: string; secretkey: string }) => {
    const t = (await call('revokeSecurityGroupIngress', { id: open.ruleid, dryrun: true }, who)).dryrun.trackedconnections;
    return Object.fromEntries(t.connection.map((c: any) => [c.srcaddress, c.dependsonmembership ? 'depends' : 'cut']));
  };
  // alice: bob's member and the stranger look alike (both might be cut); her own group's member is
  // known to stay, so it is not listed
  assert.deepEqual(await listed(alice), { '10.0.0.41': 'depends', [nobody]: 'depends' });
  // the root admin may see bob's VMs: the real answer
  assert.deepEqual(await listed(keys), { [nobody]: 'cut' });
});
