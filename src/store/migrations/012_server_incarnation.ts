import type { Kysely, Migration } from 'kysely';

// Each run of a server (and each time it rejoins after the others took it for dead) has an incarnation,
// kept in its heartbeat row. A write commits only while the row still names the incarnation that was
// current when the request arrived (control/cluster.ts, the write fence): a server frozen past its
// heartbeat's expiry, buried by the others, cannot carry out afterwards the requests it had received.
export const m012_server_incarnation: Migration = {
  async up(db: Kysely<any>): Promise<void> {
    await db.schema.alterTable('servers').addColumn('incarnation', 'text').execute();
  },
  async down(db: Kysely<any>): Promise<void> {
    await db.schema.alterTable('servers').dropColumn('incarnation').execute();
  },
};
