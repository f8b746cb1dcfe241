// Conntrack on the agent channel, against the REAL server process with scripted agents (the `ws`
// client speaking the protocol by hand, so each can answer well, late, wrongly or not at all):
//   - the cut setting reaches agents before their first snapshot, and again on every change;
//   - revoke dry runs ask the agents of the affected hosts, evaluate their answers against the
//     remaining rules, and are bounded: a host without an agent, an agent that does not answer in time
//     or answers another question, or an answer cut at the per-VM limit, make the result "partial";
//     VMs nobody asked about are ignored; a host that let a question time out is not asked for a while.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startServer, type TestServer } from '../helpers/server.js';
import { PROTOCOL_VERSION } from '../../src/protocol/index.js';
import { addHost, createCloud, deploy, job, ok, waitFor, type Cloud } from './helpers.js';

type Handler = (m: any, agent: ScriptedAgent) => void;

class ScriptedAgent {
  readonly ws: WebSocket;
  readonly messages: any[] = [];
  onList: Handler = () => {};
  constructor(port: number, token: string) {
    this.ws = new WebSocket(`ws://127.0.0.1:${port}/agent`);
    this.ws.on('open', () => this.ws.send(JSON.stringify({ type: 'hello', version: PROTOCOL_VERSION, token, hostname: 'scripted', revision: null, dataplane: 'null' })));
    this.ws.on('message', (d) => {
      const m = JSON.parse(String(d));
      this.messages.push(m);
      if (m.type === 'snapshot') this.send({ type: 'ack', revision: m.state.revision, vms: Object.fromEntries(m.state.vms.map((v: any) => [v.vmId, { ok: true }])) });
      if (m.type === 'delta') this.send({ type: 'ack', revision: m.revision, vms: Object.fromEntries(m.upsertVms.map((v: any) => [v.vmId, { ok: true }])) });
      if (m.type === 'listConnections') this.onList(m, this);
    });
  }
  send(m: unknown): void { if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(m)); }
  close(): void { this.ws.terminate(); }
}

let srv: TestServer;
let cloud: Cloud;
let web = '';
let solo = '';
let silentToken = '';
const agents: ScriptedAgent[] = [];
const vm: Record<string, { id: string; ip: string }> = {};

before(async () => {
  srv = await startServer();
  cloud = await createCloud(srv);
  const group = async (name: string) => ok(await srv.call('createSecurityGroup', { name }), 'createSecurityGroup').createsecuritygroupresponse.securitygroup.id as string;
  web = await group('web');
  solo = await group('solo');
  for (const g of [web, solo]) {
    await job(srv, 'authorizeSecurityGroupIngress', { securitygroupid: g, protocol: 'tcp', startport: 22, endport: 22, cidrlist: '192.0.2.0/24' });
    await job(srv, 'authorizeSecurityGroupIngress', { securitygroupid: g, protocol: 'tcp', startport: 80, endport: 80, cidrlist: '0.0.0.0/0' });
  }
  const answers = await addHost(srv, 'cc-answers');
  const silent = await addHost(srv, 'cc-silent');
  const none = await addHost(srv, 'cc-none');
  const place = async (name: string, hostid: string, ip: string, groups: string) => {
    const v = await deploy(srv, cloud, { name, hostid, ipaddress: ip, securitygroupids: groups });
    vm[name] = { id: v.id, ip };
  };
  await place('a', answers.id, '10.1.0.11', web);
  await place('a2', answers.id, '10.1.0.14', solo);
  await place('s', silent.id, '10.1.0.12', web);
  await place('n', none.id, '10.1.0.13', web);
  silentToken = silent.token;
  for (const h of [answers, silent]) agents.push(new ScriptedAgent(srv.port, h.token));
  await waitFor('both scripted agents got their snapshot', () => agents.every((a) => a.messages.some((m) => m.type === 'snapshot')), 30_000);
});

after(async () => {
  for (const a of agents) a.close();
  await srv?.stop();
});

const ruleId = async (group: string, port: number) => {
  const sg = ok(await srv.call('listSecurityGroups', { id: group }), 'listSecurityGroups').listsecuritygroupsresponse.securitygroup[0];
  return sg.ingressrule.find((r: any) => r.startport === port).ruleid as string;
};
const entry = (src: string, dst: string, dport: number) => ({ zone: 7, protocol: 'tcp', src, dst, sport: 40000, dport });

test('the cut setting: nothing while off (agents start sessions with it off); on reaches every session, and new ones before their first snapshot', async () => {
  const settings = (a: ScriptedAgent) => a.messages.filter((m) => m.type === 'connectionSettings').map((m) => m.cutOnRevoke);
  for (const a of agents) assert.deepEqual(settings(a), [], 'off by default: nothing sent');
  ok(await srv.call('updateConfiguration', { name: 'security.group.revoke.cut.connections', value: 'true' }), 'updateConfiguration');
  await waitFor('agents told: on', () => agents.every((a) => settings(a).at(-1) === true));
  // a session that starts while it is on gets it between the welcome and the snapshot
  agents[1]!.close();
  const again = new ScriptedAgent(srv.port, silentToken);
  agents[1] = again;
  await waitFor('the new session got its snapshot', () => again.messages.some((m) => m.type === 'snapshot'), 30_000);
  const types = again.messages.map((m) => m.type);
  const cs = types.indexOf('connectionSettings');
  assert.ok(cs > types.indexOf('welcome') && cs < types.indexOf('snapshot'), `order: ${types.join(',')}`);
  assert.equal(again.messages[cs].cutOnRevoke, true);
  ok(await srv.call('resetConfiguration', { name: 'security.group.revoke.cut.connections' }), 'resetConfiguration');
  await waitFor('agents told: off', () => agents.every((a) => settings(a).at(-1) === false));
  // a change to another setting sends nothing
  const n = settings(agents[0]!).length;
  ok(await srv.call('updateConfiguration', { name: 'event.purge.delay', value: '20' }), 'updateConfiguration');
  await job(srv, 'authorizeSecurityGroupIngress', { securitygroupid: solo, protocol: 'udp', startport: 53, endport: 53, cidrlist: '0.0.0.0/0' });
  await waitFor('the later delta arrived', () => agents[0]!.messages.filter((m) => m.type === 'delta').length > 0);
  assert.equal(settings(agents[0]!).length, n);
});

test('revoke dry run: answers evaluated against the remaining rules; silent, wrong and absent agents make it partial', async () => {
  const [answering, silent] = agents as [ScriptedAgent, ScriptedAgent];
  let asked: any = null;
  answering.onList = (m, a) => {
    asked = m;
    a.send({
      type: 'connections', id: m.id, complete: true, vms: [
        { vmId: vm.a!.id, truncated: false, entries: [entry('192.0.2.5', vm.a!.ip, 22), entry('203.0.113.7', vm.a!.ip, 80), entry(vm.a!.ip, '198.51.100.9', 443)] },
        // a VM nobody asked about: ignored
        { vmId: '00000000-0000-4000-8000-000000000000', truncated: false, entries: [entry('192.0.2.6', '10.9.9.9', 22)] },
      ],
    });
  };
  // answers another question (ignored), never this one
  silent.onList = (m, a) => a.send({ type: 'connections', id: m.id + 1000, complete: true, vms: [{ vmId: vm.s!.id, truncated: false, entries: [entry('192.0.2.7', vm.s!.ip, 22)] }] });
  const dry = await job(srv, 'revokeSecurityGroupIngress', { id: await ruleId(web, 22), dryrun: true });
  const tc = dry.dryrun.trackedconnections;
  assert.equal(tc.status, 'partial', JSON.stringify(tc));
  assert.deepEqual([tc.hostsasked, tc.hostsanswered, tc.count], [3, 1, 1]);
  assert.deepEqual(tc.connection.map((c: any) => [c.virtualmachineid, c.srcaddress, c.dstport]), [[vm.a!.id, '192.0.2.5', 22]]);
  assert.ok(asked.timeoutMs > 0 && asked.timeoutMs < 10_000 && asked.limitPerVm > 0, `bounded: ${JSON.stringify(asked)}`);
  assert.deepEqual(asked.vms, [vm.a!.id], 'each host is asked about the affected VMs placed on it');
  assert.equal(silent.messages.filter((m) => m.type === 'listConnections').length, 1, 'the silent host was asked too');
  const r = ok(await srv.call('listSecurityGroups', { id: web }), 'listSecurityGroups').listsecuritygroupsresponse.securitygroup[0];
  assert.equal(r.ingressrule.length, 2, 'nothing revoked');
  // The silent host let its question time out: for a while it is not asked again (so it cannot hold an
  // inspection slot for every dry run), while the answering host still is.
  const answeredBefore = answering.messages.filter((m) => m.type === 'listConnections').length;
  const again = (await job(srv, 'revokeSecurityGroupIngress', { id: await ruleId(web, 22), dryrun: true })).dryrun.trackedconnections;
  assert.deepEqual([again.status, again.hostsasked, again.hostsanswered, again.count], ['partial', 3, 1, 1], JSON.stringify(again));
  assert.equal(silent.messages.filter((m) => m.type === 'listConnections').length, 1, 'the silent host was not asked again');
  assert.equal(answering.messages.filter((m) => m.type === 'listConnections').length, answeredBefore + 1, 'the answering host was');
});

test('revoke dry run: complete when every affected host answers in full, partial when an answer is truncated or incomplete', async () => {
  const [answering] = agents as [ScriptedAgent];
  let truncated = false;
  let complete = true;
  answering.onList = (m, a) => a.send({
    type: 'connections', id: m.id, complete, vms: [{ vmId: vm.a2!.id, truncated, entries: [entry('192.0.2.5', vm.a2!.ip, 22)] }],
  });
  const run = async () => (await job(srv, 'revokeSecurityGroupIngress', { id: await ruleId(solo, 22), dryrun: true })).dryrun.trackedconnections;
  let tc = await run();
  assert.deepEqual([tc.status, tc.hostsasked, tc.hostsanswered, tc.count], ['complete', 1, 1, 1], JSON.stringify(tc));
  truncated = true;
  tc = await run();
  assert.deepEqual([tc.status, tc.count], ['partial', 1], 'the per-VM limit was reached');
  truncated = false; complete = false;
  tc = await run();
  assert.deepEqual([tc.status, tc.count], ['partial', 1], 'the listing did not finish in time');
  // An agent sending more entries than asked for (and saying it is complete): cut at the per-VM limit, partial.
  complete = true;
  let limit = 0;
  answering.onList = (m, a) => {
    limit = m.limitPerVm;
    a.send({ type: 'connections', id: m.id, complete: true, vms: [{ vmId: vm.a2!.id, truncated: false, entries: Array.from({ length: m.limitPerVm + 5 }, (_, i) => entry(`192.0.${2 + (i >> 8)}.${i & 255}`, vm.a2!.ip, 22)) }] });
  };
  tc = await run();
  assert.deepEqual([tc.status, tc.count], ['partial', limit], `held to the limit it was asked for (${limit})`);
  answering.onList = (m, a) => a.send({
    type: 'connections', id: m.id, complete, vms: [{ vmId: vm.a2!.id, truncated, entries: [entry('192.0.2.5', vm.a2!.ip, 22)] }],
  });
  // a revoke of the rule that does not cover the connection reports none
  complete = true;
  const http = (await job(srv, 'revokeSecurityGroupIngress', { id: await ruleId(solo, 80), dryrun: true })).dryrun.trackedconnections;
  assert.deepEqual([http.status, http.count], ['complete', 0], JSON.stringify(http));
});

test('an answer that breaks the protocol closes that agent connection only; the dry run still ends', async () => {
  const [answering] = agents as [ScriptedAgent];
  answering.onList = (m, a) => a.send({ type: 'connections', id: m.id, complete: true, vms: [{ vmId: vm.a2!.id, truncated: false, entries: [{ zone: 7, protocol: 'tcp', src: 'not an address', dst: vm.a2!.ip }] }] });
  const closed = new Promise<number>((r) => answering.ws.once('close', (code) => r(code)));
  const tc = (await job(srv, 'revokeSecurityGroupIngress', { id: await ruleId(solo, 22), dryrun: true })).dryrun.trackedconnections;
  assert.equal(tc.status, 'partial');
  assert.equal(tc.hostsanswered, 0);
  assert.equal(await closed, 1008, 'closed as a policy violation');
  assert.equal(agents[1]!.ws.readyState, WebSocket.OPEN, 'the other agent stays connected');
});
