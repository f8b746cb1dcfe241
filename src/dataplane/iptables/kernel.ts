// What Palisade owns in the kernel, as read back (parsers of *-save output) or as expected after a
// write (from the program), and the diff between that and a desired program. Pure. A read keeps each
// live rule's line as saved, which observe compares with the saved form of what Palisade writes
// (canon.ts): a rule replaced in place (`iptables -R`) with its `pal:` comment kept has the right id
// but another line.
import type { DriftItem } from '../backend.js';
import { hasFlags } from '../nft-json.js';
import { EB_FWD, EB_POST, EB_PRE } from './names.js';
import {
  type EbProgram, type EbTable, EB_TABLES, type Fam, type IptChain, type IptHook, type IptProgram, type Program, type SetDef, type Table,
  TABLES, hashOf, hookLine, ruleLine, setCreateLine,
} from './program.js';

/** `foreign`: rules without a Palisade id inside the chain (someone else's, or tampering).
 *  `garbage`: rules of an older version below the live ones (see `shadowWrite`), unreachable because
 *  the live rules end in an unconditional verdict; removed later by `gcPlan`. */
export interface KChain {
  name: string; owned: boolean; ids: string[]; hash: string | null; foreign: number; garbage: number;
  /** Read back only: digests of the live rules' lines as saved (`lineDigest`), in `ids` order. */
  lines?: string[];
}
/** `pos`: index of the rule in its built-in chain (Palisade's jumps must come first). */
export interface KHook { chain: string; id: string; line: string; pos: number }
export interface KTable { chains: Map<string, KChain>; hooks: KHook[] }
/** `header` (read back only): the set's options that decide what it matches (`ipsetHeader`). */
export interface KSet { family: string; owned: boolean; members: Set<string>; header?: string }
/** ebtables chains keyed `<table>/<chain>`; hooks are the jumps from built-in chains to Palisade's roots. */
export interface KEb { chains: Map<string, string[]>; hooks: { table: EbTable; chain: string; line: string; pos: number }[] }
const EB_ROOTS: Record<EbTable, string[]> = { nat: [EB_PRE, EB_POST], filter: [EB_FWD] };
const ebKey = (t: string, c: string) => `${t}/${c}`;
/**
 * `dormant` (read back only): the nf_tables tables iptables-nft / ebtables-nft keep Palisade's chains in
 * that carry flags (`nft add table ip filter { flags dormant; }` unhooks the whole table: none of its
 * rules run), keyed `ip/filter`, `ip6/raw`, `bridge/nat`… The legacy tools have no such thing.
 */
export interface KState { ipt: Record<Fam, Record<Table, KTable>>; sets: Map<string, KSet>; eb: KEb; dormant?: Set<string> }

/** The nf_tables tables (`family/name`) holding what `p` writes, when the tools are the nft-based ones. */
export function tablesOf(p: Program): string[] {
  const out: string[] = [];
  for (const [f, fam] of [[4, 'ip'], [6, 'ip6']] as const) {
    const prog = f === 4 ? p.v4 : p.v6;
    for (const t of TABLES) if (prog.chains.some((c) => c.table === t) || prog.hooks.some((h) => h.table === t)) out.push(`${fam}/${t}`);
  }
  for (const t of EB_TABLES) if (p.eb.chains.some((c) => c.table === t) || p.eb.hooks.some((h) => h.table === t)) out.push(`bridge/${t}`);
  return out;
}

/** Of `nft -j list tables` output, the tables of `names` (`family/name`) that carry flags (`hasFlags`). */
export function flaggedTables(json: string, names: ReadonlySet<string>): Set<string> {
  const out = new Set<string>();
  let items: Record<string, any>[] = [];
  try { items = (JSON.parse(json) as { nftables: Record<string, any>[] }).nftables ?? []; } catch { return out; }
  for (const { table: t } of items) {
    if (!t) continue;
    const k = `${t.family}/${t.name}`;
    if (names.has(k) && hasFlags(t)) out.add(k);
  }
  return out;
}

/** A saved rule line as a short digest (a big host's views hold one per rule). */
export const lineDigest = (line: string) => hashOf([line]);

const BUILTIN = new Set(['INPUT', 'FORWARD', 'OUTPUT', 'PREROUTING', 'POSTROUTING']);
const COMMENT = /--comment\s+(?:"([^"]*)"|(\S+))/;

function emptyTable(): KTable { return { chains: new Map(), hooks: [] }; }

/** Parse `iptables-save` output (all tables) into Palisade's view: owned chains and hooks. */
export function parseIptSave(text: string): Record<Table, KTable> {
  const out: Record<Table, KTable> = { filter: emptyTable(), raw: emptyTable(), mangle: emptyTable() };
  let cur: KTable | null = null;
  let counts = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line.startsWith('*')) { const t = line.slice(1).trim() as Table; cur = TABLES.includes(t) ? out[t] : null; counts = new Map(); continue; }
    if (!cur) continue;
    if (line.startsWith(':')) {
      const name = line.slice(1).split(' ')[0];
      if (!BUILTIN.has(name)) cur.chains.set(name, { name, owned: false, ids: [], hash: null, foreign: 0, garbage: 0, lines: [] });
      continue;
    }
    if (!line.startsWith('-A ')) continue;
    const chain = line.slice(3).split(' ')[0];
    const pos = counts.get(chain) ?? 0;
    counts.set(chain, pos + 1);
    const m = COMMENT.exec(line);
    const comment = m ? (m[1] ?? m[2]) : '';
    if (!comment.startsWith('pal:')) {
      const fc = cur.chains.get(chain);
      if (fc) fc.foreign++;
      continue;
    }
    const [idPart, hashPart] = comment.slice(4).split(' #');
    if (BUILTIN.has(chain)) { cur.hooks.push({ chain, id: idPart, line, pos }); continue; }
    const c = cur.chains.get(chain) ?? { name: chain, owned: false, ids: [], hash: null, foreign: 0, garbage: 0, lines: [] };
    cur.chains.set(chain, c);
    c.owned = true;
    // Each version of a chain starts with the rule carrying its hash: a second one starts the garbage.
    if (c.garbage > 0 || (hashPart && c.ids.length > 0)) { c.garbage++; continue; }
    if (c.ids.length === 0 && hashPart) c.hash = hashPart;
    c.ids.push(idPart);
    c.lines?.push(lineDigest(line));
  }
  return out;
}

const OWNED_SET = /^(pal-|palisade-|i-)/;

/** Options of a `create` line that do not change what a set matches (sizing, hashing). */
const SIZING = new Set(['hashsize', 'bucketsize', 'initval']);
const VALUED = new Set(['family', 'hashsize', 'maxelem', 'netmask', 'timeout', 'bucketsize', 'initval', 'markmask', 'range', 'size']);

/**
 * What a set's `create` options (the words after its name) say it is, sizing left out, in one order:
 * `ipset swap` exchanges two sets of one type whatever their other options, so a set swapped in with
 * `netmask 8` (every address of a /8 matches), `timeout` (members expire) or without `skbinfo` keeps
 * Palisade's name and its members' texts mostly, and must be told by this.
 */
export function ipsetHeader(words: readonly string[]): string {
  const [type, ...rest] = words;
  const opts: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    const w = rest[i];
    if (w === '-exist') continue;
    if (VALUED.has(w)) {
      const v = rest[++i] ?? '';
      if (!SIZING.has(w) && !(w === 'maxelem' && v === '65536')) opts.push(`${w} ${v}`);
    } else opts.push(w);
  }
  if (!opts.some((o) => o.startsWith('family '))) opts.push('family inet');
  return [type, ...opts.sort()].join(' ');
}

/** The header of a set as Palisade creates it. */
export const wantedHeader = (s: SetDef) => ipsetHeader(setCreateLine(s).split(/\s+/).slice(2));

/** Parse `ipset save`. Palisade's sets carry the `comment` extension and one of its name prefixes. */
export function parseIpsetSave(text: string): Map<string, KSet> {
  const sets = new Map<string, KSet>();
  for (const line of text.split('\n')) {
    const w = line.trim().split(/\s+/);
    if (w[0] === 'create') {
      const fi = w.indexOf('family');
      sets.set(w[1], { family: fi > 0 ? w[fi + 1] : 'inet', owned: OWNED_SET.test(w[1]) && w.includes('comment'), members: new Set(), header: ipsetHeader(w.slice(2)) });
    } else if (w[0] === 'add') sets.get(w[1])?.members.add(w.slice(2).join(' '));
  }
  return sets;
}

/** ebtables rule text as read back (render emits ebtables-save's canonical form, so only spacing varies). */
export function ebNorm(rule: string): string {
  return rule.trim().replace(/\s+/g, ' ');
}

/** Parse `ebtables-save`: Palisade's chains are its roots (PALISADE-PRE/POST, PALISADE-FWD) and what they reach. */
export function parseEbSave(text: string): KEb {
  const chains = new Map<string, string[]>();
  const hooks: KEb['hooks'] = [];
  for (const t of EB_TABLES) {
    const all = new Map<string, string[]>();
    const policies = new Map<string, string>();
    const builtin: { chain: string; line: string; pos: number }[] = [];
    const counts = new Map<string, number>();
    let inT = false;
    for (const line of text.split('\n')) {
      if (line.startsWith('*')) { inT = line.trim() === `*${t}`; continue; }
      if (!inT) continue;
      if (line.startsWith(':')) {
        const [n, policy] = line.slice(1).trim().split(/\s+/);
        if (!BUILTIN.has(n)) { all.set(n, []); if (policy) policies.set(n, policy); }
        continue;
      }
      if (!line.startsWith('-A ')) continue;
      const rest = line.slice(3);
      const sp = rest.indexOf(' ');
      const chain = rest.slice(0, sp);
      const rule = ebNorm(rest.slice(sp + 1));
      if (BUILTIN.has(chain)) { const pos = counts.get(chain) ?? 0; counts.set(chain, pos + 1); builtin.push({ chain, line: rule, pos }); }
      else (all.get(chain) ?? all.set(chain, []).get(chain)!).push(rule);
    }
    const roots = EB_ROOTS[t];
    const queue = roots.filter((c) => all.has(c));
    const seen = new Set<string>();
    while (queue.length) {
      const c = queue.shift()!;
      if (seen.has(c)) continue;
      seen.add(c);
      const rules = all.get(c)!;
      // Palisade declares its chains ACCEPT (`ebtables -P` on one, e.g. DROP, is a changed chain:
      // rewritten, which declares it again) — a rule line never looks like this
      const policy = policies.get(c) ?? 'ACCEPT';
      chains.set(ebKey(t, c), policy === 'ACCEPT' ? rules : [...rules, `(policy ${policy})`]);
      for (const r of rules) {
        const m = /-j (\S+)$/.exec(r);
        if (m && all.has(m[1]) && !seen.has(m[1])) queue.push(m[1]);
      }
    }
    for (const h of builtin) if (roots.some((r) => h.line === `-j ${r}`)) hooks.push({ table: t, ...h });
  }
  return { chains, hooks };
}

/** The kernel state right after `program` was written (the cache between reads). */
export function expectedState(p: Program, shadowed?: Shadowed): KState {
  const ipt = {} as Record<Fam, Record<Table, KTable>>;
  for (const f of [4, 6] as Fam[]) {
    const prog = f === 4 ? p.v4 : p.v6;
    ipt[f] = { filter: emptyTable(), raw: emptyTable(), mangle: emptyTable() };
    for (const c of prog.chains) {
      const garbage = shadowed?.[f].get(`${c.table}/${c.name}`) ?? 0;
      ipt[f][c.table].chains.set(c.name, { name: c.name, owned: true, ids: c.rules.map((r) => r.id), hash: c.hash, foreign: 0, garbage });
    }
    for (const h of prog.hooks) {
      const pos = ipt[f][h.table].hooks.filter((x) => x.chain === h.chain).length;
      ipt[f][h.table].hooks.push({ chain: h.chain, id: h.id, line: hookLine('-I', h).replace(/^-I (\S+) 1 /, '-A $1 '), pos });
    }
  }
  const sets = new Map<string, KSet>();
  for (const s of p.sets) sets.set(s.name, { family: s.family, owned: true, members: new Set(s.members) });
  const eb: KEb = {
    chains: new Map(p.eb.chains.map((c) => [ebKey(c.table, c.name), c.rules])),
    hooks: p.eb.hooks.map((h, i, all) => ({ table: h.table, chain: h.chain, line: h.spec, pos: all.slice(0, i).filter((x) => x.table === h.table && x.chain === h.chain).length })),
  };
  return { ipt, sets, eb };
}

/** Per family, `table/chain` → rules left as garbage below the live ones after the plan ran. */
export type Shadowed = Record<Fam, Map<string, number>>;

/** Restore texts that turn `k` into `p`; empty strings where a tool has nothing to do. */
/** `wake`: an `nft` script clearing the flags of dormant tables Palisade's rules are in (first). */
/** `ipsetStale`: leftover scratch sets, destroyed one by one before the rest, each failure tolerated (not part of planIsEmpty). */
export interface Plan { wake: string; ipsetStale: string[]; ipsetPre: string; ebtables: string; iptables: Record<Fam, string>; ipsetPost: string; shadowed: Shadowed }

export function planIsEmpty(pl: Plan): boolean {
  return !pl.wake && !pl.ipsetPre && !pl.ebtables && !pl.iptables[4] && !pl.iptables[6] && !pl.ipsetPost;
}

/** Our jumps in a built-in chain are all at its top (a rule above them could bypass Palisade). */
function hooksOnTop(hooks: { chain: string; pos: number }[], chain: string): boolean {
  const ours = hooks.filter((h) => h.chain === chain);
  return ours.every((h) => h.pos < ours.length);
}

function sameChain(c: IptChain, k: KChain | undefined): boolean {
  return !!k && k.owned && k.foreign === 0 && k.hash === c.hash && k.ids.length === c.rules.length && k.ids.every((id, i) => id === c.rules[i].id);
}

/** Rules that end a chain whatever the packet: what is below them is never reached. */
const CATCH_ALL = /^-j (RETURN|ACCEPT|DROP)$/;

/**
 * A changed chain that exists (ours, nothing foreign in it) and whose new rules end in a catch-all is
 * rewritten by inserting the new rules above the old ones, in one transaction. Deleting rules makes
 * the restore tool wait for an RCU grace period when it closes its netlink socket (nf_tables frees
 * them then), which dominated a one-rule change; the old rules, now unreachable, go later (gcPlan).
 */
function shadowWrite(c: IptChain, kc: KChain | undefined): boolean {
  // Only chains of plain verdicts (a VM's ingress / egress rules): old rules left behind must not
  // keep a chain that this transaction deletes referenced. The kernel's version must begin with its
  // hash-carrying rule, which is how the read-back tells the old version (garbage) from the new.
  return !!kc && kc.owned && kc.foreign === 0 && kc.hash !== null && kc.ids.length > 0 && c.rules.length > 0
    && c.rules.every((r) => VERDICT.test(r.spec)) && CATCH_ALL.test(c.rules[c.rules.length - 1].spec);
}
const VERDICT = /(^|\s)-j (RETURN|ACCEPT|DROP)$/;

/** `mayShadow`: false when this apply destroys sets (an old rule left as garbage may still use one). */
function iptPlan(prog: IptProgram, k: Record<Table, KTable>, shadowed: Map<string, number>, mayShadow = true): string {
  const out: string[] = [];
  for (const table of TABLES) {
    const kt = k[table];
    const want = prog.chains.filter((c) => c.table === table);
    const wantNames = new Set(want.map((c) => c.name));
    const write = want.filter((c) => !sameChain(c, kt.chains.get(c.name)));
    const del = [...kt.chains.values()].filter((c) => c.owned && !wantNames.has(c.name)).map((c) => c.name);
    const hooks = prog.hooks.filter((h) => h.table === table);
    const wantIds = new Set(hooks.map((h) => h.id));
    const seen = new Set<string>();
    const hookDel: string[] = [];
    // A built-in chain where something sits above our jumps gets all of them re-inserted at the top.
    const sunk = new Set(kt.hooks.map((h) => h.chain).filter((ch) => !hooksOnTop(kt.hooks, ch)));
    for (const h of kt.hooks) {
      if (!wantIds.has(h.id) || seen.has(h.id) || sunk.has(h.chain)) hookDel.push(h.line.replace(/^-A /, '-D '));
      else seen.add(h.id);
    }
    const hookAdd: IptHook[] = hooks.filter((h) => !seen.has(h.id));
    if (!write.length && !del.length && !hookDel.length && !hookAdd.length) continue;
    out.push(`*${table}`);
    // Declaring a chain flushes it inside this transaction: no half-built chain is ever visible.
    // Not while deleting chains: an old version left as garbage may still jump to one of them.
    const shadow = new Set(mayShadow && !del.length ? write.filter((c) => shadowWrite(c, kt.chains.get(c.name))).map((c) => c.name) : []);
    for (const c of write) if (!shadow.has(c.name)) out.push(`:${c.name} - [0:0]`);
    for (const n of del) out.push(`:${n} - [0:0]`);
    out.push(...hookDel);
    for (const c of write) {
      if (!shadow.has(c.name)) { c.rules.forEach((r, i) => out.push(ruleLine(c, r, i))); continue; }
      // each at the top, last rule first: the new version ends up above the old one, in order
      for (let i = c.rules.length - 1; i >= 0; i--) out.push(ruleLine(c, c.rules[i], i).replace(/^-A (\S+) /, '-I $1 1 '));
      const kc = kt.chains.get(c.name)!;
      shadowed.set(`${table}/${c.name}`, kc.ids.length + kc.garbage + kc.foreign);
    }
    for (const c of want) {
      const kc = kt.chains.get(c.name);
      if (!shadow.has(c.name) && kc?.garbage && !write.includes(c)) shadowed.set(`${table}/${c.name}`, kc.garbage);
    }
    for (const h of [...hookAdd].reverse()) out.push(hookLine('-I', h));
    for (const n of del) out.push(`-X ${n}`);
    out.push('COMMIT');
  }
  return out.length ? out.join('\n') + '\n' : '';
}

/** The scratch name a set is rebuilt under (31 characters at most, an owned prefix); `attempt` > 0: the next ones. */
export const scratchSet = (name: string, attempt = 0) => `pal-swap-${hashOf(attempt ? [name, String(attempt)] : [name])}`;

/** A scratch name for `name` that no set in the kernel has (a leftover the kernel will not destroy may hold the first). */
function freeScratch(name: string, k: Map<string, KSet>): string {
  let tmp = scratchSet(name);
  for (let i = 1; k.has(tmp); i++) tmp = scratchSet(name, i);
  return tmp;
}

/** A scratch name of scratchSet's making. */
const SCRATCH_SET = /^pal-swap-[0-9a-f]{12}$/;

function setPlan(sets: SetDef[], k: Map<string, KSet>): { stale: string[]; pre: string; post: string } {
  const pre: string[] = [];
  const adds: string[] = [];
  const want = new Set(sets.map((s) => s.name));
  // A scratch set left by a restore that failed or was cut short between its `swap` and `destroy`
  // (then holding the forged set, with its options): destroyed first, each on its own and failure
  // tolerated — no rule of Palisade's references a scratch set, but another tool's may, and then the
  // kernel refuses ("in use"); inside the restore that refusal would fail every later write. A
  // rebuild takes a scratch name no set has.
  const stale = [...k.keys()].filter((n) => SCRATCH_SET.test(n) && !want.has(n));
  for (const s of sets) {
    const ks = k.get(s.name);
    if (!ks) {
      pre.push(setCreateLine(s));
      for (const m of s.members) adds.push(`add ${s.name} ${m} -exist`);
      continue;
    }
    if (ks.header !== undefined && ks.header !== wantedHeader(s)) {
      // Not the set Palisade creates (swapped in with other options): built anew under a scratch name
      // (one no set has, freeScratch) and swapped in, one restore; the rules that reference the name
      // match the new set from then on.
      const tmp = freeScratch(s.name, k);
      pre.push(`create ${tmp} ${setCreateLine(s).split(/\s+/).slice(2).join(' ')}`, `flush ${tmp}`);
      for (const m of s.members) pre.push(`add ${tmp} ${m} -exist`);
      pre.push(`swap ${tmp} ${s.name}`, `destroy ${tmp}`);
      continue;
    }
    const wantM = new Set(s.members);
    // Deletions first: an element whose skbmark changes is deleted by key, then added anew.
    for (const m of ks.members) if (!wantM.has(m)) pre.push(`del ${s.name} ${m.split(' ')[0]} -exist`);
    for (const m of s.members) if (!ks.members.has(m)) adds.push(`add ${s.name} ${m} -exist`);
  }
  pre.push(...adds);
  const post = [...k.entries()].filter(([n, s]) => s.owned && !want.has(n) && !stale.includes(n)).map(([n]) => `destroy ${n}`);
  return { stale, pre: pre.length ? pre.join('\n') + '\n' : '', post: post.length ? post.join('\n') + '\n' : '' };
}

function ebPlan(eb: EbProgram, k: KEb): string {
  const out: string[] = [];
  for (const t of EB_TABLES) {
    const want = eb.chains.filter((c) => c.table === t);
    const write = want.filter((c) => {
      const kc = k.chains.get(ebKey(t, c.name));
      return !kc || kc.length !== c.rules.length || kc.some((r, i) => r !== c.rules[i]);
    });
    const wantNames = new Set(want.map((c) => c.name));
    const del = [...k.chains.keys()].filter((key) => key.startsWith(`${t}/`)).map((key) => key.slice(t.length + 1)).filter((n) => !wantNames.has(n));
    const wantHooks = eb.hooks.filter((h) => h.table === t).map((h) => ({ chain: h.chain, line: h.spec }));
    const have = k.hooks.filter((h) => h.table === t);
    const sunk = new Set(have.map((h) => h.chain).filter((ch) => !hooksOnTop(have, ch)));
    const hookDel: string[] = [];
    const seen = new Set<string>();
    for (const h of have) {
      const key = `${h.chain} ${h.line}`;
      if (!wantHooks.some((x) => x.chain === h.chain && x.line === h.line) || seen.has(key) || sunk.has(h.chain)) hookDel.push(`-D ${h.chain} ${h.line}`);
      else seen.add(key);
    }
    const hookAdd = wantHooks.filter((h) => !seen.has(`${h.chain} ${h.line}`));
    if (!write.length && !del.length && !hookAdd.length && !hookDel.length) continue;
    out.push(`*${t}`);
    for (const c of write) out.push(`:${c.name} ACCEPT`);
    for (const n of del) out.push(`:${n} ACCEPT`);
    out.push(...hookDel);
    for (const c of write) for (const r of c.rules) out.push(`-A ${c.name} ${r}`);
    for (const h of hookAdd) out.push(`-I ${h.chain} 1 ${h.line}`);
    for (const n of del) out.push(`-X ${n}`);
  }
  return out.length ? out.join('\n') + '\n' : '';
}

export function plan(p: Program, k: KState): Plan {
  const s = setPlan(p.sets, k.sets);
  const shadowed: Shadowed = { 4: new Map(), 6: new Map() };
  const used = new Set(tablesOf(p));
  // `add table` without flags clears them (the table's rules run again)
  const wake = [...(k.dormant ?? [])].filter((t) => used.has(t)).map((t) => `add table ${t.replace('/', ' ')}\n`).join('');
  return {
    wake, ipsetStale: s.stale, ipsetPre: s.pre, ebtables: ebPlan(p.eb, k.eb),
    iptables: { 4: iptPlan(p.v4, k.ipt[4], shadowed[4], !s.post), 6: iptPlan(p.v6, k.ipt[6], shadowed[6], !s.post) },
    ipsetPost: s.post, shadowed,
  };
}

/**
 * Packet/byte counters of the live version of Palisade's rules, from `iptables-save -c` output:
 * `table/chain/rule id` → `[packets:bytes]` (rules below a second hash-carrying rule — garbage — are
 * left out). What garbage collection carries over into the rewritten chains.
 */
export function liveCounters(save: string): Map<string, string> {
  const out = new Map<string, string>();
  const versions = new Map<string, number>();
  let table = '';
  for (const line of save.split('\n')) {
    if (line.startsWith('*')) { table = line.slice(1).trim(); versions.clear(); continue; }
    const m = /^(\[\d+:\d+\]) -A (\S+) /.exec(line);
    if (!m) continue;
    const c = COMMENT.exec(line);
    const comment = c ? (c[1] ?? c[2]) : '';
    if (!comment.startsWith('pal:')) continue;
    const [id, hash] = comment.slice(4).split(' #');
    if (hash !== undefined) versions.set(m[2], (versions.get(m[2]) ?? 0) + 1);
    if ((versions.get(m[2]) ?? 0) > 1) continue;
    out.set(`${table}/${m[2]}/${id}`, m[1]);
  }
  return out;
}

/**
 * Restore texts that drop the garbage: each chain with garbage whose live rules are `p`'s is flushed
 * and written again, atomically (rewriting, not deleting by position, stays right even if the chain
 * moved under us). `done`: the `fam/table/chain`s it rewrites. Texts are '' when there is nothing to do.
 * `counters` (per family, from liveCounters): the live rules keep their counts through the rewrite —
 * the texts are then for `iptables-restore --counters` (per-rule hits must not lose what the rules
 * counted since their version was written).
 */
export function gcPlan(k: KState, p: Program, counters?: Record<Fam, Map<string, string>>): { texts: Record<Fam, string>; done: string[] } {
  const texts = { 4: '', 6: '' } as Record<Fam, string>;
  const done: string[] = [];
  for (const f of [4, 6] as Fam[]) {
    const out: string[] = [];
    for (const table of TABLES) {
      const lines: string[] = [];
      for (const c of (f === 4 ? p.v4 : p.v6).chains) {
        const kc = k.ipt[f][table].chains.get(c.name);
        if (c.table !== table || !kc || kc.garbage <= 0 || !sameChain(c, kc)) continue;
        const count = (id: string) => (counters ? `${counters[f].get(`${table}/${c.name}/${id}`) ?? '[0:0]'} ` : '');
        lines.push(`:${c.name} - [0:0]`, ...c.rules.map((r, i) => `${count(r.id)}${ruleLine(c, r, i)}`));
        done.push(`${f}/${table}/${c.name}`);
      }
      if (lines.length) out.push(`*${table}`, ...lines.filter((l) => l.startsWith(':')), ...lines.filter((l) => !l.startsWith(':')), 'COMMIT');
    }
    texts[f] = out.length ? out.join('\n') + '\n' : '';
  }
  return { texts, done };
}

/** `k` after a gcPlan rewrote `done`. */
export function withoutGarbage(k: KState, done: string[]): KState {
  for (const key of done) {
    const [f, table, name] = key.split('/');
    const c = k.ipt[Number(f) as Fam][table as Table].chains.get(name);
    if (c) c.garbage = 0;
  }
  return k;
}

export function hasGarbage(k: KState): boolean {
  return ([4, 6] as Fam[]).some((f) => TABLES.some((t) => [...k.ipt[f][t].chains.values()].some((c) => c.owned && c.garbage > 0 && c.foreign === 0)));
}

/** The saved form of what Palisade writes (canon.ts): a chain's lines' digests, a hook's line; undefined: not known. */
export interface Written {
  chain(f: Fam, c: IptChain): readonly string[] | undefined;
  hook(f: Fam, h: IptHook): string | undefined;
  /** Learn this chain / hook again at the next check (found not as learned: see IptCanon.forget). */
  forget?(f: Fam, c: IptChain): void;
  forgetHook?(f: Fam, h: IptHook): void;
}

/**
 * Rules replaced in place with their comment kept (`iptables -R … -m comment --comment "pal:…"`):
 * chains whose ids and hash match but whose lines are not what Palisade wrote are marked (hash
 * forgotten) so the next plan rewrites them whole; such hooks are renamed so the next plan deletes them
 * (by their line) and inserts Palisade's own again.
 */
export function bodyDrift(p: Program, k: KState, written: Written): DriftItem[] {
  const out: DriftItem[] = [];
  for (const f of [4, 6] as Fam[]) {
    const prog = f === 4 ? p.v4 : p.v6;
    const tool = f === 4 ? 'iptables' : 'ip6tables';
    for (const c of prog.chains) {
      const kc = k.ipt[f][c.table].chains.get(c.name);
      if (!kc?.lines || !sameChain(c, kc)) continue; // other drift, reported by drift()
      const want = written.chain(f, c);
      if (!want) continue;
      const bad = c.rules.filter((_, i) => kc.lines![i] !== want[i]);
      for (const r of bad) out.push({ kind: 'changed', what: `${tool} ${c.table} rule ${c.name} pal:${r.id}: not the rule Palisade wrote` });
      if (bad.length) { kc.hash = null; written.forget?.(f, c); }
    }
    for (const h of prog.hooks) {
      const want = written.hook(f, h);
      for (const kh of k.ipt[f][h.table].hooks) {
        if (kh.id !== h.id || want === undefined || kh.line === want) continue;
        out.push({ kind: 'changed', what: `${tool} ${h.table} ${kh.chain} jump pal:${h.id}: not the rule Palisade wrote` });
        kh.id = `${h.id} (not as written)`;
        written.forgetHook?.(f, h);
      }
    }
  }
  return out;
}

/** Chains whose lines can be judged (read back, ids and hash as written). */
export function judgeable(p: Program, k: KState): { f: Fam; c: IptChain }[] {
  return ([4, 6] as Fam[]).flatMap((f) => (f === 4 ? p.v4 : p.v6).chains
    .filter((c) => { const kc = k.ipt[f][c.table].chains.get(c.name); return !!kc?.lines && sameChain(c, kc); })
    .map((c) => ({ f, c })));
}

/** What differs between the kernel and the program, for observe. */
export function drift(p: Program, k: KState): DriftItem[] {
  const out: DriftItem[] = [];
  const used = new Set(tablesOf(p));
  for (const t of k.dormant ?? []) if (used.has(t)) out.push({ kind: 'changed', what: `nft table ${t.replace('/', ' ')} (iptables-nft's): flags set (dormant: none of its rules run)` });
  for (const f of [4, 6] as Fam[]) {
    const prog = f === 4 ? p.v4 : p.v6;
    const tool = f === 4 ? 'iptables' : 'ip6tables';
    for (const table of TABLES) {
      const kt = k.ipt[f][table];
      const want = prog.chains.filter((c) => c.table === table);
      for (const c of want) {
        const kc = kt.chains.get(c.name);
        if (!kc || !kc.owned) { out.push({ kind: 'missing', what: `${tool} ${table} chain ${c.name}` }); continue; }
        const have = new Set(kc.ids);
        const wantIds = new Set(c.rules.map((r) => r.id));
        for (const r of c.rules) if (!have.has(r.id)) out.push({ kind: 'missing', what: `${tool} ${table} rule ${c.name} pal:${r.id}` });
        for (const id of kc.ids) if (!wantIds.has(id)) out.push({ kind: 'unexpected', what: `${tool} ${table} rule ${c.name} pal:${id}` });
        if (kc.foreign) out.push({ kind: 'unexpected', what: `${tool} ${table} chain ${c.name}: ${kc.foreign} rule(s) without a Palisade id` });
        if (!sameChain(c, kc) && !kc.foreign && [...have].every((id) => wantIds.has(id)) && c.rules.every((r) => have.has(r.id))) {
          out.push({ kind: 'changed', what: `${tool} ${table} chain ${c.name}` });
        }
      }
      const names = new Set(want.map((c) => c.name));
      for (const kc of kt.chains.values()) if (kc.owned && !names.has(kc.name)) out.push({ kind: 'unexpected', what: `${tool} ${table} chain ${kc.name}` });
      const hooks = prog.hooks.filter((h) => h.table === table);
      for (const h of hooks) if (!kt.hooks.some((x) => x.id === h.id)) out.push({ kind: 'missing', what: `${tool} ${table} ${h.chain} jump pal:${h.id}` });
      for (const x of kt.hooks) if (!hooks.some((h) => h.id === x.id)) out.push({ kind: 'unexpected', what: `${tool} ${table} ${x.chain} jump pal:${x.id}` });
      for (const ch of new Set(kt.hooks.map((h) => h.chain))) if (!hooksOnTop(kt.hooks, ch)) out.push({ kind: 'changed', what: `${tool} ${table} ${ch}: rules above Palisade's jumps` });
    }
  }
  const want = new Map(p.sets.map((s) => [s.name, s]));
  for (const s of p.sets) {
    const ks = k.sets.get(s.name);
    if (!ks) { out.push({ kind: 'missing', what: `ipset ${s.name}` }); continue; }
    if (ks.header !== undefined && ks.header !== wantedHeader(s)) { out.push({ kind: 'changed', what: `ipset ${s.name}: ${ks.header}, not ${wantedHeader(s)}` }); continue; }
    for (const m of s.members) if (!ks.members.has(m)) out.push({ kind: 'missing', what: `ipset ${s.name} element ${m}` });
    const wm = new Set(s.members);
    for (const m of ks.members) if (!wm.has(m)) out.push({ kind: 'unexpected', what: `ipset ${s.name} element ${m}` });
  }
  // (a leftover scratch set is no drift: no rule uses it, and the next write destroys it if the kernel
  // lets it — one another tool uses would otherwise be a repair every pass)
  for (const [n, s] of k.sets) if (s.owned && !want.has(n) && !SCRATCH_SET.test(n)) out.push({ kind: 'unexpected', what: `ipset ${n}` });
  for (const c of p.eb.chains) {
    const kc = k.eb.chains.get(ebKey(c.table, c.name));
    if (!kc) out.push({ kind: 'missing', what: `ebtables ${c.table} chain ${c.name}` });
    else if (kc.length !== c.rules.length || kc.some((r, i) => r !== c.rules[i])) out.push({ kind: 'changed', what: `ebtables ${c.table} chain ${c.name}` });
  }
  const ebNames = new Set(p.eb.chains.map((c) => ebKey(c.table, c.name)));
  for (const n of k.eb.chains.keys()) if (!ebNames.has(n)) out.push({ kind: 'unexpected', what: `ebtables ${n.replace('/', ' chain ')}` });
  for (const h of p.eb.hooks) if (!k.eb.hooks.some((x) => x.table === h.table && x.chain === h.chain && x.line === h.spec)) out.push({ kind: 'missing', what: `ebtables ${h.table} ${h.chain} jump ${h.spec}` });
  for (const t of EB_TABLES) {
    const have = k.eb.hooks.filter((h) => h.table === t);
    for (const ch of new Set(have.map((h) => h.chain))) if (!hooksOnTop(have, ch)) out.push({ kind: 'changed', what: `ebtables ${t} ${ch}: rules above Palisade's jumps` });
  }
  return out;
}
