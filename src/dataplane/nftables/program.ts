// The structured program the nftables backend renders, and its `nft` script writers (pure).
import { createHash } from 'node:crypto';
import type { DropReason } from '../plan/reasons.js';
import { type NFamily, TABLE } from './names.js';

/** One rule: `text` is the rule without its comment; `id` (and the drop reason) go into the comment. */
export interface NRule { id: string; text: string; reason?: DropReason }

export interface NChain {
  family: NFamily;
  name: string;
  /** Base chains: `type filter hook H priority P; policy accept;`. */
  base?: string;
  rules: NRule[];
  /** Over the name, the base spec and every rule: carried by the first rule's comment. */
  hash: string;
}

/** The key's type as nft writes it, e.g. `ifname`, `ifname . ipv4_addr`, `mark`. */
export type KeyType = string;

/** A set or map. Elements are canonical strings (`key` or `key : value`) as the kernel reports them. */
export interface NSet {
  family: NFamily;
  name: string;
  /** The declaration body, e.g. `type ifname : verdict;`. */
  decl: string;
  key: KeyType;
  map: boolean;
  elements: string[];
}

export interface NftProgram { chains: NChain[]; sets: NSet[] }

export function hashOf(parts: string[]): string {
  const h = createHash('sha1');
  for (const p of parts) h.update(p).update('\n');
  return h.digest('hex').slice(0, 12);
}

export function makeChain(family: NFamily, name: string, rules: NRule[], base?: string): NChain {
  return { family, name, base, rules, hash: hashOf([name, base ?? '', ...rules.map((r) => `${r.id}|${r.reason ?? ''}|${r.text}`)]) };
}

/** `pal:<id>[ !<reason>][ #<chain hash>]` (the hash on the first rule only). */
export function ruleComment(rule: NRule, index: number, chain: NChain): string {
  return `pal:${rule.id}${rule.reason ? ` !${rule.reason}` : ''}${index === 0 ? ` #${chain.hash}` : ''}`;
}

export interface ParsedComment { id: string; reason: string | null; hash: string | null }
export function parseComment(c: string | undefined): ParsedComment | null {
  const m = /^pal:(\S+)(?: !(\S+))?(?: #([0-9a-f]+))?$/.exec(c ?? '');
  return m ? { id: m[1], reason: m[2] ?? null, hash: m[3] ?? null } : null;
}

const at = (family: NFamily) => `${family} ${TABLE}`;

export function ruleLine(chain: NChain, rule: NRule, index: number): string {
  return `add rule ${at(chain.family)} ${chain.name} ${rule.text} comment "${ruleComment(rule, index, chain)}"`;
}

export function chainDecl(c: NChain): string {
  return c.base ? `add chain ${at(c.family)} ${c.name} { ${c.base} }` : `add chain ${at(c.family)} ${c.name}`;
}

export function setDecl(s: NSet): string {
  return `add ${s.map ? 'map' : 'set'} ${at(s.family)} ${s.name} { ${s.decl} }`;
}

/** An element as nft syntax (a leading interface name is quoted; the rest is written as reported). */
export function elementText(s: NSet, e: string): string {
  if (!s.key.startsWith('ifname')) return e;
  const m = /^(.*?)( \. | : |$)/.exec(e)!;
  return `"${m[1]}"${e.slice(m[1].length)}`;
}

/** `add element` / `delete element` commands, in batches (one command per ~500 elements). */
export function elementLines(op: 'add' | 'delete', s: NSet, elements: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < elements.length; i += 500) {
    const part = elements.slice(i, i + 500).map((e) => (op === 'delete' ? keyOf(elementText(s, e)) : elementText(s, e)));
    out.push(`${op} element ${at(s.family)} ${s.name} { ${part.join(', ')} }`);
  }
  return out;
}

/** The key part of an element (deletion names keys only). */
export const keyOf = (e: string) => { const i = e.indexOf(' : '); return i < 0 ? e : e.slice(0, i); };

/** Script that installs `p` on a host with none of it (what `render` shows; apply writes diffs). */
export function fullScript(p: NftProgram): string {
  const out: string[] = [];
  for (const f of new Set([...p.chains.map((c) => c.family), ...p.sets.map((s) => s.family)])) out.push(`add table ${at(f)}`);
  for (const c of p.chains) out.push(chainDecl(c));
  for (const s of p.sets) out.push(setDecl(s));
  for (const s of p.sets) if (!isVerdictMap(s)) out.push(...elementLines('add', s, s.elements));
  for (const c of p.chains) c.rules.forEach((r, i) => out.push(ruleLine(c, r, i)));
  for (const s of p.sets) if (isVerdictMap(s)) out.push(...elementLines('add', s, s.elements));
  return out.length ? out.join('\n') + '\n' : '';
}

export const isVerdictMap = (s: NSet) => s.map && / : verdict;/.test(s.decl);
