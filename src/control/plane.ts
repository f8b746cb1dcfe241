// The control plane of one server, composed of its concerns:
//   FeedReader (feed-reader.ts)  tails the change feed: every server's committed API changes, in order;
//   Batches (batches.ts)         coalesces them, reloads what they touched, advances the in-memory
//                                CloudState and each host's desired state (Fleet, fleet.ts);
//   SessionHub (sessions.ts)     agent sessions: hellos, resyncs, pushes, validation, keepalive;
//   SyncTracker (sync.ts)        acks and reports → VM sync states and host status in the store;
//   Cluster (cluster.ts)         heartbeat, host leases, sweeps for dead servers and expired leases;
//   HostActivity (activity.ts)   from the live leases: the hosts other servers hold, for which this one
//                                compiles and advances nothing (Fleet's passive hosts).
// The API's in-process ChangeSink only wakes the reader: this server's own changes travel the same
// path as everybody else's (DESIGN.md §6).
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Change } from '../model/changes.js';
import type { Db } from '../store/db.js';
import type { ServerRow } from '../store/queries/cluster.js';
import { feedHead, feedSize } from '../store/queries/feed.js';
import { listenFeed, type FeedListener } from '../store/notify.js';
import { Fleet, PLACED_STATES } from './fleet.js';
import { loadCloudState, loadHosts } from './load.js';
import { Batches, type BatchOutcome } from './batches.js';
import { FeedReader } from './feed-reader.js';
import { SessionHub } from './sessions.js';
import { SyncTracker } from './sync.js';
import { Cluster, DEFAULT_TIMING, type ClusterTiming } from './cluster.js';
import { Serial } from './serial.js';
import { TelemetryIngest } from './telemetry.js';
import { ControlMetrics } from './metrics.js';
import type { MetricsRegistry } from '../metrics/registry.js';
import { readSettings } from '../store/queries/settings.js';
import type { PalisadeSettings } from '../model/settings.js';
import { CLOSE_HELD_ELSEWHERE, type DropLogSettings } from '../protocol/index.js';
import { ConnectionsControl } from './connections.js';
import { HostActivity } from './activity.js';

export interface ControlOptions {
  /** Identity of this server process (stable per data dir) and the name shown in listHosts. */
  serverId: string;
  serverName: string;
  /** PostgreSQL URL: LISTEN for other servers' changes (absent with SQLite: one server). */
  listenUrl?: string;
  /** The `result` (JSON) of a job failed because its server died. */
  jobFailure: (server: ServerRow) => string;
  /** Feed poll period (the fallback when a NOTIFY is lost). */
  pollMs?: number;
  /** Connections for the heartbeat, leases and sweeps (default: the store's); see cluster.ts. */
  clusterDb?: Db;
  timing?: Partial<ClusterTiming>;
  /** The server's registry: CONTROL_METRICS are registered in it, and agents' hits/drops counted. */
  metrics?: MetricsRegistry;
  /** Agent connections awaiting an accepted hello held at once (sessions.ts PENDING_HELLOS_MAX by default). */
  pendingHellosMax?: number;
}

export interface ControlStats { batches: number; changes: number; pushes: Map<number, number>; snapshots: number; deltas: number }

export class ControlPlaneImpl {
  readonly fleet: Fleet;
  readonly sync: SyncTracker;
  readonly hub: SessionHub;
  readonly cluster: Cluster;
  readonly batches: Batches;
  readonly reader: FeedReader;
  readonly telemetry: TelemetryIngest;
  readonly metrics: ControlMetrics | null;
  /** The global settings as last read (start, then every `settings` change); agents get the drop log's. */
  settings: PalisadeSettings;
  /** Conntrack: dry-run questions to agents, the cut setting (connections.ts). */
  readonly connections: ConnectionsControl;
  readonly activity: HostActivity;
  private readonly serial = new Serial();
  private listener: FeedListener | null = null;
  private closed = false;

  private constructor(private readonly db: Db, private readonly log: Logger, fleet: Fleet, start: number, o: ControlOptions, settings: PalisadeSettings) {
    this.fleet = fleet;
    this.settings = settings;
    this.telemetry = new TelemetryIngest(db, log, fleet, o.metrics);
    this.metrics = o.metrics ? new ControlMetrics(o.metrics, () => this.hub.connectedHosts()) : null;
    this.connections = new ConnectionsControl(log, () => this.hub, (h) => fleet.hosts.get(h)?.vms, settings.revokeCutConnections);
    const timing = { ...DEFAULT_TIMING, ...o.timing };
    this.sync = new SyncTracker(db, log, fleet, o.serverId, (h) => this.hub.holds(h));
    this.activity = new HostActivity({ db, log, fleet, sync: this.sync, serial: this.serial, serverId: o.serverId, start, graceMs: timing.leaseTtlMs, holds: (h) => this.hub.holds(h) });
    this.cluster = new Cluster(o.clusterDb ?? db, log, o.serverId, o.serverName, {
      position: () => this.batches.processed,
      held: () => this.hub.held(),
      lost: (ids) => { for (const id of ids) this.hub.drop(id, CLOSE_HELD_ELSEWHERE, 'host is now served by another server'); },
      unhealthy: () => { this.hub.accepting = false; this.hub.closeAll(4503, 'server cannot reach its database'); },
      healthy: () => { this.hub.accepting = !this.closed; },
      jobFailure: o.jobFailure,
      leases: (live, servers) => { void this.activity.observe(live, servers).catch((e) => log.warn({ err: e instanceof Error ? e.message : String(e) }, 'control: could not follow which hosts other servers hold')); },
    }, timing);
    this.batches = new Batches(db, log, fleet, this.serial, start, {
      hostGone: (id, code, reason) => { this.hub.drop(id, code, reason); this.sync.forgetHost(id); this.telemetry.forget(id); },
      removalsCleared: (vmIds) => { for (const v of vmIds) this.sync.refreshVm(v); },
      applied: (out) => this.applied(out),
      settingsChanged: (st) => this.settingsChanged(st),
    });
    this.reader = new FeedReader(db, log, start, (entries) => this.batches.enqueue(entries), {
      pollMs: o.pollMs ?? 500, pageRows: 1000, paused: () => this.batches.full,
    });
    this.batches.onDrain = () => this.reader.wake();
    this.hub = new SessionHub({
      log, fleet, sync: this.sync, cluster: this.cluster, batches: this.batches, reader: this.reader, serial: this.serial,
      telemetry: this.telemetry, settings: () => this.dropLogSettings(), connections: this.connections, ...(this.metrics ? { metrics: this.metrics } : {}),
      ...(o.pendingHellosMax !== undefined ? { pendingHellosMax: o.pendingHellosMax } : {}),
    });
  }

  static async create(db: Db, log: Logger, o: ControlOptions): Promise<ControlPlaneImpl> {
    const t0 = Date.now();
    // The position first, then the state: the state reflects at least everything up to it, and what
    // commits after it is read from the feed (applying a change twice is harmless: batches reload rows).
    const start = await feedHead(db);
    const state = await loadCloudState(db);
    const settings = await readSettings(db);
    const fleet = new Fleet(state);
    for (const h of await loadHosts(db)) if (!h.removed) fleet.addHost({ id: h.id, uuid: h.uuid, name: h.name, tokenHash: h.tokenHash, revision: start });
    const cp = new ControlPlaneImpl(db, log, fleet, start, o, settings);
    // Hosts other servers hold are not compiled here (activity.ts).
    await cp.activity.initial();
    fleet.buildAll();
    // Nothing given out before this position is known here: agents holding older revisions get a snapshot.
    for (const h of fleet.hosts.values()) {
      if (fleet.isPassive(h.id)) continue;
      fleet.advance(h.id, start);
      cp.sync.status.desired(h.id, h.revision, false);
    }
    await cp.adoptPendingRemovals();
    await cp.cluster.start();
    await cp.sync.status.flush().catch((e) => log.error({ err: e }, 'control: status write failed (will retry)'));
    cp.reader.start();
    if (o.listenUrl) {
      let listening = true;
      cp.listener = listenFeed(o.listenUrl, () => cp.reader.wake(), (up, err) => {
        if (up && !listening) log.info('control: listening for change-feed notifications again');
        else if (!up && listening && !cp.closed) log.warn({ err: err?.message }, 'control: change-feed notifications lost; polling until reconnected');
        listening = up;
      });
    }
    cp.reader.wake();
    log.info({ hosts: fleet.hosts.size, active: fleet.activeCount(), vms: state.vms.size, compiled: fleet.policies.size, position: start, ms: Date.now() - t0 }, 'control plane loaded');
    return cp;
  }

  /**
   * VMs the store shows Pending that are placed nowhere: an earlier run took them off a host and
   * stopped before it saw (or stored) the ack. That host still owes the removal; the first state it
   * acks from now on has no such VM (agents of a restarted server get a snapshot), which confirms it.
   * Without a known host nothing can still enforce them: Synced.
   */
  private async adoptPendingRemovals(): Promise<void> {
    const rows = await this.db.selectFrom('vms').select(['id', 'host_id', 'last_host_id', 'state'])
      .where('removed', 'is', null).where('sync_state', '=', 'Pending').execute();
    for (const row of rows) {
      const r = { ...row, id: Number(row.id) };   // bigint since 016: pg returns text
      // Placed VMs are decided by their host's ack (also when their policy failed to compile).
      if (r.host_id !== null && PLACED_STATES.has(r.state)) continue;
      const h = this.fleet.hosts.get(r.host_id ?? r.last_host_id ?? -1);
      if (h && this.fleet.isPassive(h.id)) this.fleet.leftHost(r.id, h.id);   // its holder confirms it
      else if (h) this.fleet.owesRemoval(h, r.id, h.revision);
      else this.sync.refreshVm(r.id);
    }
  }

  /** A batch advanced the fleet (inside the serial section): push deltas, track sync. */
  private applied(out: BatchOutcome): void {
    // The API may have written these VMs' sync state itself: forget what we think the store holds.
    this.sync.forgetVms(out.touchedVms);
    const refresh = new Set<number>(out.touchedVms);
    let pushed = false;
    for (const h of out.dirty) {
      const d = this.fleet.advance(h, out.position);
      if (!d) continue;
      this.sync.pushed(h, d, refresh);
      this.hub.push(h, d, out.oldestCommit);
      pushed = true;
    }
    for (const v of refresh) this.sync.refreshVm(v);
    this.metrics?.batch(out.changes, out.oldestCommit, pushed);
  }

  /** What agents apply of the settings: the drop log's per-VM rate and burst. */
  dropLogSettings(): DropLogSettings {
    // Within the protocol's bounds whatever the store holds (a value out of them would make agents
    // refuse the message and drop the session): the settings API checks the same ranges.
    const clamp = (n: number, lo: number, hi: number, dflt: number) => (Number.isFinite(n) ? Math.min(hi, Math.max(lo, Math.round(n))) : dflt);
    return { rate: clamp(this.settings.dropLogRate, 0, 10_000, 10), burst: clamp(this.settings.dropLogBurst, 1, 100_000, 50) };
  }

  /** A `settings` change (inside the serial section): agents get new drop-log values at once. */
  private settingsChanged(st: PalisadeSettings): void {
    const before = this.dropLogSettings();
    this.settings = st;
    const after = this.dropLogSettings();
    if (before.rate !== after.rate || before.burst !== after.burst) {
      this.log.info({ dropLog: after }, 'control: drop-log settings changed; pushing them to agents');
      this.hub.pushSettings();
    }
    this.connections.settingChanged(st.revokeCutConnections);
  }

  // ---- the seam (index.ts) -----------------------------------------------------------------------

  /** The API committed changes: they are in the feed; read it now rather than at the next poll. */
  publish(changes: Change[]): void {
    if (!this.closed && changes.length) this.reader.wake();
  }

  register(app: FastifyInstance): Promise<void> { return this.hub.register(app); }

  /** Wait until every change committed so far is processed and pushed (tests, benchmarks). */
  async settle(): Promise<void> {
    this.reader.wake();
    await this.batches.waitProcessed(await feedHead(this.db));
    await this.serial.idle();
  }

  get stats(): ControlStats {
    return { batches: this.batches.stats.batches, changes: this.batches.stats.changes, pushes: this.hub.stats.pushes, snapshots: this.hub.stats.snapshots, deltas: this.hub.stats.deltas };
  }

  connectedHosts(): number { return this.hub.connectedHosts(); }

  feedSize(): Promise<{ rows: number; bytes: number }> { return feedSize(this.db); }

  async close(): Promise<void> {
    this.closed = true;
    this.reader.stop();
    this.telemetry.close();
    await this.listener?.close();
    this.batches.close();
    await this.serial.idle();
    this.connections.close();
    this.hub.close();
    await this.cluster.stop();
    await this.sync.close();
  }
}
