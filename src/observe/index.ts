// What the firewall did, server side (issue 11): ingestion of agents' drop logs and rule counters,
// and the settings agents need. The interface the control plane calls (phase 2):
//
//   ingestDrops(db, hostId, payload, { metrics })          a drop-log batch from host hostId's agent
//   ingestRuleCounters(db, payload, policyOf, { metrics }) kernel rule counter deltas → API rule hits
//   readSettings(db)                                       drop-log rate/burst, cut-connections flag
//   pruneDrops(db, now)                                    age bound without new input (e.g. hourly)
//   disallowedConnections(policyAfter, sets, conns)        which tracked connections a revoke cuts
//
// Payload schemas: observe/schema.ts. Metric names: metrics/catalog.ts.
export { ingestDrops, ingestRuleCounters, type DropIngestResult, type CounterIngestResult, type IngestOptions } from './ingest.js';
export { DropBatchSchema, DropRecordSchema, RuleCounterBatchSchema, MAX_DROP_BATCH, type DropRecord, type RuleCounterBatch } from './schema.js';
export { readSettings } from '../store/queries/settings.js';
export { pruneDrops, DROP_LOG_LIMITS } from '../store/queries/drops.js';
export { disallowedConnections, connectionPacket } from '../policy/connections.js';
export { attributeRuleHits } from '../policy/hits.js';
