// Every Prometheus metric Palisade exports, server and agent, in one place: names, types, help, label
// names and the bounded label values. Code registers a metric by handing its definition to a
// MetricsRegistry (registry.ts) beside the code that updates it; the Grafana dashboard
// (contrib/grafana/palisade.json) and the README use these names.
//
// Conventions: `palisade_` prefix; base units in names (`_seconds`, `_bytes`); counters end in
// `_total`; label values come from closed sets written here (commands from the API registry, with
// `unknown` for anything else) — never a rule, VM, host or group id, never free text.
import { DROP_REASONS } from '../model/telemetry.js';

export type MetricType = 'counter' | 'gauge' | 'histogram';

export interface MetricDef {
  name: string;
  type: MetricType;
  help: string;
  labels: readonly string[];
  /** The closed set of values per label (documentation and `boundedLabel`); `command` is the API registry. */
  values?: Readonly<Record<string, readonly string[]>>;
  buckets?: readonly number[];
}

/** Latency buckets for API calls and jobs (seconds). */
const API_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Propagation and apply buckets (seconds): a rule reaches kernels in tens of milliseconds to seconds. */
const APPLY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** CloudStack error codes the API answers with (HTTP status = code); anything else counts as `other`. */
export const API_CODES = ['200', '401', '404', '405', '429', '431', '432', '530', '531', '533', '534', '535', '536', '537'] as const;
export const HOST_STATES = ['Up', 'Disconnected', 'Alert'] as const;
export const SYNC_STATES = ['Synced', 'Pending', 'Failed'] as const;
export const JOB_STATES = ['pending', 'succeeded', 'failed'] as const;
/** Kernel tools an agent runs (one transaction each per apply). */
export const AGENT_TOOLS = ['iptables-restore', 'ip6tables-restore', 'ipset', 'ebtables-restore', 'nft', 'conntrack'] as const;

// ---- server: API and inventory (registered by api/metrics.ts) -----------------------------------

export const SERVER_METRICS = {
  apiRequests: {
    name: 'palisade_api_requests_total', type: 'counter', labels: ['command', 'code'],
    help: 'API requests by command (the registered name, or "unknown") and CloudStack error code (200 = success).',
    values: { code: [...API_CODES, 'other'] },
  },
  apiDuration: {
    name: 'palisade_api_request_duration_seconds', type: 'histogram', labels: ['command', 'code'], buckets: API_BUCKETS,
    help: 'Time to answer an API request (async commands: until the job id is returned).',
    values: { code: [...API_CODES, 'other'] },
  },
  jobsFinished: {
    name: 'palisade_async_jobs_finished_total', type: 'counter', labels: ['command', 'result'],
    help: 'Async jobs this server finished, by command and result.', values: { result: ['succeeded', 'failed'] },
  },
  jobDuration: {
    name: 'palisade_async_job_duration_seconds', type: 'histogram', labels: ['command'], buckets: API_BUCKETS,
    help: 'Time from an async job\'s submission to its result.',
  },
  jobs: {
    name: 'palisade_async_jobs', type: 'gauge', labels: ['state'], values: { state: JOB_STATES },
    help: 'Async jobs in the store by state (read from the store at scrape time; the same on every server sharing it).',
  },
  hosts: {
    name: 'palisade_hosts', type: 'gauge', labels: ['state'], values: { state: [...HOST_STATES, 'other'] },
    help: 'Registered hypervisor hosts by state (store, at scrape time).',
  },
  vms: {
    name: 'palisade_vms', type: 'gauge', labels: ['sync_state'], values: { sync_state: [...SYNC_STATES, 'other'] },
    help: 'Virtual machines by security-group sync state (store, at scrape time).',
  },
  dropRecords: {
    name: 'palisade_drop_log_records_total', type: 'counter', labels: ['result'], values: { result: ['accepted', 'rejected', 'stale'] },
    help: 'Drop-log records received from agents: stored, rejected (invalid, or a VM not on the sending host) or stale (older than the log keeps).',
  },
  idleConnections: {
    name: 'palisade_api_idle_connections', type: 'gauge', labels: [],
    help: 'HTTP connections without a whole request (not yet sent one, its body still arriving, or idle between keep-alive requests; upgraded agent connections not counted).',
  },
  idleConnectionsShed: {
    name: 'palisade_api_idle_connections_shed_total', type: 'counter', labels: [],
    help: 'Idle HTTP connections closed because --idle-connections-max were held (the one waiting longest for a whole request goes).',
  },
  ruleHitPackets: {
    name: 'palisade_rule_hit_packets_total', type: 'counter', labels: ['result'], values: { result: ['attributed', 'unattributed'] },
    help: 'Packets from agents\' rule counters, attributed to API rules or not (kernel rule no longer in the VM\'s policy).',
  },
} as const satisfies Record<string, MetricDef>;

// ---- server: control plane (registered beside src/control's code; phase 2 of issue 11) ----------

export const CONTROL_METRICS = {
  batches: { name: 'palisade_control_batches_total', type: 'counter', labels: [], help: 'Change batches the control plane processed.' },
  changes: { name: 'palisade_control_changes_total', type: 'counter', labels: [], help: 'Committed API changes the control plane processed.' },
  commitToPush: {
    name: 'palisade_control_commit_to_push_seconds', type: 'histogram', labels: [], buckets: APPLY_BUCKETS,
    help: 'Time from an API transaction\'s commit to the deltas it caused being sent to agents.',
  },
  pushes: {
    name: 'palisade_control_pushes_total', type: 'counter', labels: ['kind'], values: { kind: ['delta', 'snapshot'] },
    help: 'Desired-state messages sent to agents.',
  },
  pushBytes: { name: 'palisade_control_push_bytes_total', type: 'counter', labels: [], help: 'Bytes of desired state sent to agents.' },
  agentSessions: { name: 'palisade_agent_sessions', type: 'gauge', labels: [], help: 'Agents connected to this server.' },
  oldestUnacked: {
    name: 'palisade_control_oldest_unacked_change_seconds', type: 'gauge', labels: [],
    help: 'Age of the oldest committed change that some affected host has not acknowledged yet (0 when every host is in sync).',
  },
} as const satisfies Record<string, MetricDef>;

// ---- agent: `palisade agent --metrics-listen HOST:PORT` (phase 2 of issue 11) ---------------------

export const AGENT_METRICS = {
  applyDuration: {
    name: 'palisade_agent_apply_duration_seconds', type: 'histogram', labels: ['tool'], buckets: APPLY_BUCKETS, values: { tool: AGENT_TOOLS },
    help: 'Time one kernel transaction took, per tool.',
  },
  kernelWrites: {
    name: 'palisade_agent_kernel_writes_total', type: 'counter', labels: ['tool'], values: { tool: AGENT_TOOLS },
    help: 'Kernel transactions that changed something, per tool (applying an unchanged state writes nothing).',
  },
  applyFailures: {
    name: 'palisade_agent_apply_failures_total', type: 'counter', labels: ['tool'], values: { tool: AGENT_TOOLS },
    help: 'Kernel transactions that failed, per tool.',
  },
  driftRepairs: { name: 'palisade_agent_drift_repairs_total', type: 'counter', labels: [], help: 'Differences between the kernel and the desired state the agent found and repaired.' },
  conntrackEntries: { name: 'palisade_agent_conntrack_entries', type: 'gauge', labels: [], help: 'Connections the host\'s kernel tracks (nf_conntrack_count).' },
  conntrackLimit: { name: 'palisade_agent_conntrack_limit', type: 'gauge', labels: [], help: 'The host\'s conntrack table size (nf_conntrack_max).' },
  droppedPackets: {
    name: 'palisade_agent_dropped_packets_total', type: 'counter', labels: ['reason'], values: { reason: DROP_REASONS },
    help: 'Packets the host\'s rules dropped, per reason, from the kernel\'s drop-rule counters (exact; the drop log is rate-limited, these are not).',
  },
  dropLogLost: { name: 'palisade_agent_drop_log_lost_total', type: 'counter', labels: [], help: 'Drop-log records the agent discarded because its buffer towards the server was full.' },
  counterReadings: {
    name: 'palisade_agent_rule_counter_readings_total', type: 'counter', labels: [],
    help: 'Readings of the VMs\' rule counters that went through (per-rule hits; every --counters-interval, stretched on a slow host): flat while hits cannot be read.',
  },
  lastApplySuccess: {
    name: 'palisade_agent_last_apply_success_timestamp_seconds', type: 'gauge', labels: [],
    help: 'Unix time of the last successful apply of the desired state.',
  },
  secondsSinceApply: {
    name: 'palisade_agent_seconds_since_last_apply', type: 'gauge', labels: [],
    help: 'Seconds since the last successful apply, computed at scrape time (-1 before the first).',
  },
  appliedRevision: { name: 'palisade_agent_applied_revision', type: 'gauge', labels: [], help: 'Desired-state revision the kernel holds.' },
  serverConnected: { name: 'palisade_agent_server_connected', type: 'gauge', labels: [], help: '1 while the agent has a session with a server, else 0.' },
  vms: { name: 'palisade_agent_vms', type: 'gauge', labels: [], help: 'VMs the agent enforces.' },
} as const satisfies Record<string, MetricDef>;

/** Every definition (tests check names and conventions over this list). */
export const ALL_METRICS: readonly MetricDef[] = [...Object.values(SERVER_METRICS), ...Object.values(CONTROL_METRICS), ...Object.values(AGENT_METRICS)];
