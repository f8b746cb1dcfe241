// What agents report about traffic (issue 11), taken from their sessions to the store: `hits`
// (kernel rule counter deltas → API rule hitcount/lasthit, observe.ingestRuleCounters) and `drops`
// (drop-log records → the bounded drop log, observe.ingestDrops).
//
// Bounded per host whatever an agent sends: one ingestion per host and kind runs at a time; counter
// reports arriving meanwhile are summed into one waiting report (at most MAX_WAITING_RULES kernel rules;
// more are counted unattributed and dropped), drop batches into one waiting batch of at most
// MAX_DROP_BATCH records (the rest are counted rejected). Nothing here throws into the session: store
// errors are logged and the report is lost (the agent's counters have moved on; drops are a log).
// A summed counter report larger than one report may be (MAX_COUNTER_VMS VMs) is stored in parts, and a
// VM's rules beyond MAX_COUNTER_RULES are counted unattributed, so honest reports sent back to back by a
// large host are never refused whole.
//
// Each ingestion's time (store work included) is charged to the host's ingestion budget (refilled at
// INGEST_MS_PER_SECOND up to INGEST_BURST_MS): a host in debt waits before its next ingestion, while
// what it sends meanwhile is summed into the bounded waiting report and batch (drop records beyond
// the batch are counted rejected). An agent flooding valid reports so gets no more of the server's
// time than its budget, and its session (acks, pongs) is not held back for it.
//
// Attribution uses this server's policies with their sources (compileShared over the fleet's state,
// one compilation per group set and report), and only for VMs the fleet places on the reporting host.
import type { Logger } from 'pino';
import type { Db } from '../store/db.js';
import type { MetricsRegistry } from '../metrics/registry.js';
import { SERVER_METRICS } from '../metrics/catalog.js';
import { ingestDrops, ingestRuleCounters, MAX_DROP_BATCH } from '../observe/index.js';
import { MAX_COUNTER_RULES, MAX_COUNTER_VMS } from '../observe/schema.js';
import type { DropsMessage, HitsMessage } from '../protocol/index.js';
import type { VmPolicy } from '../policy/ir.js';
import { compileShared, type CompileMemo, type Fleet } from './fleet.js';
import { LogWindow } from '../model/log-window.js';
import { logText } from './log-text.js';
import { TimeBudget } from './time-budget.js';

const MAX_WAITING_RULES = 200_000;
const INGEST_MS_PER_SECOND = 50;
const INGEST_BURST_MS = 2000;
/** A host's ingestions held back for its budget are logged at most once per this period. */
const THROTTLE_LOG_EVERY_MS = 60_000;
/** Store failures logged one by one per minute (the rest are counted). */
const FAILURES_LOGGED = 10;

interface HostQueue {
  hitsBusy: boolean;
  waitingHits: { at: string; vms: Map<string, Map<string, number>>; rules: number } | null;
  dropsBusy: boolean;
  waitingDrops: unknown[] | null;
  /** The host's ingestion time (INGEST_MS_PER_SECOND). */
  budget: TimeBudget;
  throttleLoggedAt: number;
}

export interface TelemetryStats { hitReports: number; dropBatches: number; failures: number }

export class TelemetryIngest {
  private readonly hosts = new Map<number, HostQueue>();
  readonly stats: TelemetryStats = { hitReports: 0, dropBatches: 0, failures: 0 };
  private closed = false;
  private readonly failureLog: LogWindow;

  constructor(private readonly db: Db, private readonly log: Logger, private readonly fleet: Fleet, private readonly metrics?: MetricsRegistry) {
    this.failureLog = new LogWindow(FAILURES_LOGGED, 60_000, (failures) => log.error({ failures }, 'control: telemetry store failures not logged one by one in the last minute'));
  }

  private queue(hostId: number): HostQueue {
    let q = this.hosts.get(hostId);
    if (!q) this.hosts.set(hostId, (q = { hitsBusy: false, waitingHits: null, dropsBusy: false, waitingDrops: null, budget: new TimeBudget(INGEST_MS_PER_SECOND, INGEST_BURST_MS), throttleLoggedAt: -Infinity }));
    return q;
  }

  /** Resolves once the host's ingestion budget is out of debt. */
  private async paid(hostId: number, q: HostQueue): Promise<void> {
    const waitMs = q.budget.charge();
    if (waitMs === 0 || this.closed) return;
    const now = Date.now();
    if (now - q.throttleLoggedAt >= THROTTLE_LOG_EVERY_MS) {
      q.throttleLoggedAt = now;
      this.log.warn({ host: hostId, waitMs }, 'control: telemetry of this host held back: storing it takes too much of the server\'s time (drop records over the waiting batch are shed)');
    }
    await new Promise((r) => setTimeout(r, waitMs).unref());
  }

  /**
   * A store failure: logged one by one up to FAILURES_LOGGED per minute, then counted (a database
   * outage fails every host's reports; the log gets a few lines and a count, not one line per host).
   */
  private failed(hostId: number, e: unknown, what: string): void {
    this.stats.failures++;
    if (this.failureLog.admit()) this.log.error({ host: hostId, err: e instanceof Error ? e.message : String(e) }, what);
  }

  /** The server-side policy (rules with their sources) of a VM the fleet places on `hostId`. */
  private policyOf(hostId: number, memo: CompileMemo): (vmUuid: string) => VmPolicy | undefined {
    const host = this.fleet.hosts.get(hostId);
    return (vmUuid) => {
      const e = host?.vms.get(vmUuid.toLowerCase()) ?? host?.vms.get(vmUuid);
      if (!e || this.fleet.vmHost.get(e.vmId) !== hostId || !this.fleet.state.vms.has(e.vmId)) return undefined;
      try { return compileShared(this.fleet.state, e.vmId, memo); } catch { return undefined; }
    };
  }

  hits(hostId: number, m: HitsMessage): void {
    if (this.closed) return;
    const q = this.queue(hostId);
    const w = q.waitingHits ?? { at: m.at, vms: new Map(), rules: 0 };
    let dropped = 0;
    for (const [vm, rules] of Object.entries(m.vms)) {
      let per = w.vms.get(vm);
      for (const [rule, n] of Object.entries(rules)) {
        if (!per) { if (w.rules >= MAX_WAITING_RULES) { dropped += n; continue; } w.vms.set(vm, (per = new Map())); }
        const have = per.get(rule);
        if (have === undefined) { if (w.rules >= MAX_WAITING_RULES || per.size >= MAX_COUNTER_RULES) { dropped += n; continue; } w.rules++; }
        per.set(rule, Math.min(Number.MAX_SAFE_INTEGER, (have ?? 0) + n));
      }
    }
    if (dropped) this.metrics?.counter(SERVER_METRICS.ruleHitPackets).inc({ result: 'unattributed' }, dropped);
    w.at = m.at;
    q.waitingHits = w;
    if (!q.hitsBusy) void this.runHits(hostId, q);
  }

  private async runHits(hostId: number, q: HostQueue): Promise<void> {
    q.hitsBusy = true;
    try {
      while (q.waitingHits && !this.closed) {
        await this.paid(hostId, q);
        const w = q.waitingHits;
        q.waitingHits = null;
        const vms = [...w.vms];
        const memo: CompileMemo = new Map();
        for (let from = 0; from < vms.length && !this.closed; from += MAX_COUNTER_VMS) {
          const payload = { at: w.at, vms: Object.fromEntries(vms.slice(from, from + MAX_COUNTER_VMS).map(([vm, rules]) => [vm, Object.fromEntries(rules)])) };
          const began = performance.now();
          try {
            const r = await ingestRuleCounters(this.db, payload, this.policyOf(hostId, memo), { metrics: this.metrics });
            this.stats.hitReports++;
            if (r.error) this.log.warn({ host: hostId, err: logText(r.error) }, 'control: rule counter report refused');   // (quotes the report's keys)
          } catch (e) {
            this.failed(hostId, e, 'control: rule counters could not be stored; this report is lost');
          } finally { q.budget.charge(performance.now() - began); }
        }
      }
    } finally { q.hitsBusy = false; }
  }

  drops(hostId: number, m: DropsMessage): void {
    if (this.closed) return;
    const q = this.queue(hostId);
    const w = q.waitingDrops ?? [];
    const room = MAX_DROP_BATCH - w.length;
    for (let i = 0; i < Math.min(room, m.records.length); i++) w.push(m.records[i]);
    if (m.records.length > room) this.metrics?.counter(SERVER_METRICS.dropRecords).inc({ result: 'rejected' }, m.records.length - Math.max(0, room));
    q.waitingDrops = w;
    if (!q.dropsBusy) void this.runDrops(hostId, q);
  }

  private async runDrops(hostId: number, q: HostQueue): Promise<void> {
    q.dropsBusy = true;
    try {
      while (q.waitingDrops && !this.closed) {
        await this.paid(hostId, q);
        const records = q.waitingDrops;
        q.waitingDrops = null;
        const began = performance.now();
        try {
          const r = await ingestDrops(this.db, hostId, { records }, { metrics: this.metrics });
          this.stats.dropBatches++;
          if (r.rejected) this.log.debug({ host: hostId, rejected: r.rejected, err: r.error && logText(r.error) }, 'control: drop records rejected');
        } catch (e) {
          this.failed(hostId, e, 'control: drop records could not be stored; this batch is lost');
        } finally { q.budget.charge(performance.now() - began); }
      }
    } finally { q.dropsBusy = false; }
  }

  /** A host's session ended for good (host removed): forget its queues once idle. */
  forget(hostId: number): void {
    const q = this.hosts.get(hostId);
    if (q && !q.hitsBusy && !q.dropsBusy) this.hosts.delete(hostId);
  }

  close(): void { this.closed = true; }
}
