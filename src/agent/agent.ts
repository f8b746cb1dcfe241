// The agent (DESIGN.md §4): holds its host's desired state, applies it through a dataplane, acks per
// VM, persists it (fail static), reconnects with backoff, and reconciles the kernel periodically.
//
// Several servers (DESIGN.md §6): the agent is given every server's URL, tries them in random order
// (or as listed), and moves to the next one when its server closes the connection, refuses it, or
// stops answering keepalives; the first attempts after losing a server go quickly (a short jittered
// pause), then, once every server has failed in turn, with exponential backoff and jitter. Rules stay
// in the kernel meanwhile (fail static). Every server message is validated before use; one that does
// not match the protocol ends that connection (the agent moves on). Each process says who it is in its
// hellos (a random instance id) so servers can tell a restarted agent from a second one on the same
// token; an agent whose session keeps being taken by another connection says so and backs off long.
//
// Per-rule hits (DESIGN.md §8): every `countersMs` the agent reads its VMs' rule counters from the
// dataplane and sends the non-zero deltas (hits.ts) in `hits` messages; while it has no server they
// wait (bounded) for the next session. Metrics (metrics.ts) are fed where the work is done.
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import WebSocket from 'ws';
import type { Logger } from 'pino';
import { DataplaneError, type ApplyResult, type Dataplane, type HostPorts } from '../dataplane/backend.js';
import type { HostDesiredState } from '../policy/ir.js';
import {
  AGENT_PATH, CLOSE_HELD_ELSEWHERE, closeReason, CLOSE_REPLACED, REPLACED_BY_ANOTHER_AGENT, MAX_ERROR_CHARS, MAX_FINDINGS, MAX_FINDING_CHARS, MAX_REPAIRS_PER_REPORT, MAX_REPAIR_CHARS, PROTOCOL_VERSION, SERVER_FRAME_MAX_BYTES,
  decodeServerMessage, type AgentMessage, type DropLogSettings, type PreflightFinding, type RepairReport, type ServerMessage,
} from '../protocol/index.js';
import { DROP_LOG_GROUP, type DropLogConfig } from '../dataplane/plan/index.js';
import { DropLog, portIndex, type PortIndex } from './drop-log.js';
import { loadState, notOurs, saveState, tokenSha256 } from './state-file.js';
import { applyDelta, samePorts } from './merge.js';
import type { Conntrack } from '../dataplane/conntrack.js';
import { AgentConnections, restrictedVms, type CutOutcome } from './connections.js';
import { HitTracker } from './hits.js';
import type { AgentMetrics } from './metrics.js';
import type { LinkWatch } from './link-watch.js';

export interface AgentOptions {
  /**
   * ws(s):// or http(s):// URL of the server, or several separated by commas (or a list); AGENT_PATH
   * is added to a URL without a path.
   */
  server: string | string[];
  /** 'random' (default): try the servers in a random order; 'listed': in the order given. */
  serverOrder?: 'random' | 'listed';
  /** Ping period; a server silent for three periods is given up for the next one. */
  keepaliveMs?: number;
  token: string;
  hostname: string;
  /** Where the held desired state is persisted; null: memory only (simulations). */
  stateDir: string | null;
  dataplane: Dataplane;
  /** Port discovery: where each NIC of the state is on the host. */
  discover: (state: HostDesiredState) => Promise<HostPorts>;
  /** Preflight checks (fix what may be fixed; `bridges`: the VM bridges of the last apply); null: none (simulations). */
  preflight: ((bridges: string[]) => Promise<PreflightFinding[]>) | null;
  reconcileMs: number;
  log: Logger;
  backoffMinMs?: number;
  backoffMaxMs?: number;
  /** Delay of the extra reconcile after each write. */
  afterWriteMs?: number;
  /**
   * Other backends whose leftovers are removed once `dataplane` holds a real desired state (a host
   * switching backends: the new one is in place before the old one goes, so there is no window).
   */
  retire?: Dataplane[];
  /**
   * The drop log (issue 11): read NFLOG with ulogd in this namespace while the server's settings turn
   * it on. Absent: drops are never logged (simulations: the null dataplane has no kernel).
   */
  dropLog?: { netns: string | null; command?: string; onLost?: (n: number) => void };
  /**
   * The host's conntrack table: listed for the server's questions (revoke dry runs), and entries no
   * rule allows any more deleted after applies while the server says so (connections.ts). Absent:
   * questions are answered as unanswerable and nothing is cut.
   */
  conntrack?: Conntrack | null;
  /** Period of reading the rule counters for per-rule hits; absent or 0: not read. */
  countersMs?: number;
  /** Where the agent's Prometheus metrics are counted (--metrics-listen); absent: nowhere. */
  metrics?: AgentMetrics;
  /**
   * Watch the host's links (link-watch.ts), calling back after changes: a VM's tap that appears gets its
   * rules at once. Absent: new ports are found by the reconcile pass (simulations).
   */
  watchLinks?: (onChange: () => void) => LinkWatch;
  /**
   * Watch Palisade's own tables in the kernel (link-watch.ts, nftables), calling back after changes:
   * someone else's change to them is checked and repaired at once. Absent: at the next reconcile.
   */
  watchRuleset?: (onChange: () => void) => LinkWatch;
}

/** A ruleset watcher's drift checks at most this often (another program rewriting the tables in a loop). */
const TAMPER_CHECK_MIN_MS = 1000;

/** The servers of a `--server` value: comma-separated, trimmed, each checked to be a URL. */
export function parseServers(value: string | string[]): string[] {
  const list = (Array.isArray(value) ? value : [value]).flatMap((v) => v.split(',')).map((v) => v.trim()).filter(Boolean);
  if (!list.length) throw new Error('no server URL given');
  for (const u of list) {
    let url: URL;
    try { url = new URL(agentUrl(u)); } catch { throw new Error(`--server: ${JSON.stringify(u)} is not a URL (e.g. http://mgmt:8080)`); }
    if (url.protocol !== 'ws:' && url.protocol !== 'wss:') throw new Error(`--server: ${JSON.stringify(u)} must be http, https, ws or wss`);
  }
  return [...new Set(list)];
}

export function agentUrl(server: string): string {
  const u = new URL(server);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.pathname === '/' || u.pathname === '') u.pathname = AGENT_PATH;
  return u.toString();
}

/**
 * A text as the server takes it in a report or ack: within `max` characters and without U+0000 (the
 * protocol refuses it, as PostgreSQL cannot store it; a tool's output or a /proc file may carry one).
 */
const reportable = (t: string, max: number): string => t.replaceAll('\u0000', '\uFFFD').slice(0, max);

const KEEPALIVE_MS = 10_000;
/** "No server could be reached" is logged at most once per this period. */
const UNREACHABLE_LOG_EVERY_MS = 60_000;
/** Taken off its host's session twice within this time: a second agent uses this host's token (wasDisplaced). */
const DISPLACED_WINDOW_MS = 300_000;
/** The counter reader's duty cycle bound: it waits at least this many times its last reading's duration. */
const COUNTERS_DUTY = 20;

export class Agent extends EventEmitter {
  state: HostDesiredState | null = null;
  /** Revision whose apply finished (success or per-VM failures) and was acked (if connected). */
  appliedRevision: number | null = null;
  lastResult: ApplyResult | null = null;
  /** The error of the last apply when it failed as a whole (a tool failed), else null. */
  lastApplyError: string | null = null;
  connected = false;
  hostId: string | null = null;
  repairCount = 0;
  /** bytesIn: size of the server's snapshot and delta messages received (what a push costs on the wire). */
  readonly counters = { snapshots: 0, deltas: 0, applies: 0, connects: 0, bytesIn: 0 };

  private ws: WebSocket | null = null;
  /** Another agent process with this host's token holds its session (a 409 saying so): no kernel writes until a welcome. */
  standingDown = false;
  /** The servers in the order they are tried, and the one tried last. */
  readonly servers: string[];
  private current = -1;
  /** The server of the live session (null: none). */
  server: string | null = null;
  private attempt = 0;
  /** This process's id in its hellos: servers tell a restarted agent from a second one on the same token. */
  readonly instance = randomUUID();
  /** The last connection error (server: message), for the "no server could be reached" line. */
  private lastConnectError: string | null = null;
  private unreachableLoggedAt = -Infinity;
  /** Connection attempts that ended before a welcome, since the last welcome. */
  private failedInRow = 0;
  /** Why the held state could not be saved (null: saved, or no state dir). */
  private stateSaveError: string | null = null;
  /** When a server ended this agent's live session because another connection took its host (recent ones). */
  private displacedAt: number[] = [];
  private stopped = false;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private reconcileTimer: NodeJS.Timeout | null = null;
  private soonTimer: NodeJS.Timeout | null = null;
  private pingTimer: NodeJS.Timeout | null = null;
  private lastHeard = 0;
  private savedRevision: number | null = null;
  private lastPorts: HostPorts | null = null;
  /** The last drift check's warnings (logged when they change). */
  private lastObserveWarning = '';
  private findings: PreflightFinding[] = [];
  /** The managed bridges the findings were judged for (the forward-drop check asks whether they pass). */
  private findingsBridges: string | null = null;
  private sentFindings = '';
  private pendingRepairs: RepairReport[] = [];
  private work: Promise<void> = Promise.resolve();
  private linkWatch: LinkWatch | null = null;
  private rulesetWatch: LinkWatch | null = null;
  private tamperTimer: NodeJS.Timeout | null = null;
  private lastTamperCheck = 0;
  private portCheckQueued = false;
  private applyWanted = false;
  private applyQueued = false;
  /** Other backends still to be removed from the host (see AgentOptions.retire). */
  private retiring: Dataplane[] = [];
  private readonly retireTries = new Map<Dataplane, number>();
  /** The server's drop-log settings (null until a server sent them: no log rules meanwhile). */
  dropLogSettings: DropLogSettings | null = null;
  /** The NFLOG reader while the drop log is on. */
  dropLogReader: DropLog | null = null;
  private ports: PortIndex = new Map();
  /** Conntrack questions of the server and cuts after applies (connections.ts). */
  readonly connections: AgentConnections;
  /** The state of the last apply that succeeded (the kernel holds its rules); null: none yet. */
  private applied: HostDesiredState | null = null;
  /** security.group.revoke.cut.connections as this session's server said (connectionSettings); off until told. */
  cutOnRevoke = false;
  /** Per-rule hits: counter deltas waiting for a server (null: counters are not read). */
  hits: HitTracker | null = null;
  private countersTimer: NodeJS.Timeout | null = null;
  private countersFailing = false;
  /** How long the last counter reading took (ms): the next one waits at least COUNTERS_DUTY times that. */
  private lastReadMs = 0;
  /** Hits messages sent and packets they carried (tests, logs). */
  readonly hitStats = { readings: 0, messages: 0, packets: 0 };

  constructor(private readonly o: AgentOptions) {
    super();
    this.connections = new AgentConnections(o.conntrack ?? null, o.log, () => ({ state: this.applied, ports: this.lastPorts }),
      (c: CutOutcome) => this.emit('connectionsCut', c));
    this.retiring = [...(o.retire ?? [])];
    const list = parseServers(o.server);
    if (o.serverOrder !== 'listed') {
      for (let i = list.length - 1; i > 0; i--) { const j = Math.floor(Math.random() * (i + 1)); [list[i], list[j]] = [list[j], list[i]]; }
    }
    this.servers = list;
  }

  /**
   * Fail static: preflight (the bridge sysctls must be on for rules to matter), then re-apply what is
   * on disk when it was written for this agent's hostname and token (state-file.ts), and only then
   * dial the server.
   */
  async start(): Promise<void> {
    await this.runPreflight();
    if (this.o.stateDir) {
      let held = null;
      try { held = await loadState(this.o.stateDir); } catch (e) {
        // Unreadable: say so loudly and carry on; the server's snapshot replaces it.
        this.o.log.error({ err: e instanceof Error ? e.message : String(e) }, 'agent: the saved desired state cannot be read; waiting for the server');
      }
      const other = held && notOurs(held, this.o.hostname, this.o.token);
      if (held && other) {
        // A cloned hypervisor's copy of its original's file: enforcing those VMs here would be wrong,
        // and before the welcome nothing else could tell. The server's snapshot replaces the file.
        this.o.log.error({ stateDir: this.o.stateDir, savedFor: held.host ?? null, hostname: this.o.hostname },
          `agent: the saved desired state is not this host's (${other}); not applied: VM ports are closed until the server answers`);
      } else if (held) {
        this.state = held.state;
        this.savedRevision = held.state.revision;
        this.o.log.info({ revision: held.state.revision, vms: held.state.vms.length }, 'agent: re-applying the saved desired state');
        await this.requestApply();
      }
    }
    if (!this.state) await this.applyFailClosed();
    if (this.o.countersMs && this.o.dataplane.ruleCounts) {
      // A saved state means the kernel's rules (and their counts) survived the restart: the first
      // reading is a baseline. Without one, every port was closed and every rule is new.
      this.hits = new HitTracker({ baseline: this.state !== null });
      if (this.state) await this.readCounters();
      this.armCounters();
    }
    this.linkWatch = this.o.watchLinks?.(() => this.linksChanged()) ?? null;
    this.rulesetWatch = this.o.watchRuleset?.(() => this.rulesetChanged()) ?? null;
    this.connect();
    this.armReconcile();
  }

  /**
   * The host's links changed (a VM's tap came or went): when the state's ports moved, apply now rather
   * than at the next reconcile. Not drift: ports come and go with the VMs' lifecycle.
   */
  private linksChanged(): void {
    if (this.stopped || this.portCheckQueued) return;
    this.portCheckQueued = true;
    void this.serial(async () => {
      this.portCheckQueued = false;
      const state = this.state;
      // an apply already queued discovers the ports itself; before the first one there is nothing to follow
      if (!state || this.stopped || this.applyWanted || this.lastPorts === null) return;
      await this.followPorts(state, await this.o.discover(state));
    });
  }

  /**
   * Someone else changed Palisade's tables in the kernel (the watcher leaves out the agent's own
   * writes): a `nft flush ruleset` or an edit, checked (and repaired) now rather than at the next pass.
   */
  private rulesetChanged(): void {
    if (this.stopped || this.standingDown || this.tamperTimer) return;
    const wait = Math.max(0, this.lastTamperCheck + TAMPER_CHECK_MIN_MS - Date.now());
    this.tamperTimer = setTimeout(() => {
      this.tamperTimer = null;
      this.lastTamperCheck = Date.now();
      void this.reconcile({ full: true });
    }, wait);
  }

  /**
   * VM ports came or went since the last apply (`ports`: discovered now): apply with them. A new input,
   * not drift: what the kernel holds is judged against the new ports on the next pass. Returns whether
   * they had moved.
   */
  private async followPorts(state: HostDesiredState, ports: HostPorts): Promise<boolean> {
    if (this.lastPorts === null || samePorts(ports, this.lastPorts)) return false;
    this.o.log.info({ revision: state.revision }, 'agent: VM ports changed; applying');
    await this.applyNow();
    return true;
  }

  /**
   * No saved state (a fresh host, or an unreadable file): program an empty desired state so that every
   * VM tap already on the bridges is dropped until the server's snapshot says otherwise. Nothing is held,
   * so the hello still asks for a snapshot.
   */
  private async applyFailClosed(): Promise<void> {
    const empty = { hostId: '', revision: 0, vms: [], sets: [] };
    try {
      await this.o.dataplane.apply({ state: empty, ports: await this.o.discover(empty) });
      this.o.log.info('agent: no saved desired state; VM ports are closed until the server answers');
    } catch (e) {
      this.o.log.error({ err: e instanceof Error ? e.message : String(e) }, 'agent: could not close VM ports before the first snapshot');
    }
  }

  /** Leaves every rule in place: VMs stay protected while the agent is down. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of [this.reconnectTimer, this.reconcileTimer, this.soonTimer, this.countersTimer, this.tamperTimer]) if (t) clearTimeout(t);
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.linkWatch?.stop();
    this.linkWatch = null;
    this.rulesetWatch?.stop();
    this.rulesetWatch = null;
    this.ws?.close(1000, 'agent stopping');
    this.ws = null;
    await this.work;
    await this.dropLogReader?.stop();
    this.dropLogReader = null;
    this.connections.close();
    await this.connections.idle();
    await this.o.dataplane.close?.();
  }

  // ---- connection ----------------------------------------------------------------------------

  private hello(revision: number | null): AgentMessage {
    return { type: 'hello', version: PROTOCOL_VERSION, token: this.o.token, hostname: this.o.hostname, revision, dataplane: this.o.dataplane.name, instance: this.instance };
  }

  private connect(): void {
    if (this.stopped) return;
    this.current = (this.current + 1) % this.servers.length;
    const server = this.servers[this.current];
    const ws = new WebSocket(agentUrl(server), { handshakeTimeout: 10_000, maxPayload: SERVER_FRAME_MAX_BYTES });
    this.ws = ws;
    const keepalive = this.o.keepaliveMs ?? KEEPALIVE_MS;
    ws.on('open', () => {
      this.lastHeard = Date.now();
      this.send(this.hello(this.state?.revision ?? null));
      this.pingTimer = setInterval(() => {
        if (Date.now() - this.lastHeard > 3 * keepalive) {
          this.o.log.warn({ server, silentMs: Date.now() - this.lastHeard }, 'agent: the server stopped answering; trying another');
          ws.terminate();
          return;
        }
        this.send({ type: 'ping' });
      }, keepalive);
    });
    ws.on('message', (data, isBinary) => {
      if (this.ws !== ws) return;
      this.lastHeard = Date.now();
      const decoded = decodeServerMessage(data, isBinary);
      if (!decoded.ok) {
        this.o.log.warn({ server, reason: decoded.reason }, 'agent: invalid message from the server; closing the connection');
        ws.close(1008, closeReason(`invalid message: ${decoded.reason}`));
        return;
      }
      const m = decoded.message;
      if (m.type === 'snapshot' || m.type === 'delta') this.counters.bytesIn += Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : (data as Buffer).byteLength;
      try { this.onMessage(m, server); } catch (e) {
        this.o.log.error({ err: e instanceof Error ? e.message : String(e), server }, 'agent: a server message could not be handled; closing the connection');
        ws.close(1011, 'message could not be handled');
      }
    });
    ws.on('close', (code, reason) => {
      if (this.pingTimer) { clearInterval(this.pingTimer); this.pingTimer = null; }
      if (this.ws === ws) this.ws = null;
      if (this.connected && this.stopped) this.o.log.info({ server }, 'agent: disconnected (stopping)');
      else if (this.connected) this.o.log.warn({ server, code, reason: String(reason) }, 'agent: disconnected from server');
      const displaced = this.connected && (code === CLOSE_REPLACED || code === CLOSE_HELD_ELSEWHERE);
      if (!this.connected) this.failedInRow++;
      this.connected = false;
      this.server = null;
      this.emit('disconnected');
      if (displaced) this.wasDisplaced(server);
      this.scheduleReconnect();
    });
    ws.on('error', (e) => { this.lastConnectError = `${server}: ${e.message}`; this.o.log.debug({ server, err: e.message }, 'agent: connection error'); });
  }

  /**
   * The next server after a short jittered pause while some server has not been tried since the last
   * session; once all have failed in turn, exponential backoff with jitter (a fleet never reconnects
   * in lock-step).
   */
  private scheduleReconnect(): void {
    if (this.stopped || this.reconnectTimer) return;
    const min = this.o.backoffMinMs ?? 500;
    const max = this.o.backoffMaxMs ?? 30_000;
    const rounds = Math.floor(this.attempt / this.servers.length);
    const base = Math.min(max, min * 2 ** Math.min(rounds, 16));
    const delay = Math.round(base * (0.5 + Math.random() * 0.5));
    // Every server failed in turn: say so (once a minute), or an agent that cannot reach any server
    // (a wrong URL, a firewall) looks in its log as if it were working.
    if (this.failedInRow >= this.servers.length && Date.now() - this.unreachableLoggedAt >= UNREACHABLE_LOG_EVERY_MS) {
      this.unreachableLoggedAt = Date.now();
      this.o.log.warn({ servers: this.servers, lastError: this.lastConnectError, retryInMs: delay }, 'agent: no server could be reached or accepted this agent; retrying (rules stay as they are meanwhile)');
    }
    this.attempt++;
    this.reconnectTimer = setTimeout(() => { this.reconnectTimer = null; this.connect(); }, delay);
  }

  /**
   * A server ended this agent's working session because another connection with its token and hostname
   * took the host. Once is a reconnect race (this agent's own earlier connection); again within
   * DISPLACED_WINDOW_MS, a second agent process uses this host's token: say so, and come back slowly
   * (the two would otherwise take the host from each other every few seconds, on any server).
   */
  private wasDisplaced(server: string): void {
    const now = Date.now();
    this.displacedAt = [...this.displacedAt.filter((t) => now - t < DISPLACED_WINDOW_MS), now];
    if (this.displacedAt.length < 2) return;
    this.o.log.error({ server, hostname: this.o.hostname, times: this.displacedAt.length },
      'agent: another agent uses this host\'s token and hostname and keeps taking its session; stop one of them, or register this hypervisor as a host of its own');
    this.attempt = Math.max(this.attempt, this.servers.length * 16);   // the backoff's longest pause
  }

  private send(m: AgentMessage): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(m));
    return true;
  }

  // ---- per-rule hits ---------------------------------------------------------------------------

  private armCounters(): void {
    if (this.stopped || !this.o.countersMs) return;
    // A slow reading (a host with thousands of VMs) stretches the period: reading counters never takes
    // more than 1/COUNTERS_DUTY of the time.
    const delay = Math.max(this.o.countersMs, COUNTERS_DUTY * this.lastReadMs);
    this.countersTimer = setTimeout(async () => {
      this.countersTimer = null;
      const t0 = performance.now();
      await this.readCounters();
      await this.readDropCounters();
      this.lastReadMs = performance.now() - t0;
      this.sendHits();
      this.armCounters();
    }, delay);
  }

  /** Drop-rule counters into palisade_agent_dropped_packets_total (only when metrics are served). */
  async readDropCounters(): Promise<void> {
    const read = this.o.dataplane.dropCounts;
    if (!this.o.metrics || !read) return;
    try { this.o.metrics.dropReadings(await read.call(this.o.dataplane)); } catch { /* the next reading tries again; hits log failures */ }
  }

  /** One reading of the held VMs' rule counters into the tracker (a failure is logged once per run of failures). */
  async readCounters(): Promise<void> {
    const tracker = this.hits;
    const state = this.state;
    const read = this.o.dataplane.ruleCounts;
    if (!tracker || !state || !read) return;
    try {
      const counts = await read.call(this.o.dataplane, state.vms.map((v) => ({ vmId: v.vmId, instanceName: v.instanceName })));
      tracker.take(counts);
      tracker.retain(new Set(state.vms.map((v) => v.vmId)));
      this.hitStats.readings++;
      this.o.metrics?.counterReading();
      if (this.countersFailing) this.o.log.info('agent: rule counters readable again');
      this.countersFailing = false;
    } catch (e) {
      if (!this.countersFailing) this.o.log.warn({ err: e instanceof Error ? e.message : String(e) }, 'agent: cannot read rule counters (per-rule hits wait)');
      this.countersFailing = true;
    }
  }

  /** Send what the tracker holds, if there is a session (else it keeps waiting, bounded). */
  sendHits(): void {
    const tracker = this.hits;
    if (!tracker || !this.connected || !tracker.waiting) return;
    for (const m of tracker.drain(new Date())) {
      if (!this.send(m)) break;   // the session just ended: these counts are lost with it
      this.hitStats.messages++;
      for (const per of Object.values(m.vms)) for (const n of Object.values(per)) this.hitStats.packets += n;
    }
  }

  private onMessage(m: ServerMessage, server: string): void {
    switch (m.type) {
      case 'welcome':
        if (this.standingDown) {
          this.standingDown = false;
          this.o.log.warn({ server }, 'agent: this host\'s session is ours again; writing its kernel again');
          // the other agent wrote the kernel meanwhile: read it afresh (and repair) before trusting the last view
          void this.reconcile({ full: true });
        }
        if (this.state && this.state.hostId !== m.hostId) {
          // The saved state belongs to another host (a reused state dir): never build deltas on it, and
          // overwrite the file with this host's state even when the revision numbers happen to match.
          this.o.log.warn({ saved: this.state.hostId, host: m.hostId }, 'agent: saved state is of another host; asking for a snapshot');
          this.state = null;
          this.savedRevision = null;
          this.send(this.hello(null));
        }
        this.attempt = 0;
        this.failedInRow = 0;
        // Each server says so before its first snapshot or delta when cutting is on (connectionSettings).
        this.cutOnRevoke = false;
        this.connected = true;
        this.server = server;
        this.hostId = m.hostId;
        this.counters.connects++;
        this.o.log.info({ host: m.hostName, hostId: m.hostId, server }, 'agent: connected to server');
        this.emit('connected');
        this.report(true);
        break;
      case 'snapshot':
        this.counters.snapshots++;
        this.state = m.state;
        void this.requestApply();
        break;
      case 'delta': {
        this.counters.deltas++;
        this.emit('delta', m.revision);
        const cur = this.state;
        if (!cur || cur.revision !== m.fromRevision) {
          if (cur && m.revision <= cur.revision) return;   // nothing new
          this.o.log.warn({ held: cur?.revision ?? null, from: m.fromRevision }, 'agent: delta does not follow the held revision; resyncing');
          this.send(this.hello(cur?.revision ?? null));
          return;
        }
        this.state = applyDelta(cur, m);
        void this.requestApply();
        break;
      }
      case 'error':
        if (m.code === 409 && m.message.includes(REPLACED_BY_ANOTHER_AGENT) && !this.standingDown) {
          // Another agent process holds this host: two writers would undo each other's rules on every
          // pass. Leave the kernel as it is until a server gives this host's session back.
          this.standingDown = true;
          this.o.log.error({ server }, 'agent: another agent process holds this host; not writing its kernel until the session is ours again');
        }
        // a server's passing trouble (503: it cannot reach its database) is a warning: the agent moves on
        if (m.code >= 500) this.o.log.warn({ code: m.code }, `agent: server refused: ${m.message}`);
        else this.o.log.error({ code: m.code }, `agent: server refused: ${m.message}`);
        this.emit('refused', m);
        break;
      case 'pong': break;
      case 'settings': {
        const was = this.dropLogSettings;
        this.dropLogSettings = m.dropLog;
        if (was && was.rate === m.dropLog.rate && was.burst === m.dropLog.burst) break;
        this.o.log.info({ rate: m.dropLog.rate, burst: m.dropLog.burst }, 'agent: drop-log settings');
        void this.syncDropLogReader();
        if (this.state) void this.requestApply();
        break;
      }
      case 'connectionSettings':
        if (m.cutOnRevoke !== this.cutOnRevoke) this.o.log.info({ cutOnRevoke: m.cutOnRevoke }, 'agent: cutting connections no rule allows after a change is now ' + (m.cutOnRevoke ? 'on' : 'off'));
        this.cutOnRevoke = m.cutOnRevoke;
        break;
      case 'listConnections': {
        // Answered on the connection that asked: question ids are the asking server's.
        const ws = this.ws;
        void this.connections.list(m).then((a) => { if (ws && this.ws === ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(a)); })
          .catch((e) => this.o.log.error({ err: e instanceof Error ? e.message : String(e) }, 'agent: conntrack question failed'));
        break;
      }
      default: break;
    }
  }

  // ---- drop log ------------------------------------------------------------------------------

  /** What the kernel's rules log (null: nothing; no reader or rate 0). */
  private dropLogConfig(): DropLogConfig | null {
    const s = this.dropLogSettings;
    if (!this.o.dropLog || !s || s.rate <= 0) return null;
    return { rate: s.rate, burst: s.burst, group: DROP_LOG_GROUP };
  }

  /** Start the NFLOG reader when the log is on, stop it when off. */
  private async syncDropLogReader(): Promise<void> {
    const on = this.dropLogConfig() !== null && !this.stopped;
    if (on && !this.dropLogReader) {
      const reader = new DropLog({
        group: DROP_LOG_GROUP, netns: this.o.dropLog!.netns, log: this.o.log, command: this.o.dropLog!.command, onLost: this.o.dropLog!.onLost,
        ports: () => this.ports,
        send: (records) => {
          if (!this.connected || !this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
          this.send({ type: 'drops', records });
          return true;
        },
      });
      this.dropLogReader = reader;
      try { await reader.start(); } catch (e) {
        this.o.log.error({ err: e instanceof Error ? e.message : String(e) }, 'agent: drop-log reader could not start');
      }
    } else if (!on && this.dropLogReader) {
      const reader = this.dropLogReader;
      this.dropLogReader = null;
      await reader.stop();
    }
  }

  // ---- apply & reconcile ---------------------------------------------------------------------

  /** Serialise kernel work: applies and reconciles never overlap. */
  private serial(fn: () => Promise<void>): Promise<void> {
    const p = this.work.then(fn).catch((e) => { this.o.log.error({ err: e }, 'agent: work failed'); });
    this.work = p;
    return p;
  }

  /** Apply the held state (coalescing: several deltas during one apply cost one more apply). */
  requestApply(): Promise<void> {
    this.applyWanted = true;
    if (this.applyQueued) return this.work;
    this.applyQueued = true;
    return this.serial(async () => {
      this.applyQueued = false;
      if (!this.applyWanted) return;
      this.applyWanted = false;
      await this.applyNow();
    });
  }

  private async applyNow(): Promise<void> {
    const state = this.state;
    if (!state || this.standingDown) return;
    await this.saveHeld(state);
    let ports: HostPorts;
    let result: ApplyResult;
    try {
      ports = await this.o.discover(state);
      result = await this.o.dataplane.apply({ state, ports, dropLog: this.dropLogConfig() });
      this.lastApplyError = null;
      this.ports = portIndex(state, ports);
      this.o.metrics?.applied(result);
    } catch (e) {
      const error = e instanceof Error ? e.message : String(e);
      this.o.metrics?.applyFailed(e instanceof DataplaneError ? e.step : null);
      this.lastApplyError = error;
      this.o.log.error({ err: error, revision: state.revision }, 'agent: apply failed');
      ports = this.lastPorts ?? { nics: {}, bridges: {} };
      result = { changed: false, vms: Object.fromEntries(state.vms.map((v) => [v.vmId, { ok: false, error }])), steps: [] };
    }
    this.counters.applies++;
    if (this.lastApplyError === null && this.retiring.length) await this.retireOthers();
    const before = this.applied;
    if (this.lastApplyError === null) this.applied = state;
    this.lastPorts = ports;
    this.lastResult = result;
    this.appliedRevision = state.revision;
    const vms: Record<string, { ok: boolean; error?: string }> = {};
    for (const vm of state.vms) {
      const r = result.vms[vm.vmId] ?? { ok: false, error: 'not applied' };
      // A VM whose tap is not on the host yet (its hypervisor has not started it) waits for it: Pending
      // on the server, not Failed; its rules go in when the port appears (linksChanged).
      const waiting = !r.ok && this.lastApplyError === null && vm.nics.some((n) => !ports.nics[n.nicId]);
      vms[vm.vmId] = r.ok ? { ok: true } : { ok: false, error: reportable(String(r.error ?? 'failed'), MAX_ERROR_CHARS), ...(waiting ? { waiting: true } : {}) };
    }
    this.send({ type: 'ack', revision: state.revision, vms });
    // Preflight judged other bridges (none yet at start, before the first apply): judged again now, or a
    // forward-drop finding would name no bridge — an Alert until the next reconcile pass. After the ack,
    // so the host's first apply is not held up by it; the findings go out with the next report.
    if (this.o.preflight && Object.keys(ports.bridges).sort().join(' ') !== this.findingsBridges) await this.runPreflight();
    // The new rules are in the kernel: cut what they no longer allow, off this path (connections.ts).
    if (this.cutOnRevoke && before && this.applied === state && before !== state) this.connections.scheduleCut(restrictedVms(before, state));
    if (result.changed) this.o.log.debug({ revision: state.revision, steps: result.steps }, 'agent: applied');
    this.emit('applied', state.revision, result);
    if (result.changed) this.reconcileSoon();
  }

  /**
   * Save the held state (fail static after a restart). A state dir that cannot be written (a full
   * disk, a file in its place) must not keep the kernel from the new rules: the error is logged, shown
   * on the server as a failed check of the host (Alert), and the save is retried on every pass.
   */
  private async saveHeld(state: HostDesiredState): Promise<void> {
    if (!this.o.stateDir || this.savedRevision === state.revision) return;
    try {
      await saveState(this.o.stateDir, { serverUrl: this.server ?? this.servers[0], state, savedAt: new Date().toISOString(),
        host: { hostname: this.o.hostname, tokenSha256: tokenSha256(this.o.token) } });
      this.savedRevision = state.revision;
      if (this.stateSaveError !== null) {
        this.stateSaveError = null;
        this.o.log.info({ stateDir: this.o.stateDir }, 'agent: the desired state is saved again');
        this.report(false);
      }
    } catch (e) {
      const err = e instanceof Error ? e.message : String(e);
      if (err !== this.stateSaveError) {
        this.o.log.error({ stateDir: this.o.stateDir, err }, 'agent: cannot save the desired state; applying it anyway (after a restart the agent would start from an older state); retrying on every reconcile pass');
        this.stateSaveError = err;
        this.report(false);
      }
    }
  }

  /**
   * Remove what other backends left (after this one applied a real state). Retried after later applies
   * a few times (a host without the other backend's tools has nothing of it to remove).
   */
  private async retireOthers(): Promise<void> {
    const left: Dataplane[] = [];
    for (const other of this.retiring) {
      try {
        await other.teardown();
        await other.close?.();
        this.o.log.info({ dataplane: this.o.dataplane.name, removed: other.name }, `agent: ${this.o.dataplane.name} rules in place; removed what ${other.name} had installed`);
      } catch (e) {
        const tries = (this.retireTries.get(other) ?? 0) + 1;
        this.retireTries.set(other, tries);
        const err = e instanceof Error ? e.message : String(e);
        if (tries < 3) { left.push(other); this.o.log.warn({ err, backend: other.name }, 'agent: could not remove the other backend\'s rules; will retry'); }
        else this.o.log.warn({ err, backend: other.name }, 'agent: giving up removing the other backend\'s rules (are its tools installed?)');
      }
    }
    this.retiring = left;
  }

  private reconcileSoon(): void {
    if (this.stopped || this.soonTimer) return;
    this.soonTimer = setTimeout(() => { this.soonTimer = null; void this.reconcile(); }, this.o.afterWriteMs ?? Math.min(1000, this.o.reconcileMs));
  }

  private armReconcile(): void {
    if (this.stopped) return;
    this.reconcileTimer = setTimeout(async () => { await this.reconcile(); this.armReconcile(); }, this.o.reconcileMs);
  }

  private async runPreflight(): Promise<void> {
    if (!this.o.preflight) return;
    const bridges = Object.keys(this.lastPorts?.bridges ?? {}).sort();
    this.findingsBridges = bridges.join(' ');
    try { this.findings = await this.o.preflight(bridges); } catch (e) {
      this.findings = [{ check: 'preflight', ok: false, detail: e instanceof Error ? e.message : String(e) }];
    }
    for (const f of this.findings) {
      if (f.fixed) this.o.log.warn({ check: f.check }, `agent: preflight fixed: ${f.detail}`);
      else if (!f.ok) this.o.log.error({ check: f.check }, `agent: preflight FAILED: ${f.detail}`);
    }
  }

  /** One reconcile pass: preflight, port discovery, observe, repair drift, report. `full`: read every rule (after someone else's change). */
  reconcile(opts: { full?: boolean } = {}): Promise<void> {
    return this.serial(async () => {
      if (this.stopped) return;
      await this.runPreflight();
      const repaired = this.findings.filter((f) => f.fixed).map((f) => ({ at: new Date().toISOString(), what: `preflight: ${f.check} ${f.detail}`, count: 1 }));
      this.addRepairs(...repaired);
      const state = this.state;
      if (state && this.stateSaveError !== null) await this.saveHeld(state);
      if (state && this.lastApplyError !== null) {
        // The last apply failed as a whole (e.g. a tool was missing): retry it on every pass; the
        // ack tells the server once it works.
        await this.applyNow();
        if (this.lastApplyError === null) this.o.log.info({ revision: state.revision }, 'agent: apply succeeded on retry');
      } else if (state && state.revision === this.appliedRevision && !this.applyWanted) {
        // Only against what was applied: a state that arrived since is applied next, not "drift".
        await this.repairDrift(state, opts.full ?? false).catch((e) => this.o.log.error({ err: e instanceof Error ? e.message : String(e) }, 'agent: reconcile failed'));
      }
      this.report(false);
    });
  }

  /** Observe the kernel (and the ports); re-apply when something drifted; count it when the repair worked. */
  private async repairDrift(state: HostDesiredState, full: boolean): Promise<void> {
    if (this.standingDown) return;
    const ports = await this.o.discover(state);
    // (no link watcher, or it missed them)
    if (await this.followPorts(state, ports)) return;
    const obs = await this.o.dataplane.observe({ state, ports, dropLog: this.dropLogConfig() }, { full });
    const warned = (obs.warnings ?? []).join('; ');
    // said once per change, not every pass
    if (warned && warned !== this.lastObserveWarning) this.o.log.error({ warnings: obs.warnings }, `agent: drift check incomplete: ${warned}`);
    this.lastObserveWarning = warned;
    if (!obs.drift.length) return;
    const what = obs.drift.slice(0, 5).map((d) => `${d.kind} ${d.what}`).join('; ') + (obs.drift.length > 5 ? `; … ${obs.drift.length - 5} more` : '');
    const count = obs.drift.length;
    this.o.log.warn({ drift: obs.drift.length }, `agent: repairing drift: ${what}`);
    await this.applyNow();
    if (this.lastApplyError !== null) return;
    this.repairCount += count;
    this.o.metrics?.driftRepaired(count);
    this.addRepairs({ at: new Date().toISOString(), what, count });
    this.emit('repaired', { what, count });
  }

  /** Repairs not reported yet, within the protocol's bound (older ones folded into one while disconnected). */
  private addRepairs(...repairs: RepairReport[]): void {
    const cap = (t: string) => reportable(t, MAX_REPAIR_CHARS);
    this.pendingRepairs.push(...repairs.map((r) => ({ ...r, what: cap(r.what) })));
    if (this.pendingRepairs.length > MAX_REPAIRS_PER_REPORT) {
      const old = this.pendingRepairs.splice(0, this.pendingRepairs.length - MAX_REPAIRS_PER_REPORT + 1);
      this.pendingRepairs.unshift({ at: old[old.length - 1].at, what: `${old.length} earlier repairs (while disconnected)`, count: old.reduce((n, r) => n + r.count, 0) });
    }
  }

  /** Send findings when they changed (or on connect) and any repairs not yet reported. */
  private report(force: boolean): void {
    if (!this.connected) return;
    const findings = this.stateSaveError === null ? this.findings
      : [...this.findings, { check: 'state dir', ok: false, detail: `cannot save the desired state in ${this.o.stateDir}: ${this.stateSaveError}` }];
    const key = JSON.stringify(findings.map((f) => [f.check, f.ok, f.detail]));
    if (!force && key === this.sentFindings && !this.pendingRepairs.length) return;
    const preflight = findings.slice(0, MAX_FINDINGS).map((f) => ({ ...f, check: reportable(f.check, 200), detail: reportable(f.detail, MAX_FINDING_CHARS) }));
    this.send({ type: 'report', preflight, repairs: this.pendingRepairs });
    this.sentFindings = key;
    this.pendingRepairs = [];
  }
}
