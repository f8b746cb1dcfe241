// explainSecurityGroupTraffic against real packets: the enforcement matrix's cases (default group,
// ingress rules, one egress rule, same-host VM→VM, IPv6, baseline and anti-spoofing) in the lab, with
// the real server, real agents programming real netfilter (iptables backend), and for every probe the
// verdict explain gives (the sender's egress and the receiver's ingress, when they are VMs) compared
// with what the probe saw. Allowed and blocked cases alike. Needs root.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, type TestServer } from '../helpers/server.js';
import { createLab, tcpConnect, udpRequest, ping, dnsQuery, listenTcp, listenUdpEcho, type Lab, type Host, type Vm, type Listener, type ProbeResult } from '../../src/lab/index.js';
import { AgentProcess, addHost, hostRow, job, ok, vmRow, waitFor } from './helpers.js';

const O4 = '198.51.100.1', O6 = '2001:db8:ff::1';

let lab: Lab;
let srv: TestServer;
const dirs: string[] = [];
const listeners: Listener[] = [];
const agents: AgentProcess[] = [];
const hostIds: string[] = [];
const vms: Record<string, { lab: Vm; id: string; v4: string; v6: string }> = {};

type End = { vm: string } | { outside: true };
interface Case {
  what: string;
  from: End;
  to: End;
  family: 4 | 6;
  proto: 'tcp' | 'udp' | 'icmp';
  port?: number;
  sport?: number;
  dns?: boolean;
}

const addr = (e: End, f: 4 | 6) => ('outside' in e ? (f === 4 ? O4 : O6) : f === 4 ? vms[e.vm]!.v4 : vms[e.vm]!.v6);

before(async () => {
  lab = await createLab();
  srv = await startServer();
  const zone = ok(await srv.call('listZones'), 'listZones').listzonesresponse.zone[0].id;
  const net = ok(await srv.call('createNetwork', {
    name: 'seg0', zoneid: zone, gateway: O4, netmask: '255.255.255.0', startip: '198.51.100.10', endip: '198.51.100.99', ip6gateway: O6, ip6cidr: '2001:db8:ff::/64',
  }), 'createNetwork').createnetworkresponse.network.id;
  const group = async (name: string) => ok(await srv.call('createSecurityGroup', { name }), 'createSecurityGroup').createsecuritygroupresponse.securitygroup.id;
  const rule = (dir: 'Ingress' | 'Egress', id: string, p: Record<string, string | number>) => job(srv, `authorizeSecurityGroup${dir}`, { securitygroupid: id, ...p });
  const ip = (n: number) => ({ v4: `198.51.100.${n}`, v6: `2001:db8:ff::${n.toString(16)}` });
  const plan: [string, string, number, string | null][] = [['a', 'h1', 0x10, null], ['b1', 'h1', 0x11, null], ['b2', 'h1', 0x12, 'm2'], ['c3', 'h1', 0x13, 'm3'],
    ['s6', 'h1', 0x16, 'm6s'], ['d6', 'h1', 0x17, 'm6d'], ['e8', 'h1', 0x18, 'm8'], ['r', 'h2', 0x20, null]];
  const groups: Record<string, string> = {};
  for (const g of ['m2', 'm3', 'm6s', 'm6d', 'm8']) groups[g] = await group(g);
  await rule('Ingress', groups.m2!, { protocol: 'tcp', startport: 22, endport: 22, cidrlist: `${ip(0x10).v4}/32` });
  await rule('Ingress', groups.m2!, { protocol: 'tcp', startport: 80, endport: 443, cidrlist: '0.0.0.0/0' });
  await rule('Ingress', groups.m2!, { protocol: 'udp', startport: 5000, endport: 5000, cidrlist: '0.0.0.0/0' });
  await rule('Ingress', groups.m2!, { protocol: 'icmp', icmptype: 8, icmpcode: 0, cidrlist: `${O4}/32` });
  await rule('Ingress', groups.m2!, { protocol: 'all', cidrlist: `${ip(0x20).v4}/32` });
  await rule('Ingress', groups.m3!, { protocol: 'tcp', startport: 22, endport: 22, cidrlist: '0.0.0.0/0' });
  await rule('Egress', groups.m3!, { protocol: 'tcp', startport: 80, endport: 80, cidrlist: `${O4}/32` });
  await rule('Egress', groups.m6s!, { protocol: 'tcp', startport: 80, endport: 81, cidrlist: `${ip(0x17).v4}/32` });
  await rule('Ingress', groups.m6d!, { protocol: 'tcp', startport: 80, endport: 80, cidrlist: `${ip(0x16).v4}/32` });
  await rule('Ingress', groups.m6d!, { protocol: 'tcp', startport: 8080, endport: 8080, cidrlist: `${ip(0x16).v4}/32` });
  await rule('Ingress', groups.m8!, { protocol: 'icmp', icmptype: 128, icmpcode: 0, cidrlist: '::/0' });
  await rule('Ingress', groups.m8!, { protocol: 'tcp', startport: 22, endport: 22, cidrlist: '2001:db8:ff::/64' });
  await rule('Ingress', groups.m8!, { protocol: 'tcp', startport: 23, endport: 23, cidrlist: '2001:db8:aa::/64' });

  const labHosts: Record<string, Host> = {};
  const apiHosts: Record<string, string> = {};
  for (const h of ['h1', 'h2']) {
    labHosts[h] = await lab.addHost(h);
    const api = await addHost(srv, `xl-${h}-${lab.prefix}`);
    apiHosts[h] = api.id;
    hostIds.push(api.id);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `palisade-xl-${h}-`));
    dirs.push(dir);
    const agent = new AgentProcess(['--server', `http://127.0.0.1:${srv.port}`, '--token', api.token, '--state-dir', dir, '--netns', labHosts[h]!.netns,
      '--reconcile-interval', '2s', '--hostname', `xl-${h}`]);
    agents.push(agent);
  }
  for (const [name, h, n, g] of plan) {
    const a = ip(n);
    const mac = `52:54:00:00:01:${n.toString(16).padStart(2, '0')}`;
    const v = (await job(srv, 'deployVirtualMachine', {
      name, networkids: net, ipaddress: a.v4, ip6address: a.v6, macaddress: mac, hostid: apiHosts[h]!, ...(g ? { securitygroupids: groups[g]! } : {}),
    })).virtualmachine;
    const labVm = await lab.addVm({ host: labHosts[h]!, name, nics: [{ mac, ipv4: `${a.v4}/24`, ipv6: `${a.v6}/64` }] });
    vms[name] = { lab: labVm, id: v.id, ...a };
  }
  for (const agent of agents) agent.start();
  await lab.outside.startDns();
  const listen = async (netns: string, tcp: number[], udp: number[] = []) => {
    for (const p of tcp) listeners.push(await listenTcp(netns, p));
    for (const p of udp) listeners.push(await listenUdpEcho(netns, p));
  };
  await listen(lab.outside.netns, [80, 81], [7000]);
  await listen(vms.b1!.lab.netns, [80], [5000]);
  await listen(vms.b2!.lab.netns, [22, 79, 80, 443, 444, 9999], [5000, 5001]);
  await listen(vms.c3!.lab.netns, [22]);
  await listen(vms.d6!.lab.netns, [80, 81, 8080]);
  await listen(vms.e8!.lab.netns, [22, 23]);
  await waitFor('both hosts Up and every VM Synced', async () => {
    for (const h of hostIds) if ((await hostRow(srv, h)).state !== 'Up') return false;
    for (const v of Object.values(vms)) if ((await vmRow(srv, v.id)).securitygroupsyncstate !== 'Synced') return false;
    return true;
  }, 90_000, 250);
});

after(async () => {
  for (const l of listeners) await l.close().catch(() => {});
  for (const a of agents) await a.kill('SIGTERM');
  await srv?.stop();
  await lab?.destroy();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

async function explain(vm: string, direction: 'ingress' | 'egress', c: Case, peer: string): Promise<any> {
  const p: Record<string, string | number> = { virtualmachineid: vms[vm]!.id, direction, protocol: c.proto, address: peer };
  if (c.port !== undefined) p.port = c.port;
  if (c.sport !== undefined) p.sourceport = c.sport;
  if (c.proto === 'icmp') { p.icmptype = c.family === 4 ? 8 : 128; p.icmpcode = 0; }
  return ok(await srv.call('explainSecurityGroupTraffic', p), 'explain').explainsecuritygrouptrafficresponse.securitygrouptraffic;
}

/** Explain's verdict for the whole path: the sender's egress and the receiver's ingress (VM ends only). */
async function verdict(c: Case): Promise<{ allowed: boolean; why: string }> {
  const parts: string[] = [];
  let allowed = true;
  if ('vm' in c.from) {
    const e = await explain(c.from.vm, 'egress', c, addr(c.to, c.family));
    allowed &&= e.allowed; parts.push(`${c.from.vm} egress ${e.reason}`);
  }
  if ('vm' in c.to) {
    const e = await explain(c.to.vm, 'ingress', c, addr(c.from, c.family));
    allowed &&= e.allowed; parts.push(`${c.to.vm} ingress ${e.reason}`);
  }
  return { allowed, why: parts.join(', ') };
}

async function probe(c: Case): Promise<ProbeResult> {
  const from = 'vm' in c.from ? vms[c.from.vm]!.lab : lab.outside.netns;
  const to = addr(c.to, c.family);
  const pass = { timeoutMs: 3000 }, block = { timeoutMs: 800 };
  const t = (await verdictCache.get(c))!.allowed ? pass : block;
  if (c.dns) return dnsQuery(from, to, 'x.test', { ...t, tcp: c.proto === 'tcp' });
  if (c.proto === 'tcp') {
    const r = await tcpConnect(from, to, c.port!, t);
    return { ...r, ok: r.ok || r.reason === 'refused' }; // a reset from the VM proves delivery both ways
  }
  if (c.proto === 'udp') return udpRequest(from, to, c.port!, { ...t, ...(c.sport !== undefined ? { sport: c.sport } : {}) });
  return ping(from, to, t);
}
const verdictCache = new Map<Case, Promise<{ allowed: boolean; why: string }>>();

const V = (vm: string): End => ({ vm });
const OUT: End = { outside: true };
const CASES: Case[] = [
  // 1. default group: nothing in, everything out
  { what: 'outside→b1 tcp/80', from: OUT, to: V('b1'), family: 4, proto: 'tcp', port: 80 },
  { what: 'outside→b1 udp/5000', from: OUT, to: V('b1'), family: 4, proto: 'udp', port: 5000 },
  { what: 'outside→b1 echo', from: OUT, to: V('b1'), family: 4, proto: 'icmp' },
  { what: 'outside→b1 echo6', from: OUT, to: V('b1'), family: 6, proto: 'icmp' },
  { what: 'r (other host)→b1 echo', from: V('r'), to: V('b1'), family: 4, proto: 'icmp' },
  { what: 'b1→outside tcp/80', from: V('b1'), to: OUT, family: 4, proto: 'tcp', port: 80 },
  { what: 'b1→outside tcp6/81', from: V('b1'), to: OUT, family: 6, proto: 'tcp', port: 81 },
  { what: 'b1→outside udp/7000', from: V('b1'), to: OUT, family: 4, proto: 'udp', port: 7000 },
  { what: 'b1→outside echo6', from: V('b1'), to: OUT, family: 6, proto: 'icmp' },
  // 2. ingress rules
  { what: 'a(/32)→b2 tcp/22', from: V('a'), to: V('b2'), family: 4, proto: 'tcp', port: 22 },
  { what: 'c3→b2 tcp/22', from: V('c3'), to: V('b2'), family: 4, proto: 'tcp', port: 22 },
  { what: 'outside→b2 tcp/79', from: OUT, to: V('b2'), family: 4, proto: 'tcp', port: 79 },
  { what: 'outside→b2 tcp/80', from: OUT, to: V('b2'), family: 4, proto: 'tcp', port: 80 },
  { what: 'outside→b2 tcp/443', from: OUT, to: V('b2'), family: 4, proto: 'tcp', port: 443 },
  { what: 'outside→b2 tcp/444', from: OUT, to: V('b2'), family: 4, proto: 'tcp', port: 444 },
  { what: 'outside→b2 udp/5000', from: OUT, to: V('b2'), family: 4, proto: 'udp', port: 5000 },
  { what: 'outside→b2 udp/5001', from: OUT, to: V('b2'), family: 4, proto: 'udp', port: 5001 },
  { what: 'outside→b2 echo (8/0 from the /32)', from: OUT, to: V('b2'), family: 4, proto: 'icmp' },
  { what: 'a→b2 echo', from: V('a'), to: V('b2'), family: 4, proto: 'icmp' },
  { what: 'r (all)→b2 tcp/9999', from: V('r'), to: V('b2'), family: 4, proto: 'tcp', port: 9999 },
  { what: 'r (all)→b2 udp/5001', from: V('r'), to: V('b2'), family: 4, proto: 'udp', port: 5001 },
  { what: 'outside→b2 tcp/9999', from: OUT, to: V('b2'), family: 4, proto: 'tcp', port: 9999 },
  { what: 'outside→b2 echo6 (no IPv6 rule)', from: OUT, to: V('b2'), family: 6, proto: 'icmp' },
  // 3. one IPv4 egress rule: other IPv4 egress closed, DNS passes, IPv6 open
  { what: 'c3→outside tcp/80 (rule)', from: V('c3'), to: OUT, family: 4, proto: 'tcp', port: 80 },
  { what: 'c3→outside tcp/81', from: V('c3'), to: OUT, family: 4, proto: 'tcp', port: 81 },
  { what: 'c3→r tcp/80 (other destination)', from: V('c3'), to: V('r'), family: 4, proto: 'tcp', port: 80 },
  { what: 'c3→outside echo', from: V('c3'), to: OUT, family: 4, proto: 'icmp' },
  { what: 'c3→outside udp/7000', from: V('c3'), to: OUT, family: 4, proto: 'udp', port: 7000 },
  { what: 'c3→outside DNS over UDP (baseline)', from: V('c3'), to: OUT, family: 4, proto: 'udp', port: 53, dns: true },
  { what: 'c3→outside DNS over TCP (baseline)', from: V('c3'), to: OUT, family: 4, proto: 'tcp', port: 53, dns: true },
  { what: 'c3→outside tcp6/81 (IPv6 open)', from: V('c3'), to: OUT, family: 6, proto: 'tcp', port: 81 },
  // 6. same host: the sender's egress and the receiver's ingress both decide
  { what: 's6→d6 tcp/80 (egress ✓, ingress ✓)', from: V('s6'), to: V('d6'), family: 4, proto: 'tcp', port: 80 },
  { what: 's6→d6 tcp/81 (egress ✓, ingress ✗)', from: V('s6'), to: V('d6'), family: 4, proto: 'tcp', port: 81 },
  { what: 's6→d6 tcp/8080 (egress ✗, ingress ✓)', from: V('s6'), to: V('d6'), family: 4, proto: 'tcp', port: 8080 },
  { what: 'a→d6 tcp/80', from: V('a'), to: V('d6'), family: 4, proto: 'tcp', port: 80 },
  // 8. IPv6
  { what: 'outside→e8 echo6 (::/0)', from: OUT, to: V('e8'), family: 6, proto: 'icmp' },
  { what: 'a→e8 echo6 (same host)', from: V('a'), to: V('e8'), family: 6, proto: 'icmp' },
  { what: 'outside→e8 tcp6/22 (/64)', from: OUT, to: V('e8'), family: 6, proto: 'tcp', port: 22 },
  { what: 'outside→e8 tcp6/23 (other /64)', from: OUT, to: V('e8'), family: 6, proto: 'tcp', port: 23 },
  { what: 'outside→e8 echo (no IPv4 rule)', from: OUT, to: V('e8'), family: 4, proto: 'icmp' },
  // anti-spoofing: a VM acting as a DHCP server (source port 67) is dropped, even with egress open
  { what: 'b1→outside udp/7000 from port 67', from: V('b1'), to: OUT, family: 4, proto: 'udp', port: 7000, sport: 67 },
  { what: 'b1→outside udp/7000 from port 6700', from: V('b1'), to: OUT, family: 4, proto: 'udp', port: 7000, sport: 6700 },
];

test('explain agrees with real probes for every case of the enforcement matrix', async () => {
  for (const c of CASES) verdictCache.set(c, verdict(c));
  const rows: string[] = [];
  const wrong: string[] = [];
  for (const c of CASES) {
    const v = await verdictCache.get(c)!;
    const p = await probe(c);
    rows.push(`${c.what}: explain ${v.allowed ? 'allowed' : 'blocked'} (${v.why}), probe ${p.ok ? 'passed' : `blocked (${p.reason})`}`);
    if (v.allowed !== p.ok) wrong.push(rows.at(-1)!);
  }
  if (process.env.PALISADE_TEST_VERBOSE) console.log(rows.join("\n"));
  assert.deepEqual(wrong, [], rows.join("\n"));
  // both outcomes are exercised
  const verdicts = await Promise.all(CASES.map((c) => verdictCache.get(c)!));
  assert.ok(verdicts.filter((v) => v.allowed).length >= 15 && verdicts.filter((v) => !v.allowed).length >= 15, rows.join('\n'));
});
