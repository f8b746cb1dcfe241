// The server's /metrics: API request counts and latencies (the dispatcher reports each request and
// job through ApiObserver), inventory gauges read from the store at scrape time (hosts by state, VMs
// by sync state, async jobs by state — no control-plane state needed), and the route itself.
//
// Access: Prometheus scrapes without credentials, so /metrics is served on the API port without the
// API's signature. It shows only aggregate numbers (no ids, names or addresses). `palisade server
// --metrics off` removes the route; `--metrics-allow CIDR[,CIDR…]` answers 403 to every other client
// address (e.g. the Prometheus servers only).
import type { FastifyInstance } from 'fastify';
import type { Db } from '../store/db.js';
import { inventoryCounts, type InventoryCounts } from '../store/queries/stats.js';
import { SERVER_METRICS, HOST_STATES, SYNC_STATES } from '../metrics/catalog.js';
import { MetricsRegistry, bounded } from '../metrics/registry.js';
import { cidrRange, parseCidr, parseIp, type Cidr } from '../policy/cidr.js';

export const METRICS_PATH = '/metrics';

/** What the dispatcher reports; `command` is a registered command's name or null (unknown / none). */
export interface ApiObserver {
  request(command: string | null, code: number, seconds: number): void;
  job(command: string, code: number, seconds: number): void;
}

/** Store-derived gauges are computed once per scrape, however many gauges read them. */
const COUNTS_TTL_MS = 1000;

export class ApiMetrics implements ApiObserver {
  private readonly requests;
  private readonly duration;
  private readonly jobsFinished;
  private readonly jobDuration;
  private counts: { at: number; value: Promise<InventoryCounts> } | null = null;

  constructor(readonly metrics: MetricsRegistry, private readonly db: Db) {
    this.requests = metrics.counter(SERVER_METRICS.apiRequests);
    this.duration = metrics.histogram(SERVER_METRICS.apiDuration);
    this.jobsFinished = metrics.counter(SERVER_METRICS.jobsFinished);
    this.jobDuration = metrics.histogram(SERVER_METRICS.jobDuration);
    metrics.gauge(SERVER_METRICS.hosts, async (g) => {
      const c = await this.inventory();
      g.reset();
      for (const s of HOST_STATES) g.set({ state: s }, 0);
      for (const [state, n] of c.hostsByState) g.inc({ state: bounded(SERVER_METRICS.hosts, 'state', state) }, n);
    });
    metrics.gauge(SERVER_METRICS.vms, async (g) => {
      const c = await this.inventory();
      g.reset();
      for (const s of SYNC_STATES) g.set({ sync_state: s }, 0);
      for (const [state, n] of c.vmsBySyncState) g.inc({ sync_state: bounded(SERVER_METRICS.vms, 'sync_state', state) }, n);
    });
    metrics.gauge(SERVER_METRICS.jobs, async (g) => {
      const c = await this.inventory();
      g.set({ state: 'pending' }, c.jobsByStatus.get(0) ?? 0);
      g.set({ state: 'succeeded' }, c.jobsByStatus.get(1) ?? 0);
      g.set({ state: 'failed' }, c.jobsByStatus.get(2) ?? 0);
    });
  }

  private inventory(): Promise<InventoryCounts> {
    const now = Date.now();
    if (!this.counts || now - this.counts.at > COUNTS_TTL_MS) {
      const value = inventoryCounts(this.db);
      this.counts = { at: now, value };
      value.catch(() => { this.counts = null; });
    }
    return this.counts.value;
  }

  request(command: string | null, code: number, seconds: number): void {
    const labels = { command: command ?? 'unknown', code: bounded(SERVER_METRICS.apiRequests, 'code', String(code)) };
    this.requests.inc(labels);
    this.duration.observe(labels, seconds);
  }

  job(command: string, code: number, seconds: number): void {
    this.jobsFinished.inc({ command, result: code === 0 || code === 200 ? 'succeeded' : 'failed' });
    this.jobDuration.observe({ command }, seconds);
  }
}

/** Parses `--metrics-allow`: CIDRs or single addresses, comma separated. Throws on a bad entry. */
export function parseAllowList(text: string): Cidr[] {
  return text.split(',').map((s) => s.trim()).filter(Boolean).map((s) => {
    const c = parseCidr(s.includes('/') ? s : `${s}/${s.includes(':') ? 128 : 32}`);
    if (!c) throw new Error(`--metrics-allow: ${s} is not an address or CIDR`);
    return c;
  });
}

export function addressAllowed(allow: readonly Cidr[] | null, address: string): boolean {
  if (!allow) return true;
  const plain = address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
  const ip = parseIp(plain);
  if (!ip) return false;
  return allow.some((c) => {
    if (c.family !== ip.family) return false;
    const [s, e] = cidrRange(c);
    return ip.value >= s && ip.value <= e;
  });
}

/** GET /metrics in Prometheus text format; `allow` null = any client. */
export function registerMetricsRoute(app: FastifyInstance, metrics: MetricsRegistry, allow: readonly Cidr[] | null): void {
  app.get(METRICS_PATH, async (req, reply) => {
    if (!addressAllowed(allow, req.ip)) return reply.code(403).header('content-type', 'text/plain; charset=utf-8').send('forbidden\n');
    const body = await metrics.text();
    return reply.code(200).header('content-type', metrics.contentType).send(body);
  });
}
