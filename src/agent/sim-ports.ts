// Port map for a simulated host (render-only dataplane): every NIC is "present" on cloudbr0.
import type { HostPorts } from '../dataplane/backend.js';
import type { HostDesiredState } from '../policy/ir.js';

export function simulatedPorts(state: HostDesiredState): HostPorts {
  const nics: HostPorts['nics'] = {};
  let i = 0;
  for (const vm of state.vms) for (const nic of vm.nics) nics[nic.nicId] = { device: nic.deviceName ?? `vnet${i++}`, bridge: 'cloudbr0' };
  return { nics, bridges: { cloudbr0: { uplinks: ['eth0'], unknownTaps: [] } } };
}
