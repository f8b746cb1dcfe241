// Switching a live host between dataplane backends (issue 10): the agent restarted with another
// `--dataplane` puts the new backend's rules in place before it removes the old one's, so there is no
// moment without enforcement and no moment where allowed traffic stops. Tested with traffic during the
// switch both ways: a ping whose replies pass only as replies of a tracked flow (so the conntrack zones
// of both backends must agree), and a blocked client probing all along. Needs root.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, type TestServer } from '../helpers/server.js';
import { createLab, spawnIn, tcpConnect, listenTcp, type Lab, type Host, type Vm, type Listener } from '../../src/lab/index.js';
import { AgentProcess, addHost, hostRow, job, ok, vmRow, waitFor } from './helpers.js';

let lab: Lab;
let srv: TestServer;
let host: Host;
let token = '';
let hostId = '';
let dir = '';
let agent: AgentProcess | null = null;
const vms: Record<string, { lab: Vm; id: string }> = {};
const listeners: Listener[] = [];

const args = (backend: string) => ['--server', `http://127.0.0.1:${srv.port}`, '--token', token, '--state-dir', dir, '--netns', host.netns,
  '--reconcile-interval', '1s', '--backoff-max', '1s', '--hostname', 'switch-h1', '--dataplane', backend];

/** Which backends hold Palisade rules in the host's kernel now. */
async function present(): Promise<string[]> {
  const ipt = (await host.exec('iptables-save', [], { allowFail: true })).stdout;
  const nft = await host.exec('nft', ['list', 'table', 'inet', 'palisade'], { allowFail: true });
  return [...(/pal:/.test(ipt) ? ['iptables'] : []), ...(nft.code === 0 ? ['nftables'] : [])];
}

before(async () => {
  lab = await createLab();
  srv = await startServer();
  host = await lab.addHost('h1');
  const h = await addHost(srv, `switch-${lab.prefix}`);
  token = h.token;
  hostId = h.id;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-switch-'));
  const domainId = ok(await srv.call('listDomains'), 'listDomains').listdomainsresponse.domain[0].id;
  const net = ok(await srv.call('createNetwork', { name: 'guest', gateway: '10.1.0.1', netmask: '255.255.0.0', startip: '10.1.0.10', endip: '10.1.0.250' }), 'createNetwork').createnetworkresponse.network.id;
  const sg = ok(await srv.call('createSecurityGroup', { name: 'srv', account: 'admin', domainid: domainId }), 'createSecurityGroup').createsecuritygroupresponse.securitygroup.id;
  // b lets a ping it and reach tcp/80; a allows nothing in (so b's replies pass only as replies)
  await job(srv, 'authorizeSecurityGroupIngress', { securitygroupid: sg, protocol: 'ICMP', icmptype: -1, icmpcode: -1, cidrlist: '10.1.0.11/32' });
  await job(srv, 'authorizeSecurityGroupIngress', { securitygroupid: sg, protocol: 'TCP', startport: 80, endport: 80, cidrlist: '10.1.0.11/32' });
  for (const [name, ip, mac, group] of [['a', '10.1.0.11', '52:54:00:bb:00:11', null], ['b', '10.1.0.12', '52:54:00:bb:00:12', sg], ['c', '10.1.0.13', '52:54:00:bb:00:13', null]] as const) {
    const v = (await job(srv, 'deployVirtualMachine', {
      name, account: 'admin', domainid: domainId, networkids: net, ipaddress: ip, macaddress: mac, hostid: hostId, ...(group ? { securitygroupids: group } : {}),
    })).virtualmachine;
    vms[name] = { lab: await lab.addVm({ host, name, nics: [{ mac, ipv4: `${ip}/16` }] }), id: v.id };
  }
  listeners.push(await listenTcp(vms.b.lab, 80));
  agent = new AgentProcess(args('iptables'));
  agent.start();
  await waitFor('host Up and synced on iptables', async () => {
    const r = await hostRow(srv, hostId);
    return r.state === 'Up' && r.securitygroupsynced && (await vmRow(srv, vms.b.id)).securitygroupsyncstate === 'Synced';
  }, 60_000, 200);
});

after(async () => {
  for (const l of listeners) await l.close().catch(() => {});
  await agent?.kill('SIGTERM');
  await srv?.stop();
  await lab?.destroy();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

async function switchTo(backend: 'nftables' | 'iptables', from: 'nftables' | 'iptables'): Promise<void> {
  assert.deepEqual(await present(), [from]);
  // a→b ping (b's replies are allowed only as replies of the tracked flow), every 50 ms, all along
  const pinger = spawnIn(vms.a.lab.netns, 'ping', ['-n', '-i', '0.05', '-W', '1', '10.1.0.12']);
  await waitFor('ping running', () => /bytes from/.test(pinger.output()), 10_000, 50);
  // c probes b:80 (not allowed) all along
  let stop = false;
  const leaks: string[] = [];
  let probes = 0;
  const prober = (async () => {
    while (!stop) {
      const r = await tcpConnect(vms.c.lab, '10.1.0.12', 80, { timeoutMs: 300 });
      probes++;
      if (r.ok || r.reason === 'refused') leaks.push(`${new Date().toISOString()} c→b:80 ${r.reason}`);
    }
  })();
  const mark = agent!.out.length;
  await agent!.kill('SIGTERM');
  agent = new AgentProcess(args(backend));
  agent.start();
  await waitFor(`${backend} in place and ${from} removed`, async () => /removed what \w+ had installed/.test(agent!.out) && (await present()).join() === backend, 30_000, 100);
  await waitFor('host Up on the new backend', async () => (await hostRow(srv, hostId)).state === 'Up', 30_000, 200);
  // keep going a little after the old rules are gone
  await new Promise((r) => setTimeout(r, 1500));
  stop = true;
  await prober;
  await pinger.stop(500);
  const out = pinger.output();
  const seqs = [...out.matchAll(/icmp_seq=(\d+)/g)].map((m) => Number(m[1]));
  const first = Math.min(...seqs);
  const last = Math.max(...seqs);
  const missing = [];
  for (let s = first; s <= last; s++) if (!seqs.includes(s)) missing.push(s);
  assert.deepEqual(leaks, [], 'a blocked client got through during the switch');
  assert.ok(probes >= 3, `c probed ${probes} times`);
  assert.deepEqual(missing, [], `a→b echo replies lost during the switch (seq ${first}…${last})\n--- agent ---\n${agent!.out.slice(mark)}`);
  assert.deepEqual(await present(), [backend]);
  // and the new backend enforces on its own: a reaches b:80, c does not
  const [ab, cb] = await Promise.all([tcpConnect(vms.a.lab, '10.1.0.12', 80, { timeoutMs: 3000 }), tcpConnect(vms.c.lab, '10.1.0.12', 80, { timeoutMs: 800 })]);
  assert.deepEqual([ab.ok, cb.ok], [true, false]);
}

test('iptables → nftables while traffic flows: no lost reply, no blocked packet through', async () => {
  await switchTo('nftables', 'iptables');
});

test('nftables → iptables while traffic flows: no lost reply, no blocked packet through', async () => {
  await switchTo('iptables', 'nftables');
});
