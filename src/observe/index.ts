// What the firewall did, server side (issue 11): ingestion of agents' drop logs and rule counters,
// and the settings agents need. The interface the control plane calls (phase 2 of issue 11):
//
//   ingestDrops(db, hostId, payload, { metrics })          a drop-log batch from host `hostId`'s agent
//   ingestRuleCounters(db, payload, policyOf, { metrics }) kernel rule counter deltas → API rule hits;
//                                                          policyOf(vmUuid): the server-side VmPolicy
//                                                          (with sources) of that VM if it is placed on
//                                                          the reporting host, else undefined
//   readSettings(db)                                       drop-log rate/burst, cut-connections flag
//                                                          (re-read on a Change of kind 'settings')
//   disallowedConnections(policyAfter, sets, conns)        which tracked connections a change cuts
//                                                          (revoke with security.group.revoke.cut.connections)
//   ConnectionInspector (model/telemetry.ts)               implement it and pass it to buildServer's
//                                                          `connections`: revoke dry runs then report
//                                                          trackedconnections instead of "unavailable"
//   MetricsRegistry + CONTROL_METRICS / AGENT_METRICS      (metrics/) register beside the code that counts
//
// What agents are expected to send (schemas in observe/schema.ts):
// - rule counters: per VM uuid, per kernel rule id (PolicyRule.id, the id in the rule's kernel
//   comment), the packets counted since the previous report — deltas, only the non-zero ones, at a
//   bounded rate (e.g. every 30 s); a rule re-created by a re-render restarts from 0 in the kernel and
//   the agent reports what it saw since, so API hit counts never reset;
// - drop batches: at most MAX_DROP_BATCH records, each with the kernel's time, VM/NIC uuid (none for
//   unknown ports), one of DROP_REASONS, direction relative to the VM, protocol, addresses and ports.
//
// The drop log's bounds (store/queries/drops.ts) hold on every insert; pruneDrops also runs hourly
// in the server (api/serve.ts) so the age bound holds without input.
export { ingestDrops, ingestRuleCounters, type DropIngestResult, type CounterIngestResult, type IngestOptions } from './ingest.js';
export { DropBatchSchema, DropRecordSchema, RuleCounterBatchSchema, MAX_DROP_BATCH, type DropRecord, type RuleCounterBatch } from './schema.js';
export { readSettings } from '../store/queries/settings.js';
export { pruneDrops, DROP_LOG_LIMITS } from '../store/queries/drops.js';
export { disallowedConnections, connectionPacket } from '../policy/connections.js';
export { attributeRuleHits } from '../policy/hits.js';
