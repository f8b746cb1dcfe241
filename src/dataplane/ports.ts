// Port discovery (DESIGN.md §4): where each desired VM NIC sits on the host's bridges.
// A NIC's host device is named explicitly or found by libvirt's MAC convention (fe: + the rest of the
// guest MAC). Every bridge with a NIC or a tap-like port (vnetN or an fe: MAC) is listed; its tap-like
// ports that match no NIC are unknown taps (dropped, fail closed); every other port is an uplink,
// unless uplinks are named.
import type { HostPorts } from './backend.js';
import type { HostDesiredState } from '../policy/ir.js';
import { type Runner, must } from './exec.js';
import { tapMac } from './iptables/addr.js';

/** The fields of `ip -j link show` we use. */
export interface IpLink { ifname: string; address?: string; master?: string; link_type?: string }

export interface PortOptions {
  /** Explicit uplinks per bridge (`--uplink`); other non-NIC ports of that bridge are then unknown. */
  uplinks?: Record<string, string[]>;
}

const TAP_NAME = /^vnet\d+$/;

export function isTapLike(l: IpLink): boolean {
  return TAP_NAME.test(l.ifname) || (l.address ?? '').toLowerCase().startsWith('fe:');
}

/** Strip `@peer` from names as some iproute2 versions print them. */
function bare(name: string): string { return name.split('@')[0]; }

export function portsFromLinks(links: IpLink[], state: Pick<HostDesiredState, 'vms'>, opts: PortOptions = {}): HostPorts {
  const ls = links.map((l) => ({ ...l, ifname: bare(l.ifname), address: l.address?.toLowerCase() }));
  const byName = new Map(ls.map((l) => [l.ifname, l]));
  const nics: HostPorts['nics'] = {};
  for (const vm of state.vms) {
    for (const nic of vm.nics) {
      const link = nic.deviceName
        ? byName.get(nic.deviceName)
        : ls.find((l) => l.master && l.address === tapMac(nic.mac));
      if (link?.master) nics[nic.nicId] = { device: link.ifname, bridge: link.master };
    }
  }
  const devices = new Set(Object.values(nics).map((p) => p.device));
  const bridges: HostPorts['bridges'] = {};
  // Managed bridges: those of found NICs, any carrying a tap-like port (a VM Palisade does not know
  // yet, or whose tap came after the last apply: its port must fail closed too), and those named
  // with explicit uplinks.
  const managed = new Set([
    ...Object.values(nics).map((p) => p.bridge),
    ...ls.filter((l) => l.master && isTapLike(l)).map((l) => l.master!),
    ...Object.keys(opts.uplinks ?? {}).filter((br) => ls.some((l) => l.ifname === br)),
  ]);
  for (const br of [...managed].sort()) {
    const explicit = opts.uplinks?.[br];
    const uplinks: string[] = [];
    const unknownTaps: string[] = [];
    for (const l of ls) {
      if (l.master !== br || devices.has(l.ifname)) continue;
      if (explicit) (explicit.includes(l.ifname) ? uplinks : unknownTaps).push(l.ifname);
      else (isTapLike(l) ? unknownTaps : uplinks).push(l.ifname);
    }
    bridges[br] = { uplinks: uplinks.sort(), unknownTaps: unknownTaps.sort() };
  }
  return { nics, bridges };
}

/** Run `ip -j link show` (in the runner's namespace) and map the desired NICs to their ports. */
export async function discoverPorts(runner: Runner, state: Pick<HostDesiredState, 'vms'>, opts: PortOptions = {}): Promise<HostPorts> {
  const out = await must(runner, 'ip link show', 'ip', ['-j', 'link', 'show']);
  return portsFromLinks(JSON.parse(out) as IpLink[], state, opts);
}
