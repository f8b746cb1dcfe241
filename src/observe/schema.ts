// Schemas of what agents send about traffic (validated before use; phase 2 of issue 11 carries these
// payloads over the agent channel — the protocol module wraps them in its messages and reuses these
// schemas). Bounded everywhere: batch sizes, string lengths, number ranges.
import { z } from 'zod';
import { DROP_REASONS } from '../model/telemetry.js';

const UUID = z.string().regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i);
const TIME = z.iso.datetime({ offset: true });
const PORT = z.number().int().min(0).max(65535);
const BYTE = z.number().int().min(0).max(255);
/** An IPv4/IPv6 address or a MAC (layer-2 drops); checked and canonicalised by the ingestion code. */
const ADDRESS = z.string().min(2).max(64);

/** Records per drop batch; an agent sends at most this many per message. */
export const MAX_DROP_BATCH = 5000;

export const DropRecordSchema = z.object({
  /** When the kernel logged it. */
  at: TIME,
  /** The VM whose port dropped it (absent: no VM owns the port — reason unknown-port). */
  vm: UUID.optional(),
  nic: UUID.optional(),
  reason: z.enum(DROP_REASONS),
  /** Relative to the VM: ingress = towards it. */
  direction: z.enum(['ingress', 'egress']),
  protocol: z.union([z.enum(['tcp', 'udp', 'icmp', 'icmpv6', 'arp', 'other']), z.number().int().min(0).max(255)]),
  src: ADDRESS.optional(),
  dst: ADDRESS.optional(),
  srcPort: PORT.optional(),
  dstPort: PORT.optional(),
  icmpType: BYTE.optional(),
  icmpCode: BYTE.optional(),
}).strict();
export type DropRecord = z.infer<typeof DropRecordSchema>;

/** The envelope: its records are checked one by one (a bad record does not cost the good ones). */
export const DropBatchSchema = z.object({
  records: z.array(z.unknown()).max(MAX_DROP_BATCH),
}).strict();
export type DropBatch = { records: DropRecord[] };

/** VMs per counter report, and kernel rules per VM (a VM has at most a few thousand rules). */
export const MAX_COUNTER_VMS = 5000;
export const MAX_COUNTER_RULES = 20000;

/**
 * Kernel rule counters read by an agent: per VM uuid, per kernel rule id (PolicyRule.id, the id in the
 * rule's kernel comment), the packets matched since the previous report (a delta, never a running
 * total: a re-created rule restarts its kernel counter and the agent reports what it saw since).
 */
export const RuleCounterBatchSchema = z.object({
  at: TIME,
  vms: z.record(UUID, z.record(z.string().regex(/^[0-9a-z]{1,64}$/i), z.number().int().min(0).max(Number.MAX_SAFE_INTEGER))
    .refine((m) => Object.keys(m).length <= MAX_COUNTER_RULES, `at most ${MAX_COUNTER_RULES} rules per VM`))
    .refine((m) => Object.keys(m).length <= MAX_COUNTER_VMS, `at most ${MAX_COUNTER_VMS} VMs per report`),
}).strict();
export type RuleCounterBatch = z.infer<typeof RuleCounterBatchSchema>;
