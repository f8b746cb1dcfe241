// The agent session hub: the WebSocket endpoint (AGENT_PATH), hellos, per-host sessions, resyncs,
// pushes, keepalive. Every frame is validated against the protocol's schemas before use; a frame that
// does not match closes that one connection with the reason logged (DESIGN.md §4). Until a hello is
// accepted a connection may send PRE_HELLO_MAX_BYTES in total, counted on the raw socket (ws buffers
// whole frames, so a per-message check would come too late); after it, frames up to
// AGENT_FRAME_MAX_BYTES (the server's ws maxPayload). At most PENDING_HELLOS_MAX connections may wait
// for an accepted hello at once (anyone can open them); one more is refused before any work.
//
// A hello is accepted once this server has caught up with the change feed as of the hello (so it
// knows a host added a moment ago, and never answers an agent with older content than it holds) and
// has taken the host's lease (DESIGN.md §6). A host another server held until now is passive in the
// fleet (nothing compiled for it here): its resync compiles it first (Fleet.activate, in the serial
// section), labelled so that an agent already holding its current content gets an empty delta.
import { createHash } from 'node:crypto';
import type { Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';
import websocket from '@fastify/websocket';
import type { WebSocket } from 'ws';
import type { Logger } from 'pino';
import {
  AGENT_FRAME_MAX_BYTES, AGENT_PATH, CLOSE_REPLACED, closeReason, REPLACED_BY_ANOTHER_AGENT, PRE_HELLO_MAX_BYTES, PROTOCOL_VERSION, decodeAgentMessage,
  type AgentMessage, type ConnectionsMessage, type DropLogSettings, type HelloMessage, type ServerMessage,
} from '../protocol/index.js';
import type { TelemetryIngest } from './telemetry.js';
import type { ControlMetrics } from './metrics.js';
import type { Fleet, Delta } from './fleet.js';
import { storeUnavailable } from '../store/db.js';
import type { SyncTracker } from './sync.js';
import type { Cluster } from './cluster.js';
import type { Batches } from './batches.js';
import type { FeedReader } from './feed-reader.js';
import type { Serial } from './serial.js';
import { deltaJson, snapshotJson } from './wire.js';
import { TimeBudget } from './time-budget.js';
import { LogWindow } from '../model/log-window.js';
import { logText } from './log-text.js';

const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest('hex');

/** A hello must be answered (caught up, lease taken, resynced) within this time, else the agent tries elsewhere. */
const HELLO_TIMEOUT_MS = 10_000;
/**
 * Agent connections without an accepted hello one server holds at once (counted from the upgrade until
 * the hello is accepted or the connection is gone); a new one over it is refused at once with 4503, before
 * any work. Anyone can open them (no token is needed to connect), and each holds a socket, timers and
 * buffers for up to HELLO_TIMEOUT_MS: without a bound a client opening thousands a second ran the server
 * out of file descriptors and memory, and the API (same process) with it. A real agent sends its hello
 * at once and stays pending only for its head query and lease (longer only while a failover's lease
 * writes queue), so the bound is what a failover or a restart may bring at once: the whole 10,000-host
 * target fleet reconnecting to one server (a restart of a single server, or the last one left) stays
 * under it; an agent refused anyway tries its next server after a short pause, as after any 503. Each
 * waiting connection costs the server a descriptor and a few KB (2,000 idle ones: +2.3 KB RSS each,
 * measured), up to PRE_HELLO_MAX_BYTES more while it sends: ~100 MB at the bound. Not per remote address:
 * agents may reach the server through one load balancer.
 * `palisade server --pending-agents-max` overrides it (HubDeps.pendingHellosMax).
 */
export const PENDING_HELLOS_MAX = 10_000;
/** What an agent refused over PENDING_HELLOS_MAX is told (also the close reason: under 123 bytes). */
const TOO_MANY_PENDING = 'this server has too many agent connections awaiting a hello; try another server or later';
const KEEPALIVE_MS = 20_000;
/**
 * Bytes queued towards one agent and not yet taken by its socket, beyond which the connection is cut:
 * an agent that does not read (and keeps asking for resyncs, or pinging) would otherwise make the server
 * hold every snapshot and pong for it. A message is always let through when nothing is queued (one
 * snapshot may be up to SERVER_FRAME_MAX_BYTES); the agent reconnects and resyncs like after any cut.
 */
const SEND_BACKLOG_MAX_BYTES = 64 * 1024 * 1024;
/**
 * Event-loop time one host's frames may take (decoding and handling): a budget refilled at
 * HANDLING_MS_PER_SECOND up to HANDLING_BURST_MS. A connection in debt is not read (ws.pause) until
 * the debt is paid back (THROTTLE_MAX_MS at a time while it owes at most two bursts), so valid but huge frames sent without pause (telemetry within its bounds)
 * cannot keep the server from everything else. A real agent uses a small fraction of this. The budget
 * is the host's, not the connection's: an agent reconnecting whenever it was throttled started each
 * connection with a full burst and so kept the server busy all the time (a connection's frames before
 * its hello is accepted, at most PRE_HELLO_MAX_BYTES, are charged to a budget of the connection's own). (The
 * store work of its telemetry has a budget of its own, in telemetry.ts, so that a host reporting many
 * drops sheds drop records rather than having its acks and pongs held back.)
 */
export const HANDLING_MS_PER_SECOND = 50;
export const HANDLING_BURST_MS = 2000;
/**
 * What an accepted hello is charged to its host's budget, besides its resync's own time: its work is
 * mostly the database's (the lease row, the host's status), which every server shares and this event
 * loop does not see. An agent reconnecting in a loop (a cheap resync each time) otherwise made ~2,000
 * lease writes before its host was in debt, and 50 a second after; now ~200, then 5 a second. A real
 * agent reconnects a few times an hour. (25 ms made a host that reconnects often — the channel fuzz test,
 * 200 sessions in a minute — spend most of its sessions paused for a debt of a few ms.)
 */
const HELLO_CHARGE_MS = 10;
/** A throttled connection is not read for at least this long (no pause/resume churn per frame). */
const THROTTLE_MIN_MS = 2000;
/**
 * ...and for at most this long at a time. One resync may charge a whole burst (2 s: 40 s of debt at
 * HANDLING_MS_PER_SECOND), and a session not read for that long had its acks and pongs left unread: the
 * server's own keepalive (a ping every KEEPALIVE_MS) cut it for the pong it had not read. The debt beyond
 * is carried, not forgiven: the first frame read after the pause finds the host still in debt and pauses
 * it again, so the host still gets HANDLING_MS_PER_SECOND on average and a hello of its while in debt is
 * still refused; what changes is that its frames are read at least every THROTTLE_MAX_MS.
 */
const THROTTLE_MAX_MS = 10_000;
/**
 * ...unless the host owes more than two bursts (80 s of waiting): then it is not read until all of it is
 * paid back. Each read after a pause handles at least one whole frame, and one valid frame can cost
 * seconds (a valid 15.9 MB hits report: 2.5–3.1 s to decode, measured at load 3 on two cores), far more than
 * the 500 ms a 10 s pause pays back: paused THROTTLE_MAX_MS at most whatever it owed, a host sending
 * such frames without pause had one read every 10 s (~250 ms of the server's time a second, not 50),
 * its debt growing for ever. Two bursts hold the honest case above (one resync's burst on an empty budget:
 * 40 s) with room to spare; a host past them costs more than it earns and waits for all of it (the
 * keepalive spares a paused session), so what it gets on average is HANDLING_MS_PER_SECOND again.
 */
const THROTTLE_CAPPED_WAIT_MS = (2 * HANDLING_BURST_MS / HANDLING_MS_PER_SECOND) * 1000;

/** How long a connection whose host is `waitMs` from paying back its debt is not read (THROTTLE_MIN_MS, THROTTLE_MAX_MS, THROTTLE_CAPPED_WAIT_MS). */
export function throttlePauseMs(waitMs: number): number {
  if (waitMs > THROTTLE_CAPPED_WAIT_MS) return waitMs;
  return Math.min(THROTTLE_MAX_MS, Math.max(THROTTLE_MIN_MS, waitMs));
}
/**
 * Refused hellos (and connections closed for breaking the protocol before a hello) are logged one by
 * one up to REFUSALS_LOGGED per REFUSAL_LOG_WINDOW_MS, then only counted (the count is logged when
 * the next window starts): agents retrying with a stale token, or a storm of reconnects, cannot fill
 * the log.
 */
const REFUSALS_LOGGED = 20;
const REFUSAL_LOG_WINDOW_MS = 10_000;
/**
 * How long an agent process replaced on its host's live session by another process is remembered. A
 * restarted agent replaces its dead predecessor once; a replaced process that comes back within this
 * time is a second agent sharing the host's token and hostname (a cloned host, a forgotten old
 * install), which would otherwise take the session back and forth for ever.
 */
const TWIN_MEMORY_MS = 120_000;
/**
 * An agent's connect and disconnect lines (and a new process taking its session) are logged one by one
 * up to HOST_LINES_LOGGED per host per HOST_LOG_WINDOW_MS, then counted (the count is logged when the
 * window ends): an agent reconnecting in a loop, a hundred times a second, wrote two lines each time.
 */
const HOST_LINES_LOGGED = 10;
const HOST_LOG_WINDOW_MS = 60_000;
/** A host's two-agents error is logged at most once per this period. */
const TWIN_LOG_EVERY_MS = 60_000;

interface Session {
  ws: WebSocket;
  hostId: number;
  hostname: string;
  remote: string;
  /** The agent process's instance id (hello.instance), when it sent one. */
  instance?: string;
  /** Resynced: pushes go to it. */
  ready: boolean;
  alive: boolean;
  /** This server stopped reading it (throttled) since its last ping: a pong missing then is not the agent's fault. */
  pausedSincePing?: boolean;
  /** The last revision this session was given (acks are clamped to it); -1: nothing yet. */
  sent: number;
  /**
   * A resync the agent asked for on the open channel that has not run yet: later asks join it (from the
   * lowest revision named; null, a snapshot, is lowest). An agent asks again for every delta that does
   * not follow what it holds, so a burst of pushes brings many asks; one resync answers them all.
   */
  resyncAsked?: { revision: number | null };
  /** Stop reading the connection while its host's budget is in debt (set once the hello is accepted). */
  throttle?: () => void;
}

export interface HubStats { pushes: Map<number, number>; snapshots: number; deltas: number; refused: number; badFrames: number }

export interface HubDeps {
  log: Logger;
  fleet: Fleet;
  sync: SyncTracker;
  cluster: Cluster;
  batches: Batches;
  reader: FeedReader;
  serial: Serial;
  /** Where `hits` and `drops` reports go (issue 11); absent: they are accepted and ignored. */
  telemetry?: TelemetryIngest;
  /** The drop-log settings agents apply (sent after the welcome and on every change); absent: none sent. */
  settings?: () => DropLogSettings;
  metrics?: ControlMetrics;
  /** Conntrack questions and the cut setting (connections.ts); absent: answers are dropped, no setting sent. */
  connections?: HubConnectionHooks;
  /** Connections awaiting an accepted hello held at once (default PENDING_HELLOS_MAX). */
  pendingHellosMax?: number;
}

/** What the conntrack side (connections.ts) needs from sessions. */
export interface HubConnectionHooks {
  /** An answer to a conntrack question this server asked. */
  answer(hostId: number, m: ConnectionsMessage): void;
  /** Sent to every session before its first snapshot or delta, when not null (the agent's cut setting). */
  settings(): ServerMessage | null;
}

/** A hello this server will not accept: `message` goes to the agent, `why` (default: the same) to the log. */
class Refused extends Error {
  constructor(readonly code: number, message: string, readonly why: string = message) { super(message); }
}

export class SessionHub {
  private readonly sessions = new Map<number, Session>();
  /** The session of a connection (set when its hello is accepted, before the accept callback runs). */
  private readonly byWs = new WeakMap<WebSocket, Session>();
  private keepalive: NodeJS.Timeout | null = null;
  /** False while this server is cut off from the database or shutting down: hellos are refused. */
  accepting = true;
  /** Connections whose hello is not accepted yet (PENDING_HELLOS_MAX): each leaves once, accepted or closed. */
  private pendingHellos = 0;
  private readonly pendingHellosMax: number;
  readonly stats: HubStats = { pushes: new Map(), snapshots: 0, deltas: 0, refused: 0, badFrames: 0 };
  private readonly refusalLog: LogWindow;
  /** Connections closed for breaking the protocol before a hello was accepted (REFUSALS_LOGGED per window). */
  private readonly closedLog: LogWindow;
  /** Per host: its frames' handling budget (HANDLING_MS_PER_SECOND), kept across its connections; forgotten once full again. */
  private readonly budgets = new Map<number, TimeBudget>();
  /** Per host: its session lines' window (HOST_LINES_LOGGED); forgotten once a window passes without any. */
  private readonly hostLogs = new Map<number, LogWindow>();
  /** Per host: the agent process whose live session another process took (TWIN_MEMORY_MS). */
  private readonly replaced = new Map<number, { instance: string; remote: string; at: number; loggedAt: number }>();

  constructor(private readonly d: HubDeps) {
    this.pendingHellosMax = d.pendingHellosMax ?? PENDING_HELLOS_MAX;
    this.refusalLog = new LogWindow(REFUSALS_LOGGED, REFUSAL_LOG_WINDOW_MS, (refusals) =>
      d.log.warn({ refusals }, `agent refusals not logged one by one (more than ${REFUSALS_LOGGED} in ${REFUSAL_LOG_WINDOW_MS / 1000} s)`));
    this.closedLog = new LogWindow(REFUSALS_LOGGED, REFUSAL_LOG_WINDOW_MS, (connections) =>
      d.log.warn({ connections }, `agent connections closed for breaking the protocol before a hello not logged one by one (more than ${REFUSALS_LOGGED} in ${REFUSAL_LOG_WINDOW_MS / 1000} s)`));
    this.keepalive = setInterval(() => this.pingAll(), KEEPALIVE_MS);
    this.keepalive.unref();
  }

  async register(app: FastifyInstance): Promise<void> {
    if (!app.hasDecorator('websocketServer')) {
      await app.register(websocket, {
        options: { maxPayload: AGENT_FRAME_MAX_BYTES },
        // A connection's own errors (a frame over the bound, a broken frame, an unclean disconnect) are the
        // peer's doing, before or after a hello: one warning line, not an error with a stack per connection
        // (anyone could fill the log with those).
        errorHandler: (error, socket, request) => {
          if (this.closedLine(null)) request.log.warn({ remote: request.ip, err: error.message.slice(0, 200) }, 'agent connection: protocol error; closed');
          socket.terminate();
        },
      });
    }
    await app.register(async (scope) => {
      scope.get(AGENT_PATH, { websocket: true }, (socket, req) => this.accept(socket, req.ip, req.raw.socket));
    });
  }

  /** Does this server hold the host's agent session (and so its lease)? */
  holds(hostId: number): boolean { return this.sessions.has(hostId); }

  held(): Map<number, { state: string; hostname: string }> {
    const out = new Map<number, { state: string; hostname: string }>();
    for (const [id, s] of this.sessions) out.set(id, { state: this.d.sync.hostState(id), hostname: s.hostname });
    return out;
  }

  connectedHosts(): number { let n = 0; for (const s of this.sessions.values()) if (s.ready) n++; return n; }

  /** Send to the host's agent (conntrack questions); false when this server holds no resynced session for it. */
  sendTo(hostId: number, m: ServerMessage): boolean {
    const s = this.sessions.get(hostId);
    if (!s?.ready || s.ws.readyState !== s.ws.OPEN) return false;
    this.send(s, m);
    return true;
  }

  /** Send to every resynced session (a setting changed; call inside the serial section, before pushes). */
  sendAll(m: ServerMessage): void {
    for (const s of this.sessions.values()) if (s.ready) this.send(s, m);
  }

  private sendText(s: { ws: WebSocket }, text: string): void {
    const ws = s.ws;
    if (ws.readyState !== ws.OPEN) return;
    const queued = ws.bufferedAmount;
    if (queued > 0 && queued + text.length > SEND_BACKLOG_MAX_BYTES) {
      const session = this.byWs.get(ws);
      this.d.log.warn({ host: session?.hostId, remote: session?.remote, queuedBytes: queued }, 'agent connection cut: it does not read what the server sends');
      ws.terminate();
      return;
    }
    ws.send(text);
  }

  private send(s: { ws: WebSocket }, m: ServerMessage): void { this.sendText(s, JSON.stringify(m)); }

  private refuse(ws: WebSocket, code: number, message: string): void {
    this.stats.refused++;
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify({ type: 'error', code, message: message.slice(0, 1000) } satisfies ServerMessage));
    ws.close(4000 + (code % 1000), closeReason(message));
  }

  /** May a session line of this host be logged now? */
  private hostLine(hostId: number): boolean {
    let w = this.hostLogs.get(hostId);
    if (!w) {
      w = new LogWindow(HOST_LINES_LOGGED, HOST_LOG_WINDOW_MS, (lines) => this.d.log.warn({ host: this.d.fleet.hosts.get(hostId)?.name ?? hostId, lines },
        `agent connects and disconnects not logged one by one (more than ${HOST_LINES_LOGGED} lines in ${HOST_LOG_WINDOW_MS / 1000} s: an agent reconnecting in a loop?)`));
      this.hostLogs.set(hostId, w);
    }
    return w.admit();
  }

  /**
   * May the line of a connection closed for breaking the protocol be logged now? A host's go through its
   * session lines' window; those of connections without an accepted hello (anyone's: no token needed)
   * through one window like refusals, or a client reconnecting with garbage wrote a line per connection.
   */
  private closedLine(hostId: number | null): boolean {
    return hostId === null ? this.closedLog.admit() : this.hostLine(hostId);
  }

  private logRefusal(fields: Record<string, unknown>, why: string): void {
    if (this.refusalLog.admit()) this.d.log.warn(fields, `agent refused: ${why}`);
  }


  /** A frame that breaks the protocol: this connection ends, with the reason logged. */
  private badFrame(ws: WebSocket, remote: string, hostId: number | null, reason: string): void {
    this.stats.badFrames++;
    // (the reason may quote the frame: a key, a type)
    if (this.closedLine(hostId)) this.d.log.warn({ remote, host: hostId, reason: logText(reason) }, 'agent connection closed: invalid message');
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify({ type: 'error', code: 400, message: `invalid message: ${reason}`.slice(0, 1000) } satisfies ServerMessage));
    ws.close(1008, closeReason(`invalid message: ${reason}`));
  }

  /**
   * The TCP connection of a connection closed before its hello was accepted ends as soon as the error and
   * close frames are written: `ws` would keep it (and its place under PENDING_HELLOS_MAX) up to 30 s more
   * for a peer that never answers the close.
   */
  private hangUp(raw: Socket): void {
    raw.end(() => raw.destroy());
  }

  /** Connections awaiting an accepted hello now (PENDING_HELLOS_MAX; for tests). */
  get pending(): number { return this.pendingHellos; }

  /** A new agent connection: the first message must be a hello with a known token. */
  accept(ws: WebSocket, remote: string, raw: Socket): void {
    if (this.pendingHellos >= this.pendingHellosMax) {
      // Before any work (no listener, timer or budget): a flood of connections costs one frame each.
      this.logRefusal({ remote, pending: this.pendingHellos }, 'too many agent connections awaiting a hello');
      this.refuse(ws, 503, TOO_MANY_PENDING);
      this.hangUp(raw);
      return;
    }
    this.pendingHellos++;
    let pending = true;
    /** Out of the pending count, exactly once: when the hello is accepted or the connection is gone, whichever comes first. */
    const leavePending = () => { if (pending) { pending = false; this.pendingHellos--; } };
    ws.once('close', leavePending);
    let session: Session | null = null;
    let greeting = false;
    let closed = false;
    const early: AgentMessage[] = [];
    let bytes = 0;
    const count = (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes > PRE_HELLO_MAX_BYTES && !session) {
        this.stats.refused++;
        if (this.closedLine(null)) this.d.log.warn({ remote, bytes }, `agent connection closed: more than ${PRE_HELLO_MAX_BYTES} bytes before its hello was accepted`);
        raw.off('data', count);
        raw.destroy();
      }
    };
    raw.on('data', count);
    // The bound is on accepting the hello (token, lease, welcome), not on the resync queued after it:
    // refusing an accepted hello that waits for the serial section (a failover's thousands of hellos)
    // threw away its lease and activation and sent the agent to do it all again elsewhere. An accepted
    // session's pongs count (the server's keepalive) while its agent's own pings wait with its other
    // early messages, so an agent whose resync never comes still leaves after its keepalive periods.
    /** Not accepted (the hello was not, or none came): whatever ends the connection now ends its TCP connection too. */
    const unaccepted = () => !session && !this.byWs.has(ws);
    /** Every way this connection is refused or closed for a bad frame: one not accepted also loses its TCP connection. */
    const endsHere = (close: () => void) => {
      close();
      if (unaccepted()) this.hangUp(raw);
    };
    const refuse = (code: number, message: string) => endsHere(() => this.refuse(ws, code, message));
    const badFrame = (reason: string) => endsHere(() => this.badFrame(ws, remote, session?.hostId ?? null, reason));
    const helloTimer = setTimeout(() => {
      if (unaccepted()) refuse(503, 'no hello accepted in time (server busy); try another server');
    }, HELLO_TIMEOUT_MS);
    ws.on('pong', () => { const s = session ?? this.byWs.get(ws); if (s) s.alive = true; });
    // The handling budget (HANDLING_MS_PER_SECOND): charged after each frame, the host's once its hello is accepted.
    const own = new TimeBudget(HANDLING_MS_PER_SECOND, HANDLING_BURST_MS);
    let throttleLogged = false;
    const charge = (spentMs: number) => {
      const debtMs = (session ? this.budgetOf(session.hostId) : own).charge(spentMs);
      if (debtMs === 0 || ws.isPaused || closed) return;
      const waitMs = throttlePauseMs(debtMs);
      if (!throttleLogged) {
        throttleLogged = true;
        this.d.log.warn({ remote, host: session?.hostId ?? null, waitMs, debtMs }, 'agent connection throttled: its messages take too much of the server\'s time');
      }
      const s = session ?? this.byWs.get(ws);
      if (s) s.pausedSincePing = true;
      ws.pause();
      setTimeout(() => { if (!closed) ws.resume(); }, waitMs).unref();
    };
    ws.on('message', (data, isBinary) => {
      if (closed) return;
      const began = performance.now();
      try {
        const decoded = decodeAgentMessage(data, isBinary);
        if (!decoded.ok) { badFrame(decoded.reason); return; }
        const m = decoded.message;
        if (session) { this.onMessage(session, m); return; }
        if (greeting) { early.push(m); return; }   // sent before the hello was answered: handled after it
        if (m.type !== 'hello') { badFrame(`expected hello first, got ${m.type}`); return; }
        greeting = true;
        this.hello(ws, m, remote, leavePending).then((s) => {
          clearTimeout(helloTimer);
          if (!s) return;
          session = s;
          raw.off('data', count);
          for (const e of early.splice(0)) this.onMessage(s, e);
          s.throttle = () => charge(0);
          charge(0);   // a host still in debt (its previous connection, this resync) is not read until it is paid back
        }).catch((e: unknown) => {
          clearTimeout(helloTimer);
          if (e instanceof Refused) { this.logRefusal({ remote, hostname: m.hostname, code: e.code }, e.why); refuse(e.code, e.message); return; }
          if (storeUnavailable(e)) this.d.log.warn({ err: e instanceof Error ? e.message : String(e), remote }, 'control: hello failed: the database cannot be reached');
          else this.d.log.error({ err: e, remote }, 'control: hello failed');
          refuse(503, 'this server could not accept the agent; try another server');
        });
      } catch (e) {
        this.d.log.error({ err: e, remote, host: session?.hostId }, 'control: agent message failed');
        badFrame('message could not be handled');
      } finally {
        charge(performance.now() - began);
      }
    });
    ws.on('close', () => {
      closed = true;
      clearTimeout(helloTimer);
      raw.off('data', count);
      const s = session ?? this.byWs.get(ws);
      if (s && this.sessions.get(s.hostId) === s) {
        this.sessions.delete(s.hostId);
        this.d.metrics?.settled(s.hostId);
        if (this.d.fleet.hosts.has(s.hostId)) this.d.cluster.release(s.hostId);
        if (this.hostLine(s.hostId)) this.d.log.info({ host: this.d.fleet.hosts.get(s.hostId)?.name ?? s.hostId, hostname: s.hostname }, 'agent disconnected');
      }
    });
    ws.on('error', () => {});
  }

  /** `accepted`: called once the session exists (lease taken, welcome sent), before its resync waits for the serial section. */
  private async hello(ws: WebSocket, m: HelloMessage, remote: string, accepted: () => void): Promise<Session | null> {
    if (m.version !== PROTOCOL_VERSION) throw new Refused(400, `unsupported protocol version ${m.version}, expected ${PROTOCOL_VERSION}`);
    if (!this.accepting || !this.d.cluster.healthy) throw new Refused(503, 'this server cannot reach its database; try another server');
    // Catch up with everything committed before this hello: a host added a moment ago becomes known,
    // and whatever another server gave this agent is not newer than what this one holds.
    const t0 = performance.now();
    const hash = sha256(m.token);
    const busy = (id: number) => {
      const prev = this.sessions.get(id);
      return !!prev && prev.ws.readyState === prev.ws.OPEN && (prev.hostname !== m.hostname || this.twin(id, m) !== null);
    };
    const early = this.d.fleet.byToken.get(hash);
    // A host over its handling budget (its frames, its resyncs) gets no new session until the debt is paid
    // back, refused before any work: each accepted hello takes a lease and builds a resync in the serial
    // section, so an agent reconnecting in a loop would otherwise get what its open channel is throttled for.
    const owedMs = early === undefined ? 0 : this.budgets.get(early)?.charge(0) ?? 0;
    if (owedMs > 0) {
      throw new Refused(503, `this host's agent has taken more than its share of this server's time; try again in ${Math.ceil(owedMs / 1000)} s`, 'host over its handling budget');
    }
    // A known host's lease is taken while catching up (a failover storm waits for both only once).
    const earlyLease = early !== undefined && !busy(early) ? this.d.cluster.acquire(early, m.hostname) : null;
    earlyLease?.catch(() => {});   // awaited below
    /** The lease taken early is not used after all: give it back (unless a session of this server holds the host). */
    const dropEarly = async () => {
      if (earlyLease && await earlyLease.catch(() => false) === true && !this.sessions.has(early!)) this.d.cluster.release(early!);
    };
    let t1 = t0;
    try {
      const head = await this.d.reader.head();
      t1 = performance.now();
      if (head > this.d.batches.processed) this.d.reader.wake();
      await this.d.batches.waitProcessed(head);
    } catch (e) {
      await dropEarly();
      throw e;
    }
    const t2 = performance.now();
    const hostId = this.d.fleet.byToken.get(hash);
    const leased = hostId !== undefined && hostId === early ? earlyLease : null;
    if (!leased) await dropEarly();
    if (hostId === undefined || !this.d.fleet.hosts.has(hostId)) throw new Refused(401, 'unknown agent token', 'unknown token');
    const host = this.d.fleet.hosts.get(hostId)!;
    if (busy(hostId)) {
      const holder = this.sessions.get(hostId)!;
      if (this.twin(hostId, m)) {
        this.logTwin(hostId, host.name, holder, remote);
        throw new Refused(409, `two agents use the token of host ${host.name} with hostname ${m.hostname}: the other (at ${holder.remote}) ${REPLACED_BY_ANOTHER_AGENT}; stop one of them or give it its own host`);
      }
      throw new Refused(409, `token of host ${host.name} is in use by another agent`);
    }
    const lease = await (leased ?? this.d.cluster.acquire(hostId, m.hostname));
    if (lease === 'superseded') throw new Refused(409, `a newer connection with the token of host ${host.name} arrived at once; this one is not used`);
    if (!lease) throw new Refused(409, `token of host ${host.name} is in use by another agent, connected to another server`);
    const t3 = performance.now();
    if (ws.readyState !== ws.OPEN || !this.d.fleet.hosts.has(hostId)) {
      if (!this.sessions.has(hostId)) this.d.cluster.release(hostId);
      return null;
    }
    const cur = this.sessions.get(hostId);
    if (cur) {
      this.sessions.delete(hostId);
      // Another process taking a live session: remembered, so that process coming back is known for a twin.
      if (cur.instance && m.instance && cur.instance !== m.instance && cur.ws.readyState === cur.ws.OPEN) {
        this.replaced.set(hostId, { instance: cur.instance, remote: cur.remote, at: Date.now(), loggedAt: this.replaced.get(hostId)?.loggedAt ?? 0 });
        if (this.hostLine(hostId)) this.d.log.info({ host: host.name, previous: cur.remote, remote }, 'agent: a new agent process took the host\'s session (a restarted agent; if the previous one comes back, two agents share the token)');
      }
      cur.ws.close(CLOSE_REPLACED, 'replaced by a new session');
    }
    const s: Session = { ws, hostId, hostname: m.hostname, remote, ...(m.instance ? { instance: m.instance } : {}), ready: false, alive: true, sent: -1 };
    this.sessions.set(hostId, s);
    this.byWs.set(ws, s);
    accepted();
    this.budgetOf(hostId).charge(HELLO_CHARGE_MS);
    this.send(s, { type: 'welcome', hostId: host.uuid, hostName: host.name });
    this.d.sync.hostPatch(hostId, { state: this.d.sync.hostState(hostId), last_contact: new Date().toISOString(), ...(m.dataplane ? { dataplane: m.dataplane } : {}) });
    this.d.sync.holderChanged(hostId);
    if (this.hostLine(hostId)) this.d.log.info({ host: host.name, hostname: s.hostname, revision: m.revision, remote, ms: { head: Math.round(t1 - t0), catchUp: Math.round(t2 - t1), lease: Math.round(t3 - t2) } }, 'agent connected');
    await this.resync(s, m.revision);
    return s;
  }

  /**
   * The replaced-process record when this hello comes from an agent process that another process took
   * the host's live session from a moment ago (and that one still holds it): two agents on one token.
   */
  private twin(hostId: number, m: HelloMessage): { instance: string; remote: string; at: number; loggedAt: number } | null {
    const gone = this.replaced.get(hostId);
    if (!gone || !m.instance || gone.instance !== m.instance) return null;
    if (Date.now() - gone.at > TWIN_MEMORY_MS) { this.replaced.delete(hostId); return null; }
    const holder = this.sessions.get(hostId);
    if (!holder || holder.instance === m.instance) return null;
    gone.at = Date.now();   // refused again: remembered for as long as it keeps trying
    return gone;
  }

  private logTwin(hostId: number, hostName: string, holder: Session, remote: string): void {
    const gone = this.replaced.get(hostId);
    if (!gone || Date.now() - gone.loggedAt < TWIN_LOG_EVERY_MS) return;
    gone.loggedAt = Date.now();
    this.d.log.error({ host: hostName, hostname: holder.hostname, holder: holder.remote, refused: remote },
      'two agents use one host token and hostname: the one holding the session keeps it, the other is refused (stop one, or register its hypervisor as a host of its own)');
  }

  /** Bring a session up to date from the revision the agent holds (inside the serial section). */
  private resync(s: Session, from: number | null | (() => number | null)): Promise<void> {
    return this.d.serial.run(() => {
      const began = performance.now();
      try { this.resyncNow(s, from); } finally {
        // Charged to the host's handling budget (at most one burst per resync, so one honest resync of
        // however large a host never puts a full budget in debt): an agent asking for resyncs again and
        // again, each a snapshot built and sent in the serial section every batch waits for, is not read
        // for a while once in debt, like one sending costly frames.
        this.budgetOf(s.hostId).charge(Math.min(HANDLING_BURST_MS, performance.now() - began));
        s.throttle?.();
      }
    });
  }

  private resyncNow(s: Session, from: number | null | (() => number | null)): void {
    // Read when the resync runs: asks that came meanwhile have joined it (Session.resyncAsked).
    const revision = typeof from === 'function' ? from() : from;
    if (this.sessions.get(s.hostId) !== s || !this.d.fleet.hosts.has(s.hostId)) return;
    this.d.sync.agentHolds(s.hostId, revision);
    if (this.d.fleet.isPassive(s.hostId)) {
      // The revision the agent holds (one this server can know of): removals done before it are not
      // owed again (Fleet.activate).
      this.d.fleet.activate(s.hostId, revision !== null && revision <= this.d.batches.processed ? revision : null);
      this.d.sync.holderChanged(s.hostId);
    }
    this.sendSettings(s);
    const cs = this.d.connections?.settings();
    if (cs) this.send(s, cs);
    const d = this.d.fleet.since(s.hostId, revision, this.d.batches.processed);
    if (d) { this.sendDesired(s, 'delta', deltaJson(d)); this.stats.deltas++; s.sent = d.revision; } else {
      const snap = this.d.fleet.snapshot(s.hostId);
      if (revision !== null && this.d.log.isLevelEnabled('debug')) {
        const h = this.d.fleet.hosts.get(s.hostId)!;
        this.d.log.debug({ host: s.hostId, held: revision, floor: h.floor, revision: h.revision, processed: this.d.batches.processed, untrusted: this.d.fleet.labelUntrusted(revision) }, 'agent resynced by snapshot: no delta from the revision it holds');
      }
      this.sendDesired(s, 'snapshot', snapshotJson(snap));
      this.stats.snapshots++;
      s.sent = snap.revision;
    }
    if (this.d.fleet.hosts.get(s.hostId)!.acked >= s.sent) this.d.metrics?.settled(s.hostId);
    else this.d.metrics?.awaiting(s.hostId, Date.now());
    this.stats.pushes.set(s.hostId, (this.stats.pushes.get(s.hostId) ?? 0) + 1);
    s.ready = true;
    // What this server holds desired for the host is now what counts (another server's label may differ).
    this.d.sync.hostPatch(s.hostId, { desired_revision: s.sent });
  }

  /** The drop-log settings to a session (before any desired state, so the first apply uses them). */
  private sendSettings(s: Session): void {
    const dropLog = this.d.settings?.();
    if (dropLog) this.send(s, { type: 'settings', dropLog });
  }

  private sendDesired(s: Session, kind: 'delta' | 'snapshot', text: string): void {
    this.sendText(s, text);
    this.d.metrics?.pushed(kind, Buffer.byteLength(text));
  }

  /** The settings changed: every session gets them (their agents re-apply with the new values). */
  pushSettings(): void {
    for (const s of this.sessions.values()) if (s.ready) this.sendSettings(s);
  }

  /**
   * A host's desired state advanced (inside the serial section): its session gets the delta.
   * `committedAt`: Unix ms of the oldest commit behind it (the oldest-unacknowledged-change gauge).
   */
  push(hostId: number, d: Delta, committedAt = Date.now()): void {
    const s = this.sessions.get(hostId);
    if (!s?.ready) return;
    this.d.metrics?.awaiting(hostId, committedAt);
    // A session resynced from another server's label holds a revision this fleet never used: give it
    // what changed since what it holds.
    const delta = s.sent === d.fromRevision ? d : this.d.fleet.since(hostId, s.sent, d.revision);
    if (!delta) { this.sendDesired(s, 'snapshot', snapshotJson(this.d.fleet.snapshot(hostId))); this.stats.snapshots++; s.sent = this.d.fleet.hosts.get(hostId)!.revision; } else {
      this.sendDesired(s, 'delta', deltaJson(delta));
      this.stats.deltas++;
      s.sent = delta.revision;
    }
    this.stats.pushes.set(hostId, (this.stats.pushes.get(hostId) ?? 0) + 1);
  }

  private onMessage(s: Session, m: AgentMessage): void {
    s.alive = true;
    const now = new Date().toISOString();
    switch (m.type) {
      case 'hello': {
        // The agent asks to resync on the same channel (its state did not follow a delta).
        const host = this.d.fleet.hosts.get(s.hostId);
        if (!host || sha256(m.token) !== host.tokenHash) { this.badFrame(s.ws, s.remote, s.hostId, 'hello with another token on an open session'); return; }
        if (s.resyncAsked) {
          const pending = s.resyncAsked;
          pending.revision = pending.revision === null || m.revision === null ? null : Math.min(pending.revision, m.revision);
          break;
        }
        const asked = { revision: m.revision };
        s.resyncAsked = asked;
        void this.resync(s, () => { s.resyncAsked = undefined; return asked.revision; })
          .catch((e) => this.d.log.error({ err: e, host: s.hostId }, 'control: resync failed'));
        break;
      }
      case 'ping': this.send(s, { type: 'pong' }); this.d.sync.hostPatch(s.hostId, { last_contact: now }); break;
      case 'ack': {
        this.d.sync.onAck(s.hostId, m, s.sent, now);
        const host = this.d.fleet.hosts.get(s.hostId);
        if (host && s.sent >= 0 && host.acked >= s.sent) this.d.metrics?.settled(s.hostId);
        break;
      }
      case 'connections': this.d.connections?.answer(s.hostId, m); break;
      case 'report': this.d.sync.onReport(s.hostId, m, now); break;
      case 'hits': this.d.telemetry?.hits(s.hostId, m); break;
      case 'drops': this.d.telemetry?.drops(s.hostId, m); break;
    }
  }

  /** End a host's session (host deleted, token changed, lease taken by another server). */
  drop(hostId: number, code: number, reason: string): void {
    const s = this.sessions.get(hostId);
    if (!s) return;
    this.sessions.delete(hostId);
    this.d.metrics?.settled(hostId);
    if (this.d.fleet.hosts.has(hostId)) this.d.cluster.release(hostId);
    s.ws.close(code, closeReason(reason));
  }

  /** Let every agent go (cut off from the database, shutting down): they move to another server. */
  closeAll(code: number, reason: string): void {
    for (const [id, s] of [...this.sessions]) {
      this.sessions.delete(id);
      this.d.metrics?.settled(id);
      this.d.cluster.release(id);
      s.ws.close(code, reason);
    }
  }

  private budgetOf(hostId: number): TimeBudget {
    let b = this.budgets.get(hostId);
    if (!b) this.budgets.set(hostId, (b = new TimeBudget(HANDLING_MS_PER_SECOND, HANDLING_BURST_MS)));
    return b;
  }

  private pingAll(): void {
    const forgetBefore = Date.now() - TWIN_MEMORY_MS;
    for (const [id, gone] of this.replaced) if (gone.at < forgetBefore) this.replaced.delete(id);
    // A budget refilled to its burst is what a new one would be.
    for (const [id, b] of this.budgets) if (!this.sessions.has(id) && b.full()) this.budgets.delete(id);
    for (const [id, w] of this.hostLogs) if (w.settle()) this.hostLogs.delete(id);
    for (const s of this.sessions.values()) {
      // A session this server has not read since its last ping (throttled) could not have read the pong:
      // asked again, not cut (a throttle lasts at most THROTTLE_MAX_MS, half a keepalive period).
      if (!s.alive && !s.ws.isPaused && !s.pausedSincePing) { s.ws.terminate(); continue; }
      s.alive = false;
      s.pausedSincePing = s.ws.isPaused;
      try { s.ws.ping(); } catch { /* closed */ }
    }
  }

  close(): void {
    this.accepting = false;
    if (this.keepalive) clearInterval(this.keepalive);
    this.closeAll(1001, 'server shutting down');
  }
}
