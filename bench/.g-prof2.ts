import { performance } from 'node:perf_hooks';
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
  return { vmId: `bench-${String(i).padStart(4, '0')}`, instanceName: `i-3-${1000 + i}-VM`, hash: `h${i}`,
    nics: [{ nicId: `bn${i}`, mac: `52:54:00:aa:${hx(i >> 8)}:${hx(i & 255)}`, ipv4: [`10.100.${i >> 8}.${(i & 255) + 1}`], ipv6: [], isDefault: true, deviceName: null }],
    v4: { ingress, egress: [], egressRestricted: true, notrack: false }, v6: { ingress: [], egress: [], egressRestricted: false, notrack: false } };
}
const n = 200;
const ports = { nics: Object.fromEntries(Array.from({ length: n }, (_, i) => [`bn${i}`, { device: `vnf${i}`, bridge: 'cloudbr0' }])), bridges: { cloudbr0: { uplinks: ['eth0'], unknownTaps: [] } } };
const base: HostDesiredState = { hostId: 'b', revision: 1, vms: Array.from({ length: n }, (_, i) => benchVm(i)), sets: [GROUP] };
let known = expectedState(render({ state: base, ports }).program);
const xs: number[] = []; const ps: number[] = []; const es: number[] = [];
for (let k = 0; k < 200; k++) {
  const vms = base.vms.map((v, i) => (i === 100 ? benchVm(i, k) : v));
  const t0 = performance.now();
  const rd = render({ state: { ...base, vms }, ports });
  const t1 = performance.now();
  plan(rd.program, known);
  const t2 = performance.now();
  known = expectedState(rd.program);
  const t3 = performance.now();
  xs.push(t1 - t0); ps.push(t2 - t1); es.push(t3 - t2);
}
const med = (a: number[]) => a.sort((x, y) => x - y)[a.length >> 1].toFixed(2);
console.log('render', med(xs), 'plan', med(ps), 'expectedState', med(es));
