// The compiler's input: the part of the cloud the policy depends on, indexed for change analysis.
// Loaded from the store by the control layer (and kept up to date incrementally there).
import type { Nic, SecurityGroup, SecurityGroupRule, Vm } from '../model/types.js';

export interface CloudState {
  groups: Map<number, SecurityGroup>;
  rulesByGroup: Map<number, SecurityGroupRule[]>;
  vms: Map<number, Vm>;
  nicsByVm: Map<number, Nic[]>;
  /** VM id → its group ids. */
  groupsByVm: Map<number, number[]>;
  /** Group id → member VM ids (all states; the compiler uses the Running ones for address sets). */
  membersByGroup: Map<number, number[]>;
}

export function emptyCloudState(): CloudState {
  return { groups: new Map(), rulesByGroup: new Map(), vms: new Map(), nicsByVm: new Map(), groupsByVm: new Map(), membersByGroup: new Map() };
}
