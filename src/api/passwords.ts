// User passwords: a slow, salted hash (scrypt) and its verification. Hashing runs in libuv's thread
// pool (async scrypt), so a login never blocks the event loop. The stored form names its parameters,
// `scrypt$N$r$p$salt$hash` (base64), so they can be raised later without invalidating old hashes; the
// older `scrypt$salt$hash` form (node's defaults, N=16384 r=8 p=1) is still verified.
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

const COST = { N: 32768, r: 8, p: 1 } as const;   // 32 MiB, ~0.1 s on one core of this project's machine
const KEY_LEN = 32;
const MAX_MEM = 64 * 1024 * 1024;
/** Passwords longer than this are refused (scrypt reads all of it; nobody types more). */
export const MAX_PASSWORD_LENGTH = 1024;

function derive(password: string, salt: Buffer, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFC'), salt, KEY_LEN, { ...opts, maxmem: MAX_MEM }, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await derive(password, salt, COST);
  return `scrypt$${COST.N}$${COST.r}$${COST.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

function parse(stored: string): { opts: ScryptOptions; salt: Buffer; key: Buffer } | undefined {
  const parts = stored.split('$');
  if (parts[0] !== 'scrypt') return undefined;
  if (parts.length === 3) return { opts: { N: 16384, r: 8, p: 1 }, salt: Buffer.from(parts[1]!, 'base64'), key: Buffer.from(parts[2]!, 'base64') };
  if (parts.length !== 6) return undefined;
  const [N, r, p] = parts.slice(1, 4).map(Number);
  if (![N, r, p].every((n) => Number.isInteger(n) && n! > 0) || N! > 1 << 20 || r! > 32 || p! > 16) return undefined;
  return { opts: { N, r, p }, salt: Buffer.from(parts[4]!, 'base64'), key: Buffer.from(parts[5]!, 'base64') };
}

/** Constant-time check of a password against a stored hash; false for a missing or unreadable hash. */
export async function verifyPassword(password: string, stored: string | null | undefined): Promise<boolean> {
  const h = stored ? parse(stored) : undefined;
  if (!h || h.key.length !== KEY_LEN) {
    // Same work as a real check, so the answer's timing does not tell whether the user exists.
    await derive(password, DUMMY_SALT, COST);
    return false;
  }
  const key = await derive(password, h.salt, h.opts);
  return timingSafeEqual(key, h.key);
}

const DUMMY_SALT = randomBytes(16);

/** A random password for the first start (printed into admin-credentials.json). */
export function randomPassword(): string {
  return randomBytes(18).toString('base64url');
}
