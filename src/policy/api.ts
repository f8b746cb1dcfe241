// Signatures of the compiler (placeholder bodies until the policy layer lands; the names are the contract).
import type { Change } from '../model/changes.js';
import type { Family } from '../model/types.js';
import type { AddressSet, HostDesiredState, Packet, Verdict, VmPolicy } from './ir.js';
import type { CloudState } from './state.js';

/** The policy of one VM (whatever its state; callers decide placement). */
export function compileVm(_state: CloudState, _vmId: number): VmPolicy { throw new Error('not implemented'); }
/** Address-set id for a referenced group and family, e.g. "sg12v4". */
export function addressSetId(groupId: number, family: Family): string { return `sg${groupId}v${family}`; }
/** A referenced group's set: the addresses of its Running members for that family. */
export function compileAddressSet(_state: CloudState, _groupId: number, _family: Family): AddressSet { throw new Error('not implemented'); }
/** Everything a host enforces: its Running VMs and the sets they reference. */
export function hostDesiredState(_state: CloudState, _hostId: number, _hostUuid: string, _revision: number): HostDesiredState { throw new Error('not implemented'); }
/** Which VMs' policies, which address sets and which hosts a change touches (state = after the change; `before` for removals/moves). */
export interface Impact { vms: Set<number>; sets: Set<string>; hosts: Set<number> }
export function analyzeChange(_after: CloudState, _change: Change, _before?: CloudState): Impact { throw new Error('not implemented'); }
/** Reference semantics: the verdict for one packet against one VM's policy (sets resolve referenced groups). */
export function evaluate(_policy: VmPolicy, _packet: Packet, _sets: ReadonlyMap<string, AddressSet>): Verdict { throw new Error('not implemented'); }
