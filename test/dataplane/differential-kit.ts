// The differential check (case 12) as a reusable engine: random policies × random packets, sent as
// real crafted frames through each backend's kernel rules, compared with `evaluate` from the policy
// compiler. The test runs it at ≥1,000 cases per backend; `npm run bench -- differential` at 100,000.
//
// One lab host per backend, each with a VM `t`; every round gives both the same random policy and the
// same random packets (IPv4 and IPv6, TCP/UDP/ICMP/other protocols, CIDR and group peers), delivered
// to the VM for ingress and towards the uplink for egress. Packets avoid the always-on baseline that
// evaluate does not model (DNS, DHCP, ND/MLD, replies): unique source ports/ids keep every probe a new
// flow, and conntrack is flushed between the two directions. The seed (fresh unless given) replays a run.
import { createLab, sendFrameBatch, spawnIn, type Endpoint, type Host, type Lab, type Vm } from '../../src/lab/index.js';
import { evaluate } from '../../src/policy/api.js';
import type { AddressSet, FamilyPolicy, Packet, PolicyRule } from '../../src/policy/ir.js';
import type { Family } from '../../src/model/types.js';
import type { BackendName } from '../../src/dataplane/choose.js';
import { mulberry32 } from '../helpers/prng.js';
import { HostFw, closeAll, policyOf } from './kit.js';

export interface DiffOptions {
  backends: BackendName[];
  /** Cases per backend (rounded up to whole rounds). */
  cases: number;
  seed: number;
  /** Cases per direction per round (default 100). */
  perRound?: number;
  log?: (line: string) => void;
}

export interface DiffResult {
  seed: number;
  perBackend: Record<string, { cases: number; allowed: number; mismatches: string[] }>;
}

const PORTS = [1, 22, 79, 80, 81, 443, 444, 1000, 5432, 65535];
const CIDRS: Record<Family, string[]> = {
  4: ['0.0.0.0/0', '10.0.0.0/8', '10.1.0.0/16', '10.1.2.0/24', '192.0.2.7/32', '172.16.0.0/12'],
  6: ['::/0', '2001:db8:1::/48', '2001:db8:1:2::/64', '2001:db8:9::7/128', 'fd00::/8'],
};
const PEERS: Record<Family, string[]> = {
  4: ['10.1.2.3', '10.1.3.4', '10.2.0.1', '192.0.2.7', '192.0.2.8', '172.16.5.5', '203.0.113.5', '100.64.1.1'],
  6: ['2001:db8:1:2::5', '2001:db8:1:3::5', '2001:db8:9::7', '2001:db8:9::8', 'fd12::1', '2001:db8:77::1'],
};
export const DIFF_SETS: AddressSet[] = [
  { id: 'sgdiffv4', family: 4, members: ['10.2.0.1', '203.0.113.5'] },
  { id: 'sgdiffv6', family: 6, members: ['2001:db8:77::1'] },
];
// ICMP types outside the always-allowed ND/MLD range of ICMPv6.
const ICMP_TYPES: Record<Family, number[]> = { 4: [0, 3, 8, 11, 13], 6: [1, 3, 4, 128, 129, 200] };
const PROTOS = ['tcp', 'udp', 'icmp', 'all', 47, 132, 6] as const;
/** IP id (IPv4) / flow label (IPv6) ranges per backend, so one capture can tell them apart. */
const ID_SPAN = 30_000;

interface Case { id: number; packet: Packet }

class Gen {
  private ruleSeq = 0;
  constructor(readonly rnd: () => number) {}
  pick<T>(xs: readonly T[]): T { return xs[Math.floor(this.rnd() * xs.length)]; }

  rule(f: Family): PolicyRule {
    const protocol = this.pick(PROTOS);
    const r: PolicyRule = { id: `d${++this.ruleSeq}`, protocol, cidrs: [], sets: [], sources: [] };
    if (protocol === 'tcp' || protocol === 'udp') {
      const a = this.pick(PORTS), b = this.pick(PORTS);
      r.ports = { from: Math.min(a, b), to: Math.max(a, b) };
    }
    if (protocol === 'icmp') r.icmp = this.rnd() < 0.3 ? { type: -1, code: -1 } : { type: this.pick(ICMP_TYPES[f]), code: this.rnd() < 0.5 ? -1 : Math.floor(this.rnd() * 2) };
    const n = 1 + Math.floor(this.rnd() * 2);
    for (let i = 0; i < n; i++) { const c = this.pick(CIDRS[f]); if (!r.cidrs.includes(c)) r.cidrs.push(c); }
    if (this.rnd() < 0.3) r.sets.push(`sgdiffv${f}`);
    return r;
  }

  family(f: Family): Partial<FamilyPolicy> {
    const ingress = Array.from({ length: Math.floor(this.rnd() * 5) }, () => this.rule(f));
    const restricted = this.rnd() < 0.6;
    const egress = restricted ? Array.from({ length: 1 + Math.floor(this.rnd() * 3) }, () => this.rule(f)) : [];
    return { ingress, egress, egressRestricted: restricted };
  }

  packet(direction: 'ingress' | 'egress'): Packet {
    const family: Family = this.rnd() < 0.5 ? 4 : 6;
    const kind = this.pick(['tcp', 'udp', 'icmp', 47, 132] as const);
    const packet: Packet = { family, direction, protocol: kind, peer: this.pick(PEERS[family]) };
    if (kind === 'tcp' || kind === 'udp') packet.port = this.pick(PORTS);
    if (kind === 'icmp') { packet.icmpType = this.pick(ICMP_TYPES[family]); packet.icmpCode = Math.floor(this.rnd() * 2); }
    return packet;
  }
}

/** The scapy expression of one case, sent by `t` (egress) or to it (ingress). */
function frameOf(c: Case, t: Vm, out: Endpoint): string {
  const p = c.packet;
  const self = p.family === 4 ? t.ipv4! : t.ipv6!;
  const [src, dst] = p.direction === 'ingress' ? [p.peer, self] : [self, p.peer];
  const [smac, dmac] = p.direction === 'ingress' ? [out.mac, t.mac] : [t.mac, out.mac];
  const sport = 30000 + (c.id % 10000);
  let l3 = p.family === 4 ? `IP(src='${src}',dst='${dst}',ttl=77,id=${c.id}` : `IPv6(src='${src}',dst='${dst}',hlim=77,fl=${c.id}`;
  let l4: string;
  if (p.protocol === 'tcp' || p.protocol === 'udp') {
    l4 = p.protocol === 'tcp' ? `TCP(sport=${sport},dport=${p.port},flags='S')` : `UDP(sport=${sport},dport=${p.port})/Raw(b'd')`;
    l3 += ')';
  } else if (p.protocol === 'icmp') {
    if (p.family === 4) { l3 += ')'; l4 = `ICMP(type=${p.icmpType},code=${p.icmpCode},id=${c.id})`; }
    else { l3 += ',nh=58)'; l4 = `Raw(bytes([${p.icmpType},${p.icmpCode},0,0,0,0,0,0]))`; }
  } else {
    l3 += p.family === 4 ? `,proto=${p.protocol})` : `,nh=${p.protocol})`;
    l4 = `Raw(b'x'*16)`;
  }
  return `Ether(src='${smac}',dst='${dmac}')/${l3}/${l4}`;
}

/** tcpdump on an endpoint for our marked packets (TTL / hop limit 77); returns the ids seen. */
async function captureIds(on: Endpoint) {
  const p = spawnIn(on.netns, 'tcpdump', ['-i', on.iface, '-n', '-l', '-v', '-B', '32768', '--immediate-mode', '-Q', 'in', '(ip and ip[8] = 77) or (ip6 and ip6[7] = 77)']);
  await p.waitFor(/listening on/, 10_000);
  return {
    async stop(): Promise<Set<number>> {
      await new Promise((r) => setTimeout(r, 800));
      await p.stop(300);
      const ids = new Set<number>();
      for (const m of p.output().matchAll(/ttl 77, id (\d+)/g)) ids.add(Number(m[1]));
      for (const m of p.output().matchAll(/flowlabel (0x[0-9a-f]+), hlim 77/g)) ids.add(Number(m[1]));
      return ids;
    },
  };
}

export async function runDifferential(o: DiffOptions): Promise<DiffResult> {
  const log = o.log ?? (() => {});
  const perRound = o.perRound ?? 100;
  if (perRound * 2 > ID_SPAN) throw new Error(`at most ${ID_SPAN / 2} cases per direction per round`);
  const rounds = Math.ceil(o.cases / (perRound * 2));
  const gen = new Gen(mulberry32(o.seed));
  const setsById = new Map(DIFF_SETS.map((s) => [s.id, s]));
  const result: DiffResult = { seed: o.seed, perBackend: {} };
  let lab: Lab | null = null;
  try {
    lab = await createLab();
    const out: Endpoint = { netns: lab.outside.netns, iface: 'eth0', mac: lab.outside.mac };
    const sides: { backend: BackendName; host: Host; t: Vm; fw: HostFw; base: number }[] = [];
    for (const [i, backend] of o.backends.entries()) {
      const host = await lab.addHost(`d${i}`);
      const n = 90 + i;
      const t = await lab.addVm({ host, name: `t${i}`, nics: [{ mac: `52:54:00:00:05:${(n).toString(16)}`, ipv4: `198.51.100.${n}/24`, ipv6: `2001:db8:ff::${n}/64` }] });
      const fw = new HostFw(host, backend);
      fw.sets = DIFF_SETS;
      sides.push({ backend, host, t, fw, base: i * ID_SPAN });
      result.perBackend[backend] = { cases: 0, allowed: 0, mismatches: [] };
    }
    for (let round = 0; round < rounds; round++) {
      const v4 = gen.family(4);
      const v6 = gen.family(6);
      const ingress = Array.from({ length: perRound }, (_, i): Case => ({ id: i + 1, packet: gen.packet('ingress') }));
      const egress = Array.from({ length: perRound }, (_, i): Case => ({ id: perRound + i + 1, packet: gen.packet('egress') }));
      const policies = new Map(sides.map((s) => [s.backend, policyOf(s.t, v4, v6)]));
      const frames = (s: (typeof sides)[number], cases: Case[]) => cases.map((c) => ({ kind: 'raw' as const, expr: frameOf({ id: c.id + s.base, packet: c.packet }, s.t, out) }));
      // One direction at a time, conntrack flushed between: an allowed flow one way would otherwise
      // make a portless packet (GRE, generic protocols) the other way a legitimate reply.
      const seenIn = new Map<BackendName, Set<number>>();
      await Promise.all(sides.map(async (s) => {
        s.fw.set(policies.get(s.backend)!);
        await s.fw.apply();
        await s.host.exec('conntrack', ['-F'], { allowFail: true });
        const cap = await captureIds(s.t);
        await sendFrameBatch(out, frames(s, ingress));
        seenIn.set(s.backend, await cap.stop());
        await s.host.exec('conntrack', ['-F'], { allowFail: true });
      }));
      // egress: one capture on the uplink side sees every backend's packets (ids tell them apart)
      const capO = await captureIds(out);
      await Promise.all(sides.map((s) => sendFrameBatch(s.t, frames(s, egress))));
      const seenOut = await capO.stop();
      for (const s of sides) {
        const policy = policies.get(s.backend)!;
        const r = result.perBackend[s.backend];
        for (const [cases, seen] of [[ingress, seenIn.get(s.backend)!], [egress, seenOut]] as const) {
          for (const c of cases) {
            const want = evaluate(policy, c.packet, setsById).allow;
            const got = seen.has(c.id + s.base);
            r.cases++;
            if (want) r.allowed++;
            if (want !== got) {
              r.mismatches.push(`seed ${o.seed} round ${round} case ${c.id}: ${JSON.stringify(c.packet)} kernel=${got} evaluate=${want}\n  v${c.packet.family} policy: ${JSON.stringify(c.packet.family === 4 ? policy.v4 : policy.v6)}`);
            }
          }
        }
      }
      log(`round ${round + 1}/${rounds}: ${sides.map((s) => `${s.backend} ${result.perBackend[s.backend].cases} cases, ${result.perBackend[s.backend].mismatches.length} mismatches`).join('; ')}`);
    }
    return result;
  } finally {
    await closeAll();
    await lab?.destroy();
  }
}

/** A fresh seed (printed by callers, so any failure can be replayed with PALISADE_DIFF_SEED). */
export function freshSeed(): number {
  const env = process.env.PALISADE_DIFF_SEED;
  return env ? Number(env) : (Date.now() ^ (process.pid << 16)) >>> 0;
}
