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
// Each ingestion's time (store work included) is charged to the reporting host's session (`spent`),
// whose handling budget then holds back its next frames: an agent flooding valid reports gets no
// more of the server's time than its budget, not one ingestion after another without pause.
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

const MAX_WAITING_RULES = 200_000;

interface HostQueue {
  hitsBusy: boolean;
  waitingHits: { at: string; vms: Map<string, Map<string, number>>; rules: number } | null;
  dropsBusy: boolean;
  waitingDrops: unknown[] | null;
}

export interface TelemetryStats { hitReports: number; dropBatches: number; failures: number }

export class TelemetryIngest {
  private readonly hosts = new Map<number, HostQueue>();
  readonly stats: TelemetryStats = { hitReports: 0, dropBatches: 0, failures: 0 };
  private closed = false;

  /** Charged with each ingestion's duration, per host (set by the session hub). */
  spent: (hostId: number, ms: number) => void = () => {};

  constructor(private readonly db: Db, private readonly log: Logger, private readonly fleet: Fleet, private readonly metrics?: MetricsRegistry) {}

  private queue(hostId: number): HostQueue {
    let q = this.hosts.get(hostId);
    if (!q) this.hosts.set(hostId, (q = { hitsBusy: false, waitingHits: null, dropsBusy: false, waitingDrops: null }));
    return q;
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
            if (r.error) this.log.warn({ host: hostId, err: r.error }, 'control: rule counter report refused');
          } catch (e) {
            this.stats.failures++;
            this.log.error({ host: hostId, err: e instanceof Error ? e.message : String(e) }, 'control: rule counters could not be stored; this report is lost');
          } finally { this.spent(hostId, performance.now() - began); }
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
        const records = q.waitingDrops;
        q.waitingDrops = null;
        const began = performance.now();
        try {
          const r = await ingestDrops(this.db, hostId, { records }, { metrics: this.metrics });
          this.stats.dropBatches++;
          if (r.rejected) this.log.debug({ host: hostId, rejected: r.rejected, err: r.error }, 'control: drop records rejected');
        } catch (e) {
          this.stats.failures++;
          this.log.error({ host: hostId, err: e instanceof Error ? e.message : String(e) }, 'control: drop records could not be stored; this batch is lost');
        } finally { this.spent(hostId, performance.now() - began); }
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
