import { sql, type Kysely, type Migration } from 'kysely';
import { JOB_CLASS_APIS, jobClass } from '../../model/job-classes.js';
import type { Role } from '../../model/types.js';

// Async jobs stored before `cmd` became the Java class CloudStack records (AsyncJobVO's job_cmd) hold the
// API name (`authorizeSecurityGroupIngress`); they get the class the current code records for that API
// and the submitter's account type — the …CmdByAdmin variant for a root admin's (type 1), as
// ApiServer.getCmdClass picks by the caller's view. Rewritten once here rather than mapped on every read,
// so listAsyncJobs' keyword (which searches the stored value) finds old jobs by class too. The mapping is
// job-classes.ts itself: this migration means "as the code would have recorded it", and a name that is
// not an async API (a command CloudStack lacks) stays as it is.
// One UPDATE (a CASE per account type), so the job table — unindexed on `command`, and as long as the
// retention keeps it — is read once rather than twice per API (38 scans: 9.3 s for 300,000 jobs on SQLite).
export const m013_job_classes: Migration = {
  async up(db: Kysely<any>): Promise<void> {
    const classes = (role: Role) => sql.join(JOB_CLASS_APIS.map((api) => sql`when ${api} then ${jobClass(api, role)}`), sql` `);
    await sql`update async_jobs set command = case
        when account_id in (select id from accounts where type = 1) then case command ${classes('admin')} end
        else case command ${classes('user')} end
      end
      where command in (${sql.join(JOB_CLASS_APIS)})`.execute(db);
  },
  // Nothing to undo: the older code reads a class name as well as it read the API name (it only shows it).
  async down(): Promise<void> {},
};
