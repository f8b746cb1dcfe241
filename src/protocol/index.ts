// The agent wire protocol, shared by `control` (server side) and `agent`: messages, schemas, bounds.
export * from './messages.js';
export * from './limits.js';
export * from './conntrack.js';
