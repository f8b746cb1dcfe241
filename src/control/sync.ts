// Sync and status tracking: what each agent acknowledged (per VM, per revision), what it reported
// (preflight findings, drift repairs), and from that the sync state of every VM and the state of every
// host this server holds, written through the StatusWriter (which enforces who may write what).
//
// Several servers: a VM placed on a host another server holds (passive in the Fleet, nothing compiled
// for it here), or last taken off such a host, is that server's to report: this one writes nothing
// about it — never Synced merely because it did not compile it. Once this server is active for the host
// again (a session here, or nobody holds it) it decides as for any other host.
import type { Logger } from 'pino';
import { sql } from 'kysely';
import type { Db } from '../store/db.js';
import type { AckMessage, PreflightFinding, RepairReport, ReportMessage } from '../protocol/index.js';
import { MAX_ERROR_CHARS } from '../protocol/index.js';
import { Fleet, type Delta } from './fleet.js';
import { StatusWriter, type HostPatch, type SyncState, type VmAuthority } from './status.js';
import { logText } from './log-text.js';

const MAX_REPAIRS_KEPT = 20;
/** Drift repairs are logged at most once per host per this long (the rest counted in the next line). */
const REPAIR_LOG_EVERY_MS = 60_000;
/** Repairs counted per report at most, and the stored total's ceiling (PostgreSQL `integer`): an agent's
 *  numbers cannot overflow the column or make `driftrepairs` meaningless. */
const MAX_REPAIRS_COUNTED_PER_REPORT = 1_000_000;
const MAX_REPAIR_TOTAL = 2_147_483_647;
/** Reported repairs are added to the store at most this often (per server, one statement per host). */
const REPAIR_FLUSH_MS = 1000;

interface HostStatus { preflight: PreflightFinding[]; repairs: RepairReport[] }

export class SyncTracker {
  readonly status: StatusWriter;
  private readonly hostStatus = new Map<number, HostStatus>();
  /** Last sync state written per VM, with who wrote it (skips redundant writes). */
  private readonly vmSync = new Map<number, string>();
  /** Per VM: the last per-VM result an agent acked, at which revision. */
  private readonly vmAck = new Map<number, { hostId: number; rev: number; ok: boolean; error: string | null; waiting: boolean }>();
  /** Per host: when its repairs were last logged, and the reports not logged since. */
  private readonly repairLog = new Map<number, { at: number; unlogged: number }>();
  /** Repairs reported and not yet added to hosts.repair_count (flushRepairs). */
  private readonly pendingRepairs = new Map<number, number>();
  private repairFlush: NodeJS.Timeout | null = null;
  private repairFailLoggedAt = 0;
  private closed = false;

  constructor(private readonly db: Db, private readonly log: Logger, private readonly fleet: Fleet, serverId: string,
    /** Does this server hold the host's agent session (and so its lease)? */
    private readonly holds: (hostId: number) => boolean) {
    this.status = new StatusWriter(db, serverId, (e) => this.log.error({ err: e }, 'control: status write failed (will retry)'));
  }

  /** A host's state from its last report: Alert when a preflight check failed and could not be fixed. */
  hostState(hostId: number): 'Up' | 'Alert' {
    const st = this.hostStatus.get(hostId);
    return st?.preflight.some((f) => !f.ok && !f.fixed) ? 'Alert' : 'Up';
  }

  hostPatch(hostId: number, p: HostPatch): void { this.status.host(hostId, p); }

  forgetHost(hostId: number): void { this.hostStatus.delete(hostId); this.repairLog.delete(hostId); }

  /** A host was pushed a new desired state. */
  pushed(hostId: number, d: Delta, touched: Set<number>): void {
    this.status.desired(hostId, d.revision, this.holds(hostId));
    const entry = this.fleet.hosts.get(hostId)!;
    for (const p of d.upsertVms) touched.add(entry.vms.get(p.vmId)!.vmId);
    for (const vmId of entry.removals.keys()) touched.add(vmId);
  }

  /** The API may have written these VMs' sync state itself: forget what we think the store holds. */
  forgetVms(vmIds: Iterable<number>): void { for (const v of vmIds) this.vmSync.delete(v); }

  /**
   * This server started or stopped holding a host: what it wrote for the host's VMs before no longer
   * says anything; recompute them (Pending until this session's agent acks them).
   */
  holderChanged(hostId: number): void {
    const h = this.fleet.hosts.get(hostId);
    const vms = new Set<number>(this.fleet.hostVms.get(hostId) ?? []);
    if (h) for (const v of h.removals.keys()) vms.add(v);
    for (const v of vms) { this.vmSync.delete(v); this.refreshVm(v); }
  }

  /**
   * A (re)connected agent says which revision it holds (null: none, e.g. its state could not be read,
   * so it closed its VMs' ports): acks of anything later no longer describe its kernel. Its VMs acked
   * beyond that are Pending again, and the host is not synced, until it acks what it is sent now.
   */
  agentHolds(hostId: number, revision: number | null): void {
    const host = this.fleet.hosts.get(hostId);
    const held = revision ?? -1;
    if (!host || held >= host.acked) return;
    host.acked = held;
    this.status.host(hostId, { acked_revision: Math.max(0, held) });
    for (const vmId of this.fleet.hostVms.get(hostId) ?? []) {
      const a = this.vmAck.get(vmId);
      if (a && a.hostId === hostId && a.rev > held) { this.vmAck.delete(vmId); this.refreshVm(vmId); }
    }
  }

  /** Another server holds the host now: what this one wrote or heard for these VMs no longer counts. */
  passivated(vmIds: Iterable<number>): void {
    for (const v of vmIds) { this.vmSync.delete(v); this.vmAck.delete(v); }
  }

  /** A VM's sync state from what is desired and what its host(s) acked. */
  refreshVm(vmId: number): void {
    const hostId = this.fleet.vmHost.get(vmId);
    // Placed on (or last taken off) a host another server holds: that server reports it.
    if (hostId !== undefined && this.fleet.isPassive(hostId)) return;
    const policy = this.fleet.policies.get(vmId);
    if (hostId !== undefined && !policy) {
      // Placed here but not compiled (its policy failed to compile when the host became active): not enforced as desired.
      this.setVm(vmId, 'Pending', null, { hostId, placed: true, owned: this.holds(hostId) });
      return;
    }
    if (hostId !== undefined && policy) {
      const h = this.fleet.hosts.get(hostId);
      const e = h?.vms.get(policy.vmId);
      const a = this.vmAck.get(vmId);
      const authority = { hostId, placed: true, owned: this.holds(hostId) };
      if (!h || !e || e.rev > h.acked || !a || a.hostId !== hostId || a.rev < e.rev) this.setVm(vmId, 'Pending', null, authority);
      // (an agent waiting for the VM's port to appear: Pending, with the reason)
      else this.setVm(vmId, a.ok ? 'Synced' : a.waiting ? 'Pending' : 'Failed', a.ok ? null : a.error, authority);
      return;
    }
    // Not placed: synced once every host it left has acked its removal.
    const owing = this.fleet.pendingRemovals.get(vmId);
    if (owing?.size) {
      // Any host that owes it decides; prefer one this server holds (it hears the ack).
      const hosts = [...owing];
      const hostId = hosts.find((h) => this.holds(h)) ?? hosts[0];
      this.setVm(vmId, 'Pending', null, { hostId, placed: false, owned: this.holds(hostId) });
    } else if (this.fleet.leftPassive.has(vmId)) {
      // Taken off a host another server holds: its removal is that server's to confirm.
    } else if (this.fleet.state.vms.has(vmId)) {
      this.setVm(vmId, 'Synced', null, null);
    }
  }

  private setVm(vmId: number, state: SyncState, error: string | null, authority: VmAuthority | null): void {
    if (authority && !authority.owned && state !== 'Pending') return;
    const key = `${state}\u0000${error ?? ''}\u0000${authority ? `${authority.hostId}${authority.owned ? '+' : '-'}` : ''}`;
    if (this.vmSync.get(vmId) === key) return;
    this.vmSync.set(vmId, key);
    this.status.vm(vmId, state, error, authority);
  }

  /** An ack of the session's agent; `sent`: the highest revision this session was given. */
  onAck(hostId: number, m: AckMessage, sent: number, now: string): void {
    const host = this.fleet.hosts.get(hostId);
    if (!host || sent < 0) return;   // an ack of something another server sent: this session has not been given anything yet
    const rev = Math.min(m.revision, sent);
    host.acked = Math.max(host.acked, rev);
    // The store holds the highest revision acked (an ack of an older one, valid but late or hostile,
    // must not make the host look behind in listHosts while its VMs stay Synced).
    this.status.host(hostId, { acked_revision: host.acked, last_contact: now });
    for (const uuid in m.vms) {
      const r = m.vms[uuid];
      const e = host.vms.get(uuid);
      if (!e || e.rev > rev) continue;   // acked an older version than the one now desired: still pending
      const error = r.ok ? null : (r.error ?? 'failed').slice(0, MAX_ERROR_CHARS);
      const waiting = !r.ok && r.waiting === true;
      const prev = this.vmAck.get(e.vmId);
      // Most of an ack repeats what the host already confirmed (its other VMs): nothing to recompute.
      if (prev && prev.hostId === hostId && prev.ok === r.ok && prev.error === error && prev.waiting === waiting && prev.rev >= e.rev) { prev.rev = rev; continue; }
      this.vmAck.set(e.vmId, { hostId, rev, ok: r.ok, error, waiting });
      this.refreshVm(e.vmId);
    }
    for (const [vmId, removedAt] of host.removals) {
      if (removedAt > rev) continue;
      this.fleet.clearRemoval(host, vmId);
      if (this.vmAck.get(vmId)?.hostId === hostId) this.vmAck.delete(vmId);
      this.refreshVm(vmId);
    }
  }

  /** A report (validated by the protocol's schema before it gets here). */
  onReport(hostId: number, m: ReportMessage, now: string): void {
    const st = this.hostStatus.get(hostId) ?? { preflight: [], repairs: [] };
    st.preflight = m.preflight;
    const patch: HostPatch = { preflight: JSON.stringify(st.preflight), state: 'Up', last_contact: now };
    this.hostStatus.set(hostId, st);
    patch.state = this.hostState(hostId);
    if (m.repairs.length) {
      st.repairs = [...st.repairs, ...m.repairs].slice(-MAX_REPAIRS_KEPT);
      patch.repairs = JSON.stringify(st.repairs);
      const counted = Math.min(MAX_REPAIRS_COUNTED_PER_REPORT, m.repairs.reduce((n, r) => n + (r.count || 1), 0));
      this.logRepairs(hostId, m.repairs, counted);
      // repair_count is cumulative in the store across server restarts and moves between servers;
      // added once a second per host, however many reports came (one write per report let a flooding
      // agent exhaust the database pool).
      this.addPendingRepairs(hostId, counted);
      this.scheduleRepairFlush();
    }
    this.status.host(hostId, patch);
  }

  /**
   * One short line per host per REPAIR_LOG_EVERY_MS (what was repaired is in listHosts): an agent
   * sending full reports without pause once wrote hundreds of MB of log in seconds.
   */
  private logRepairs(hostId: number, repairs: RepairReport[], counted: number): void {
    const now = Date.now();
    const seen = this.repairLog.get(hostId);
    if (seen && now - seen.at < REPAIR_LOG_EVERY_MS) { seen.unlogged++; return; }
    this.repairLog.set(hostId, { at: now, unlogged: 0 });
    this.log.warn({ host: hostId, repairs: counted, first: repairs[0] && logText(repairs[0].what.slice(0, 200)), reportsNotLogged: seen?.unlogged ?? 0 }, 'agent repaired drift');
  }

  private addPendingRepairs(hostId: number, n: number): void {
    this.pendingRepairs.set(hostId, Math.min(MAX_REPAIR_TOTAL, (this.pendingRepairs.get(hostId) ?? 0) + n));
  }

  private scheduleRepairFlush(): void {
    if (!this.closed) this.repairFlush ??= setTimeout(() => { this.repairFlush = null; void this.flushRepairs(); }, REPAIR_FLUSH_MS);
  }

  /** Add the repairs counted since the last flush, one statement per host; what fails is kept for the next. */
  private async flushRepairs(): Promise<void> {
    const pending = [...this.pendingRepairs];
    this.pendingRepairs.clear();
    let failed: unknown = null;
    for (const [hostId, n] of pending) {
      try {
        await this.db.updateTable('hosts')
          .set({ repair_count: sql<number>`case when repair_count > ${MAX_REPAIR_TOTAL - n} then ${MAX_REPAIR_TOTAL} else repair_count + ${n} end` })
          .where('id', '=', hostId).execute();
      } catch (e) {
        failed = e;
        this.addPendingRepairs(hostId, n);
      }
    }
    if (failed) {
      const now = Date.now();
      if (now - this.repairFailLoggedAt >= REPAIR_LOG_EVERY_MS) {
        this.repairFailLoggedAt = now;
        this.log.warn({ err: failed instanceof Error ? failed.message : String(failed), hosts: this.pendingRepairs.size }, 'control: repair counts could not be written; kept for the next try');
      }
      this.scheduleRepairFlush();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.repairFlush) { clearTimeout(this.repairFlush); this.repairFlush = null; }
    if (this.pendingRepairs.size) await this.flushRepairs();
    await this.status.close();
  }
}
