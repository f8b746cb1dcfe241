// CIDR syntax check for rule parameters (CloudStack's NetUtils.isValidIp4Cidr / isValidIp6Cidr: a prefix
// is required). It is the policy compiler's parser, so a stored rule is never one the compiler would skip.
import { parseCidr } from '../../policy/cidr.js';

export const isValidCidr = (s: string): boolean => !/\s/.test(s) && parseCidr(s) !== null;
