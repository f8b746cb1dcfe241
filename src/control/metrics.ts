// The control plane's Prometheus metrics (CONTROL_METRICS of metrics/catalog.ts), measured where the
// control plane does the work: change batches and their commit→push latency (batches.ts → plane.ts),
// pushes and their bytes (sessions.ts), agent sessions, and the age of the oldest change a host this
// server holds has not acknowledged yet.
//
// Oldest unacknowledged change: when a host this server holds is pushed a desired state while it has
// acknowledged everything before, the push's oldest commit time is remembered for that host; an ack of
// the host's current desired revision clears it. The gauge is the age of the oldest remembered time
// (0 when every held host is in sync); a host whose session ends is forgotten (another server, or the
// `palisade_hosts{state="Disconnected"}` gauge, tells about it). Clocks: commit times are the
// committing server's, so the age is clamped at 0.
import { CONTROL_METRICS } from '../metrics/catalog.js';
import type { MetricsRegistry } from '../metrics/registry.js';

export class ControlMetrics {
  private readonly batches;
  private readonly changes;
  private readonly commitToPush;
  private readonly pushes;
  private readonly pushBytes;
  /** Host id → Unix ms of the oldest commit it was pushed and has not acknowledged. */
  private readonly unacked = new Map<number, number>();

  constructor(metrics: MetricsRegistry, sessions: () => number) {
    this.batches = metrics.counter(CONTROL_METRICS.batches);
    this.changes = metrics.counter(CONTROL_METRICS.changes);
    this.commitToPush = metrics.histogram(CONTROL_METRICS.commitToPush);
    this.pushes = metrics.counter(CONTROL_METRICS.pushes);
    this.pushBytes = metrics.counter(CONTROL_METRICS.pushBytes);
    metrics.gauge(CONTROL_METRICS.agentSessions, (g) => { g.set(sessions()); });
    metrics.gauge(CONTROL_METRICS.oldestUnacked, (g) => { g.set(this.oldestUnackedSeconds(Date.now())); });
  }

  /** A batch of `changes` committed changes was processed; `pushedAt` set when it caused pushes. */
  batch(changes: number, oldestCommit: number | undefined, pushed: boolean): void {
    this.batches.inc();
    this.changes.inc(changes);
    if (pushed && oldestCommit !== undefined) this.commitToPush.observe(Math.max(0, (Date.now() - oldestCommit) / 1000));
  }

  /** A desired-state message went to a host's agent. */
  pushed(kind: 'delta' | 'snapshot', bytes: number): void {
    this.pushes.inc({ kind });
    this.pushBytes.inc(bytes);
  }

  /** A host this server holds was given a revision it has not acknowledged; `since`: its oldest commit. */
  awaiting(hostId: number, since: number): void {
    if (!this.unacked.has(hostId)) this.unacked.set(hostId, since);
  }

  /** The host acknowledged everything it was given (or its session ended): nothing is waiting on it. */
  settled(hostId: number): void { this.unacked.delete(hostId); }

  oldestUnackedSeconds(now: number): number {
    let oldest = Infinity;
    for (const t of this.unacked.values()) if (t < oldest) oldest = t;
    return Number.isFinite(oldest) ? Math.max(0, (now - oldest) / 1000) : 0;
  }
}
