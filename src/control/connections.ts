// The server's side of conntrack (issue 11, protocol/conntrack.ts):
//   - ConnectionInspector for the API's revoke dry runs: asks the agents of the affected hosts which
//     connections they track for the affected VMs (one listConnections per host, with a question id),
//     and collects the answers within the caller's time bound. A host whose agent this server does not
//     hold — no session, or a session held by another server sharing the database (DESIGN.md §6) — is
//     reported as not answered, so the dry run says "partial"; so is a host that did not answer in
//     time. An agent's answer that stopped at its per-VM limit, or whose listing did not finish, counts
//     as truncated (partial too), with what it did return. Each host is asked only about the VMs this
//     server placed on it; the per-VM limit shrinks so one inspection collects at most ENTRY_BUDGET
//     entries, and at most MAX_INSPECTIONS run at once. A host that let a question time out is not
//     asked again for UNANSWERED_HOLD_MS (reported as not answered at once), so an agent that never
//     answers holds an inspection slot for one timeout per hold, not one per dry run.
//   - The cut setting for agents: security.group.revoke.cut.connections, read at start and on every
//     `settings` change of the feed, sent to each session before its first snapshot or delta (only
//     when on: agents start every session with it off) and to all sessions when it changes (inside the serial section, before the batch's pushes, so a revoke
//     committed after the change reaches agents after the setting). Agents decide what to cut
//     themselves, from the policy they have just applied (agent/connections.ts).
import type { Logger } from 'pino';
import type { ConnectionInspector, HostConnections, TrackedConnection } from '../model/telemetry.js';
import {
  MAX_CONNECTIONS_PER_VM, MAX_CONNTRACK_TIMEOUT_MS, MIN_CONNTRACK_TIMEOUT_MS, trackedConnectionOf,
  type ConnectionsMessage, type ServerMessage,
} from '../protocol/index.js';
import { logText } from './log-text.js';

/** What this module needs of the session hub. */
export interface ConnectionSessions {
  sendTo(hostId: number, m: ServerMessage): boolean;
  sendAll(m: ServerMessage): void;
}

/** Part of the caller's time bound left for the answer to travel back (the agent gets the rest). */
const TRANSIT_MARGIN_MS = 250;
/**
 * Memory bounds: inspections in flight at once (more are answered at once as not answered: partial),
 * and the entries one inspection may collect over all its hosts (the per-VM limit is lowered to fit,
 * so a dry run over a large group is "partial" rather than a memory hazard).
 */
const MAX_INSPECTIONS = 4;
const ENTRY_BUDGET = 200_000;
/** How long a host whose agent let a question time out is not asked (see the header). */
export const UNANSWERED_HOLD_MS = 30_000;

interface Open {
  hostId: number;
  resolve: (m: ConnectionsMessage | null) => void;
  timer: NodeJS.Timeout;
}

export class ConnectionsControl implements ConnectionInspector {
  private nextId = 1;
  private readonly open = new Map<number, Open>();
  readonly stats = { asked: 0, answered: 0, late: 0, unheld: 0, heldOff: 0 };
  /** Hosts that let a question time out, and until when they are not asked (bounded by the fleet). */
  private readonly unanswered = new Map<number, number>();

  private inFlight = 0;

  constructor(private readonly log: Logger, private readonly sessions: () => ConnectionSessions,
    /** The VM uuids this server last gave a host (undefined: host unknown here). */
    private readonly placed: (hostId: number) => { has(vmUuid: string): boolean } | undefined,
    private cutOnRevoke: boolean) {}

  // ---- the cut setting ----------------------------------------------------------------------------

  /**
   * What a new session gets before its first snapshot or delta: the setting when it is on, nothing when
   * it is off (agents start each session with it off). So an agent of an older release, which would
   * take an unknown message for a protocol error, is only sent one once an operator turns cutting on.
   */
  settings(): ServerMessage | null { return this.cutOnRevoke ? this.message() : null; }

  private message(): ServerMessage { return { type: 'connectionSettings', cutOnRevoke: this.cutOnRevoke }; }

  /** The stored setting as a `settings` batch read it (inside the serial section). */
  settingChanged(cutOnRevoke: boolean): void {
    if (cutOnRevoke === this.cutOnRevoke) return;
    this.cutOnRevoke = cutOnRevoke;
    this.log.info({ cutOnRevoke }, 'control: security.group.revoke.cut.connections changed; telling agents');
    this.sessions().sendAll(this.message());
  }

  // ---- dry-run questions --------------------------------------------------------------------------

  async trackedConnections(req: { hostIds: number[]; vmIds: string[]; limitPerVm: number; timeoutMs: number }): Promise<HostConnections[]> {
    const hostIds = [...new Set(req.hostIds)];
    if (this.inFlight >= MAX_INSPECTIONS) {
      this.log.warn({ hosts: hostIds.length }, 'control: too many conntrack inspections at once; answering this one as partial');
      return hostIds.map((hostId) => ({ hostId, answered: false, truncated: false, connections: [] }));
    }
    // Each host is asked about the wanted VMs it was given (all of them when this server does not know it).
    const perHost = new Map(hostIds.map((h) => {
      const placed = this.placed(h);
      return [h, placed ? req.vmIds.filter((v) => placed.has(v)) : [...new Set(req.vmIds)]] as const;
    }));
    const asked = [...perHost.values()].reduce((n, v) => n + v.length, 0);
    const limitPerVm = Math.max(1, Math.min(MAX_CONNECTIONS_PER_VM, Math.floor(req.limitPerVm), Math.floor(ENTRY_BUDGET / Math.max(1, asked))));
    const waitMs = Math.max(MIN_CONNTRACK_TIMEOUT_MS + TRANSIT_MARGIN_MS, Math.min(MAX_CONNTRACK_TIMEOUT_MS, Math.floor(req.timeoutMs)));
    const agentMs = Math.max(MIN_CONNTRACK_TIMEOUT_MS, waitMs - TRANSIT_MARGIN_MS);
    const ask = (hostId: number): Promise<HostConnections> => {
      const none: HostConnections = { hostId, answered: false, truncated: false, connections: [] };
      const vms = perHost.get(hostId)!;
      const wanted = new Set(vms);
      const heldUntil = this.unanswered.get(hostId);
      if (heldUntil !== undefined) {
        if (Date.now() < heldUntil) { this.stats.heldOff++; return Promise.resolve(none); }
        this.unanswered.delete(hostId);
      }
      const id = this.nextId++;
      const answer = new Promise<ConnectionsMessage | null>((resolve) => {
        const timer = setTimeout(() => {
          this.open.delete(id);
          this.stats.late++;
          if (!this.unanswered.has(hostId)) this.log.info({ host: hostId, holdMs: UNANSWERED_HOLD_MS }, 'control: an agent did not answer a conntrack question in time; not asking it for a while');
          this.unanswered.set(hostId, Date.now() + UNANSWERED_HOLD_MS);
          resolve(null);
        }, waitMs);
        this.open.set(id, { hostId, resolve, timer });
      });
      if (!this.sessions().sendTo(hostId, { type: 'listConnections', id, vms, limitPerVm, timeoutMs: agentMs })) {
        this.settle(id, null);
        this.stats.unheld++;
        return Promise.resolve(none);
      }
      this.stats.asked++;
      return answer.then((m) => (m ? hostAnswer(hostId, m, wanted, limitPerVm) : none));
    };
    this.inFlight++;
    try { return await Promise.all(hostIds.map(ask)); } finally { this.inFlight--; }
  }

  /** An agent's answer (validated by the hub); one to no open question, or from another host, is ignored. */
  answer(hostId: number, m: ConnectionsMessage): void {
    const q = this.open.get(m.id);
    if (!q || q.hostId !== hostId) {
      this.log.debug({ host: hostId, id: m.id }, 'control: conntrack answer to no open question (late?)');
      return;
    }
    this.stats.answered++;
    if (m.error) this.log.warn({ host: hostId, err: logText(m.error) }, 'control: an agent could not list all its tracked connections');
    this.settle(m.id, m);
  }

  private settle(id: number, m: ConnectionsMessage | null): void {
    const q = this.open.get(id);
    if (!q) return;
    this.open.delete(id);
    clearTimeout(q.timer);
    q.resolve(m);
  }

  close(): void {
    for (const id of [...this.open.keys()]) this.settle(id, null);
  }
}

/** What one host answered, held to the question: only the VMs asked about, at most `limitPerVm` entries each
 *  (an agent sending more is cut at the limit and counts as truncated; the inspection's budget holds). */
function hostAnswer(hostId: number, m: ConnectionsMessage, wanted: ReadonlySet<string>, limitPerVm: number): HostConnections {
  const connections: TrackedConnection[] = [];
  const taken = new Map<string, number>();
  let truncated = !m.complete;
  for (const vm of m.vms) {
    if (!wanted.has(vm.vmId)) continue;   // not asked: ignored
    if (vm.truncated) truncated = true;
    let n = taken.get(vm.vmId) ?? 0;
    for (const e of vm.entries) {
      if (n >= limitPerVm) { truncated = true; break; }
      connections.push(trackedConnectionOf(vm.vmId, e));
      n++;
    }
    taken.set(vm.vmId, n);
  }
  return { hostId, answered: true, truncated, connections };
}
