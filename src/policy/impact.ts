// analyzeChange: which VM policies, which address sets and which hosts one committed change touches,
// in time proportional to what changed (the members and referencers involved), never a scan of
// the cloud. Uses the reverse indexes of cloud-index.ts, which it first brings up to date with the
// entities the change names.
//
// `after` is the full state after the change. `before` is optional and may be partial: it needs the
// changed VM's entries (vms, nicsByVm, groupsByVm) or the changed group's (rulesByGroup,
// membersByGroup); a missing entry means "absent/empty" before. With `before` set changes are exact
// (a set is reported only if the VM's contribution to it differs); without it they are conservative,
// and for a membership change the groups the VM left cannot be known — pass `before` for those.
import type { Change } from '../model/changes.js';
import type { Family } from '../model/types.js';
import type { CloudState } from './state.js';
import { reindexForChange, type CloudIndex } from './cloud-index.js';
import { addressSetId, isActiveMember, vmAddressValues } from './sets.js';

/** What a change touches. `sets`: sets whose members changed, or that affected hosts may newly need. */
export interface Impact { vms: Set<number>; sets: Set<string>; hosts: Set<number> }

const FAMILIES: Family[] = [4, 6];

function runningHost(state: CloudState | undefined, vmId: number): number | null {
  const vm = state?.vms.get(vmId);
  return vm && vm.state === 'Running' && vm.hostId !== null ? vm.hostId : null;
}

/** The addresses a VM puts into group g's set of a family, as a comparable key ('' = none). */
function contribution(state: CloudState, vmId: number, g: number, family: Family): string {
  if (!isActiveMember(state.vms.get(vmId))) return '';
  if (!(state.groupsByVm.get(vmId) ?? []).includes(g)) return '';
  return vmAddressValues(state.nicsByVm.get(vmId), family).join(',');
}

function referencedGroups(state: CloudState, groupId: number): Set<number> {
  const out = new Set<number>();
  for (const r of state.rulesByGroup.get(groupId) ?? []) if (r.allowedGroupId !== null && r.allowedGroupId !== undefined) out.add(r.allowedGroupId);
  return out;
}

class Collector {
  readonly impact: Impact = { vms: new Set(), sets: new Set(), hosts: new Set() };
  private readonly holderGroupsSeen = new Set<number>();
  constructor(private readonly after: CloudState, private readonly idx: CloudIndex) {}

  host(h: number | null | undefined): void { if (h !== null && h !== undefined) this.impact.hosts.add(h); }

  /** Group g's sets (both families) changed: every host running a VM whose groups reference g. */
  setHolders(g: number): void {
    for (const h of this.idx.referencedBy.get(g)?.keys() ?? []) {
      if (this.holderGroupsSeen.has(h)) continue;
      this.holderGroupsSeen.add(h);
      for (const m of this.after.membersByGroup.get(h) ?? []) this.host(runningHost(this.after, m));
    }
  }

  changedSet(g: number, family: Family): void {
    this.impact.sets.add(addressSetId(g, family));
    this.setHolders(g);
  }

  /** Every member of group g (after, and before if given) is touched, with its host. */
  members(g: number, before?: CloudState): void {
    for (const s of before ? [this.after, before] : [this.after]) {
      for (const m of s.membersByGroup.get(g) ?? []) { this.impact.vms.add(m); this.host(runningHost(s, m)); }
    }
  }
}

function analyzeVm(c: Collector, after: CloudState, vmId: number, before: CloudState | undefined, extraHosts: (number | null)[]): void {
  if (after.vms.has(vmId) || before?.vms.has(vmId)) c.impact.vms.add(vmId);
  c.host(after.vms.get(vmId)?.hostId);
  c.host(before?.vms.get(vmId)?.hostId);
  for (const h of extraHosts) c.host(h);
  const groups = new Set([...(after.groupsByVm.get(vmId) ?? []), ...(before?.groupsByVm.get(vmId) ?? [])]);
  for (const g of groups) {
    for (const f of FAMILIES) {
      if (!before || contribution(before, vmId, g, f) !== contribution(after, vmId, g, f)) c.changedSet(g, f);
    }
  }
}

/** Which VMs' policies, which address sets and which hosts a change touches (state = after the change; `before` for removals/moves). */
export function analyzeChange(after: CloudState, change: Change, before?: CloudState): Impact {
  const idx = reindexForChange(after, change);
  const c = new Collector(after, idx);
  switch (change.kind) {
    case 'rules':
    case 'group': {
      const g = change.groupId;
      // The group's members get new policies; their hosts need any set the new rules reference.
      c.members(g, before);
      const old = before ? referencedGroups(before, g) : new Set<number>();
      for (const x of referencedGroups(after, g)) {
        if (!old.has(x)) for (const f of FAMILIES) c.impact.sets.add(addressSetId(x, f));
      }
      // A created/deleted group's own sets: whoever references it must hear (normally nobody).
      if (change.kind === 'group' && idx.referencedBy.has(g)) for (const f of FAMILIES) c.changedSet(g, f);
      break;
    }
    case 'membership':
    case 'vmState':
    case 'nic':
      analyzeVm(c, after, change.vmId, before, []);
      break;
    case 'placement':
      analyzeVm(c, after, change.vmId, before, [change.fromHostId, change.toHostId]);
      break;
    case 'host': {
      c.host(change.hostId);
      for (const v of idx.vmsByHost.get(change.hostId) ?? []) c.impact.vms.add(v);
      break;
    }
  }
  return c.impact;
}
