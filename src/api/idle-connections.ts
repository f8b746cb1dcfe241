// The bound on HTTP connections that hold no request: accepted but not yet sent a whole request head,
// or idle between keep-alive requests. The API, the web console, /metrics and the agent channel share
// one port, and anyone can open such connections: each holds a file descriptor (and ~4 KB) for up to
// HEADERS_TIMEOUT_MS, or KEEP_ALIVE_TIMEOUT_MS between requests (limits.ts). Without a bound 2,000 silent
// connections held 2,000 descriptors for 35–45 s (measured): a client opening them faster than they
// expire could run the process out of descriptors, and then no API call and no agent got in.
//
// At most IDLE_CONNECTIONS_MAX are held; a connection that would make one more closes the one idle
// longest (no answer: it sent no request), logged in a bounded way and counted in
// palisade_api_idle_connections_shed_total. Shedding the oldest rather than refusing the newest (as
// `server.maxConnections` would, for every connection, agent sessions too): an honest client sends its
// request head within milliseconds of connecting, so it loses its connection only if IDLE_CONNECTIONS_MAX
// others arrive in between, while a flood of silent connections mostly sheds itself and cannot lock
// honest clients out. (The agent channel's pending-hello bound refuses the newest instead: an upgraded
// connection has already cost a handshake, and the agent refused tries another server.) A connection
// whose head is only partly received counts as idle (a client dripping header bytes must not escape the
// bound); so does one whose head is in but whose body is still arriving (a client sending a whole head,
// then a body byte at a time, must not escape it either: an API body is a few KB, sent at once), counted
// from when it last had no request at all (its accept, or its previous answer; a request pipelined behind
// one in flight: from its head), the request in flight ahead of it included. One whose
// request has arrived whole — being worked on, or answered — is never touched, nor is an upgraded one (an
// agent session, or one awaiting its hello, which the channel bounds on its own:
// control/sessions.ts PENDING_HELLOS_MAX).
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { LogWindow } from '../model/log-window.js';
import { SERVER_METRICS } from '../metrics/catalog.js';
import type { MetricsRegistry } from '../metrics/registry.js';

/**
 * Connections without a whole request held at once (not counting upgraded ones). What an honest
 * load may bring at once: the whole 10,000-host target fleet reconnecting to one server, each agent's
 * connection counted between its accept and its upgrade request (milliseconds, more while the server is
 * busy), plus API clients' and browsers' keep-alive connections (a few each): 20,000 is never met by
 * those. Each costs a descriptor and ~4 KB of memory (measured: 5,000 silent connections, +19 MB RSS),
 * ~75 MB at the bound; the process's descriptor limit (Node raises its soft limit to the hard one) must
 * leave room for it, the agent sessions and PENDING_HELLOS_MAX: ~45,000 in all.
 * `palisade server --idle-connections-max` overrides it.
 */
export const IDLE_CONNECTIONS_MAX = 20_000;
/** Shed connections logged one by one per window, then only counted (as the agent channel's refusals). */
const SHED_LOGGED = 20;
const SHED_LOG_WINDOW_MS = 10_000;

export class IdleConnections {
  /**
   * Connections without a whole request, idle longest first (a Map keeps insertion order); value: since
   * when (ms) — their accept or their last answer, a body still arriving included.
   */
  private readonly idle = new Map<Socket, number>();
  /** Requests received and not yet answered, per connection (HTTP/1.1 pipelining may queue several). */
  private readonly inFlight = new WeakMap<Socket, number>();
  private readonly upgraded = new WeakSet<Socket>();
  private readonly shedLog: LogWindow;
  private readonly shedCount;

  constructor(private readonly o: { max: number; log: Logger; metrics?: MetricsRegistry | undefined }) {
    if (!Number.isSafeInteger(o.max) || o.max < 1) throw new Error(`the idle connection bound must be a whole number, at least 1, not ${o.max}`);
    this.shedLog = new LogWindow(SHED_LOGGED, SHED_LOG_WINDOW_MS, (connections) =>
      o.log.warn({ connections }, `idle connections closed not logged one by one (more than ${SHED_LOGGED} in ${SHED_LOG_WINDOW_MS / 1000} s)`));
    this.shedCount = o.metrics?.counter(SERVER_METRICS.idleConnectionsShed);
    o.metrics?.gauge(SERVER_METRICS.idleConnections, (g) => { g.set(this.count); });
  }

  /** Connections without a whole request now (those whose body is still arriving included). */
  get count(): number { return this.idle.size; }

  /** Follow the server's connections (before it listens). */
  attach(server: Server): void {
    server.on('connection', (socket: Socket) => {
      socket.once('close', () => { this.idle.delete(socket); });
      this.becameIdle(socket);
    });
    // First, so that whatever the route does synchronously finds the connection busy.
    server.prependListener('request', (req: IncomingMessage, res: ServerResponse) => this.requestStarted(req, res));
    // Node emits 'upgrade' only while the server has a listener for it (without one, an upgrade request
    // is an ordinary request): ours is added alongside the first other one (the agent channel's), so it
    // never changes how the server answers.
    const onUpgrade = (req: IncomingMessage) => { this.upgraded.add(req.socket); this.idle.delete(req.socket); };
    let watching = false;
    const watchUpgrades = () => { if (!watching) { watching = true; server.prependListener('upgrade', onUpgrade); } };
    if (server.listenerCount('upgrade') > 0) watchUpgrades();
    else server.on('newListener', (event: string | symbol) => { if (event === 'upgrade') watchUpgrades(); });
  }

  private requestStarted(req: IncomingMessage, res: ServerResponse): void {
    const socket = req.socket;
    this.inFlight.set(socket, (this.inFlight.get(socket) ?? 0) + 1);
    // A body still to come: the connection stays counted, in its place, until the body has arrived whole
    // or the answer is gone, whichever is first (a route that answers without reading a body never sees
    // its end).
    const hasBody = req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
    if (hasBody && !req.complete) {
      // A request pipelined behind one in flight left the count with that one: counted again, as the
      // newest (else a whole request sent first let the body behind it drip uncounted, up to the request bound).
      if (!this.idle.has(socket)) this.becameIdle(socket);
      // Whichever comes first ends the wait: a body ending after the answer (Node reads it through, to
      // keep the connection) finds the connection idle between requests, counted again, and must leave it so.
      const arrived = () => { req.off('end', arrived); res.off('close', arrived); this.idle.delete(socket); };
      req.once('end', arrived);
      res.once('close', arrived);
    } else {
      this.idle.delete(socket);
    }
    // 'close' comes once per response, answered or aborted.
    res.once('close', () => {
      const left = (this.inFlight.get(socket) ?? 1) - 1;
      this.inFlight.set(socket, left);
      // (a connection whose last answer ends it is closing, not idle)
      if (left === 0 && !socket.destroyed && !socket.writableEnded && !this.upgraded.has(socket)) this.becameIdle(socket);
    });
  }

  private becameIdle(socket: Socket): void {
    this.idle.set(socket, Date.now());
    if (this.count > this.o.max) this.shedOldest();
  }

  /** Closes connections until the bound holds, those without a whole request longest first. */
  private shedOldest(): void {
    const now = Date.now();
    while (this.count > this.o.max) {
      const [socket, since] = this.idle.entries().next().value as [Socket, number];
      this.idle.delete(socket);
      this.shedCount?.inc();
      if (this.shedLog.admit()) {
        this.o.log.warn({ remote: socket.remoteAddress, idleMs: now - since, max: this.o.max },
          'connection closed: too many connections without a request (--idle-connections-max); the one waiting longest is closed');
      }
      socket.destroy();
    }
  }
}
