// queryAsyncJobResult / listAsyncJobs: CloudStack's AsyncJobResponse.
import { containsCi } from '../../store/queries/like.js';
import { inList } from '../../store/queries/batch.js';
import type { Selectable } from 'kysely';
import type { AsyncJobTable } from '../../store/schema.js';
import { paramError, type CommandDef } from '../command.js';
import { ACL_LIST_PARAMS, LIST_PARAMS, csDate, dateBound, paging } from './common.js';
import { isUuid } from '../params.js';

type JobRow = Selectable<AsyncJobTable> & { account_uuid: string; user_uuid: string };

function jobResponse(j: JobRow): Record<string, unknown> {
  const r: Record<string, unknown> = {
    accountid: j.account_uuid, userid: j.user_uuid, cmd: j.command, jobstatus: j.status, jobprocstatus: 0,
    jobresultcode: j.result_code, jobresulttype: j.result_type,
  };
  if (j.result) r.jobresult = JSON.parse(j.result);
  if (j.instance_type) r.jobinstancetype = j.instance_type;
  if (j.instance_uuid) r.jobinstanceid = j.instance_uuid;
  r.created = csDate(j.created);
  if (j.completed) r.completed = csDate(j.completed);
  r.jobid = j.uuid;
  return r;
}

const jobQuery = (db: Parameters<CommandDef['handle']>[0]['db']) => db.selectFrom('async_jobs as j')
  .innerJoin('accounts as a', 'a.id', 'j.account_id').innerJoin('users as u', 'u.id', 'j.user_id')
  .selectAll('j').select(['a.uuid as account_uuid', 'u.uuid as user_uuid', 'a.domain_id as domain_id']);

export const queryAsyncJobResult: CommandDef = {
  name: 'queryAsyncJobResult',
  description: 'Retrieves the current status of asynchronous job.',
  params: [{ name: 'jobid', type: 'uuid', required: true, description: 'the ID of the asynchronous job' }],
  responseObject: 'asyncjobs',
  async handle(ctx) {
    const id = ctx.params.str('jobid')!;
    const j = isUuid(id) ? await jobQuery(ctx.db).where('j.uuid', '=', id).executeTakeFirst() : undefined;
    if (!j) throw paramError(`Unable to find a job by id ${id}`);
    await ctx.access.checkAccess(j.account_id, j.domain_id);
    return { raw: jobResponse(j) };
  },
};

export const listAsyncJobs: CommandDef = {
  name: 'listAsyncJobs',
  description: 'Lists all pending asynchronous jobs for the account.',
  params: [
    { name: 'startdate', type: 'date', description: 'The start date of the async job (use format "yyyy-MM-dd\'T\'HH:mm:ss\'+\'SSSS")' },
    ...ACL_LIST_PARAMS, ...LIST_PARAMS,
  ],
  responseObject: 'asyncjobs',
  async handle(ctx) {
    const scope = await ctx.access.listScope(ctx.params);
    const pg = paging(ctx.params);
    let q = jobQuery(ctx.db);
    if (scope.accountIds) q = q.where(inList(ctx.db, 'j.account_id', scope.accountIds));
    if (scope.domainIds) q = q.where(inList(ctx.db, 'a.domain_id', scope.domainIds));
    const start = ctx.params.str('startdate');
    if (start) q = q.where('j.created', '>=', dateBound(start, false, 'listasyncjobs'));
    const kw = ctx.params.str('keyword');
    if (kw) q = q.where(containsCi('j.command', kw));
    // Counted and paged by the store: every async call a tenant makes adds a job (with its result), so
    // loading all of them to show one page would cost more with every call.
    const total = await q.clearSelect().select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    let pq = q.orderBy('j.id', 'desc');
    if (pg.limit !== null) pq = pq.limit(pg.limit).offset(pg.offset);
    else if (pg.offset) pq = pq.limit(Number.MAX_SAFE_INTEGER).offset(pg.offset);
    const page = await pq.execute();
    return { list: 'asyncjobs', items: page.map(jobResponse), count: Number(total.n) };
  },
};

export const asyncJobCommands: CommandDef[] = [queryAsyncJobResult, listAsyncJobs];
