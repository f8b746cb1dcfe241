// Which hosts this server does the per-host work for (DESIGN.md §6, fleet.ts's header): the hosts whose
// agent session it holds, and hosts nobody holds. Hosts another server holds are passive here.
//
// What this server knows of the others comes from the live leases and servers, read with each heartbeat
// tick (cluster.ts). A host with another server's live lease becomes passive (unless a session for it is
// here: a hello takes the lease before the tick's read lands). A host that nobody holds is somebody's
// duty: its VMs must go Pending on a change and its desired revision must rise (the store's conditions
// let only such writes land while nobody holds it). A server that was active for it stays so (it held
// the host, or compiled everything at start-up). A passive host nobody holds is activated by one server,
// the *warden* (the live server with the smallest id: every server computes the same), once nobody has
// held it for a lease period (an agent moving between servers, or a fleet connecting after a restart,
// is not worth compiling for), at most ACTIVATE_PER_TICK hosts per tick (each is compiled inside the
// serial section; a restarted cluster's agents connecting meanwhile take theirs out of the queue).
// Activating, it catches up: if the host's content changed after this server started (as far as it can
// tell: fleet.ts's stamps) and the agent's acknowledged revision in the store (written by its last
// holder) is older than that, its VMs are marked Pending now; otherwise what the last holder wrote
// stands (as a server starting up leaves the VMs of unheld hosts as they are). If the warden dies, the
// next one takes over after the dead server's heartbeat expires, and catches up the same way.
//
// At start-up: hosts other servers hold start passive, and so do the unheld ones when another server is
// alive (agents are about to connect, most of them elsewhere). Alone (one server, SQLite): every host it
// does not hold is unheld and active at once, as before.
import type { Logger } from 'pino';
import type { Db } from '../store/db.js';
import { ackedRevisions, liveLeases, liveServerIds } from '../store/queries/cluster.js';
import type { Fleet } from './fleet.js';
import type { SyncTracker } from './sync.js';
import type { Serial } from './serial.js';

/** Unheld hosts the warden compiles per tick (each ~20 VMs: a fraction of a second in the serial section). */
const ACTIVATE_PER_TICK = 500;

export interface ActivityDeps {
  db: Db;
  log: Logger;
  fleet: Fleet;
  sync: SyncTracker;
  serial: Serial;
  serverId: string;
  /** The feed position this server started at (what it knows of each host's content begins there). */
  start: number;
  /** How long a host must have been held by nobody before the warden compiles it (the lease TTL). */
  graceMs: number;
  /** Does this server hold the host's agent session? */
  holds(hostId: number): boolean;
}

export class HostActivity {
  /** Passive hosts nobody holds: since when (ms). */
  private unheldSince = new Map<number, number>();
  private busy = false;
  /** Is this server the warden (see the header) as of the last read? */
  warden = false;
  readonly stats = { passivated: 0, activatedUnheld: 0, caughtUp: 0 };

  constructor(private readonly d: ActivityDeps) {}

  /** Start-up, before the fleet is built: which hosts start passive. */
  async initial(): Promise<void> {
    const live = await liveLeases(this.d.db);
    const others = (await liveServerIds(this.d.db)).filter((id) => id !== this.d.serverId);
    for (const id of this.d.fleet.hosts.keys()) {
      const holder = live.get(id);
      // This server's own leases are from its previous run (cluster.start() releases them).
      if (others.length || (holder !== undefined && holder !== this.d.serverId)) this.d.fleet.passivate(id);
    }
  }

  /** The live leases (host → server) and the live servers' ids, as read now. */
  async observe(live: Map<number, string>, servers: string[]): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const { fleet, holds } = this.d;
      const now = Date.now();
      this.warden = !servers.some((id) => id < this.d.serverId);
      const elsewhere = (id: number) => { const s = live.get(id); return s !== undefined && s !== this.d.serverId; };
      const toPassive: number[] = [];
      for (const id of live.keys()) if (elsewhere(id) && fleet.hosts.has(id) && !fleet.isPassive(id) && !holds(id)) toPassive.push(id);
      const unheld = new Map<number, number>();
      const toActive: number[] = [];
      for (const id of fleet.passiveHosts()) {
        if (elsewhere(id) || holds(id)) continue;
        const since = this.unheldSince.get(id) ?? now;
        unheld.set(id, since);
        if (this.warden && now - since >= this.d.graceMs && toActive.length < ACTIVATE_PER_TICK) toActive.push(id);
      }
      this.unheldSince = unheld;
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
          this.unheldSince.delete(id);
          if (stamp <= this.d.start || (agent !== null && agent >= stamp)) continue;
          // Changed since what its agent acknowledged: not enforced as desired until an agent acks.
          this.stats.caughtUp++;
          this.d.sync.holderChanged(id);
          this.d.sync.status.desired(id, stamp, false);
        }
      });
      this.d.log.debug({ passive: toPassive.length, active: toActive.length }, 'control: hosts held elsewhere / by nobody');
    } finally {
      this.busy = false;
    }
  }
}
