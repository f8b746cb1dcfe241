// Public surface of the policy layer (pure). Implementations live in the modules re-exported here.
export * from './ir.js';
export * from './state.js';
export * from './api.js';
