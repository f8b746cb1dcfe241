// The metric catalog and the Grafana dashboard agree: every metric the dashboard queries is defined
// (server, control plane or agent), every defined metric appears on the dashboard, and the catalog
// follows Prometheus conventions. A registry built from the catalog exports valid text.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ALL_METRICS, SERVER_METRICS, AGENT_METRICS } from '../../src/metrics/catalog.js';
import { MetricsRegistry, bounded } from '../../src/metrics/registry.js';
import { DROP_REASONS } from '../../src/model/telemetry.js';
import { REPO } from '../helpers/process.js';

const dashboard = JSON.parse(fs.readFileSync(path.join(REPO, 'contrib', 'grafana', 'palisade.json'), 'utf8'));
const exprs: string[] = dashboard.panels.flatMap((p: any) => (p.targets ?? []).map((t: any) => t.expr));

test('every palisade_ metric on the dashboard is in the catalog, and every catalog metric is on the dashboard', () => {
  const names = new Set(ALL_METRICS.map((m) => m.name));
  const used = new Set<string>();
  for (const e of exprs) for (const m of e.matchAll(/palisade_[a-z0-9_]+/g)) used.add(m[0].replace(/_(bucket|count|sum)$/, ''));
  for (const u of used) assert.ok(names.has(u), `dashboard uses ${u}, which no code defines`);
  for (const n of names) assert.ok(used.has(n), `${n} is not on the dashboard`);
  assert.equal(ALL_METRICS.length, names.size, 'names are unique');
});

test('catalog conventions: prefix, base units, counters end in _total, labels never identify objects', () => {
  for (const d of ALL_METRICS) {
    assert.match(d.name, /^palisade_[a-z][a-z0-9_]*$/);
    assert.equal(d.name.endsWith('_total'), d.type === 'counter', d.name);
    assert.doesNotMatch(d.name, /_(ms|milliseconds|minutes|kb|mb)(_|$)/, `${d.name}: base units`);
    if (d.type === 'histogram') assert.match(d.name, /_seconds$/, d.name);
    for (const l of d.labels) assert.ok(['command', 'code', 'result', 'state', 'sync_state', 'kind', 'tool', 'reason'].includes(l), `${d.name}: label ${l}`);
    for (const l of d.labels) if (l !== 'command') assert.ok(d.values?.[l]?.length, `${d.name}: label ${l} needs a closed value set`);
  }
  assert.deepEqual([...AGENT_METRICS.droppedPackets.values.reason], [...DROP_REASONS]);
});

test('a registry returns one instance per definition, bounds label values, and exports Prometheus text', async () => {
  const m = new MetricsRegistry();
  const c = m.counter(SERVER_METRICS.apiRequests);
  assert.equal(m.counter(SERVER_METRICS.apiRequests), c, 'declaring twice returns the same metric');
  assert.throws(() => m.gauge(SERVER_METRICS.apiRequests), /is a counter/);
  c.inc({ command: 'listZones', code: bounded(SERVER_METRICS.apiRequests, 'code', '200') });
  c.inc({ command: 'listZones', code: bounded(SERVER_METRICS.apiRequests, 'code', '999') });
  m.gauge(AGENT_METRICS.secondsSinceApply, (g) => { g.set(12); });
  const text = await m.text();
  assert.match(text, /^# HELP palisade_api_requests_total /m);
  assert.match(text, /^# TYPE palisade_api_requests_total counter$/m);
  assert.match(text, /^palisade_api_requests_total\{command="listZones",code="200"\} 1$/m);
  assert.match(text, /^palisade_api_requests_total\{command="listZones",code="other"\} 1$/m);
  assert.match(text, /^palisade_agent_seconds_since_last_apply 12$/m, 'collected at scrape time');
});
