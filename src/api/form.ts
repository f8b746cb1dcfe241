// Reading a request's parameters (query string and urlencoded form body) with work bounded BEFORE any
// decoding: the pairs are counted by their `&` separators first, and a request with too many is refused
// without being decoded at all. A hostile body (hundreds of thousands of keys) therefore costs one scan
// of at most MAX_BODY_BYTES, not a decode, a signature over every key and a trip to the store.
import { MAX_PARAMETERS } from './limits.js';

export type FormRead =
  | { ok: true; params: Record<string, string> }
  | { ok: false; count: number };

/** Pairs in an urlencoded string (empty segments, as between `&&`, count too), stopping past `stopAfter`. */
export function countPairs(s: string, stopAfter = Number.MAX_SAFE_INTEGER): number {
  if (s.length === 0) return 0;
  let n = 1;
  for (let i = s.indexOf('&'); i !== -1 && n <= stopAfter; i = s.indexOf('&', i + 1)) n++;
  return n;
}

/** Decode one urlencoded string (`+` is a space, invalid UTF-8 becomes U+FFFD) into `out`; the first occurrence of a name wins. */
function decodeInto(out: Record<string, string>, s: string): void {
  if (s.length === 0) return;
  for (const [k, v] of new URLSearchParams(s)) if (!Object.prototype.hasOwnProperty.call(out, k)) out[k] = v;
}

/**
 * The request's parameters: query string first, then the form body (a name in both keeps the query's
 * value, as a servlet's getParameter does). Refused (`ok: false`) when together they hold more than
 * `maxParameters` pairs.
 */
export function readParams(query: string, body: string, maxParameters = MAX_PARAMETERS): FormRead {
  const inQuery = countPairs(query, maxParameters);
  const count = inQuery + countPairs(body, maxParameters - inQuery);
  if (count > maxParameters) return { ok: false, count };
  const params: Record<string, string> = Object.create(null) as Record<string, string>;
  decodeInto(params, query);
  decodeInto(params, body);
  return { ok: true, params: { ...params } };
}

/** The query string of a raw request URL (without `?`). */
export function queryOf(url: string): string {
  const i = url.indexOf('?');
  return i === -1 ? '' : url.slice(i + 1);
}

/**
 * Whether a request asked for JSON, read from its raw query string or body without decoding them (for
 * answers given before the parameters are read: too many of them, a body too large). CloudStack answers
 * XML unless `response=json`.
 */
export function wantsJsonRaw(...raw: string[]): boolean {
  return raw.some((s) => /(?:^|&)response=[jJ][sS][oO][nN](?:&|$)/.test(s));
}

/**
 * Whether decoded parameters ask for JSON: CloudStack's ApiServlet reads `response` by that exact name
 * and compares its value to `json` ignoring case (`RESPONSE=json` or `response= json` get XML).
 */
export function wantsJson(params: Record<string, string>): boolean {
  return Object.hasOwn(params, 'response') && params.response!.toLowerCase() === 'json';
}
