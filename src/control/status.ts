// Sync status in the store (hosts.* and vms.sync_state): coalesced in memory, written in one
// transaction per flush with a few set-based statements, so thousands of acks cost a handful of writes.
//
// Several servers (DESIGN.md §6): only the server holding a host's lease writes that host's status and
// its VMs' sync state. Every statement carries that condition, checked by the database at write time,
// so a server that lost a host (its agent moved) cannot overwrite the new holder's writes. A server
// that does not hold a host may only mark its VMs Pending (and raise its desired revision) while nobody
// holds it: every server sees every change, and someone has to say it is not enforced yet (the servers
// still active for that host do: the last to hold it and the warden, activity.ts; a server writes nothing
// at all about VMs of hosts another server holds).
// A flush that fails is kept (newer values win) and retried.
import { sql } from 'kysely';
import type { Db } from '../store/db.js';
import { dbNowMs, greatest } from '../store/queries/cluster.js';
import { storeUnavailable, transientConflict } from '../store/db.js';
import { lockHosts, lockVms } from '../store/queries/lock.js';

export type SyncState = 'Synced' | 'Pending' | 'Failed';
export interface HostPatch {
  state?: string; last_contact?: string; acked_revision?: number; desired_revision?: number;
  preflight?: string | null; repairs?: string | null; dataplane?: string | null;
}

/**
 * Who decides a VM's sync state: the host it is placed on, else the host that still owes the ack of
 * its removal (`placed: false`); `owned`: this server holds that host. Null: no host is involved.
 */
export interface VmAuthority { hostId: number; placed: boolean; owned: boolean }
interface VmWrite { state: SyncState; error: string | null; authority: VmAuthority | null }

const CHUNK = 400;
const RETRY_MS = 1000;
/** A flush that fails this often with the store reachable, and not by a conflict with another
 *  transaction, is given up (it is status, recomputed on change). */
const GIVE_UP_AFTER = 3;

export class StatusWriter {
  private hosts = new Map<number, HostPatch>();
  /** Desired revisions of hosts this server does not hold (raised, never lowered). */
  private unheld = new Map<number, number>();
  private vms = new Map<number, VmWrite>();
  private timer: NodeJS.Timeout | null = null;
  private chain: Promise<void> = Promise.resolve();
  private closed = false;
  /** Consecutive failed flushes (only the first is reported; the store is likely unreachable). */
  private failures = 0;

  constructor(private readonly db: Db, private readonly serverId: string, private readonly onError: (e: unknown) => void, private readonly delayMs = 50) {}

  /** A patch of a host this server holds. */
  host(id: number, p: HostPatch): void { this.hosts.set(id, { ...this.hosts.get(id), ...p }); this.schedule(); }

  /** The desired revision of a host; `held`: by this server (exact), else raised while nobody holds it. */
  desired(id: number, revision: number, held: boolean): void {
    if (held) this.host(id, { desired_revision: revision });
    else { this.unheld.set(id, Math.max(revision, this.unheld.get(id) ?? 0)); this.schedule(); }
  }

  vm(id: number, state: SyncState, error: string | null, authority: VmAuthority | null): void {
    if (authority && !authority.owned && state !== 'Pending') return;
    this.vms.set(id, { state, error, authority });
    this.schedule();
  }

  private schedule(delay = this.delayMs): void {
    if (this.timer || this.closed) return;
    this.timer = setTimeout(() => { this.timer = null; void this.flush().catch(this.onError); }, delay);
  }

  /** Write what is pending now (serialised with earlier flushes). */
  flush(): Promise<void> {
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    const hosts = this.hosts;
    const unheld = this.unheld;
    const vms = this.vms;
    this.hosts = new Map();
    this.unheld = new Map();
    this.vms = new Map();
    const run = async () => {
      if (!hosts.size && !vms.size && !unheld.size) return;
      try {
        await this.write(hosts, unheld, vms);
        this.failures = 0;
      } catch (e) {
        this.failures++;
        // A deadlock or serialization failure is another transaction's doing (several servers flush and
        // move leases at once): retried however often it happens, never dropped.
        if (!storeUnavailable(e) && !transientConflict(e) && this.failures >= GIVE_UP_AFTER) {
          // Not the store being away: these writes themselves fail. Never let them block the rest.
          this.failures = 0;
          throw new Error(`status writes dropped after ${GIVE_UP_AFTER} failures (${hosts.size} hosts, ${vms.size} VMs): ${e instanceof Error ? e.message : String(e)}`);
        }
        // Keep what failed under anything newer, and try again.
        for (const [id, p] of hosts) this.hosts.set(id, { ...p, ...this.hosts.get(id) });
        for (const [id, r] of unheld) this.unheld.set(id, Math.max(r, this.unheld.get(id) ?? 0));
        for (const [id, w] of vms) if (!this.vms.has(id)) this.vms.set(id, w);
        this.schedule(RETRY_MS);
        if (this.failures === 1) throw e;
      }
    };
    const p = this.chain.then(run);
    this.chain = p.catch(() => {});
    return p;
  }

  private async write(hosts: Map<number, HostPatch>, unheld: Map<number, number>, vms: Map<number, VmWrite>): Promise<void> {
    const me = this.serverId;
    await this.db.transaction().execute(async (tx) => {
      // Host rows in id order first: the statements below take them chunk by chunk, column by column.
      await lockHosts(tx, [...hosts.keys(), ...unheld.keys()]);
      const mine = tx.selectFrom('host_leases').select('host_id').where('server_id', '=', me);
      const live = tx.selectFrom('host_leases').select('host_id').where('expires_at', '>=', dbNowMs(tx) as never);
      // Revisions: one CASE statement per chunk (many hosts advance together).
      for (const col of ['desired_revision', 'acked_revision'] as const) {
        const rows = [...hosts].filter(([, p]) => p[col] !== undefined);
        for (let i = 0; i < rows.length; i += CHUNK) {
          const part = rows.slice(i, i + CHUNK);
          const cases = sql.join(part.map(([id, p]) => sql`when ${id} then ${p[col]!}`), sql` `);
          await tx.updateTable('hosts').set({ [col]: sql`case id ${cases} else ${sql.ref(col)} end` } as never)
            .where('id', 'in', part.map(([id]) => id)).where('id', 'in', mine).execute();
        }
      }
      const raised = [...unheld];
      for (let i = 0; i < raised.length; i += CHUNK) {
        const part = raised.slice(i, i + CHUNK);
        const cases = sql.join(part.map(([id, r]) => sql`when ${id} then ${greatest(tx, sql.ref('desired_revision'), r)}`), sql` `);
        await tx.updateTable('hosts').set({ desired_revision: sql`case id ${cases} else desired_revision end` as never })
          .where('id', 'in', part.map(([id]) => id)).where('id', 'not in', live).execute();
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
        for (let i = 0; i < ids.length; i += CHUNK) {
          await tx.updateTable('hosts').set(JSON.parse(k) as HostPatch).where('id', 'in', ids.slice(i, i + CHUNK)).where('id', 'in', mine).execute();
        }
      }
      // VM sync states: grouped by (state, error, who may write it).
      const groups = new Map<string, number[]>();
      for (const [id, w] of vms) {
        const a = w.authority;
        const who = !a ? 'none' : a.placed ? (a.owned ? 'placed-mine' : 'placed-unheld') : `removal-${a.owned ? 'mine' : 'unheld'}-${a.hostId}`;
        const k = JSON.stringify([w.state, w.error, who]);
        const g = groups.get(k);
        if (g) g.push(id); else groups.set(k, [id]);
      }
      // VMs another server may write as well (those of hosts nobody holds, and unplaced ones): locked
      // first, in id order, like the hosts above. A server's own hosts' VMs only it writes.
      await lockVms(tx, [...vms].filter(([, w]) => !w.authority?.owned).map(([id]) => id));
      for (const [k, ids] of groups) {
        const [state, error, who] = JSON.parse(k) as [SyncState, string | null, string];
        for (let i = 0; i < ids.length; i += CHUNK) {
          let q = tx.updateTable('vms').set({ sync_state: state, sync_error: error }).where('id', 'in', ids.slice(i, i + CHUNK));
          if (who === 'none') q = q.where('host_id', 'is', null);
          else if (who === 'placed-mine') q = q.where('host_id', 'in', mine);
          else if (who === 'placed-unheld') q = q.where('host_id', 'is not', null).where('host_id', 'not in', live);
          else {
            const [, kind, host] = who.split('-');
            q = q.where('host_id', 'is', null);
            const holder = tx.selectFrom('host_leases').select('host_id').where('host_id', '=', Number(host));
            q = kind === 'mine' ? q.where((eb) => eb.exists(holder.where('server_id', '=', me)))
              : q.where((eb) => eb.not(eb.exists(holder.where('expires_at', '>=', dbNowMs(tx) as never))));
          }
          await q.execute();
        }
      }
    });
  }

  async close(): Promise<void> {
    await this.flush().catch(this.onError);
    this.closed = true;
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
  }
}
