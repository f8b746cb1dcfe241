// HTTP front of the API: /client/api over GET (query) and POST (form body). Answers CloudStack's JSON
// envelopes when the request says `response=json`, else CloudStack's XML (its default). Before anything
// else a request is held to the bounds of limits.ts: the body size (while it is read) and the number of
// parameters (counted before they are decoded), and the time to receive it; such refusals are
// CloudStack-shaped 431 errors (a late request: 408, from Node). Connections without a whole request
// are bounded in number (idle-connections.ts: the one waiting longest is closed). Login
// sessions (cookie + sessionkey) come in through the transport; the web console is served at `/`.
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { CommandDef } from './command.js';
import { Dispatcher, type ApiReply, type DispatcherDeps } from './dispatcher.js';
import { allCommands } from './registry.js';
import { envelope, errorBody } from './envelope.js';
import { countPairs, queryOf, readParams, wantsJson, wantsJsonRaw } from './form.js';
import { HEADERS_TIMEOUT_MS, KEEP_ALIVE_TIMEOUT_MS, MAX_BODY_BYTES, MAX_PARAMETERS, REQUEST_TIMEOUT_MS } from './limits.js';
import { IDLE_CONNECTIONS_MAX, IdleConnections } from './idle-connections.js';
import type { MetricsRegistry } from '../metrics/registry.js';
import { XML_TYPE, toXml } from './xml.js';
import { IDLE_HEADER, SESSION_COOKIE, SessionAuth, cookieValues, type Transport } from './sessions.js';
import { registerConsole } from './console.js';
import { hostAllowed, type AllowedHosts } from './hosts.js';
import { AGENT_PATH } from '../protocol/messages.js';

export const API_PATH = '/client/api';
const JSON_TYPE = 'application/json; charset=UTF-8';

/**
 * The dispatcher's dependencies; `commands` defaults to every registered command, `sessions` to
 * login sessions with default timeouts; `console: false` leaves out the web console.
 */
export type ServerOptions = Omit<DispatcherDeps, 'commands'> & {
  commands?: CommandDef[]; console?: boolean;
  /** Time to receive a whole request (default REQUEST_TIMEOUT_MS; tests shorten it, and the head's bound with it). */
  requestTimeoutMs?: number;
  /** Connections without a whole request held at once (default IDLE_CONNECTIONS_MAX; `--idle-connections-max`). */
  idleConnectionsMax?: number;
  /** The server's registry: the idle connection metrics are registered in it. */
  metrics?: MetricsRegistry;
  /**
   * Reverse proxies (addresses or CIDRs) whose X-Forwarded-For / -Proto / -Host are believed. Without
   * them those headers are ignored (a client could claim any address); behind a proxy every client then
   * has the proxy's address, and the login limiter's per-address bound would lock everyone out at once.
   */
  trustProxy?: string[];
  /** Host names browsers may use (hosts.ts); the console and other non-API routes answer others 421. */
  allowedHosts?: AllowedHosts | null;
};

function transportOf(req: FastifyRequest): Transport {
  const h = req.headers;
  const one = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v);
  // req.ip, req.host and req.protocol are the client's as a trusted proxy reports them (trustProxy),
  // else the connection's and the Host header.
  return {
    method: req.method, sessionCookies: cookieValues(one(h.cookie), SESSION_COOKIE), origin: one(h.origin), host: req.host || undefined,
    fetchSite: one(h['sec-fetch-site']), address: req.ip, secure: req.protocol === 'https',
    ...(/^\d{1,12}$/.test(one(h[IDLE_HEADER]) ?? '') ? { idleMs: Number(one(h[IDLE_HEADER])) } : {}),
  };
}

/** Decode a query string or form body: `+` is a space, the first occurrence of a name wins; empty past MAX_PARAMETERS pairs. */
export function decodeForm(s: string): Record<string, string> {
  const r = readParams(s, '');
  return r.ok ? r.params : {};
}

const dispatchers = new WeakMap<FastifyInstance, Dispatcher>();
/** The dispatcher behind a built server (in-process callers: tests, bench). */
export function dispatcherOf(app: FastifyInstance): Dispatcher {
  const d = dispatchers.get(app);
  if (!d) throw new Error('not an API server');
  return d;
}

/** Send an API reply as JSON or CloudStack XML. */
export function sendReply(reply: FastifyReply, r: ApiReply, json: boolean): FastifyReply {
  return json
    ? reply.code(r.status).header('content-type', JSON_TYPE).send(JSON.stringify(r.body))
    : reply.code(r.status).header('content-type', XML_TYPE).send(toXml(r.body));
}

const refusal = (code: number, text: string): ApiReply => ({ status: code, body: envelope(undefined, errorBody(code, text)) });

/** The fastify instance serving /client/api; not listening yet (the caller adds the agent channel and listens). */
export async function buildServer(opts: ServerOptions): Promise<FastifyInstance> {
  const requestTimeout = opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
  const app = Fastify({
    loggerInstance: opts.log as unknown as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    // Bounded like the API's own reader, for any other route that looks at req.query.
    routerOptions: { querystringParser: (s: string) => (countPairs(s, MAX_PARAMETERS) > MAX_PARAMETERS ? {} : decodeForm(s)) },
    bodyLimit: 4 * 1024 * 1024,
    // A request's head arrives within HEADERS_TIMEOUT_MS and the whole request within the request bound,
    // else 408 and its connection closed; checked every second (Node's default is every 30 s). WebSocket
    // connections (/agent) leave these checks once upgraded.
    requestTimeout: requestTimeout,
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    ...(opts.trustProxy?.length ? { trustProxy: opts.trustProxy } : {}),
    http: { requestTimeout, headersTimeout: Math.min(HEADERS_TIMEOUT_MS, requestTimeout), connectionsCheckingInterval: Math.min(1000, requestTimeout) },
    // A request Node's parser cannot read (bytes a URL may not hold, headers too large) or that did not
    // arrive in time never reaches a route: answered here, in CloudStack's error shape like every other
    // refusal, and the connection closed.
    clientErrorHandler: (err: NodeJS.ErrnoException, socket) => {
      if (err.code === 'ECONNRESET' || socket.destroyed) return;
      const [status, reason, text] = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'Request Timeout', 'Request not received in time']
        : err.code === 'HPE_HEADER_OVERFLOW' ? [431, 'Request Header Fields Too Large', 'Request headers too large']
          : [400, 'Bad Request', 'Malformed request'];
      const body = JSON.stringify({ errorresponse: { uuidList: [], errorcode: status, errortext: text } });
      if (!socket.writable) { socket.destroy(); return; }
      socket.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: ${JSON_TYPE}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
      // a peer that never reads must not hold the socket
      setTimeout(() => socket.destroy(), 5000).unref();
    },
  });
  // Every connection the server accepts, API, console, /metrics or agent, until it holds a request or is upgraded.
  new IdleConnections({ max: opts.idleConnectionsMax ?? IDLE_CONNECTIONS_MAX, log: opts.log, metrics: opts.metrics }).attach(app.server);
  // DNS rebinding (hosts.ts): every route but the API (whose session calls SessionAuth checks, and
  // whose signed calls need a key) and the agent channel (a token) answers only the allowed names,
  // routes added later (/metrics) too.
  const allowedHosts = opts.allowedHosts;
  if (allowedHosts) {
    app.addHook('onRequest', async (req, reply) => {
      const path = (req.raw.url ?? '').split('?', 1)[0];
      if (path === API_PATH || path === AGENT_PATH || hostAllowed(allowedHosts, req.host || undefined)) return;
      await reply.code(421).header('content-type', 'text/plain; charset=utf-8').header('cache-control', 'no-store')
        .send('Misdirected request: this server does not answer to that host name (--allowed-hosts)\n');
    });
  }
  const sessions = opts.sessions ?? new SessionAuth({ db: opts.db, log: opts.log, now: opts.now, allowedHosts });
  const dispatcher = new Dispatcher({ ...opts, sessions, commands: opts.commands ?? allCommands() });

  // The API in its own context: its body parsers and error handler apply to /client/api only.
  await app.register(async (api) => {
    api.removeAllContentTypeParsers();
    // The form body stays a string until readParams has counted its pairs; other content types are read
    // (within the size bound) and ignored, as a servlet ignores them: parameters then come from the URL.
    api.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: MAX_BODY_BYTES }, (_req, body, done) => done(null, body));
    api.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: MAX_BODY_BYTES }, (_req, _body, done) => done(null, undefined));

    const handler = async (req: FastifyRequest, reply: FastifyReply) => {
      const query = queryOf(req.raw.url ?? '');
      const body = typeof req.body === 'string' ? req.body : '';
      const read = readParams(query, body);
      if (!read.ok) {
        opts.log.info({ parameters: read.count }, 'request refused: too many parameters');
        return sendReply(reply, refusal(431, `Too many parameters in the request: at most ${MAX_PARAMETERS} are accepted`), wantsJsonRaw(query, body));
      }
      const answer = await dispatcher.handle(read.params, { ...transportOf(req), query });
      if (answer.cookies?.length) reply.header('set-cookie', answer.cookies);
      if (answer.headers) reply.headers(answer.headers);
      // Every answer is the caller's own (a signed GET too): never cached by a browser or a proxy, and
      // never read as anything but the JSON or XML it is declared as.
      reply.header('cache-control', 'no-store');
      reply.header('x-content-type-options', 'nosniff');
      return sendReply(reply, answer, wantsJson(read.params));
    };
    api.get(API_PATH, { bodyLimit: MAX_BODY_BYTES }, handler);
    api.post(API_PATH, { bodyLimit: MAX_BODY_BYTES }, handler);

    // Failures before dispatch (body too large, broken encoding, …) never show a stack trace.
    api.setErrorHandler((err, req, reply) => {
      const statusCode = (err as { statusCode?: number }).statusCode;
      const code = (err as { code?: string }).code;
      const json = wantsJsonRaw(queryOf(req.raw.url ?? ''));
      if (code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
        opts.log.info('request refused: body too large');
        return sendReply(reply, refusal(431, `Request body too large: at most ${MAX_BODY_BYTES} bytes are accepted`), json);
      }
      if (typeof statusCode === 'number' && statusCode < 500) {
        opts.log.info({ err: (err as Error).message }, 'malformed request');
        return sendReply(reply, refusal(431, 'Malformed request'), json);
      }
      opts.log.warn({ err }, 'request failed before dispatch');
      return sendReply(reply, refusal(530, 'Internal error'), json);
    });
  });
  if (opts.console !== false) registerConsole(app);

  // Never leak stack traces: any framework-level failure elsewhere becomes a CloudStack 530 envelope.
  app.setErrorHandler((err, _req, reply) => {
    opts.log.warn({ err }, 'request failed before dispatch');
    const status = typeof (err as { statusCode?: number }).statusCode === 'number' && (err as { statusCode: number }).statusCode < 500 ? 431 : 530;
    reply.code(status).header('content-type', JSON_TYPE)
      .send(JSON.stringify({ errorresponse: { uuidList: [], errorcode: status, errortext: status === 431 ? 'Malformed request' : 'Internal error' } }));
  });
  app.setNotFoundHandler((_req, reply) => {
    reply.code(404).header('content-type', JSON_TYPE).send(JSON.stringify({ errorresponse: { uuidList: [], errorcode: 404, errortext: 'Not found' } }));
  });
  app.addHook('onClose', async () => { await dispatcher.drain(); });
  dispatchers.set(app, dispatcher);
  return app;
}
