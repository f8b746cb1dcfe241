// The interface every dataplane backend implements (DESIGN.md §2, §4).
import type { HostDesiredState } from '../policy/ir.js';
import type { DropLogConfig } from './plan/reasons.js';

/** Where a VM NIC was found on the host (port discovery, agent layer). */
export interface NicPort { device: string; bridge: string }

export interface HostPorts {
  /** NIC uuid → port; NICs absent here are not (yet) present on the host. */
  nics: Record<string, NicPort>;
  /** Per managed bridge (a VM NIC, a tap-like port or named uplinks on it): its uplinks and tap-like ports matching no known NIC (fail closed). */
  bridges: Record<string, { uplinks: string[]; unknownTaps: string[] }>;
}

export interface DataplaneInput {
  state: HostDesiredState;
  ports: HostPorts;
  /** The drop log (issue 11): log drops to NFLOG, rate-limited per VM port; absent or rate 0: no log rules. */
  dropLog?: DropLogConfig | null;
}

export interface ApplyResult {
  /** false when the kernel already matched and nothing was written. */
  changed: boolean;
  /** Per VM uuid: programmed, or the error (e.g. NIC port missing, a tool failed). */
  vms: Record<string, { ok: boolean; error?: string }>;
  /** The tools run, in order, with wall time. */
  steps: { tool: string; ms: number }[];
}

export interface DriftItem { kind: 'missing' | 'unexpected' | 'changed'; what: string }
/** `warnings`: what this pass could not judge (e.g. rule bodies, when their written form could not be learned). */
export interface Observation { drift: DriftItem[]; warnings?: string[] }

/** Thrown when a kernel step fails: names the tool and carries its stderr. Nothing after it ran. */
export class DataplaneError extends Error {
  constructor(public readonly step: string, public readonly stderr: string) {
    super(`${step} failed: ${stderr.trim()}`);
    this.name = 'DataplaneError';
  }
}

/**
 * One kernel rule's packet counter (per-rule hits, DESIGN.md §8). A user rule may be several kernel
 * rules (one per peer CIDR or set); each is reported on its own.
 */
export interface KernelRuleCount {
  /** The VM whose chain holds the rule (mapped by the backend from its chain names). */
  vmId: string;
  /** The PolicyRule id in the rule's comment. */
  ruleId: string;
  /**
   * Which incarnation of the kernel rule this is: stable while the rule stays in the kernel, different
   * once a write re-created it (its counter then starts again at 0). Opaque to callers.
   */
  slot: string;
  packets: number;
}

/** What the counter reader needs to know of a VM to find its chains. */
export interface VmChainRef { vmId: string; instanceName: string }

/**
 * One drop rule's packet counter (the agent's palisade_agent_dropped_packets_total): the API drop
 * reason of the drop point (model/telemetry.ts DROP_REASONS) and, as for rule counts, the incarnation
 * of the kernel rule (a rewrite restarts its counter at 0).
 */
export interface KernelDropCount { reason: string; slot: string; packets: number }

export interface Dataplane {
  readonly name: string;
  /** Pure: the full program for this input (backend-specific, e.g. restore texts per tool). */
  render(input: DataplaneInput): unknown;
  /** Make the kernel match the input: one transaction per tool; writes nothing if already matching. */
  apply(input: DataplaneInput): Promise<ApplyResult>;
  /** Read back what is there and what drifted from the input. */
  /** `full`: read everything even where a big host's pass would read part (someone else just changed the tables). */
  observe(input: DataplaneInput, opts?: { full?: boolean }): Promise<Observation>;
  /** Remove everything this backend owns from the host. */
  teardown(): Promise<void>;
  /**
   * Packet counters of the user rules of these VMs, read from the kernel without changing anything
   * (optional: a dataplane without a kernel has none). Does not wait for applies in progress.
   */
  ruleCounts?(vms: readonly VmChainRef[]): Promise<KernelRuleCount[]>;
  /** Packet counters of every drop point with an API reason (optional, like ruleCounts). */
  dropCounts?(): Promise<KernelDropCount[]>;
  /** Release helper processes (the rules stay); optional. */
  close?(): Promise<void>;
}
