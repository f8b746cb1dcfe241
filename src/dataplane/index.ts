// The dataplane layer: backends that make a host's desired state real in its kernel.
// Typical use (the agent):
//   const dp = createDataplane('nftables', { netns });                // or 'iptables'; netns null = this namespace
//   const ports = await discoverPorts(dp.runner, state, { uplinks }); // NIC → tap/bridge, uplinks, unknown taps
//   const res = await dp.apply({ state, ports });                    // res.vms[vmId].ok / .error; res.changed
//   const { drift } = await dp.observe({ state, ports });            // periodically; then apply to repair
//   await dp.teardown();                                             // remove everything Palisade owns
// Both backends print the same plan (dataplane/plan): planHost(input) is what they enforce.
export * from './backend.js';
export { createRunner, must, type Runner, type ToolResult } from './exec.js';
export { IptablesDataplane, createIptablesDataplane } from './iptables/backend.js';
export { render as renderIptables, type Rendered as IptablesRendered } from './iptables/render.js';
export { NftablesDataplane, createNftablesDataplane, type RuleCounter } from './nftables/backend.js';
export { render as renderNftables, type Rendered as NftablesRendered } from './nftables/render.js';
export { planHost, type HostPlan } from './plan/index.js';
export { discoverPorts, portsFromLinks } from './ports.js';
export { BACKENDS, type BackendName, createDataplane, type KernelBackend } from './choose.js';
