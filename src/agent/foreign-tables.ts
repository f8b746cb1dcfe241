// Reading other tools' netfilter tables for preflight (forward-drop and mark-rewrite checks): the
// objects of an `nft -j list …` answer, which iptables-legacy and ebtables-legacy tables exist in
// this namespace, and which tables and chains are Palisade's own — told by where they are (its
// nftables tables; the chains its iptables backend names and jumps to from built-in chains), never by
// a rule's `pal:` comment, which any other tool can write too. Read-only by construction: a legacy
// table is only named from what the kernel shows (/proc, its hooks), never listed blind (listing a
// missing one would create it).
import type { Runner } from '../dataplane/exec.js';
import { EB_FWD, EB_POST, EB_PRE, RAW_CHAIN, bridgeChains } from '../dataplane/iptables/names.js';

/** An nft JSON object (rule, chain, expression), read loosely: another tool's. */
export type Expr = Record<string, any>;

/** The `key` objects of an `nft -j list …` answer (none for an answer that is not nft's JSON). */
export function listed<T = Expr>(json: string, key: string): T[] {
  try {
    return ((JSON.parse(json) as { nftables?: Record<string, T | undefined>[] }).nftables ?? []).flatMap((e) => (e[key] ? [e[key]!] : []));
  } catch { return []; }
}

/** Every family's chains with their hooks, priorities and policies, no rules (`nft -j list chains`); null when nft cannot list them. */
export async function nftChains(runner: Runner): Promise<string | null> {
  const r = await runner.run('nft', ['-j', 'list', 'chains']);
  return r.code === 0 ? r.stdout : null;
}

/** Palisade's own nftables tables (its `palisade` tables are bridge and inet); an `ip` / `ip6` / … `palisade` table is someone else's. */
export const isPalisadeTable = (family: string, table: string) => table === 'palisade' && (family === 'bridge' || family === 'inet');

/**
 * Whether an ebtables chain (-nft or -legacy) is one of the roots Palisade's iptables backend jumps
 * to from the built-in chains: filter's PALISADE-FWD, nat's PALISADE-PRE and PALISADE-POST (the rest
 * of its ebtables chains hang below them). By table and name.
 */
export const isPalisadeEbRoot = (table: string, name: string) =>
  (table === 'filter' && name === EB_FWD) || (table === 'nat' && (name === EB_PRE || name === EB_POST));

/**
 * Whether an iptables chain (iptables-nft or -legacy) is one the iptables backend jumps to from a
 * built-in chain: raw's PALISADE-RAW, and filter's per-bridge chains (its per-VM chains hang below
 * those). By table and name, for the managed bridges given; with none known yet (the agent's first
 * pass), any filter `BF-` chain (the backend's prefix for them).
 */
export function isPalisadeIptChain(table: string, name: string, bridges: readonly string[]): boolean {
  if (table === 'raw') return name === RAW_CHAIN;
  if (table !== 'filter') return false;
  if (!bridges.length) return name.startsWith('BF-');
  return bridges.some((b) => { const c = bridgeChains(b); return name === c.main || name === c.in || name === c.out; });
}

export interface LegacyTables { family: 'ip' | 'ip6'; tool: 'iptables-legacy' | 'ip6tables-legacy'; tables: string[] }

/** iptables-legacy's tables the kernel has in this namespace (`/proc/net/ip{,6}_tables_names`), per family. */
export async function legacyTables(runner: Runner): Promise<LegacyTables[]> {
  const out: LegacyTables[] = [];
  for (const [family, tool, names] of [['ip', 'iptables-legacy', '/proc/net/ip_tables_names'], ['ip6', 'ip6tables-legacy', '/proc/net/ip6_tables_names']] as const) {
    const t = await runner.run('cat', [names]);
    if (t.code === 0) out.push({ family, tool, tables: t.stdout.split('\n').map((s) => s.trim()).filter(Boolean) });
  }
  return out;
}

export type EbTable = 'filter' | 'nat' | 'broute';
const EB_TABLES: readonly EbTable[] = ['filter', 'nat', 'broute'];

/** Whether this kernel has legacy ebtables at all, once known (it cannot change while the agent runs). */
let kernelHasLegacyEb: boolean | undefined;

/**
 * ebtables-legacy's tables the kernel has in this namespace, read without creating one: unlike
 * iptables-legacy's, they are named nowhere in /proc, and any listing (`ebtables-legacy -L`, which
 * asks the kernel for the table) creates the table in the namespace — loading its module if need
 * be. So, only where `ebtables-legacy` is installed, and only when the kernel may have one: on a
 * kernel with modules, an ebtable_* module loaded (/proc/modules: none, no table anywhere); without
 * modules, legacy ebtables built in (asked once, in a throwaway namespace: `unshare --net`, so
 * nothing of the host's is created). Then the namespace's hooks (`nft list hooks bridge`, kernels with
 * nfnetlink_hook; with nft 1.0.6 it reads every rule, ~0.4 s on a 200-VM iptables host, hence asked
 * last) say which tables are here: a legacy table shows as its module's name (`[ebtable_filter]`) or,
 * built in, as an ebtables hook function (`ebt_…`) on the hook it serves. A kernel that does not list
 * hooks: the loaded modules' tables (host-wide: made by some namespace; the agent runs in the host's
 * own), or, without modules, none (unknown).
 */
export async function legacyEbTables(runner: Runner, onPath: (tool: string) => boolean): Promise<EbTable[]> {
  if (!onPath('ebtables-legacy')) return [];
  const mods = await runner.run('cat', ['/proc/modules']);
  const loaded = mods.code === 0 ? ebTablesFromModules(mods.stdout) : null;
  if (loaded?.length === 0) return [];
  if (loaded === null) {
    kernelHasLegacyEb ??= (await runner.run('unshare', ['--net', 'ebtables-legacy', '-t', 'filter', '-L'])).code === 0;
    if (!kernelHasLegacyEb) return [];
  }
  // on an agent's host Palisade's own bridge chains are hooked once applied, so an answer without any
  // hook says the kernel does not list them
  const hooks = await runner.run('nft', ['list', 'hooks', 'bridge']);
  if (hooks.code === 0 && /\bhook \w+ \{/.test(hooks.stdout)) return ebTablesFromHooks(hooks.stdout);
  return loaded ?? [];
}

/** The ebtables-legacy tables a `nft list hooks [bridge]` answer shows (its `family bridge` part). Pure. */
export function ebTablesFromHooks(text: string): EbTable[] {
  const found = new Set<EbTable>();
  let hook = '';
  // (an answer for the bridge family alone may name no family)
  let family = /^\s*family \w+ \{/m.test(text) ? '' : 'bridge';
  for (const line of text.split('\n')) {
    const f = /^\s*family (\w+) \{/.exec(line);
    if (f) { family = f[1]; hook = ''; continue; }
    if (family !== 'bridge') continue;
    const h = /\bhook (\w+) \{/.exec(line);
    if (h) { hook = h[1]; continue; }
    const mod = /\[ebtable_(filter|nat|broute)\]/.exec(line);
    if (mod) { found.add(mod[1] as EbTable); continue; }
    const fn = /^\s*([+-]?\d+)\s+(ebt_\w+)/.exec(line);
    if (!fn) continue;
    // built in: the table by the hook (filter: input / forward / output; nat: prerouting at -300,
    // postrouting; broute: prerouting at the very first priority)
    if (hook === 'forward' || hook === 'input') found.add('filter');
    else if (hook === 'postrouting') found.add('nat');
    else if (hook === 'prerouting') found.add(Number(fn[1]) <= -2147483647 ? 'broute' : 'nat');
  }
  return EB_TABLES.filter((t) => found.has(t));
}

/** The ebtables-legacy tables whose modules a /proc/modules text lists. Pure. */
export function ebTablesFromModules(text: string): EbTable[] {
  return EB_TABLES.filter((t) => new RegExp(`^ebtable_${t}\\s`, 'm').test(text));
}
