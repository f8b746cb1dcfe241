// Counts for the server's scrape-time gauges (/metrics): hosts by state, VMs by sync state, async
// jobs by status. One GROUP BY each; cheap at the sizes Palisade targets (indexes are not needed for
// a scrape every 15–60 s).
import type { Kysely, Transaction } from 'kysely';
import type { Database } from '../schema.js';

type Q = Transaction<Database> | Kysely<Database>;

export interface InventoryCounts {
  hostsByState: Map<string, number>;
  vmsBySyncState: Map<string, number>;
  jobsByStatus: Map<number, number>;
}

export async function inventoryCounts(db: Q): Promise<InventoryCounts> {
  const hosts = await db.selectFrom('hosts').select(['state']).select((eb) => eb.fn.countAll<number>().as('n'))
    .where('removed', 'is', null).groupBy('state').execute();
  const vms = await db.selectFrom('vms').select(['sync_state']).select((eb) => eb.fn.countAll<number>().as('n'))
    .where('removed', 'is', null).groupBy('sync_state').execute();
  const jobs = await db.selectFrom('async_jobs').select(['status']).select((eb) => eb.fn.countAll<number>().as('n'))
    .groupBy('status').execute();
  return {
    hostsByState: new Map(hosts.map((r) => [r.state, Number(r.n)])),
    vmsBySyncState: new Map(vms.map((r) => [r.sync_state, Number(r.n)])),
    jobsByStatus: new Map(jobs.map((r) => [Number(r.status), Number(r.n)])),
  };
}
