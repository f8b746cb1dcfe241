// Ingestion of what agents report about traffic: drop-log batches and kernel rule counters. Both are
// validated (zod, observe/schema.ts) before anything is stored, accept only VMs placed on the sending
// host, and keep the store bounded (drops: store/queries/drops.ts; hits: one row per API rule).
// Called by the control plane when an agent's message arrives (phase 2 of issue 11).
import type { Db } from '../store/db.js';
import type { VmPolicy } from '../policy/ir.js';
import { attributeRuleHits } from '../policy/hits.js';
import { canonicalIp } from '../policy/cidr.js';
import { addRuleHits } from '../store/queries/rulehits.js';
import { DROP_LOG_LIMITS, insertDrops, type DropLogLimits, type DropRow } from '../store/queries/drops.js';
import { DropBatchSchema, DropRecordSchema, RuleCounterBatchSchema, type DropRecord } from './schema.js';
import { SERVER_METRICS } from '../metrics/catalog.js';
import type { MetricsRegistry } from '../metrics/registry.js';

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

export interface DropIngestResult { accepted: number; rejected: number; stale: number; error?: string }

export interface IngestOptions {
  now?: Date;
  limits?: DropLogLimits;
  /** Counts records/packets into palisade_drop_log_records_total / palisade_rule_hit_packets_total. */
  metrics?: MetricsRegistry;
}

function address(s: string | undefined): string | null | false {
  if (s === undefined) return null;
  const ip = canonicalIp(s);
  if (ip) return ip;
  if (MAC_RE.test(s)) return s.toLowerCase();
  return false;
}

/**
 * Stores a drop-log batch from the agent of host `hostId` (internal id). `input` is the decoded JSON
 * payload, untrusted. Records of VMs not placed on that host, of unknown NICs' VMs, with bad addresses
 * or without a VM (other than unknown-port drops) are rejected; records older than the log keeps are
 * stale. Never throws on bad input (the result says what happened); store errors propagate.
 */
export async function ingestDrops(db: Db, hostId: number, input: unknown, opts: IngestOptions = {}): Promise<DropIngestResult> {
  const now = opts.now ?? new Date();
  const limits = opts.limits ?? DROP_LOG_LIMITS;
  const count = (r: DropIngestResult) => {
    const c = opts.metrics?.counter(SERVER_METRICS.dropRecords);
    if (c) { c.inc({ result: 'accepted' }, r.accepted); c.inc({ result: 'rejected' }, r.rejected); c.inc({ result: 'stale' }, r.stale); }
    return r;
  };
  const envelope = DropBatchSchema.safeParse(input);
  if (!envelope.success) {
    const n = Array.isArray((input as { records?: unknown })?.records) ? Math.min((input as { records: unknown[] }).records.length, Number.MAX_SAFE_INTEGER) : 0;
    return count({ accepted: 0, rejected: n, stale: 0, error: envelope.error.issues.map((i) => `${i.path.join('.') || 'batch'}: ${i.message}`).join('; ').slice(0, 500) });
  }
  let rejected = 0, stale = 0;
  const records: DropRecord[] = [];
  for (const raw of envelope.data.records) {
    const r = DropRecordSchema.safeParse(raw);
    if (r.success) records.push(r.data); else rejected++;
  }
  const vmUuids = [...new Set(records.map((r) => r.vm).filter((v): v is string => v !== undefined).map((v) => v.toLowerCase()))];
  const nicUuids = [...new Set(records.map((r) => r.nic).filter((v): v is string => v !== undefined).map((v) => v.toLowerCase()))];
  const vms = new Map<string, number>();
  for (let i = 0; i < vmUuids.length; i += 500) {
    const rows = await db.selectFrom('vms').select(['id', 'uuid', 'host_id']).where('uuid', 'in', vmUuids.slice(i, i + 500)).where('removed', 'is', null).execute();
    for (const v of rows) if (v.host_id === hostId) vms.set(v.uuid.toLowerCase(), Number(v.id));   // bigint since 016: pg returns text
  }
  const nics = new Map<string, number>();
  for (let i = 0; i < nicUuids.length; i += 500) {
    const rows = await db.selectFrom('nics').select(['uuid', 'vm_id']).where('uuid', 'in', nicUuids.slice(i, i + 500)).execute();
    for (const n of rows) nics.set(n.uuid.toLowerCase(), Number(n.vm_id));
  }
  const oldest = now.getTime() - limits.maxAgeMs;
  const rows: DropRow[] = [];
  for (const r of records) {
    const vmId = r.vm === undefined ? null : vms.get(r.vm.toLowerCase());
    const src = address(r.src);
    const dst = address(r.dst);
    if (vmId === undefined || (vmId === null && r.reason !== 'unknown-port') || src === false || dst === false) { rejected++; continue; }
    const at = Date.parse(r.at);
    if (at < oldest) { stale++; continue; }
    const nicVm = r.nic === undefined ? undefined : nics.get(r.nic.toLowerCase());
    rows.push({
      vm_id: vmId, host_id: hostId, nic_uuid: nicVm !== undefined && nicVm === vmId ? r.nic!.toLowerCase() : null,
      direction: r.direction, protocol: String(r.protocol),
      src_address: src, src_port: r.srcPort ?? null, dst_address: dst, dst_port: r.dstPort ?? null,
      icmp_type: r.icmpType ?? null, icmp_code: r.icmpCode ?? null, reason: r.reason,
      // A clock ahead of the server's is clamped: the log is ordered by time and pruned by age.
      created: new Date(Math.min(at, now.getTime())).toISOString(),
    });
  }
  if (rows.length) await db.transaction().execute((trx) => insertDrops(trx, rows, now, limits));
  return count({ accepted: rows.length, rejected, stale });
}

export interface CounterIngestResult {
  /** API rules whose hitcount grew. */
  rules: number;
  attributedPackets: number;
  /** Packets of kernel rules the VM's current policy does not have. */
  unattributedPackets: number;
  /** VMs in the report `policyOf` did not know (not placed on the host, or deleted). */
  unknownVms: number;
  error?: string;
}

/**
 * Adds a kernel rule counter report to the per-API-rule hits. `policyOf(vmUuid)` must return the
 * server-side policy (with `sources`) of that VM as placed on the reporting host, or undefined when the
 * VM is not on that host; it is how a host can only ever count for its own VMs. Attribution of merged
 * kernel rules: policy/hits.ts.
 */
export async function ingestRuleCounters(db: Db, input: unknown, policyOf: (vmUuid: string) => VmPolicy | undefined, opts: IngestOptions = {}): Promise<CounterIngestResult> {
  const now = opts.now ?? new Date();
  const parsed = RuleCounterBatchSchema.safeParse(input);
  if (!parsed.success) {
    return { rules: 0, attributedPackets: 0, unattributedPackets: 0, unknownVms: 0, error: parsed.error.issues.map((i) => `${i.path.join('.') || 'report'}: ${i.message}`).join('; ').slice(0, 500) };
  }
  const total = new Map<string, number>();
  let unattributed = 0, unknownVms = 0;
  for (const [vmUuid, counters] of Object.entries(parsed.data.vms)) {
    const policy = policyOf(vmUuid);
    if (!policy) { unknownVms++; continue; }
    const a = attributeRuleHits(policy, Object.entries(counters));
    unattributed += a.unattributed;
    for (const [rule, n] of a.byApiRule) total.set(rule, Math.min(Number.MAX_SAFE_INTEGER, (total.get(rule) ?? 0) + n));
  }
  // lasthit: the agent's reading time, unless it is in the future or implausibly old.
  const at = Date.parse(parsed.data.at);
  const when = new Date(at > now.getTime() || at < now.getTime() - 3600_000 ? now.getTime() : at).toISOString();
  const rules = await addRuleHits(db, total, when);
  let attributed = 0;
  for (const n of total.values()) attributed += n;
  const c = opts.metrics?.counter(SERVER_METRICS.ruleHitPackets);
  if (c) { c.inc({ result: 'attributed' }, attributed); c.inc({ result: 'unattributed' }, unattributed); }
  return { rules, attributedPackets: attributed, unattributedPackets: unattributed, unknownVms };
}
