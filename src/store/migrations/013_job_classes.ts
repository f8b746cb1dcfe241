import type { Kysely, Migration } from 'kysely';
import { JOB_CLASS_APIS, jobClass } from '../../model/job-classes.js';

// Async jobs stored before `cmd` became the Java class CloudStack records (AsyncJobVO's job_cmd) hold the
// API name (`authorizeSecurityGroupIngress`); they get the class the current code records for that API
// and the submitter's account type — the …CmdByAdmin variant for a root admin's (type 1), as
// ApiServer.getCmdClass picks by the caller's view. Rewritten once here rather than mapped on every read,
// so listAsyncJobs' keyword (which searches the stored value) finds old jobs by class too. The mapping is
// job-classes.ts itself: this migration means "as the code would have recorded it", and a name that is
// not an async API (a command CloudStack lacks) stays as it is.
export const m013_job_classes: Migration = {
  async up(db: Kysely<any>): Promise<void> {
    const rootAdmins = db.selectFrom('accounts').select('id').where('type', '=', 1);
    for (const api of JOB_CLASS_APIS) {
      await db.updateTable('async_jobs').set({ command: jobClass(api, 'admin') }).where('command', '=', api).where('account_id', 'in', rootAdmins).execute();
      await db.updateTable('async_jobs').set({ command: jobClass(api, 'user') }).where('command', '=', api).where('account_id', 'not in', rootAdmins).execute();
    }
  },
  // Nothing to undo: the older code reads a class name as well as it read the API name (it only shows it).
  async down(): Promise<void> {},
};
