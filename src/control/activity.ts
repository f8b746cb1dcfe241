// Which hosts this server does the per-host work for (DESIGN.md §6, fleet.ts's header): the hosts whose
// agent session it holds, and those nobody holds. Hosts another server holds are passive here.
//
// What this server knows of the others comes from the live leases, read with each heartbeat tick
// (cluster.ts): a host with another server's live lease becomes passive (unless a session for it is
// here: a hello takes the lease before the tick's read lands). A passive host that nobody holds for two
// reads in a row (one read could catch an agent moving between servers) becomes active again, unheld:
// this server then marks its VMs Pending on changes and raises its desired revision, like every server.
// When it does, the changes made while it was passive are caught up: if its content changed after this
// server started (as far as it can tell: fleet.ts's stamps) and the agent's acknowledged revision in the
// store (written by its last holder) is older than that, its VMs are marked Pending now; otherwise what
// the last holder wrote stands (as a server starting up leaves the VMs of unheld hosts as they are).
//
// At start-up: hosts other servers hold start passive; if another server is alive, so do the unheld
// ones (agents are about to connect, most of them elsewhere; the two-read rule activates the rest).
// Alone (one server, SQLite): every host it does not hold is unheld and active at once, as before.
import type { Logger } from 'pino';
import type { Db } from '../store/db.js';
import { ackedRevisions, liveLeases, otherServersAlive } from '../store/queries/cluster.js';
import type { Fleet } from './fleet.js';
import type { SyncTracker } from './sync.js';
import type { Serial } from './serial.js';

export interface ActivityDeps {
  db: Db;
  log: Logger;
  fleet: Fleet;
  sync: SyncTracker;
  serial: Serial;
  serverId: string;
  /** The feed position this server started at (what it knows of each host's content begins there). */
  start: number;
  /** Does this server hold the host's agent session? */
  holds(hostId: number): boolean;
}

export class HostActivity {
  /** Passive hosts nobody held at the last read. */
  private unheldOnce = new Set<number>();
  private busy = false;
  readonly stats = { passivated: 0, activatedUnheld: 0, caughtUp: 0 };

  constructor(private readonly d: ActivityDeps) {}

  /** Start-up, before the fleet is built: which hosts start passive. */
  async initial(): Promise<void> {
    const live = await liveLeases(this.d.db);
    const grace = await otherServersAlive(this.d.db, this.d.serverId);
    for (const id of this.d.fleet.hosts.keys()) {
      const holder = live.get(id);
      // This server's own leases are from its previous run (cluster.start() releases them).
      if (grace || (holder !== undefined && holder !== this.d.serverId)) this.d.fleet.passivate(id);
    }
  }

  /** The live leases as read now (host → server). */
  async observe(live: Map<number, string>): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const { fleet, holds } = this.d;
      const elsewhere = (id: number) => { const s = live.get(id); return s !== undefined && s !== this.d.serverId; };
      const toPassive: number[] = [];
      for (const id of live.keys()) if (elsewhere(id) && fleet.hosts.has(id) && !fleet.isPassive(id) && !holds(id)) toPassive.push(id);
      const unheld = new Set<number>();
      const toActive: number[] = [];
      for (const id of fleet.passiveHosts()) {
        if (elsewhere(id) || holds(id)) continue;
        unheld.add(id);
        if (this.unheldOnce.has(id)) toActive.push(id);
      }
      this.unheldOnce = unheld;
      if (!toPassive.length && !toActive.length) return;
      const acked = toActive.length ? await ackedRevisions(this.d.db, toActive) : new Map<number, number>();
      await this.d.serial.run(() => {
        for (const id of toPassive) {
          if (holds(id) || !fleet.hosts.has(id) || fleet.isPassive(id)) continue;
          this.d.sync.passivated(fleet.passivate(id));
          this.stats.passivated++;
        }
        for (const id of toActive) {
          if (holds(id) || !fleet.isPassive(id)) continue;
          const agent = acked.get(id) ?? null;
          const stamp = fleet.activate(id, agent);
          if (stamp === null) continue;
          this.stats.activatedUnheld++;
          this.unheldOnce.delete(id);
          if (stamp <= this.d.start || (agent !== null && agent >= stamp)) continue;
          // Changed since what its agent acknowledged: not enforced as desired until an agent acks.
          this.stats.caughtUp++;
          this.d.sync.holderChanged(id);
          this.d.sync.status.desired(id, stamp, false);
        }
      });
      if (toPassive.length || toActive.length) this.d.log.debug({ passive: toPassive.length, active: toActive.length }, 'control: hosts held elsewhere / by nobody');
    } finally {
      this.busy = false;
    }
  }
}
