// Preflight (DESIGN.md §4): the bridge-netfilter sysctls must be 1 inside the host's namespace (with
// them at 0 no group filters anything), the tools must exist, conntrack must have headroom, and no
// other firewall may silently drop VM traffic (a forward chain dropping by default, or accepting by
// default with a drop on the VMs' path — nft's view, iptables-legacy's, ebtables-legacy's; a rule
// rewriting the packet mark Palisade carries: mark-rewrites.ts). Fixes what it may; reports every
// check; never changes another tool's rules (it only reads them).
//
// The VMs' path through a foreign forward chain is followed per managed bridge, rule by rule, and
// only a rule that holds for every packet of that bridge decides it. How each kind is judged:
// - Interface matches: on the bridge's name (wildcards, sets, `iif` indexes), or negated on names
//   none of which is the bridge (`oifname != "eth0" drop`, `! -o eth0 -j DROP`: every VM packet
//   matches) hold; negated on the bridge (`iifname != "br0"`) do not. Ports (bridge family `iifname`,
//   ebtables `-i`) never name all of a bridge's traffic.
// - Any other condition (addresses, ports, protocol, ct state, limits) holds for some VM packets at
//   most: its drop is that firewall's choice for those packets (a blocklist, `ct state invalid drop`),
//   not judged, and so is a conditional jump or goto to a chain that always drops (`ip saddr
//   10.0.0.0/8 jump blackhole` is `ip saddr 10.0.0.0/8 drop`). A jump whose conditions hold is
//   followed: `iifname != "eth0" jump blackhole` is a drop, a jump to a chain that only counts is not.
// - `queue` / NFQUEUE / QUEUE: the packet leaves for a userspace program. With a program bound to
//   each of its queues (/proc/net/netfilter/nfnetlink_queue, this namespace's), that program decides:
//   not judged (it ends the chain's path like an accept). With none, the kernel drops it: a drop,
//   unless `bypass` (`--queue-bypass`), which lets it on past the chain (queueEnd).
// - The path is read chain by chain (`nft -j list chain`), at most JUMPS_READ of them per foreign
//   chain, never the whole table: past them, a chain dropping by default is an alert saying the path
//   was not judged, one accepting by default is not.
import fs from 'node:fs';
import path from 'node:path';
import type { Runner } from '../dataplane/exec.js';
import { bridgeChains } from '../dataplane/iptables/names.js';
import type { PreflightFinding } from '../protocol/index.js';
import { type EbTable, type Expr, isPalisadeEbRoot, isPalisadeTable, legacyEbTables, legacyTables, listed, nftChains } from './foreign-tables.js';
import { iptTableChains, legacyEbMarkRewrites, legacyMarkRewrites, nftMarkRewrites } from './mark-rewrites.js';

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
  if (onPath('nft')) out.push(...await forwardDropCheck(runner, bridges, chains), ...await nftMarkRewrites(runner, chains, bridges));
  if (onPath('iptables-legacy')) out.push(...await legacyForwardDropCheck(runner, bridges), ...await legacyMarkRewrites(runner, bridges));
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
function forwardDropFinding(check: string, accepted: boolean | 'unknown', bridges: string[]): PreflightFinding {
  if (accepted === true) return { check, ok: true, detail: 'drops by default, and a rule of its table accepts the VM bridges' };
  if (accepted === 'unknown') {
    return { check, ok: false,
      detail: `another firewall's forward chain drops by default (policy drop), and the VM bridges' path through its rules${bridges.length ? ` (${bridges.join(', ')})` : ''} reaches no verdict within ${JUMPS_READ} chains (not read further: preflight reads only what it needs): bridged VM traffic may be dropped whatever the security groups allow (accept the bridges early on that path, e.g. iptables -I DOCKER-USER -i BRIDGE -o BRIDGE -j ACCEPT)` };
  }
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
 * drops or rejects them all (EL's iptables-services ends FORWARD with `-j REJECT`, a Suricata
 * `-j NFQUEUE` with Suricata stopped) drops the VMs' traffic the same way. Its rules alone are read
 * first; the whole table only when they lead elsewhere.
 */
export async function legacyForwardDropCheck(runner: Runner, bridges: string[]): Promise<PreflightFinding[]> {
  const found: PreflightFinding[] = [];
  const listened = queueListenersOnce(runner);
  const listenedIf = async (text: string) => (/ -j N?F?QUEUE\b/.test(text) ? listened() : new Set<number>());
  for (const { family: fam, tool, tables } of await legacyTables(runner)) {
    if (!tables.includes('filter')) continue;
    const fwd = await runner.run(tool, ['-t', 'filter', '-S', 'FORWARD']);
    if (fwd.code !== 0) continue;
    const where = `${fam} filter FORWARD (iptables-legacy)`;
    if (/^-P FORWARD DROP$/m.test(fwd.stdout)) {
      const all = await runner.run(tool, ['-t', 'filter', '-S']);
      const accepted = all.code === 0 && legacyPassesBridges(all.stdout, bridges, await listenedIf(all.stdout));
      found.push(forwardDropFinding(`forward policy ${where}`, accepted, bridges));
      continue;
    }
    let ends = legacyPathEnds(fwd.stdout, bridges, false, await listenedIf(fwd.stdout));
    if (ends.includes('unknown')) {
      // (iptables-legacy fetches the whole table from the kernel for `-S FORWARD` too: this costs its printing only)
      const all = await runner.run(tool, ['-t', 'filter', '-S']);
      ends = all.code === 0 ? legacyPathEnds(all.stdout, bridges, true, await listenedIf(all.stdout)) : [];
    }
    if (ends.includes('drop')) found.push(forwardRuleDropFinding(`forward chain ${where}`, bridges));
  }
  return found;
}

/** Whether an `iptables -S` text's FORWARD passes each managed bridge (legacyPathEnds: all accept). Pure. */
export function legacyPassesBridges(text: string, bridges: string[], listened: ReadonlySet<number> = new Set()): boolean {
  return legacyPathEnds(text, bridges, true, listened).every((end) => end === 'accept');
}

/**
 * Where each managed bridge's traffic ends in an `iptables -S` text's FORWARD: its rules followed in
 * order, as the nft view's walk does, through the user chains they jump or go to; the first rule
 * holding for the bridge's traffic (no condition but a comment, `-i`/`-o` naming the bridge or
 * negated on another name, physdev) that decides — ACCEPT, DROP / REJECT / RETURN / a goto's end,
 * NFQUEUE / QUEUE (queueEnd, with `listened`), the iptables backend's own jump for the bridge — is the
 * answer. With `wholeTable` false the text is FORWARD's alone (`-S FORWARD`): a
 * jump to anything but a verdict is 'unknown' (a user chain not read). Pure.
 */
export function legacyPathEnds(text: string, bridges: string[], wholeTable = true, listened: ReadonlySet<number> = new Set()): PathEnd[] {
  // each chain's rules without their `-A <chain>` (a space first, as the matches below expect)
  const chains = new Map([...iptTableChains(text)].map(([name, rules]) => [name, rules.map((rule) => rule.slice(`-A ${name}`.length))]));
  const holds = (conds: string, bridge: string[]) => {
    let rest = conds.replace(/ -m comment --comment (?:"[^"]*"|\S+)/g, '');
    // `-i br0`, and `! -i eth0` (every packet of br0 matches it), not `! -i br0`
    const ifaces = [...rest.matchAll(/ (!\s+)?-[io] (\S+)/g)];
    if (ifaces.some((x) => Boolean(x[1]) === coversBridge(x[2], bridge, '+'))) return false;
    // physdev: for every bridged frame (`--physdev-is-bridged`), not for one port's or negated
    rest = rest.replace(/ (!\s+)?-[io] \S+/g, '').replace(PHYSDEV_ALL, '');
    return rest.trim() === '';
  };
  return endsPerBridge(bridges, 'FORWARD', (name, depth, bridge, walk) => {
    if (depth > 50) return 'unknown';
    for (const rule of chains.get(name) ?? []) {
      const t = / -([jg]) (\S+)(.*)$/.exec(rule);
      if (!t || !holds(rule.slice(0, t.index), bridge)) continue;
      const [, how, target] = t;
      if (target === 'ACCEPT') return 'accept';
      if (target === 'DROP' || target === 'REJECT') return 'drop';
      if (target === 'NFQUEUE' || target === 'QUEUE') return queueEnd(iptQueue(rule)!, listened);
      if (target === 'RETURN') return 'return';
      if (bridge.some((b) => bridgeChains(b).main === target)) return 'accept';
      if (!wholeTable) return 'unknown';
      if (!chains.has(target)) continue; // a target that lets the packet on (LOG, MARK, …)
      const end = walk(target, depth + 1);
      if (end !== 'return' || how === 'g') return end;
    }
    return 'return';
  });
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

/**
 * Whether an nft match (JSON) of one of the family's bridge interface keys holds for the bridge's
 * traffic: on a name (or a set of names) that covers the bridge, or negated (`iifname != "eth0"`,
 * `oifname != { … }`) on names none of which covers it — the negation matches every packet of that
 * bridge. (`iif` / `oif` negated compare indexes: the bridge's own index only when named.)
 */
function ifaceMatchHolds(m: Expr | undefined, bridges: string[], family: string): boolean {
  if (!m || !ifaceKeys(family).has(m.left?.meta?.key)) return false;
  const names: unknown[] = typeof m.right === 'string' ? [m.right] : Array.isArray(m.right?.set) ? m.right.set : [];
  if (!names.length || !names.every((n) => typeof n === 'string')) return false;
  const covered = names.some((pattern) => coversBridge(pattern as string, bridges, '*'));
  if (m.op === '==' || m.op === 'in') return covered;
  return m.op === '!=' && !covered;
}

/** iptables-nft's physdev match, as nft's JSON shows it (an xt object without its options). */
const isPhysdevMatch = (e: Expr) => e?.xt?.type === 'match' && e.xt.name === 'physdev';
export interface NftChain { family: string; table: string; name: string; hook?: string; policy?: string }


/** Someone else's forward base chains, in a `nft -j list chains` answer. Pure. */
export function foreignForwardChains(chainsJson: string): NftChain[] {
  return listed<NftChain>(chainsJson, 'chain').filter((c) => c.hook === 'forward' && FORWARD_FAMILIES.includes(c.family) && !isPalisadeTable(c.family, c.table));
}

/**
 * Chains read along the VM packets' path through one foreign forward chain. Past them the path is not
 * judged ('unknown'), and nothing more is read: a whole-table read, the fallback before, took 11.9 s
 * with `nft -j list table` on a table of 5,000 chains and 50,000 rules (nft 1.0.6, one run, a
 * synthetic table in a namespace), where one chain took 81–131 ms; preflight runs every pass.
 */
export const JUMPS_READ = 20;

/**
 * The forward-drop check for the host, cheap when there is nothing to find: one `nft -j list chains`
 * (every family's chains with their hooks and policies, no rules) finds the foreign forward chains.
 * One dropping by default must accept the VM bridges; one accepting by default must not drop them on
 * their path (a drop, reject or unheard queue every VM packet of a bridge reaches; its rules read as
 * below, the whole table never).
 * (`nft list tables`, its first step before, made nft 1.0.6 read every rule of every table, Palisade's
 * thousands on an iptables-backend host: 0.4–0.7 s a pass at 200 VMs.) For a dropping chain, the
 * accepting rule is looked for along the path VM traffic takes through it and the chains it jumps to
 * (Docker's DOCKER-USER), at most JUMPS_READ chains of it (past them: not judged, an alert).
 */
export async function forwardDropCheck(runner: Runner, bridges: string[], chainsJson?: string | null): Promise<PreflightFinding[]> {
  const chains = chainsJson === undefined ? await nftChains(runner) : chainsJson;
  if (chains === null) return [];
  const listened = queueListenersOnce(runner);
  // the chains judged side by side (each read is one nft run, ~12 ms with nft 1.0.6; beside the
  // iptables backend three chains accept by default: ebtables', iptables' and ip6tables' FORWARD)
  const judged = await Promise.all(foreignForwardChains(chains).map(async (c): Promise<PreflightFinding[]> => {
    if (c.policy === 'drop') {
      return [forwardDropFinding(`forward policy ${c.family} ${c.table} ${c.name}`, await tableAcceptsBridges(runner, c, bridges, listened), bridges)];
    }
    // accepting by default, but a rule every VM packet reaches drops or rejects it (firewalld's
    // filter_FORWARD ends with `reject` for interfaces of no forwarding zone)
    return (await pathEnds(runner, c, bridges, listened)).includes('drop') ? [forwardRuleDropFinding(`forward chain ${c.family} ${c.table} ${c.name}`, bridges)] : [];
  }));
  return judged.flat();
}

/** Where VM bridge traffic ends up in a chain: accepted, dropped, back to the caller, or not known (past JUMPS_READ chains). */
type PathEnd = 'accept' | 'drop' | 'return' | 'unknown';

/**
 * Whether a rule's conditions certainly hold for the VM bridges' traffic: none (a comment is none), or
 * only interface matches naming a managed bridge (`-i br0 -o br0`, wildcards too; in the bridge
 * family ibrname / obrname, iifname / oifname there being the ports) or negated on other names
 * (`! -o eth0`: ifaceMatchHolds), and physdev. A rule with any other condition (`-o eth0`, `ct
 * state established`, `-p tcp`, `! -i br0`) holds for some of it at most, so neither its accept
 * passes the bridges nor its drop, queue, return or goto ends their path.
 */
function holdsForBridges(expr: Expr[], bridges: string[], family: string): boolean {
  return expr.every((e) => {
    if (!e || typeof e !== 'object') return true;
    if ('xt' in e) return e.xt?.type === 'target' || e.xt?.name === 'comment' || e.xt?.name === 'physdev';
    if ('limit' in e || 'quota' in e) return false; // (statements that let only some packets on)
    if (!('match' in e)) return true;
    return ifaceMatchHolds(e.match, bridges, family);
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

/** iptables-nft's NFQUEUE target (or QUEUE), as nft's JSON shows it: an xt object without its options. */
const isXtQueue = (e: Expr) => e?.xt?.type === 'target' && (e.xt.name === 'NFQUEUE' || e.xt.name === 'QUEUE');

/**
 * iptables-nft's xt objects in nft's JSON carry no options: `! --physdev-is-bridged` (routed traffic
 * only) or `--physdev-in vnet0` (one port) look like `--physdev-is-bridged`, and an NFQUEUE target
 * shows neither its queue numbers nor `--queue-bypass`. For a chain with one, its rules are read
 * again as `iptables-nft -S` text (same order): a physdev that does not hold for every bridged frame
 * is marked so (holdsForBridges then does not count it), an NFQUEUE becomes the `queue` statement it
 * amounts to (queueEnd).
 */
async function withXtOptions(runner: Runner, c: NftChain, name: string, rules: Expr[][]): Promise<Expr[][]> {
  if ((c.family !== 'ip' && c.family !== 'ip6') || !rules.some((expr) => expr.some((e) => isPhysdevMatch(e) || isXtQueue(e)))) return rules;
  const r = await runner.run(c.family === 'ip' ? 'iptables-nft' : 'ip6tables-nft', ['-t', c.table, '-S', name]);
  const lines = r.code === 0 ? r.stdout.split('\n').filter((l) => l.startsWith('-A ')) : [];
  if (lines.length !== rules.length) return rules; // not iptables-nft's alone: left as nft shows them
  return rules.map((expr, i) => {
    const line = `${lines[i]!} `;
    const partial = / -m physdev /.test(line) && / -m physdev /.test(`${lines[i]!.replace(PHYSDEV_ALL, '')} `);
    return expr.map((e) => {
      if (partial && isPhysdevMatch(e)) return { xt: { type: 'match', name: 'physdev (one port or negated)' } };
      return isXtQueue(e) ? { queue: iptQueue(line) ?? {} } : e;
    });
  });
}

/** An iptables rule's NFQUEUE / QUEUE target (`-S` text) as nft's `queue` statement (JSON), or null when it has none. */
export function iptQueue(line: string): Expr | null {
  const t = / -j (NFQUEUE|QUEUE)( |$)/.exec(`${line} `);
  if (!t) return null;
  const balance = /--queue-balance (\d+):(\d+)/.exec(line);
  const num = /--queue-num (\d+)/.exec(line);
  return {
    num: balance ? { range: [Number(balance[1]), Number(balance[2])] } : Number(num?.[1] ?? 0),
    flags: / --queue-bypass\b/.test(line) ? ['bypass'] : [],
  };
}

/**
 * Where a `queue` verdict (nft JSON; NFQUEUE as iptQueue reads it) leaves the VM packets it takes to
 * userspace. Queued to a program listening on each of its queues: that program's verdict, not
 * another firewall's rule — not judged ('accept': the chain's later rules and policy do not see
 * them). No program on one of them: the kernel drops the packet, unless `bypass`, which lets it on
 * past this chain ('accept'). Which queues have a listener: `listened` (queuesListened). Pure.
 */
export function queueEnd(queue: Expr, listened: ReadonlySet<number>): PathEnd {
  const flags: unknown[] = Array.isArray(queue?.flags) ? queue.flags : [queue?.flags];
  if (flags.includes('bypass')) return 'accept';
  const num = queue?.num ?? 0;
  const range = typeof num === 'number' ? [num, num] : Array.isArray(num?.range) ? num.range.map(Number) : null;
  // (a queue number from an expression, `queue to numgen …`: heard if any queue is)
  if (!range || !range.every(Number.isInteger) || range[1] - range[0] > 0xffff) return listened.size ? 'accept' : 'drop';
  for (let n = range[0]; n <= range[1]; n++) if (!listened.has(n)) return 'drop';
  return 'accept';
}

/** The queues a program listens on, from /proc/net/netfilter/nfnetlink_queue (per namespace; one line per bound queue, its number first). Pure. */
export function queuesListened(text: string): Set<number> {
  return new Set(text.split('\n').map((l) => /^\s*(\d+)\s/.exec(l)).filter((m) => m !== null).map((m) => Number(m![1])));
}

/** Reads the namespace's queue listeners once, when a queue verdict asks (none: the file is absent until nfnetlink_queue is loaded). */
function queueListenersOnce(runner: Runner): () => Promise<ReadonlySet<number>> {
  let read: Promise<ReadonlySet<number>> | undefined;
  return () => (read ??= runner.run('cat', ['/proc/net/netfilter/nfnetlink_queue']).then((r) => (r.code === 0 ? queuesListened(r.stdout) : new Set<number>())));
}

/**
 * Whether the dropping chain's table passes the VM bridges. Its rules are followed in order, as the
 * kernel does for a VM's packet, through the chains they jump or go to: the first rule that holds for
 * the bridges' traffic (holdsForBridges) and decides it — accept; drop / reject / return / a goto; the
 * iptables backend's own jump for a managed bridge (`-i br0 -m physdev --physdev-is-bridged -j BF-br0`:
 * that chain accepts what the groups allow and drops the rest, so the policy never sees those frames)
 * — is the answer, for each managed bridge on its own (all must pass). So an accept after Docker's
 * `-A DOCKER-USER -j RETURN`, in a chain only reached by `-i docker0 -j X`, only for `-o eth0`, or
 * only for another of the bridges, does not pass them. A path past JUMPS_READ chains: 'unknown' (its
 * whole table is never read: that took 0.5 s beside Palisade's iptables chains at 200 VMs, 11.9 s on
 * a 50,000-rule table, and judged any accept anywhere in it as passing).
 */
async function tableAcceptsBridges(runner: Runner, c: NftChain, bridges: string[], listened: () => Promise<ReadonlySet<number>>): Promise<boolean | 'unknown'> {
  return passesAll(await pathEnds(runner, c, bridges, listened));
}

/** Every bridge's path ends in an accept: true; one in a drop, or back at the policy: false; else (past the chains read) not judged. */
const passesAll = (ends: PathEnd[]): boolean | 'unknown' =>
  (ends.every((end) => end === 'accept') ? true : ends.includes('drop') || ends.includes('return') ? false : 'unknown');

/** Where each managed bridge's traffic ends in a base chain (see tableAcceptsBridges), read along its path. */
async function pathEnds(runner: Runner, c: NftChain, bridges: string[], listened: () => Promise<ReadonlySet<number>>): Promise<PathEnd[]> {
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
  // xt options are read (`iptables-nft -S`, which loads the whole table: ~70 ms beside the iptables
  // backend's 200 VMs) only for a rule whose physdev or NFQUEUE decides the path; not for the
  // iptables backend's own jump for a bridge (its `--physdev-is-bridged` holds: it is ours)
  const withOptions = async (name: string, rules: Expr[][], i: number): Promise<Expr[]> => {
    if (!reconciled.has(name)) reconciled.set(name, await withXtOptions(runner, c, name, rules));
    return reconciled.get(name)![i]!;
  };
  const jumpsToOwn = (expr: Expr[], bridges: string[]) => expr.some((e) => {
    const t = e?.jump?.target ?? e?.goto?.target;
    return typeof t === 'string' && bridges.some((b) => bridgeChains(b).main === t);
  });
  return endsPerBridgeAsync(bridges, c.name, async (name, depth, bridges, walk) => {
    const rules = depth > JUMPS_READ ? null : await rulesOf(name);
    if (!rules) return 'unknown';
    for (const [i, raw] of rules.entries()) {
      if (!holdsForBridges(raw, bridges, c.family)) continue;
      const expr = (raw.some(isPhysdevMatch) && !jumpsToOwn(raw, bridges)) || raw.some(isXtQueue) ? await withOptions(name, rules, i) : raw;
      if (!holdsForBridges(expr, bridges, c.family)) continue;
      for (const x of expr) {
        if (!x || typeof x !== 'object') continue;
        // `iifname vmap { "br0" : accept, … }`: this bridge's entry is the verdict (none: the rule does not match it)
        const e: Expr = x.vmap ? vmapVerdict(x.vmap, bridges, c.family) : x;
        if ('accept' in e) return 'accept';
        if ('drop' in e || 'reject' in e || (e.xt?.type === 'target' && /^(DROP|REJECT)$/.test(e.xt?.name))) return 'drop';
        if ('queue' in e) return queueEnd(e.queue, await listened());
        if ('return' in e) return 'return';
        const target = e.jump?.target ?? e.goto?.target;
        if (typeof target !== 'string') continue;
        if (bridges.some((b) => bridgeChains(b).main === target)) return 'accept'; // (that bridge's own)
        // the iptables backend's ebtables chains (PALISADE-FWD: out-port marks, unknown ports dropped)
        // are the groups' own, not another firewall's, and long (one rule per port): not read
        if (c.family === 'bridge' && isPalisadeEbRoot(c.table, target)) continue;
        const end = await walk(target, depth + 1);
        if (end !== 'return' || e.goto) return end; // a goto's return is this chain's
      }
    }
    return 'return';
  });
}

/** One walk per managed bridge (none known: one for them all), each bridge's VMs on their own: an accept for br0 leaves cloudbr1's VMs to the policy. */
const bridgeWalks = (bridges: string[]) => (bridges.length ? bridges.map((b) => [b]) : [[]]);

/** Walks one chain for `bridge`'s traffic to where it ends, asking `walk` for the chains its rules jump or go to. */
type ChainWalker<E> = (name: string, depth: number, bridge: string[], walk: (name: string, depth: number) => E) => E;

/**
 * Each managed bridge's end of the path from `root`, every chain walked at most once per bridge: its
 * end does not depend on who jumped to it, and a chain reached along many paths would otherwise be
 * walked once per path.
 */
function endsPerBridge(bridges: string[], root: string, walkChain: ChainWalker<PathEnd>): PathEnd[] {
  return bridgeWalks(bridges).map((bridge) => {
    const ended = new Map<string, PathEnd>();
    const walk = (name: string, depth: number): PathEnd => {
      if (!ended.has(name)) ended.set(name, walkChain(name, depth, bridge, walk));
      return ended.get(name)!;
    };
    return walk(root, 0);
  });
}

/** endsPerBridge for chains read as they are walked: one bridge after another, a chain's end kept once known. */
async function endsPerBridgeAsync(bridges: string[], root: string, walkChain: ChainWalker<Promise<PathEnd>>): Promise<PathEnd[]> {
  const ends: PathEnd[] = [];
  for (const bridge of bridgeWalks(bridges)) {
    const ended = new Map<string, PathEnd>();
    const walk = async (name: string, depth: number): Promise<PathEnd> => {
      if (!ended.has(name)) ended.set(name, await walkChain(name, depth, bridge, walk));
      return ended.get(name)!;
    };
    ends.push(await walk(root, 0));
  }
  return ends;
}

/**
 * The same check for ebtables-legacy's filter FORWARD (nft cannot see legacy tables), only when the
 * kernel already has that table here (legacyEbTables: `ebtables-legacy -L` would create it): the
 * whole table as `ebtables-legacy -t filter -L` text (its chains are few and short), judged by
 * ebForwardFindings.
 */
export async function legacyEbForwardDropCheck(runner: Runner, bridges: string[], ebTables?: EbTable[]): Promise<PreflightFinding[]> {
  if (!(ebTables ?? await legacyEbTables(runner, onPath)).includes('filter')) return [];
  const all = await runner.run('ebtables-legacy', ['-t', 'filter', '-L']);
  return all.code === 0 ? ebForwardFindings(all.stdout, bridges) : [];
}

/**
 * An `ebtables -t filter -L` text's FORWARD judged as the nft view's: dropping by default, each
 * managed bridge's frames must meet an accept (forwardDropFinding); accepting by default, none may
 * meet a drop (forwardRuleDropFinding) — both along ebPathEnds. Pure.
 */
export function ebForwardFindings(text: string, bridges: string[], tool = 'ebtables-legacy'): PreflightFinding[] {
  if (!/^Bridge chain: FORWARD, /m.test(text)) return [];
  const ends = ebPathEnds(text, bridges);
  if (ebForwardDrops(text)) return [forwardDropFinding(`forward policy bridge filter FORWARD (${tool})`, passesAll(ends), bridges)];
  return ends.includes('drop') ? [forwardRuleDropFinding(`forward chain bridge filter FORWARD (${tool})`, bridges)] : [];
}

/** Whether an `ebtables -L` text has FORWARD dropping by default. Pure. */
export const ebForwardDrops = (text: string) => /^Bridge chain: FORWARD, entries: \d+, policy: DROP$/m.test(text);

/** Whether an `ebtables -L` text's FORWARD passes each managed bridge (ebPathEnds: all accept). Pure. */
export const ebAcceptsBridges = (text: string, bridges: string[]) => ebPathEnds(text, bridges).every((end) => end === 'accept');

/** ebtables extension targets that end a frame's way by default (`--<name>-target` overrides): mark, snat, dnat, redirect accept it. */
const EB_ENDING_TARGETS = new Set(['mark', 'snat', 'dnat', 'redirect']);

/**
 * Where each managed bridge's frames end in an `ebtables -L` text's FORWARD (its chains all listed):
 * its rules followed in order through the user chains they jump to, as legacyPathEnds does. A rule
 * holds for a bridge's frames with no condition, or only `--logical-in` / `--logical-out` naming the
 * bridge (`br+` wildcards too) or negated on another name (`--logical-in ! eth0`): `-i` / `-o` name
 * ports, never all of a bridge's frames. ACCEPT / DROP / RETURN decide, CONTINUE does not; a user
 * chain's end is its policy (RETURN by default, DROP or ACCEPT if set); an extension target its
 * `--…-target` (mark, snat, dnat, redirect: ACCEPT by default). Palisade's own roots (PALISADE-FWD)
 * are not followed. FORWARD's own end is 'return' (its policy decides). Pure.
 */
export function ebPathEnds(text: string, bridges: string[]): PathEnd[] {
  const chains = new Map<string, { policy: string; rules: string[] }>();
  let cur: { policy: string; rules: string[] } | null = null;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const h = /^Bridge chain: (\S+), entries: \d+, policy: (\w+)$/.exec(line);
    if (h) { cur = { policy: h[2]!, rules: [] }; chains.set(h[1]!, cur); continue; }
    if (cur && (line.startsWith('-') || line.startsWith('!'))) cur.rules.push(` ${line}`);
  }
  const LOGICAL = / (!\s+)?--logical-(?:in|out) (!\s+)?(\S+)/g;
  const holds = (conds: string, bridge: string[]) =>
    [...conds.matchAll(LOGICAL)].every((x) => Boolean(x[1] || x[2]) !== coversBridge(x[3]!, bridge, '+')) && conds.replace(LOGICAL, '').trim() === '';
  const byName = new Map<string, PathEnd | 'continue'>([['ACCEPT', 'accept'], ['DROP', 'drop'], ['RETURN', 'return'], ['CONTINUE', 'continue']]);
  return endsPerBridge(bridges, 'FORWARD', (name, depth, bridge, walk) => {
    const chain = chains.get(name);
    if (!chain || depth > 50) return 'unknown';
    for (const rule of chain.rules) {
      const t = / -j (\S+)(.*)$/.exec(rule);
      if (!t || !holds(rule.slice(0, t.index), bridge)) continue;
      const target = t[1]!;
      const set = /--[\w-]+-target (ACCEPT|DROP|RETURN|CONTINUE)\b/.exec(t[2]!);
      let end: PathEnd | 'continue' = 'continue'; // (a watcher, `log`, `nflog`: the frame goes on)
      if (byName.has(target)) end = byName.get(target)!;
      else if (set) end = byName.get(set[1]!)!;
      else if (EB_ENDING_TARGETS.has(target)) end = 'accept';
      else if (chains.has(target) && !isPalisadeEbRoot('filter', target)) {
        const sub = walk(target, depth + 1);
        end = sub === 'return' ? 'continue' : sub;
      }
      if (end !== 'continue') return end;
    }
    if (name === 'FORWARD') return 'return';
    return chain.policy === 'ACCEPT' ? 'accept' : chain.policy === 'DROP' ? 'drop' : 'return';
  });
}

/** Findings that put the host in Alert. */
export const unfixable = (fs: PreflightFinding[]) => fs.filter((f) => !f.ok && !f.fixed);
