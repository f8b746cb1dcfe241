// Preflight (DESIGN.md §4): the bridge-netfilter sysctls must be 1 inside the host's namespace (with
// them at 0 no group filters anything), the tools must exist, conntrack must have headroom, and no
// other firewall may silently drop VM traffic (a forward chain dropping by default; a rule rewriting
// the packet mark Palisade carries: mark-rewrites.ts). Fixes what it may; reports every check.
import fs from 'node:fs';
import path from 'node:path';
import type { Runner } from '../dataplane/exec.js';
import type { PreflightFinding } from '../protocol/index.js';
import { type Expr, legacyTables, listed } from './foreign-tables.js';
import { legacyMarkRewrites, nftMarkRewrites } from './mark-rewrites.js';

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

export async function preflight(runner: Runner, tools: string[] = TOOLS.iptables, bridges: string[] = []): Promise<PreflightFinding[]> {
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
  if (onPath('nft')) out.push(...await forwardDropCheck(runner, bridges), ...await nftMarkRewrites(runner));
  if (onPath('iptables-legacy')) out.push(...await legacyForwardDropCheck(runner, bridges), ...await legacyMarkRewrites(runner));
  return out;
}

/**
 * Another firewall's forward hook that drops by default (Docker sets `iptables -P FORWARD DROP`; an
 * `ebtables -P FORWARD DROP` likewise) drops every bridged VM packet its rules do not accept, whatever
 * the security groups allow: br_netfilter passes bridged traffic through every table's forward hook.
 * Palisade cannot accept for that table (a packet must pass every base chain), so it says so. A table
 * counts as passing the VM bridges when one of its rules accepts on a managed bridge's name (in- or
 * out-interface, or the bridge of a bridged port; `cloudbr+` style wildcards included), e.g.
 * `-i br0 -j ACCEPT` in DOCKER-USER, on physdev (`-m physdev --physdev-is-bridged -j ACCEPT`), or
 * without any condition. A rule that only jumps elsewhere does not count. Seen through nftables, so iptables-nft's, ebtables-nft's
 * and nft's tables (iptables-legacy's: legacyForwardDropCheck). Pure: the chains and their tables'
 * rules (nft's JSON) in, findings out.
 */
export function forwardDropFindings(dropping: NftChain[], tableJson: (family: string, table: string) => string | null, bridges: string[]): PreflightFinding[] {
  return dropping.map((c) => forwardDropFinding(`forward policy ${c.family} ${c.table} ${c.name}`,
    listed<Expr>(tableJson(c.family, c.table) ?? '', 'rule').some((rule) => acceptsBridges(rule, bridges)), bridges));
}

function forwardDropFinding(check: string, accepted: boolean, bridges: string[]): PreflightFinding {
  if (accepted) return { check, ok: true, detail: 'drops by default, and a rule of its table accepts the VM bridges' };
  return { check, ok: false,
    detail: `another firewall's forward chain drops by default (policy drop) and none of its table's rules accepts the VM bridges${bridges.length ? ` (${bridges.join(', ')})` : ''}: bridged VM traffic is dropped whatever the security groups allow (Docker sets this: accept the bridges there, e.g. iptables -I DOCKER-USER -i BRIDGE -o BRIDGE -j ACCEPT)` };
}

/**
 * The same check for iptables-legacy's filter FORWARD (nft cannot see legacy tables; Docker on a host
 * whose `iptables` is the legacy one puts its policy there). Only a filter table the kernel already has
 * in this namespace is listed (`/proc/net/ip{,6}_tables_names`: listing a missing one would create it);
 * its rules are read as `iptables-legacy -S` text only when FORWARD drops by default.
 */
export async function legacyForwardDropCheck(runner: Runner, bridges: string[]): Promise<PreflightFinding[]> {
  const found: PreflightFinding[] = [];
  for (const { family: fam, tool, tables } of await legacyTables(runner)) {
    if (!tables.includes('filter')) continue;
    const fwd = await runner.run(tool, ['-t', 'filter', '-S', 'FORWARD']);
    if (fwd.code !== 0 || !/^-P FORWARD DROP$/m.test(fwd.stdout)) continue;
    const all = await runner.run(tool, ['-t', 'filter', '-S']);
    const accepted = all.code === 0 && all.stdout.split('\n').some((line) => legacyAcceptsBridges(line, bridges));
    found.push(forwardDropFinding(`forward policy ${fam} filter FORWARD (iptables-legacy)`, accepted, bridges));
  }
  return found;
}

/** An `iptables -S` rule that accepts, on a managed bridge's name (`+` wildcards too), physdev, or unconditionally. */
export function legacyAcceptsBridges(line: string, bridges: string[]): boolean {
  const l = line.trim();
  if (!l.startsWith('-A ') || !/ -j ACCEPT$/.test(l)) return false;
  const conds = l.replace(/^-A \S+/, '').replace(/ -j ACCEPT$/, '').replace(/-m comment --comment (?:"[^"]*"|\S+)/g, '').trim();
  if (!conds) return true;
  if (/(^| )-m physdev( |$)/.test(conds)) return true;
  const covers = (pattern: string, bridge: string) => (pattern.endsWith('+') ? bridge.startsWith(pattern.slice(0, -1)) : pattern === bridge);
  return [...conds.matchAll(/(^| )(!\s+)?-[io] (\S+)/g)].some((x) => !x[2] && bridges.some((b) => covers(x[3], b)));
}

const FORWARD_FAMILIES = ['ip', 'ip6', 'inet', 'bridge'];
const IFACE_KEYS = new Set(['iifname', 'oifname', 'ibrname', 'obrname']);
export interface NftChain { family: string; table: string; name: string; hook?: string; policy?: string }


/** Someone else's forward base chains, in a `nft -j list chains` answer, that drop by default. Pure. */
export function droppingForwardChains(chainsJson: string): NftChain[] {
  return listed<NftChain>(chainsJson, 'chain').filter((c) => c.hook === 'forward' && c.policy === 'drop' && FORWARD_FAMILIES.includes(c.family) && c.table !== 'palisade');
}

/** A rule (nft JSON) that accepts, matching a managed bridge by name (wildcards too) or physdev. */
function acceptsBridges(rule: Expr, bridges: string[]): boolean {
  const expr: Expr[] = Array.isArray(rule.expr) ? rule.expr : [];
  if (!expr.some((e) => e && typeof e === 'object' && 'accept' in e)) return false;
  if (expr.some((e) => e?.xt?.name === 'physdev')) return true;
  // an accept without any condition passes everything
  if (!expr.some((e) => e && typeof e === 'object' && ('match' in e || 'xt' in e))) return true;
  const names = (right: unknown): string[] => (typeof right === 'string' ? [right]
    : Array.isArray((right as Expr)?.set) ? (right as Expr).set.filter((x: unknown): x is string => typeof x === 'string') : []);
  const covers = (pattern: string, bridge: string) => (pattern.endsWith('*') ? bridge.startsWith(pattern.slice(0, -1)) : pattern === bridge);
  return expr.some((e) => {
    const m = e?.match;
    if (!m || (m.op !== '==' && m.op !== 'in') || !IFACE_KEYS.has(m.left?.meta?.key)) return false;
    return names(m.right).some((pattern) => bridges.some((b) => covers(pattern, b)));
  });
}

/**
 * forwardDropFindings for the host. Cheap when there is nothing to find (one `nft -j list tables`):
 * chains are listed only for the families that have a table of someone else's, and a table's rules
 * only for a table with such a chain (Palisade's own tables can hold thousands of chains on a big
 * host; they are listed only when another table of their family exists).
 */
export async function forwardDropCheck(runner: Runner, bridges: string[]): Promise<PreflightFinding[]> {
  const tables = await runner.run('nft', ['-j', 'list', 'tables']);
  if (tables.code !== 0) return [];
  const others = listed<{ family: string; name: string }>(tables.stdout, 'table').filter((t) => FORWARD_FAMILIES.includes(t.family) && t.name !== 'palisade');
  const found: PreflightFinding[] = [];
  for (const family of new Set(others.map((t) => t.family))) {
    const chains = await runner.run('nft', ['-j', 'list', 'chains', family]);
    if (chains.code !== 0) continue;
    const dropping = droppingForwardChains(chains.stdout);
    const rules = new Map<string, string | null>();
    for (const table of new Set(dropping.map((c) => c.table))) {
      const r = await runner.run('nft', ['-j', 'list', 'table', family, table]);
      rules.set(table, r.code === 0 ? r.stdout : null);
    }
    found.push(...forwardDropFindings(dropping, (_, table) => rules.get(table) ?? null, bridges));
  }
  return found;
}

/** Findings that put the host in Alert. */
export const unfixable = (fs: PreflightFinding[]) => fs.filter((f) => !f.ok && !f.fixed);
