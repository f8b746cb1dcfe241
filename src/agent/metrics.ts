// The agent's Prometheus metrics (AGENT_METRICS of metrics/catalog.ts) and `--metrics-listen`: a
// registry of its own, fed by the agent where it does the work (applies, drift repairs, the session),
// served as Prometheus text at GET /metrics on HOST:PORT (plain node:http: one route, nothing else).
//
// Declared here: apply duration, kernel writes and failures per tool (from the apply's steps; a tool
// outside the catalog's closed set is not counted), drift repairs, last successful apply (timestamp and
// seconds since, computed at scrape time), applied revision, server session, VMs.
// Also: conntrack entries and limit (read at scrape time from the host's nf_conntrack_count/_max in
// the agent's namespace), drop-log records lost to a full buffer (the drop-log reader's onLost), and
// packets dropped per reason from the kernel's drop-rule counters (dropReadings: deltas per kernel
// rule incarnation, like per-rule hits; the first reading is a baseline, a counter that went down was
// re-created and counts from 0). Backends without drop counters (iptables today) leave it at 0.
import http from 'node:http';
import net from 'node:net';
import { AGENT_METRICS, AGENT_TOOLS } from '../metrics/catalog.js';
import { MetricsRegistry } from '../metrics/registry.js';
import type { ApplyResult, KernelDropCount } from '../dataplane/backend.js';
import type { Runner } from '../dataplane/exec.js';
import { isDropReason } from '../model/telemetry.js';

/** The tool of an apply step (`ipset restore`, `nft (3/10 VMs)`, `iptables-restore`…), or null for a non-kernel step. */
export function toolOf(step: string): string | null {
  const word = step.trim().split(/[\s(]/)[0];
  return (AGENT_TOOLS as readonly string[]).includes(word) ? word : null;
}

export interface AgentView {
  appliedRevision: number | null;
  connected: boolean;
  vms: number;
}

export class AgentMetrics {
  readonly registry: MetricsRegistry;
  private readonly duration;
  private readonly writes;
  private readonly failures;
  private readonly repairs;
  private lastSuccess: number | null = null;

  private readonly dropped;
  private readonly dropLogLost;
  private readonly counterReadings;
  /** Last value seen per drop-rule slot (null: no reading yet; the first is a baseline). */
  private dropSlots: Map<string, number> | null = null;

  constructor(view: () => AgentView, registry = new MetricsRegistry({ process: true }), conntrack?: () => Promise<{ entries: number; limit: number } | null>) {
    this.registry = registry;
    this.dropped = registry.counter(AGENT_METRICS.droppedPackets);
    this.dropLogLost = registry.counter(AGENT_METRICS.dropLogLost);
    this.counterReadings = registry.counter(AGENT_METRICS.counterReadings);
    if (conntrack) {
      // One read per scrape serves both gauges (entries first: the limit's collect reuses it).
      let pending: Promise<{ entries: number; limit: number } | null> | null = null;
      const once = () => (pending ??= conntrack().catch(() => null).finally(() => { setTimeout(() => { pending = null; }, 0); }));
      registry.gauge(AGENT_METRICS.conntrackEntries, async (g) => { const c = await once(); if (c) g.set(c.entries); });
      registry.gauge(AGENT_METRICS.conntrackLimit, async (g) => { const c = await once(); if (c) g.set(c.limit); });
    }
    this.duration = registry.histogram(AGENT_METRICS.applyDuration);
    this.writes = registry.counter(AGENT_METRICS.kernelWrites);
    this.failures = registry.counter(AGENT_METRICS.applyFailures);
    this.repairs = registry.counter(AGENT_METRICS.driftRepairs);
    registry.gauge(AGENT_METRICS.lastApplySuccess, (g) => { if (this.lastSuccess !== null) g.set(this.lastSuccess / 1000); });
    registry.gauge(AGENT_METRICS.secondsSinceApply, (g) => { g.set(this.lastSuccess === null ? -1 : Math.max(0, (Date.now() - this.lastSuccess) / 1000)); });
    registry.gauge(AGENT_METRICS.appliedRevision, (g) => { const r = view().appliedRevision; if (r !== null) g.set(r); });
    registry.gauge(AGENT_METRICS.serverConnected, (g) => { g.set(view().connected ? 1 : 0); });
    registry.gauge(AGENT_METRICS.vms, (g) => { g.set(view().vms); });
  }

  /** An apply that went through (every step a kernel transaction that wrote). */
  applied(result: ApplyResult, at = Date.now()): void {
    for (const s of result.steps) {
      const tool = toolOf(s.tool);
      if (!tool) continue;
      this.duration.observe({ tool }, s.ms / 1000);
      this.writes.inc({ tool });
    }
    this.lastSuccess = at;
  }

  /** An apply failed in `step` (a DataplaneError's step; anything else counts under no tool). */
  applyFailed(step: string | null): void {
    const tool = step ? toolOf(step) : null;
    if (tool) this.failures.inc({ tool });
  }

  driftRepaired(count: number): void { if (count > 0) this.repairs.inc(count); }

  /** One reading of the VMs' rule counters went through (per-rule hits). */
  counterReading(): void { this.counterReadings.inc(); }

  /** Drop-log records the reader discarded (its buffer towards the server was full). */
  dropLogRecordsLost(count: number): void { if (count > 0) this.dropLogLost.inc(count); }

  /** One reading of the kernel's drop-rule counters. */
  dropReadings(counts: readonly KernelDropCount[]): void {
    const first = this.dropSlots === null;
    const seen = new Map<string, number>();
    for (const c of counts) {
      seen.set(c.slot, c.packets);
      if (first || !isDropReason(c.reason)) continue;
      const last = this.dropSlots!.get(c.slot);
      const delta = last === undefined || c.packets < last ? c.packets : c.packets - last;
      if (delta > 0) this.dropped.inc({ reason: c.reason }, delta);
    }
    this.dropSlots = seen;
  }
}

/** `HOST:PORT` of `--metrics-listen` (`[v6]:PORT` for an IPv6 address); throws a message naming the flag. */
export function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(value.trim());
  const port = m ? Number(m[3]) : NaN;
  const host = m ? (m[1] ?? m[2]) : '';
  if (!m || !(port >= 1 && port <= 65535) || (m[1] !== undefined && net.isIPv6(m[1]) === false)
    || (m[2] !== undefined && /^[0-9.]+$/.test(m[2]) && !net.isIPv4(m[2]))) {
    throw new Error(`--metrics-listen must be HOST:PORT with a port from 1 to 65535 (e.g. 127.0.0.1:9465 or [::1]:9465), got ${JSON.stringify(value)}`);
  }
  return { host, port };
}

/** Serve the registry at GET /metrics; resolves once listening (rejects with a clear message otherwise). */
export async function serveMetrics(registry: MetricsRegistry, host: string, port: number): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') { res.writeHead(405, { allow: 'GET, HEAD' }).end(); return; }
    if (path !== '/metrics') { res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found: the metrics are at /metrics\n'); return; }
    registry.text().then((body) => {
      res.writeHead(200, { 'content-type': registry.contentType });
      res.end(req.method === 'HEAD' ? undefined : body);
    }, (e: unknown) => {
      res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end(`metrics failed: ${e instanceof Error ? e.message : String(e)}\n`);
    });
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(new Error(`--metrics-listen ${host}:${port}: cannot listen (${e.code ?? e.message})`)));
    server.listen(port, host, () => resolve());
  });
  return server;
}

/**
 * The host's conntrack usage (`sysctl` in the agent's namespace: the count is per namespace, the limit
 * the kernel's). null when unreadable (nf_conntrack not loaded yet).
 */
export async function conntrackUsage(runner: Runner): Promise<{ entries: number; limit: number } | null> {
  const r = await runner.run('sysctl', ['-n', 'net.netfilter.nf_conntrack_count', 'net.netfilter.nf_conntrack_max']);
  const [entries, limit] = r.stdout.trim().split('\n').map(Number);
  return r.code === 0 && Number.isSafeInteger(entries) && Number.isSafeInteger(limit) ? { entries, limit } : null;
}
