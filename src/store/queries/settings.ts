// Palisade's settings in the store (configuration table): only values that differ from the defaults
// are kept; model/settings.ts has the names, types and defaults.
import type { Kysely, Transaction } from 'kysely';
import type { Database } from '../schema.js';
import { limitsFrom, retentionFrom, settingsFrom, throttlingFrom, type ApiThrottling, type PalisadeSettings, type RetentionSettings, type TenantLimits } from '../../model/settings.js';

type Q = Transaction<Database> | Kysely<Database>;

/** Stored (changed) values by name. */
export async function storedSettings(db: Q): Promise<Map<string, { value: string; updated: string }>> {
  const rows = await db.selectFrom('configuration').select(['name', 'value', 'updated']).execute();
  return new Map(rows.map((r) => [r.name, { value: r.value, updated: r.updated }]));
}

/** Stored (changed) values by name, without when they changed (what the typed readers take). */
async function storedValues(db: Q): Promise<Map<string, string>> {
  return new Map([...await storedSettings(db)].map(([name, v]) => [name, v.value]));
}

/** The current settings, typed (what other layers read; the control plane pushes them to agents). */
export async function readSettings(db: Q): Promise<PalisadeSettings> {
  return settingsFrom(await storedValues(db));
}

/** How long history is kept (job.expire.minutes, event.purge.delay). */
export async function readRetention(db: Q): Promise<RetentionSettings> {
  return retentionFrom(await storedValues(db));
}

/** What one tenant may store (security.group.max.*). */
export async function readLimits(db: Q): Promise<TenantLimits> {
  return limitsFrom(await storedValues(db));
}

/** The per-account API rate limit (api.throttling.*). */
export async function readThrottling(db: Q): Promise<ApiThrottling> {
  return throttlingFrom(await storedValues(db));
}

/** Sets a value, or (null) goes back to the default. */
export async function writeSetting(db: Q, name: string, value: string | null, now: string): Promise<void> {
  if (value === null) {
    await db.deleteFrom('configuration').where('name', '=', name).execute();
    return;
  }
  await db.insertInto('configuration').values({ name, value, updated: now })
    .onConflict((oc) => oc.column('name').doUpdateSet({ value, updated: now })).execute();
}
