// The agent channel's messages (DESIGN.md §4): WebSocket at AGENT_PATH on the API port, one JSON
// object per text frame. Server and agent both import this module (neither imports the other), and
// each validates every message it receives against these schemas before using it; a message that
// does not match closes that one connection, with the reason logged.
//
// Extending: add a member to AGENT_MESSAGES or SERVER_MESSAGES (a `type` literal and its fields, each
// bounded), and handle it on the receiving side; unknown fields are dropped by the schemas (an older
// peer ignores a newer optional field), an unknown `type` is refused (handled by neither side).
import { z } from 'zod';
import type { AddressSet, FamilyPolicy, HostDesiredState, NicPolicy, PolicyRule, VmPolicy } from '../policy/ir.js';
import { MAX_DROP_BATCH, RuleCounterBatchSchema } from '../observe/schema.js';
import {
  MAX_DATAPLANE_CHARS, MAX_ERROR_CHARS, MAX_FINDINGS, MAX_FINDING_CHARS, MAX_HOSTNAME_CHARS, MAX_REPAIRS_PER_REPORT,
  MAX_NICS_PER_VM, MAX_REPAIR_CHARS, MAX_TOKEN_CHARS, MAX_VMS_PER_HOST,
} from './limits.js';
import { connectionSettingsSchema, connectionsSchema, listConnectionsSchema } from './conntrack.js';

export const AGENT_PATH = '/agent';
export const PROTOCOL_VERSION = 1;
/** WebSocket close code: another connection with this host's token and hostname took its session here. */
export const CLOSE_REPLACED = 4000;
/** WebSocket close code: another server now holds the host (an agent with its token connected there). */
export const CLOSE_HELD_ELSEWHERE = 4409;
/**
 * Part of a 409 refusal's text when another agent process with this host's token and hostname replaced
 * this one's session and holds it: the refused agent stops writing the host's kernel (agent.ts), or the
 * two would keep undoing each other's rules.
 */
export const REPLACED_BY_ANOTHER_AGENT = "replaced this one's session and holds it";

/**
 * A WebSocket close reason: at most 123 bytes of UTF-8 (ws throws past that), cut at a character.
 * Reasons quote the peer's input (a VM id, a hostname): cut at 100 or 120 characters, one in CJK
 * letters threw (on the server an error line with a stack per connection before any hello, or an
 * unhandled rejection in a refusal; on the agent an exception in its message handler).
 */
export function closeReason(text: string): string {
  let out = '';
  let bytes = 0;
  for (const ch of text) {
    bytes += Buffer.byteLength(ch, 'utf8');
    if (bytes > 123) break;
    out += ch;
  }
  return out;
}

/** A revision is a position in the server's change feed (DESIGN.md §6): a non-negative safe integer. */
const revision = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const id = (max = 64) => z.string().min(1).max(max);
const text = (max: number) => z.string().max(max);
/**
 * A text an agent sends that the server stores or logs: never U+0000. PostgreSQL's `text` cannot hold
 * it, and the server writes every host's status in one transaction: one agent's ack error with a NUL
 * failed that transaction for every host, again and again while it kept acking (other hosts' VMs
 * stayed Pending). Refused here, so such a frame closes that one connection and writes nothing.
 */
export const NUL_REASON = 'contains a NUL character';
const storedText = (max: number) => z.string().max(max).refine((s) => !s.includes('\u0000'), NUL_REASON);
/**
 * The host name an agent reports (stored with its host lease, logged, shown in the console): one
 * printable line, no control character (C0, DEL, C1: JSON log lines escape only C0, so U+009B, an
 * 8-bit CSI, reached the log raw) and no line or paragraph separator. Letters of any script pass.
 */
export const HOSTNAME_RE = /^[^\p{Cc}\u2028\u2029]*$/u;

// ---- agent → server ------------------------------------------------------------------------------

export const preflightFindingSchema = z.object({
  check: storedText(200),
  ok: z.boolean(),
  fixed: z.boolean().optional(),
  detail: storedText(MAX_FINDING_CHARS),
});
export type PreflightFinding = z.infer<typeof preflightFindingSchema>;

export const repairReportSchema = z.object({
  at: storedText(64),
  what: storedText(MAX_REPAIR_CHARS),
  count: z.number().int().min(0).max(1_000_000_000),
});
export type RepairReport = z.infer<typeof repairReportSchema>;

export const helloSchema = z.object({
  type: z.literal('hello'),
  version: z.number().int(),
  token: z.string().min(1).max(MAX_TOKEN_CHARS),
  hostname: text(MAX_HOSTNAME_CHARS).regex(HOSTNAME_RE, 'contains a control character'),
  /** The revision the agent holds (its saved state), null when it holds none. */
  revision: revision.nullable(),
  /** The dataplane backend the agent runs ('iptables', 'nftables', 'null'); shown by listHosts. */
  dataplane: z.string().min(1).max(MAX_DATAPLANE_CHARS).regex(/^[A-Za-z0-9._-]+$/).optional(),
  /**
   * Random per agent process: tells a restarted agent (a new instance taking its host's session) from
   * a second agent using the same token and hostname (an instance that was replaced coming back).
   */
  instance: z.string().min(1).max(64).regex(/^[A-Za-z0-9-]+$/).optional(),
});

export const ackSchema = z.object({
  type: z.literal('ack'),
  revision,
  /**
   * Per VM uuid of the applied state: did its rules reach the kernel. `waiting`: not yet, because a
   * port of the VM is not on the host (its hypervisor has not started it): Pending, not Failed.
   */
  vms: z.record(id(), z.object({ ok: z.boolean(), error: storedText(MAX_ERROR_CHARS).optional(), waiting: z.boolean().optional() }))
    .refine((v) => Object.keys(v).length <= MAX_VMS_PER_HOST, `more than ${MAX_VMS_PER_HOST} VMs`),
});

export const reportSchema = z.object({
  type: z.literal('report'),
  preflight: z.array(preflightFindingSchema).max(MAX_FINDINGS),
  repairs: z.array(repairReportSchema).max(MAX_REPAIRS_PER_REPORT),
});

export const pingSchema = z.object({ type: z.literal('ping') });

/**
 * Kernel rule counters (issue 11): per VM uuid, per kernel rule id (PolicyRule.id), the packets
 * counted since the agent's previous `hits` message — non-zero deltas only, never running totals
 * (observe/schema.ts). The server attributes them to API rules of VMs placed on the sending host.
 */
export const hitsSchema = z.object({ type: z.literal('hits'), ...RuleCounterBatchSchema.shape });

/**
 * Drop-log records read from the host's NFLOG (issue 11), at most MAX_DROP_BATCH per message. Each
 * record is checked on its own by the server (observe/ingest.ts): a bad one does not cost the rest.
 */
export const dropsSchema = z.object({ type: z.literal('drops'), records: z.array(z.unknown()).max(MAX_DROP_BATCH) });

const AGENT_MESSAGES = [helloSchema, ackSchema, reportSchema, pingSchema, hitsSchema, dropsSchema, connectionsSchema] as const;
export const agentMessageSchema = z.discriminatedUnion('type', AGENT_MESSAGES);
export type AgentMessage = z.infer<typeof agentMessageSchema>;
export type HelloMessage = z.infer<typeof helloSchema>;
export type AckMessage = z.infer<typeof ackSchema>;
export type ReportMessage = z.infer<typeof reportSchema>;
export type HitsMessage = z.infer<typeof hitsSchema>;
export type DropsMessage = z.infer<typeof dropsSchema>;

// ---- server → agent ------------------------------------------------------------------------------

const irProtocol = z.union([z.enum(['tcp', 'udp', 'icmp', 'all']), z.number().int().min(0).max(255)]);
const portRange = z.object({ from: z.number().int().min(0).max(65535), to: z.number().int().min(0).max(65535) });
const icmpMatch = z.object({ type: z.number().int().min(-1).max(255), code: z.number().int().min(-1).max(255) });
const address = z.string().min(1).max(64);

export const policyRuleSchema: z.ZodType<PolicyRule> = z.object({
  id: id(128),
  protocol: irProtocol,
  ports: portRange.optional(),
  icmp: icmpMatch.optional(),
  cidrs: z.array(address),
  sets: z.array(id()),
  sources: z.array(id()),
});

export const familyPolicySchema: z.ZodType<FamilyPolicy> = z.object({
  ingress: z.array(policyRuleSchema),
  egress: z.array(policyRuleSchema),
  egressRestricted: z.boolean(),
  notrack: z.boolean(),
});

export const nicPolicySchema: z.ZodType<NicPolicy> = z.object({
  nicId: id(),
  mac: z.string().regex(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/),
  ipv4: z.array(address),
  ipv6: z.array(address),
  isDefault: z.boolean(),
  deviceName: z.string().min(1).max(64).nullable(),
});

export const vmPolicySchema: z.ZodType<VmPolicy> = z.object({
  vmId: id(),
  instanceName: id(255),
  nics: z.array(nicPolicySchema).max(MAX_NICS_PER_VM),
  v4: familyPolicySchema,
  v6: familyPolicySchema,
  hash: z.string().regex(/^[0-9a-f]{64}$/),
});

export const addressSetSchema: z.ZodType<AddressSet> = z.object({
  id: z.string().regex(/^sg\d{1,15}v[46]$/),
  family: z.union([z.literal(4), z.literal(6)]),
  members: z.array(address),
});

export const hostDesiredStateSchema: z.ZodType<HostDesiredState> = z.object({
  hostId: id(),
  revision,
  vms: z.array(vmPolicySchema).max(MAX_VMS_PER_HOST),
  sets: z.array(addressSetSchema),
});

export const welcomeSchema = z.object({ type: z.literal('welcome'), hostId: id(), hostName: text(255) });
export const snapshotSchema = z.object({ type: z.literal('snapshot'), state: hostDesiredStateSchema });
/**
 * Policies in snapshots and deltas are agent forms (control/agent-form.ts): every rule's `sources` is
 * empty (explain runs on the server), and VmPolicy.hash is the IR content hash of the policy as sent.
 */
export const deltaSchema = z.object({
  type: z.literal('delta'),
  fromRevision: revision,
  revision,
  upsertVms: z.array(vmPolicySchema).max(MAX_VMS_PER_HOST),
  removeVms: z.array(id()),
  upsertSets: z.array(addressSetSchema),
  removeSets: z.array(id()),
});
export const errorSchema = z.object({ type: z.literal('error'), code: z.number().int(), message: text(1000) });
export const pongSchema = z.object({ type: z.literal('pong') });

/**
 * The global settings an agent applies to its kernel (issue 11): the drop log's per-VM rate
 * (packets logged per second, 0 = off) and burst. Sent after the welcome, before the first snapshot
 * or delta, and again whenever an operator changes them (updateConfiguration / resetConfiguration).
 */
export const dropLogSettingsSchema = z.object({
  rate: z.number().int().min(0).max(10_000),
  burst: z.number().int().min(1).max(100_000),
});
export type DropLogSettings = z.infer<typeof dropLogSettingsSchema>;
export const settingsSchema = z.object({ type: z.literal('settings'), dropLog: dropLogSettingsSchema });
export type SettingsMessage = z.infer<typeof settingsSchema>;

const SERVER_MESSAGES = [welcomeSchema, snapshotSchema, deltaSchema, errorSchema, pongSchema, settingsSchema, listConnectionsSchema, connectionSettingsSchema] as const;
export const serverMessageSchema = z.discriminatedUnion('type', SERVER_MESSAGES);
export type ServerMessage = z.infer<typeof serverMessageSchema>;
export type DeltaMessage = z.infer<typeof deltaSchema>;

// ---- decoding ------------------------------------------------------------------------------------

export type Decoded<T> = { ok: true; message: T } | { ok: false; reason: string };

function decode<T>(schema: z.ZodType<T>, data: unknown, isBinary: boolean): Decoded<T> {
  if (isBinary) return { ok: false, reason: 'binary frame (the protocol is JSON text)' };
  let value: unknown;
  try { value = JSON.parse(typeof data === 'string' ? data : String(data)); } catch { return { ok: false, reason: 'not JSON' }; }
  return decodeValue(schema, value);
}

function decodeValue<T>(schema: z.ZodType<T>, value: unknown): Decoded<T> {
  const r = schema.safeParse(value);
  if (r.success) return { ok: true, message: r.data };
  const first = r.error.issues[0];
  const where = first?.path.length ? first.path.slice(0, 6).join('.') : (value && typeof value === 'object' && 'type' in value ? `type ${JSON.stringify(String((value as { type: unknown }).type)).slice(0, 40)}` : 'message');
  return { ok: false, reason: `invalid ${where}: ${(first?.message ?? 'does not match the protocol').slice(0, 200)}` };
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype;

/**
 * The common case of the most frequent message, checked by hand: every agent acks every push, so a
 * change that reaches 10,000 hosts is 10,000 acks of ~20 VMs each, and the schema's generic record
 * parse was a good part of a server's time per change. Accepts exactly what ackSchema accepts and
 * returns what it would (unknown fields dropped); anything else (including what it would refuse) is
 * left to the schema, which words the reason. test/protocol/messages.test.ts holds the two equal.
 */
export function fastAck(value: unknown): AckMessage | null {
  if (!isPlainObject(value) || value.type !== 'ack') return null;
  const { revision: rev, vms } = value;
  if (typeof rev !== 'number' || !Number.isInteger(rev) || rev < 0 || rev > Number.MAX_SAFE_INTEGER || !isPlainObject(vms)) return null;
  const out: AckMessage['vms'] = {};
  let n = 0;
  for (const uuid in vms) {
    if (!Object.prototype.hasOwnProperty.call(vms, uuid)) continue;
    if (++n > MAX_VMS_PER_HOST || uuid.length < 1 || uuid.length > 64 || uuid === '__proto__') return null;
    const r = vms[uuid];
    if (!isPlainObject(r) || typeof r.ok !== 'boolean') return null;
    const one: AckMessage['vms'][string] = { ok: r.ok };
    if ('error' in r) {
      if (typeof r.error !== 'string' || r.error.length > MAX_ERROR_CHARS || r.error.includes('\u0000')) return null;
      one.error = r.error;
    }
    if ('waiting' in r) {
      if (typeof r.waiting !== 'boolean') return null;
      one.waiting = r.waiting;
    }
    out[uuid] = one;
  }
  return { type: 'ack', revision: rev, vms: out };
}

/** A frame from an agent, validated (server side). */
/**
 * Arrays and objects one agent frame may open (`[` and `{` outside strings). The largest legitimate frames open tens of thousands (an ack of 16,384 VMs, a
 * connections answer of 50,000 entries); 16 MiB of `[[],[],…` would open eight million, and parsing
 * them took seconds and 2 GB.
 */
export const MAX_JSON_CONTAINERS = 500_000;

/** `[` and `{` outside JSON strings (a scan, not a parse: malformed text is JSON.parse's to refuse). */
function containers(text: Buffer): number {
  let n = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const byte = text[i];
    if (inString) {
      if (byte === 0x5c) i++;                 // backslash: the next byte is escaped
      else if (byte === 0x22) inString = false;
    } else if (byte === 0x22) inString = true;
    else if ((byte === 0x5b || byte === 0x7b) && ++n > MAX_JSON_CONTAINERS) return n;
  }
  return n;
}

export function decodeAgentMessage(data: unknown, isBinary = false): Decoded<AgentMessage> {
  if (!isBinary) {
    let value: unknown;
    if (Buffer.isBuffer(data) && data.length > MAX_JSON_CONTAINERS && containers(data) > MAX_JSON_CONTAINERS) {
      return { ok: false, reason: `more than ${MAX_JSON_CONTAINERS} arrays and objects` };
    }
    try { value = JSON.parse(typeof data === 'string' ? data : String(data)); } catch { return { ok: false, reason: 'not JSON' }; }
    const ack = fastAck(value);
    if (ack) return { ok: true, message: ack };
    return decodeValue(agentMessageSchema, value);
  }
  return decode(agentMessageSchema, data, isBinary);
}
/** A frame from the server, validated (agent side). */
export const decodeServerMessage = (data: unknown, isBinary = false): Decoded<ServerMessage> => decode(serverMessageSchema, data, isBinary);
