// Pure helpers of the agent: applying a delta to a held state, comparing port maps.
import type { HostPorts } from '../dataplane/backend.js';
import type { AddressSet, HostDesiredState, VmPolicy } from '../policy/ir.js';
import type { ServerMessage } from '../protocol/index.js';

type DeltaMsg = Extract<ServerMessage, { type: 'delta' }>;
const byKey = <T>(k: (t: T) => string) => (a: T, b: T) => (k(a) < k(b) ? -1 : k(a) > k(b) ? 1 : 0);

/** A new state (the old one is not mutated): upserts replace, removals drop, order stays canonical. */
export function applyDelta(cur: HostDesiredState, d: DeltaMsg): HostDesiredState {
  const vms = new Map<string, VmPolicy>(cur.vms.map((v) => [v.vmId, v]));
  for (const id of d.removeVms) vms.delete(id);
  for (const v of d.upsertVms) vms.set(v.vmId, v);
  const sets = new Map<string, AddressSet>(cur.sets.map((s) => [s.id, s]));
  for (const id of d.removeSets) sets.delete(id);
  for (const s of d.upsertSets) sets.set(s.id, s);
  return {
    hostId: cur.hostId,
    revision: d.revision,
    vms: [...vms.values()].sort(byKey((v) => v.vmId)),
    sets: [...sets.values()].sort(byKey((s) => s.id)),
  };
}

export function samePorts(a: HostPorts, b: HostPorts): boolean {
  const norm = (p: HostPorts) => JSON.stringify({
    nics: Object.entries(p.nics).sort(([x], [y]) => (x < y ? -1 : 1)).map(([k, v]) => [k, v.device, v.bridge]),
    bridges: Object.entries(p.bridges).sort(([x], [y]) => (x < y ? -1 : 1)).map(([k, v]) => [k, [...v.uplinks].sort(), [...v.unknownTaps].sort()]),
  });
  return norm(a) === norm(b);
}
