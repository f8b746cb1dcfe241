// The kernel's own form of Palisade's rules as written, for observe to tell a rule replaced in place
// (its `pal:` comment kept, its body changed) from the rule Palisade wrote.
//
// `nft` prints a rule back in its own canonical form, not as the program writes it, so what a rule
// should look like is learned from the kernel itself: the chains not yet known are written into a
// throwaway network namespace (`unshare --net`: its own empty ruleset, never the host's), next to
// every set and chain they may reference (declared empty), and read back there. Learned forms are kept
// per chain hash (which covers every rule's text), so a steady host learns nothing; only chains whose
// hash is new since the last check are learned, in one namespace per check, at most LEARN_RULES a
// check (scratch-learn.ts; chains not learned yet are judged by ids and hashes only, as before).
import type { Runner } from '../exec.js';
import { fed, inScratchNamespace, withinBudget } from '../scratch-learn.js';
import { ruleBody, setHeader } from './kernel.js';
import { TABLE } from './names.js';
import { type NChain, type NSet, type NftProgram, chainDecl, ruleLine, setDecl } from './program.js';

export class NftCanon {
  /** chain hash → its rules' bodies as the kernel holds them right after Palisade wrote them */
  private readonly known = new Map<string, string[]>();

  constructor(private readonly runner: Runner) {}

  /** set `family/name|decl` → its declaration's digest as the kernel holds it (kernel.ts setHeader) */
  private readonly sets = new Map<string, string>();
  private static setKey = (s: NSet) => `${s.family}/${s.name}|${s.decl}`;

  /** How the kernel holds `s` as Palisade declares it (undefined until `learn` saw it). */
  setHeader = (s: NSet): string | undefined => this.sets.get(NftCanon.setKey(s));

  /** The learned bodies of `c`'s rules (undefined until `learn` saw it). */
  written = (c: NChain): readonly string[] | undefined => this.known.get(c.hash);

  /**
   * Learn `c` again at the next check (its rules were found not as learned, and are rewritten): what
   * was learned may be another `nft`'s form (upgraded under a running agent), and a form that no
   * longer matches what the kernel shows must not have the chain rewritten on every pass.
   */
  forget = (c: NChain): void => { this.known.delete(c.hash); };

  /**
   * Learn the chains of `chains` not yet known; forget hashes `p` no longer has. A chain the scratch
   * namespace does not hold as written (as many rules) stays unknown (judged by ids and hashes only,
   * never all its rules taken for forged): the returned warnings say which.
   */
  async learn(p: NftProgram, chains: readonly NChain[]): Promise<string[]> {
    const live = new Set(p.chains.map((c) => c.hash));
    for (const h of this.known.keys()) if (!live.has(h)) this.known.delete(h);
    const liveSets = new Set(p.sets.map(NftCanon.setKey));
    for (const k of this.sets.keys()) if (!liveSets.has(k)) this.sets.delete(k);
    const todo = withinBudget(chains.filter((c) => !this.known.has(c.hash)), (c) => c.rules.length);
    if (!todo.length && p.sets.every((s) => this.sets.has(NftCanon.setKey(s)))) return [];
    const families = new Set(p.chains.map((c) => c.family));
    const lines = [...[...families].map((f) => `add table ${f} ${TABLE}`), ...p.chains.map(chainDecl), ...p.sets.map(setDecl)];
    for (const c of todo) c.rules.forEach((r, i) => lines.push(ruleLine(c, r, i)));
    // a load that fails ends the script (an error), never a listing without the chains
    const listing = await inScratchNamespace(this.runner, 'nft', `${fed('nft -f -', lines.join('\n'))}\nnft -j list ruleset\n`);
    const bodies = new Map<string, string[]>();
    const declared = new Map(p.sets.map((s) => [`${s.family}/${s.name}`, s]));
    for (const item of (JSON.parse(listing) as { nftables: Record<string, any>[] }).nftables) {
      const set = item.set ?? item.map;
      const ps = set && set.table === TABLE ? declared.get(`${set.family}/${set.name}`) : undefined;
      if (ps) this.sets.set(NftCanon.setKey(ps), setHeader(set));
      const rule = item.rule;
      if (!rule || rule.table !== TABLE) continue;
      const k = `${rule.family}/${rule.chain}`;
      (bodies.get(k) ?? bodies.set(k, []).get(k)!).push(ruleBody(rule));
    }
    const short: string[] = [];
    for (const c of todo) {
      const b = bodies.get(`${c.family}/${c.name}`) ?? [];
      if (b.length === c.rules.length) this.known.set(c.hash, b);
      else short.push(`${c.family} ${c.name}`);
    }
    return short.length ? [`rule bodies not checked in ${short.length} chain(s) not held as written in a scratch namespace (${short.slice(0, 3).join(', ')}${short.length > 3 ? ', …' : ''})`] : [];
  }
}
