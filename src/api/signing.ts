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

const YMD = String.raw`(\d{4})-(\d{2})-(\d{2})`;
const ISO_OFFSET_DATE_TIME = new RegExp(String.raw`^${YMD}[Tt](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{0,9}))?)?([Zz]|[+-]\d{2}(?::\d{2}(?::\d{2})?)?)$`);
/** `yyyy-MM-dd'T'HH:mm:ssZ` and the legacy `yyyy-MM-dd'T'HH:mm:ss'Z'Z`. */
const ZONED = new RegExp(String.raw`^${YMD}T(\d{2}):(\d{2}):(\d{2})Z?([+-]\d{4})$`);
/** `yyyy-MM-dd'T'HH:mm:ss.SSSSSSX` (and `.SSSSSSZ`, whose `+HHMM` X reads too). */
const MICROS = new RegExp(String.raw`^${YMD}T(\d{2}):(\d{2}):(\d{2})\.(\d{6})(Z|[+-]\d{2}(?:\d{2})?)$`);

/**
 * Parse `expires` exactly as CloudStack's DateUtil.parseTZDateString does (java.time formatters, the
 * first that yields an OffsetDateTime wins); epoch ms, or null where CloudStack throws ParseException:
 *  - ISO_OFFSET_DATE_TIME: case-insensitive (`t`, `z`), seconds and 0–9 fraction digits optional, offset
 *    `Z` or `+HH`, `+HH:MM`, `+HH:MM:SS` (colons required); strict calendar (no Feb 30, no 24:00);
 *  - `yyyy-MM-dd'T'HH:mm:ssZ` (python3-cs's, offset `+HHMM`), `…:ss.SSSSSSX` (exactly six fraction digits,
 *    `Z`, `+HH` or `+HHMM`; `.SSSSSSZ` is a subset) and the legacy `…:ss'Z'Z` (`…Z+0000`): case-sensitive,
 *    resolved SMART, so a day past the month's end is clamped to its last day and 24:00:00 is the next
 *    midnight. (ISO_INSTANT and `….SSSSSS'Z'` carry no offset, so never yield an OffsetDateTime.)
 * Offsets beyond ±18:00 are refused. Nothing is trimmed. Years have four digits (Java also reads
 * `+` and 5–10 digits: far beyond any date a client sends; refused here).
 */
export function parseExpires(s: string): number | null {
  // In CloudStack's order; one that matches but fails to resolve (Feb 30 under STRICT) leaves the next to try.
  let m = ISO_OFFSET_DATE_TIME.exec(s);
  const iso = m ? resolve(m, m[7] ?? '', m[8]!, false) : null;
  if (iso !== null) return iso;
  if ((m = ZONED.exec(s))) return resolve(m, '', m[7]!, true);
  if ((m = MICROS.exec(s))) return resolve(m, m[7]!, m[8]!, true);
  return null;
}

/** Offset in seconds (`Z`, ±HH, ±HHMM, ±HH:MM, ±HH:MM:SS), or null past Java's bounds (hours ≤ 23 to parse, |offset| ≤ 18 h). */
function offsetSeconds(tz: string): number | null {
  if (tz === 'Z' || tz === 'z') return 0;
  const digits = tz.slice(1).replaceAll(':', '');
  const h = Number(digits.slice(0, 2)), mi = Number(digits.slice(2, 4) || 0), se = Number(digits.slice(4, 6) || 0);
  if (h > 23 || mi > 59 || se > 59) return null;
  const total = h * 3600 + mi * 60 + se;
  if (total > 18 * 3600) return null;
  return tz[0] === '-' ? -total : total;
}

/** Date and time fields resolved STRICT (ISO formatter) or SMART (ofPattern formatters), as java.time does. */
function resolve(m: RegExpExecArray, fraction: string, tz: string, smart: boolean): number | null {
  const [y, mo, d0, h, mi] = [1, 2, 3, 4, 5].map((i) => Number(m[i]));
  const se = Number(m[6] ?? 0);
  const nanos = Number((fraction + '000000000').slice(0, 9));
  const off = offsetSeconds(tz);
  if (off === null || mo! < 1 || mo! > 12 || d0! < 1 || d0! > 31 || mi! > 59 || se > 59) return null;
  const monthDays = [31, leap(y!) ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][mo! - 1]!;
  let d = d0!;
  if (d > monthDays) {
    if (!smart) return null;
    d = monthDays;      // SMART: the month's last valid day
  }
  if (smart && y === 0) return null;   // `yyyy` is year-of-era: there is no year 0
  let nextDay = 0;
  if (h === 24 && smart && mi === 0 && se === 0 && nanos === 0) nextDay = 1;   // SMART: 24:00 ends the day
  else if (h! > 23) return null;
  const t = new Date(0);
  t.setUTCFullYear(y!, mo! - 1, d + nextDay);
  t.setUTCHours(nextDay ? 0 : h!, mi!, se, Math.floor(nanos / 1e6));
  return t.getTime() - off * 1000;
}

const leap = (y: number) => (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;

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
    // CloudStack refuses an expires before now (Date.before): the very millisecond is still good.
    if (at < nowMs) return { ok: false, reason: 'expired' };
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
