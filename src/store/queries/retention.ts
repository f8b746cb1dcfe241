// History retention, as CloudStack keeps it: finished async jobs for `job.expire.minutes` (default one
// day) and events for `event.purge.delay` days (default 15; 0 keeps them for ever). Every async call adds
// a job (with its result) and up to three events, failed calls and dry runs included, so without this
// the store grew with every request ever made. Pending jobs are never purged.
// Deletes go in batches, each its own statement, yielding between them: on SQLite a single delete of
// millions of rows would hold the only connection for as long as it takes.
import type { Kysely } from 'kysely';
import type { Database } from '../schema.js';
import type { RetentionSettings } from '../../model/settings.js';

export const RETENTION_BATCH = 5000;

const yieldToOthers = () => new Promise<void>((r) => setImmediate(r));

/** Deletes history older than the retention settings; returns what it deleted. */
export async function purgeHistory(db: Kysely<Database>, now: Date, retention: RetentionSettings, batch = RETENTION_BATCH): Promise<{ jobs: number; events: number }> {
  const out = { jobs: 0, events: 0 };
  const jobsBefore = new Date(now.getTime() - retention.jobExpireMinutes * 60_000).toISOString();
  for (;;) {
    const r = await db.deleteFrom('async_jobs').where('id', 'in', (eb) => eb.selectFrom('async_jobs').select('id')
      .where('status', '!=', 0).where('completed', 'is not', null).where('completed', '<', jobsBefore).limit(batch)).executeTakeFirst();
    const n = Number(r.numDeletedRows ?? 0);
    out.jobs += n;
    if (n < batch) break;
    await yieldToOthers();
  }
  if (retention.eventPurgeDays > 0) {
    const eventsBefore = new Date(now.getTime() - retention.eventPurgeDays * 86_400_000).toISOString();
    for (;;) {
      const r = await db.deleteFrom('events').where('id', 'in', (eb) => eb.selectFrom('events').select('id')
        .where('created', '<', eventsBefore).limit(batch)).executeTakeFirst();
      const n = Number(r.numDeletedRows ?? 0);
      out.events += n;
      if (n < batch) break;
      await yieldToOthers();
    }
  }
  return out;
}
