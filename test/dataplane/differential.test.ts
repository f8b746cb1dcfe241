// Case 12, differential: random policies × random packets. The kernel's verdict, observed with real
// crafted packets (delivered to the VM for ingress, to the uplink side for egress), must equal
// `evaluate` from the policy compiler. Packets avoid the always-on baseline that evaluate does not
// model (DNS, DHCP, ND/MLD, replies): unique source ports/ids keep every probe a new flow.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createLab, sendFrames, spawnIn, type Lab, type Vm, type Host, type Endpoint } from '../../src/lab/index.js';
import { evaluate } from '../../src/policy/api.js';
import type { AddressSet, FamilyPolicy, Packet, PolicyRule } from '../../src/policy/ir.js';
import type { Family } from '../../src/model/types.js';
import { HostFw, policyOf } from './kit.js';

const ROUNDS = 5;
const PER_ROUND = 40; // per direction → 400 cases per run

// Deterministic PRNG (seed printed on failure) so a failing run can be replayed.
const SEED = Number(process.env.PALISADE_DIFF_SEED ?? Date.now() % 1_000_000);
let state = SEED || 1;
const rnd = () => ((state = (state * 1103515245 + 12345) & 0x7fffffff) / 0x80000000);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];

const PORTS = [1, 22, 79, 80, 81, 443, 444, 1000, 5432, 65535];
const CIDRS: Record<Family, string[]> = {
  4: ['0.0.0.0/0', '10.0.0.0/8', '10.1.0.0/16', '10.1.2.0/24', '192.0.2.7/32', '172.16.0.0/12'],
  6: ['::/0', '2001:db8:1::/48', '2001:db8:1:2::/64', '2001:db8:9::7/128', 'fd00::/8'],
};
const PEERS: Record<Family, string[]> = {
  4: ['10.1.2.3', '10.1.3.4', '10.2.0.1', '192.0.2.7', '192.0.2.8', '172.16.5.5', '203.0.113.5', '100.64.1.1'],
  6: ['2001:db8:1:2::5', '2001:db8:1:3::5', '2001:db8:9::7', '2001:db8:9::8', 'fd12::1', '2001:db8:77::1'],
};
const SETS: AddressSet[] = [
  { id: 'sgdiffv4', family: 4, members: ['10.2.0.1', '203.0.113.5'] },
  { id: 'sgdiffv6', family: 6, members: ['2001:db8:77::1'] },
];
// ICMP types outside the always-allowed ND/MLD range of ICMPv6.
const ICMP_TYPES: Record<Family, number[]> = { 4: [0, 3, 8, 11, 13], 6: [1, 3, 4, 128, 129, 200] };
const PROTOS = ['tcp', 'udp', 'icmp', 'all', 47, 132, 6] as const;

let ruleSeq = 0;
function randomRule(f: Family): PolicyRule {
  const protocol = pick(PROTOS);
  const r: PolicyRule = { id: `d${++ruleSeq}`, protocol, cidrs: [], sets: [], sources: [] };
  if (protocol === 'tcp' || protocol === 'udp') {
    const a = pick(PORTS), b = pick(PORTS);
    r.ports = { from: Math.min(a, b), to: Math.max(a, b) };
  }
  if (protocol === 'icmp') r.icmp = rnd() < 0.3 ? { type: -1, code: -1 } : { type: pick(ICMP_TYPES[f]), code: rnd() < 0.5 ? -1 : Math.floor(rnd() * 2) };
  const n = 1 + Math.floor(rnd() * 2);
  for (let i = 0; i < n; i++) { const c = pick(CIDRS[f]); if (!r.cidrs.includes(c)) r.cidrs.push(c); }
  if (rnd() < 0.3) r.sets.push(`sgdiffv${f}`);
  return r;
}

function randomFamily(f: Family): Partial<FamilyPolicy> {
  const ingress = Array.from({ length: Math.floor(rnd() * 5) }, () => randomRule(f));
  const restricted = rnd() < 0.6;
  const egress = restricted ? Array.from({ length: 1 + Math.floor(rnd() * 3) }, () => randomRule(f)) : [];
  return { ingress, egress, egressRestricted: restricted };
}

interface Case { id: number; packet: Packet; expr: string }

let lab: Lab;
let h1: Host;
let t: Vm;
let out: Endpoint;
let fw: HostFw;

function randomCase(id: number, direction: 'ingress' | 'egress'): Case {
  const family: Family = rnd() < 0.5 ? 4 : 6;
  const peer = pick(PEERS[family]);
  const kind = pick(['tcp', 'udp', 'icmp', 47, 132] as const);
  const self = family === 4 ? t.ipv4! : t.ipv6!;
  const [src, dst] = direction === 'ingress' ? [peer, self] : [self, peer];
  const [smac, dmac] = direction === 'ingress' ? [out.mac, t.mac] : [t.mac, out.mac];
  const sport = 30000 + (id % 10000);
  const packet: Packet = { family, direction, protocol: kind, peer };
  let l3 = family === 4 ? `IP(src='${src}',dst='${dst}',ttl=77,id=${id}` : `IPv6(src='${src}',dst='${dst}',hlim=77,fl=${id}`;
  let l4: string;
  if (kind === 'tcp' || kind === 'udp') {
    packet.port = pick(PORTS);
    l4 = kind === 'tcp' ? `TCP(sport=${sport},dport=${packet.port},flags='S')` : `UDP(sport=${sport},dport=${packet.port})/Raw(b'd')`;
    l3 += ')';
  } else if (kind === 'icmp') {
    packet.icmpType = pick(ICMP_TYPES[family]);
    packet.icmpCode = Math.floor(rnd() * 2);
    if (family === 4) { l3 += ')'; l4 = `ICMP(type=${packet.icmpType},code=${packet.icmpCode},id=${id})`; }
    else { l3 += ',nh=58)'; l4 = `Raw(bytes([${packet.icmpType},${packet.icmpCode},0,0,0,0,0,0]))`; }
  } else {
    l3 += family === 4 ? `,proto=${kind})` : `,nh=${kind})`;
    l4 = `Raw(b'x'*16)`;
  }
  return { id, packet, expr: `Ether(src='${smac}',dst='${dmac}')/${l3}/${l4}` };
}

/** tcpdump on an endpoint for our marked packets (TTL / hop limit 77); returns the ids seen. */
async function captureIds(on: Endpoint) {
  const p = spawnIn(on.netns, 'tcpdump', ['-i', on.iface, '-n', '-l', '-v', '--immediate-mode', '-Q', 'in', '(ip and ip[8] = 77) or (ip6 and ip6[7] = 77)']);
  await p.waitFor(/listening on/, 5000);
  return {
    async stop(): Promise<Set<number>> {
      await new Promise((r) => setTimeout(r, 700));
      await p.stop(300);
      const ids = new Set<number>();
      for (const m of p.output().matchAll(/ttl 77, id (\d+)/g)) ids.add(Number(m[1]));
      for (const m of p.output().matchAll(/flowlabel (0x[0-9a-f]+), hlim 77/g)) ids.add(Number(m[1]));
      return ids;
    },
  };
}

before(async () => {
  lab = await createLab();
  h1 = await lab.addHost('h1');
  t = await lab.addVm({ host: h1, name: 't', nics: [{ mac: '52:54:00:00:05:01', ipv4: '198.51.100.90/24', ipv6: '2001:db8:ff::90/64' }] });
  out = { netns: lab.outside.netns, iface: 'eth0', mac: lab.outside.mac };
  fw = new HostFw(h1);
  fw.sets = SETS;
});

after(async () => { await lab?.destroy(); });

test(`12. differential: kernel verdicts equal evaluate() (${ROUNDS * PER_ROUND * 2} cases, seed ${SEED})`, async () => {
  const sets = new Map(SETS.map((s) => [s.id, s]));
  const mismatches: string[] = [];
  let nextId = 1;
  let allowed = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const policy = policyOf(t, randomFamily(4), randomFamily(6));
    fw.set(policy);
    await fw.apply();
    const ingress = Array.from({ length: PER_ROUND }, () => randomCase(nextId++, 'ingress'));
    const egress = Array.from({ length: PER_ROUND }, () => randomCase(nextId++, 'egress'));
    // One direction at a time, conntrack flushed between: an allowed flow one way would otherwise make a
    // portless packet (GRE, generic protocols) the other way a legitimate reply.
    await h1.exec('conntrack', ['-F'], { allowFail: true });
    const capT = await captureIds(t);
    await sendFrames(out, ingress.map((c) => ({ kind: 'raw' as const, expr: c.expr })));
    const seenT = await capT.stop();
    await h1.exec('conntrack', ['-F'], { allowFail: true });
    const capO = await captureIds(out);
    await sendFrames(t, egress.map((c) => ({ kind: 'raw' as const, expr: c.expr })));
    const seenO = await capO.stop();
    for (const [cases, seen] of [[ingress, seenT], [egress, seenO]] as const) {
      for (const c of cases) {
        const want = evaluate(policy, c.packet, sets).allow;
        const got = seen.has(c.id);
        if (want) allowed++;
        if (want !== got) {
          mismatches.push(`round ${round} case ${c.id}: ${JSON.stringify(c.packet)} kernel=${got} evaluate=${want}\n  v${c.packet.family} policy: ${JSON.stringify(c.packet.family === 4 ? policy.v4 : policy.v6)}`);
        }
      }
    }
  }
  const total = ROUNDS * PER_ROUND * 2;
  assert.deepEqual(mismatches, [], `seed ${SEED}`);
  // both verdicts must actually occur, or the comparison says little
  assert.ok(allowed > total * 0.1 && allowed < total * 0.9, `allowed ${allowed} of ${total}`);
});
