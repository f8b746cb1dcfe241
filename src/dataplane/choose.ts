// The kernel backends by name, and the choice `auto` makes: nftables when the kernel proves (with
// `nft -c`, which checks a transaction without committing it) that it has everything the nftables
// backend uses, else iptables.
import { type Runner, createRunner } from './exec.js';
import { IptablesDataplane } from './iptables/backend.js';
import { NftablesDataplane } from './nftables/backend.js';
import { probeScript } from './nftables/probe.js';

export const BACKENDS = ['nftables', 'iptables'] as const;
export type BackendName = (typeof BACKENDS)[number];
export type KernelBackend = IptablesDataplane | NftablesDataplane;

export function createDataplane(name: BackendName, opts: { runner?: Runner; netns?: string | null } = {}): KernelBackend {
  const runner = opts.runner ?? createRunner({ netns: opts.netns ?? null });
  return name === 'nftables' ? new NftablesDataplane({ runner }) : new IptablesDataplane({ runner });
}

export interface Choice { backend: BackendName; reason: string }

/** What `--dataplane auto` runs: nftables when `nft -c` accepts everything it needs, else iptables. */
export async function chooseBackend(runner: Runner): Promise<Choice> {
  const r = await runner.run('nft', ['-c', '-f', '-'], probeScript());
  if (r.code === 0) return { backend: 'nftables', reason: 'nft -c accepted the features the nftables backend uses' };
  const why = (r.stderr || r.stdout || `exit ${r.code}`).trim().split('\n')[0];
  return { backend: 'iptables', reason: `nftables not usable here (${why})` };
}
