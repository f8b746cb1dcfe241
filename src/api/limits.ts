// The bounds every request is held to, in one place. Each is checked before the work it bounds: the body
// size and parameter count before the body is decoded, the rest before anything is stored.
// - body and parameter count: CloudStack's Jetty refuses form bodies over `request.content.size` (1 MiB by
//   default) and more form keys than `maxFormKeys` (Jetty's default 1,000; CloudStack ≥ 4.18 raises it);
// - time: a request's head must arrive within HEADERS_TIMEOUT_MS and the whole request within
//   REQUEST_TIMEOUT_MS (Node answers 408 and closes); a keep-alive connection may idle KEEP_ALIVE_TIMEOUT_MS
//   between requests (and how many connections may hold no request at once: idle-connections.ts);
// - string values: CloudStack's @Parameter(length) defaults to 255 and its ParamProcessWorker refuses
//   longer values (431) — commands declare a different `length` where CloudStack does;
// - list and map parameters: CloudStack has no explicit bound (only the body size); Palisade caps them so
//   one request stays one bounded transaction;
// - events: CloudStack's `event.description` column is varchar(1024).

/** Largest request body accepted (bytes). */
export const MAX_BODY_BYTES = 1024 * 1024;
/**
 * Time to receive a whole request, headers and body (ms). Without it a client sending a byte now and
 * then held its connection (and a file descriptor) for ever: enough of them and the server accepts no
 * API call and no agent. Jetty, under CloudStack, closes idle connections after 30 s too.
 */
export const REQUEST_TIMEOUT_MS = 30_000;
/**
 * Time from a connection's accept (or, between keep-alive requests, from a request's first byte) until
 * its request head has arrived (ms); at most REQUEST_TIMEOUT_MS. A head is at most 16 KiB, sent at once
 * by every client: 10 s covers a lossy link's retransmissions (1 + 2 + 4 s) with room to spare, and a
 * silent connection holds its descriptor a third as long as the whole-request bound allowed it.
 */
export const HEADERS_TIMEOUT_MS = 10_000;
/**
 * How long a connection may idle between keep-alive requests (ms): fastify's default, stated here.
 * Longer than the 60 s idle timeout of common load balancers and proxies (AWS ALB, nginx's upstream
 * keepalive_timeout), so that a balancer never sends a request on a connection the server is closing at
 * that moment; under a flood the idle bound (idle-connections.ts) closes the longest idle ones first.
 */
export const KEEP_ALIVE_TIMEOUT_MS = 72_000;
/** Most parameters (query string and form body together) in one request. */
export const MAX_PARAMETERS = 1000;
/** Longest parameter name (a map entry's name included). */
export const MAX_PARAMETER_NAME_LENGTH = 255;
/** Default longest value of a string parameter (characters), as CloudStack's @Parameter(length). */
export const DEFAULT_STRING_LENGTH = 255;
/** Most elements of one list parameter (`cidrlist=a,b,…`, `ids=…`). */
export const MAX_LIST_ITEMS = 1000;
/** Longest element of a list parameter. */
export const MAX_LIST_ITEM_LENGTH = 255;
/** Most entries of one map parameter (`tags[0].key=…`, `tags[1].key=…`). */
export const MAX_MAP_ENTRIES = 100;
/** Longest value of a map entry field (`tags[0].value`): resource_tags.key/value are varchar(255). */
export const MAX_MAP_VALUE_LENGTH = 255;
/** Largest map index accepted (`tags[999999].key`). */
export const MAX_MAP_INDEX = 999_999;
/** Longest stored event description (CloudStack: varchar(1024)). */
export const MAX_EVENT_DESCRIPTION = 1024;
/** Longest error text stored with a failed async job. */
export const MAX_STORED_ERROR_TEXT = 4096;

/** Cut `s` to at most `max` characters (code points), marking the cut. */
export function bounded(s: string, max: number): string {
  if (s.length <= max) return s;
  const chars = Array.from(s);
  if (chars.length <= max) return s;
  return chars.slice(0, max - 1).join('') + '…';
}

/**
 * Characters no parameter value may hold: C0 controls other than tab, LF and CR (NUL cannot be stored in
 * PostgreSQL and none of them can appear in an XML response, even escaped), and the non-characters
 * U+FFFE/U+FFFF.
 */
export const FORBIDDEN_CHARS = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/;
