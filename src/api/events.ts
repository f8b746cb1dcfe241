// Recording CloudStack action events (listEvents reads them). Descriptions are bounded as CloudStack's
// event.description column (varchar(1024)): they quote request values, and an event is written even when
// the command then fails.
import { randomUUID } from 'node:crypto';
import type { Kysely, Transaction } from 'kysely';
import type { Database } from '../store/schema.js';
import type { Caller, EventInput } from './command.js';
import { DEFAULT_STRING_LENGTH, MAX_EVENT_DESCRIPTION, bounded } from './limits.js';

type Q = Transaction<Database> | Kysely<Database>;

export interface EventRow extends EventInput { state: NonNullable<EventInput['state']> }

export async function insertEvents(db: Q, caller: Caller, events: EventRow[], now: string, parentUuid: string | null = null): Promise<void> {
  if (events.length === 0) return;
  await db.insertInto('events').values(events.map((e) => ({
    uuid: randomUUID(),
    type: e.type,
    level: e.level ?? 'INFO',
    description: bounded(e.description, MAX_EVENT_DESCRIPTION),
    state: e.state,
    account_id: e.accountId ?? caller.accountId,
    domain_id: e.domainId ?? caller.domainId,
    user_id: caller.userId,
    resource_type: e.resourceType ?? null,
    resource_uuid: e.resourceUuid ?? null,
    resource_name: e.resourceName === undefined ? null : bounded(e.resourceName, DEFAULT_STRING_LENGTH),
    parent_uuid: parentUuid,
    created: now,
    archived: 0,
  }))).execute();
}
