// This server among others on one database (DESIGN.md §6): its heartbeat row, the leases of the hosts
// whose agents it holds, and the sweeps every server runs for all (hosts whose lease expired show
// Disconnected; a server whose heartbeat expired has its unfinished jobs failed and its leases freed;
// feed rows every live server has read are pruned). With SQLite the same runs for the one server.
//
// Health: a server whose heartbeat renewals have been failing for `unhealthyAfterMs`, or that has not
// renewed at all for `stalledAfterMs` (the database does not answer), is cut off from the database. It
// lets its agents go (they move to another server) and refuses new ones until a renewal works again;
// its API calls fail on their own with a clear error (store/db.ts storeUnavailable). Mere slowness (a
// busy server or database) is not an outage: it only counts after the longer bound, and only if the
// database does not answer a trivial probe either. (A server busy connecting 10,000 agents took more
// than 12 s for a renewal of all their leases while the database answered at once; it let every agent
// go, and they came back in a storm, to it or to the other servers, themselves busy.) With PostgreSQL
// the heartbeat has its own connections (serve.ts), so a pool busy with API calls does not delay it.
//
// Fencing: each run registers an incarnation in its heartbeat row and renews only that row. A server
// the others buried (frozen or cut off past serverTtlMs) finds its row gone when it wakes: it logs it,
// rejoins as a new incarnation, and the API's write fence (`fence`) refuses the requests that arrived
// under the old one. A live row of another incarnation under this server's id means another process
// runs as this server (a shared or copied data dir): this one steps back, as when cut off.
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Kysely, Transaction } from 'kysely';
import type { Database } from '../store/schema.js';
import { storeUnavailable, type Db } from '../store/db.js';
import {
  acquireLeases, buryServer, deadServers, heartbeat, liveLeases, liveServerIds, minLivePosition, reassertHostStates, releaseAllLeases, releaseLeases,
  removeServer, renewHeartbeat, renewLeases, stillRegistered, sweepLeases, type ServerBeat, type ServerRow,
} from '../store/queries/cluster.js';
import { pruneFeed } from '../store/queries/feed.js';

type Q = Kysely<Database> | Transaction<Database>;

/** The heartbeat found a live row of another incarnation under this server's id. */
class Displaced extends Error { constructor() { super('another process holds this server\'s id'); } }

export interface ClusterTiming {
  /** How often the heartbeat and the leases are renewed and the sweeps run. */
  heartbeatMs: number;
  /** A server whose heartbeat is older than this is dead: its jobs fail, its hosts are free. */
  serverTtlMs: number;
  /** A host lease not renewed for this long has expired: the host shows Disconnected. */
  leaseTtlMs: number;
  /** Renewals failing (errors) for this long: this server considers itself cut off. */
  unhealthyAfterMs: number;
  /** No renewal finished at all for this long (hanging, or too busy): cut off too. */
  stalledAfterMs: number;
}

export const DEFAULT_TIMING: ClusterTiming = { heartbeatMs: 2000, serverTtlMs: 15_000, leaseTtlMs: 10_000, unhealthyAfterMs: 5000, stalledAfterMs: 12_000 };

export interface ClusterHooks {
  /** The feed position this server has processed (written with the heartbeat, for pruning). */
  position(): number;
  /** Hosts this server holds, with the state to show for each (Up / Alert). */
  held(): Map<number, { state: string; hostname: string }>;
  /** Hosts whose lease another server took: drop their sessions. */
  lost(hostIds: number[]): void;
  /** Cut off from the database / back. */
  unhealthy(): void;
  healthy(): void;
  /** The `result` (JSON) of a job failed because its server died. */
  jobFailure(server: ServerRow): string;
  /** Every live lease (host → server) and the live servers' ids, read with each tick after the sweep. */
  leases?(live: Map<number, string>, servers: string[]): void;
}

const PRUNE_EVERY = 5;   // ticks

export class Cluster {
  healthy = true;
  private lastOk = Date.now();
  /** When the database last took this server's heartbeat (a tick's, or a probe's while a tick is late). */
  private lastProbeOk = 0;
  private lastCheck = Date.now();
  /** How long this process was itself paused (see checkHealth) since lastOk / lastProbeOk. */
  private pausedSinceOk = 0;
  private pausedSinceProbe = 0;
  private probing = false;
  private slowLogged = false;
  private timer: NodeJS.Timeout | null = null;
  private watchdog: NodeJS.Timeout | null = null;
  private ticking = false;
  private ticks = 0;
  private stopped = false;
  private lastError = '';
  /**
   * The last renewal failed because the database could not be reached (connection refused, lost, pool
   * timeout: storeUnavailable). Other errors (a deadlock with a status write, say) say the database is
   * there: they count only as lateness, under the stall rule and its probe.
   */
  private lastErrorIsOutage = false;
  private readonly startedAt = new Date().toISOString();
  /** This run's registration in its heartbeat row; a new one when it rejoins after being buried. */
  private incarnation = randomUUID();
  private beating: Promise<void> | null = null;
  /** A live heartbeat row of another incarnation has this server's id (see renewBeat). */
  displaced = false;
  private displacedLoggedAt = 0;
  private acquireQueue: { hostId: number; hostname: string; resolve: (ok: boolean | 'superseded') => void; reject: (e: unknown) => void }[] = [];
  private acquireTimer: NodeJS.Timeout | null = null;
  private releaseQueue = new Set<number>();
  private releaseTimer: NodeJS.Timeout | null = null;
  private releasing: Promise<void> = Promise.resolve();
  /**
   * This server's writes to host_leases, one at a time: a renewal (all its rows), an acquisition and a
   * release (hundreds each) running at once on the heartbeat's two connections locked lease rows in
   * different orders and deadlocked under a connection storm.
   */
  private leaseWrites: Promise<unknown> = Promise.resolve();
  /** Leases this server holds without a session, seen at the last renewal (a hello may be between its lease and its session). */
  private orphans = new Set<number>();

  constructor(private readonly db: Db, private readonly log: Logger, readonly serverId: string, readonly serverName: string,
    private readonly hooks: ClusterHooks, readonly timing: ClusterTiming = DEFAULT_TIMING) {}

  /** Register this server; leases of its previous run go (those agents reconnect anyway). */
  async start(): Promise<void> {
    await heartbeat(this.db, this.beatRow());
    const stale = await releaseAllLeases(this.db, this.serverId, new Date().toISOString());
    if (stale) this.log.info({ hosts: stale }, 'released the host leases of this server\'s previous run');
    await this.sweep();
    // The health clock starts now: loading the cloud before start() (many seconds for 200,000 VMs) is not
    // time the database failed to answer (a new server cut itself off before its first tick).
    this.lastOk = this.lastProbeOk = this.lastCheck = Date.now();
    this.timer = setTimeout(() => this.tick(), this.timing.heartbeatMs);
    this.watchdog = setInterval(() => this.checkHealth(), Math.min(1000, this.timing.heartbeatMs));
    this.timer.unref(); this.watchdog.unref();
  }

  private checkHealth(): void {
    const now = Date.now();
    // Time this process itself did not run (the watchdog fired late: a long GC or batch, a starved
    // CPU) is not time the database failed to answer: the answers may be waiting to be read.
    const period = Math.min(1000, this.timing.heartbeatMs);
    const late = now - this.lastCheck - period;
    this.lastCheck = now;
    if (late > period) { this.pausedSinceOk += late; this.pausedSinceProbe += late; }
    const since = now - this.lastOk - this.pausedSinceOk;
    const probeAge = now - this.lastProbeOk - this.pausedSinceProbe;
    if (!this.healthy) return;
    const failing = this.lastErrorIsOutage && since > this.timing.unhealthyAfterMs;
    // Late but not failing: cut off only when the database has not taken a heartbeat for as long either.
    const stalled = since > this.timing.stalledAfterMs && probeAge > this.timing.stalledAfterMs;
    // A slow renewal (or sweep) must not make the heartbeat row look dead to the other servers.
    if (!failing && !stalled && probeAge > this.timing.heartbeatMs && since > this.timing.heartbeatMs) this.probe();
    if (!failing && !stalled && since > this.timing.stalledAfterMs && !this.slowLogged) {
      this.slowLogged = true;
      this.log.warn({ since: new Date(this.lastOk).toISOString() }, 'cluster: heartbeat renewals are slow but the database answers (busy); keeping the agents');
    }
    if (failing || stalled) {
      this.healthy = false;
      this.log.error({ since: new Date(this.lastOk).toISOString(), pausedMs: this.pausedSinceOk, err: this.lastError }, 'cluster: cannot reach the database; letting agents go to other servers');
      this.hooks.unhealthy();
    }
  }

  private beatRow(): ServerBeat {
    return { id: this.serverId, name: this.serverName, startedAt: this.startedAt, feedPosition: this.hooks.position(), ttlMs: this.timing.serverTtlMs, incarnation: this.incarnation };
  }

  /** Renew the heartbeat row (one at a time: the tick's and a probe's may overlap). */
  private beat(): Promise<void> {
    this.beating ??= this.renewBeat().finally(() => { this.beating = null; });
    return this.beating;
  }

  private async renewBeat(): Promise<void> {
    const r = await renewHeartbeat(this.db, this.beatRow());
    if (r === 'renewed') { this.displaced = false; return; }
    if (r === 'gone') {
      // Taken for dead (frozen, or cut off, past serverTtlMs): the others failed its unfinished jobs and
      // freed its hosts. What it received as the old incarnation is refused by the write fence; it
      // serves on as a new one.
      this.log.warn({ id: this.serverId }, 'cluster: the other servers took this one for dead (its heartbeat row is gone); requests it received before now are refused, and it rejoins');
      this.incarnation = randomUUID();
      await heartbeat(this.db, this.beatRow());
      this.displaced = false;
      return;
    }
    this.displaced = true;
    if (Date.now() - this.displacedLoggedAt > 60_000) {
      this.displacedLoggedAt = Date.now();
      this.log.error({ id: this.serverId }, 'cluster: another server process runs with this server\'s id (the same --data-dir, or a copy of it); this one holds no agents and refuses writes while it does');
    }
    throw new Displaced();
  }

  /**
   * The write fence the API checks in every write transaction before it commits (PostgreSQL): the
   * incarnation current when a request arrived must still be this server's live registration. A
   * server frozen past its heartbeat's expiry is buried by the others (its jobs failed as "nothing was
   * changed", its hosts freed); woken, the requests waiting in its sockets would otherwise be carried
   * out after their callers had retried elsewhere (a revoked rule came back that way).
   */
  readonly fence = {
    token: (): string => this.incarnation,
    holds: (trx: Q, token: string): Promise<boolean> => stillRegistered(trx, this.serverId, token),
  };

  /**
   * The heartbeat alone, while a tick's renewal or sweep is late (bounded by half the stall bound): the
   * other servers see this one alive (a renewal of 10,000 leases on a loaded machine took longer than
   * serverTtlMs, and they failed its jobs and freed its hosts), and its answer tells the stall rule that
   * the database is there.
   */
  private probe(): void {
    if (this.probing || this.stopped) return;
    this.probing = true;
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error('probe timed out')), Math.max(1000, this.timing.stalledAfterMs / 2)); });
    void Promise.race([this.beat(), bound])
      .then(() => { this.lastProbeOk = Date.now(); this.pausedSinceProbe = 0; }, () => {})
      .finally(() => { clearTimeout(timer); this.probing = false; });
  }

  private async tick(): Promise<void> {
    if (this.stopped || this.ticking) return;
    this.ticking = true;
    try {
      await this.beat();
      this.lastProbeOk = Date.now();
      this.pausedSinceProbe = 0;
      await this.renew();
      this.lastOk = Date.now();
      this.pausedSinceOk = 0;
      this.slowLogged = false;
      if (!this.healthy) {
        this.healthy = true;
        this.log.warn('cluster: the database is reachable again; accepting agents');
        this.hooks.healthy();
      }
      await this.sweep();
      this.lastError = '';
      this.lastErrorIsOutage = false;
    } catch (e) {
      if (e instanceof Displaced) {
        // Another process serves as this server: step back at once (agents go elsewhere, writes are fenced).
        if (this.healthy) { this.healthy = false; this.hooks.unhealthy(); }
        return;
      }
      const msg = e instanceof Error ? e.message : String(e);
      if (msg !== this.lastError) this.log.warn({ err: msg }, 'cluster: heartbeat failed');
      this.lastError = msg;
      this.lastErrorIsOutage = storeUnavailable(e);
      this.checkHealth();
    } finally {
      this.ticking = false;
      if (!this.stopped) { this.timer = setTimeout(() => this.tick(), this.timing.heartbeatMs); this.timer.unref(); }
    }
  }

  /** Renew what this server holds; take back what a sweep freed meanwhile; let go of what others took. */
  private async renew(): Promise<void> {
    const renewed = await this.leases(() => renewLeases(this.db, this.serverId, this.timing.leaseTtlMs));
    const held = this.hooks.held();
    // A lease without a session two renewals in a row (its release failed, say) goes: it would keep the
    // host looking held by a server that does not serve it.
    const orphans = new Set([...renewed].filter((id) => !held.has(id)));
    for (const id of orphans) if (this.orphans.has(id)) this.release(id);
    this.orphans = orphans;
    const missing = [...held].filter(([id]) => !renewed.has(id)).map(([hostId, h]) => ({ hostId, hostname: h.hostname }));
    if (missing.length) {
      const back = await this.leases(() => acquireLeases(this.db, this.serverId, missing, this.timing.leaseTtlMs, false));
      const lost = missing.filter((m) => !back.has(m.hostId)).map((m) => m.hostId);
      if (lost.length) { this.log.warn({ hosts: lost }, 'cluster: hosts now held by another server'); this.hooks.lost(lost); }
    }
    const byState = new Map<string, number[]>();
    for (const [id, h] of held) { const a = byState.get(h.state); if (a) a.push(id); else byState.set(h.state, [id]); }
    await reassertHostStates(this.db, this.serverId, byState);
  }

  private async sweep(): Promise<void> {
    const disconnected = await sweepLeases(this.db);
    if (disconnected) this.log.info({ hosts: disconnected }, 'cluster: hosts without a live lease marked Disconnected');
    for (const dead of await deadServers(this.db)) {
      if (dead.id === this.serverId) continue;
      const jobs = await buryServer(this.db, dead.id, this.hooks.jobFailure(dead), new Date().toISOString());
      if (jobs !== null) this.log.warn({ server: dead.name, id: dead.id, lastHeartbeat: new Date(dead.heartbeatAt).toISOString(), jobs }, 'cluster: a server stopped heartbeating; failed its unfinished jobs and freed its hosts');
    }
    if (++this.ticks % PRUNE_EVERY === 0) {
      const min = await minLivePosition(this.db);
      if (min !== null) await pruneFeed(this.db, min);
    }
    if (this.hooks.leases) this.hooks.leases(await liveLeases(this.db), await liveServerIds(this.db));
  }

  // ---- leases ----------------------------------------------------------------------------------

  private leases<T>(write: () => Promise<T>): Promise<T> {
    const p = this.leaseWrites.then(write);
    this.leaseWrites = p.catch(() => {});
    return p;
  }

  /** Take a host's lease for its agent's session (batched with concurrent calls). False: held for another agent. */
  acquire(hostId: number, hostname: string): Promise<boolean | 'superseded'> {
    return new Promise((resolve, reject) => {
      this.acquireQueue.push({ hostId, hostname, resolve, reject });
      if (!this.acquireTimer) this.acquireTimer = setTimeout(() => { this.acquireTimer = null; void this.flushAcquire(); }, 5);
    });
  }

  private async flushAcquire(): Promise<void> {
    const batch = this.acquireQueue;
    this.acquireQueue = [];
    // The same host twice in one batch (an agent reconnected at once): the last request wins.
    const last = new Map(batch.map((b) => [b.hostId, b]));
    try {
      const got = await this.leases(() => acquireLeases(this.db, this.serverId, [...last.values()].map((b) => ({ hostId: b.hostId, hostname: b.hostname })), this.timing.leaseTtlMs));
      for (const b of batch) b.resolve(last.get(b.hostId) !== b ? 'superseded' : got.has(b.hostId));
    } catch (e) {
      for (const b of batch) b.reject(e);
    }
  }

  /** This server let a host's session go (batched; its lease expires anyway if this fails). */
  release(hostId: number): void {
    this.releaseQueue.add(hostId);
    if (!this.releaseTimer) this.releaseTimer = setTimeout(() => { this.releaseTimer = null; this.flushRelease(); }, 20);
  }

  private flushRelease(): Promise<void> {
    const ids = [...this.releaseQueue].filter((id) => !this.hooks.held().has(id));   // reconnected meanwhile: keep
    this.releaseQueue.clear();
    if (!ids.length) return this.releasing;
    this.releasing = this.releasing.then(() => this.leases(() => releaseLeases(this.db, this.serverId, ids, new Date().toISOString())))
      .catch((e) => this.log.warn({ err: e instanceof Error ? e.message : String(e), hosts: ids.length }, 'cluster: could not release host leases (they expire)'));
    return this.releasing;
  }

  /** Graceful stop: every lease and the heartbeat row go, so other servers need not wait for them to expire. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.watchdog) clearInterval(this.watchdog);
    if (this.acquireTimer) { clearTimeout(this.acquireTimer); this.acquireTimer = null; await this.flushAcquire(); }
    if (this.releaseTimer) { clearTimeout(this.releaseTimer); this.releaseTimer = null; }
    await this.flushRelease();
    try {
      await releaseAllLeases(this.db, this.serverId, new Date().toISOString());
      await removeServer(this.db, this.serverId);
    } catch (e) {
      this.log.warn({ err: e instanceof Error ? e.message : String(e) }, 'cluster: could not remove this server\'s rows (they expire)');
    }
  }
}
