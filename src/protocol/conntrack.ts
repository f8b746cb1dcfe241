// Conntrack questions on the agent channel (issue 11): the server asks an agent which connections its
// kernel tracks for some VMs (revoke dry runs, and cutting connections on revoke), and tells it which
// of them to delete. The agent only reads and deletes; which connections no rule allows any more is
// decided on the server (policy/connections.ts), so the agent needs no policy logic.
//
//   server → agent  listConnections  {id, vms, limitPerVm, timeoutMs}   answered by `connections`
//   server → agent  cutConnections   {id, connections}                  answered by `connectionsCut`
//
// Every answer carries the id of its question; an answer to no open question is ignored. Bounds: an
// answer holds at most MAX_CONNECTIONS_PER_MESSAGE entries (≈ 150 bytes of JSON each at worst, so
// under AGENT_FRAME_MAX_BYTES), at most `limitPerVm` per VM; the agent answers within `timeoutMs`
// (marking the answer incomplete when its listing did not finish in time).
import { z } from 'zod';
import { MAX_VMS_PER_HOST } from './limits.js';

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
});
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

export const cutConnectionsSchema = z.object({
  type: z.literal('cutConnections'),
  id: queryId,
  /** Entries to delete, each with the VM it was listed for (the agent checks the zone is that VM's). */
  connections: z.array(conntrackEntrySchema.extend({ vmId: vmUuid })).max(MAX_CONNECTIONS_PER_MESSAGE),
});
export type CutConnectionsMessage = z.infer<typeof cutConnectionsSchema>;

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

export const connectionsCutSchema = z.object({
  type: z.literal('connectionsCut'),
  id: queryId,
  /** Entries the kernel deleted. */
  deleted: z.number().int().min(0).max(MAX_CONNECTIONS_PER_MESSAGE),
  /** Entries not deleted: already gone, refused (not the VM's zone), or the tool failed. */
  failed: z.number().int().min(0).max(MAX_CONNECTIONS_PER_MESSAGE),
  error: z.string().max(MAX_CONNTRACK_ERROR_CHARS).optional(),
});
export type ConnectionsCutMessage = z.infer<typeof connectionsCutSchema>;
