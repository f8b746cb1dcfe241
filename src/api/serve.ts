// `palisade server`: open the store, first-start bootstrap, API + agent channel, graceful shutdown.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { randomUUID } from 'node:crypto';
import { Command, CommanderError } from 'commander';
import pino from 'pino';
import { openPostgres, openStore, type StoreConfig } from '../store/db.js';
import { createControlPlane } from '../control/index.js';
import { PENDING_HELLOS_MAX } from '../control/sessions.js';
import { buildServer } from './server.js';
import { IDLE_CONNECTIONS_MAX } from './idle-connections.js';
import { descriptorsNeeded, ownOpenFilesLimit } from './descriptors.js';
import { bootstrap } from './bootstrap.js';
import { deadServerJobResult, failOrphanJobs } from './dispatcher.js';
import { SessionAuth } from './sessions.js';
import { ApiMetrics, parseAllowList, registerMetricsRoute } from './metrics.js';
import { parseAllowedHosts, type AllowedHosts } from './hosts.js';
import { MetricsRegistry } from '../metrics/registry.js';
import { pruneDrops } from '../store/queries/drops.js';
import { purgeHistory } from '../store/queries/retention.js';
import { readRetention } from '../store/queries/settings.js';
import { LOG_LEVELS } from '../model/log-levels.js';

const DROP_PRUNE_MS = 3600_000;

/** What the last-resort handler logs: tests that run the server look for it in its log and fail. */
export const UNHANDLED_REJECTION = 'unhandled promise rejection (a bug; the server keeps serving)';

export function parseListen(s: string): { host: string; port: number } {
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(s);
  if (!m) throw new Error(`--listen expects host:port, got ${s}`);
  const port = Number(m[2]);
  if (!(port >= 1 && port <= 65535)) throw new Error(`--listen: the port must be from 1 to 65535, got ${m[2]}`);
  return { host: m[1] || '127.0.0.1', port };
}

/** A stable identity per data dir: several servers may share one PostgreSQL. */
function readServerId(dataDir: string): string {
  const f = path.join(dataDir, 'server-id');
  if (!fs.existsSync(f)) fs.writeFileSync(f, randomUUID() + '\n', { mode: 0o600 });
  return fs.readFileSync(f, 'utf8').trim();
}

export async function serverCommand(argv: string[]): Promise<number> {
  const program = new Command('palisade server')
    .description('Run the management server (CloudStack-compatible API at /client/api, agent channel)')
    .option('--listen <host:port>', 'address to listen on', '127.0.0.1:8080')
    .option('--data-dir <dir>', 'data directory (SQLite store, admin credentials)', './palisade-data')
    .option('--db <url>', 'PostgreSQL URL (postgres://…) instead of the embedded SQLite store')
    .option('--name <name>', 'name of this server, shown by listHosts as managementservername (default: hostname:port)')
    .option('--log-level <level>', 'log level', 'info')
    .option('--session-timeout <seconds>', 'idle timeout of login sessions (web console), seconds', '1800')
    .option('--metrics <on|off>', 'serve Prometheus metrics at /metrics on the API port (no API signature needed)', 'on')
    .option('--metrics-allow <cidrs>', 'answer /metrics only to these client addresses (CIDRs or addresses, comma separated); default: any')
    .option('--allowed-hosts <names>', 'host names (name or name:port, comma separated) the web console, /metrics, login and session calls answer to; others get 421/401 (against DNS rebinding); signed API calls and agents answer on any name; default: any name')
    .option('--pending-agents-max <n>', 'agent connections awaiting an accepted hello held at once; more are refused at once (close code 4503) and their agents try another server', String(PENDING_HELLOS_MAX))
    .option('--idle-connections-max <n>', 'HTTP connections without a whole request (not yet sent one, its body still arriving, or idle between keep-alive requests; agent sessions not counted) held at once; one more closes the one waiting longest', String(IDLE_CONNECTIONS_MAX))
    .option('--trust-proxy <cidrs>', 'reverse proxies (CIDRs or addresses, comma separated) whose X-Forwarded-For/-Proto/-Host give the client\'s address, scheme and host; default: none (the headers are ignored)')
    .exitOverride();
  try {
    program.parse(argv, { from: 'user' });
  } catch (e) {
    // commander already printed the help or the usage error
    if (e instanceof CommanderError) return e.code === 'commander.helpDisplayed' ? 0 : 2;
    throw e;
  }
  const o = program.opts<{ listen: string; dataDir: string; db?: string; name?: string; logLevel: string; sessionTimeout: string; metrics: string; metricsAllow?: string; trustProxy?: string; allowedHosts?: string; pendingAgentsMax: string; idleConnectionsMax: string }>();
  if (o.db !== undefined && !/^postgres(ql)?:\/\//i.test(o.db)) throw new Error(`--db must be a postgres:// or postgresql:// URL (without it the embedded SQLite store is used), not ${JSON.stringify(o.db.replace(/\/\/[^@/]*@/, '//…@'))}`);
  if (!LOG_LEVELS.includes(o.logLevel)) throw new Error(`--log-level must be one of ${LOG_LEVELS.join(', ')}, not ${JSON.stringify(o.logLevel)}`);
  const sessionTimeout = Number(o.sessionTimeout);
  if (!Number.isInteger(sessionTimeout) || sessionTimeout < 1) {
    process.stderr.write(`palisade server: --session-timeout expects a whole number of seconds, got ${o.sessionTimeout}\n`);
    return 2;
  }
  const pendingHellosMax = Number(o.pendingAgentsMax);
  if (!/^\d+$/.test(o.pendingAgentsMax) || !Number.isSafeInteger(pendingHellosMax) || pendingHellosMax < 1) {
    process.stderr.write(`palisade server: --pending-agents-max expects a whole number of connections, at least 1, got ${o.pendingAgentsMax}\n`);
    return 2;
  }
  const idleConnectionsMax = Number(o.idleConnectionsMax);
  if (!/^\d+$/.test(o.idleConnectionsMax) || !Number.isSafeInteger(idleConnectionsMax) || idleConnectionsMax < 1) {
    process.stderr.write(`palisade server: --idle-connections-max expects a whole number of connections, at least 1, got ${o.idleConnectionsMax}\n`);
    return 2;
  }
  if (o.metrics !== 'on' && o.metrics !== 'off') { process.stderr.write(`palisade server: --metrics expects on or off, got ${o.metrics}\n`); return 2; }
  let metricsAllow: ReturnType<typeof parseAllowList> | null = null;
  try { metricsAllow = o.metricsAllow !== undefined ? parseAllowList(o.metricsAllow) : null; } catch (e) { process.stderr.write(`palisade server: ${(e as Error).message}\n`); return 2; }
  let trustProxy: string[] = [];
  try {
    // Checked like --metrics-allow; fastify (proxy-addr) takes the same texts.
    if (o.trustProxy !== undefined) { parseAllowList(o.trustProxy); trustProxy = o.trustProxy.split(',').map((x) => x.trim()).filter(Boolean); }
  } catch (e) { process.stderr.write(`palisade server: ${(e as Error).message.replace('--metrics-allow', '--trust-proxy')}\n`); return 2; }
  let allowedHosts: AllowedHosts | null = null;
  try { allowedHosts = o.allowedHosts !== undefined ? parseAllowedHosts(o.allowedHosts) : null; } catch (e) { process.stderr.write(`palisade server: ${(e as Error).message}\n`); return 2; }
  const log = pino({ level: o.logLevel, base: { svc: 'palisade-server' } });
  // Last resort: a promise nobody handled is a bug, logged loudly; it must not take the API down.
  process.on('unhandledRejection', (reason) => { log.error({ err: reason }, UNHANDLED_REJECTION); });
  const listen = parseListen(o.listen);
  // The address first: a server that cannot listen must not create a data dir or write credentials.
  const taken = await new Promise<string | null>((resolve) => {
    const probe = net.createServer();
    probe.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    probe.listen({ host: listen.host, port: listen.port, exclusive: true }, () => probe.close(() => resolve(null)));
  });
  if (taken) { process.stderr.write(`palisade server: cannot listen on ${o.listen}: ${taken}\n`); return 2; }
  const dataDir = path.resolve(o.dataDir);
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });

  const cfg: StoreConfig = o.db ? { kind: 'postgres', url: o.db } : { kind: 'sqlite', file: path.join(dataDir, 'palisade.db') };
  // (a lost idle connection is replaced by the pool: worth a line in the server's own log, as JSON)
  const idleLost = (err: Error) => log.warn({ err: err.message }, 'store: an idle PostgreSQL connection was lost; it will be replaced');
  const db = await openStore(cfg, idleLost).catch((e: unknown) => {
    throw new Error(`cannot open the store (${cfg.kind === 'sqlite' ? cfg.file : 'PostgreSQL at --db'}): ${e instanceof Error ? e.message : String(e)}`);
  });
  const boot = await bootstrap(db);
  const credFile = path.join(dataDir, 'admin-credentials.json');
  if (boot.created || boot.password || !fs.existsSync(credFile)) {
    // The password is known only when it is set (the store keeps its scrypt hash), so a rewritten file
    // without a new one has only the keys.
    const creds = { username: 'admin', domain: '/', apikey: boot.apikey, secretkey: boot.secretkey, ...(boot.password ? { password: boot.password } : {}) };
    // write-then-rename: a crash mid-write never leaves a truncated file (which would not be rewritten)
    const tmp = `${credFile}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(creds, null, 2) + '\n', { mode: 0o600 });
    fs.chmodSync(tmp, 0o600);
    fs.renameSync(tmp, credFile);
    log.info({ file: credFile }, boot.created ? 'first start: created ROOT domain, admin account and zone; admin API keys and password written' : 'admin credentials written');
  }
  const serverId = readServerId(dataDir);
  const orphans = await failOrphanJobs(db, new Date().toISOString(), serverId);
  if (orphans) log.warn({ jobs: orphans }, 'marked async jobs interrupted by the previous shutdown as failed');

  const serverName = o.name ?? `${os.hostname()}:${listen.port}`;
  // PostgreSQL: the heartbeat and leases get connections of their own, so API load cannot starve them
  // (a server that stops heartbeating is taken for dead by the others): the tick, this server's lease
  // writes (one at a time) and the heartbeat alone while a tick is late (control/cluster.ts).
  const clusterDb = cfg.kind === 'postgres' ? openPostgres(cfg.url, idleLost, 3) : undefined;
  const metrics = new MetricsRegistry({ process: true });
  const cp = await createControlPlane(db, log, {
    serverId, serverName, listenUrl: cfg.kind === 'postgres' ? cfg.url : undefined, clusterDb, metrics, pendingHellosMax,
    jobFailure: (server) => deadServerJobResult(server.name, new Date(server.heartbeatAt)),
  });
  const sessions = new SessionAuth({ db, log, timeoutSeconds: sessionTimeout, allowedHosts });
  const app = await buildServer({ db, sink: cp.sink, connections: cp.connections, log, serverId, sessions, observer: new ApiMetrics(metrics, db), trustProxy, allowedHosts,
    metrics, idleConnectionsMax,
    ...(cfg.kind === 'postgres' ? { fence: cp.fence, storeReachable: cp.storeReachable } : {}) });
  if (o.metrics === 'on') registerMetricsRoute(app, metrics, metricsAllow);
  // The drop log's age bound also holds while no agent reports anything (ingestion prunes otherwise);
  // finished jobs and old events go as CloudStack's job.expire.minutes / event.purge.delay say, at start
  // (a restart after a flood cleans up) and hourly.
  const purgeHistoryNow = () => readRetention(db).then((r) => purgeHistory(db, new Date(), r))
    .then((n) => { if (n.jobs || n.events) log.info(n, 'purged expired async jobs and events'); })
    .catch((err) => log.error({ err }, 'history purge failed'));
  const pruner = setInterval(() => {
    pruneDrops(db, new Date()).catch((err) => log.error({ err }, 'drop log prune failed'));
    void purgeHistoryNow();
  }, DROP_PRUNE_MS);
  pruner.unref();
  void purgeHistoryNow();
  await cp.register(app);
  await app.listen({ host: listen.host, port: listen.port });
  log.info({ url: `http://${listen.host}:${listen.port}/client/api`, console: `http://${listen.host}:${listen.port}/`, store: cfg.kind, server: serverName, id: serverId }, 'palisade server listening');
  const openFiles = ownOpenFilesLimit();
  const hosts = await db.selectFrom('hosts').select((eb) => eb.fn.countAll().as('n')).where('removed', 'is', null).executeTakeFirst()
    .then((row) => Number(row?.n ?? 0), () => 0);
  const needed = descriptorsNeeded({ idleConnectionsMax, pendingAgentsMax: pendingHellosMax, hosts });
  if (openFiles !== null && openFiles < needed) {
    log.warn({ openFilesLimit: openFiles, needed, idleConnectionsMax, pendingAgentsMax: pendingHellosMax, hosts },
      'this process may open fewer files than its connection bounds allow: a flood of connections could leave none for API clients and agents; raise the limit (systemd LimitNOFILE, ulimit -n) or lower --idle-connections-max / --pending-agents-max');
  }

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, 'shutting down');
      (async () => {
        clearInterval(pruner);
        await app.close();
        await cp.close();
        await clusterDb?.destroy();
        await db.destroy();
      })().then(() => resolve(0), (err) => { log.error({ err }, 'shutdown failed'); resolve(1); });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}
