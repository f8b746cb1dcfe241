// Content hashes for the IR: sha256 over a canonical JSON form (object keys sorted), so equal
// policies hash equal whatever order their objects were built in. node:crypto does no I/O.
import { createHash } from 'node:crypto';

/** JSON with object keys sorted at every level; undefined properties are left out (as JSON does). */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v === undefined ? null : v)).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).filter((k) => obj[k] !== undefined).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
}

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** Full content hash of a JSON value (key order does not matter). */
export function contentHash(value: unknown): string { return sha256Hex(canonicalJson(value)); }

/** Short stable id from a canonical text (12 hex digits = 48 bits: collisions within one VM's rule list are negligible). */
export function shortId(text: string): string { return sha256Hex(text).slice(0, 12); }
