// Per-rule hits, agent side (DESIGN.md §8, issue 11): turns the kernel's running packet counters into
// the deltas the `hits` message carries. Pure apart from the clock the caller passes in.
//
// Each kernel rule is tracked by its slot (dataplane/backend.ts KernelRuleCount): the delta is the
// counter minus what the slot showed last time; a slot not seen before counts from 0 (a rule created
// or re-created by a write since the last reading), and so does a counter lower than last seen (the
// rule was re-created in place, e.g. a drift repair rewriting an iptables chain). So API hit counts
// never go back, whatever the dataplane rewrites. What a re-created nft rule counted between the last
// reading and its re-creation is lost (at most one reading interval of that rule's packets); iptables
// keeps the old version's final counts until its clean-up, which carries the live counters over
// (losing only what passes between its reading and its rewrite).
//
// The first reading after the agent starts with a saved state is a baseline only: the kernel's rules
// survived the restart and what they counted before was reported by the previous run (or is lost with
// it) — never counted twice. An agent without a saved state closed every port and rewrote everything,
// so it starts primed (every counter it sees is new).
//
// Bounded: the slots seen in the last reading only (rules gone from the kernel are forgotten), and at
// most MAX_PENDING_RULES (VM, rule) sums waiting for a server (the rest is counted as lost).
import type { KernelRuleCount } from '../dataplane/backend.js';
import type { HitsMessage } from '../protocol/index.js';
import { MAX_COUNTER_RULES, MAX_COUNTER_VMS } from '../observe/schema.js';

/** (VM, rule) sums kept while no server takes them. */
export const MAX_PENDING_RULES = 200_000;
/** (VM, rule) entries per `hits` message: far below the 16 MiB agent frame bound (~100 bytes each). */
export const MAX_RULES_PER_MESSAGE = 20_000;

// What the protocol accepts (observe/schema.ts): anything else is skipped here rather than costing the session.
const RULE_ID = /^[0-9a-z]{1,64}$/i;
const VM_UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export class HitTracker {
  private last = new Map<string, number>();
  private primed: boolean;
  /** VM uuid → rule id → packets not sent yet. */
  private pending = new Map<string, Map<string, number>>();
  private pendingRules = 0;
  /** Packets dropped because the pending table was full. */
  lost = 0;

  constructor(opts: { baseline: boolean }) { this.primed = !opts.baseline; }

  get waiting(): number { return this.pendingRules; }

  /** A reading of every user rule's counter; returns the packets it added to what is pending. */
  take(readings: readonly KernelRuleCount[]): number {
    const next = new Map<string, number>();
    let added = 0;
    for (const r of readings) {
      if (!RULE_ID.test(r.ruleId) || !VM_UUID.test(r.vmId) || !Number.isSafeInteger(r.packets) || r.packets < 0) continue;
      const key = `${r.vmId}\u0000${r.ruleId}\u0000${r.slot}`;
      const packets = r.packets;
      // one slot listed twice in a reading (should not happen): the larger counter is the rule's
      const prevInReading = next.get(key);
      if (prevInReading !== undefined) { if (packets <= prevInReading) continue; }
      next.set(key, packets);
      if (!this.primed) continue;
      const before = prevInReading ?? this.last.get(key);
      const delta = before === undefined ? packets : packets >= before ? packets - before : packets;
      if (delta > 0) added += this.add(r.vmId, r.ruleId, delta);
    }
    this.last = next;
    this.primed = true;
    return added;
  }

  private add(vmId: string, ruleId: string, packets: number): number {
    let per = this.pending.get(vmId);
    const have = per?.get(ruleId);
    if (have === undefined && this.pendingRules >= MAX_PENDING_RULES) { this.lost += packets; return 0; }
    if (!per) this.pending.set(vmId, (per = new Map()));
    if (have === undefined) this.pendingRules++;
    per.set(ruleId, Math.min(Number.MAX_SAFE_INTEGER, (have ?? 0) + packets));
    return packets;
  }

  /** Forget counters of VMs the host no longer runs (their pending packets too). */
  retain(vmIds: ReadonlySet<string>): void {
    for (const [vm, per] of this.pending) if (!vmIds.has(vm)) { this.pendingRules -= per.size; this.pending.delete(vm); }
  }

  /** Everything pending as `hits` messages within the protocol's bounds; pending is then empty. */
  drain(at: Date): HitsMessage[] {
    const out: HitsMessage[] = [];
    let vms: Record<string, Record<string, number>> = {};
    let nVms = 0, nRules = 0;
    const flush = () => { if (nVms) out.push({ type: 'hits', at: at.toISOString(), vms }); vms = {}; nVms = 0; nRules = 0; };
    for (const [vm, per] of this.pending) {
      let rules: Record<string, number> | null = null;
      let inVm = 0;
      for (const [rule, n] of per) {
        if (!rules || nRules >= MAX_RULES_PER_MESSAGE || inVm >= MAX_COUNTER_RULES) {
          if (nRules >= MAX_RULES_PER_MESSAGE || nVms >= MAX_COUNTER_VMS || inVm >= MAX_COUNTER_RULES) flush();
          rules = vms[vm] = {};
          nVms++;
          inVm = 0;
        }
        rules[rule] = n;
        nRules++;
        inVm++;
      }
    }
    flush();
    this.pending.clear();
    this.pendingRules = 0;
    return out;
  }
}
