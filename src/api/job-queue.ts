// Where async jobs wait for their turn (CloudStack runs them on a bounded executor too). Without it
// every submitted job started at once; the store's queries resolve without returning to the event
// loop (better-sqlite3 is synchronous), so dozens of ready jobs ran back to back and no HTTP request was
// read until all had finished: 40 dry runs of one tenant held another tenant's listZones for 23 s.
// - at most `concurrency` jobs run at a time;
// - before each job starts, the event loop gets a turn (setImmediate), so requests keep being served;
// - accounts take turns (round robin over accounts with waiting jobs), so one account's thousand jobs
//   delay another account's job by at most one job per busy account, not by a thousand.
export class JobQueue {
  private readonly waiting = new Map<number, (() => Promise<void>)[]>();
  private running = 0;
  /** When each account's last job started (a counter), for taking turns. */
  private readonly served = new Map<number, number>();
  private turn = 0;

  constructor(private readonly concurrency = 2) {}

  /** Queues `run` for `accountId`; the returned promise settles when it has run (never rejects). */
  submit(accountId: number, run: () => Promise<void>): Promise<void> {
    return new Promise<void>((resolve) => {
      const q = this.waiting.get(accountId) ?? [];
      q.push(async () => { try { await run(); } catch { /* the job records its own failure */ } finally { resolve(); } });
      this.waiting.set(accountId, q);
      this.pump();
    });
  }

  /** Jobs waiting or running. */
  get size(): number {
    let n = this.running;
    for (const q of this.waiting.values()) n += q.length;
    return n;
  }

  /** The waiting job of the account served least recently (accounts never served first, then by age). */
  private next(): (() => Promise<void>) | undefined {
    let pick: number | undefined;
    for (const account of this.waiting.keys()) {
      if (pick === undefined || (this.served.get(account) ?? -1) < (this.served.get(pick) ?? -1)) pick = account;
    }
    if (pick === undefined) return undefined;
    const q = this.waiting.get(pick)!;
    const job = q.shift()!;
    if (!q.length) this.waiting.delete(pick);
    this.served.delete(pick);
    this.served.set(pick, ++this.turn);
    // Forget accounts long idle (the map stays as small as the set of recently busy accounts).
    if (this.served.size > 10_000) for (const a of this.served.keys()) { if (!this.waiting.has(a)) { this.served.delete(a); break; } }
    return job;
  }

  private pump(): void {
    while (this.running < this.concurrency && this.waiting.size) {
      const job = this.next()!;
      this.running++;
      setImmediate(() => {
        job().finally(() => { this.running--; this.pump(); });
      });
    }
  }
}
