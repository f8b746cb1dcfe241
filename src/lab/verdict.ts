// Which rules dropped a probe: per-chain drop counters from `iptables-save -c` (and ip6tables-save)
// before and after the probe, attributed to the VMs whose chains they are. Pure.

/** One DROP / REJECT rule (or a built-in chain's DROP policy) with its packet counter. */
export interface DropRule {
  /** `table:chain` (callers may prefix a namespace: `ns/table:chain`). */
  chain: string;
  /** 'from' when the rule matches `--physdev-in` (traffic leaving that port's VM), 'to' for `--physdev-out`. */
  side: 'from' | 'to' | null;
  comment: string | null;
  packets: number;
}

/** Key → drop rule; the key is table:chain plus the rule's position, stable between two saves of the same rules. */
export type DropCounters = Map<string, DropRule>;

const RULE_RE = /^\[(\d+):\d+\] -A (\S+) (.*)-j (DROP|REJECT)\b/;
const POLICY_RE = /^:(\S+) (DROP) \[(\d+):\d+\]/;

export function parseDropCounters(saveText: string): DropCounters {
  const out: DropCounters = new Map();
  let table = '';
  let n = 0;
  for (const line of saveText.split('\n')) {
    if (line.startsWith('*')) { table = line.slice(1).trim(); continue; }
    const r = RULE_RE.exec(line);
    if (r) {
      const chain = `${table}:${r[2]}`;
      const side = /--physdev-in /.test(r[3]) ? 'from' : /--physdev-out /.test(r[3]) ? 'to' : null;
      const comment = /--comment "?([^"\s]+)"?/.exec(r[3])?.[1] ?? null;
      out.set(`${chain}#${n++}`, { chain, side, comment, packets: Number(r[1]) });
      continue;
    }
    const p = POLICY_RE.exec(line);
    if (p) out.set(`${table}:${p[1]}#policy`, { chain: `${table}:${p[1]}`, side: null, comment: 'policy', packets: Number(p[3]) });
  }
  return out;
}

/** Drop rules whose counters grew, with the growth as `packets`. */
export function dropDelta(before: DropCounters, after: DropCounters): DropRule[] {
  const res: DropRule[] = [];
  for (const [k, v] of after) {
    const d = v.packets - (before.get(k)?.packets ?? 0);
    if (d > 0) res.push({ ...v, packets: d });
  }
  return res.sort((a, b) => b.packets - a.packets || a.chain.localeCompare(b.chain));
}

export interface ProbeParty { name: string; instanceName: string | null }

/**
 * Explains a blocked probe from the rules that counted drops: the source's egress chain
 * (`<instance>-eg`) or its default chain on the side leaving the source (anti-spoofing), the
 * destination's ingress chain or its default chain on the side entering it, or another chain.
 */
export function explainDrops(delta: DropRule[], from: ProbeParty, to: ProbeParty): string {
  const chainOf = (c: string) => c.slice(c.indexOf(':') + 1);
  // CloudStack's names: i-2-5-VM (ingress), i-2-5-VM-eg (egress), i-2-5-def (default chain).
  const mine = (p: ProbeParty, c: string) => p.instanceName !== null && c.startsWith(`${p.instanceName.replace(/-VM$/, '')}-`);
  const reasons: string[] = [];
  for (const d of delta) {
    const c = chainOf(d.chain);
    const why = d.comment ? `${c} ${d.comment}` : c;
    if (mine(from, c) && (c.endsWith('-eg') || d.side === null)) reasons.push(`${from.name}'s egress rules (${why})`);
    else if (mine(from, c) && d.side === 'from') reasons.push(`${from.name}'s anti-spoofing rules (${why})`);
    else if (mine(to, c) && (d.side === 'to' || (!c.endsWith('-eg') && d.side === null))) reasons.push(`${to.name}'s ingress rules (${why})`);
    else if (mine(to, c) || mine(from, c)) reasons.push(`${mine(to, c) ? to.name : from.name}'s rules (${why})`);
    else reasons.push(`chain ${why}`);
  }
  const uniq = [...new Set(reasons)];
  return uniq.length ? `dropped by ${uniq.join(' and ')}` : 'no firewall rule counted a drop (nothing answered)';
}
