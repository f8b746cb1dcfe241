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
export interface Observation { drift: DriftItem[] }

/** Thrown when a kernel step fails: names the tool and carries its stderr. Nothing after it ran. */
export class DataplaneError extends Error {
  constructor(public readonly step: string, public readonly stderr: string) {
    super(`${step} failed: ${stderr.trim()}`);
    this.name = 'DataplaneError';
  }
}

export interface Dataplane {
  readonly name: string;
  /** Pure: the full program for this input (backend-specific, e.g. restore texts per tool). */
  render(input: DataplaneInput): unknown;
  /** Make the kernel match the input: one transaction per tool; writes nothing if already matching. */
  apply(input: DataplaneInput): Promise<ApplyResult>;
  /** Read back what is there and what drifted from the input. */
  observe(input: DataplaneInput): Promise<Observation>;
  /** Remove everything this backend owns from the host. */
  teardown(): Promise<void>;
  /** Release helper processes (the rules stay); optional. */
  close?(): Promise<void>;
}
