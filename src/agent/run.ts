// `palisade agent --server URL[,URL…] --token TOKEN [--state-dir DIR] [--netns NAME] [--reconcile-interval 10s] [--uplink DEV]
//   [--dataplane auto|nftables|iptables|null] [--counters-interval 30s] [--metrics-listen HOST:PORT]`
// The server list and the token may also come from the environment (PALISADE_SERVER, PALISADE_AGENT_TOKEN).
import { watchLinks, watchRuleset } from './link-watch.js';
import { isOwnProcess } from './lifelong.js';
import os from 'node:os';
import path from 'node:path';
import { Command, CommanderError } from 'commander';
import pino from 'pino';
import { createRunner } from '../dataplane/exec.js';
import { Agent, parseServers } from './agent.js';
import { preflight, toolsFor } from './preflight.js';
import { kernelDataplane } from './kernel.js';
import { BACKENDS, type BackendName } from '../dataplane/choose.js';
import { NullDataplane } from './null-dataplane.js';
import { simulatedPorts } from './sim-ports.js';
import { createConntrack } from '../dataplane/conntrack.js';
import { AgentMetrics, conntrackUsage, parseListen, serveMetrics } from './metrics.js';
import { LOG_LEVELS } from '../model/log-levels.js';
import { HOSTNAME_RE, MAX_HOSTNAME_CHARS } from '../protocol/index.js';

/** "10s", "500ms", "2m" or plain milliseconds. */
export function parseDuration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(s.trim());
  if (!m) throw new Error(`not a duration: ${s} (e.g. 10s, 500ms)`);
  const n = Number(m[1]);
  return Math.round(m[2] === 'ms' ? n : m[2] === 'm' ? n * 60_000 : m[2] === 's' ? n * 1000 : n);
}

export async function agentCommand(argv: string[]): Promise<number> {
  const program = new Command('palisade agent')
    .description('Run the host agent: enforce this host\'s desired state from the server in netfilter')
    .option('--server <url[,url...]>', 'server URL(s), comma-separated (http://host:8080 or ws://host:8080/agent; or PALISADE_SERVER)')
    .option('--server-order <order>', 'try the servers in random order, or as listed (random|listed)', 'random')
    .option('--keepalive <duration>', 'ping period; a server silent for three periods is left for the next', '10s')
    .option('--token <token>', 'host token from addHost (or PALISADE_AGENT_TOKEN)')
    .option('--state-dir <dir>', 'where the applied desired state is kept', '/var/lib/palisade/agent')
    .option('--netns <name>', 'run the host side inside this network namespace')
    .option('--reconcile-interval <duration>', 'drift check period', '10s')
    .option('--uplink <dev...>', 'bridge port(s) that are uplinks (default: every non-VM port)')
    .option('--hostname <name>', 'name reported to the server')
    .option('--dataplane <kind>', 'auto (nftables when `nft -c` proves the kernel supports it, else iptables), nftables, iptables, or null (render only, touches no kernel)', 'auto')
    .option('--counters-interval <duration>', 'how often rule counters are read for per-rule hits (0: never)', '30s')
    .option('--metrics-listen <host:port>', 'serve Prometheus metrics at http://HOST:PORT/metrics (default: off)')
    .option('--backoff-max <duration>', 'longest wait between reconnects', '30s')
    .option('--log-level <level>', 'log level', 'info')
    .exitOverride();
  try {
    program.parse(argv, { from: 'user' });
  } catch (e) {
    // commander already printed help or the usage error
    if (e instanceof CommanderError) return e.code === 'commander.helpDisplayed' || e.code === 'commander.version' ? 0 : 2;
    throw e;
  }
  const o = program.opts<{ server?: string; serverOrder: string; keepalive: string; token?: string; stateDir: string; netns?: string; reconcileInterval: string; uplink?: string[]; hostname?: string; dataplane: string; backoffMax: string; logLevel: string; countersInterval: string; metricsListen?: string }>();
  const token = o.token ?? process.env.PALISADE_AGENT_TOKEN;
  if (!token) throw new Error('--token (or PALISADE_AGENT_TOKEN) is required');
  const serverList = o.server ?? process.env.PALISADE_SERVER;
  if (!serverList) throw new Error('--server (or PALISADE_SERVER) is required');
  const servers = parseServers(serverList);
  if (o.serverOrder !== 'random' && o.serverOrder !== 'listed') throw new Error(`--server-order must be random or listed, not ${o.serverOrder}`);
  if (!LOG_LEVELS.includes(o.logLevel)) throw new Error(`--log-level must be one of ${LOG_LEVELS.join(', ')}, not ${JSON.stringify(o.logLevel)}`);
  const log = pino({ level: o.logLevel, base: { svc: 'palisade-agent', ...(o.netns ? { netns: o.netns } : {}) } }, pino.destination(2));
  if (!['auto', 'null', ...BACKENDS].includes(o.dataplane)) {
    process.stderr.write(`palisade agent: --dataplane must be auto, nftables, iptables or null (got ${JSON.stringify(o.dataplane)})\n`);
    return 2;
  }
  // The server refuses a hello whose hostname it could not store or show: refused here, once, not by every server at every connect.
  const hostname = o.hostname ?? (o.netns ? `${os.hostname()}/${o.netns}` : os.hostname());
  if (hostname.length > MAX_HOSTNAME_CHARS || !HOSTNAME_RE.test(hostname)) {
    process.stderr.write(`palisade agent: --hostname must be at most ${MAX_HOSTNAME_CHARS} characters without control characters (got ${JSON.stringify(hostname.slice(0, 80))})\n`);
    return 2;
  }
  let countersMs: number;
  let listen: { host: string; port: number } | null = null;
  try {
    try { countersMs = parseDuration(o.countersInterval); } catch (e) { throw new Error(`--counters-interval: ${e instanceof Error ? e.message : String(e)}`); }
    if (countersMs !== 0 && countersMs < 100) throw new Error(`--counters-interval must be 0 (off) or at least 100ms, got ${o.countersInterval}`);
    if (o.metricsListen !== undefined) listen = parseListen(o.metricsListen);
  } catch (e) {
    process.stderr.write(`palisade agent: ${e instanceof Error ? e.message : String(e)}\n`);
    return 2;
  }
  const runner = createRunner({ netns: o.netns ?? null });
  const simulated = o.dataplane === 'null';
  const kernel = simulated ? null : await kernelDataplane(runner, { uplinks: o.uplink ?? [], backend: o.dataplane as BackendName | 'auto' });
  if (kernel) log.info({ dataplane: kernel.dataplane.name, reason: kernel.reason }, `agent: dataplane ${kernel.dataplane.name}`);
  // The agent's own registry; its gauges read the agent at scrape time.
  let agentRef: Agent | null = null;
  const metrics = listen ? new AgentMetrics(() => ({
    appliedRevision: agentRef?.appliedRevision ?? null, connected: agentRef?.connected ?? false, vms: agentRef?.state?.vms.length ?? 0,
  }), undefined, kernel ? () => conntrackUsage(runner) : undefined) : undefined;
  const metricsServer = listen && metrics ? await serveMetrics(metrics.registry, listen.host, listen.port).catch((e: unknown) => {
    process.stderr.write(`palisade agent: ${e instanceof Error ? e.message : String(e)}\n`);
    return null;
  }) : null;
  if (listen && !metricsServer) return 2;
  if (listen) log.info({ listen: `${listen.host}:${listen.port}` }, 'agent: metrics at /metrics');
  const agent = new Agent({
    server: servers,
    serverOrder: o.serverOrder,
    keepaliveMs: parseDuration(o.keepalive),
    token,
    hostname,
    stateDir: path.resolve(o.stateDir),
    dataplane: kernel ? kernel.dataplane : new NullDataplane(),
    discover: kernel ? kernel.discover : async (s) => simulatedPorts(s),
    preflight: kernel ? (bridges: string[]) => preflight(runner, toolsFor(kernel.dataplane.name as BackendName), bridges) : null,
    retire: kernel?.others ?? [],
    ...(kernel ? { dropLog: { netns: o.netns ?? null, ...(metrics ? { onLost: (n: number) => metrics.dropLogRecordsLost(n) } : {}) } } : {}),
    conntrack: kernel ? createConntrack(o.netns ?? null) : null,
    reconcileMs: parseDuration(o.reconcileInterval),
    backoffMaxMs: parseDuration(o.backoffMax),
    countersMs,
    ...(metrics ? { metrics } : {}),
    ...(kernel ? { watchLinks: (onChange: () => void) => watchLinks({ netns: o.netns ?? null, log, onChange }) } : {}),
    ...(kernel?.dataplane.name === 'nftables' ? { watchRuleset: (onChange: () => void) => watchRuleset({ netns: o.netns ?? null, log, onChange, ours: isOwnProcess }) } : {}),
    log,
  });
  agentRef = agent;
  await agent.start();
  log.info({ servers: agent.servers, netns: o.netns ?? null, dataplane: kernel ? kernel.dataplane.name : 'null' }, 'agent started');
  return new Promise<number>((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal }, 'agent stopping; rules stay in place');
      metricsServer?.close();
      metricsServer?.closeAllConnections();
      agent.stop().then(() => resolve(0), () => resolve(1));
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}
