// Which rules dropped a probe: per-chain drop counters from `iptables-save -c` (and ip6tables-save),
// or from the nftables backend's tables (`nft -j list table`: every drop rule has a counter and its
// reason), before and after the probe, attributed to the VMs whose chains they are. Pure.

/** One DROP / REJECT rule (or a built-in chain's DROP policy) with its packet counter. */
export interface DropRule {
  /** `table:chain` (callers may prefix a namespace: `ns/table:chain`). */
  chain: string;
  /** 'from' when the rule matches `--physdev-in` (traffic leaving that port's VM), 'to' for `--physdev-out`. */
  side: 'from' | 'to' | null;
  comment: string | null;
  packets: number;
  /** nftables: whose chain it is — a VM (by instance name) or a VM port (by device) — and its role. */
  owner?: { instance?: string; device?: string; role: 'egress' | 'ingress' | 'from' | 'to' };
}

/** Key → drop rule; the key is table:chain plus the rule's position, stable between two saves of the same rules. */
export type DropCounters = Map<string, DropRule>;

// With the drop log on, a drop jumps to a log-then-drop chain of its side and reason (PDL-…/PDLE-…):
// the jump is the drop point, counted where it sits.
const RULE_RE = /^\[(\d+):\d+\] -A (\S+) (.*)-j (DROP|REJECT|PDLE?-[ftn]-\S+)(?:\s|$)/;
const POLICY_RE = /^:(\S+) (DROP) \[(\d+):\d+\]/;

export function parseDropCounters(saveText: string): DropCounters {
  const out: DropCounters = new Map();
  let table = '';
  let n = 0;
  for (const line of saveText.split('\n')) {
    if (line.startsWith('*')) { table = line.slice(1).trim(); continue; }
    const r = RULE_RE.exec(line);
    if (r && /^PDLE?-/.test(r[2])) continue;   // inside a log chain: its drop point already counted the packet
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

/** nftables per-VM and per-port chain names (see dataplane/nftables/names.ts) → the owner of a drop. */
function nftOwner(chain: string): DropRule['owner'] {
  const vm = /^(from|to)-(.+)$/.exec(chain);
  if (vm) return { instance: vm[2], role: vm[1] === 'from' ? 'egress' : 'ingress' };
  // the shared bridge chains: what a VM port sends (its anti-spoofing), what it receives
  if (/^(vm-in|vm-arp|vm-ip[46](-guard|-done)?|l2-\w+-in)$/.test(chain)) return { role: 'from' };
  if (/^(vm-out[46]?(-guard)?|vm-arp-out|l2-\w+-out)$/.test(chain)) return { role: 'to' };
  return undefined;
}

/** A drop verdict, or (drop log on) a goto into a log-then-drop chain `dl-<side>-<reason>`. */
function isNftDrop(e: Record<string, any>): boolean {
  if ('drop' in e) return true;
  const target = e.goto?.target ?? e.jump?.target;
  return typeof target === 'string' && target.startsWith('dl-');
}

/** Drop rules of the nftables backend's tables (`nft -j list table <family> palisade` outputs). */
export function parseNftDropCounters(tables: { family: string; json: string }[]): DropCounters {
  const out: DropCounters = new Map();
  for (const { family, json } of tables) {
    if (!json.trim()) continue;
    for (const item of (JSON.parse(json) as { nftables: Record<string, any>[] }).nftables) {
      const r = item.rule;
      if (!r || !Array.isArray(r.expr) || !r.expr.some(isNftDrop) || String(r.chain).startsWith('dl-')) continue;
      const counter = r.expr.find((e: Record<string, any>) => e.counter && typeof e.counter === 'object');
      if (!counter) continue;
      const m = /^pal:(\S+)(?: !(\S+))?/.exec(String(r.comment ?? ''));
      const comment = m ? (m[2] ?? m[1]) : null;
      out.set(`nft:${family}:${r.chain}#${r.handle}`, { chain: `${family}:${r.chain}`, side: null, comment, packets: Number(counter.counter.packets), owner: nftOwner(r.chain) });
    }
  }
  return out;
}

export interface ProbeParty { name: string; instanceName: string | null; /** its host-side ports (nftables attribution) */ taps?: string[] }

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
  // a drop in a shared chain (no instance, no device) is the probe's VM's on that side
  const owns = (p: ProbeParty, o: NonNullable<DropRule['owner']>) => (o.instance !== undefined ? o.instance === p.instanceName
    : o.device !== undefined ? !!p.taps?.includes(o.device) : p.instanceName !== null);
  for (const d of delta) {
    const c = chainOf(d.chain);
    const why = d.comment ? `${c} ${d.comment}` : c;
    if (d.owner) {
      const o = d.owner;
      if (o.role === 'egress' && owns(from, o)) reasons.push(`${from.name}'s egress rules (${why})`);
      else if (o.role === 'from' && owns(from, o)) reasons.push(`${from.name}'s anti-spoofing rules (${why})`);
      else if (o.role === 'ingress' && owns(to, o)) reasons.push(`${to.name}'s ingress rules (${why})`);
      else if (owns(to, o) || owns(from, o)) reasons.push(`${owns(to, o) ? to.name : from.name}'s rules (${why})`);
      else reasons.push(`chain ${why}`);
      continue;
    }
    if (mine(from, c) && (c.endsWith('-eg') || d.side === null)) reasons.push(`${from.name}'s egress rules (${why})`);
    else if (mine(from, c) && d.side === 'from') reasons.push(`${from.name}'s anti-spoofing rules (${why})`);
    else if (mine(to, c) && (d.side === 'to' || (!c.endsWith('-eg') && d.side === null))) reasons.push(`${to.name}'s ingress rules (${why})`);
    else if (mine(to, c) || mine(from, c)) reasons.push(`${mine(to, c) ? to.name : from.name}'s rules (${why})`);
    else reasons.push(`chain ${why}`);
  }
  const uniq = [...new Set(reasons)];
  return uniq.length ? `dropped by ${uniq.join(' and ')}` : 'no firewall rule counted a drop (nothing answered)';
}
