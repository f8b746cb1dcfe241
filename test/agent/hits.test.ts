// Per-rule hits end to end (issue 11), on every dataplane backend (PALISADE_TEST_BACKENDS): a real
// server, real agent processes reading their kernel's rule counters every second, real TCP connections
// between lab VMs. The rule that allows the traffic gets the hits in listSecurityGroups, its twin on
// another port none; a re-render of the VM's chain (another rule authorized in the same group) re-creates
// the rule in the kernel, its counter restarting at 0, and the API's count neither drops nor misses the
// packets after it; the group is on a VM of each backend's host, and its counts are the sum. Also the
// agent's --metrics-listen: Prometheus text at /metrics, and a bad value refused at start. Needs root.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { freePort, startServer, type TestServer } from '../helpers/server.js';
import { palisadeCommand } from '../helpers/palisade.js';
import { createLab, tcpConnect, listenTcp, type Lab, type Host, type Vm, type Listener } from '../../src/lab/index.js';
import { parseRuleCounts as nftCounts } from '../../src/dataplane/nftables/backend.js';
import { parseRuleCounts as iptCounts } from '../../src/dataplane/iptables/counters.js';
import type { KernelRuleCount } from '../../src/dataplane/backend.js';
import { BACKENDS } from '../dataplane/kit.js';
import { AgentProcess, addHost, job, ok, sleep, vmRow, waitFor } from './helpers.js';

const REPO = path.dirname(path.dirname(path.dirname(fileURLToPath(import.meta.url))));

interface Side {
  backend: 'nftables' | 'iptables';
  host: Host;
  hostId: string;
  dir: string;
  metricsPort: number;
  agent: AgentProcess;
  server: { lab: Vm; id: string };
  client: { lab: Vm; id: string };
  serverIp: string;
  listeners: Listener[];
}

let lab: Lab;
let srv: TestServer;
let groupId = '';
let ruleX = '';   // TCP 80 from the guest network: the traffic's rule
let ruleY = '';   // TCP 8080 from the same network: its twin, never used
const sides: Side[] = [];

async function rules(): Promise<Map<string, { hitcount: number; lasthit?: string }>> {
  const g = ok(await srv.call('listSecurityGroups', { id: groupId }), 'listSecurityGroups').listsecuritygroupsresponse.securitygroup[0];
  return new Map((g.ingressrule as any[]).map((r) => [r.ruleid, { hitcount: r.hitcount, ...(r.lasthit ? { lasthit: r.lasthit } : {}) }]));
}
const hits = async (rule: string) => (await rules()).get(rule)!.hitcount;

/** The kernel's counters of the server VM's rules on a side, read the way its backend's reader reads them. */
async function kernelCounts(s: Side): Promise<KernelRuleCount[]> {
  const held = JSON.parse(fs.readFileSync(path.join(s.dir, 'desired-state.json'), 'utf8')).state;
  const vms = (held.vms as any[]).map((v) => ({ vmId: v.vmId, instanceName: v.instanceName })).filter((v) => v.vmId === s.server.id);
  if (s.backend === 'nftables') return nftCounts((await s.host.exec('nft', ['-j', 'list', 'table', 'inet', 'palisade'])).stdout, vms);
  return iptCounts(4, (await s.host.exec('iptables-save', ['-c', '-t', 'filter'])).stdout, vms);
}

/** The kernel rule id of the server VM's TCP rule on `port` (from the agent's saved desired state). */
function kernelRuleId(s: Side, port: number): string {
  const held = JSON.parse(fs.readFileSync(path.join(s.dir, 'desired-state.json'), 'utf8')).state;
  const vm = (held.vms as any[]).find((v) => v.vmId === s.server.id);
  const r = (vm.v4.ingress as any[]).find((x) => x.protocol === 'tcp' && x.ports?.from === port);
  assert.ok(r, `the agent holds a tcp/${port} rule for the server VM`);
  return r.id;
}

async function connections(s: Side, port: number, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const r = await tcpConnect(s.client.lab, s.serverIp, port, { timeoutMs: 3000 });
    assert.ok(r.ok, `${s.backend}: client → server:${port} connects (${r.reason})`);
  }
}

async function metrics(port: number, p = '/metrics'): Promise<{ status: number; text: string }> {
  const r = await fetch(`http://127.0.0.1:${port}${p}`);
  return { status: r.status, text: await r.text() };
}

before(async () => {
  lab = await createLab();
  srv = await startServer();
  const domainId = ok(await srv.call('listDomains'), 'listDomains').listdomainsresponse.domain[0].id;
  const net = ok(await srv.call('createNetwork', { name: 'guest', gateway: '10.1.0.1', netmask: '255.255.0.0', startip: '10.1.0.10', endip: '10.1.0.250' }), 'createNetwork').createnetworkresponse.network.id;
  groupId = ok(await srv.call('createSecurityGroup', { name: 'web', account: 'admin', domainid: domainId }), 'createSecurityGroup').createsecuritygroupresponse.securitygroup.id;
  const x = await job(srv, 'authorizeSecurityGroupIngress', { securitygroupid: groupId, protocol: 'TCP', startport: 80, endport: 80, cidrlist: '10.1.0.0/24' });
  const y = await job(srv, 'authorizeSecurityGroupIngress', { securitygroupid: groupId, protocol: 'TCP', startport: 8080, endport: 8080, cidrlist: '10.1.0.0/24' });
  ruleX = x.securitygroup.ingressrule[0].ruleid;
  ruleY = y.securitygroup.ingressrule.find((r: any) => r.ruleid !== ruleX).ruleid;
  let n = 20;
  for (const backend of BACKENDS) {
    const host = await lab.addHost(`h${n}`);
    const h = await addHost(srv, `hits-${backend}-${lab.prefix}`);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-hits-'));
    const serverIp = `10.1.0.${n + 1}`, clientIp = `10.1.0.${n + 2}`;
    const macs = [`52:54:00:cc:00:${n + 1}`, `52:54:00:cc:00:${n + 2}`];
    const sv = (await job(srv, 'deployVirtualMachine', { name: `s${n}`, account: 'admin', domainid: domainId, networkids: net, ipaddress: serverIp, macaddress: macs[0], hostid: h.id, securitygroupids: groupId })).virtualmachine;
    const cl = (await job(srv, 'deployVirtualMachine', { name: `c${n}`, account: 'admin', domainid: domainId, networkids: net, ipaddress: clientIp, macaddress: macs[1], hostid: h.id })).virtualmachine;
    const server = { lab: await lab.addVm({ host, name: `s${n}`, nics: [{ mac: macs[0], ipv4: `${serverIp}/16` }] }), id: sv.id };
    const client = { lab: await lab.addVm({ host, name: `c${n}`, nics: [{ mac: macs[1], ipv4: `${clientIp}/16` }] }), id: cl.id };
    const listeners = [await listenTcp(server.lab, 80), await listenTcp(server.lab, 8080)];
    const metricsPort = await freePort();
    const agent = new AgentProcess(['--server', `http://127.0.0.1:${srv.port}`, '--token', h.token, '--state-dir', dir, '--netns', host.netns,
      '--reconcile-interval', '2s', '--backoff-max', '1s', '--hostname', `hits-${backend}`, '--dataplane', backend,
      '--counters-interval', '1s', '--metrics-listen', `127.0.0.1:${metricsPort}`]);
    sides.push({ backend, host, hostId: h.id, dir, metricsPort, agent, server, client, serverIp, listeners });
    agent.start();
    n += 10;
  }
  for (const s of sides) {
    await waitFor(`${s.backend}: server VM synced`, async () => (await vmRow(srv, s.server.id)).securitygroupsyncstate === 'Synced' && fs.existsSync(path.join(s.dir, 'desired-state.json')), 60_000, 200);
    await waitFor(`${s.backend}: server VM reachable on :80`, async () => (await tcpConnect(s.client.lab, s.serverIp, 80, { timeoutMs: 1000 })).ok, 30_000, 200);
  }
});

after(async () => {
  for (const s of sides) {
    for (const l of s.listeners) await l.close().catch(() => {});
    await s.agent.kill('SIGTERM');
    fs.rmSync(s.dir, { recursive: true, force: true });
  }
  await srv?.stop();
  await lab?.destroy();
});

test('traffic allowed by a rule raises that rule\'s hitcount (summed over hosts and backends), not its twin\'s; lasthit is set', async () => {
  const t0 = Date.now();
  for (const s of sides) {
    const before = await hits(ruleX);
    await connections(s, 80, 3);
    // Each connection's first packet matches the rule (the rest pass as a tracked flow).
    const now = await waitFor(`${s.backend}: hitcount of the tcp/80 rule grows by 3`, async () => { const h = await hits(ruleX); return h >= before + 3 ? h : 0; }, 30_000, 250);
    assert.ok(now >= before + 3);
    const y = (await rules()).get(ruleY)!;
    assert.equal(y.hitcount, 0, `${s.backend}: the tcp/8080 rule saw none of it`);
    assert.equal(y.lasthit, undefined, 'and has no lasthit');
  }
  const x = (await rules()).get(ruleX)!;
  assert.ok(x.hitcount >= 3 * sides.length, `summed over ${sides.length} host(s): ${x.hitcount}`);
  assert.ok(x.lasthit, 'lasthit set');
  const at = Date.parse(x.lasthit!.replace(/([+-]\d\d)(\d\d)$/, '$1:$2'));
  assert.ok(at >= t0 - 60_000 && at <= Date.now() + 60_000, `lasthit ${x.lasthit} is about now`);
  // The twin's traffic counts for the twin.
  const s = sides[0];
  // Counts of the phases above may still be on their way (counters are read every second, and the
  // server attributes them as they come): start from a count that two readings in a row left unchanged.
  const xBefore = await settledHits(ruleX);
  await connections(s, 8080, 2);
  await waitFor('hitcount of the tcp/8080 rule grows', async () => (await hits(ruleY)) >= 2, 30_000, 250);
  await moreReadings(2);   // nothing of it lands on the tcp/80 rule
  assert.equal(await hits(ruleX), xBefore, 'the tcp/80 rule got nothing from tcp/8080 traffic');
});

test('a re-render caused by another rule re-creates the rule in the kernel (counter back to 0) without resetting or losing its hits', async () => {
  const kernelBefore = new Map<string, { slots: string[]; packets: number }>();
  for (const s of sides) {
    const id = kernelRuleId(s, 80);
    const mine = (await kernelCounts(s)).filter((c) => c.ruleId === id);
    const packets = mine.reduce((n, c) => n + c.packets, 0);
    assert.ok(packets > 0, `${s.backend}: the kernel counted the tcp/80 rule's packets`);
    kernelBefore.set(s.backend, { slots: mine.map((c) => c.slot), packets });
  }
  await moreReadings(2);   // every agent has read those counts
  const before = await hits(ruleX);
  await job(srv, 'authorizeSecurityGroupIngress', { securitygroupid: groupId, protocol: 'TCP', startport: 22, endport: 22, cidrlist: '203.0.113.50/32' });
  for (const s of sides) {
    const id = kernelRuleId(s, 80);
    // The new rule is in the kernel, and the tcp/80 rule was written anew with it.
    await waitFor(`${s.backend}: the chain re-rendered`, async () => {
      const held = JSON.parse(fs.readFileSync(path.join(s.dir, 'desired-state.json'), 'utf8')).state;
      const vm = (held.vms as any[]).find((v) => v.vmId === s.server.id);
      if (!(vm.v4.ingress as any[]).some((r) => r.ports?.from === 22)) return false;
      const live = (await kernelCounts(s)).filter((c) => c.ruleId === id);
      const fresh = live.filter((c) => !kernelBefore.get(s.backend)!.slots.includes(c.slot));
      // iptables: the new version above the old one, then (~1 s later) the old one cleaned up, the
      // chain rewritten with the live counters carried over; traffic goes in once that is done (the
      // clean-up loses what passes between its reading and its rewrite, a few ms).
      return s.backend === 'iptables' ? live.length === 1 && fresh.length === 1 : fresh.length > 0;
    }, 30_000, 100);
    assert.equal(kernelRuleId(s, 80), id, 'the rule kept its id (only its chain changed)');
    // At once, more packets than the old rule had counted: a reader that took the kernel counter
    // for the same rule as before would see it grow past the old value and count only the excess.
    const extra = kernelBefore.get(s.backend)!.packets + 2;
    await connections(s, 80, extra);
    kernelBefore.get(s.backend)!.packets = extra;
  }
  const sent = [...kernelBefore.values()].reduce((n, k) => n + k.packets, 0);
  try {
    await waitFor('the packets right after the re-render are all counted', async () => (await hits(ruleX)) >= before + sent, 30_000, 250);
  } catch (e) {
    const kernel = await Promise.all(sides.map(async (s) => `${s.backend}: ${JSON.stringify((await kernelCounts(s)).filter((c) => c.ruleId === kernelRuleId(s, 80)))}`));
    throw new Error(`${(e as Error).message}: API ${before} → ${await hits(ruleX)}, expected +${sent} (${JSON.stringify([...kernelBefore])}); kernel now ${kernel.join('; ')}\n${sides.map((s) => `--- ${s.backend} agent ---\n${s.agent.out.slice(-2500)}`).join('\n')}`);
  }
  // Let the iptables backend rewrite the chain once more (its garbage collection, ~1 s after a write)
  // and the agents read their counters a few times.
  await sleep(1500);
  await moreReadings(2);
  const after = await hits(ruleX);
  assert.ok(after >= before, `the hitcount never goes back (${before} → ${after})`);
  for (const s of sides) {
    const base = await hits(ruleX);
    await connections(s, 80, 3);
    await waitFor(`${s.backend}: packets after the re-render are counted`, async () => (await hits(ruleX)) >= base + 3, 30_000, 250);
  }
  assert.equal((await rules()).get(ruleY)!.hitcount, 2, 'the twin kept its own count');
});

test('the agent serves Prometheus metrics at --metrics-listen', async () => {
  for (const s of sides) {
    const m = await metrics(s.metricsPort);
    assert.equal(m.status, 200);
    const tool = s.backend === 'nftables' ? 'nft' : 'iptables-restore';
    assert.match(m.text, new RegExp(`palisade_agent_apply_duration_seconds_count\\{tool="${tool}"\\} [1-9]`), `${s.backend}: apply duration of ${tool}`);
    assert.match(m.text, new RegExp(`palisade_agent_kernel_writes_total\\{tool="${tool}"\\} [1-9]`));
    assert.doesNotMatch(m.text, new RegExp(`tool="${s.backend === 'nftables' ? 'iptables-restore' : 'nft'}"`), 'only the tools this backend ran');
    assert.match(m.text, /^palisade_agent_server_connected 1$/m);
    assert.match(m.text, /^palisade_agent_vms 2$/m);
    const since = Number(/^palisade_agent_seconds_since_last_apply (\S+)$/m.exec(m.text)?.[1]);
    assert.ok(since >= 0 && since < 600, `seconds since the last apply: ${since}`);
    assert.match(m.text, /^# TYPE palisade_agent_drift_repairs_total counter$/m);
    assert.match(m.text, /^palisade_agent_applied_revision \d+$/m);
    assert.doesNotMatch(m.text, /vm=|rule=|host=/, 'no VM, rule or host ids as labels');
    const other = await metrics(s.metricsPort, '/');
    assert.equal(other.status, 404);
  }
});

test('the agent counts dropped packets per reason from the kernel and reports conntrack usage', async () => {
  const sample = (text: string, name: string) => { const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text); return m ? Number(m[1]) : null; };
  const denied = '^palisade_agent_dropped_packets_total\\{reason="ingress-default-deny"\\}';
  for (const s of sides) {
    const m = await metrics(s.metricsPort);
    assert.ok((sample(m.text, 'palisade_agent_conntrack_limit') ?? 0) > 0, `${s.backend}: conntrack limit`);
    assert.ok((sample(m.text, 'palisade_agent_conntrack_entries') ?? -1) >= 0, `${s.backend}: conntrack entries`);
    const before = sample(m.text, denied) ?? 0;
    // Blocked: no rule opens 9999, so each SYN meets the ingress default deny.
    for (let i = 0; i < 3; i++) assert.ok(!(await tcpConnect(s.client.lab, s.serverIp, 9999, { timeoutMs: 400 })).ok, 'tcp/9999 is blocked');
    await waitFor(`${s.backend}: ingress default denies counted`, async () => (sample((await metrics(s.metricsPort)).text, denied) ?? 0) >= before + 3, 30_000, 500);
    // Its twin: no spoofing happened here, so no spoofing reason counted anything.
    const after = (await metrics(s.metricsPort)).text;
    assert.equal(sample(after, '^palisade_agent_dropped_packets_total\\{reason="spoofed-mac"\\}') ?? 0, 0, 'nothing counted as spoofed-mac');
  }
});

test('the server\'s /metrics carries the control plane\'s metrics and the hits it attributed', async () => {
  const r = await fetch(`http://127.0.0.1:${srv.port}/metrics`);
  const text = await r.text();
  const value = (line: RegExp) => Number(line.exec(text)?.[1]);
  assert.equal(value(/^palisade_agent_sessions (\S+)$/m), sides.length, 'one session per agent');
  assert.ok(value(/^palisade_control_batches_total (\S+)$/m) >= 1);
  assert.ok(value(/^palisade_control_changes_total (\S+)$/m) >= 1);
  assert.ok(value(/^palisade_control_pushes_total\{kind="delta"\} (\S+)$/m) >= sides.length, 'the re-render was pushed to every host');
  assert.ok(value(/^palisade_control_push_bytes_total (\S+)$/m) > 0);
  assert.ok(value(/^palisade_control_commit_to_push_seconds_count (\S+)$/m) >= 1);
  const oldest = value(/^palisade_control_oldest_unacked_change_seconds (\S+)$/m);
  assert.ok(oldest >= 0 && oldest < 60, `oldest unacknowledged change: ${oldest}s (every host acked long ago)`);
  assert.ok(value(/^palisade_rule_hit_packets_total\{result="attributed"\} (\S+)$/m) >= await hits(ruleX), 'the attributed packets include the rule\'s hits');
});

test('an agent restarted with its saved state does not count again what the kernel counted before', async () => {
  for (const s of sides) {
    const id = kernelRuleId(s, 80);
    assert.ok((await kernelCounts(s)).some((c) => c.ruleId === id && c.packets > 0), `${s.backend}: the kernel holds counts for the rule`);
  }
  await moreReadings(2);   // the running agents have reported everything
  const before = await hits(ruleX);
  for (const s of sides) await s.agent.kill('SIGTERM');
  for (const s of sides) s.agent.start();
  for (const s of sides) {
    await waitFor(`${s.backend}: restarted agent connected`, async () => /^palisade_agent_server_connected 1$/m.test((await metrics(s.metricsPort)).text), 60_000, 250);
  }
  // Two readings or more of each restarted agent (its metrics count from 0): the first is its baseline.
  await waitFor('every restarted agent read its counters twice', async () => (await Promise.all(sides.map(readings))).every((n) => n >= 2), 60_000, 250);
  await moreReadings(1);   // and what the second sent has landed
  assert.equal(await hits(ruleX), before, 'the first reading after the restart is a baseline');
  for (const s of sides) {
    const base = await hits(ruleX);
    await connections(s, 80, 2);
    await waitFor(`${s.backend}: new packets counted after the restart`, async () => (await hits(ruleX)) >= base + 2, 30_000, 250);
  }
});

/** Rule counter readings an agent has made (its own metrics). */
async function readings(s: Side): Promise<number> {
  const m = /^palisade_agent_rule_counter_readings_total (\S+)$/m.exec((await metrics(s.metricsPort)).text);
  return m ? Number(m[1]) : 0;
}

/** Until every agent has read its counters `n` more times (what earlier readings sent has landed by then). */
async function moreReadings(n: number): Promise<void> {
  const from = await Promise.all(sides.map(readings));
  await waitFor(`every agent read its counters ${n} more times`, async () => (await Promise.all(sides.map(readings))).every((r, i) => r >= from[i]! + n), 60_000, 200);
}

/**
 * The rule's hitcount once every agent has read its counters twice more while it stayed unchanged: a
 * count on its way (read, sent, being stored) has landed by then. Counted in readings, not seconds, so a
 * loaded machine stretching the readings cannot make it look settled early.
 */
async function settledHits(rule: string): Promise<number> {
  let h = await hits(rule);
  let from = await Promise.all(sides.map(readings));
  for (const deadline = Date.now() + 120_000; Date.now() < deadline;) {
    await sleep(250);
    const n = await hits(rule);
    const now = await Promise.all(sides.map(readings));
    if (n !== h) { h = n; from = now; continue; }
    if (now.every((r, i) => r >= from[i]! + 2)) return h;
  }
  throw new Error(`hits of rule ${rule} did not settle within 120 s`);
}

/** Kernel transactions an agent ran (its own metrics): grows when it re-renders. */
async function kernelWrites(s: Side): Promise<number> {
  const text = (await metrics(s.metricsPort)).text;
  let n = 0;
  for (const m of text.matchAll(/^palisade_agent_kernel_writes_total\{[^}]*\} (\S+)$/gm)) n += Number(m[1]);
  return n;
}

test('exact counts: N connections show exactly N; an apply that re-renders without changing the rule neither adds nor loses any', async () => {
  // settled once for both rules; each backend's last settled count is the next one's baseline
  let [base, twin] = await Promise.all([settledHits(ruleX), settledHits(ruleY)]);
  for (const s of sides) {
    await connections(s, 80, 5);
    await waitFor(`${s.backend}: 5 hits arrive`, async () => (await hits(ruleX)) >= base + 5, 30_000, 250);
    assert.equal(await settledHits(ruleX), base + 5, `${s.backend}: 5 connections, exactly 5 hits (one per connection's first packet)`);
    assert.equal(await hits(ruleY), twin, `${s.backend}: the twin got none of them`);

    // Every host re-renders for a setting (the drop log's rate): the rule itself is unchanged.
    const writes = await kernelWrites(s);
    ok(await srv.call('updateConfiguration', { name: 'security.group.drop.log.rate', value: s.backend === 'nftables' ? 20 : 30 }), 'updateConfiguration');
    await waitFor(`${s.backend}: the agent re-rendered for the setting`, async () => (await kernelWrites(s)) > writes, 30_000, 250);
    assert.equal(await settledHits(ruleX), base + 5, `${s.backend}: the re-render added nothing and took nothing away`);
    await connections(s, 80, 3);
    await waitFor(`${s.backend}: 3 more hits arrive`, async () => (await hits(ruleX)) >= base + 8, 30_000, 250);
    assert.equal(await settledHits(ruleX), base + 8, `${s.backend}: exactly 3 more after the re-render`);
    assert.equal(await hits(ruleY), twin, `${s.backend}: still none for the twin`);
    base += 8;
  }
  ok(await srv.call('resetConfiguration', { name: 'security.group.drop.log.rate' }), 'resetConfiguration');
});

test('an invalid --metrics-listen is refused at start with a message naming the flag; a taken port too', async () => {
  const pal = palisadeCommand();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-hits-bad-'));
  try {
    const run = (value: string) => new Promise<{ code: number | null; err: string }>((resolve) => {
      const c = spawn(pal.cmd, [...pal.args, 'agent', '--server', 'http://127.0.0.1:1', '--token', 'x', '--state-dir', dir, '--dataplane', 'null', '--metrics-listen', value], { cwd: REPO, stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      c.stderr!.on('data', (d) => { err += d; });
      const t = setTimeout(() => c.kill('SIGKILL'), 60_000);
      c.once('exit', (code) => { clearTimeout(t); resolve({ code, err }); });
    });
    for (const bad of ['nonsense', '127.0.0.1:70000', '300.1.2.3:9000']) {
      const r = await run(bad);
      assert.equal(r.code, 2, `${bad}: exit 2 (${r.err})`);
      assert.match(r.err, /--metrics-listen/, `${bad}: the message names the flag`);
    }
    const taken = await run(`127.0.0.1:${sides[0].metricsPort}`);
    assert.equal(taken.code, 2, taken.err);
    assert.match(taken.err, /--metrics-listen .*cannot listen \(EADDRINUSE\)/);
  } finally { fs.rmSync(dir, { recursive: true, force: true }); }
});
