// Conntrack on the agent channel (issue 11): revoke dry runs ask an agent which connections its kernel
// tracks for some VMs; and the server tells agents whether to cut connections on revoke.
//
//   server → agent  listConnections     {id, vms, limitPerVm, timeoutMs}   answered by `connections`
//   server → agent  connectionSettings  {cutOnRevoke}                      sent before the first
//                   snapshot/delta of a session when on (an agent starts every session with it off),
//                   and to every session whenever the setting changes
//
// Which connections a policy no longer allows is decided with policy/connections.ts: on the server for
// dry runs (against the policy as it would be without the rule), and on the agent for cuts (against the
// policy it has just applied: the agent holds every VM's full policy and the sets they reference, so it
// needs no list from the server, and one rule serves all three triggers — a revoke, a VM leaving a
// group, a member leaving a referenced group).
//
// Every answer carries the id of its question; an answer to no open question is ignored. Bounds: an
// answer holds at most MAX_CONNECTIONS_PER_MESSAGE entries (≤ ~200 bytes of JSON each, so with the VM
// ids well under AGENT_FRAME_MAX_BYTES), at most `limitPerVm` per VM; the agent answers within
// `timeoutMs` (marking the answer incomplete when its listing did not finish in time).
import { z } from 'zod';
import { MAX_VMS_PER_HOST } from './limits.js';
import type { TrackedConnection } from '../model/telemetry.js';

/** Entries in one answer or one cut, all VMs together. */
export const MAX_CONNECTIONS_PER_MESSAGE = 50_000;
/** The largest per-VM limit a question may ask for. */
export const MAX_CONNECTIONS_PER_VM = MAX_CONNECTIONS_PER_MESSAGE;
/** The time bound a question may give the agent, ms. */
export const MIN_CONNTRACK_TIMEOUT_MS = 50;
export const MAX_CONNTRACK_TIMEOUT_MS = 60_000;
export const MAX_CONNTRACK_ERROR_CHARS = 500;

const queryId = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
const vmUuid = z.string().min(1).max(64);
const port = z.number().int().min(0).max(65535);
const byte = z.number().int().min(0).max(255);

/**
 * One conntrack entry as the kernel holds it, original direction (who opened the flow). `zone` is the
 * conntrack zone it lives in (dataplane/plan/marks.ts); `protocol` is tcp, udp, icmp (ICMPv6 for IPv6
 * addresses) or another IP protocol number; the family follows from the addresses.
 */
export const conntrackEntrySchema = z.object({
  zone: port,
  protocol: z.union([z.enum(['tcp', 'udp', 'icmp']), byte]),
  src: z.union([z.ipv4(), z.ipv6()]),
  dst: z.union([z.ipv4(), z.ipv6()]),
  sport: port.optional(),
  dport: port.optional(),
  icmpType: byte.optional(),
  icmpCode: byte.optional(),
  icmpId: port.optional(),
}).refine((e) => e.src.includes(':') === e.dst.includes(':'), 'src and dst are of different families');
export type ConntrackEntry = z.infer<typeof conntrackEntrySchema>;

export const listConnectionsSchema = z.object({
  type: z.literal('listConnections'),
  id: queryId,
  /** VM uuids whose connections are wanted (VMs the agent does not hold have none). */
  vms: z.array(vmUuid).max(MAX_VMS_PER_HOST),
  limitPerVm: z.number().int().min(1).max(MAX_CONNECTIONS_PER_VM),
  timeoutMs: z.number().int().min(MIN_CONNTRACK_TIMEOUT_MS).max(MAX_CONNTRACK_TIMEOUT_MS),
});
export type ListConnectionsMessage = z.infer<typeof listConnectionsSchema>;

/** Whether agents delete the tracked connections their new policy no longer allows after each apply. */
export const connectionSettingsSchema = z.object({
  type: z.literal('connectionSettings'),
  /** security.group.revoke.cut.connections (model/settings.ts). */
  cutOnRevoke: z.boolean(),
});
export type ConnectionSettingsMessage = z.infer<typeof connectionSettingsSchema>;

export const connectionsSchema = z.object({
  type: z.literal('connections'),
  id: queryId,
  /** false: the listing did not finish (time bound, conntrack failed); what was read is included. */
  complete: z.boolean(),
  vms: z.array(z.object({
    vmId: vmUuid,
    /** true: the VM has more entries than were returned (per-VM limit or the message bound). */
    truncated: z.boolean(),
    entries: z.array(conntrackEntrySchema).max(MAX_CONNECTIONS_PER_MESSAGE),
  })).max(MAX_VMS_PER_HOST)
    .refine((vms) => vms.reduce((n, v) => n + v.entries.length, 0) <= MAX_CONNECTIONS_PER_MESSAGE, `more than ${MAX_CONNECTIONS_PER_MESSAGE} entries`),
  error: z.string().max(MAX_CONNTRACK_ERROR_CHARS).optional(),
});
export type ConnectionsMessage = z.infer<typeof connectionsSchema>;

/** A kernel entry as the policy layer reads a tracked connection of `vmId` (both ends use it). */
export function trackedConnectionOf(vmId: string, e: ConntrackEntry): TrackedConnection {
  return {
    vmId, family: e.src.includes(':') ? 6 : 4, protocol: e.protocol, src: e.src, dst: e.dst,
    ...(e.sport !== undefined ? { sport: e.sport } : {}), ...(e.dport !== undefined ? { dport: e.dport } : {}),
    ...(e.icmpType !== undefined ? { icmpType: e.icmpType, icmpCode: e.icmpCode ?? 0 } : {}),
  };
}
