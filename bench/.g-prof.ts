import { performance } from 'node:perf_hooks';
import { run, runIn } from '../src/lab/index.js';
import { IptablesDataplane } from '../src/dataplane/iptables/backend.js';
import { render } from '../src/dataplane/iptables/render.js';
import { plan, expectedState } from '../src/dataplane/iptables/kernel.js';
import type { HostDesiredState, PolicyRule, VmPolicy } from '../src/policy/ir.js';
const GROUP = { id: 'sgbenchv4', family: 4 as const, members: Array.from({ length: 50 }, (_, i) => `10.200.${i >> 8}.${(i & 255) + 1}`) };
function benchVm(i: number, variant = 0): VmPolicy {
  const hx = (n: number) => n.toString(16).padStart(2, '0');
  const ingress: PolicyRule[] = Array.from({ length: 10 }, (_, k) => ({
    id: `b${i}r${k}`, protocol: k % 3 === 0 ? 'udp' : 'tcp', ports: { from: 1000 + k * 10 + (k === 0 ? variant : 0), to: 1005 + k * 10 + (k === 0 ? variant : 0) },
    cidrs: [`10.${k}.${i & 255}.0/24`, `172.16.${k * 2}.0/23`], sets: [], sources: [],
  }));
  ingress.push({ id: `b${i}grp`, protocol: 'tcp', ports: { from: 5432, to: 5432 }, cidrs: [], sets: [GROUP.id], sources: [] });
  const egress: PolicyRule[] = [
    { id: `b${i}e0`, protocol: 'tcp', ports: { from: 443, to: 443 }, cidrs: ['0.0.0.0/0'], sets: [], sources: [] },
  ];
  return { vmId: `bench-${String(i).padStart(4, '0')}`, instanceName: `i-3-${1000 + i}-VM`, hash: `h${i}`,
    nics: [{ nicId: `bn${i}`, mac: `52:54:00:aa:${hx(i >> 8)}:${hx(i & 255)}`, ipv4: [`10.100.${i >> 8}.${(i & 255) + 1}`], ipv6: [], isDefault: true, deviceName: null }],
    v4: { ingress, egress, egressRestricted: true, notrack: false }, v6: { ingress: [], egress: [], egressRestricted: false, notrack: false } };
}
const n = 200;
const ports = { nics: Object.fromEntries(Array.from({ length: n }, (_, i) => [`bn${i}`, { device: `vnf${i}`, bridge: 'cloudbr0' }])), bridges: { cloudbr0: { uplinks: ['eth0'], unknownTaps: [] } } };
const base: HostDesiredState = { hostId: 'b', revision: 1, vms: Array.from({ length: n }, (_, i) => benchVm(i)), sets: [GROUP] };
const ns = `gprof${process.pid}`;
await run('ip', ['netns', 'add', ns]);
try {
  const dp = new IptablesDataplane({ netns: ns });
  await dp.apply({ state: base, ports });
  const t = async (what: string, f: () => unknown, k = 10) => { const xs: number[] = []; for (let i = 0; i < k; i++) { const t0 = performance.now(); await f(); xs.push(performance.now() - t0); } xs.sort((a, b) => a - b); console.log(what, xs[k >> 1].toFixed(2), 'ms (min', xs[0].toFixed(2), ')'); };
  const vms = base.vms.map((v, i) => (i === 100 ? benchVm(i, 3) : v));
  const st = { ...base, vms };
  await t('render (1 vm changed)', () => render({ state: st, ports }));
  const rd = render({ state: st, ports });
  const known = expectedState(render({ state: base, ports }).program);
  await t('plan', () => plan(rd.program, known));
  await t('expectedState', () => expectedState(rd.program));
  const pl = plan(rd.program, known);
  console.log('plan v4 text lines', pl.iptables[4].split('\n').length, 'v6', pl.iptables[6].length, 'eb', pl.ebtables.length, 'ipset', pl.ipsetPre.length);
  console.log(pl.iptables[4]);
  await t('iptables-restore --noflush one chain', () => runIn(ns, 'iptables-restore', ['--noflush'], { stdin: pl.iptables[4] }));
  await t('iptables-restore --noflush empty *filter COMMIT', () => runIn(ns, 'iptables-restore', ['--noflush'], { stdin: '*filter\nCOMMIT\n' }));
  await t('iptables -S one chain', () => runIn(ns, 'iptables', ['-S', 'i-3-1100-VM']));
  await t('iptables-legacy?', () => runIn(ns, 'sh', ['-c', 'command -v iptables-legacy-restore'], { allowFail: true } as any), 1);
  await t('nft list chain', () => runIn(ns, 'nft', ['list', 'chain', 'ip', 'filter', 'i-3-1100-VM']));
} finally { console.log("NS", ns); }
