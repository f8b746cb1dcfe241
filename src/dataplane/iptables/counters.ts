// Per-rule hits on the iptables backend: the packet counters of the VMs' user rules, parsed from
// `iptables-save -c` (pure). A VM's ingress rules live in its chain `<vm>`, its egress rules in
// `<vm>-eg`; each rule's comment carries `pal:<rule id>.c<i>` or `.s<i>` (which peer), and the first
// rule of every version of a chain also carries the chain's hash (`pal:<id> #<hash>`).
//
// Slots (which incarnation of a kernel rule a counter belongs to): a changed chain is written as a new
// version above the old one (kernel.ts, shadowWrite), so a rule of the new version is a new slot
// (its hash differs) whose counter starts at 0, while the old version, unreachable below it, keeps its
// final counts until garbage collection rewrites the chain. That rewrite keeps the hash and carries the
// live rules' counters over (backend.ts collectGarbage, restore --counters), so the slots go on; any
// other in-place rewrite restarts a slot at 0, which the reader takes as counting from 0 (agent/hits.ts).
import type { KernelDropCount, KernelRuleCount, VmChainRef } from '../backend.js';
import { LOG_REASON, type DropReason as PlanDropReason } from '../plan/index.js';
import { vmNames } from './names.js';

const LINE = /^\[(\d+):\d+\] -A (\S+) /;
const COMMENT = /--comment\s+(?:"([^"]*)"|(\S+))/;
const USER_RULE = /^pal:(.+)\.[cs]\d+(?: #([0-9a-zA-Z]+))?$/;
const HASH = / #([0-9a-zA-Z]+)$/;

export function parseRuleCounts(family: 4 | 6, save: string, vms: readonly VmChainRef[]): KernelRuleCount[] {
  const vmOfChain = new Map<string, string>();
  for (const vm of vms) { const n = vmNames(vm.instanceName); vmOfChain.set(n.vm, vm.vmId); vmOfChain.set(n.eg, vm.vmId); }
  const out: KernelRuleCount[] = [];
  /** chain → the hash of the version the rules being read belong to */
  const version = new Map<string, string>();
  let filter = false;
  for (const line of save.split('\n')) {
    if (line.startsWith('*')) { filter = line.trim() === '*filter'; continue; }
    if (!filter) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const vmId = vmOfChain.get(m[2]);
    if (!vmId) continue;
    const c = COMMENT.exec(line);
    const comment = c ? (c[1] ?? c[2]) : '';
    const hash = HASH.exec(comment);
    if (hash) version.set(m[2], hash[1]);
    const u = USER_RULE.exec(comment);
    const packets = Number(m[1]);
    if (!u || !Number.isSafeInteger(packets)) continue;
    const id = comment.slice(4).split(' #')[0];
    out.push({ vmId, ruleId: u[1], slot: `${family}/${m[2]}/${version.get(m[2]) ?? '-'}/${id}`, packets });
  }
  return out;
}

// Drops per reason on this backend: with the drop log on, every drop with an API reason jumps to a
// log chain of its side and reason (`PDL-<side>-<reason>` in iptables/ip6tables, `PDLE-…` in ebtables,
// render.ts) that logs within its limit and then drops. The counter of that final DROP is every packet
// dropped for the reason. With the drop log off (rate 0) there are no such chains and nothing counts.
const DROP_IN_LOG_CHAIN = /^\[(\d+):\d+\] -A (PDLE?-[ftn]-([a-z0-9-]+)) (?:.* )?-j DROP\s*$/;

/** The drop counters of `*-save -c` output (`tool` names the slot: the same chain in another tool is another counter). */
export function parseDropCounts(tool: string, save: string): KernelDropCount[] {
  const out: KernelDropCount[] = [];
  let table = '';
  for (const line of save.split('\n')) {
    if (line.startsWith('*')) { table = line.slice(1).trim(); continue; }
    const m = DROP_IN_LOG_CHAIN.exec(line);
    if (!m) continue;
    const reason = Object.hasOwn(LOG_REASON, m[3]) ? LOG_REASON[m[3] as PlanDropReason] : null;
    const packets = Number(m[1]);
    if (!reason || !Number.isSafeInteger(packets)) continue;
    out.push({ reason, slot: `${tool}/${table}/${m[2]}`, packets });
  }
  return out;
}
