// The structured program the iptables backend renders, and its restore-text writers (pure).
import { createHash } from 'node:crypto';

export type Fam = 4 | 6;
export type Table = 'filter' | 'raw' | 'mangle';
export const TABLES: Table[] = ['raw', 'mangle', 'filter'];

/** One rule: `spec` is the text after `-A <chain>` without the comment; `id` goes into `pal:<id>`. */
export interface IptRule { id: string; spec: string }
export interface IptChain { table: Table; name: string; rules: IptRule[]; hash: string }
/** A rule Palisade inserts at the top of a built-in chain (FORWARD, raw PREROUTING). */
export interface IptHook { table: Table; chain: string; id: string; spec: string }
export interface IptProgram { chains: IptChain[]; hooks: IptHook[] }

/** An ipset. `hash:net,iface` sets carry skbinfo marks; their members are whole element texts as
 *  `ipset save` prints them (e.g. `0.0.0.0/0,physdev:vnet3 skbmark 0x50000/0x7ff0000`). */
export interface SetDef { name: string; family: 'inet' | 'inet6'; type?: 'hash:ip' | 'hash:net,iface'; members: string[] }

/** ebtables has no comments: chains are compared by their canonical text (as ebtables-save prints it). */
export type EbTable = 'nat' | 'filter';
export const EB_TABLES: EbTable[] = ['filter', 'nat'];
export interface EbChain { table: EbTable; name: string; rules: string[] }
export interface EbHook { table: EbTable; chain: 'PREROUTING' | 'POSTROUTING' | 'FORWARD'; spec: string }
export interface EbProgram { chains: EbChain[]; hooks: EbHook[] }

export interface Program {
  v4: IptProgram;
  v6: IptProgram;
  sets: SetDef[];
  eb: EbProgram;
}

export function hashOf(parts: string[]): string {
  const h = createHash('sha1');
  for (const p of parts) h.update(p).update('\n');
  return h.digest('hex').slice(0, 12);
}

export function chainHash(name: string, rules: IptRule[]): string {
  return hashOf([name, ...rules.map((r) => `${r.id}|${r.spec}`)]);
}

export function makeChain(table: Table, name: string, rules: IptRule[]): IptChain {
  return { table, name, rules, hash: chainHash(name, rules) };
}

/** The comment of a chain's rule: the first rule carries the chain hash so readers can compare cheaply. */
export function ruleComment(rule: IptRule, index: number, chain: IptChain): string {
  return index === 0 ? `pal:${rule.id} #${chain.hash}` : `pal:${rule.id}`;
}

/** `spec` with the comment placed before its `-j`/`-g` (targets may take options after it). */
function withComment(spec: string, comment: string): string {
  const j = /^-[jg] /.test(spec) ? 0 : spec.search(/ -[jg] /);
  const c = `-m comment --comment "${comment}"`;
  const s = j < 0 ? `${spec} ${c}` : `${spec.slice(0, j)} ${c} ${spec.slice(j)}`;
  return s.replace(/  +/g, ' ').trim();
}

export function ruleLine(chain: IptChain, rule: IptRule, index: number): string {
  return `-A ${chain.name} ${withComment(rule.spec, ruleComment(rule, index, chain))}`;
}

export function hookLine(op: '-I' | '-D', hook: IptHook): string {
  const pos = op === '-I' ? ' 1' : '';
  return `${op} ${hook.chain}${pos} ${withComment(hook.spec, `pal:${hook.id}`)}`;
}

/** Restore text that installs `prog` on a host with none of it (what render shows). */
export function iptFullText(prog: IptProgram): string {
  const out: string[] = [];
  for (const table of TABLES) {
    const chains = prog.chains.filter((c) => c.table === table);
    const hooks = prog.hooks.filter((h) => h.table === table);
    if (!chains.length && !hooks.length) continue;
    out.push(`*${table}`);
    for (const c of chains) out.push(`:${c.name} - [0:0]`);
    for (const c of chains) c.rules.forEach((r, i) => out.push(ruleLine(c, r, i)));
    for (const h of [...hooks].reverse()) out.push(hookLine('-I', h));
    out.push('COMMIT');
  }
  return out.length ? out.join('\n') + '\n' : '';
}

export function setCreateLine(s: SetDef): string {
  // `comment` marks the set as Palisade's (ownership survives an agent restart without local state).
  const type = s.type ?? 'hash:ip';
  return `create ${s.name} ${type} family ${s.family}${type === 'hash:net,iface' ? ' skbinfo' : ''} comment -exist`;
}

export function ipsetFullText(sets: SetDef[]): string {
  const out: string[] = [];
  for (const s of sets) {
    out.push(setCreateLine(s));
    for (const m of s.members) out.push(`add ${s.name} ${m} -exist`);
  }
  return out.length ? out.join('\n') + '\n' : '';
}

export function ebFullText(eb: EbProgram): string {
  const out: string[] = [];
  for (const t of EB_TABLES) {
    const chains = eb.chains.filter((c) => c.table === t);
    const hooks = eb.hooks.filter((h) => h.table === t);
    if (!chains.length && !hooks.length) continue;
    out.push(`*${t}`);
    for (const c of chains) out.push(`:${c.name} ACCEPT`);
    for (const c of chains) for (const r of c.rules) out.push(`-A ${c.name} ${r}`);
    for (const h of hooks) out.push(`-I ${h.chain} 1 ${h.spec}`);
  }
  return out.length ? out.join('\n') + '\n' : '';
}
