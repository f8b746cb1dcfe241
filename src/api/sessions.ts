// Username/password sessions, CloudStack's way: `login` (POST only) checks the password and answers
// with a `sessionkey` and a JSESSIONID cookie; every later call carries the cookie AND the sessionkey
// as a parameter (unsigned); `logout` ends the session. What Palisade adds to CloudStack's scheme:
// - the cookie is HttpOnly and SameSite=Strict (Path=/client), and a request whose Origin (or
//   Sec-Fetch-Site) says it comes from another site is refused before anything else, so a session
//   cannot be used from another origin even by a page that somehow learnt the sessionkey;
// - the sessionkey is required as a parameter (never taken from a cookie): double submit;
// - only SHA-256 digests of the cookie and the key are stored (table `sessions`, in the store, so
//   sessions survive restarts and work on every server of one PostgreSQL);
// - sessions expire after `timeoutSeconds` without a call (sliding) and after `maxAgeSeconds` in any case;
// - password guessing is bounded per user and address (LoginLimiter): 429 with Retry-After.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import type { Db } from '../store/db.js';
import { ROLE_ACCOUNT_TYPE, type Role } from '../model/types.js';
import { ApiError, type Caller, type CommandDef } from './command.js';
import { envelope, errorBody } from './envelope.js';
import { LoginLimiter } from './login-limiter.js';
import { MAX_PASSWORD_LENGTH, verifyPassword } from './passwords.js';
import { RequestParams, isUuid, validateParams } from './params.js';
import { deleteSessionByToken, findSession, insertSession, pruneSessions, touchSession } from '../store/queries/sessions.js';
import { displayDomainPath } from '../store/queries/accounts.js';
import { hostAllowed, type AllowedHosts } from './hosts.js';
import { equalsCi } from '../store/queries/like.js';

export const SESSION_COOKIE = 'JSESSIONID';
/**
 * CloudStack also hands the sessionkey out as a cookie at login, and clients read it there (cloudmonkey
 * takes it only from that cookie, then sends it as the sessionkey parameter). Palisade sets it the same
 * way, HttpOnly and SameSite=Strict, and never reads it: a session call still needs the key as a
 * parameter, which another site cannot add to a forged request.
 */
export const SESSION_KEY_COOKIE = 'sessionkey';
export const SESSION_AUTH_FAILED = 'unable to verify user credentials';
const CROSS_ORIGIN = 'unable to verify user credentials: the request comes from another origin';
const FOREIGN_HOST = 'unable to verify user credentials: the request names a host this server does not answer to (--allowed-hosts)';
const SESSIONS_PER_USER = 20;

/** What the HTTP layer knows about a request beyond its parameters. */
export interface Transport {
  method: string;
  /**
   * Every SESSION_COOKIE value the request carries, in order, at most MAX_SESSION_COOKIES. A browser
   * sends a cookie with a longer Path first, so another page on the same host (cookies ignore ports)
   * could plant `JSESSIONID=x; Path=/client/api` ahead of ours: the session is the one of these whose
   * sessionkey the call presents, not simply the first.
   */
  sessionCookies: readonly string[];
  /** the Origin header, if any */
  origin?: string;
  /** the Host header */
  host?: string;
  /** the Sec-Fetch-Site header, if any */
  fetchSite?: string;
  /** the peer's address */
  address: string;
  /** request arrived over TLS (cookie gets Secure) */
  secure: boolean;
  /** the URL's query string, undecoded (login refuses a password in it) */
  query?: string;
  /**
   * IDLE_HEADER: milliseconds since the console's user last did something (a key, a click). Calls the
   * console makes on its own (polling every list) say so, and count for the idle timeout only from
   * that moment: an open tab nobody touches still ends after the timeout.
   */
  idleMs?: number;
}

/** The header the console sends with every call (see Transport.idleMs). */
export const IDLE_HEADER = 'x-palisade-idle-ms';

export interface AuthReply { status: number; body: Record<string, unknown>; cookies?: string[]; headers?: Record<string, string> }

export interface SessionOptions {
  db: Db;
  log: Logger;
  now?: () => Date;
  /** idle timeout, seconds (CloudStack's session timeout is 1800) */
  timeoutSeconds?: number;
  /** absolute lifetime, seconds; default 12 h */
  maxAgeSeconds?: number;
  limiter?: LoginLimiter;
  /** the host names browsers may use (`--allowed-hosts`, hosts.ts); absent: any */
  allowedHosts?: AllowedHosts | null;
}

/** 429 from the login limiter, with the seconds to wait (sent as Retry-After). */
class TooManyAttempts extends ApiError {
  constructor(readonly retryAfter: number) {
    super(429, `Too many failed login attempts; try again in ${retryAfter} seconds`);
  }
}

const ROLE_BY_TYPE = new Map<number, Role>(Object.entries(ROLE_ACCOUNT_TYPE).map(([role, type]) => [type, role as Role]));
const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest('base64url');
const token = (bytes: number) => randomBytes(bytes).toString('base64url');

/** Session cookies looked up per request at most (each is one store read). */
export const MAX_SESSION_COOKIES = 4;

/** Every value of cookie `name` in a Cookie header, in order, at most `max`. */
export function cookieValues(header: string | undefined, name: string, max = MAX_SESSION_COOKIES): string[] {
  const out: string[] = [];
  if (!header) return out;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0 || part.slice(0, eq).trim() !== name) continue;
    let value = part.slice(eq + 1).trim();
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) value = value.slice(1, -1);
    if (value && !out.includes(value)) out.push(value);
    if (out.length >= max) break;
  }
  return out;
}

/**
 * Does the request come from this server's own origin (or from no browser page at all)? Browsers send
 * Origin on cross-origin requests and on every POST, and Sec-Fetch-Site on every request; tools send
 * neither.
 */
export function sameOrigin(t: Pick<Transport, 'origin' | 'host' | 'fetchSite'>): boolean {
  if (t.fetchSite !== undefined && t.fetchSite !== 'same-origin' && t.fetchSite !== 'none') return false;
  if (t.origin === undefined) return true;
  if (!t.host) return false;
  try {
    const u = new URL(t.origin);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.host.toLowerCase() === t.host.toLowerCase();
  } catch {
    return false; // "null" (sandboxed frames, file:) and anything unparsable
  }
}

function keysEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export class SessionAuth {
  readonly timeoutSeconds: number;
  readonly maxAgeSeconds: number;
  readonly limiter: LoginLimiter;

  constructor(private readonly o: SessionOptions) {
    this.timeoutSeconds = o.timeoutSeconds ?? 1800;
    this.maxAgeSeconds = o.maxAgeSeconds ?? 12 * 3600;
    this.limiter = o.limiter ?? new LoginLimiter();
  }

  private now(): Date { return this.o.now?.() ?? new Date(); }

  /** 401 unless the request comes from this server's own page: its origin, on a name it answers to. */
  private mustComeFromHere(t: Transport): void {
    if (!sameOrigin(t)) throw new ApiError(401, CROSS_ORIGIN);
    if (!hostAllowed(this.o.allowedHosts, t.host)) throw new ApiError(401, FOREIGN_HOST);
  }

  private cookie(value: string, t: Transport, clear = false, name = SESSION_COOKIE): string {
    const attrs = [`${name}=${value}`, 'Path=/client', 'HttpOnly', 'SameSite=Strict'];
    if (t.secure) attrs.push('Secure');
    if (clear) attrs.push('Max-Age=0');
    return attrs.join('; ');
  }

  private expiry(created: Date, now: Date): string {
    return new Date(Math.min(now.getTime() + this.timeoutSeconds * 1000, created.getTime() + this.maxAgeSeconds * 1000)).toISOString();
  }

  /** `login` and `logout` (commands marked `authenticator`). Never throws. */
  async handle(def: CommandDef, raw: Record<string, string>, t: Transport): Promise<AuthReply> {
    try {
      return def.authenticator === 'logout' ? await this.logout(raw, t) : await this.login(def, raw, t);
    } catch (err) {
      const e = err instanceof ApiError ? err : new ApiError(530, 'Internal error executing command, please contact your system administrator');
      if (!(err instanceof ApiError)) this.o.log.error({ err, command: def.name }, 'authentication command failed');
      const reply: AuthReply = { status: e.code, body: envelope(def.name, errorBody(e.code, e.message, e.code === 431 ? e.csCode : undefined)) };
      if (err instanceof TooManyAttempts) reply.headers = { 'retry-after': String(err.retryAfter) };
      return reply;
    }
  }

  private async login(def: CommandDef, raw: Record<string, string>, t: Transport): Promise<AuthReply> {
    if (t.method !== 'POST') throw new ApiError(405, 'Please use HTTP POST to authenticate using this API');
    // A POST with the password in its URL would still leave it in proxies' and servers' access logs.
    if (t.query && [...new URLSearchParams(t.query).keys()].some((k) => k.toLowerCase() === 'password')) throw new ApiError(405, 'Please use HTTP POST to authenticate using this API, with the password in the request body, not in the URL');
    this.mustComeFromHere(t);
    const params = new RequestParams(raw, { exact: true });   // DefaultLoginAPIAuthenticatorCmd: params.get("username")
    validateParams(def, params);
    const username = params.str('username')!;
    const password = params.str('password')!;
    const db = this.o.db;

    // domainid wins over domain (a path such as /d1/sub); neither: ROOT.
    let domain: { id: number; uuid: string; path: string } | undefined;
    // DefaultLoginAPIAuthenticatorCmd reads `domainid`, and `domainId` (ApiConstants.DOMAIN__ID) when it is absent.
    const domainId = params.str('domainid') ?? params.str('domainId');
    const domainPath = params.str('domain');
    if (domainId !== undefined && domainId.trim() !== '') {
      if (!isUuid(domainId.trim())) throw new ApiError(401, 'Invalid domain id entered, please enter a valid one');
      domain = await db.selectFrom('domains').select(['id', 'uuid', 'path']).where('uuid', '=', domainId.trim()).where('removed', 'is', null).executeTakeFirst();
      if (!domain) throw new ApiError(531, 'Invalid domain id entered, please enter a valid one');
    } else {
      let p = (domainPath ?? '/').trim();
      if (!p.startsWith('/')) p = '/' + p;
      if (!p.endsWith('/')) p += '/';
      // CloudStack's UI shows paths as ROOT/d1: accept that spelling too.
      if (/^\/ROOT(\/|$)/i.test(p)) p = p.replace(/^\/ROOT/i, '') || '/';
      domain = await db.selectFrom('domains').select(['id', 'uuid', 'path']).where('path', '=', p).where('removed', 'is', null).executeTakeFirst();
      if (!domain) throw new ApiError(531, `Unable to find the domain from the path ${p}`);
    }

    const now = this.now();
    // One user however its name is spelt (usernames are found ignoring case): guesses under another
    // spelling count against the same bound.
    const who = `${domain.id}/${username.toLowerCase()}`;
    const verdict = this.limiter.begin(who, t.address, now.getTime());
    if (!verdict.allowed) {
      this.o.log.warn({ user: username, address: t.address }, 'login refused: too many failed attempts');
      throw new TooManyAttempts(verdict.retryAfterSeconds);
    }
    // (the domain's internal number, as CloudStack: its uuid is not for someone who has not logged in)
    const failed = new ApiError(531, `Failed to authenticate user ${username} in domain ${domain.id}; please provide valid credentials`);
    // The username as CloudStack's collation finds it: the exact one, else ignoring case.
    const live = () => db.selectFrom('users as u').innerJoin('accounts as a', 'a.id', 'u.account_id')
      .select(['u.id', 'u.uuid', 'u.username', 'u.firstname', 'u.lastname', 'u.password_hash', 'u.state as userState',
        'a.name as account', 'a.type', 'a.state as accountState'])
      .where('a.domain_id', '=', domain.id).where('u.removed', 'is', null).where('a.removed', 'is', null);
    const user = await live().where('u.username', '=', username).executeTakeFirst()
      ?? await live().where(equalsCi(db, 'u.username', username)).orderBy('u.id').executeTakeFirst();
    const ok = password.length <= MAX_PASSWORD_LENGTH && await verifyPassword(password, user?.password_hash);
    if (!user || !ok) {
      this.o.log.info({ user: username, domain: domain.uuid, address: t.address }, 'login failed');
      throw failed;
    }
    this.limiter.succeeded(who, t.address);
    if (user.userState !== 'enabled' || user.accountState !== 'enabled') {
      throw new ApiError(531, `User ${username} in domain ${domain.uuid} is disabled/locked (or account is disabled/locked)`);
    }

    const sessionToken = token(32);
    const sessionKey = token(24);
    const nowIso = now.toISOString();
    await db.transaction().execute(async (trx) => {
      await pruneSessions(trx, nowIso, user.id, SESSIONS_PER_USER - 1);
      await insertSession(trx, { tokenHash: digest(sessionToken), keyHash: digest(sessionKey), userId: user.id, address: t.address, now: nowIso, expires: this.expiry(now, now) });
    });
    // A cookie sent with the login belongs to a session this login replaces.
    for (const old of t.sessionCookies) await deleteSessionByToken(db, digest(old));
    this.o.log.info({ user: username, domain: domain.uuid }, 'login');
    return {
      status: 200,
      cookies: [this.cookie(sessionToken, t), this.cookie(sessionKey, t, false, SESSION_KEY_COOKIE)],
      body: envelope('login', {
        username: user.username, userid: user.uuid, domainid: domain.uuid, timeout: this.timeoutSeconds, account: user.account,
        firstname: user.firstname, lastname: user.lastname, type: String(user.type), registered: 'false', sessionkey: sessionKey,
        // Palisade: what the console shows without another call
        domainpath: displayDomainPath(domain.path), roletype: ROLE_LABEL[user.type] ?? 'User',
      }),
    };
  }

  private async logout(raw: Record<string, string>, t: Transport): Promise<AuthReply> {
    this.mustComeFromHere(t);
    const clear = [this.cookie('', t, true), this.cookie('', t, true, SESSION_KEY_COOKIE)];
    let unproven = false;
    for (const cookie of t.sessionCookies) {
      const row = await findSession(this.o.db, digest(cookie), this.now().toISOString());
      if (!row) continue;
      // Only the page holding the sessionkey may end the session (no logout by a forged request).
      if (!keysEqual(digest(sessionKeyOf(raw) ?? ''), row.keyHash)) { unproven = true; continue; }
      await deleteSessionByToken(this.o.db, digest(cookie));
      this.o.log.info({ user: row.username }, 'logout');
      return { status: 200, cookies: clear, body: envelope('logout', { description: 'success' }) };
    }
    if (unproven) throw new ApiError(401, SESSION_AUTH_FAILED);
    return { status: 200, cookies: clear, body: envelope('logout', { description: 'success' }) };
  }

  /** Does this request try session authentication (it has our cookie or a sessionkey)? */
  wants(raw: Record<string, string>, t: Transport): boolean {
    return t.sessionCookies.length > 0 || sessionKeyOf(raw) !== undefined;
  }

  /**
   * Does one of the request's cookies name a live session? CloudStack's ApiServlet takes a request with
   * a live HTTP session as a session call (the sessionkey must then match) whatever else it carries,
   * an apiKey included; without one, the request is judged by its signature.
   */
  async live(t: Transport): Promise<boolean> {
    const now = this.now().toISOString();
    for (const cookie of t.sessionCookies) if (await findSession(this.o.db, digest(cookie), now)) return true;
    return false;
  }

  /** The caller of a session-authenticated call; 401 unless cookie, sessionkey and origin all agree. */
  async authenticate(raw: Record<string, string>, t: Transport): Promise<Caller> {
    this.mustComeFromHere(t);
    const key = sessionKeyOf(raw);
    if (!t.sessionCookies.length || key === undefined) throw new ApiError(401, SESSION_AUTH_FAILED);
    const now = this.now();
    let row: Awaited<ReturnType<typeof findSession>> | undefined;
    for (const cookie of t.sessionCookies) {
      const found = await findSession(this.o.db, digest(cookie), now.toISOString());
      if (found && keysEqual(digest(key), found.keyHash)) { row = found; break; }
    }
    if (!row || row.userState !== 'enabled' || row.accountState !== 'enabled') throw new ApiError(401, SESSION_AUTH_FAILED);
    // Sliding expiry from the user's last activity (the call itself, or what the console says it was),
    // written at most every tenth of the timeout (not on every call), never moved back.
    const active = new Date(now.getTime() - Math.min(Math.max(0, t.idleMs ?? 0), this.timeoutSeconds * 1000));
    if (active.getTime() - Date.parse(row.lastSeen) > Math.min(60_000, this.timeoutSeconds * 100)) {
      await touchSession(this.o.db, row.sessionId, active.toISOString(), this.expiry(new Date(row.sessionCreated), active));
    }
    return {
      userId: row.userId, userUuid: row.userUuid, username: row.username,
      accountId: row.accountId, accountUuid: row.accountUuid, accountName: row.accountName,
      domainId: row.domainId, domainUuid: row.domainUuid, domainName: row.domainName, domainPath: row.domainPath,
      role: ROLE_BY_TYPE.get(row.accountType) ?? 'user', sessionId: row.sessionId,
    };
  }
}

const ROLE_LABEL: Record<number, string> = { 0: 'User', 1: 'Admin', 2: 'DomainAdmin' };

/** The `sessionkey` parameter, by that exact name (CloudStack's HttpUtils.validateSessionKey: params.get). */
function sessionKeyOf(raw: Record<string, string>): string | undefined {
  return Object.hasOwn(raw, 'sessionkey') ? raw.sessionkey : undefined;
}
