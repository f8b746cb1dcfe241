// Per-rule hits: from kernel counters (per VM, per kernel rule id) to per-API-rule packet counts.
//
// A kernel rule (PolicyRule) may carry several API rules: the compiler merges rules with the same
// match (CIDRs unioned), joins adjacent port ranges and drops rules covered by another, moving their
// uuids into the covering rule's `sources`. One kernel counter cannot tell which of them a packet
// matched, so every API rule in `sources` is credited with the kernel rule's whole delta. `hitcount` is
// therefore exact for an API rule with a kernel rule of its own, and an upper bound otherwise: 0
// always means "never matched" (the question it answers: which rules are unused?), and a merged rule
// shows the traffic of the kernel rule it is part of. A group reference contributes to both families;
// its IPv4 and IPv6 kernel rules both add to it. Summing over VMs and hosts is the caller's (the store
// adds deltas). Pure.
import type { VmPolicy } from './ir.js';

export interface AttributedHits {
  /** API rule uuid → packets. */
  byApiRule: Map<string, number>;
  /** Packets of kernel rule ids the policy does not have (the agent counted an older version). */
  unattributed: number;
}

export function attributeRuleHits(policy: VmPolicy, deltas: Iterable<[kernelRuleId: string, packets: number]>): AttributedHits {
  const sourcesOf = new Map<string, string[]>();
  for (const fp of [policy.v4, policy.v6]) for (const r of [...fp.ingress, ...fp.egress]) sourcesOf.set(r.id, r.sources);
  const byApiRule = new Map<string, number>();
  let unattributed = 0;
  for (const [id, packets] of deltas) {
    if (!(packets > 0)) continue;
    const sources = sourcesOf.get(id);
    if (!sources || sources.length === 0) { unattributed += packets; continue; }
    for (const s of sources) byApiRule.set(s, (byApiRule.get(s) ?? 0) + packets);
  }
  return { byApiRule, unattributed };
}
