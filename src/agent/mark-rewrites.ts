// Preflight's check for another tool rewriting the packet mark between where Palisade writes its bits
// (bridge prerouting / forward: the in-port, zone and out-port numbers and the verdict pairs of
// src/dataplane/plan/marks.ts) and where it reads them (IP prerouting for the conntrack zone, IP
// forward for dispatch). A rule there that clears or replaces those bits — `CONNMARK --restore-mark`
// without a mask in mangle PREROUTING, `MARK --set-mark`, `TPROXY --tproxy-mark` without a mask, `HMARK`
// (a hash as the whole mark), nft's `meta mark set ct mark` — makes every
// VM frame look as if it came from an unknown port: Palisade drops the host's VM traffic (fail closed)
// and nothing else says why. Setting bits is harmless (a verdict bit without its complement cleared
// opens nothing, see marks.ts) unless they are port-number bits. Masked rules on bits Palisade does not
// use (12–14, 30–31) are fine.
//
// A bridge prerouting chain that runs before Palisade's own marking there (a lower priority) is
// harmless: Palisade rewrites every bit it carries afterwards (palisadeMarksAt).
//
// Owns: reading the foreign chains of those hooks (nft's JSON per chain, following jumps; rules of
// iptables' and ebtables' xt targets, whose options nft's JSON leaves out, through `iptables -S
// <chain>` / `ebtables -L <chain>`, and iptables-legacy's and ebtables-legacy's tables, which nft
// cannot see, likewise, only those the kernel has: foreign-tables.ts), and judging each mark write
// bit by bit. Reads stay few on a host with many chains: an iptables table past READ_ONE_BY_ONE of
// its chains (kube-proxy's nat, a chain per service) is read whole once and followed in memory, and
// iptables-legacy's tables always are (legacy fetches the whole table for one chain anyway): 15.8 s
// (iptables-nft) and 17.6 s (legacy) a pass with a read per chain beside a kube-proxy-style nat
// table of 2,000 services, stopping at 200 chains; 1.5 s and 0.35 s read so, every chain judged.
// Palisade's own rules are told by where they are, not by their comments: its nftables
// tables are not read, and the chains its iptables backend jumps to from built-in chains (PALISADE-RAW,
// the managed bridges' BF- chains, its ebtables roots: foreign-tables.ts) are not followed; every rule
// of a foreign chain is judged, a `pal:` comment or not (any tool can write one; Palisade's own rules
// in built-in chains are jumps to those chains and a DROP, none writes the mark).
import type { Runner } from '../dataplane/exec.js';
import { MARK_ACCEPT_TO, MARK_ALLOW, MARK_IN_MASK, MARK_NOT_ACCEPT_TO, MARK_NOT_ALLOW, MARK_ZONE_MASK, hex } from '../dataplane/plan/marks.js';
import type { PreflightFinding } from '../protocol/index.js';
import { type EbTable, type Expr, isPalisadeEbRoot, isPalisadeIptChain, isPalisadeTable, legacyEbTables, legacyTables, listed, nftChains } from './foreign-tables.js';

/** The bits Palisade carries from its marking to its matching. */
export const MARK_CARRIED = (MARK_IN_MASK | MARK_ZONE_MASK | MARK_ALLOW | MARK_ACCEPT_TO | MARK_NOT_ALLOW | MARK_NOT_ACCEPT_TO) >>> 0;
/** Of those, the ones another tool may set to 1 without harm (a verdict needs its complement cleared too). */
const SET_HARMLESS = (MARK_ALLOW | MARK_ACCEPT_TO) >>> 0;
const ALL = 0xffffffff;

/** What a mark write does to each bit: kept (the old mark's), forced to 1 / 0, or anything else (unknown). */
export interface BitEffect { keep: number; one: number; zero: number }

/** The bits of Palisade's mark a write breaks: not kept, and not a verdict bit forced to 1. */
export function brokenBits(e: BitEffect): number {
  return (MARK_CARRIED & ~e.keep & ~(e.one & SET_HARMLESS)) >>> 0;
}

const konst = (n: number): BitEffect => ({ keep: 0, one: n >>> 0, zero: (~n) >>> 0 });
const OLD: BitEffect = { keep: ALL, one: 0, zero: 0 };
const UNKNOWN: BitEffect = { keep: 0, one: 0, zero: 0 };

function and(a: BitEffect, b: BitEffect): BitEffect {
  const zero = (a.zero | b.zero) >>> 0;
  // where one side is 1 the result is the other side
  const keep = ((a.keep & b.one) | (b.keep & a.one) | (a.keep & b.keep)) & ~zero;
  return { keep: keep >>> 0, one: (a.one & b.one) >>> 0, zero };
}
function or(a: BitEffect, b: BitEffect): BitEffect {
  const one = (a.one | b.one) >>> 0;
  const keep = ((a.keep & b.zero) | (b.keep & a.zero) | (a.keep & b.keep)) & ~one;
  return { keep: keep >>> 0, one, zero: (a.zero & b.zero) >>> 0 };
}
function xor(a: BitEffect, b: BitEffect): BitEffect {
  const keep = (a.keep & b.zero) | (b.keep & a.zero);
  const one = (a.one & b.zero) | (a.zero & b.one);
  const zero = (a.one & b.one) | (a.zero & b.zero);
  return { keep: keep >>> 0, one: one >>> 0, zero: zero >>> 0 };
}

/** The effect of nft's `meta mark set <value>` (nft JSON value). */
export function nftMarkEffect(v: unknown): BitEffect {
  if (typeof v === 'number') return konst(v);
  if (typeof v === 'string' && /^0x[0-9a-f]+$|^\d+$/i.test(v)) return konst(Number(v));
  const o = v as Expr;
  if (o?.meta?.key === 'mark') return OLD;
  for (const [op, f] of [['&', and], ['|', or], ['^', xor]] as const) {
    if (Array.isArray(o?.[op])) return (o[op] as unknown[]).map(nftMarkEffect).reduce((x, y) => f(x, y));
  }
  return UNKNOWN; // ct mark, a map lookup, anything else
}

/** nft's JSON value as text, for the finding (`ct mark`, `meta mark & 0xc0000000 | 0x1`). */
function nftText(v: unknown): string {
  if (typeof v === 'number') return hex(v);
  const o = v as Expr;
  if (o?.meta?.key) return `meta ${o.meta.key}`;
  if (o?.ct?.key) return `ct ${o.ct.key}`;
  for (const op of ['&', '|', '^']) if (Array.isArray(o?.[op])) return (o[op] as unknown[]).map(nftText).join(` ${op} `);
  return JSON.stringify(v);
}

/** The effect of an iptables rule's mark target (`iptables -S` text), or null when it writes no packet mark. */
export function iptMarkEffect(line: string): BitEffect | null {
  const num = (re: RegExp) => { const m = re.exec(line); return m ? Number(m[1]) >>> 0 : null; };
  /** `<option> value[/mask]`'s write, (mark & ~mask) ^ value (no mask: the whole mark); null without the option. */
  const xmark = (option: string): BitEffect | null => {
    const x = new RegExp(`${option} (0x[0-9a-f]+|\\d+)(?:/(0x[0-9a-f]+|\\d+))?`, 'i').exec(line);
    if (!x) return null;
    const value = Number(x[1]) >>> 0, mask = x[2] === undefined ? ALL : Number(x[2]) >>> 0;
    return xor(and(OLD, konst(~mask)), konst(value));
  };
  if (/ -j MARK /.test(line)) return xmark('--set-xmark') ?? UNKNOWN;
  // xt_TPROXY, when it finds a socket, writes as MARK does; `-S` prints the mask always (0xffffffff for
  // `--tproxy-mark 0x1`: the whole mark). No --tproxy-mark: the mark is left alone.
  if (/ -j TPROXY /.test(line)) return xmark('--tproxy-mark');
  // xt_HMARK: mark = a hash of the packet's addresses and ports (modulo, plus offset), the whole mark
  if (/ -j HMARK( |$)/.test(line)) return UNKNOWN;
  if (/ -j CONNMARK /.test(line) && / --restore-mark/.test(line)) {
    const mask = num(/--mask (0x[0-9a-f]+|\d+)/i);
    const nf = num(/--nfmask (0x[0-9a-f]+|\d+)/i) ?? mask ?? ALL;
    const ct = num(/--ctmask (0x[0-9a-f]+|\d+)/i) ?? mask ?? ALL;
    return or(and(OLD, konst(~nf)), and(UNKNOWN, konst(ct))); // (mark & ~nfmask) | (ctmark & ctmask)
  }
  return null;
}

/** The effect of an ebtables rule's `mark` target (`ebtables -L` text), or null when it has none. */
export function ebMarkEffect(line: string): BitEffect | null {
  const m = / -j mark --mark-(set|or|and|xor) (0x[0-9a-f]+|\d+)/i.exec(` ${line}`);
  if (!m) return / -j mark /.test(` ${line}`) ? UNKNOWN : null;
  const v = konst(Number(m[2]));
  return m[1] === 'set' ? v : m[1] === 'or' ? or(OLD, v) : m[1] === 'and' ? and(OLD, v) : xor(OLD, v);
}

/**
 * Hooks between Palisade's marking and its matching, per family. Bridge prerouting: from where
 * Palisade last writes the mark there (`markedAt`, palisadeMarksAt) on — a chain of a lower priority
 * runs before it, and Palisade rewrites every bit it carries afterwards (at one priority the order is
 * the kernel's, so it counts). Bridge forward: before IP forward (where Palisade reads the out-port it
 * writes at -250 / -200, having read nothing of the in-port mark yet): br_netfilter runs IP forward
 * from its bridge forward hook at 0, and a hook registered later at the same priority runs before the
 * earlier one (nf_hook_entries_grow), so a chain at 0 runs first: any chain at or below 0.
 */
function between(family: string, hook: string, prio: number, markedAt: number): boolean {
  if (family === 'bridge') return (hook === 'prerouting' && prio >= markedAt) || (hook === 'forward' && prio <= 0);
  return (family === 'ip' || family === 'ip6' || family === 'inet') && (hook === 'prerouting' || (hook === 'forward' && prio <= 0));
}

/** ebtables' nat PREROUTING (legacy and -nft): NF_BR_PRI_NAT_DST_BRIDGED. */
const EB_NAT_PRIO = -300;

/**
 * The bridge prerouting priority at which Palisade last writes the mark, from a `nft -j list chains`
 * answer: its nftables backend's chain (-250: in-port, zone and verdict complements, whole — a VM
 * port's map value is the whole mark, an uplink's rule rewrites every carried bit), else the ebtables
 * nat PREROUTING its iptables backend jumps from (to PALISADE-PRE, -300: the in-port and zone bits it
 * reads), whichever runs later when both are in place (a switch between backends). Without either
 * (nothing applied yet) the earlier, -300: a chain there is judged as if Palisade marked first.
 */
export function palisadeMarksAt(chainsJson: string): number {
  const chains = listed(chainsJson, 'chain').filter((c) => c.family === 'bridge');
  const nft = chains.filter((c) => isPalisadeTable(c.family, c.table) && c.hook === 'prerouting').map((c) => Number(c.prio));
  // ebtables' own base chain (PREROUTING of table nat) only: another base chain someone adds to that
  // table, at a later priority, marks nothing of Palisade's and must not hide what runs before it
  const ipt = chains.some((c) => c.name === 'PALISADE-PRE')
    ? chains.filter((c) => c.table === 'nat' && c.name === 'PREROUTING' && c.hook === 'prerouting').map((c) => Number(c.prio)) : [];
  const at = [...nft, ...ipt].filter(Number.isFinite);
  return at.length ? Math.max(...at) : EB_NAT_PRIO;
}

/** iptables targets that are no chain (not listed as one). */
const TARGETS = new Set(['ACCEPT', 'DROP', 'RETURN', 'REJECT', 'MARK', 'CONNMARK', 'LOG', 'NFLOG', 'CT', 'NOTRACK', 'MASQUERADE', 'SNAT', 'DNAT', 'CHECKSUM', 'TCPMSS', 'TPROXY', 'HMARK']);

function finding(where: string, rule: string, e: BitEffect): PreflightFinding {
  return {
    check: `foreign mark ${where}`, ok: false,
    detail: `another tool rewrites the packet mark between Palisade's marking and its matching (${rule}): it does not keep bits ${hex(brokenBits(e))} of the ${hex(MARK_CARRIED)} Palisade carries there (port numbers, conntrack zone, verdicts), so Palisade drops the VMs' traffic (fail closed). Mask it to other bits (e.g. --mask 0xc0000000) or move it elsewhere`,
  };
}

/**
 * Foreign mark rewrites seen through nftables (nft's, iptables-nft's and ebtables-nft's tables). One
 * `nft -j list chains`, then one `nft -j list chain` per base chain at those hooks and per chain they
 * jump to; xt MARK / CONNMARK targets are read as `iptables-nft -S <chain>` text.
 */
export async function nftMarkRewrites(runner: Runner, chainsJson?: string | null, bridges: readonly string[] = []): Promise<PreflightFinding[]> {
  const chains = chainsJson === undefined ? await nftChains(runner) : chainsJson;
  if (chains === null) return [];
  const found: PreflightFinding[] = [];
  const markedAt = palisadeMarksAt(chains);
  const roots = listed(chains, 'chain')
    .filter((c) => !isPalisadeTable(String(c.family), String(c.table)) && c.hook && between(c.family, c.hook, Number(c.prio), markedAt))
    .map((c) => ({ family: String(c.family), table: String(c.table), name: String(c.name) }));
  type Chain = (typeof roots)[number];
  // chains judged (by key), chains read one by one per table, and the iptables tables read whole
  const judged = new Set<string>();
  const readPerTable = new Map<string, number>();
  const readWhole = new Set<string>();
  await followChains(roots, (c) => `${c.family} ${c.table} ${c.name}`, async (c, key): Promise<Chain[]> => {
    if (judged.has(key)) return [];
    const tableKey = `${c.family} ${c.table}`;
    const reads = readPerTable.get(tableKey) ?? 0;
    if ((c.family === 'ip' || c.family === 'ip6') && reads >= READ_ONE_BY_ONE && !readWhole.has(tableKey)) {
      // past READ_ONE_BY_ONE chains of an iptables table (kube-proxy's nat: a chain per service), the
      // rest from one read of it as iptables text (a read per chain cost 15.8 s beside a kube-proxy-
      // style nat table of 2,000 services, 403 runs of ~40 ms, and stopped at 200 chains); not
      // sooner: a table holding the iptables backend's own chains costs more whole than its few
      // foreign chains do. A table iptables-nft cannot show (nft-native rules in it): chain by chain.
      readWhole.add(tableKey);
      const whole = await runner.run(c.family === 'ip' ? 'iptables-nft' : 'ip6tables-nft', ['-t', c.table, '-S']);
      if (whole.code === 0) {
        const tableRoots = roots.filter((x) => x.family === c.family && x.table === c.table).map((x) => x.name);
        found.push(...iptTableFindings(iptTableChains(whole.stdout), c.table, tableRoots, (name) => `${tableKey} ${name}`, bridges, judged));
        if (judged.has(key)) return [];
      }
    }
    judged.add(key);
    readPerTable.set(tableKey, reads + 1);
    const r = await runner.run('nft', ['-j', 'list', 'chain', c.family, c.table, c.name]);
    if (r.code !== 0) return [];
    const rules = listed(r.stdout, 'rule');
    const xt = (rule: Expr) => (Array.isArray(rule.expr) ? rule.expr as Expr[] : []).some((e) => e?.xt);
    if ((c.family === 'ip' || c.family === 'ip6') && rules.some(xt)) {
      // iptables-nft's: nft's JSON shows no xt options, so this chain is read as iptables text, and
      // its jumps followed from there
      const chain = await iptChain(runner, c.family === 'ip' ? 'iptables-nft' : 'ip6tables-nft', c.table, c.name, key, bridges);
      found.push(...chain.found);
      return chain.jumps.map((name) => ({ ...c, name }));
    }
    const jumps: Chain[] = [];
    for (const rule of rules) {
      for (const e of (Array.isArray(rule.expr) ? rule.expr : []) as Expr[]) {
        const target = e?.jump?.target ?? e?.goto?.target;
        if (typeof target === 'string' && !palisadeChain(c.family, c.table, target, bridges)) jumps.push({ ...c, name: target });
        if (e?.mangle?.key?.meta?.key === 'mark') {
          const effect = nftMarkEffect(e.mangle.value);
          if (brokenBits(effect)) found.push(finding(key, `meta mark set ${nftText(e.mangle.value)}, handle ${rule.handle}`, effect));
        }
      }
    }
    if (c.family === 'bridge' && rules.some((rule) => (rule.expr as Expr[] | undefined)?.some((e) => e?.xt?.type === 'target' && e.xt.name === 'mark'))) {
      found.push(...(await ebChain(runner, 'ebtables-nft', c.table, c.name, key)).found);
    }
    return jumps;
  }, (key) => judged.has(key));
  return found;
}

/** A chain Palisade's iptables backend jumps to from a built-in chain (foreign-tables.ts): not another tool's, not followed. */
const palisadeChain = (family: string, table: string, name: string, bridges: readonly string[]) =>
  (family === 'bridge' ? isPalisadeEbRoot(table, name) : isPalisadeIptChain(table, name, bridges));

/** Chains of one iptables table read one by one (each an nft run, ~12–40 ms) before the rest are read from the whole table at once. */
const READ_ONE_BY_ONE = 16;

/**
 * Follows chains from `roots`, breadth first, each once and at most 200 (a hypervisor's foreign chains
 * are few; an iptables table's many are read whole past READ_ONE_BY_ONE): `visit` reads one and
 * names the chains it jumps to.
 */
async function followChains<T>(roots: T[], key: (chain: T) => string, visit: (chain: T, key: string) => Promise<T[]>, done: (key: string) => boolean = () => false): Promise<void> {
  const todo = [...roots];
  const seen = new Set<string>();
  while (todo.length) {
    const chain = todo.shift()!;
    const k = key(chain);
    // (`done`: judged otherwise, e.g. from its whole table: neither read nor counted)
    if (seen.has(k) || done(k) || seen.size > 200) continue;
    seen.add(k);
    todo.push(...await visit(chain, k));
  }
}

/**
 * One ebtables chain as `<tool> -t <table> -L <chain>` text: its mark rewrites, and the user chains it
 * jumps to (not Palisade's roots). ebtables-nft by name, as iptables-nft: `ebtables` may be the legacy
 * one (another table, and listing it would create it). A chain that is not there: nothing.
 */
async function ebChain(runner: Runner, tool: 'ebtables-nft' | 'ebtables-legacy', table: string, chain: string, where: string): Promise<{ found: PreflightFinding[]; jumps: string[] }> {
  const r = await runner.run(tool, ['-t', table, '-L', chain]);
  const out = { found: [] as PreflightFinding[], jumps: [] as string[] };
  if (r.code !== 0) return out;
  const shown = tool === 'ebtables-nft' ? 'ebtables' : tool;
  for (const line of r.stdout.split('\n')) {
    if (!line.startsWith('-')) continue;
    const j = / -j (\S+)/.exec(` ${line}`);
    if (j && !EB_TARGETS.has(j[1]) && !isPalisadeEbRoot(table, j[1])) out.jumps.push(j[1]);
    const effect = ebMarkEffect(line);
    if (effect && brokenBits(effect)) out.found.push(finding(where, `${shown} -t ${table} -A ${chain} ${line.trim()}`, effect));
  }
  return out;
}

/**
 * One iptables chain as `<tool> -t <table> -S <chain>` text: its mark rewrites (every rule's, whatever
 * its comment), and the user chains it jumps to (not Palisade's: isPalisadeIptChain). A chain that is
 * not there: nothing.
 */
async function iptChain(runner: Runner, tool: string, table: string, chain: string, where: string, bridges: readonly string[]): Promise<{ found: PreflightFinding[]; jumps: string[] }> {
  const r = await runner.run(tool, ['-t', table, '-S', chain]);
  const out = { found: [] as PreflightFinding[], jumps: [] as string[] };
  if (r.code !== 0) return out;
  for (const line of r.stdout.split('\n')) {
    if (!line.startsWith('-A ')) continue;
    const j = / -[jg] (\S+)/.exec(line);
    // a user chain (or a target: its listing fails)
    if (j && !TARGETS.has(j[1]) && !isPalisadeIptChain(table, j[1], bridges)) out.jumps.push(j[1]);
    const effect = iptMarkEffect(line);
    if (effect && brokenBits(effect)) out.found.push(finding(where, line, effect));
  }
  return out;
}

/**
 * Mark rewrites in iptables-legacy's tables (invisible to nft): the tables the kernel has for this
 * namespace (`/proc/net/ip{,6}_tables_names`: listing one that is not there would create it), their
 * PREROUTING and FORWARD chains and the chains those jump to, each table read whole once
 * (`iptables-legacy -S`: legacy fetches the whole table from the kernel for one chain too).
 */
export async function legacyMarkRewrites(runner: Runner, bridges: readonly string[] = []): Promise<PreflightFinding[]> {
  const found: PreflightFinding[] = [];
  for (const { family: fam, tool, tables } of await legacyTables(runner)) {
    for (const table of tables) {
      const r = await runner.run(tool, ['-t', table, '-S']);
      if (r.code !== 0) continue;
      found.push(...iptTableFindings(iptTableChains(r.stdout), table, ['PREROUTING', 'FORWARD'], (chain) => `${fam} ${table} ${chain} (iptables-legacy)`, bridges, new Set()));
    }
  }
  return found;
}

/** An iptables table as `<tool> -t <table> -S` text: each chain's rule lines (`-A <chain> …`, whole), by chain. Pure. */
export function iptTableChains(text: string): Map<string, string[]> {
  const chains = new Map<string, string[]>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const m = /^-([NA]) (\S+)/.exec(line);
    if (!m) continue;
    const rules = chains.get(m[2]!) ?? chains.set(m[2]!, []).get(m[2]!)!;
    if (m[1] === 'A') rules.push(line);
  }
  return chains;
}

/**
 * The mark rewrites of an iptables table read whole (iptTableChains) in the chains reached from
 * `roots`: every rule judged (whatever its comment) but in chains already `judged` (keyed by
 * `where`; added to it), the user chains it jumps or goes to followed, each once, but Palisade's
 * (isPalisadeIptChain). Pure.
 */
function iptTableFindings(chains: Map<string, string[]>, table: string, roots: string[], where: (chain: string) => string, bridges: readonly string[], judged: Set<string>): PreflightFinding[] {
  const found: PreflightFinding[] = [];
  const todo = roots.filter((r) => chains.has(r));
  const seen = new Set<string>();
  while (todo.length) {
    const chain = todo.shift()!;
    if (seen.has(chain)) continue;
    seen.add(chain);
    const fresh = !judged.has(where(chain));
    judged.add(where(chain));
    for (const line of chains.get(chain) ?? []) {
      const j = / -[jg] (\S+)/.exec(line);
      if (j && chains.has(j[1]!) && !isPalisadeIptChain(table, j[1]!, bridges)) todo.push(j[1]!);
      const effect = fresh ? iptMarkEffect(line) : null;
      if (effect && brokenBits(effect)) found.push(finding(where(chain), line, effect));
    }
  }
  return found;
}

/** ebtables' built-in targets and extension targets: no chain to follow. */
const EB_TARGETS = new Set(['ACCEPT', 'DROP', 'CONTINUE', 'RETURN', 'mark', 'dnat', 'snat', 'redirect', 'arpreply', 'log', 'nflog', 'ulog']);

/**
 * Mark rewrites in ebtables-legacy's tables (invisible to nft), only those the kernel already has
 * (legacyEbTables: listing a missing one creates it): filter FORWARD, nat PREROUTING (at -300: after
 * Palisade's marking only when that is the iptables backend's, palisadeMarksAt), and the user chains
 * they jump to, as `ebtables-legacy -t <table> -L <chain>` text. broute runs before any of it.
 */
export async function legacyEbMarkRewrites(runner: Runner, onPath: (tool: string) => boolean, ebTables?: EbTable[], chainsJson?: string | null): Promise<PreflightFinding[]> {
  const tables = ebTables ?? await legacyEbTables(runner, onPath);
  const roots: [string, string][] = [];
  if (tables.includes('filter')) roots.push(['filter', 'FORWARD']);
  if (tables.includes('nat')) {
    const chains = chainsJson === undefined ? await nftChains(runner) : chainsJson;
    if (between('bridge', 'prerouting', EB_NAT_PRIO, palisadeMarksAt(chains ?? ''))) roots.push(['nat', 'PREROUTING']);
  }
  const found: PreflightFinding[] = [];
  for (const [table, root] of roots) {
    await followChains([root], (chain) => chain, async (chain) => {
      const c = await ebChain(runner, 'ebtables-legacy', table, chain, `bridge ${table} ${chain} (ebtables-legacy)`);
      found.push(...c.found);
      return c.jumps;
    });
  }
  return found;
}
