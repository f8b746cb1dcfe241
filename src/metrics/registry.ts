// A prom-client registry per process (server or agent), and the way code declares a metric beside
// itself: `metrics.counter(SERVER_METRICS.apiRequests)` returns the one instance of that metric in this
// registry (declaring it twice returns the same object, so modules need not coordinate). Label values
// pass through `bounded`, which maps anything outside the catalog's closed set to "other".
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { MetricDef } from './catalog.js';

export class MetricsRegistry {
  readonly registry = new Registry();
  private readonly made = new Map<string, Counter<string> | Gauge<string> | Histogram<string>>();

  /** `process`: also export the Node process's own metrics (process_*, nodejs_*), as prom-client names them. */
  constructor(opts: { process?: boolean } = {}) {
    if (opts.process) collectDefaultMetrics({ register: this.registry });
  }

  private make<T extends Counter<string> | Gauge<string> | Histogram<string>>(def: MetricDef, type: MetricDef['type'], create: () => T): T {
    if (def.type !== type) throw new Error(`metric ${def.name} is a ${def.type}, not a ${type}`);
    const have = this.made.get(def.name);
    if (have) return have as T;
    const m = create();
    this.made.set(def.name, m);
    return m;
  }

  counter(def: MetricDef): Counter<string> {
    return this.make(def, 'counter', () => new Counter({ name: def.name, help: def.help, labelNames: [...def.labels], registers: [this.registry] }));
  }

  /** `collect` runs at every scrape (e.g. to read the store) before the gauge is exported. */
  gauge(def: MetricDef, collect?: (gauge: Gauge<string>) => Promise<void> | void): Gauge<string> {
    return this.make(def, 'gauge', () => new Gauge({
      name: def.name, help: def.help, labelNames: [...def.labels], registers: [this.registry],
      ...(collect ? { collect() { return collect(this); } } : {}),
    }));
  }

  histogram(def: MetricDef): Histogram<string> {
    return this.make(def, 'histogram', () => new Histogram({ name: def.name, help: def.help, labelNames: [...def.labels], buckets: [...(def.buckets ?? [])], registers: [this.registry] }));
  }

  /** The Prometheus text exposition of everything registered. */
  text(): Promise<string> { return this.registry.metrics(); }
  get contentType(): string { return this.registry.contentType; }
}

/** A label value from the definition's closed set, else "other". */
export function bounded(def: MetricDef, label: string, value: string): string {
  const allowed = def.values?.[label];
  return !allowed || allowed.includes(value) ? value : 'other';
}
