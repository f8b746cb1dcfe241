// Public surface of the policy layer (pure). Implementations live in the modules re-exported here.
export * from './ir.js';
export * from './state.js';
export * from './api.js';
export { type CloudIndex } from './cloud-index.js';
export { canonicalIp, parseCidr, formatCidr } from './cidr.js';
export { parseAddressSetId, isActiveMember } from './sets.js';
export { enforcedOn, referencedSets } from './host.js';
export { normalizeMatch } from './rules.js';
