// The kernel dataplane of a real host: the iptables backend and port discovery (dataplane layer).
import type { Dataplane, HostPorts } from '../dataplane/backend.js';
import { must, type Runner } from '../dataplane/exec.js';
import { createIptablesDataplane } from '../dataplane/iptables/backend.js';
import { discoverPorts, type IpLink } from '../dataplane/ports.js';
import type { HostDesiredState } from '../policy/ir.js';

export interface KernelDataplane { dataplane: Dataplane; discover: (state: HostDesiredState) => Promise<HostPorts> }

/** `--uplink` values: `BRIDGE=DEV`, or `DEV` (its bridge is looked up). */
async function uplinksByBridge(runner: Runner, specs: string[]): Promise<Record<string, string[]> | undefined> {
  if (!specs.length) return undefined;
  const out: Record<string, string[]> = {};
  for (const spec of specs) {
    let [br, dev] = spec.includes('=') ? spec.split('=', 2) : [null, spec];
    if (!br) {
      const links = JSON.parse(await must(runner, 'ip link show', 'ip', ['-j', 'link', 'show', 'dev', dev])) as IpLink[];
      br = links[0]?.master ?? null;
      if (!br) throw new Error(`--uplink ${dev}: the device is not a bridge port`);
    }
    (out[br] ??= []).push(dev);
  }
  return out;
}

export async function kernelDataplane(runner: Runner, opts: { uplinks: string[] }): Promise<KernelDataplane> {
  const uplinks = await uplinksByBridge(runner, opts.uplinks);
  return {
    dataplane: createIptablesDataplane({ runner }),
    discover: (state) => discoverPorts(runner, state, uplinks ? { uplinks } : {}),
  };
}
