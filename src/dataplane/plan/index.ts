// The backend-neutral host plan (DESIGN.md §7): host desired state + ports → ports, marks, zones,
// baseline, rules and sets as data. Both backends (iptables/, nftables/) print from it.
export * from './types.js';
export * from './baseline.js';
export * from './reasons.js';
export * from './marks.js';
export { planHost, safeDevice, safeName, vmProblems } from './build.js';
export { canonV6, isV4, isV6, linkLocalFromMac, tapMac } from './addr.js';
