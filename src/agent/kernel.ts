// The kernel dataplane of a real host: the backend chosen for it (nftables, iptables, or auto), the
// other backend (whose leftovers are removed once the chosen one is in place) and port discovery.
import type { Dataplane, HostPorts } from '../dataplane/backend.js';
import { must, type Runner } from '../dataplane/exec.js';
import { type BackendName, BACKENDS, chooseBackend, createDataplane } from '../dataplane/choose.js';
import { discoverPorts, type IpLink } from '../dataplane/ports.js';
import type { HostDesiredState } from '../policy/ir.js';

export interface KernelDataplane {
  dataplane: Dataplane;
  /** The other backends: removed from the host after `dataplane` applied a real desired state. */
  others: Dataplane[];
  discover: (state: HostDesiredState) => Promise<HostPorts>;
  /** Why this backend (for `auto`: what the probe found). */
  reason: string;
}

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

export async function kernelDataplane(runner: Runner, opts: { uplinks: string[]; backend: BackendName | 'auto' }): Promise<KernelDataplane> {
  const uplinks = await uplinksByBridge(runner, opts.uplinks);
  const choice = opts.backend === 'auto' ? await chooseBackend(runner) : { backend: opts.backend, reason: `--dataplane ${opts.backend}` };
  return {
    dataplane: createDataplane(choice.backend, { runner }),
    others: BACKENDS.filter((b) => b !== choice.backend).map((b) => createDataplane(b, { runner })),
    discover: (state) => discoverPorts(runner, state, uplinks ? { uplinks } : {}),
    reason: choice.reason,
  };
}
