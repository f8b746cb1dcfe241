// What Palisade owns in nftables (its two `palisade` tables), as read back from `nft -j list table` or
// as expected after a write, and the difference between that and a desired program. Pure.
//
// Chains are compared by ids and hashes (every rule's comment carries its id, the first rule's the
// chain's hash); sets and maps by their elements. A write never lists anything: it diffs against what
// the last write (or the first read) left. A read also keeps each rule's body (`bodies`), which observe
// compares with the kernel's own form of the rule as written (canon.ts): a rule replaced in place with
// its comment kept has the right id but another body.
import type { DriftItem } from '../backend.js';
import { hasFlags } from '../nft-json.js';
import { DROP_LOG_SET_PREFIX, FAMILIES, type NFamily, TABLE } from './names.js';
import {
  type NChain, type NSet, type NftProgram,
  chainDecl, elementLines, hashOf, isVerdictMap, keyOf, parseComment, ruleLine, setDecl,
} from './program.js';

/** `bodies` (read back only): each Palisade rule's body as the kernel holds it (see `ruleBody`), in `ids` order. */
export interface KChain { family: NFamily; name: string; base: string | null; ids: string[]; hash: string | null; foreign: number; bodies?: string[] }
export interface KSet {
  family: NFamily; name: string; map: boolean; elements: Set<string>;
  /** The elements in the order a write gave them (after a write, not a read): an equal list is no change. */
  written?: readonly string[];
  /** Read back only: a digest of the set's declaration as the kernel holds it (type, flags, timeout, size…). */
  header?: string;
  /** Declared otherwise than Palisade declares it (setDrift): the next diff deletes and declares it again. */
  recreate?: boolean;
}
export interface KState {
  tables: Set<NFamily>;
  chains: Map<string, KChain>;
  sets: Map<string, KSet>;
  /** Named counters found in our tables (Palisade makes none: its counters are inline). */
  counters: Set<string>;
  /**
   * Our tables that carry flags (read back only). Palisade sets none: `flags dormant` (`nft add table
   * inet palisade { flags dormant; }`) unhooks every base chain of the table, so nothing it holds is run.
   */
  flagged?: Set<NFamily>;
}

const key = (family: NFamily, name: string) => `${family}/${name}`;

export function emptyState(): KState {
  return { tables: new Set(), chains: new Map(), sets: new Map(), counters: new Set() };
}

/** Canonical text of a JSON set element / map value, as the program writes them. */
function canon(v: unknown): string {
  if (typeof v === 'number') return String(v);
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object') {
    const o = v as Record<string, any>;
    if ('goto' in o) return `goto ${o.goto.target}`;
    if ('jump' in o) return `jump ${o.jump.target}`;
    if ('drop' in o) return 'drop';
    if ('accept' in o) return 'accept';
    if ('return' in o) return 'return';
    if ('elem' in o) return canon(o.elem.val);
    if ('prefix' in o) return `${o.prefix.addr}/${o.prefix.len}`;
    if ('range' in o) return `${canon(o.range[0])}-${canon(o.range[1])}`;
    if ('concat' in o) return (o.concat as unknown[]).map(canon).join(' . ');
  }
  return JSON.stringify(v);
}

function element(e: unknown, map: boolean): string {
  if (map && Array.isArray(e)) return `${canon(e[0])} : ${canon(e[1])}`;
  return canon(e);
}

/** The base-chain spec as the program writes it. */
function baseOf(c: Record<string, any>): string | null {
  if (!c.hook) return null;
  return `type ${c.type} hook ${c.hook} priority ${c.prio}; policy ${c.policy ?? 'accept'};`;
}

/** Parse `nft -j list table <family> palisade` (one family's output; absent table: empty text). */
export function parseTable(family: NFamily, json: string, into: KState = emptyState()): KState {
  if (!json.trim()) return into;
  const items = (JSON.parse(json) as { nftables: Record<string, any>[] }).nftables;
  for (const item of items) {
    if (item.table && item.table.name === TABLE) { into.tables.add(family); if (hasFlags(item.table)) (into.flagged ??= new Set()).add(family); }
    const c = item.chain;
    if (c && c.table === TABLE) into.chains.set(key(family, c.name), { family, name: c.name, base: baseOf(c), ids: [], hash: null, foreign: 0, bodies: [] });
    const s = item.set ?? item.map;
    if (s && s.table === TABLE) {
      const map = !!item.map;
      // the drop log's buckets are filled by the kernel: their elements are never ours to compare
      const elements = String(s.name).startsWith(DROP_LOG_SET_PREFIX) ? [] : ((s.elem ?? []) as unknown[]).map((e) => element(e, map));
      into.sets.set(key(family, s.name), { family, name: s.name, map, elements: new Set(elements), header: setHeader(s) });
    }
    if (item.counter && item.counter.table === TABLE) into.counters.add(key(family, item.counter.name));
    const r = item.rule;
    if (r && r.table === TABLE) {
      const kc = into.chains.get(key(family, r.chain));
      if (!kc) continue;
      const pc = parseComment(r.comment);
      if (!pc) { kc.foreign++; continue; }
      if (kc.ids.length === 0) kc.hash = pc.hash;
      kc.ids.push(pc.id);
      kc.bodies?.push(ruleBody(r));
    }
  }
  return into;
}

/** A set's declaration as nft's JSON shows it (its elements and handle left out), as a short digest. */
export function setHeader(s: Record<string, any>): string {
  const { handle: _h, elem: _e, ...decl } = s;
  return hashOf([JSON.stringify(decl)]);
}

/**
 * A rule as the kernel holds it, without what changes by itself (handle, counter values), as a short
 * digest (a big host's views hold one per rule).
 */
export function ruleBody(r: Record<string, any>): string {
  const expr = ((r.expr ?? []) as Record<string, any>[]).map((e) => (e.counter && typeof e.counter === 'object' ? { counter: null } : e));
  return hashOf([JSON.stringify([expr, r.comment ?? null])]);
}

// Chains are immutable and memoised by the renderer: their expected read-back is made once each.
const expectedChain = new WeakMap<NChain, KChain>();

/** A set as written: its element Set is only built when something asks (most writes change a few sets). */
function writtenSet(s: NSet): KSet {
  let elements: Set<string> | null = null;
  return { family: s.family, name: s.name, map: s.map, written: s.elements, get elements() { return (elements ??= new Set(s.elements)); } };
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The kernel state right after `p` was written. */
export function expectedState(p: NftProgram): KState {
  const k = emptyState();
  for (const c of p.chains) {
    k.tables.add(c.family);
    let kc = expectedChain.get(c);
    if (!kc) expectedChain.set(c, (kc = { family: c.family, name: c.name, base: c.base ?? null, ids: c.rules.map((r) => r.id), hash: c.hash, foreign: 0 }));
    k.chains.set(key(c.family, c.name), kc);
  }
  for (const s of p.sets) { k.tables.add(s.family); k.sets.set(key(s.family, s.name), writtenSet(s)); }
  return k;
}

function sameChain(c: NChain, k: KChain | undefined): boolean {
  if (k && expectedChain.get(c) === k) return true; // written from this very chain
  return !!k && k.foreign === 0 && k.hash === c.hash && (k.base ?? null) === (c.base ?? null)
    && k.ids.length === c.rules.length && k.ids.every((id, i) => id === c.rules[i].id);
}

const at = (family: NFamily) => `${family} ${TABLE}`;

/**
 * One `nft` script (one transaction) that turns `k` into `p`, or '' when they match. Order: new
 * tables, chains, sets, counters; set elements; changed and new chains' rules (a changed chain is
 * flushed and written again inside the transaction: never visible half-built); verdict-map elements;
 * then what goes away (chains flushed before any is deleted, so no reference survives); tables last.
 */
export function diffScript(p: NftProgram, k: KState): string {
  const out: string[] = [];
  const families = new Set<NFamily>([...p.chains.map((c) => c.family), ...p.sets.map((s) => s.family)]);
  // (`add table` without flags also clears a table's flags: a dormant table runs its chains again)
  for (const f of FAMILIES) if (families.has(f) && (!k.tables.has(f) || k.flagged?.has(f))) out.push(`add table ${at(f)}`);
  const live = (f: NFamily) => families.has(f);

  const rewrite: NChain[] = [];
  const rebase: NChain[] = [];
  const kept = new Set<KChain>();
  for (const c of p.chains) {
    const kc = k.chains.get(key(c.family, c.name));
    if (!kc) { out.push(chainDecl(c)); rewrite.push(c); continue; }
    kept.add(kc);
    if ((kc.base ?? null) !== (c.base ?? null)) { rebase.push(c); continue; }
    if (!sameChain(c, kc)) rewrite.push(c);
  }
  const newSets: NSet[] = [];
  const keptSets = new Set<KSet>();
  for (const s of p.sets) {
    const ks = k.sets.get(key(s.family, s.name));
    if (!ks) { out.push(setDecl(s)); newSets.push(s); continue; }
    keptSets.add(ks);
    if (!ks.recreate) continue;
    // declared otherwise (another tool deleted and re-declared it): the chains that use it are emptied
    // so it can go, it is declared again and filled, and they are written again (below)
    const uses = new RegExp(`@${s.name}(?![\\w-])`);
    for (const c of p.chains) {
      if (c.family !== s.family || !c.rules.some((r) => uses.test(r.text))) continue;
      if (k.chains.has(key(c.family, c.name))) out.push(`flush chain ${at(c.family)} ${c.name}`);
      if (!rewrite.includes(c) && !rebase.includes(c)) rewrite.push(c);
    }
    out.push(`delete ${s.map ? 'map' : 'set'} ${at(s.family)} ${s.name}`, setDecl(s));
  }

  const elementOps = (verdict: boolean) => {
    for (const s of p.sets) {
      if (isVerdictMap(s) !== verdict) continue;
      const ks = k.sets.get(key(s.family, s.name));
      if (ks?.written && sameList(ks.written, s.elements)) continue;
      const have = ks && !ks.recreate ? ks.elements : new Set<string>();
      const want = new Set(s.elements);
      // a changed value is a deletion of its key, then an addition
      out.push(...elementLines('delete', s, [...have].filter((e) => !want.has(e))));
      out.push(...elementLines('add', s, s.elements.filter((e) => !have.has(e))));
    }
  };
  elementOps(false);
  for (const c of rebase) out.push(`flush chain ${at(c.family)} ${c.name}`, `delete chain ${at(c.family)} ${c.name}`, chainDecl(c));
  for (const c of [...rewrite, ...rebase]) {
    if (k.chains.has(key(c.family, c.name)) && !rebase.includes(c)) out.push(`flush chain ${at(c.family)} ${c.name}`);
    c.rules.forEach((r, i) => out.push(ruleLine(c, r, i)));
  }
  elementOps(true);

  // what goes away (in tables that stay; a table that goes is deleted whole)
  // (when every known chain / set is still wanted, nothing goes: no need to look)
  if (kept.size < k.chains.size) {
    const wantChains = new Set(p.chains.map((c) => key(c.family, c.name)));
    const goneChains = [...k.chains.values()].filter((c) => live(c.family) && !wantChains.has(key(c.family, c.name)));
    for (const c of goneChains) out.push(`flush chain ${at(c.family)} ${c.name}`);
    for (const c of goneChains) out.push(`delete chain ${at(c.family)} ${c.name}`);
  }
  if (keptSets.size < k.sets.size) {
    const wantSets = new Set(p.sets.map((s) => key(s.family, s.name)));
    for (const s of k.sets.values()) if (live(s.family) && !wantSets.has(key(s.family, s.name))) out.push(`delete ${s.map ? 'map' : 'set'} ${at(s.family)} ${s.name}`);
  }
  for (const c of k.counters) { const [f, n] = c.split('/') as [NFamily, string]; if (live(f)) out.push(`delete counter ${at(f)} ${n}`); }
  for (const f of FAMILIES) if (k.tables.has(f) && !families.has(f)) out.push(`delete table ${at(f)}`);
  void newSets;
  return out.length ? out.join('\n') + '\n' : '';
}

/** Script removing both tables whether or not they exist (`add` first makes `delete` never fail). */
export function teardownScript(): string {
  return FAMILIES.map((f) => `add table ${at(f)}\ndelete table ${at(f)}`).join('\n') + '\n';
}

/**
 * What differs between the kernel and the program, for observe. `read`: only these were read (keys
 * `family/name`, or `bridge/*` for the whole bridge table); objects outside it are not judged.
 */
export function drift(p: NftProgram, kernel: KState, read?: Set<string>): DriftItem[] {
  const seen = (family: NFamily, name: string) => !read || read.has(`${family}/${name}`) || (family === 'bridge' && read.has('bridge/*'));
  const k: KState = read ? {
    tables: kernel.tables,
    chains: new Map([...kernel.chains].filter(([, c]) => seen(c.family, c.name))),
    sets: new Map([...kernel.sets].filter(([, s]) => seen(s.family, s.name))),
    counters: new Set([...kernel.counters].filter((c) => seen(c.split('/')[0] as NFamily, c.split('/')[1]))),
  } : kernel;
  const families = new Set<NFamily>([...p.chains.map((c) => c.family), ...p.sets.map((s) => s.family)]);
  p = read ? { chains: p.chains.filter((c) => seen(c.family, c.name)), sets: p.sets.filter((s) => seen(s.family, s.name)) } : p;
  const out: DriftItem[] = [];
  for (const f of FAMILIES) {
    if (families.has(f) && !k.tables.has(f)) out.push({ kind: 'missing', what: `nft table ${f} ${TABLE}` });
    if (!families.has(f) && k.tables.has(f)) out.push({ kind: 'unexpected', what: `nft table ${f} ${TABLE}` });
    if (families.has(f) && k.tables.has(f) && kernel.flagged?.has(f)) out.push({ kind: 'changed', what: `nft table ${f} ${TABLE}: flags set (dormant: none of its chains run)` });
  }
  for (const c of p.chains) {
    if (!k.tables.has(c.family)) continue;
    const kc = k.chains.get(key(c.family, c.name));
    const what = `nft ${c.family} chain ${c.name}`;
    if (!kc) { out.push({ kind: 'missing', what }); continue; }
    if (kc.foreign) out.push({ kind: 'unexpected', what: `${what}: ${kc.foreign} rule(s) without a Palisade id` });
    const have = new Set(kc.ids);
    const want = new Set(c.rules.map((r) => r.id));
    for (const r of c.rules) if (!have.has(r.id)) out.push({ kind: 'missing', what: `${what} rule pal:${r.id}` });
    for (const id of kc.ids) if (!want.has(id)) out.push({ kind: 'unexpected', what: `${what} rule pal:${id}` });
    if (!kc.foreign && !sameChain(c, kc) && c.rules.every((r) => have.has(r.id)) && kc.ids.every((id) => want.has(id))) out.push({ kind: 'changed', what });
  }
  const wantChains = new Set(p.chains.map((c) => key(c.family, c.name)));
  for (const [n, c] of k.chains) if (!wantChains.has(n) && families.has(c.family)) out.push({ kind: 'unexpected', what: `nft ${c.family} chain ${c.name}` });
  for (const s of p.sets) {
    if (!k.tables.has(s.family)) continue;
    const ks = k.sets.get(key(s.family, s.name));
    const what = `nft ${s.family} ${s.map ? 'map' : 'set'} ${s.name}`;
    if (!ks) { out.push({ kind: 'missing', what }); continue; }
    const want = new Set(s.elements);
    for (const e of s.elements) if (!ks.elements.has(e)) out.push({ kind: 'missing', what: `${what} element ${e}` });
    for (const e of ks.elements) if (!want.has(e)) out.push({ kind: 'unexpected', what: `${what} element ${e}` });
  }
  const wantSets = new Set(p.sets.map((s) => key(s.family, s.name)));
  for (const [n, s] of k.sets) if (!wantSets.has(n) && families.has(s.family)) out.push({ kind: 'unexpected', what: `nft ${s.family} set ${s.name}` });
  for (const c of k.counters) if (families.has(c.split('/')[0] as NFamily)) out.push({ kind: 'unexpected', what: `nft counter ${c}` });
  return out;
}

/**
 * Rules replaced in place with their comment kept (another tool's `nft replace rule … comment "pal:…"`):
 * chains whose ids and hash match but whose rule bodies differ from `written` (the kernel's form of the
 * chain as Palisade writes it; undefined: not known, not judged). Such a chain is marked (hash
 * forgotten) so the next diff rewrites it whole.
 */
export function bodyDrift(p: NftProgram, k: KState, written: (c: NChain) => readonly string[] | undefined, forget?: (c: NChain) => void): DriftItem[] {
  const out: DriftItem[] = [];
  for (const c of p.chains) {
    const kc = k.chains.get(key(c.family, c.name));
    if (!kc?.bodies || !sameChain(c, kc)) continue; // other drift, reported by drift()
    const want = written(c);
    if (!want) continue;
    const bad = c.rules.filter((_, i) => kc.bodies![i] !== want[i]);
    if (!bad.length) continue;
    for (const r of bad) out.push({ kind: 'changed', what: `nft ${c.family} chain ${c.name} rule pal:${r.id}: not the rule Palisade wrote` });
    kc.hash = null;
    forget?.(c);
  }
  return out;
}

/**
 * Sets declared otherwise than Palisade declares them (`header`: the kernel's form of Palisade's
 * declaration, learned in the scratch namespace; undefined: not known, not judged) — e.g. deleted and
 * declared again with `flags timeout; timeout 1m` (its members expire) or a `size` Palisade's next
 * addition overflows. Such a set is marked to be declared again by the next diff.
 */
export function setDrift(p: NftProgram, k: KState, header: (s: NSet) => string | undefined): DriftItem[] {
  const out: DriftItem[] = [];
  for (const s of p.sets) {
    const ks = k.sets.get(key(s.family, s.name));
    const want = header(s);
    if (!ks?.header || !want || ks.header === want) continue;
    out.push({ kind: 'changed', what: `nft ${s.family} ${s.map ? 'map' : 'set'} ${s.name}: not declared as Palisade declares it` });
    ks.recreate = true;
  }
  return out;
}

/** Chains whose rule bodies can be judged (read back, ids and hash as written). */
export function judgeable(p: NftProgram, k: KState): NChain[] {
  return p.chains.filter((c) => { const kc = k.chains.get(key(c.family, c.name)); return !!kc?.bodies && sameChain(c, kc); });
}

export { keyOf };
