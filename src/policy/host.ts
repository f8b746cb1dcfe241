// hostDesiredState: everything one host enforces — its Running VMs and exactly the sets they
// reference. A host never receives another host's VMs (DESIGN.md §4).
import type { AddressSet, HostDesiredState, VmPolicy } from './ir.js';
import type { CloudState } from './state.js';
import { indexCloudState } from './cloud-index.js';
import { compileVm } from './compile.js';
import { compileAddressSet, parseAddressSetId } from './sets.js';

/** Whether a VM is enforced on a host: Running there. (Other states' taps fail closed on the agent.) */
export function enforcedOn(state: CloudState, vmId: number, hostId: number): boolean {
  const vm = state.vms.get(vmId);
  return vm !== undefined && vm.hostId === hostId && vm.state === 'Running';
}

/** Set ids a policy references, sorted. */
export function referencedSets(policy: VmPolicy): string[] {
  const ids = new Set<string>();
  for (const fp of [policy.v4, policy.v6]) for (const r of [...fp.ingress, ...fp.egress]) for (const s of r.sets) ids.add(s);
  return [...ids].sort();
}

/** Everything a host enforces: its Running VMs (sorted by VM uuid) and the sets they reference (sorted by id). */
export function hostDesiredState(state: CloudState, hostId: number, hostUuid: string, revision: number): HostDesiredState {
  const idx = indexCloudState(state);
  const vmIds = [...(idx.vmsByHost.get(hostId) ?? [])].filter((id) => enforcedOn(state, id, hostId));
  const vms = vmIds.map((id) => compileVm(state, id)).sort((a, b) => (a.vmId < b.vmId ? -1 : a.vmId > b.vmId ? 1 : 0));
  const setIds = [...new Set(vms.flatMap(referencedSets))].sort();
  const sets: AddressSet[] = setIds.map((id) => {
    const p = parseAddressSetId(id)!;
    return compileAddressSet(state, p.groupId, p.family);
  });
  return { hostId: hostUuid, revision, vms, sets };
}
