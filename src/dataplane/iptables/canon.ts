// The saved form of Palisade's iptables rules as written, for observe to tell a rule replaced in place
// (`iptables -R`, its `pal:` comment kept, its match or target changed) from the rule Palisade wrote.
//
// iptables-save prints a rule in its own canonical form (`-p tcp -m tcp --dport …`), not as the program
// writes it, so the form is learned from the tools themselves: the chains not yet known are restored
// into a throwaway network namespace (`unshare --net`: its own empty tables and ipsets, never the
// host's), with every chain they may jump to declared empty and every set created empty, and saved
// back there. Learned forms are kept per chain hash (which covers every rule's spec) and per hook spec,
// so a steady host learns nothing; only what is new since the last check is learned, in one namespace,
// at most LEARN_RULES rules a check (scratch-learn.ts).
import { fed, inScratchNamespace, withinBudget } from '../scratch-learn.js';
import type { Runner } from '../exec.js';
import { type Written, lineDigest } from './kernel.js';
import { type Fam, type IptChain, type IptHook, type Program, TABLES, hookLine, ruleLine, setCreateLine } from './program.js';

const chainKey = (f: Fam, c: IptChain) => `${f}/${c.table}/${c.name}#${c.hash}`;
const hookKey = (f: Fam, h: IptHook) => `${f}/${h.table}/${h.chain}/${h.id}|${h.spec}`;
const COMMENT_ID = /--comment\s+(?:"pal:([^" ]+)[^"]*"|pal:(\S+))/;

export class IptCanon implements Written {
  private readonly chains = new Map<string, string[]>();
  private readonly hooks = new Map<string, string>();

  constructor(private readonly runner: Runner) {}

  chain = (f: Fam, c: IptChain): readonly string[] | undefined => this.chains.get(chainKey(f, c));
  hook = (f: Fam, h: IptHook): string | undefined => this.hooks.get(hookKey(f, h));
  /**
   * Learn again at the next check (found not as learned, and rewritten): what was learned may be
   * another iptables' form (upgraded under a running agent), which must not have the chain rewritten
   * on every pass.
   */
  forget = (f: Fam, c: IptChain): void => { this.chains.delete(chainKey(f, c)); };
  forgetHook = (f: Fam, h: IptHook): void => { this.hooks.delete(hookKey(f, h)); };

  /** Learn `chains` (and every hook) not yet known; forget what `p` no longer has. */
  async learn(p: Program, chains: readonly { f: Fam; c: IptChain }[]): Promise<string[]> {
    const progs = { 4: p.v4, 6: p.v6 } as const;
    const liveC = new Set<string>(), liveH = new Set<string>();
    for (const f of [4, 6] as Fam[]) { for (const c of progs[f].chains) liveC.add(chainKey(f, c)); for (const h of progs[f].hooks) liveH.add(hookKey(f, h)); }
    for (const k of this.chains.keys()) if (!liveC.has(k)) this.chains.delete(k);
    for (const k of this.hooks.keys()) if (!liveH.has(k)) this.hooks.delete(k);
    const todo = withinBudget(chains.filter(({ f, c }) => !this.chains.has(chainKey(f, c))), ({ c }) => c.rules.length);
    const hooksTodo = ([4, 6] as Fam[]).some((f) => progs[f].hooks.some((h) => !this.hooks.has(hookKey(f, h))));
    if (!todo.length && !hooksTodo) return [];
    const restore = (f: Fam): string => {
      const out: string[] = [];
      for (const table of TABLES) {
        const chains = progs[f].chains.filter((c) => c.table === table);
        const hooks = progs[f].hooks.filter((h) => h.table === table);
        if (!chains.length && !hooks.length) continue;
        out.push(`*${table}`, ...chains.map((c) => `:${c.name} - [0:0]`));
        for (const { c } of todo.filter((t) => t.f === f && t.c.table === table)) c.rules.forEach((r, i) => out.push(ruleLine(c, r, i)));
        for (const h of [...hooks].reverse()) out.push(hookLine('-I', h));
        out.push('COMMIT');
      }
      return out.join('\n');
    };
    const sets = p.sets.map(setCreateLine).join('\n');
    const script = [
      fed('ipset restore', sets), fed('iptables-restore', restore(4)), fed('ip6tables-restore', restore(6)),
      'iptables-save', 'echo PALISADE_V6', 'ip6tables-save', '',
    ].join('\n');
    const [s4, s6] = (await inScratchNamespace(this.runner, 'iptables', script)).split('\nPALISADE_V6\n');
    const saved = { 4: parseSave(s4 ?? ''), 6: parseSave(s6 ?? '') } as const;
    // a chain not saved as written (as many rules) stays unknown: judged by ids and hashes only
    const short: string[] = [];
    for (const { f, c } of todo) {
      const lines = saved[f].get(`${c.table}/${c.name}`) ?? [];
      if (lines.length === c.rules.length) this.chains.set(chainKey(f, c), lines.map(lineDigest));
      else short.push(`${f === 4 ? 'iptables' : 'ip6tables'} ${c.table} ${c.name}`);
    }
    for (const f of [4, 6] as Fam[]) {
      for (const h of progs[f].hooks) {
        const line = (saved[f].get(`${h.table}/${h.chain}`) ?? []).find((l) => { const m = COMMENT_ID.exec(l); return (m?.[1] ?? m?.[2]) === h.id; });
        if (line) this.hooks.set(hookKey(f, h), line);
      }
    }
    return short.length ? [`rule bodies not checked in ${short.length} chain(s) not held as written in a scratch namespace (${short.slice(0, 3).join(', ')}${short.length > 3 ? ', …' : ''})`] : [];
  }
}

/** `table/chain` → its `-A` lines, from iptables-save output. */
function parseSave(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let table = '';
  for (const line of text.split('\n')) {
    if (line.startsWith('*')) { table = line.slice(1).trim(); continue; }
    if (!line.startsWith('-A ')) continue;
    const k = `${table}/${line.slice(3).split(' ')[0]}`;
    (out.get(k) ?? out.set(k, []).get(k)!).push(line);
  }
  return out;
}
