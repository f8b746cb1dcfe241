// Sync status in the store (hosts.* and vms.sync_state): coalesced in memory, written in one
// transaction per flush with a few set-based statements, so thousands of acks cost a handful of writes.
import { sql } from 'kysely';
import type { Db } from '../store/db.js';

export type SyncState = 'Synced' | 'Pending' | 'Failed';
export interface HostPatch {
  state?: string; last_contact?: string; acked_revision?: number; desired_revision?: number;
  preflight?: string | null; repairs?: string | null; repair_count?: number;
}

const CHUNK = 400;

export class StatusWriter {
  private hosts = new Map<number, HostPatch>();
  private vms = new Map<number, { state: SyncState; error: string | null }>();
  private timer: NodeJS.Timeout | null = null;
  private chain: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(private readonly db: Db, private readonly onError: (e: unknown) => void, private readonly delayMs = 50) {}

  host(id: number, p: HostPatch): void { this.hosts.set(id, { ...this.hosts.get(id), ...p }); this.schedule(); }
  vm(id: number, state: SyncState, error: string | null = null): void { this.vms.set(id, { state, error }); this.schedule(); }

  private schedule(): void {
    if (this.timer || this.closed) return;
    this.timer = setTimeout(() => { this.timer = null; void this.flush().catch(this.onError); }, this.delayMs);
  }

  /**
   * Write what is pending now (serialised with earlier flushes). `desired`: only the hosts' desired
   * revisions (what must be stored before agents see them); the rest follows on the timer.
   */
  flush(part: 'all' | 'desired' = 'all'): Promise<void> {
    let hosts: Map<number, HostPatch>;
    let vms: Map<number, { state: SyncState; error: string | null }>;
    if (part === 'desired') {
      hosts = new Map();
      for (const [id, p] of this.hosts) {
        if (p.desired_revision === undefined) continue;
        hosts.set(id, { desired_revision: p.desired_revision });
        delete p.desired_revision;
      }
      vms = new Map();
    } else {
      if (this.timer) { clearTimeout(this.timer); this.timer = null; }
      hosts = this.hosts;
      vms = this.vms;
      this.hosts = new Map();
      this.vms = new Map();
    }
    const run = async () => {
      if (!hosts.size && !vms.size) return;
      await this.db.transaction().execute(async (tx) => {
        // Revisions: one CASE statement per chunk (many hosts advance together).
        for (const col of ['desired_revision', 'acked_revision'] as const) {
          const rows = [...hosts].filter(([, p]) => p[col] !== undefined);
          for (let i = 0; i < rows.length; i += CHUNK) {
            const part = rows.slice(i, i + CHUNK);
            const cases = sql.join(part.map(([id, p]) => sql`when ${id} then ${p[col]!}`), sql` `);
            await sql`update hosts set ${sql.ref(col)} = case id ${cases} else ${sql.ref(col)} end where id in (${sql.join(part.map(([id]) => id))})`.execute(tx);
          }
        }
        // Everything else: hosts with identical patches share one statement (last_contact is the
        // flush time, so after a wave of acks that is nearly all of them).
        const now = new Date().toISOString();
        const same = new Map<string, number[]>();
        for (const [id, p] of hosts) {
          const { desired_revision: _d, acked_revision: _a, ...rest } = p;
          if (rest.last_contact !== undefined) rest.last_contact = now;
          if (!Object.keys(rest).length) continue;
          const k = JSON.stringify(rest);
          const g = same.get(k);
          if (g) g.push(id); else same.set(k, [id]);
        }
        for (const [k, ids] of same) {
          for (let i = 0; i < ids.length; i += CHUNK) await tx.updateTable('hosts').set(JSON.parse(k) as HostPatch).where('id', 'in', ids.slice(i, i + CHUNK)).execute();
        }
        // VM sync states: grouped by (state, error).
        const groups = new Map<string, number[]>();
        for (const [id, s] of vms) {
          const k = JSON.stringify([s.state, s.error]);
          const g = groups.get(k);
          if (g) g.push(id); else groups.set(k, [id]);
        }
        for (const [k, ids] of groups) {
          const [state, error] = JSON.parse(k) as [SyncState, string | null];
          for (let i = 0; i < ids.length; i += CHUNK) {
            await tx.updateTable('vms').set({ sync_state: state, sync_error: error }).where('id', 'in', ids.slice(i, i + CHUNK)).execute();
          }
        }
      });
    };
    const p = this.chain.then(run);
    this.chain = p.catch(() => {});
    return p;
  }

  async close(): Promise<void> {
    await this.flush().catch(this.onError);
    this.closed = true;
  }
}
