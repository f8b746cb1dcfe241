// Bounds password guessing on `login` (pure: the clock is passed in). Every attempt counts as a failure
// when it starts — so parallel guesses cannot all slip through before the first one is judged — and a
// success clears the (user, address) counter. Three keys, checked together:
//   user+address  a few tries, then a lock that doubles with each further failure (1 min … 15 min);
//   address       one source guessing many users;
//   user          many sources guessing one user (a higher bound: a victim's account must not be easy to lock).
// State is in memory, per server, and bounded: when the table is full, unlocked entries go first (least
// recently used), locks only when nothing else is left.
export interface LimitVerdict { allowed: boolean; retryAfterSeconds: number }

interface Entry { failures: number; windowStart: number; lockedUntil: number }

export interface LoginLimiterOptions {
  /** failures per (user, address) before locking; default 5 */
  perUserAddress?: number;
  /** failures per address within the window; default 30 */
  perAddress?: number;
  /** failures per user (all addresses) within the window; default 100 */
  perUser?: number;
  /** counting window, ms; default 15 min */
  windowMs?: number;
  /** first lock, ms (doubles per further failure); default 60 s */
  baseLockMs?: number;
  /** longest lock, ms; default 15 min */
  maxLockMs?: number;
  /** most keys remembered; default 20,000 */
  maxEntries?: number;
}

export class LoginLimiter {
  private readonly entries = new Map<string, Entry>();
  private readonly o: Required<LoginLimiterOptions>;

  constructor(opts: LoginLimiterOptions = {}) {
    this.o = {
      perUserAddress: opts.perUserAddress ?? 5, perAddress: opts.perAddress ?? 30, perUser: opts.perUser ?? 100,
      windowMs: opts.windowMs ?? 15 * 60_000, baseLockMs: opts.baseLockMs ?? 60_000, maxLockMs: opts.maxLockMs ?? 15 * 60_000,
      maxEntries: opts.maxEntries ?? 20_000,
    };
  }

  private keys(user: string, address: string): [string, number][] {
    const u = user.toLowerCase();
    return [[`ua:${u}\u0000${address}`, this.o.perUserAddress], [`a:${address}`, this.o.perAddress], [`u:${u}`, this.o.perUser]];
  }

  private entry(key: string, now: number): Entry {
    let e = this.entries.get(key);
    if (e && now - e.windowStart > this.o.windowMs && e.lockedUntil <= now) { this.entries.delete(key); e = undefined; }
    if (!e) {
      e = { failures: 0, windowStart: now, lockedUntil: 0 };
      if (this.entries.size >= this.o.maxEntries) this.evict(now);
    } else {
      this.entries.delete(key); // re-insert: Map order is recency order
    }
    this.entries.set(key, e);
    return e;
  }

  /**
   * Makes room when the table is full: forgotten entries first, then the least recently used unlocked
   * one. A lock goes only when every entry is locked (the one ending soonest): otherwise anyone who can
   * make new keys — guesses at made-up users from many addresses — could push a victim's lock out and
   * go on guessing.
   */
  private evict(now: number): void {
    for (const [k, e] of this.entries) if (now - e.windowStart > this.o.windowMs && e.lockedUntil <= now) this.entries.delete(k);
    while (this.entries.size >= this.o.maxEntries) {
      let victim: string | undefined;
      let soonest: [string, number] | undefined;
      for (const [k, e] of this.entries) {
        if (e.lockedUntil <= now) { victim = k; break; }
        if (!soonest || e.lockedUntil < soonest[1]) soonest = [k, e.lockedUntil];
      }
      this.entries.delete(victim ?? soonest![0]);
    }
  }

  /** Called before checking a password: refuses while locked, otherwise counts the attempt as a failure. */
  begin(user: string, address: string, now: number): LimitVerdict {
    const ks = this.keys(user, address);
    let wait = 0;
    for (const [k] of ks) {
      const e = this.entries.get(k);
      if (e && e.lockedUntil > now) wait = Math.max(wait, e.lockedUntil - now);
    }
    if (wait > 0) return { allowed: false, retryAfterSeconds: Math.ceil(wait / 1000) };
    for (const [k, limit] of ks) {
      const e = this.entry(k, now);
      e.failures += 1;
      if (e.failures >= limit) {
        const over = e.failures - limit;
        e.lockedUntil = now + Math.min(this.o.maxLockMs, this.o.baseLockMs * 2 ** Math.min(over, 20));
      }
    }
    return { allowed: true, retryAfterSeconds: 0 };
  }

  /** The password was right: forget this (user, address)'s failures and take the attempt back from the others. */
  succeeded(user: string, address: string): void {
    const [ua, ...rest] = this.keys(user, address);
    this.entries.delete(ua![0]);
    for (const [k, limit] of rest) {
      const e = this.entries.get(k);
      if (!e) continue;
      e.failures = Math.max(0, e.failures - 1);
      if (e.failures < limit) e.lockedUntil = 0;
    }
  }

  get size(): number { return this.entries.size; }
}
