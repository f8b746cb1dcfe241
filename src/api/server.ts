// HTTP front of the API: /client/api over GET (query) and POST (form body), CloudStack JSON envelopes.
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import formbody from '@fastify/formbody';
import type { CommandDef } from './command.js';
import { Dispatcher, type DispatcherDeps } from './dispatcher.js';
import { allCommands } from './registry.js';

export const API_PATH = '/client/api';
const JSON_TYPE = 'application/json; charset=UTF-8';

/** The dispatcher's dependencies; `commands` defaults to every registered command. */
export type ServerOptions = Omit<DispatcherDeps, 'commands'> & { commands?: CommandDef[] };

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
  const dispatcher = new Dispatcher({ ...opts, commands: opts.commands ?? allCommands() });

  const handler = async (req: { query: unknown; body: unknown }, reply: import('fastify').FastifyReply) => {
    const params: Record<string, string> = { ...(req.query as Record<string, string>) };
    if (req.body && typeof req.body === 'object') {
      for (const [k, v] of Object.entries(req.body as Record<string, unknown>)) if (!(k in params) && typeof v === 'string') params[k] = v;
    }
    const r = await dispatcher.handle(params);
    return reply.code(r.status).header('content-type', JSON_TYPE).send(JSON.stringify(r.body));
  };
  app.get(API_PATH, handler);
  app.post(API_PATH, handler);

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
