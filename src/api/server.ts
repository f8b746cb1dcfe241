// HTTP front of the API: /client/api over GET (query) and POST (form body), CloudStack JSON envelopes.
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyRequest } from 'fastify';
import formbody from '@fastify/formbody';
import type { CommandDef } from './command.js';
import { Dispatcher, type DispatcherDeps } from './dispatcher.js';
import { allCommands } from './registry.js';
import { SessionAuth, parseCookies, type Transport } from './sessions.js';
import { registerConsole } from './console.js';

export const API_PATH = '/client/api';
const JSON_TYPE = 'application/json; charset=UTF-8';

/**
 * The dispatcher's dependencies; `commands` defaults to every registered command, `sessions` to
 * login sessions with default timeouts; `console: false` leaves out the web console.
 */
export type ServerOptions = Omit<DispatcherDeps, 'commands'> & { commands?: CommandDef[]; console?: boolean };

function transportOf(req: FastifyRequest): Transport {
  const h = req.headers;
  const one = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v);
  return {
    method: req.method, cookies: parseCookies(one(h.cookie)), origin: one(h.origin), host: one(h.host),
    fetchSite: one(h['sec-fetch-site']), address: req.ip, secure: req.protocol === 'https',
  };
}

/** Decode a query string or form body: `+` is a space, the first occurrence of a name wins. */
export function decodeForm(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of new URLSearchParams(s)) if (!(k in out)) out[k] = v;
  return out;
}

const dispatchers = new WeakMap<FastifyInstance, Dispatcher>();
/** The dispatcher behind a built server (in-process callers: tests, bench). */
export function dispatcherOf(app: FastifyInstance): Dispatcher {
  const d = dispatchers.get(app);
  if (!d) throw new Error('not an API server');
  return d;
}

/** The fastify instance serving /client/api; not listening yet (the caller adds the agent channel and listens). */
export async function buildServer(opts: ServerOptions): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: opts.log as unknown as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    routerOptions: { querystringParser: decodeForm },
    bodyLimit: 4 * 1024 * 1024,
  });
  await app.register(formbody, { parser: decodeForm });
  const sessions = opts.sessions ?? new SessionAuth({ db: opts.db, log: opts.log, now: opts.now });
  const dispatcher = new Dispatcher({ ...opts, sessions, commands: opts.commands ?? allCommands() });

  const handler = async (req: FastifyRequest, reply: import('fastify').FastifyReply) => {
    const params: Record<string, string> = { ...(req.query as Record<string, string>) };
    if (req.body && typeof req.body === 'object') {
      for (const [k, v] of Object.entries(req.body as Record<string, unknown>)) if (!(k in params) && typeof v === 'string') params[k] = v;
    }
    const r = await dispatcher.handle(params, transportOf(req));
    if (r.cookies?.length) reply.header('set-cookie', r.cookies);
    if (r.headers) reply.headers(r.headers);
    // Session answers are per user: never cached by a browser or a proxy.
    if (r.cookies || r.headers || Object.keys(params).some((k) => k.toLowerCase() === 'sessionkey')) reply.header('cache-control', 'no-store');
    return reply.code(r.status).header('content-type', JSON_TYPE).send(JSON.stringify(r.body));
  };
  app.get(API_PATH, handler);
  app.post(API_PATH, handler);
  if (opts.console !== false) registerConsole(app);

  // Never leak stack traces: any framework-level failure becomes a CloudStack 530 envelope.
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
