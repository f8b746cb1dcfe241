// CloudStack request signing (pure). The canonical string is every parameter except `signature`,
// sorted by name, `name=encode(value)` joined by `&`, lower-cased; HMAC-SHA1 with the secret, base64.
// Real clients disagree on how to percent-encode a few characters, so verification accepts the Java
// server's form and the handful of variants that well-known clients produce (see the reference notes).
import { createHmac, timingSafeEqual } from 'node:crypto';

type Encoder = (s: string) => string;

const hex = (c: string) =>
  Array.from(Buffer.from(c, 'utf8')).map((b) => '%' + b.toString(16).toUpperCase().padStart(2, '0')).join('');

/** Percent-encode every character not matched by `keep` (UTF-8 bytes), space as %20. */
function encoderKeeping(keep: RegExp): Encoder {
  return (s) => {
    let out = '';
    for (const ch of s) out += keep.test(ch) ? ch : hex(ch);
    return out;
  };
}

/** java.net.URLEncoder + "+"→"%20": keeps A-Z a-z 0-9 . - * _ */
export const encodeJava = encoderKeeping(/^[A-Za-z0-9.\-*_]$/);
/** python3-cs: urllib quote(safe="*") — also keeps `~`. */
export const encodePythonCs = encoderKeeping(/^[A-Za-z0-9.\-*_~]$/);
/** libcloud: quote(safe="[]*") style — also keeps `~ [ ]`. */
export const encodeLibcloud = encoderKeeping(/^[A-Za-z0-9.\-*_~[\]]$/);
/** RFC 3986 unreserved only (go-cloudstack url.QueryEscape with +→%20, csclient). `*` is escaped. */
export const encodeRfc3986 = encoderKeeping(/^[A-Za-z0-9.\-_~]$/);

interface Variant { value: Encoder; key: Encoder | null; sortLower: boolean }

const VARIANTS: Variant[] = [
  { value: encodeJava, key: null, sortLower: false },          // CloudStack's own form, tried first
  { value: encodePythonCs, key: null, sortLower: false },
  { value: encodeLibcloud, key: null, sortLower: true },
  { value: encodeLibcloud, key: null, sortLower: false },
  { value: encodeRfc3986, key: encodeRfc3986, sortLower: false },
  { value: encodeRfc3986, key: encodeRfc3986, sortLower: true },   // libcloud's urlencode of lower-cased, sorted keys
  { value: encodeRfc3986, key: null, sortLower: false },
];

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0); // UTF-16 order, as Java's compareTo

function canonical(params: Record<string, string>, v: Variant): string {
  const names = Object.keys(params).filter((k) => k.toLowerCase() !== 'signature');
  names.sort(v.sortLower ? (a, b) => cmp(a.toLowerCase(), b.toLowerCase()) || cmp(a, b) : cmp);
  return names.map((n) => `${v.key ? v.key(n) : n}=${v.value(params[n] ?? '')}`).join('&').toLowerCase();
}

/** The canonical string CloudStack's server signs (exported for tests and debugging). */
export function canonicalString(params: Record<string, string>): string {
  return canonical(params, VARIANTS[0]!);
}

function hmac(secret: string, text: string): Buffer {
  return createHmac('sha1', secret).update(text, 'utf8').digest();
}

/** Signature for a request's parameters (everything but `signature`), as CloudStack expects it. */
export function signParams(params: Record<string, string>, secret: string): string {
  return hmac(secret, canonicalString(params)).toString('base64');
}

/** Sign and return the parameters with `signature` added (clients). */
export function signedQuery(params: Record<string, string>, secret: string): Record<string, string> {
  return { ...params, signature: signParams(params, secret) };
}

/** Constant-time comparison of two base64 signatures (decoded bytes; different lengths never match). */
export function signaturesEqual(a: Buffer, b: Buffer): boolean {
  if (a.length !== b.length) return false;
  return timingSafeEqual(a, b);
}

/**
 * Parse CloudStack's `expires` (`yyyy-MM-dd'T'HH:mm:ssZ`, e.g. 2026-11-21T09:47:47+0000).
 * Also accepts `+00:00` and `Z` offsets and optional fractional seconds. Returns epoch ms or null.
 */
export function parseExpires(s: string): number | null {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(Z|[+-]\d{2}:?\d{2})$/.exec(s.trim());
  if (!m) return null;
  const [, y, mo, d, h, mi, se, tz] = m;
  let offsetMin = 0;
  if (tz !== 'Z') {
    const sign = tz![0] === '-' ? -1 : 1;
    const digits = tz!.slice(1).replace(':', '');
    offsetMin = sign * (Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2)));
  }
  const ms = Date.UTC(+y!, +mo! - 1, +d!, +h!, +mi!, +se!);
  const check = new Date(ms);
  if (check.getUTCMonth() !== +mo! - 1 || check.getUTCDate() !== +d! || +h! > 23 || +mi! > 59 || +se! > 59) return null;
  return ms - offsetMin * 60_000;
}

/** Format a Date the way python3-cs sends `expires`. */
export function formatExpires(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getUTCFullYear()}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())}T${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())}+0000`;
}

export type VerifyResult = { ok: true } | { ok: false; reason: 'missing-signature' | 'bad-signature' | 'missing-expires' | 'bad-expires' | 'expired' };

/**
 * The checks of a signed request that need no secret (a signature is present; version 3 carries a valid
 * future `expires`): done before the caller's key is even looked up.
 */
export function checkFreshness(params: Record<string, string>, nowMs: number = Date.now()): VerifyResult {
  let given: string | undefined;
  let version: string | undefined;
  let expires: string | undefined;
  for (const [k, v] of Object.entries(params)) {
    const lk = k.toLowerCase();
    if (lk === 'signature') given = v;
    else if (lk === 'signatureversion') version = v;
    else if (lk === 'expires') expires = v;
  }
  if (!given) return { ok: false, reason: 'missing-signature' };
  if (version === '3') {
    if (!expires) return { ok: false, reason: 'missing-expires' };
    const at = parseExpires(expires);
    if (at === null) return { ok: false, reason: 'bad-expires' };
    if (at <= nowMs) return { ok: false, reason: 'expired' };
  }
  return { ok: true };
}

const BASE64_SHA1 = /^[A-Za-z0-9+/]{27}=$/;

/**
 * Verify a request's signature against the user's secret. `params` are the decoded request
 * parameters including `signature`. Version 3 (`signatureVersion`, any case, = "3") requires a future `expires`.
 */
export function verifySignature(params: Record<string, string>, secret: string, nowMs: number = Date.now()): VerifyResult {
  const fresh = checkFreshness(params, nowMs);
  if (!fresh.ok) return fresh;
  let given = '';
  for (const [k, v] of Object.entries(params)) if (k.toLowerCase() === 'signature') given = v;
  // CloudStack compares the Base64 text itself: exactly the 28 characters of an HMAC-SHA1 (not the
  // unpadded, URL-safe, space-padded or junk-trailed spellings a lenient decoder would take).
  if (!BASE64_SHA1.test(given)) return { ok: false, reason: 'bad-signature' };
  const givenBytes = Buffer.from(given, 'base64');
  const unsigned: Record<string, string> = {};
  for (const [k, v] of Object.entries(params)) if (k.toLowerCase() !== 'signature') unsigned[k] = v;
  const seen = new Set<string>();
  let match = false;
  for (const variant of VARIANTS) {
    const text = canonical(unsigned, variant);
    if (seen.has(text)) continue;
    seen.add(text);
    // No early exit: every distinct variant is computed, so timing does not reveal which one matched.
    if (signaturesEqual(hmac(secret, text), givenBytes)) match = true;
  }
  return match ? { ok: true } : { ok: false, reason: 'bad-signature' };
}
