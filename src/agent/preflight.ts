// Preflight (DESIGN.md §4): the bridge-netfilter sysctls must be 1 inside the host's namespace (with
// them at 0 no group filters anything), the tools must exist, conntrack must have headroom, and no
// other firewall may silently drop VM traffic (a forward chain dropping by default, or accepting by
// default with a drop on the VMs' path — nft's view, iptables-legacy's, ebtables-legacy's (policy
// only); a rule rewriting the packet mark Palisade carries:
// mark-rewrites.ts). Fixes what it may; reports every check.
import fs from 'node:fs';
import path from 'node:path';
import type { Runner } from '../dataplane/exec.js';
import { bridgeChains } from '../dataplane/iptables/names.js';
import type { PreflightFinding } from '../protocol/index.js';
import { type EbTable, type Expr, isPalisadeTable, legacyEbTables, legacyTables, listed, nftChains } from './foreign-tables.js';
import { legacyEbMarkRewrites, legacyMarkRewrites, nftMarkRewrites } from './mark-rewrites.js';

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
export function onPath(tool: string): boolean {
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
  // read once for every check of this pass that asks: nft's chains, the legacy ebtables tables here
  const chains = onPath('nft') ? await nftChains(runner) : null;
  if (onPath('nft')) out.push(...await forwardDropCheck(runner, bridges, chains), ...await nftMarkRewrites(runner, chains));
  if (onPath('iptables-legacy')) out.push(...await legacyForwardDropCheck(runner, bridges), ...await legacyMarkRewrites(runner));
  if (onPath('ebtables-legacy')) {
    const ebTables = await legacyEbTables(runner, onPath);
    out.push(...await legacyEbForwardDropCheck(runner, bridges, ebTables), ...await legacyEbMarkRewrites(runner, onPath, ebTables, chains));
  }
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
 * without any condition — a rule of the dropping chain or of a chain it reaches (tableAcceptsBridges).
 * A forward chain that accepts by default drops them just as well when a rule on their path does
 * (firewalld's `filter_FORWARD` ends with a reject; EL's iptables-services with `-A FORWARD -j
 * REJECT`): forwardRuleDropFinding.
 * A rule that only jumps elsewhere does not count (but the iptables backend's own jump for the bridge
 * does). Seen through nftables, so iptables-nft's, ebtables-nft's and nft's tables (iptables-legacy's:
 * legacyForwardDropCheck; ebtables-legacy's: legacyEbForwardDropCheck).
 */
function forwardDropFinding(check: string, accepted: boolean, bridges: string[]): PreflightFinding {
  if (accepted) return { check, ok: true, detail: 'drops by default, and a rule of its table accepts the VM bridges' };
  return { check, ok: false,
    detail: `another firewall's forward chain drops by default (policy drop) and none of its table's rules accepts the VM bridges${bridges.length ? ` (${bridges.join(', ')})` : ''}: bridged VM traffic is dropped whatever the security groups allow (Docker sets this: accept the bridges there, e.g. iptables -I DOCKER-USER -i BRIDGE -o BRIDGE -j ACCEPT)` };
}

/** A forward chain accepting by default whose rules drop or reject the VM bridges' traffic on its path. */
function forwardRuleDropFinding(check: string, bridges: string[]): PreflightFinding {
  return { check, ok: false,
    detail: `another firewall's forward chain accepts by default but a rule on the VM bridges' path${bridges.length ? ` (${bridges.join(', ')})` : ''} drops or rejects their traffic (firewalld's final reject for interfaces of no forwarding zone, EL's iptables-services \`-A FORWARD -j REJECT\`): bridged VM traffic is dropped whatever the security groups allow (accept the bridges there first, e.g. firewall-cmd --zone=trusted --add-interface=BRIDGE, or iptables -I FORWARD -i BRIDGE -o BRIDGE -j ACCEPT)` };
}

/**
 * The same check for iptables-legacy's filter FORWARD (nft cannot see legacy tables; Docker on a host
 * whose `iptables` is the legacy one puts its policy there). Only a filter table the kernel already has
 * in this namespace is listed (`/proc/net/ip{,6}_tables_names`: listing a missing one would create it);
 * its rules are read as `iptables-legacy -S` text and followed from FORWARD as a VM packet would be
 * (legacyPathEnds). FORWARD accepting by default is judged too: a rule on the bridges' path that
 * drops or rejects them all (EL's iptables-services ends FORWARD with `-j REJECT`) drops the VMs'
 * traffic the same way. Its rules alone are read first; the whole table only when they lead elsewhere.
 */
export async function legacyForwardDropCheck(runner: Runner, bridges: string[]): Promise<PreflightFinding[]> {
  const found: PreflightFinding[] = [];
  for (const { family: fam, tool, tables } of await legacyTables(runner)) {
    if (!tables.includes('filter')) continue;
    const fwd = await runner.run(tool, ['-t', 'filter', '-S', 'FORWARD']);
    if (fwd.code !== 0) continue;
    const where = `${fam} filter FORWARD (iptables-legacy)`;
    if (/^-P FORWARD DROP$/m.test(fwd.stdout)) {
      const all = await runner.run(tool, ['-t', 'filter', '-S']);
      const accepted = all.code === 0 && legacyPassesBridges(all.stdout, bridges);
      found.push(forwardDropFinding(`forward policy ${where}`, accepted, bridges));
      continue;
    }
    let ends = legacyPathEnds(fwd.stdout, bridges, false);
    if (ends.includes('unknown')) {
      const all = await runner.run(tool, ['-t', 'filter', '-S']);
      ends = all.code === 0 ? legacyPathEnds(all.stdout, bridges) : [];
    }
    if (ends.includes('drop')) found.push(forwardRuleDropFinding(`forward chain ${where}`, bridges));
  }
  return found;
}

/** Whether an `iptables -S` text's FORWARD passes each managed bridge (legacyPathEnds: all accept). Pure. */
export function legacyPassesBridges(text: string, bridges: string[]): boolean {
  return legacyPathEnds(text, bridges).every((end) => end === 'accept');
}

/**
 * Where each managed bridge's traffic ends in an `iptables -S` text's FORWARD: its rules followed in
 * order, as the nft view's walk does, through the user chains they jump or go to; the first rule
 * holding for the bridge's traffic (no condition but a comment, `-i`/`-o` naming the bridge, physdev)
 * that decides — ACCEPT, DROP / REJECT / RETURN / a goto's end, the iptables backend's own jump for
 * the bridge — is the answer. With `wholeTable` false the text is FORWARD's alone (`-S FORWARD`): a
 * jump to anything but a verdict is 'unknown' (a user chain not read). Pure.
 */
export function legacyPathEnds(text: string, bridges: string[], wholeTable = true): PathEnd[] {
  const chains = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const n = /^-N (\S+)$/.exec(line.trim());
    if (n) chains.set(n[1], chains.get(n[1]) ?? []);
    const m = /^-A (\S+) (.*)$/.exec(line.trim());
    if (m) chains.set(m[1], [...(chains.get(m[1]) ?? []), ` ${m[2]}`]);
  }
  const holds = (conds: string, bridge: string[]) => {
    let rest = conds.replace(/ -m comment --comment (?:"[^"]*"|\S+)/g, '');
    const ifaces = [...rest.matchAll(/ (!\s+)?-[io] (\S+)/g)];
    if (ifaces.some((x) => x[1] || !coversBridge(x[2], bridge, '+'))) return false;
    // physdev: for every bridged frame (`--physdev-is-bridged`), not for one port's or negated
    rest = rest.replace(/ -[io] \S+/g, '').replace(PHYSDEV_ALL, '');
    return rest.trim() === '';
  };
  const walk = (name: string, depth: number, bridge: string[]): PathEnd => {
    if (depth > 50) return 'unknown';
    for (const rule of chains.get(name) ?? []) {
      const t = / -([jg]) (\S+)(.*)$/.exec(rule);
      if (!t || !holds(rule.slice(0, t.index), bridge)) continue;
      const [, how, target] = t;
      if (target === 'ACCEPT') return 'accept';
      if (target === 'DROP' || target === 'REJECT') return 'drop';
      if (target === 'RETURN') return 'return';
      if (bridge.some((b) => bridgeChains(b).main === target)) return 'accept';
      if (!wholeTable) return 'unknown';
      if (!chains.has(target)) continue; // a target that lets the packet on (LOG, MARK, …)
      const end = walk(target, depth + 1, bridge);
      if (end !== 'return' || how === 'g') return end;
    }
    return 'return';
  };
  return (bridges.length ? bridges.map((b) => [b]) : [[]]).map((b) => walk('FORWARD', 0, b));
}

const FORWARD_FAMILIES = ['ip', 'ip6', 'inet', 'bridge'];
/**
 * The interface keys naming the bridge of a bridged packet, per family: in IP hooks br_netfilter gives
 * the bridge as in- and out-interface (iifname / oifname); in the bridge family those are the ports
 * (vnet0, eth0), and the bridge is ibrname / obrname.
 */
const ifaceKeys = (family: string) => (family === 'bridge' ? BRIDGE_KEYS : IP_KEYS);
// (iif / oif match the index of the device named when the rule was loaded: the bridge's, by its name)
const IP_KEYS = new Set(['iifname', 'oifname', 'iif', 'oif']);
const BRIDGE_KEYS = new Set(['ibrname', 'obrname']);

/** Whether an interface pattern names one of the bridges; `wildcard` is its tool's: nft's `*`, iptables' and ebtables' `+`. */
const coversBridge = (pattern: string, bridges: string[], wildcard: '*' | '+') =>
  bridges.some((b) => (pattern.endsWith(wildcard) ? b.startsWith(pattern.slice(0, -1)) : pattern === b));

/** An nft match (JSON) of one of the family's bridge interface keys on a name (or a set of names) that covers one of the bridges. */
function matchNamesBridge(m: Expr | undefined, bridges: string[], family: string): boolean {
  if (!m || (m.op !== '==' && m.op !== 'in') || !ifaceKeys(family).has(m.left?.meta?.key)) return false;
  const names: unknown[] = typeof m.right === 'string' ? [m.right] : Array.isArray(m.right?.set) ? m.right.set : [];
  return names.some((pattern) => typeof pattern === 'string' && coversBridge(pattern, bridges, '*'));
}

/** iptables-nft's physdev match, as nft's JSON shows it (an xt object without its options). */
const isPhysdevMatch = (e: Expr) => e?.xt?.type === 'match' && e.xt.name === 'physdev';
export interface NftChain { family: string; table: string; name: string; hook?: string; policy?: string }


/** Someone else's forward base chains, in a `nft -j list chains` answer. Pure. */
export function foreignForwardChains(chainsJson: string): NftChain[] {
  return listed<NftChain>(chainsJson, 'chain').filter((c) => c.hook === 'forward' && FORWARD_FAMILIES.includes(c.family) && !isPalisadeTable(c.family, c.table));
}

/** Whether one of the rules (nft JSON, one or more `nft -j list …` answers, of one family) accepts the VM bridges. Pure. */
export function rulesAcceptBridges(json: string, bridges: string[], family = 'ip'): boolean {
  return listed<Expr>(json, 'rule').some((rule) => acceptsBridges(rule, bridges, family));
}

/** A rule (nft JSON) that accepts, matching a managed bridge by name (wildcards too) or physdev. */
function acceptsBridges(rule: Expr, bridges: string[], family: string): boolean {
  const expr: Expr[] = Array.isArray(rule.expr) ? rule.expr : [];
  if (!expr.some((e) => e && typeof e === 'object' && 'accept' in e)) return false;
  // an accept without any condition passes everything
  return !conditional(expr) || matchesBridges(expr, bridges, family);
}

/** Any match but a comment (iptables-nft's `-m comment` is an xt match in nft's JSON, and matches everything). */
const conditional = (expr: Expr[]) => expr.some((e) => e && typeof e === 'object' && ('match' in e || ('xt' in e && e.xt?.name !== 'comment')));

/** A rule's expressions match a managed bridge by name (wildcards too) or physdev. */
function matchesBridges(expr: Expr[], bridges: string[], family: string): boolean {
  if (expr.some((e) => e?.xt?.name === 'physdev')) return true;
  return expr.some((e) => matchNamesBridge(e?.match, bridges, family));
}

/** Chains read along a dropping chain's jumps before falling back to reading its whole table. */
const JUMPS_READ = 20;

/**
 * The forward-drop check for the host, cheap when there is nothing to find: one `nft -j list chains`
 * (every family's chains with their hooks and policies, no rules) finds the foreign forward chains.
 * One dropping by default must accept the VM bridges; one accepting by default must not drop them on
 * their path (a drop or reject every VM packet of a bridge reaches; its rules read as below, the
 * whole table never).
 * (`nft list tables`, its first step before, made nft 1.0.6 read every rule of every table, Palisade's
 * thousands on an iptables-backend host: 0.4–0.7 s a pass at 200 VMs.) For a dropping chain, the
 * accepting rule is looked for along the path VM traffic takes through it and the chains it jumps to
 * (Docker's DOCKER-USER) first, then, only if that path is longer than JUMPS_READ chains, in the rest
 * of its table.
 */
export async function forwardDropCheck(runner: Runner, bridges: string[], chainsJson?: string | null): Promise<PreflightFinding[]> {
  const chains = chainsJson === undefined ? await nftChains(runner) : chainsJson;
  if (chains === null) return [];
  // the chains judged side by side (each read is one nft run, ~12 ms with nft 1.0.6; beside the
  // iptables backend three chains accept by default: ebtables', iptables' and ip6tables' FORWARD)
  const judged = await Promise.all(foreignForwardChains(chains).map(async (c): Promise<PreflightFinding[]> => {
    if (c.policy === 'drop') {
      return [forwardDropFinding(`forward policy ${c.family} ${c.table} ${c.name}`, await tableAcceptsBridges(runner, c, bridges), bridges)];
    }
    // accepting by default, but a rule every VM packet reaches drops or rejects it (firewalld's
    // filter_FORWARD ends with `reject` for interfaces of no forwarding zone)
    return (await pathEnds(runner, c, bridges)).includes('drop') ? [forwardRuleDropFinding(`forward chain ${c.family} ${c.table} ${c.name}`, bridges)] : [];
  }));
  return judged.flat();
}

/** Where VM bridge traffic ends up in a chain: accepted, dropped, back to the caller, or not known (too deep). */
type PathEnd = 'accept' | 'drop' | 'return' | 'unknown';

/**
 * Whether a rule's conditions certainly hold for the VM bridges' traffic: none (a comment is none), or
 * only interface matches naming a managed bridge (`-i br0 -o br0`, wildcards too; in the bridge
 * family ibrname / obrname, iifname / oifname there being the ports) and physdev. A rule
 * with any other condition (`-o eth0`, `ct state established`, `-p tcp`, a negation) holds for some of
 * it at most, so neither its accept passes the bridges nor its drop, return or goto ends their path.
 */
function holdsForBridges(expr: Expr[], bridges: string[], family: string): boolean {
  return expr.every((e) => {
    if (!e || typeof e !== 'object') return true;
    if ('xt' in e) return e.xt?.type === 'target' || e.xt?.name === 'comment' || e.xt?.name === 'physdev';
    if ('limit' in e || 'quota' in e) return false; // (statements that let only some packets on)
    if (!('match' in e)) return true;
    return matchNamesBridge(e.match, bridges, family);
  });
}

/** The verdict of an interface-keyed vmap (nft JSON) for the bridge(s) given, if its entries name one (`*` wildcards too). */
function vmapVerdict(vmap: Expr, bridges: string[], family: string): Expr {
  const set: unknown[] = ifaceKeys(family).has(vmap?.key?.meta?.key) && Array.isArray(vmap?.data?.set) ? vmap.data.set : [];
  for (const entry of set) {
    if (Array.isArray(entry) && typeof entry[0] === 'string' && coversBridge(entry[0], bridges, '*') && entry[1] && typeof entry[1] === 'object') return entry[1] as Expr;
  }
  return {};
}

/** physdev options that hold for every bridged frame (not one port's, not negated). */
const PHYSDEV_ALL = / -m physdev(?: --physdev-is-(?:bridged|in|out))+(?= |$)/g;

/**
 * iptables-nft's physdev match is an xt object in nft's JSON, without its options: `! --physdev-is-
 * bridged` (routed traffic only) or `--physdev-in vnet0` (one port) look like `--physdev-is-bridged`.
 * For a chain with one, its rules are read again as `iptables-nft -S` text (same order) and a physdev
 * that does not hold for every bridged frame is marked so (holdsForBridges then does not count it).
 */
async function withPhysdevOptions(runner: Runner, c: NftChain, name: string, rules: Expr[][]): Promise<Expr[][]> {
  if ((c.family !== 'ip' && c.family !== 'ip6') || !rules.some((expr) => expr.some(isPhysdevMatch))) return rules;
  const r = await runner.run(c.family === 'ip' ? 'iptables-nft' : 'ip6tables-nft', ['-t', c.table, '-S', name]);
  const lines = r.code === 0 ? r.stdout.split('\n').filter((l) => l.startsWith('-A ')) : [];
  if (lines.length !== rules.length) return rules; // not iptables-nft's alone: left as nft shows them
  return rules.map((expr, i) => {
    const partial = / -m physdev /.test(`${lines[i]} `) && / -m physdev /.test(`${lines[i]!.replace(PHYSDEV_ALL, '')} `);
    return partial ? expr.map((e) => (isPhysdevMatch(e) ? { xt: { type: 'match', name: 'physdev (one port or negated)' } } : e)) : expr;
  });
}

/**
 * Whether the dropping chain's table passes the VM bridges. Its rules are followed in order, as the
 * kernel does for a VM's packet, through the chains they jump or go to: the first rule that holds for
 * the bridges' traffic (holdsForBridges) and decides it — accept; drop / reject / return / a goto; the
 * iptables backend's own jump for a managed bridge (`-i br0 -m physdev --physdev-is-bridged -j BF-br0`:
 * that chain accepts what the groups allow and drops the rest, so the policy never sees those frames)
 * — is the answer, for each managed bridge on its own (all must pass). So an accept after Docker's
 * `-A DOCKER-USER -j RETURN`, in a chain only reached by `-i docker0 -j X`, only for `-o eth0`, or
 * only for another of the bridges, does not pass them. Only past JUMPS_READ chains, the whole table
 * (any accepting rule of it: Palisade's iptables chains make that 0.5 s at 200 VMs).
 */
async function tableAcceptsBridges(runner: Runner, c: NftChain, bridges: string[]): Promise<boolean> {
  const ends = await pathEnds(runner, c, bridges);
  if (!ends.includes('unknown')) return ends.every((end) => end === 'accept');
  const all = await runner.run('nft', ['-j', 'list', 'table', c.family, c.table]);
  return all.code === 0 && rulesAcceptBridges(all.stdout, bridges, c.family);
}

/** Where each managed bridge's traffic ends in a base chain (see tableAcceptsBridges), read along its path. */
async function pathEnds(runner: Runner, c: NftChain, bridges: string[]): Promise<PathEnd[]> {
  const read = new Map<string, Expr[][]>();
  const reconciled = new Map<string, Expr[][]>();
  const rulesOf = async (name: string): Promise<Expr[][] | null> => {
    if (!read.has(name)) {
      if (read.size >= JUMPS_READ) return null;
      const r = await runner.run('nft', ['-j', 'list', 'chain', c.family, c.table, name]);
      read.set(name, r.code === 0 ? listed<Expr>(r.stdout, 'rule').map((rule) => (Array.isArray(rule.expr) ? rule.expr : []) as Expr[]) : []);
    }
    return read.get(name)!;
  };
  // physdev's options are read (`iptables-nft -S`, which loads the whole table: ~70 ms beside the
  // iptables backend's 200 VMs) only for a rule whose physdev decides the path; not for the iptables
  // backend's own jump for a bridge (its `--physdev-is-bridged` holds: it is ours)
  const withOptions = async (name: string, rules: Expr[][], i: number): Promise<Expr[]> => {
    if (!reconciled.has(name)) reconciled.set(name, await withPhysdevOptions(runner, c, name, rules));
    return reconciled.get(name)![i]!;
  };
  const jumpsToOwn = (expr: Expr[], bridges: string[]) => expr.some((e) => {
    const t = e?.jump?.target ?? e?.goto?.target;
    return typeof t === 'string' && bridges.some((b) => bridgeChains(b).main === t);
  });
  const walk = async (name: string, depth: number, bridges: string[]): Promise<PathEnd> => {
    const rules = depth > JUMPS_READ ? null : await rulesOf(name);
    if (!rules) return 'unknown';
    for (const [i, raw] of rules.entries()) {
      if (!holdsForBridges(raw, bridges, c.family)) continue;
      const expr = raw.some(isPhysdevMatch) && !jumpsToOwn(raw, bridges) ? await withOptions(name, rules, i) : raw;
      if (!holdsForBridges(expr, bridges, c.family)) continue;
      for (const x of expr) {
        if (!x || typeof x !== 'object') continue;
        // `iifname vmap { "br0" : accept, … }`: this bridge's entry is the verdict (none: the rule does not match it)
        const e: Expr = x.vmap ? vmapVerdict(x.vmap, bridges, c.family) : x;
        if ('accept' in e) return 'accept';
        if ('drop' in e || 'reject' in e || (e.xt?.type === 'target' && /^(DROP|REJECT)$/.test(e.xt?.name))) return 'drop';
        if ('return' in e) return 'return';
        const target = e.jump?.target ?? e.goto?.target;
        if (typeof target !== 'string') continue;
        if (bridges.some((b) => bridgeChains(b).main === target)) return 'accept'; // (that bridge's own)
        // the iptables backend's ebtables chains (PALISADE-FWD: out-port marks, unknown ports dropped)
        // are the groups' own, not another firewall's, and long (one rule per port): not read
        if (c.family === 'bridge' && /^PALISADE-/.test(target)) continue;
        const end = await walk(target, depth + 1, bridges);
        if (end !== 'return' || e.goto) return end; // a goto's return is this chain's
      }
    }
    return 'return';
  };
  // every managed bridge on its own: an accept for br0 leaves cloudbr1's VMs to the policy
  const ends: PathEnd[] = [];
  for (const b of bridges.length ? bridges.map((x) => [x]) : [[]]) ends.push(await walk(c.name, 0, b));
  return ends;
}

/**
 * The same check for ebtables-legacy's filter FORWARD (nft cannot see legacy tables), only when the
 * kernel already has that table here (legacyEbTables: `ebtables-legacy -L` would create it): its
 * policy and rules as `ebtables-legacy -t filter -L` text.
 */
export async function legacyEbForwardDropCheck(runner: Runner, bridges: string[], ebTables?: EbTable[]): Promise<PreflightFinding[]> {
  if (!(ebTables ?? await legacyEbTables(runner, onPath)).includes('filter')) return [];
  const all = await runner.run('ebtables-legacy', ['-t', 'filter', '-L']);
  if (all.code !== 0 || !ebForwardDrops(all.stdout)) return [];
  return [forwardDropFinding('forward policy bridge filter FORWARD (ebtables-legacy)', ebAcceptsBridges(all.stdout, bridges), bridges)];
}

/** Whether an `ebtables -L` text has FORWARD dropping by default. Pure. */
export const ebForwardDrops = (text: string) => /^Bridge chain: FORWARD, entries: \d+, policy: DROP$/m.test(text);

/** Whether a rule of an `ebtables -L` text accepts on a managed bridge (`--logical-in/-out`), unconditionally, or for the bridges' ports by wildcard. Pure. */
export function ebAcceptsBridges(text: string, bridges: string[]): boolean {
  return text.split('\n').some((line) => {
    const l = line.trim();
    if (!l.startsWith('-j ACCEPT') && !/ -j ACCEPT$/.test(l)) return false;
    const conds = l.replace(/-j ACCEPT$/, '').trim();
    if (!conds) return true;
    return [...conds.matchAll(/(^| )(!\s+)?--logical-(?:in|out) (\S+)/g)].some((x) => !x[2] && coversBridge(x[3], bridges, '+'));
  });
}

/** Findings that put the host in Alert. */
export const unfixable = (fs: PreflightFinding[]) => fs.filter((f) => !f.ok && !f.fixed);
