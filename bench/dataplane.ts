// Dataplane benchmark (issue 3): programming time of the iptables backend against the iptables-restore
// floor, small-change latency at 200 VMs, and forwarding cost with 0 and 500 other VMs programmed.
// Needs root. Run: node --import tsx bench/dataplane.ts [--quick]
import { performance } from 'node:perf_hooks';
import { run, runIn, createLab, listenTcp, type Vm } from '../src/lab/index.js';
import { IptablesDataplane } from '../src/dataplane/iptables/backend.js';
import { render } from '../src/dataplane/iptables/render.js';
import { discoverPorts } from '../src/dataplane/ports.js';
import type { HostPorts } from '../src/dataplane/backend.js';
import type { AddressSet, HostDesiredState, PolicyRule, VmPolicy } from '../src/policy/ir.js';
import { summary } from './summary.js';

const QUICK = process.argv.includes('--quick');
/** --only=programming|changes|forwarding runs one part. */
const ONLY = process.argv.find((a) => a.startsWith('--only='))?.slice(7) ?? null;
const part = (p: string) => !ONLY || ONLY === p;
const SIZES = QUICK ? [50, 200] : [50, 100, 200, 500];
const REPEAT = QUICK ? 1 : 3;
const GROUP: AddressSet = { id: 'sgbenchv4', family: 4, members: Array.from({ length: 50 }, (_, i) => `10.200.${i >> 8}.${(i & 255) + 1}`) };

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ms = (x: number) => `${x.toFixed(1)} ms`;

function benchVm(i: number, variant = 0): VmPolicy {
  const hx = (n: number) => n.toString(16).padStart(2, '0');
  // 10 ingress rules over 20 CIDRs (2 each), one rule referencing a group, 2 egress rules.
  const ingress: PolicyRule[] = Array.from({ length: 10 }, (_, k) => ({
    id: `b${i}r${k}`, protocol: k % 3 === 0 ? 'udp' : 'tcp', ports: { from: 1000 + k * 10 + (k === 0 ? variant : 0), to: 1005 + k * 10 + (k === 0 ? variant : 0) },
    cidrs: [`10.${k}.${i & 255}.0/24`, `172.16.${k * 2}.0/23`], sets: [], sources: [],
  }));
  ingress.push({ id: `b${i}grp`, protocol: 'tcp', ports: { from: 5432, to: 5432 }, cidrs: [], sets: [GROUP.id], sources: [] });
  const egress: PolicyRule[] = [
    { id: `b${i}e0`, protocol: 'tcp', ports: { from: 443, to: 443 }, cidrs: ['0.0.0.0/0'], sets: [], sources: [] },
    { id: `b${i}e1`, protocol: 'udp', ports: { from: 123, to: 123 }, cidrs: ['192.0.2.0/24'], sets: [], sources: [] },
  ];
  return {
    vmId: `bench-${String(i).padStart(4, '0')}`, instanceName: `i-3-${1000 + i}-VM`, hash: `h${i}`,
    nics: [{ nicId: `bn${i}`, mac: `52:54:00:aa:${hx(i >> 8)}:${hx(i & 255)}`, ipv4: [`10.100.${i >> 8}.${(i & 255) + 1}`], ipv6: [], isDefault: true, deviceName: null }],
    v4: { ingress, egress, egressRestricted: true, notrack: false },
    v6: { ingress: [], egress: [], egressRestricted: false, notrack: false },
  };
}

function benchState(n: number, extra: VmPolicy[] = [], group = GROUP): HostDesiredState {
  return { hostId: 'bench', revision: 1, vms: [...Array.from({ length: n }, (_, i) => benchVm(i)), ...extra], sets: [group] };
}
function fakePorts(n: number): HostPorts {
  return {
    nics: Object.fromEntries(Array.from({ length: n }, (_, i) => [`bn${i}`, { device: `vnf${i}`, bridge: 'cloudbr0' }])),
    bridges: { cloudbr0: { uplinks: ['eth0'], unknownTaps: [] } },
  };
}

const NS_PREFIX = `pd2b${Math.floor(Math.random() * 0xffff).toString(16).padStart(4, '0')}`;
let nsCount = 0;
const namespaces: string[] = [];
async function freshNs(): Promise<string> {
  const ns = `${NS_PREFIX}-${nsCount++}`;
  await run('ip', ['netns', 'add', ns]);
  namespaces.push(ns);
  return ns;
}
async function dropNs(ns: string) { await run('ip', ['netns', 'del', ns], { allowFail: true }); }

async function timed<T>(f: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const r = await f();
  return [r, performance.now() - t0];
}

async function programming() {
  console.log('\n== Programming a fresh host (iptables-nft backend) ==');
  console.log('VMs | rules v4 | render | apply (ipset+eb+ipt+ip6t) | floor: iptables-restore + ip6tables-restore | ratio');
  const results: Record<number, { apply: number; floor: number }> = {};
  for (const n of SIZES) {
    const input = { state: benchState(n), ports: fakePorts(n) };
    const [rendered, tRender] = await timed(async () => render(input));
    const rules = rendered.iptables.split('\n').filter((l) => l.startsWith('-A') || l.startsWith('-I')).length;
    const applies: number[] = [];
    const floors: number[] = [];
    for (let k = 0; k < REPEAT; k++) {
      const ns = await freshNs();
      const dp = new IptablesDataplane({ netns: ns });
      const [, tApply] = await timed(() => dp.apply(input));
      applies.push(tApply);
      await dropNs(ns);
      // The floor: the same iptables/ip6tables restore texts loaded by the tools alone (sets pre-created, untimed).
      const ns2 = await freshNs();
      await runIn(ns2, 'ipset', ['restore'], { stdin: rendered.ipset, timeoutMs: 60_000 });
      const [, t4] = await timed(() => runIn(ns2, 'iptables-restore', [], { stdin: rendered.iptables, timeoutMs: 120_000 }));
      const [, t6] = await timed(() => runIn(ns2, 'ip6tables-restore', [], { stdin: rendered.ip6tables, timeoutMs: 120_000 }));
      floors.push(t4 + t6);
      await dropNs(ns2);
    }
    const apply = median(applies);
    const floor = median(floors);
    results[n] = { apply, floor };
    console.log(`${n} | ${rules} | ${ms(tRender)} | ${ms(apply)} | ${ms(floor)} | ${(apply / floor).toFixed(2)}×`);
    summary('dataplane', `fresh host, ${n} VMs: apply`, apply, 'ms');
    summary('dataplane', `fresh host, ${n} VMs: apply / restore floor`, apply / floor, '×', n === 200 ? '< 2' : '');
  }
  return results;
}

async function smallChanges() {
  const n = 200;
  console.log(`\n== Small changes at ${n} VMs (warm agent) ==`);
  const ns = await freshNs();
  const dp = new IptablesDataplane({ netns: ns });
  const ports = fakePorts(n);
  // Like the agent applying a delta: unchanged VM policies are the same objects as before.
  const base = benchState(n);
  await dp.apply({ state: base, ports });
  const rule: number[] = [];
  const member: number[] = [];
  const noop: number[] = [];
  const writes: string[] = [];
  for (let k = 1; k <= 15; k++) {
    const vms = base.vms.map((v, i) => (i === 100 ? benchVm(i, k) : v));
    const [r1, t1] = await timed(() => dp.apply({ state: { hostId: 'bench', revision: 1 + k, vms, sets: [GROUP] }, ports }));
    rule.push(t1);
    const group = { ...GROUP, members: [...GROUP.members, `10.201.0.${k}`] };
    const [r2, t2] = await timed(() => dp.apply({ state: { hostId: 'bench', revision: 1 + k, vms, sets: [group] }, ports }));
    member.push(t2);
    const [, t3] = await timed(() => dp.apply({ state: { hostId: 'bench', revision: 1 + k, vms, sets: [group] }, ports }));
    noop.push(t3);
    if (k === 1) writes.push(`rule change wrote: ${r1.steps.map((s) => `${s.tool} ${s.ms} ms`).join(', ')}`, `member change wrote: ${r2.steps.map((s) => `${s.tool} ${s.ms} ms`).join(', ')}`);
  }
  const cold = new IptablesDataplane({ netns: ns });
  const [, tCold] = await timed(() => cold.apply({ state: benchState(n), ports }));
  const [obs, tObs] = await timed(() => cold.observe({ state: benchState(n), ports }));
  summary('dataplane', 'one-rule change at 200 VMs', median(rule), 'ms', '< 50');
  summary('dataplane', 'one-member change at 200 VMs', median(member), 'ms', '< 50');
  console.log(`one rule of one VM changed : median ${ms(median(rule))} (min ${ms(Math.min(...rule))}, max ${ms(Math.max(...rule))})`);
  console.log(`one group member added     : median ${ms(median(member))} (min ${ms(Math.min(...member))}, max ${ms(Math.max(...member))})`);
  console.log(`same state again (no write): median ${ms(median(noop))}`);
  console.log(`cold agent (reads the kernel, then writes the diff): ${ms(tCold)}; observe: ${ms(tObs)} (${obs.drift.length} drift items)`);
  for (const w of writes) console.log(w);
  await dropNs(ns);
  return { rule: median(rule), member: median(member) };
}

interface Fwd { tcpGbps: number; udpPps: number; pingMs: number }

async function iperf(a: Vm, b: Vm, args: string[]): Promise<any> {
  const srv = a.lab.background(b.netns, 'iperf3', ['-s', '-1', '-p', '5201']);
  await srv.waitFor(/listening/i, 5000).catch(() => new Promise((r) => setTimeout(r, 300)));
  const out = JSON.parse((await a.exec('iperf3', ['-c', b.ipv4!, '-p', '5201', '-t', '2', '-J', ...args], { timeoutMs: 30_000 })).stdout);
  await srv.exited;
  return out;
}

/** Median of REPS runs of each measurement (the machine is shared: single runs are noisy). */
async function forwarding(a: Vm, b: Vm): Promise<Fwd> {
  const server = await listenTcp(b, 1); // warms ND/ARP paths; iperf3 below is the measurement
  await server.close();
  const reps = QUICK ? 1 : 3;
  const tcp: number[] = [];
  const udp: number[] = [];
  const rtt: number[] = [];
  for (let i = 0; i < reps; i++) {
    tcp.push((await iperf(a, b, [])).end.sum_received.bits_per_second / 1e9);
    const us = (await iperf(a, b, ['-u', '-l', '64', '-b', '0'])).end.sum;
    udp.push((us.packets - us.lost_packets) / us.seconds);
    const p = await a.exec('ping', ['-q', '-c', '50', '-i', '0.01', b.ipv4!], { timeoutMs: 30_000 });
    const m = /= [\d.]+\/([\d.]+)\//.exec(p.stdout);
    rtt.push(m ? Number(m[1]) : NaN);
  }
  return { tcpGbps: median(tcp), udpPps: median(udp), pingMs: median(rtt) };
}

let currentLab: { destroy(): Promise<void> } | null = null;

async function dataPath() {
  console.log('\n== Forwarding between two VMs on one host (same bridge) ==');
  const lab = await createLab();
  currentLab = lab;
  try {
    const h = await lab.addHost('h1');
    const a = await lab.addVm({ host: h, name: 'a', nics: [{ mac: '52:54:00:00:0b:0a', ipv4: '198.51.100.200/24' }] });
    const b = await lab.addVm({ host: h, name: 'b', nics: [{ mac: '52:54:00:00:0b:0b', ipv4: '198.51.100.201/24' }] });
    const pol = (v: Vm, id: string, inst: string): VmPolicy => ({
      vmId: id, instanceName: inst, hash: id,
      nics: [{ nicId: `${id}-n`, mac: v.mac, ipv4: [v.ipv4!], ipv6: [], isDefault: true, deviceName: null }],
      v4: {
        ingress: [
          { id: 'iperf-t', protocol: 'tcp', ports: { from: 5201, to: 5201 }, cidrs: ['198.51.100.0/24'], sets: [], sources: [] },
          { id: 'iperf-u', protocol: 'udp', ports: { from: 5201, to: 5201 }, cidrs: ['198.51.100.0/24'], sets: [], sources: [] },
          { id: 'icmp', protocol: 'icmp', icmp: { type: -1, code: -1 }, cidrs: ['0.0.0.0/0'], sets: [], sources: [] },
          { id: 'probe', protocol: 'tcp', ports: { from: 1, to: 1 }, cidrs: ['198.51.100.0/24'], sets: [], sources: [] },
        ],
        egress: [], egressRestricted: false, notrack: false,
      },
      v6: { ingress: [], egress: [], egressRestricted: false, notrack: false },
    });
    // "zz" ids sort after the bench VMs: the measured pair's dispatch rules come last (worst case).
    const real = [pol(a, 'zz-a', 'i-4-1-VM'), pol(b, 'zz-b', 'i-4-2-VM')];
    const dp = new IptablesDataplane({ netns: h.netns });
    const results: Record<string, Fwd> = {};
    results['no firewall'] = await forwarding(a, b);
    const st0: HostDesiredState = { hostId: 'h1', revision: 1, vms: real, sets: [GROUP] };
    await dp.apply({ state: st0, ports: await discoverPorts(dp.runner, st0) });
    results['Palisade, 0 other VMs'] = await forwarding(a, b);
    const st500 = benchState(500, real);
    const real0 = await discoverPorts(dp.runner, st0);
    const f = fakePorts(500);
    await dp.apply({ state: st500, ports: { nics: { ...f.nics, ...real0.nics }, bridges: real0.bridges } });
    results['Palisade, 500 other VMs'] = await forwarding(a, b);
    await dp.teardown();
    const base = results['no firewall'];
    console.log(`config | TCP Gbit/s (ratio) | UDP 64 B delivered pps (ratio) | ping RTT ms (ratio)   [median of ${QUICK ? 1 : 3} runs each]`);
    for (const [k, r] of Object.entries(results)) {
      if (k !== 'no firewall') {
        summary('dataplane', `${k}: TCP throughput ratio`, r.tcpGbps / base.tcpGbps, '× no firewall');
        summary('dataplane', `${k}: UDP 64 B pps ratio`, r.udpPps / base.udpPps, '× no firewall');
        summary('dataplane', `${k}: ping RTT ratio`, r.pingMs / base.pingMs, '× no firewall');
      }
      console.log(`${k} | ${r.tcpGbps.toFixed(2)} (${(r.tcpGbps / base.tcpGbps).toFixed(2)}) | ${Math.round(r.udpPps)} (${(r.udpPps / base.udpPps).toFixed(2)}) | ${r.pingMs.toFixed(3)} (${(r.pingMs / base.pingMs).toFixed(2)})`);
    }
    return results;
  } finally {
    await lab.destroy();
  }
}

// bench/all.ts stops a bench with SIGTERM: remove what we created before going.
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.on(sig, () => {
    void (async () => {
      for (const ns of namespaces) await dropNs(ns);
      await currentLab?.destroy();
      process.exit(130);
    })();
  });
}

async function main() {
  console.log(`Palisade dataplane benchmark — ${new Date().toISOString()}${QUICK ? ' (quick)' : ''}`);
  console.log((await run('iptables', ['--version'])).stdout.trim(), '| kernel', (await run('uname', ['-r'])).stdout.trim(), '| cpus', (await run('nproc', [])).stdout.trim(),
    '| load', (await run('cat', ['/proc/loadavg'])).stdout.split(' ').slice(0, 3).join(' '));
  try {
    const prog = part('programming') ? await programming() : null;
    const small = part('changes') ? await smallChanges() : null;
    if (part('forwarding')) await dataPath();
    console.log('\n== Targets ==');
    if (prog?.[200]) console.log(`fresh 200-VM host: ${(prog[200].apply / prog[200].floor).toFixed(2)}× the floor (target < 2×)`);
    if (small) console.log(`one-rule change at 200 VMs: ${ms(small.rule)} (target < 50 ms); one-member change: ${ms(small.member)} (target < 50 ms)`);
  } finally {
    for (const ns of namespaces) await dropNs(ns);
  }
}

await main();
