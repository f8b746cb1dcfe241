// Serialising deltas and snapshots. VMs with the same groups share their compiled rule lists
// (fleet.ts) and so their agent forms (agent-form.ts); the JSON of those lists is produced once and
// reused for every VM and host, so a change that touches every host costs one JSON.stringify of the
// rules, not one per host.
import type { AddressSet, FamilyPolicy, HostDesiredState, VmPolicy } from '../policy/ir.js';
import type { Delta } from './fleet.js';
import { formFamilyJson, nicsJson } from './agent-form.js';

const familyJson = new WeakMap<FamilyPolicy, string>();
const setJson = new WeakMap<AddressSet, string>();

function fam(f: FamilyPolicy): string {
  let s = familyJson.get(f);
  if (s === undefined) { s = formFamilyJson(f); familyJson.set(f, s); }
  return s;
}

/** Same text as JSON.stringify(policy) for the IR's fixed key order, with the rule lists cached. */
export function policyJson(p: VmPolicy): string {
  return `{"vmId":${JSON.stringify(p.vmId)},"instanceName":${JSON.stringify(p.instanceName)},"nics":${nicsJson(p.nics)},"v4":${fam(p.v4)},"v6":${fam(p.v6)},"hash":${JSON.stringify(p.hash)}}`;
}

function setText(s: AddressSet): string {
  let t = setJson.get(s);
  if (t === undefined) { t = JSON.stringify(s); setJson.set(s, t); }
  return t;
}

export function deltaJson(d: Delta): string {
  return `{"type":"delta","fromRevision":${d.fromRevision},"revision":${d.revision},"upsertVms":[${d.upsertVms.map(policyJson).join(',')}],`
    + `"removeVms":${JSON.stringify(d.removeVms)},"upsertSets":[${d.upsertSets.map(setText).join(',')}],"removeSets":${JSON.stringify(d.removeSets)}}`;
}

export function snapshotJson(s: HostDesiredState): string {
  return `{"type":"snapshot","state":{"hostId":${JSON.stringify(s.hostId)},"revision":${s.revision},"vms":[${s.vms.map(policyJson).join(',')}],"sets":[${s.sets.map(setText).join(',')}]}}`;
}
