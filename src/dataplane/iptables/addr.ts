// Address helpers now live with the plan (both backends use them); re-exported for existing imports.
export { linkLocalFromMac, tapMac, isV4, isV6, canonV6 } from '../plan/addr.js';
