// The per-account API rate limit, as CloudStack's api-limit-account plugin (ApiRateLimitServiceImpl)
// behaves: with `api.throttling.enabled`, each account may make `api.throttling.max` calls per fixed
// window of `api.throttling.interval` seconds that starts with its first call (a changed interval applies
// to the windows running: each ends `interval` after it opened); the next call in the
// window is refused (429, cserrorcode 9999, CloudStack's text), before anything runs. Root admins are not
// counted. The dispatcher counts every authenticated call it would run — signed or through a console
// session, async job polling (queryAsyncJobResult) included; login/logout are not (the login limiter
// bounds those). Unlike CloudStack, which counts a signed call once its apiKey is known, before the
// signature is checked, a call counts only once it is authenticated: someone holding just a tenant's
// apiKey cannot use up that tenant's calls. The dispatcher logs refusals one by one only up to a bound
// per minute (a tenant calling on past its limit would otherwise write a line per call).
//
// The counts live in this process only (no store write per call): with several servers each counts the
// calls it receives, so an account may make `max` calls per interval on each — as CloudStack's cache is
// per management server. resetApiLimit resets the counts of the server that receives it.
//
// Memory is bounded by `api.throttling.cachesize` accounts. Windows are kept in the order they started;
// a new account beyond the bound first drops windows that ended, then the oldest window still running
// (that account's count starts again at its next call) — never more than cachesize entries.
//
// The settings are read from the store at most every SETTINGS_REFRESH_MS, and at once after this server
// committed a settings change (updateConfiguration), so a change made here applies to the next call and
// one made through another server within SETTINGS_REFRESH_MS.
import type { ApiThrottling } from '../model/settings.js';

/** How long the settings read from the store are used before they are read again (ms). */
export const SETTINGS_REFRESH_MS = 5000;

/** CloudStack's text (ApiRateLimitServiceImpl.throwExceptionDueToApiRateLimitReached), with the ms left in the window. */
export const apiLimitText = (retryAfterMs: number) =>
  `The given user has reached his/her account api limit, please retry after [${retryAfterMs}] ms.`;
/** GetApiLimitCmd / ResetApiLimitCmd while throttling is off (432). */
export const THROTTLING_DISABLED = 'This api is only available when api.throttling.enabled = true.';

/** One account's window: when it opened (its end follows the current interval) and the calls counted in it. */
interface Window { opened: number; count: number }

/**
 * What getApiLimit reports: calls made in the current window, calls left, ms until it ends; with no
 * window running (`open` false) the ms a window would last.
 */
export interface ApiUsage { issued: number; allowed: number; expireAfterMs: number; open: boolean }

/** What commands may do with the limiter (getApiLimit / resetApiLimit). */
export interface ApiLimits {
  settings(): Promise<ApiThrottling>;
  usage(accountId: number): Promise<ApiUsage>;
  /** Forget one account's window, or every one. */
  reset(accountId?: number): void;
}

/**
 * When a window ends under the current settings: a changed interval applies to the windows already
 * running (shortened by mistake from a day to a second, an account was otherwise refused for the rest of
 * the day).
 */
const ends = (w: Window, s: ApiThrottling) => w.opened + s.intervalSeconds * 1000;

export class ApiRateLimiter implements ApiLimits {
  private readonly windows = new Map<number, Window>();
  private current: ApiThrottling | undefined;
  private readAt = 0;
  private reading: Promise<ApiThrottling> | undefined;
  private generation = 0;

  constructor(private readonly read: () => Promise<ApiThrottling>, private readonly clock: () => number = Date.now,
    private readonly onReadError: (err: unknown) => void = () => {}) {}

  /** The settings, read again when older than SETTINGS_REFRESH_MS or after `invalidate`. */
  async settings(): Promise<ApiThrottling> {
    const now = this.clock();
    if (this.current && now - this.readAt < SETTINGS_REFRESH_MS) return this.current;
    if (this.reading) return this.reading;
    const generation = this.generation;
    const reading = this.read().then((s) => {
      // A read begun before a change was committed may return the old values: used once, not kept as fresh.
      if (generation !== this.generation) return s;
      this.current = s;
      this.readAt = this.clock();
      if (!s.enabled) this.windows.clear();
      return s;
    }, (err: unknown) => {
      // The store cannot be read: keep what was known (off when nothing was); the call fails or not on its own.
      this.onReadError(err);
      return this.current ?? { enabled: false, intervalSeconds: 1, max: 25, cacheSize: 50000 };
    }).finally(() => { if (this.reading === reading) this.reading = undefined; });
    this.reading = reading;
    return reading;
  }

  /** A settings change was committed: the next call reads them again. */
  invalidate(): void {
    this.generation++;
    this.readAt = -Infinity;
    this.reading = undefined;
  }

  /**
   * Counts one call of `accountId`. Returns the ms left in its window when the call is over the limit
   * (and then it is not counted), else undefined.
   */
  async hit(accountId: number): Promise<number | undefined> {
    const s = await this.settings();
    if (!s.enabled) return undefined;
    const now = this.clock();
    const w = this.window(accountId, now, s);
    if (w.count >= s.max) return Math.max(0, ends(w, s) - now);
    w.count++;
    return undefined;
  }

  async usage(accountId: number): Promise<ApiUsage> {
    const s = await this.settings();
    const now = this.clock();
    const w = this.windows.get(accountId);
    if (!w || ends(w, s) <= now) return { issued: 0, allowed: s.max, expireAfterMs: s.intervalSeconds * 1000, open: false };
    return { issued: w.count, allowed: Math.max(0, s.max - w.count), expireAfterMs: ends(w, s) - now, open: true };
  }

  reset(accountId?: number): void {
    if (accountId === undefined) this.windows.clear();
    else this.windows.delete(accountId);
  }

  /** Accounts tracked now (tests). */
  get tracked(): number { return this.windows.size; }

  /** The running window of an account, started now when it has none (or its last one ended). */
  private window(accountId: number, now: number, s: ApiThrottling): Window {
    const w = this.windows.get(accountId);
    if (w && ends(w, s) > now) return w;
    // Re-inserted at the end: the map stays ordered by when windows started.
    this.windows.delete(accountId);
    for (const [id, old] of this.windows) {
      if (this.windows.size < s.cacheSize && ends(old, s) > now) break;
      this.windows.delete(id);
    }
    const fresh = { opened: now, count: 0 };
    this.windows.set(accountId, fresh);
    return fresh;
  }
}
