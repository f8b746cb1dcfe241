// The host plan: everything a backend needs to program one host, as data (DESIGN.md §7). Pure.
import type { FamilyPolicy, NicPolicy, PolicyRule, VmPolicy } from '../../policy/ir.js';
import type { Baseline, Fam } from './baseline.js';
import type { DropLogConfig } from './reasons.js';

export type { Fam } from './baseline.js';

/** A VM NIC found on a bridge of this host. */
export interface PortPlan {
  device: string;
  bridge: string;
  /** 1…MAX_VM_PORT, stable per device name: the port's value in the packet mark and its conntrack zone. */
  number: number;
  vmId: string;
  instanceName: string;
  /** The NIC's position in its VM (0 = first NIC). */
  nicIndex: number;
  nic: NicPolicy;
  /** Guest MAC, lower-case. */
  mac: string;
  /** The NIC's own addresses per family, canonical and sorted (IPv6: plus its EUI-64 link-local). */
  own: Record<Fam, string[]>;
}

/** A VM with at least one NIC placed, and what stops it from being programmed fully. */
export interface VmPlan {
  vmId: string;
  instanceName: string;
  policy: VmPolicy;
  /** Placed NICs, in NIC order. */
  ports: PortPlan[];
  /** NIC uuids with no port on this host (the VM is programmed for the others). */
  missing: string[];
  /** The instance name cannot be used in kernel object names. */
  badInstanceName: boolean;
  /** `device@bridge` of placed NICs whose names cannot be used. */
  badDevices: string[];
  /** Union of its NICs' own addresses per family. */
  addrs: Record<Fam, string[]>;
  /** Address-set ids its rules reference, with their family, in first-use order. */
  refs: [string, Fam][];
}

export interface BridgePlan {
  name: string;
  /** 1…MAX_BRIDGES, stable per name. */
  number: number;
  /** Conntrack zone of traffic straight between two VMs on this bridge. */
  zone: number;
  /** Uplink devices (the NIC, bond or VLAN device towards the network). */
  uplinks: string[];
  /** VM-like ports that match no NIC: dropped both ways. */
  unknown: string[];
  /** VM ports on it (programmed VMs only), sorted by device. */
  ports: PortPlan[];
}

export interface SetPlan {
  id: string;
  family: Fam;
  /** Canonical, sorted, unique. */
  members: string[];
  /** false: referenced by a rule but absent from the desired state (created empty: fail closed). */
  known: boolean;
}

export interface HostPlan {
  /** VMs with a NIC placed and a usable name (the backend may still refuse some, e.g. on a name clash). */
  vms: VmPlan[];
  /** VM uuid → why it is not (fully) programmed; for VMs in `vms` the backend may add its own reasons. */
  errors: Record<string, string>;
  bridges: BridgePlan[];
  /** Referenced groups as address sets (known ones, then empty ones for unknown references). */
  sets: SetPlan[];
  /** Addresses of untracked (NOTRACK) and tracked VMs per family: untracked traffic skips conntrack
   *  unless its other end is a tracked VM of this host. */
  notrack: Record<Fam, { untracked: string[]; tracked: string[] }>;
  baseline: Baseline;
  /** The drop log's settings (null: drops are not logged). */
  dropLog: DropLogConfig | null;
}

export type { FamilyPolicy, PolicyRule };

export const familyOf = (vm: VmPolicy, f: Fam): FamilyPolicy => (f === 4 ? vm.v4 : vm.v6);
