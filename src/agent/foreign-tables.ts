// Reading other tools' netfilter tables for preflight (forward-drop and mark-rewrite checks): the
// objects of an `nft -j list …` answer, and which iptables-legacy tables exist in this namespace.
// Read-only by construction: a legacy table is only named from /proc, never listed blind (listing a
// missing one would create it).
import type { Runner } from '../dataplane/exec.js';

/** An nft JSON object (rule, chain, expression), read loosely: another tool's. */
export type Expr = Record<string, any>;

/** The `key` objects of an `nft -j list …` answer (none for an answer that is not nft's JSON). */
export function listed<T = Expr>(json: string, key: string): T[] {
  try {
    return ((JSON.parse(json) as { nftables?: Record<string, T | undefined>[] }).nftables ?? []).flatMap((e) => (e[key] ? [e[key]!] : []));
  } catch { return []; }
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
