// Batching and impact: feed entries queue up and are processed together once changes pause (or a
// bound after the first), so a burst of API calls costs a few recompilations and pushes. A batch first
// reads what it needs from the store (the rows the changes touched); only then does it change the
// in-memory state. A read that fails leaves the batch in the queue, retried with backoff from the same
// position: every committed change is applied exactly once, in order, whatever the errors.
import type { Logger } from 'pino';
import type { Db } from '../store/db.js';
import { Fleet } from './fleet.js';
import { Journal } from './journal.js';
import { loadHosts, reloadPart, type HostRow } from './load.js';
import type { FeedEntry } from './feed-reader.js';
import type { Serial } from './serial.js';
import { readSettings } from '../store/queries/settings.js';
import type { PalisadeSettings } from '../model/settings.js';

/** Coalescing: a batch runs once changes pause for QUIET ms, or at the latest MAX_WAIT ms after the first. */
const QUIET_MS = 15;
const MAX_WAIT_MS = 100;
/** The reader stops reading ahead while this many changes wait. */
const MAX_QUEUED_CHANGES = 20_000;

export interface BatchOutcome {
  /** Feed position the fleet is now at. */
  position: number;
  /** Hosts whose desired state may have changed. */
  dirty: Set<number>;
  /** VMs the batch touched (their sync state is recomputed). */
  touchedVms: Set<number>;
  changes: number;
  /** Unix ms of the oldest commit in the batch (commit→push latency); absent when unknown. */
  oldestCommit?: number;
}

export interface BatchHooks {
  /** A host was deleted or its token changed: its session (if any) ends. */
  hostGone(hostId: number, code: number, reason: string): void;
  /** VMs that owed a removal on a deleted host. */
  removalsCleared(vmIds: number[]): void;
  /** The fleet advanced: push and track (called inside the serial section). */
  applied(o: BatchOutcome): void;
  /** A `settings` change was committed: the settings as now stored (read with the batch). */
  settingsChanged?(s: PalisadeSettings): void;
}

export class Batches {
  private queue: FeedEntry[] = [];
  private queuedChanges = 0;
  private firstAt = 0;
  private lastAt = 0;
  private timer: NodeJS.Timeout | null = null;
  private failures = 0;
  private waiters: { target: number; resolve: () => void }[] = [];
  private closed = false;
  /** Feed position whose changes are all applied to the fleet. */
  processed: number;
  readonly stats = { batches: 0, changes: 0, retries: 0 };
  /** Called when the queue drains below the read-ahead bound (the reader may read on). */
  onDrain: () => void = () => {};

  constructor(private readonly db: Db, private readonly log: Logger, private readonly fleet: Fleet, private readonly serial: Serial,
    start: number, private readonly hooks: BatchHooks) {
    this.processed = start;
  }

  get full(): boolean { return this.queuedChanges >= MAX_QUEUED_CHANGES; }

  enqueue(entries: FeedEntry[]): void {
    if (this.closed) return;
    for (const e of entries) {
      if (e.seq <= this.processed) continue;
      this.queue.push(e);
      this.queuedChanges += e.changes.length;
    }
    if (!this.queue.length) return;
    const now = Date.now();
    this.lastAt = now;
    if (!this.firstAt) this.firstAt = now;
    this.arm(this.waiters.length ? 0 : QUIET_MS);
  }

  private arm(ms: number): void {
    if (this.timer || this.closed) return;
    this.timer = setTimeout(() => this.tick(), ms);
  }

  private tick(): void {
    this.timer = null;
    const now = Date.now();
    if (!this.waiters.length && this.failures === 0 && now - this.lastAt < QUIET_MS && now - this.firstAt < MAX_WAIT_MS) {
      this.arm(Math.max(1, Math.min(QUIET_MS - (now - this.lastAt), MAX_WAIT_MS - (now - this.firstAt))));
      return;
    }
    this.firstAt = 0;
    void this.serial.run(() => this.run()).catch((e) => this.log.error({ err: e }, 'control: batch failed'));
  }

  /** Resolves once every change up to `target` is applied (hellos wait for this before a resync). */
  waitProcessed(target: number): Promise<void> {
    if (this.processed >= target) return Promise.resolve();
    return new Promise((resolve) => {
      this.waiters.push({ target, resolve });
      if (this.queue.length) { if (this.timer) { clearTimeout(this.timer); this.timer = null; } this.arm(0); }
    });
  }

  private async run(): Promise<void> {
    const items = this.queue;
    if (!items.length) return;
    this.queue = [];
    const changes = items.flatMap((e) => e.changes);
    // Each change's feed position: passive hosts are stamped per change (Fleet.impact).
    const seqs = items.flatMap((e) => e.changes.map(() => e.seq));
    const position = items[items.length - 1].seq;
    const groupIds = new Set<number>();
    const vmIds = new Set<number>();
    const hostIds = new Set<number>();
    let settingsTouched = false;
    for (const c of changes) {
      switch (c.kind) {
        case 'rules': case 'group': groupIds.add(c.groupId); break;
        case 'membership': case 'vmState': case 'nic': case 'placement': vmIds.add(c.vmId); break;
        case 'host': hostIds.add(c.hostId); break;
        case 'settings': settingsTouched = true; break;
      }
    }
    // 1. Read (may fail: then nothing has changed and the batch is retried as it was).
    let hostRows: HostRow[] = [];
    let reload = null;
    let settings: PalisadeSettings | null = null;
    try {
      if (settingsTouched) settings = await readSettings(this.db);
      if (hostIds.size) hostRows = await loadHosts(this.db, [...hostIds]);
      if (groupIds.size || vmIds.size) reload = await reloadPart(this.db, [...groupIds], [...vmIds]);
    } catch (e) {
      this.queue = [...items, ...this.queue];
      this.stats.retries++;
      if (this.failures++ === 0) this.log.warn({ err: e instanceof Error ? e.message : String(e), position: items[0].seq }, 'control: a batch could not read the store; retrying it');
      const delay = Math.min(5000, 50 * 2 ** Math.min(this.failures, 7));
      setTimeout(() => this.arm(0), delay).unref();
      return;
    }
    if (this.failures) this.log.info({ position }, 'control: batch read the store again');
    this.failures = 0;
    this.queuedChanges = this.queue.reduce((n, e) => n + e.changes.length, 0);
    // 2. Apply to memory (pure).
    const t0 = performance.now();
    const dirty = new Set<number>();
    for (const h of this.applyHosts([...hostIds], hostRows, position)) dirty.add(h);
    if (reload) {
      const journal = new Journal(this.fleet.state);
      journal.apply(reload);
      const impact = this.fleet.impact(changes, journal.before(), vmIds, groupIds, seqs);
      for (const h of this.fleet.recompile(impact, position)) dirty.add(h);
      for (const e of this.fleet.compileErrors.splice(0)) {
        if (e.vmId < 0) this.log.error({ err: e.error }, 'control: change analysis failed; using the conservative analysis');
        else this.log.error({ vm: e.vmId, err: e.error }, 'control: cannot compile VM policy; its host keeps the previous rules');
      }
    }
    this.stats.batches++;
    this.stats.changes += changes.length;
    if (settings) this.hooks.settingsChanged?.(settings);
    let oldest = Infinity;
    for (const e of items) if (e.committedAt !== undefined && e.committedAt < oldest) oldest = e.committedAt;
    this.hooks.applied({ position, dirty, touchedVms: vmIds, changes: changes.length, ...(Number.isFinite(oldest) ? { oldestCommit: oldest } : {}) });
    this.processed = position;
    this.log.debug({ changes: changes.length, hosts: dirty.size, position, ms: +(performance.now() - t0).toFixed(1) }, 'control: batch');
    const ready = this.waiters.filter((w) => w.target <= position);
    this.waiters = this.waiters.filter((w) => w.target > position);
    for (const w of ready) w.resolve();
    if (!this.full) this.onDrain();
  }

  /** Host rows re-read (added, removed, renamed, token changed); returns hosts to advance. */
  private applyHosts(ids: number[], rows: HostRow[], position: number): number[] {
    const byId = new Map(rows.map((h) => [h.id, h]));
    const touched: number[] = [];
    for (const id of ids) {
      const row = byId.get(id);
      const cur = this.fleet.hosts.get(id);
      if (!row || row.removed) {
        if (cur) this.hooks.removalsCleared(this.fleet.removeHost(id));
        this.hooks.hostGone(id, 4403, 'host removed');
        continue;
      }
      if (!cur) { this.fleet.addHost({ id: row.id, uuid: row.uuid, name: row.name, tokenHash: row.tokenHash, revision: position }); touched.push(id); continue; }
      cur.name = row.name;
      if (cur.tokenHash !== row.tokenHash) {
        this.fleet.setToken(id, row.tokenHash);
        this.hooks.hostGone(id, 4401, 'token changed');
      }
      touched.push(id);
    }
    return touched;
  }

  close(): void {
    this.closed = true;
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    for (const w of this.waiters.splice(0)) w.resolve();
  }
}
