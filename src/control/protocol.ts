// The agent channel (DESIGN.md §4): WebSocket at /agent on the API port, JSON text frames.
import type { AddressSet, HostDesiredState, VmPolicy } from '../policy/ir.js';

export const AGENT_PATH = '/agent';
export const PROTOCOL_VERSION = 1;

export interface PreflightFinding { check: string; ok: boolean; fixed?: boolean; detail: string }
export interface RepairReport { at: string; what: string; count: number }

export type AgentMessage =
  /** `dataplane`: the backend the agent runs (after `auto` is resolved): nftables, iptables or null. */
  | { type: 'hello'; version: number; token: string; hostname: string; revision: number | null; dataplane?: string }
  | { type: 'ack'; revision: number; vms: Record<string, { ok: boolean; error?: string }> }
  | { type: 'report'; preflight: PreflightFinding[]; repairs: RepairReport[] }
  | { type: 'ping' };

/**
 * Policies in snapshots and deltas are agent forms (control/agent-form.ts): every PolicyRule's
 * `sources` is empty (explain runs on the server), and VmPolicy.hash is the IR content hash of the
 * policy as sent, so the agent holds exactly what the server compares.
 */
export type ServerMessage =
  | { type: 'welcome'; hostId: string; hostName: string }
  | { type: 'snapshot'; state: HostDesiredState }
  | {
      type: 'delta';
      fromRevision: number;
      revision: number;
      upsertVms: VmPolicy[];
      removeVms: string[];
      upsertSets: AddressSet[];
      removeSets: string[];
    }
  | { type: 'error'; code: number; message: string }
  | { type: 'pong' };
