// The dataplane layer: backends that make a host's desired state real in its kernel.
export * from './backend.js';
export { createRunner, must, type Runner, type ToolResult } from './exec.js';
export { IptablesDataplane, createIptablesDataplane } from './iptables/backend.js';
export { render as renderIptables, type Rendered as IptablesRendered } from './iptables/render.js';
export { discoverPorts, portsFromLinks } from './ports.js';
