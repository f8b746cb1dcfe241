// Preflight (DESIGN.md §4): the bridge-netfilter sysctls must be 1 inside the host's namespace (with
// them at 0 no group filters anything), the tools must exist, conntrack must have headroom.
// Fixes what it may; reports every check.
import fs from 'node:fs';
import path from 'node:path';
import type { Runner } from '../dataplane/exec.js';
import type { PreflightFinding } from '../protocol/index.js';

export const BRIDGE_SYSCTLS = ['bridge-nf-call-iptables', 'bridge-nf-call-ip6tables', 'bridge-nf-call-arptables'];
/** The tools each backend runs. */
export const TOOLS: Record<'iptables' | 'nftables', string[]> = {
  iptables: ['iptables-restore', 'ip6tables-restore', 'ipset', 'ebtables-restore'],
  nftables: ['nft'],
};
export const toolsFor = (backend: 'iptables' | 'nftables') => TOOLS[backend];
/** conntrack entries in use above this share of the maximum is a finding. */
const CONNTRACK_LIMIT = 0.9;

/** Looked up exactly as the runner will run it (spawn / `ip netns exec` search PATH): no extra dirs. */
function onPath(tool: string): boolean {
  for (const dir of (process.env.PATH || '/usr/sbin:/usr/bin:/sbin:/bin').split(':').filter(Boolean)) {
    try { fs.accessSync(path.join(dir, tool), fs.constants.X_OK); return true; } catch { /* next */ }
  }
  return false;
}

async function readSysctl(runner: Runner, key: string): Promise<string | null> {
  const r = await runner.run('sysctl', ['-n', key]);
  return r.code === 0 ? r.stdout.trim() : null;
}

export async function preflight(runner: Runner, tools: string[] = TOOLS.iptables): Promise<PreflightFinding[]> {
  const out: PreflightFinding[] = [];
  let loadedModule = false;
  for (const name of BRIDGE_SYSCTLS) {
    const key = `net.bridge.${name}`;
    let v = await readSysctl(runner, key);
    if (v === null && !loadedModule) {
      // The sysctls exist once br_netfilter is loaded (module load is host-wide).
      loadedModule = true;
      await runner.run('modprobe', ['br_netfilter']);
      v = await readSysctl(runner, key);
    }
    if (v === '1') { out.push({ check: `sysctl ${key}`, ok: true, detail: '1' }); continue; }
    const w = await runner.run('sysctl', ['-q', '-w', `${key}=1`]);
    const after = await readSysctl(runner, key);
    if (after === '1') out.push({ check: `sysctl ${key}`, ok: true, fixed: true, detail: `was ${v ?? 'absent'}, set to 1` });
    else out.push({ check: `sysctl ${key}`, ok: false, detail: `is ${after ?? 'absent'} and cannot be set to 1 (${(w.stderr || 'no error').trim()}): bridged traffic bypasses every security group` });
  }
  for (const tool of tools) out.push({ check: `tool ${tool}`, ok: onPath(tool), detail: onPath(tool) ? 'present' : 'not found on PATH' });
  const count = await runner.run('cat', ['/proc/sys/net/netfilter/nf_conntrack_count']);
  const max = await runner.run('cat', ['/proc/sys/net/netfilter/nf_conntrack_max']);
  if (count.code === 0 && max.code === 0) {
    const c = Number(count.stdout.trim());
    const m = Number(max.stdout.trim());
    const ok = m > 0 && c / m < CONNTRACK_LIMIT;
    out.push({ check: 'conntrack headroom', ok, detail: `${c} of ${m} entries in use${ok ? '' : ': new flows may be dropped'}` });
  } else {
    out.push({ check: 'conntrack headroom', ok: true, detail: 'conntrack not loaded yet' });
  }
  return out;
}

/** Findings that put the host in Alert. */
export const unfixable = (fs: PreflightFinding[]) => fs.filter((f) => !f.ok && !f.fixed);
