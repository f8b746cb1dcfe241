// Tails the change feed (DESIGN.md §6): reads rows after its position, in order, and hands them on.
// Woken by the in-process API after its own commits and by PostgreSQL NOTIFY for other servers'
// commits, with a short poll as the fallback. A read that fails is retried from the same position
// (with backoff); a row whose body does not parse is logged and skipped (only our own code writes it).
// While the consumer is behind (`paused`), reading stops, so a slow batch never buffers the whole feed.
import { z } from 'zod';
import type { Logger } from 'pino';
import type { Change } from '../model/changes.js';
import type { Db } from '../store/db.js';
import { feedHead, readFeed } from '../store/queries/feed.js';

const id = z.number().int().min(0);
const changeSchema: z.ZodType<Change> = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('rules'), groupId: id }),
  z.object({ kind: z.literal('membership'), vmId: id }),
  z.object({ kind: z.literal('vmState'), vmId: id }),
  z.object({ kind: z.literal('placement'), vmId: id, fromHostId: id.nullable(), toHostId: id.nullable() }),
  z.object({ kind: z.literal('nic'), vmId: id }),
  z.object({ kind: z.literal('group'), groupId: id }),
  z.object({ kind: z.literal('host'), hostId: id }),
  z.object({ kind: z.literal('settings') }),
]);
const bodySchema = z.array(changeSchema);

/** `committedAt`: Unix ms of the row's commit (its `created`; NaN when unreadable) — for commit→push latency. */
export interface FeedEntry { seq: number; changes: Change[]; committedAt?: number }

export interface FeedReaderOptions {
  pollMs: number;
  pageRows: number;
  /** True while the consumer has enough queued: reading waits for the next wake. */
  paused: () => boolean;
}

export class FeedReader {
  private running = false;
  private again = false;
  private stopped = false;
  private failures = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  private pollTimer: NodeJS.Timeout | null = null;
  private headQuery: { started: boolean; promise: Promise<number> } | null = null;
  readonly stats = { reads: 0, rows: 0, failures: 0, skipped: 0 };

  constructor(private readonly db: Db, private readonly log: Logger, private position: number,
    private readonly consume: (entries: FeedEntry[]) => void, private readonly o: FeedReaderOptions) {}

  /** The last position handed to the consumer. */
  get readPosition(): number { return this.position; }

  start(): void {
    this.pollTimer = setInterval(() => this.wake(), this.o.pollMs);
    this.pollTimer.unref();
  }

  /** Something may have been appended: read (coalesced with a read in progress). */
  wake(): void {
    if (this.stopped || this.retryTimer) return;
    if (this.running) { this.again = true; return; }
    void this.pump();
  }

  private async pump(): Promise<void> {
    this.running = true;
    try {
      do {
        this.again = false;
        while (!this.stopped && !this.o.paused()) {
          const rows = await readFeed(this.db, this.position, this.o.pageRows);
          this.stats.reads++;
          if (!rows.length) break;
          const entries: FeedEntry[] = rows.map((r) => ({ seq: r.seq, changes: this.parse(r.seq, r.body), committedAt: Date.parse(r.created) }));
          this.position = rows[rows.length - 1].seq;
          this.stats.rows += rows.length;
          this.consume(entries);
          if (rows.length < this.o.pageRows) break;
        }
      } while (this.again && !this.stopped && !this.o.paused());
      if (this.failures) this.log.info({ position: this.position }, 'control: reading the change feed again');
      this.failures = 0;
    } catch (e) {
      this.stats.failures++;
      if (this.failures++ === 0) this.log.warn({ err: e instanceof Error ? e.message : String(e), position: this.position }, 'control: cannot read the change feed; retrying from the same position');
      const delay = Math.min(5000, 100 * 2 ** Math.min(this.failures, 6));
      this.retryTimer = setTimeout(() => { this.retryTimer = null; this.wake(); }, delay);
      this.retryTimer.unref();
    } finally {
      this.running = false;
    }
  }

  private parse(seq: number, body: string): FeedEntry['changes'] {
    let value: unknown;
    try { value = JSON.parse(body); } catch { value = undefined; }
    const r = bodySchema.safeParse(value);
    if (r.success) return r.data;
    this.stats.skipped++;
    this.log.error({ seq, body: body.slice(0, 200) }, 'control: a change-feed row does not parse; skipped');
    return [];
  }

  /**
   * The feed's head as of now: a query started after this call (calls arriving while one runs share
   * the next one), so everything committed before the call is at or below the answer.
   */
  head(): Promise<number> {
    const cur = this.headQuery;
    if (cur && !cur.started) return cur.promise;
    const next: { started: boolean; promise: Promise<number> } = { started: false, promise: Promise.resolve(0) };
    const prev = cur ? cur.promise.catch(() => 0) : Promise.resolve(0);
    next.promise = prev.then(() => { next.started = true; return feedHead(this.db); }).finally(() => { if (this.headQuery === next) this.headQuery = null; });
    this.headQuery = next;
    return next.promise;
  }

  stop(): void {
    this.stopped = true;
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
  }
}
