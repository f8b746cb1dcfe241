// Port discovery (DESIGN.md §4, §7): where each desired VM NIC sits on the host's bridges.
// A NIC's host device is named explicitly or found by libvirt's MAC convention (fe: + the rest of the
// guest MAC). Other ports are classified by what they are, together with the MAC: a port is VM-like
// when it carries libvirt's tap name (vnetN), or when it is a tap device (tun/tap kind) with libvirt's
// fe: MAC. Every bridge with a NIC or a VM-like port is managed; its VM-like ports that match no NIC
// are unknown taps (dropped, fail closed); every other port is an uplink, unless uplinks are named.
// A device that is not a tap (veth, VXLAN, bond, OVS internal port, NIC) is never taken for a rogue VM
// port because of its MAC: random-MAC devices get an fe: MAC one time in 64.
import type { HostPorts } from './backend.js';
import type { HostDesiredState } from '../policy/ir.js';
import { type Runner, must } from './exec.js';
import { tapMac } from './plan/addr.js';

/** The fields of `ip -j -d link show` we use. */
export interface IpLink {
  ifname: string;
  address?: string;
  master?: string;
  link_type?: string;
  /** `-d`: the device's kind (`tun` with info_data.type `tap` for a tap, `veth`, `vxlan`, `bond` …). */
  linkinfo?: { info_kind?: string; info_data?: { type?: string } };
}

export interface PortOptions {
  /** Explicit uplinks per bridge (`--uplink`); other non-NIC ports of that bridge are then unknown. */
  uplinks?: Record<string, string[]>;
}

const TAP_NAME = /^vnet\d+$/;

/** A tun/tap device in tap mode (what libvirt and QEMU plug into the bridge for a VM NIC). */
export function isTap(l: IpLink): boolean {
  return l.linkinfo?.info_kind === 'tun' && (l.linkinfo.info_data?.type ?? 'tap') === 'tap';
}

/** Looks like a VM's port: libvirt's tap name, or a tap device with libvirt's fe: MAC. */
export function isTapLike(l: IpLink): boolean {
  return TAP_NAME.test(l.ifname) || (isTap(l) && (l.address ?? '').toLowerCase().startsWith('fe:'));
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

/** Run `ip -j -d link show` (in the runner's namespace) and map the desired NICs to their ports. */
export async function discoverPorts(runner: Runner, state: Pick<HostDesiredState, 'vms'>, opts: PortOptions = {}): Promise<HostPorts> {
  const out = await must(runner, 'ip link show', 'ip', ['-j', '-d', 'link', 'show']);
  return portsFromLinks(JSON.parse(out) as IpLink[], state, opts);
}
