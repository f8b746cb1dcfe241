// Preflight benchmark (not a test): what one pass of the agent's preflight checks of other firewalls
// costs at 200 VMs per backend — the forward-drop check (no foreign chain dropping; Docker's
// `iptables -P FORWARD DROP` beside Palisade), the mark-rewrite check, the legacy tables' checks and
// the whole preflight() — each the median of 7 passes, beside the floor of one `nft -j list chains`.
// Needs root (one namespace of its own, removed at the end). Run: node --import tsx bench/preflight.ts
import { performance } from 'node:perf_hooks';
import { run } from '../src/lab/index.js';
import { createRunner } from '../src/dataplane/exec.js';
import { createDataplane, type BackendName } from '../src/dataplane/choose.js';
import { forwardDropCheck, legacyEbForwardDropCheck, legacyForwardDropCheck, onPath, preflight, toolsFor } from '../src/agent/preflight.js';
import { legacyEbMarkRewrites, legacyMarkRewrites, nftMarkRewrites } from '../src/agent/mark-rewrites.js';
import type { HostPorts } from '../src/dataplane/backend.js';
import type { HostDesiredState, PolicyRule, VmPolicy } from '../src/policy/ir.js';
import { summary } from './summary.js';

const VMS = 200;
const PASSES = 7;
const BRIDGE = 'cloudbr0';
const GROUP = { id: 'sgbenchv4', family: 4 as const, members: Array.from({ length: 50 }, (_, i) => `10.200.0.${i + 1}`) };

function vm(i: number): VmPolicy {
  const hx = (n: number) => n.toString(16).padStart(2, '0');
  const ingress: PolicyRule[] = Array.from({ length: 10 }, (_, k) => ({
    id: `p${i}r${k}`, protocol: k % 3 === 0 ? 'udp' : 'tcp', ports: { from: 1000 + k * 10, to: 1005 + k * 10 },
    cidrs: [`10.${k}.${i & 255}.0/24`], sets: [], sources: [],
  }));
  ingress.push({ id: `p${i}g`, protocol: 'tcp', ports: { from: 5432, to: 5432 }, cidrs: [], sets: [GROUP.id], sources: [] });
  return {
    vmId: `pf-${i}`, instanceName: `i-3-${1000 + i}-VM`, hash: `h${i}`,
    nics: [{ nicId: `pn${i}`, mac: `52:54:00:ab:${hx(i >> 8)}:${hx(i & 255)}`, ipv4: [`10.100.${i >> 8}.${(i & 255) + 1}`], ipv6: [], isDefault: true, deviceName: null }],
    v4: { ingress, egress: [], egressRestricted: false, notrack: false },
    v6: { ingress: [], egress: [], egressRestricted: false, notrack: false },
  };
}
const state: HostDesiredState = { hostId: 'bench', revision: 1, vms: Array.from({ length: VMS }, (_, i) => vm(i)), sets: [GROUP] };
const ports: HostPorts = {
  nics: Object.fromEntries(Array.from({ length: VMS }, (_, i) => [`pn${i}`, { device: `vpf${i}`, bridge: BRIDGE }])),
  bridges: { [BRIDGE]: { uplinks: ['eth0'], unknownTaps: [] } },
};

const ns = `pfb${process.pid.toString(16)}`;
const cleanup = () => run('ip', ['netns', 'del', ns], { allowFail: true });
process.on('SIGTERM', () => { void cleanup().finally(() => process.exit(143)); });

async function median(f: () => Promise<unknown>): Promise<number> {
  const ts: number[] = [];
  for (let k = 0; k < PASSES; k++) { const t0 = performance.now(); await f(); ts.push(performance.now() - t0); }
  return ts.sort((a, b) => a - b)[Math.floor(PASSES / 2)]!;
}

console.log(`backend | check (${VMS} VMs, median of ${PASSES}) | ms`);
for (const backend of ['nftables', 'iptables'] as BackendName[]) {
  await run('ip', ['netns', 'add', ns]);
  try {
    const dp = createDataplane(backend, { netns: ns });
    await dp.apply({ state, ports });
    const r = createRunner({ netns: ns });
    const figures: [string, () => Promise<unknown>][] = [
      ['floor: nft -j list chains', () => r.run('nft', ['-j', 'list', 'chains'])],
      ['forward-drop check', () => forwardDropCheck(r, [BRIDGE])],
      ['mark-rewrite check (nft)', () => nftMarkRewrites(r)],
      ['legacy tables\' checks', async () => [await legacyForwardDropCheck(r, [BRIDGE]), await legacyMarkRewrites(r), await legacyEbForwardDropCheck(r, [BRIDGE]), await legacyEbMarkRewrites(r, onPath)]],
      ['whole preflight()', () => preflight(r, toolsFor(backend), [BRIDGE])],
    ];
    for (const [name, f] of figures) {
      const ms = await median(f);
      console.log(`${backend} | ${name} | ${ms.toFixed(1)}`);
      summary('preflight', `${backend}: ${name}`, ms, 'ms');
    }
    await run('ip', ['netns', 'exec', ns, 'iptables', '-P', 'FORWARD', 'DROP']);
    const ms = await median(() => forwardDropCheck(r, [BRIDGE]));
    console.log(`${backend} | forward-drop check, Docker's FORWARD DROP beside it | ${ms.toFixed(1)}`);
    summary('preflight', `${backend}: forward-drop check, iptables -P FORWARD DROP`, ms, 'ms');
    await dp.close?.();
  } finally {
    await cleanup();
  }
}
