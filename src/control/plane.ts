// The control plane: CloudState in memory, advanced per batch of published changes; per-host desired
// state and revision (Fleet); agent sessions; sync status in the store.
import { createHash } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import websocket from '@fastify/websocket';
import type { WebSocket } from 'ws';
import type { Logger } from 'pino';
import type { Change } from '../model/changes.js';
import type { Db } from '../store/db.js';
import { Fleet, PLACED_STATES, type Delta, type HostEntry } from './fleet.js';
import { Journal } from './journal.js';
import { loadCloudState, loadHosts, reloadPart, type HostRow } from './load.js';
import { AGENT_PATH, PROTOCOL_VERSION, type AgentMessage, type PreflightFinding, type RepairReport, type ServerMessage } from './protocol.js';
import { StatusWriter } from './status.js';
import { deltaJson, snapshotJson } from './wire.js';

export const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/** Coalescing: a batch runs once changes pause for QUIET ms, or at the latest MAX_WAIT ms after the first. */
const QUIET_MS = 15;
const MAX_WAIT_MS = 100;
const HELLO_TIMEOUT_MS = 10_000;
const KEEPALIVE_MS = 20_000;
const MAX_REPAIRS_KEPT = 20;

interface Session {
  ws: WebSocket;
  hostId: number;
  hostname: string;
  ready: boolean;
  alive: boolean;
}

interface HostStatus { preflight: PreflightFinding[]; repairs: RepairReport[]; repairCount: number }

export interface ControlStats { batches: number; changes: number; pushes: Map<number, number>; snapshots: number; deltas: number }

export class ControlPlaneImpl {
  readonly fleet: Fleet;
  private readonly status: StatusWriter;
  private readonly sessions = new Map<number, Session>();
  private readonly byToken = new Map<string, number>();
  private readonly hostStatus = new Map<number, HostStatus>();
  /** Last sync state written per VM (skips redundant writes). */
  private readonly vmSync = new Map<number, string>();
  /** Per VM: the last per-VM result an agent acked, at which revision. */
  private readonly vmAck = new Map<number, { hostId: number; rev: number; ok: boolean; error: string | null }>();
  private queue: Change[] = [];
  private firstAt = 0;
  private lastAt = 0;
  private timer: NodeJS.Timeout | null = null;
  private lock: Promise<void> = Promise.resolve();
  private keepalive: NodeJS.Timeout | null = null;
  private closed = false;
  private lastFlushMs = 0;
  readonly stats: ControlStats = { batches: 0, changes: 0, pushes: new Map(), snapshots: 0, deltas: 0 };

  private constructor(private readonly db: Db, private readonly log: Logger, fleet: Fleet) {
    this.fleet = fleet;
    this.status = new StatusWriter(db, (e) => this.log.error({ err: e }, 'control: status write failed'));
  }

  static async create(db: Db, log: Logger): Promise<ControlPlaneImpl> {
    const t0 = Date.now();
    const state = await loadCloudState(db);
    const cp = new ControlPlaneImpl(db, log, new Fleet(state));
    const hosts = await loadHosts(db);
    for (const h of hosts) if (!h.removed) cp.addHost(h, h.desiredRevision + 1);
    cp.fleet.buildAll();
    for (const h of cp.fleet.hosts.values()) {
      cp.fleet.advance(h.id);
      // Nothing given out by an earlier run is trusted for deltas: agents get a snapshot.
      h.floor = h.revision;
      cp.status.host(h.id, { desired_revision: h.revision, state: 'Disconnected' });
    }
    await cp.adoptPendingRemovals();
    await cp.status.flush();
    cp.keepalive = setInterval(() => cp.pingAll(), KEEPALIVE_MS);
    cp.keepalive.unref();
    log.info({ hosts: cp.fleet.hosts.size, vms: state.vms.size, placed: cp.fleet.policies.size, ms: Date.now() - t0 }, 'control plane loaded');
    return cp;
  }

  /**
   * VMs the store shows Pending that are placed nowhere: an earlier run took them off a host and
   * stopped before it saw (or stored) the ack. That host still owes the removal; the first state it
   * acks from now on has no such VM (after a restart every agent gets a snapshot), which confirms it.
   * Without a known host nothing can still enforce them: Synced.
   */
  private async adoptPendingRemovals(): Promise<void> {
    const rows = await this.db.selectFrom('vms').select(['id', 'host_id', 'last_host_id', 'state'])
      .where('removed', 'is', null).where('sync_state', '=', 'Pending').execute();
    for (const r of rows) {
      // Placed VMs are decided by their host's ack (also when their policy failed to compile).
      if (r.host_id !== null && PLACED_STATES.has(r.state)) continue;
      const h = this.fleet.hosts.get(r.host_id ?? r.last_host_id ?? -1);
      if (h) this.fleet.owesRemoval(h, r.id, h.revision);
      else this.setVmSync(r.id, 'Synced', null);
    }
  }

  private addHost(h: HostRow, revision: number): HostEntry {
    const e = this.fleet.addHost({ id: h.id, uuid: h.uuid, name: h.name, tokenHash: h.tokenHash, revision });
    this.byToken.set(h.tokenHash, h.id);
    return e;
  }

  // ---- changes -------------------------------------------------------------------------------

  publish(changes: Change[]): void {
    if (this.closed || !changes.length) return;
    this.queue.push(...changes);
    const now = Date.now();
    this.lastAt = now;
    if (!this.firstAt) this.firstAt = now;
    if (!this.timer) this.timer = setTimeout(() => this.tick(), QUIET_MS);
  }

  private tick(): void {
    this.timer = null;
    const now = Date.now();
    if (now - this.lastAt < QUIET_MS && now - this.firstAt < MAX_WAIT_MS) {
      this.timer = setTimeout(() => this.tick(), Math.max(1, Math.min(QUIET_MS - (now - this.lastAt), MAX_WAIT_MS - (now - this.firstAt))));
      return;
    }
    this.firstAt = 0;
    void this.serial(() => this.runBatch());
  }

  /** Batches and session resyncs run one at a time, so both see one consistent fleet. */
  private serial(fn: () => Promise<void>): Promise<void> {
    const p = this.lock.then(fn).catch((e) => this.log.error({ err: e }, 'control: batch failed'));
    this.lock = p;
    return p;
  }

  /** Wait until every change published so far is processed and pushed (tests, benchmarks). */
  async settle(): Promise<void> {
    while (this.queue.length || this.timer) {
      if (this.timer) { clearTimeout(this.timer); this.timer = null; this.firstAt = 0; await this.serial(() => this.runBatch()); }
      await this.lock;
    }
    await this.lock;
  }

  private async runBatch(): Promise<void> {
    const changes = this.queue;
    this.queue = [];
    if (!changes.length) return;
    this.stats.batches++;
    this.stats.changes += changes.length;
    const t0 = performance.now();
    const groupIds = new Set<number>();
    const vmIds = new Set<number>();
    const hostIds = new Set<number>();
    for (const c of changes) {
      switch (c.kind) {
        case 'rules': case 'group': groupIds.add(c.groupId); break;
        case 'membership': case 'vmState': case 'nic': vmIds.add(c.vmId); break;
        case 'placement': vmIds.add(c.vmId); break;
        case 'host': hostIds.add(c.hostId); break;
      }
    }
    const dirty = new Set<number>();
    if (hostIds.size) for (const h of await this.reloadHosts([...hostIds])) dirty.add(h);
    if (groupIds.size || vmIds.size) {
      const reload = await reloadPart(this.db, [...groupIds], [...vmIds]);
      const journal = new Journal(this.fleet.state);
      journal.apply(reload);
      const impact = this.fleet.impact(changes, journal.before(), vmIds, groupIds);
      for (const h of this.fleet.recompile(impact)) dirty.add(h);
      for (const e of this.fleet.compileErrors.splice(0)) {
        if (e.vmId < 0) this.log.error({ err: e.error }, 'control: change analysis failed; using the conservative analysis');
        else this.log.error({ vm: e.vmId, err: e.error }, 'control: cannot compile VM policy; its host keeps the previous rules');
      }
    }
    // The API may have written these VMs' sync state itself: forget what we think the store holds.
    for (const v of vmIds) this.vmSync.delete(v);
    const t1 = performance.now();
    const pushed = await this.pushDirty(dirty, vmIds);
    this.log.debug({ changes: changes.length, hosts: pushed, computeMs: +(t1 - t0).toFixed(1), flushMs: +this.lastFlushMs.toFixed(1), totalMs: +(performance.now() - t0).toFixed(1) }, 'control: batch');
  }

  private async pushDirty(dirty: Iterable<number>, touchedVms: Iterable<number> = []): Promise<number> {
    const out: [number, Delta][] = [];
    const refresh = new Set<number>(touchedVms);
    for (const h of dirty) {
      const d = this.fleet.advance(h);
      if (!d) continue;
      out.push([h, d]);
      this.status.host(h, { desired_revision: d.revision });
      const entry = this.fleet.hosts.get(h)!;
      for (const p of d.upsertVms) refresh.add(entry.vms.get(p.vmId)!.vmId);
      for (const vmId of entry.removals.keys()) refresh.add(vmId);
    }
    for (const v of refresh) this.refreshVmSync(v);
    // The revision is stored before any agent sees it (a restarted server never reuses one).
    const tf = performance.now();
    if (out.length) await this.status.flush('desired');
    this.lastFlushMs = performance.now() - tf;
    for (const [h, d] of out) {
      const s = this.sessions.get(h);
      if (s?.ready) {
        this.sendText(s, deltaJson(d));
        this.stats.deltas++;
        this.stats.pushes.set(h, (this.stats.pushes.get(h) ?? 0) + 1);
      }
    }
    return out.length;
  }

  /** A VM's sync state from what is desired and what its host(s) acked. */
  private refreshVmSync(vmId: number): void {
    const hostId = this.fleet.vmHost.get(vmId);
    const policy = this.fleet.policies.get(vmId);
    if (hostId !== undefined && policy) {
      const h = this.fleet.hosts.get(hostId);
      const e = h?.vms.get(policy.vmId);
      const a = this.vmAck.get(vmId);
      if (!h || !e || e.rev > h.acked || !a || a.hostId !== hostId || a.rev < e.rev) this.setVmSync(vmId, 'Pending', null);
      else this.setVmSync(vmId, a.ok ? 'Synced' : 'Failed', a.ok ? null : a.error);
      return;
    }
    // Not placed: synced once every host it left has acked its removal.
    if (this.fleet.pendingRemovals.has(vmId)) this.setVmSync(vmId, 'Pending', null);
    else if (this.fleet.state.vms.has(vmId)) this.setVmSync(vmId, 'Synced', null);
  }

  private setVmSync(vmId: number, state: 'Synced' | 'Pending' | 'Failed', error: string | null): void {
    const key = `${state}\u0000${error ?? ''}`;
    if (this.vmSync.get(vmId) === key) return;
    this.vmSync.set(vmId, key);
    this.status.vm(vmId, state, error);
  }

  /** Re-read host rows (added, removed, token changed); returns hosts to advance. */
  private async reloadHosts(ids: number[]): Promise<number[]> {
    const rows = new Map((await loadHosts(this.db, ids)).map((h) => [h.id, h]));
    const touched: number[] = [];
    for (const id of ids) {
      const row = rows.get(id);
      const cur = this.fleet.hosts.get(id);
      if (!row || row.removed) {
        if (cur) {
          this.byToken.delete(cur.tokenHash);
          for (const vmId of [...cur.removals.keys()]) { this.fleet.clearRemoval(cur, vmId); this.refreshVmSync(vmId); }
          this.fleet.hosts.delete(id);
          this.hostStatus.delete(id);
        }
        this.dropSession(id, 4403, 'host removed');
        continue;
      }
      if (!cur) { this.addHost(row, row.desiredRevision); touched.push(id); continue; }
      cur.name = row.name;
      if (cur.tokenHash !== row.tokenHash) {
        this.byToken.delete(cur.tokenHash);
        cur.tokenHash = row.tokenHash;
        this.byToken.set(row.tokenHash, id);
        this.dropSession(id, 4401, 'token changed');
      }
      touched.push(id);
    }
    return touched;
  }

  // ---- sessions ------------------------------------------------------------------------------

  async register(app: FastifyInstance): Promise<void> {
    if (!app.hasDecorator('websocketServer')) await app.register(websocket, { options: { maxPayload: 256 * 1024 * 1024 } });
    await app.register(async (scope) => {
      scope.get(AGENT_PATH, { websocket: true }, (socket, req) => this.accept(socket, req.ip));
    });
  }

  private send(s: { ws: WebSocket }, m: ServerMessage): void { this.sendText(s, JSON.stringify(m)); }

  private sendText(s: { ws: WebSocket }, text: string): void {
    if (s.ws.readyState !== s.ws.OPEN) return;
    s.ws.send(text);
  }

  private refuse(ws: WebSocket, code: number, message: string): void {
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify({ type: 'error', code, message } satisfies ServerMessage));
    ws.close(4000 + (code % 1000), message.slice(0, 100));
  }

  /** A new agent connection: the first message must be a hello with a known token. */
  accept(ws: WebSocket, remote: string): void {
    let session: Session | null = null;
    let greeting = false;
    const early: AgentMessage[] = [];
    const helloTimer = setTimeout(() => { if (!session) this.refuse(ws, 408, 'no hello received'); }, HELLO_TIMEOUT_MS);
    ws.on('pong', () => { if (session) session.alive = true; });
    ws.on('message', (data) => {
      let m: AgentMessage;
      try { m = JSON.parse(String(data)) as AgentMessage; } catch { this.refuse(ws, 400, 'malformed message'); return; }
      if (!session) {
        if (greeting) { early.push(m); return; }   // sent before the hello was answered: handle after it
        if (m?.type !== 'hello') { this.refuse(ws, 400, 'expected hello'); return; }
        clearTimeout(helloTimer);
        greeting = true;
        void this.hello(ws, m, remote).then((s) => {
          session = s;
          if (s) for (const e of early.splice(0)) this.onMessage(s, e);
        }, (e) => { this.log.error({ err: e }, 'control: hello failed'); this.refuse(ws, 500, 'internal error'); });
        return;
      }
      try { this.onMessage(session, m); } catch (e) { this.log.warn({ err: e, host: session.hostId }, 'control: bad agent message'); }
    });
    ws.on('close', () => {
      clearTimeout(helloTimer);
      if (session && this.sessions.get(session.hostId) === session) {
        this.sessions.delete(session.hostId);
        if (this.fleet.hosts.has(session.hostId)) this.status.host(session.hostId, { state: 'Disconnected', last_contact: new Date().toISOString() });
        this.log.info({ host: session.hostId, hostname: session.hostname }, 'agent disconnected');
      }
    });
    ws.on('error', () => {});
  }

  private async hello(ws: WebSocket, m: Extract<AgentMessage, { type: 'hello' }>, remote: string): Promise<Session | null> {
    if (m.version !== PROTOCOL_VERSION) { this.refuse(ws, 400, `unsupported protocol version ${m.version}, expected ${PROTOCOL_VERSION}`); return null; }
    const hash = sha256(String(m.token ?? ''));
    let hostId = this.byToken.get(hash);
    if (hostId === undefined) {
      // A host added a moment ago may not have reached us as a change yet.
      const row = (await loadHosts(this.db)).find((h) => h.tokenHash === hash && !h.removed);
      if (row && !this.fleet.hosts.has(row.id)) await this.serial(async () => { if (!this.fleet.hosts.has(row.id)) this.addHost(row, row.desiredRevision); });
      hostId = row ? row.id : undefined;
    }
    if (hostId === undefined) {
      this.log.warn({ remote, hostname: m.hostname }, 'agent refused: unknown token');
      this.refuse(ws, 401, 'unknown agent token');
      return null;
    }
    const host = this.fleet.hosts.get(hostId)!;
    const prev = this.sessions.get(hostId);
    if (prev && prev.ws.readyState === prev.ws.OPEN && prev.hostname !== m.hostname) {
      this.log.warn({ remote, hostname: m.hostname, host: host.name, connected: prev.hostname }, 'agent refused: token already in use by another connected agent');
      this.refuse(ws, 409, `token of host ${host.name} is in use by another agent`);
      return null;
    }
    if (prev) { prev.ws.close(4000, 'replaced by a new session'); }
    const s: Session = { ws, hostId, hostname: String(m.hostname ?? ''), ready: false, alive: true };
    this.sessions.set(hostId, s);
    this.send(s, { type: 'welcome', hostId: host.uuid, hostName: host.name });
    this.status.host(hostId, { state: this.hostState(hostId), last_contact: new Date().toISOString() });
    this.log.info({ host: host.name, hostname: s.hostname, revision: m.revision, remote }, 'agent connected');
    await this.resync(s, m.revision);
    return s;
  }

  /** Bring a session up to date from the revision the agent holds (inside the serial lock). */
  private resync(s: Session, revision: number | null): Promise<void> {
    return this.serial(async () => {
      if (this.sessions.get(s.hostId) !== s || !this.fleet.hosts.has(s.hostId)) return;
      const d = this.fleet.since(s.hostId, revision);
      if (d) { this.sendText(s, deltaJson(d)); this.stats.deltas++; } else { this.sendText(s, snapshotJson(this.fleet.snapshot(s.hostId))); this.stats.snapshots++; }
      this.stats.pushes.set(s.hostId, (this.stats.pushes.get(s.hostId) ?? 0) + 1);
      s.ready = true;
    });
  }

  private onMessage(s: Session, m: AgentMessage): void {
    s.alive = true;
    const now = new Date().toISOString();
    switch (m.type) {
      case 'hello': void this.resync(s, m.revision); break;   // the agent asks to resync on the same channel
      case 'ping': this.send(s, { type: 'pong' }); this.status.host(s.hostId, { last_contact: now }); break;
      case 'ack': this.onAck(s, m, now); break;
      case 'report': this.onReport(s, m, now); break;
      default: break;
    }
  }

  private onAck(s: Session, m: Extract<AgentMessage, { type: 'ack' }>, now: string): void {
    const host = this.fleet.hosts.get(s.hostId);
    if (!host || typeof m.revision !== 'number') return;
    const rev = Math.min(m.revision, host.revision);
    host.acked = Math.max(host.acked, rev);
    this.status.host(s.hostId, { acked_revision: rev, last_contact: now });
    for (const [uuid, r] of Object.entries(m.vms ?? {})) {
      const e = host.vms.get(uuid);
      if (!e || e.rev > m.revision) continue;   // acked an older version than the one now desired: still pending
      this.vmAck.set(e.vmId, { hostId: s.hostId, rev: m.revision, ok: !!r.ok, error: r.ok ? null : String(r.error ?? 'failed').slice(0, 1000) });
      this.refreshVmSync(e.vmId);
    }
    for (const [vmId, removedAt] of host.removals) {
      if (removedAt > m.revision) continue;
      this.fleet.clearRemoval(host, vmId);
      if (this.vmAck.get(vmId)?.hostId === s.hostId) this.vmAck.delete(vmId);
      this.refreshVmSync(vmId);
    }
  }

  private onReport(s: Session, m: Extract<AgentMessage, { type: 'report' }>, now: string): void {
    const st = this.hostStatus.get(s.hostId) ?? { preflight: [], repairs: [], repairCount: 0 };
    st.preflight = Array.isArray(m.preflight) ? m.preflight : [];
    const repairs = Array.isArray(m.repairs) ? m.repairs : [];
    if (repairs.length) {
      st.repairs = [...st.repairs, ...repairs].slice(-MAX_REPAIRS_KEPT);
      st.repairCount += repairs.reduce((n, r) => n + (Number(r.count) || 1), 0);
      this.log.warn({ host: s.hostId, repairs }, 'agent repaired drift');
    }
    this.hostStatus.set(s.hostId, st);
    const patch: Parameters<StatusWriter['host']>[1] = { preflight: JSON.stringify(st.preflight), state: this.hostState(s.hostId), last_contact: now };
    if (repairs.length) {
      patch.repairs = JSON.stringify(st.repairs);
      // repair_count is cumulative in the store across server restarts.
      void this.bumpRepairs(s.hostId, repairs.reduce((n, r) => n + (Number(r.count) || 1), 0));
    }
    this.status.host(s.hostId, patch);
  }

  private async bumpRepairs(hostId: number, n: number): Promise<void> {
    try {
      await this.db.updateTable('hosts').set((eb) => ({ repair_count: eb('repair_count', '+', n) })).where('id', '=', hostId).execute();
    } catch (e) { this.log.error({ err: e }, 'control: repair count write failed'); }
  }

  private hostState(hostId: number): string {
    const st = this.hostStatus.get(hostId);
    if (st?.preflight.some((f) => !f.ok && !f.fixed)) return 'Alert';
    return 'Up';
  }

  private dropSession(hostId: number, code: number, reason: string): void {
    const s = this.sessions.get(hostId);
    if (!s) return;
    this.sessions.delete(hostId);
    s.ws.close(code, reason);
  }

  private pingAll(): void {
    for (const s of this.sessions.values()) {
      if (!s.alive) { s.ws.terminate(); continue; }
      s.alive = false;
      try { s.ws.ping(); } catch { /* closed */ }
    }
  }

  connectedHosts(): number { let n = 0; for (const s of this.sessions.values()) if (s.ready) n++; return n; }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    if (this.keepalive) clearInterval(this.keepalive);
    await this.lock;
    for (const s of this.sessions.values()) s.ws.close(1001, 'server shutting down');
    this.sessions.clear();
    await this.status.close();
  }
}
