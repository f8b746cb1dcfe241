// Dataplane benchmark (issues 3 and 10), every figure against a floor measured in the same run:
//  - forwarding between two VMs of one host (UDP 64-byte packets/s, ping RTT, TCP throughput) for the
//    floors — bare bridge, br_netfilter with no rules, a minimal stateful iptables ruleset, the same in
//    nft (`inet`), the nft floor with the three more hooks the bridged design needs on this kernel
//    (empty: the design's own floor) — and each backend with 0 and with 500 other VMs programmed;
//    configurations are interleaved round by round so a shared machine's drifting load hits them alike.
//    Besides the rates, the CPU time the sending side spends per 64-byte packet (the iperf3 client's
//    own time plus ksoftirqd's, over a fixed number of packets: the whole forwarding path runs in the
//    sender's softirq context) — time on the CPU, so another process taking turns on it does not
//    count, which makes it steadier than a rate on a shared 2-core machine;
//  - programming a fresh host per backend against its own restore floor (the same ruleset loaded by
//    `nft -f` / `iptables-restore` into an empty namespace), and a 2,000-VM cold start;
//  - one rule changed and one group member added at 200 VMs, and the same state applied again.
// Needs root. Time limit: 1800 s (a quiet 2-core machine needs ~18 min, the forwarding part ~12).
// Run: node --import tsx bench/dataplane.ts [--quick] [--only=forwarding|programming|changes]
import fs from 'node:fs';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { run, runIn, createLab, listenTcp, type Vm } from '../src/lab/index.js';
import { createRunner } from '../src/dataplane/exec.js';
import { IptablesDataplane } from '../src/dataplane/iptables/backend.js';
import { NftablesDataplane } from '../src/dataplane/nftables/backend.js';
import { render as renderIpt } from '../src/dataplane/iptables/render.js';
import { render as renderNft } from '../src/dataplane/nftables/render.js';
import { discoverPorts } from '../src/dataplane/ports.js';
import type { BackendName } from '../src/dataplane/choose.js';
import type { HostPorts } from '../src/dataplane/backend.js';
import type { AddressSet, HostDesiredState, PolicyRule, VmPolicy } from '../src/policy/ir.js';
import { summary } from './summary.js';

const QUICK = process.argv.includes('--quick');
/** --only=programming|changes|forwarding runs one part. */
const ONLY = process.argv.find((a) => a.startsWith('--only='))?.slice(7) ?? null;
const part = (p: string) => !ONLY || ONLY === p;
const SIZES = QUICK ? [50, 200] : [50, 200, 500];
const COLD = QUICK ? 500 : 2000;
const REPEAT = QUICK ? 1 : 3;
const ROUNDS = QUICK ? 1 : 3;
/** The backend `--dataplane auto` picks on a kernel with nftables: the one the targets are for. */
const DEFAULT: BackendName = 'nftables';
const BACKENDS: BackendName[] = ['nftables', 'iptables'];
const GROUP: AddressSet = { id: 'sgbenchv4', family: 4, members: Array.from({ length: 50 }, (_, i) => `10.200.${i >> 8}.${(i & 255) + 1}`) };

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ms = (x: number) => `${x.toFixed(1)} ms`;
const make = (b: BackendName, netns: string) => (b === 'nftables' ? new NftablesDataplane({ netns }) : new IptablesDataplane({ netns }));

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

// ---- programming a fresh host ------------------------------------------------------------------

/** The same ruleset loaded by the tools alone into an empty namespace (what a write cannot beat). */
async function restoreFloor(backend: BackendName, input: { state: HostDesiredState; ports: HostPorts }): Promise<number> {
  const ns = await freshNs();
  try {
    if (backend === 'nftables') {
      const script = renderNft(input).script;
      const [, t] = await timed(() => runIn(ns, 'nft', ['-f', '-'], { stdin: script, timeoutMs: 300_000 }));
      return t;
    }
    const r = renderIpt(input);
    await runIn(ns, 'ipset', ['restore'], { stdin: r.ipset, timeoutMs: 60_000 });
    const [, t4] = await timed(() => runIn(ns, 'iptables-restore', [], { stdin: r.iptables, timeoutMs: 300_000 }));
    const [, t6] = await timed(() => runIn(ns, 'ip6tables-restore', [], { stdin: r.ip6tables, timeoutMs: 300_000 }));
    return t4 + t6;
  } finally { await dropNs(ns); }
}

async function programming() {
  console.log('\n== Programming a fresh host ==');
  console.log('backend | VMs | apply | floor (the same ruleset by nft -f / iptables-restore + ip6tables-restore) | ratio');
  const out: Record<string, Record<number, { apply: number; floor: number }>> = {};
  for (const backend of BACKENDS) {
    out[backend] = {};
    for (const n of SIZES) {
      const input = { state: benchState(n), ports: fakePorts(n) };
      const applies: number[] = [];
      const floors: number[] = [];
      for (let k = 0; k < REPEAT; k++) {
        const ns = await freshNs();
        const dp = make(backend, ns);
        const [, t] = await timed(() => dp.apply(input));
        applies.push(t);
        await dp.close();
        await dropNs(ns);
        floors.push(await restoreFloor(backend, input));
      }
      const apply = median(applies);
      const floor = median(floors);
      out[backend][n] = { apply, floor };
      console.log(`${backend} | ${n} | ${ms(apply)} | ${ms(floor)} | ${(apply / floor).toFixed(2)}×`);
      summary('dataplane', `${backend}: fresh host, ${n} VMs: apply`, apply, 'ms');
      summary('dataplane', `${backend}: fresh host, ${n} VMs: apply / restore floor`, apply / floor, '×', n === 200 ? (backend === DEFAULT ? '≤ 1.3' : '< 2') : '');
    }
  }
  // A cold start of a big host: nftables writes it in several transactions (never holding the
  // kernel's nftables lock for long); each transaction's time is a bound on how long it held it.
  const input = { state: benchState(COLD), ports: fakePorts(COLD) };
  for (const backend of BACKENDS) {
    const ns = await freshNs();
    const dp = make(backend, ns);
    const [res, t] = await timed(() => dp.apply(input));
    await dp.close();
    await dropNs(ns);
    const floor = await restoreFloor(backend, input);
    const longest = Math.max(...res.steps.map((s) => s.ms));
    console.log(`${backend} | ${COLD} (cold start) | ${ms(t)} in ${res.steps.length} transaction(s), longest ${ms(longest)} | floor ${ms(floor)} | ${(t / floor).toFixed(2)}×`);
    summary('dataplane', `${backend}: cold start, ${COLD} VMs`, t, 'ms');
    summary('dataplane', `${backend}: cold start, ${COLD} VMs: longest transaction`, longest, 'ms');
  }
  return out;
}

// ---- small changes -----------------------------------------------------------------------------

async function smallChanges() {
  const n = 200;
  const res: Record<string, { rule: number; member: number }> = {};
  for (const backend of BACKENDS) {
    console.log(`\n== Small changes at ${n} VMs (${backend}, warm agent) ==`);
    const ns = await freshNs();
    const dp = make(backend, ns);
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
    const cold = make(backend, ns);
    const [, tCold] = await timed(() => cold.apply({ state: benchState(n), ports }));
    const [obs, tObs] = await timed(() => cold.observe({ state: benchState(n), ports }));
    // Per-rule hits: the agent's counter reading (every --counters-interval) against observe (the drift
    // check every --reconcile-interval), both full reads of what Palisade owns.
    const refs = benchState(n).vms.map((v) => ({ vmId: v.vmId, instanceName: v.instanceName }));
    const reads: number[] = [];
    let counted = 0;
    for (let k = 0; k < 5; k++) { const [c, t] = await timed(() => cold.ruleCounts(refs)); reads.push(t); counted = c.length; }
    const observes: number[] = [];
    for (let k = 0; k < 3; k++) observes.push((await timed(() => cold.observe({ state: benchState(n), ports })))[1]);
    const tObs2 = median(observes);
    summary('dataplane', `${backend}: rule counter read at ${n} VMs`, median(reads), 'ms');
    summary('dataplane', `${backend}: rule counter read / observe at ${n} VMs`, median(reads) / tObs2, '×', backend === DEFAULT ? '≤ 1' : '');
    const target = (def: string, other: string) => (backend === DEFAULT ? def : other);
    summary('dataplane', `${backend}: one-rule change at ${n} VMs`, median(rule), 'ms', target('≤ 10', '< 50'));
    summary('dataplane', `${backend}: one-member change at ${n} VMs`, median(member), 'ms', target('≤ 5', '< 50'));
    summary('dataplane', `${backend}: same state again at ${n} VMs (writes nothing)`, median(noop), 'ms');
    console.log(`one rule of one VM changed : median ${ms(median(rule))} (min ${ms(Math.min(...rule))}, max ${ms(Math.max(...rule))})`);
    console.log(`one group member added     : median ${ms(median(member))} (min ${ms(Math.min(...member))}, max ${ms(Math.max(...member))})`);
    console.log(`same state again (no write): median ${ms(median(noop))}`);
    console.log(`cold agent (reads the kernel, then writes the diff): ${ms(tCold)}; observe: ${ms(tObs)} (${obs.drift.length} drift items)`);
    console.log(`rule counter read (per-rule hits): median ${ms(median(reads))} for ${counted} kernel rules; observe ${ms(tObs2)}`);
    for (const w of writes) console.log(w);
    await dp.close();
    await cold.close();
    await dropNs(ns);
    res[backend] = { rule: median(rule), member: median(member) };
  }
  return res;
}

// ---- forwarding --------------------------------------------------------------------------------

interface Fwd { tcpGbps: number; udpPps: number; pingMs: number; cpuUs: number }

/** Nanoseconds the ksoftirqd threads have run (sched clock, /proc/<pid>/schedstat). */
async function softirqNs(): Promise<number> {
  const pids = (await run('pgrep', ['-x', '-d', ' ', 'ksoftirqd/[0-9]+'], { allowFail: true })).stdout.trim().split(/\s+/).filter(Boolean);
  let ns = 0;
  for (const pid of pids) {
    try { ns += Number(fs.readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]) || 0; } catch { /* gone */ }
  }
  return ns;
}

/**
 * CPU time (µs) the sending side spends per 64-byte UDP packet: the iperf3 client's user + system time
 * (the kernel's rusage is its exact run time) plus what ksoftirqd ran meanwhile, over a fixed number of
 * packets. The path through the bridge, netfilter and both veths runs in the sender's softirq context.
 */
async function cpuPerPacket(a: Vm, b: Vm): Promise<number> {
  const packets = QUICK ? 100_000 : 400_000;
  const srv = a.lab.background(b.netns, 'iperf3', ['-s', '-1', '-p', '5201', '-A', '1']);
  await srv.waitFor(/listening/i, 5000).catch(() => new Promise((r) => setTimeout(r, 300)));
  const before = await softirqNs();
  // bash's `times`: the second line is the children's user and system time
  const out = await a.exec('bash', ['-c', `iperf3 -c ${b.ipv4} -p 5201 -A 0 -u -l 64 -b 0 -k ${packets} -J > /dev/null && times`], { timeoutMs: 60_000 });
  const after = await softirqNs();
  await srv.exited;
  const t = /\n(\d+)m([\d.]+)s (\d+)m([\d.]+)s\s*$/.exec(out.stdout);
  if (!t) throw new Error(`cpuPerPacket: no times in ${JSON.stringify(out.stdout.slice(-200))}`);
  const seconds = Number(t[1]) * 60 + Number(t[2]) + Number(t[3]) * 60 + Number(t[4]) + (after - before) / 1e9;
  return (seconds * 1e6) / packets;
}

async function iperf(a: Vm, b: Vm, args: string[]): Promise<any> {
  // Sender and receiver pinned to different CPUs: left to the scheduler they sometimes share one, which
  // halves the rate of that run whatever the firewall does (the forwarding work runs on the sender's CPU).
  const cpus = os.availableParallelism();
  const pin = (cpu: number) => (cpus > 1 ? ['-A', String(cpu % cpus)] : []);
  const srv = a.lab.background(b.netns, 'iperf3', ['-s', '-1', '-p', '5201', ...pin(1)]);
  await srv.waitFor(/listening/i, 5000).catch(() => new Promise((r) => setTimeout(r, 300)));
  const out = JSON.parse((await a.exec('iperf3', ['-c', b.ipv4!, '-p', '5201', '-t', '2', '-J', ...pin(0), ...args], { timeoutMs: 30_000 })).stdout);
  await srv.exited;
  return out;
}

async function measure(a: Vm, b: Vm): Promise<Fwd> {
  const server = await listenTcp(b, 1); // warms ARP and conntrack paths; iperf3 below is the measurement
  await server.close();
  const tcp = (await iperf(a, b, [])).end.sum_received.bits_per_second / 1e9;
  const us = (await iperf(a, b, ['-u', '-l', '64', '-b', '0'])).end.sum;
  const p = await a.exec('ping', ['-q', '-c', '50', '-i', '0.01', b.ipv4!], { timeoutMs: 30_000 });
  const m = /= [\d.]+\/([\d.]+)\//.exec(p.stdout);
  const cpuUs = await cpuPerPacket(a, b);
  return { tcpGbps: tcp, udpPps: (us.packets - us.lost_packets) / us.seconds, pingMs: m ? Number(m[1]) : NaN, cpuUs };
}

let currentLab: { destroy(): Promise<void> } | null = null;

const MIN_IPT = `*filter
:FORWARD DROP [0:0]
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -p tcp -m tcp --dport 5201 -j ACCEPT
-A FORWARD -p udp -m udp --dport 5201 -j ACCEPT
-A FORWARD -p icmp -j ACCEPT
COMMIT
`;
const MIN_NFT = `table inet floor {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    tcp dport 5201 accept
    udp dport 5201 accept
    meta l4proto icmp accept
  }
}
`;

/**
 * The design's own floor on this kernel: the minimal nft ruleset plus the three further hooks a
 * bridged, zoned design needs without bridge-family conntrack (bridge prerouting and forward to see the
 * ports, inet prerouting to set the zone before conntrack), with nothing in them but the zone rule.
 */
const HOOKS_NFT = `${MIN_NFT}table bridge floor {
  chain prerouting { type filter hook prerouting priority -250; policy accept; }
  chain forward { type filter hook forward priority -250; policy accept; }
}
table inet floorzone {
  map zones { typeof meta mark : ct zone; elements = { 1 : 1 } }
  chain raw {
    type filter hook prerouting priority -300; policy accept;
    ct zone set meta mark and 0xfff map @zones
  }
}
`;

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
    // "zz" ids sort after the bench VMs: the measured pair's dispatch rules come last (iptables' worst case).
    const real = [pol(a, 'zz-a', 'i-4-1-VM'), pol(b, 'zz-b', 'i-4-2-VM')];
    const st0: HostDesiredState = { hostId: 'h1', revision: 1, vms: real, sets: [GROUP] };
    const realPorts = await discoverPorts(createRunner({ netns: h.netns }), st0);
    const f500 = fakePorts(500);
    const st500 = benchState(500, real);
    const ports500: HostPorts = { nics: { ...f500.nics, ...realPorts.nics }, bridges: realPorts.bridges };
    const sysctl = (v: 0 | 1) => h.exec('sysctl', ['-qw', `net.bridge.bridge-nf-call-iptables=${v}`, `net.bridge.bridge-nf-call-ip6tables=${v}`]);
    type Config = { name: string; up: () => Promise<unknown>; down: () => Promise<unknown> };
    const backend = (name: BackendName, others: number): Config => {
      let dp: NftablesDataplane | IptablesDataplane | null = null;
      return {
        name: `${name}, ${others} other VMs`,
        up: async () => { dp = make(name, h.netns); await dp.apply(others ? { state: st500, ports: ports500 } : { state: st0, ports: realPorts }); },
        down: async () => { await dp!.teardown(); await dp!.close(); },
      };
    };
    const configs: Config[] = [
      { name: 'bare bridge (br_netfilter off)', up: () => sysctl(0), down: () => sysctl(1) },
      { name: 'br_netfilter, no rules', up: async () => {}, down: async () => {} },
      { name: 'minimal stateful iptables', up: () => h.exec('iptables-restore', [], { stdin: MIN_IPT }), down: () => h.exec('sh', ['-c', 'iptables -P FORWARD ACCEPT; iptables -F FORWARD']) },
      { name: 'minimal stateful nft (inet)', up: () => h.exec('nft', ['-f', '-'], { stdin: MIN_NFT }), down: () => h.exec('nft', ['delete', 'table', 'inet', 'floor']) },
      { name: 'the same + 3 empty hooks (design floor)', up: () => h.exec('nft', ['-f', '-'], { stdin: HOOKS_NFT }),
        down: () => h.exec('sh', ['-c', 'nft delete table inet floor; nft delete table bridge floor; nft delete table inet floorzone']) },
      backend('nftables', 0), backend('nftables', 500), backend('iptables', 0), backend('iptables', 500),
    ];
    const runs = new Map<string, Fwd[]>(configs.map((c) => [c.name, []]));
    for (let round = 0; round < ROUNDS; round++) {
      // a different order each round: whatever the load does, no configuration always goes first
      const order = configs.map((c, i) => configs[(i + round) % configs.length]);
      for (const c of order) {
        await c.up();
        runs.get(c.name)!.push(await measure(a, b));
        await c.down();
      }
      console.log(`round ${round + 1}/${ROUNDS} done (load ${(await run('cat', ['/proc/loadavg'])).stdout.split(' ').slice(0, 3).join(' ')})`);
    }
    const med = (name: string): Fwd => {
      const rs = runs.get(name)!;
      return { tcpGbps: median(rs.map((r) => r.tcpGbps)), udpPps: median(rs.map((r) => r.udpPps)), pingMs: median(rs.map((r) => r.pingMs)), cpuUs: median(rs.map((r) => r.cpuUs)) };
    };
    const bare = med(configs[0].name);
    const def0 = (n: string) => n.startsWith(DEFAULT);
    const floorOf = (n: string) => med(n.startsWith('nftables') ? 'minimal stateful nft (inet)' : 'minimal stateful iptables');
    const design = med('the same + 3 empty hooks (design floor)');
    console.log(`config | TCP Gbit/s | UDP 64 B pps | ping RTT ms | sender CPU µs/packet | × bare (TCP/UDP/RTT) | × its family's stateful floor (TCP/UDP/RTT/CPU per packet)   [median of ${ROUNDS} interleaved rounds]`);
    for (const c of configs) {
      const r = med(c.name);
      const isBackend = /other VMs/.test(c.name);
      const f = isBackend ? floorOf(c.name) : null;
      const x = (v: number, w: number) => (v / w).toFixed(2);
      console.log(`${c.name} | ${r.tcpGbps.toFixed(2)} | ${Math.round(r.udpPps)} | ${r.pingMs.toFixed(3)} | ${r.cpuUs.toFixed(2)} | ${x(r.tcpGbps, bare.tcpGbps)}/${x(r.udpPps, bare.udpPps)}/${x(r.pingMs, bare.pingMs)}`
        + (f ? ` | ${x(r.tcpGbps, f.tcpGbps)}/${x(r.udpPps, f.udpPps)}/${x(r.pingMs, f.pingMs)}/${x(r.cpuUs, f.cpuUs)}` : ''));
      summary('dataplane', `${c.name}: UDP 64 B pps`, r.udpPps, 'pps');
      summary('dataplane', `${c.name}: sender CPU per 64 B packet`, r.cpuUs, 'µs');
      if (!isBackend) {
        summary('dataplane', `${c.name}: UDP pps / bare`, r.udpPps / bare.udpPps, '×');
        continue;
      }
      summary('dataplane', `${c.name}: CPU per packet / stateful floor`, r.cpuUs / f!.cpuUs, '×', def0(c.name) ? '≤ 1.05 (the pps target as CPU)' : '');
      if (c.name.startsWith('nftables')) {
        summary('dataplane', `${c.name}: CPU per packet / design floor (3 empty hooks)`, r.cpuUs / design.cpuUs, '×');
        summary('dataplane', `${c.name}: UDP 64 B pps / design floor (3 empty hooks)`, r.udpPps / design.udpPps, '×');
      }
      const def = c.name.startsWith(DEFAULT);
      summary('dataplane', `${c.name}: UDP 64 B pps / stateful floor`, r.udpPps / f!.udpPps, '×', def ? '≥ 0.95' : '');
      summary('dataplane', `${c.name}: ping RTT / stateful floor`, r.pingMs / f!.pingMs, '×', def ? '≤ 1.15' : '');
      summary('dataplane', `${c.name}: TCP throughput / stateful floor`, r.tcpGbps / f!.tcpGbps, '×', def ? '≥ 0.95' : '');
    }
    for (const name of BACKENDS) {
      const zero = med(`${name}, 0 other VMs`);
      const many = med(`${name}, 500 other VMs`);
      console.log(`${name}: 500 other VMs vs 0: UDP pps ${(many.udpPps / zero.udpPps).toFixed(3)}×, RTT ${(many.pingMs / zero.pingMs).toFixed(3)}×`);
      summary('dataplane', `${name}: UDP pps with 500 other VMs / with 0`, many.udpPps / zero.udpPps, '×', name === DEFAULT ? '≥ 0.95' : '');
    }
  } finally {
    await lab.destroy();
    currentLab = null;
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
  console.log((await run('nft', ['--version'])).stdout.trim(), '|', (await run('iptables', ['--version'])).stdout.trim(), '| kernel', (await run('uname', ['-r'])).stdout.trim(),
    '| cpus', (await run('nproc', [])).stdout.trim(), '| load', (await run('cat', ['/proc/loadavg'])).stdout.split(' ').slice(0, 3).join(' '));
  try {
    if (part('forwarding')) await dataPath();
    if (part('programming')) await programming();
    if (part('changes')) await smallChanges();
  } finally {
    for (const ns of namespaces) await dropNs(ns);
  }
}

await main();

