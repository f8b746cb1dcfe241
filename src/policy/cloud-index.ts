// Reverse indexes over a CloudState, so change analysis and per-host state cost what changed and
// not the size of the cloud:
// - referencedBy: group X → the groups whose rules reference X (with rule counts);
// - vmsByHost: host → VMs whose hostId is that host (any state; readers filter).
// CloudState's shape is unchanged: the index lives beside it (WeakMap keyed by the state object),
// is built on first use, and is kept current by analyzeChange, which re-reads the entities a change
// names before analysing it. So: mutate the state in place and report every change through
// analyzeChange (the control layer does), or call indexCloudState(state, { rebuild: true }).
import type { Change } from '../model/changes.js';
import type { CloudState } from './state.js';

export interface CloudIndex {
  referencedBy: Map<number, Map<number, number>>;
  /** group → groups its rules reference, as last indexed (to undo on re-index). */
  refsOf: Map<number, Map<number, number>>;
  vmsByHost: Map<number, Set<number>>;
  /** VM → host as last indexed. */
  hostOf: Map<number, number>;
}

const indexes = new WeakMap<CloudState, CloudIndex>();

function countRefs(state: CloudState, groupId: number): Map<number, number> {
  const refs = new Map<number, number>();
  for (const r of state.rulesByGroup.get(groupId) ?? []) {
    if (r.allowedGroupId !== null && r.allowedGroupId !== undefined) refs.set(r.allowedGroupId, (refs.get(r.allowedGroupId) ?? 0) + 1);
  }
  return refs;
}

/** Re-reads one group's rules into the index. */
export function reindexGroup(state: CloudState, idx: CloudIndex, groupId: number): void {
  for (const [x, n] of idx.refsOf.get(groupId) ?? []) {
    const m = idx.referencedBy.get(x);
    if (!m) continue;
    const left = (m.get(groupId) ?? 0) - n;
    if (left > 0) m.set(groupId, left); else m.delete(groupId);
    if (m.size === 0) idx.referencedBy.delete(x);
  }
  const refs = countRefs(state, groupId);
  if (refs.size === 0) { idx.refsOf.delete(groupId); return; }
  idx.refsOf.set(groupId, refs);
  for (const [x, n] of refs) {
    let m = idx.referencedBy.get(x);
    if (!m) idx.referencedBy.set(x, (m = new Map()));
    m.set(groupId, (m.get(groupId) ?? 0) + n);
  }
}

/** Re-reads one VM's placement into the index. */
export function reindexVm(state: CloudState, idx: CloudIndex, vmId: number): void {
  const old = idx.hostOf.get(vmId);
  const now = state.vms.get(vmId)?.hostId ?? null;
  if (old === now) return;
  if (old !== undefined) {
    const s = idx.vmsByHost.get(old);
    s?.delete(vmId);
    if (s && s.size === 0) idx.vmsByHost.delete(old);
    idx.hostOf.delete(vmId);
  }
  if (now !== null) {
    let s = idx.vmsByHost.get(now);
    if (!s) idx.vmsByHost.set(now, (s = new Set()));
    s.add(vmId);
    idx.hostOf.set(vmId, now);
  }
}

/** The state's index, built on first use (O(cloud) once). */
export function indexCloudState(state: CloudState, opts: { rebuild?: boolean } = {}): CloudIndex {
  const have = indexes.get(state);
  if (have && !opts.rebuild) return have;
  const idx: CloudIndex = { referencedBy: new Map(), refsOf: new Map(), vmsByHost: new Map(), hostOf: new Map() };
  for (const g of state.rulesByGroup.keys()) reindexGroup(state, idx, g);
  for (const v of state.vms.keys()) reindexVm(state, idx, v);
  indexes.set(state, idx);
  return idx;
}

/** Brings the index up to date with the entities a change names (called by analyzeChange). */
export function reindexForChange(state: CloudState, change: Change): CloudIndex {
  const idx = indexCloudState(state);
  switch (change.kind) {
    case 'rules': case 'group': reindexGroup(state, idx, change.groupId); break;
    case 'membership': case 'vmState': case 'placement': case 'nic': reindexVm(state, idx, change.vmId); break;
    case 'host': break;
  }
  return idx;
}
