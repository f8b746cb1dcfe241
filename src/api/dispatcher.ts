// Authentication, command dispatch, transactions, async jobs. Every command runs in one store
// transaction; its changes reach the ChangeSink only after that transaction commits.
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { Db } from '../store/db.js';
import type { Change, ChangeSink } from '../model/changes.js';
import type { Role } from '../model/types.js';
import { ApiError, type Caller, type CommandContext, type CommandDef, type CommandResult, type EventInput } from './command.js';
import { RequestParams, validateParams } from './params.js';
import { CallerAccess } from './access.js';
import { insertEvents, type EventRow } from './events.js';
import { envelope, errorBody, resultBody } from './envelope.js';
import { verifySignature } from './signing.js';
import { appendFeed } from '../store/queries/feed.js';
import { storeUnavailable } from '../store/db.js';

export const AUTH_FAILED = 'unable to verify user credentials and/or request signature';
export const UNKNOWN_COMMAND = 'The given command does not exist or it is not available for user';
const INTERNAL = 'Internal error executing command, please contact your system administrator';
/** The store cannot be reached from this server (several servers: another one may answer). */
export const STORE_UNAVAILABLE = 'This management server cannot reach its database; nothing was changed. Retry the call, through another management server if there are several';
/** The job's server was declared dead by another server, which failed the job, before it finished. */
const JOB_TAKEN = 'Job was failed by another management server while this one could not reach the database; nothing was changed';

export interface DispatcherDeps {
  db: Db;
  sink: ChangeSink;
  log: Logger;
  commands: CommandDef[];
  /** Clock, injectable for tests. */
  now?: () => Date;
  /** Identity of this server process, recorded on the async jobs it runs. */
  serverId?: string;
}

export interface ApiReply { status: number; body: Record<string, unknown> }

const ROLE_BY_TYPE: Record<number, Role> = { 0: 'user', 1: 'admin', 2: 'domainadmin' };

export class Dispatcher {
  readonly commands = new Map<string, CommandDef>();
  private readonly inflight = new Set<Promise<void>>();
  private closing = false;

  constructor(private readonly deps: DispatcherDeps) {
    for (const c of deps.commands) this.commands.set(c.name.toLowerCase(), c);
  }

  private nowIso(): string { return (this.deps.now?.() ?? new Date()).toISOString(); }

  /** Look up the caller by apiKey and verify the request signature. Throws 401. */
  async authenticate(raw: Record<string, string>): Promise<Caller> {
    let apiKey: string | undefined;
    for (const [k, v] of Object.entries(raw)) if (k.toLowerCase() === 'apikey') apiKey = v;
    if (!apiKey) throw new ApiError(401, AUTH_FAILED);
    const row = await this.deps.db.selectFrom('users as u')
      .innerJoin('accounts as a', 'a.id', 'u.account_id')
      .innerJoin('domains as d', 'd.id', 'a.domain_id')
      .select(['u.id as userId', 'u.uuid as userUuid', 'u.username', 'u.secretkey', 'u.state as userState',
        'a.id as accountId', 'a.uuid as accountUuid', 'a.name as accountName', 'a.type as accountType', 'a.state as accountState',
        'd.id as domainId', 'd.uuid as domainUuid', 'd.name as domainName', 'd.path as domainPath'])
      .where('u.apikey', '=', apiKey).where('u.removed', 'is', null).where('a.removed', 'is', null)
      .executeTakeFirst();
    if (!row || !row.secretkey || row.userState !== 'enabled' || row.accountState !== 'enabled') throw new ApiError(401, AUTH_FAILED);
    if (Object.keys(raw).some((k) => !/^[A-Za-z0-9_.\[\]-]+$/.test(k))) {
      this.deps.log.info({ user: row.username }, 'request rejected: malformed parameter name');
      throw new ApiError(401, AUTH_FAILED);
    }
    const v = verifySignature(raw, row.secretkey, (this.deps.now?.() ?? new Date()).getTime());
    if (!v.ok) {
      this.deps.log.info({ user: row.username, reason: v.reason }, 'request signature rejected');
      throw new ApiError(401, AUTH_FAILED);
    }
    return {
      userId: row.userId, userUuid: row.userUuid, username: row.username,
      accountId: row.accountId, accountUuid: row.accountUuid, accountName: row.accountName,
      domainId: row.domainId, domainUuid: row.domainUuid, domainName: row.domainName, domainPath: row.domainPath,
      role: ROLE_BY_TYPE[row.accountType] ?? 'user',
    };
  }

  /** Handle one HTTP request's parameters end to end; never throws. */
  async handle(raw: Record<string, string>): Promise<ApiReply> {
    const t0 = performance.now();
    const reply = await this.handleInner(raw);
    if (this.deps.log.isLevelEnabled('debug')) {
      let command: string | undefined;
      for (const [k, v] of Object.entries(raw)) if (k.toLowerCase() === 'command') command = v;
      this.deps.log.debug({ command, status: reply.status, ms: +(performance.now() - t0).toFixed(2) }, 'api call');
    }
    return reply;
  }

  private async handleInner(raw: Record<string, string>): Promise<ApiReply> {
    let commandName: string | undefined;
    for (const [k, v] of Object.entries(raw)) if (k.toLowerCase() === 'command') commandName = v;
    const def = commandName ? this.commands.get(commandName.toLowerCase()) : undefined;
    const label = def?.name ?? undefined;
    try {
      if (!def) throw new ApiError(432, UNKNOWN_COMMAND);
      const caller = await this.authenticate(raw);
      if (def.roles && !def.roles.includes(caller.role)) throw new ApiError(432, UNKNOWN_COMMAND);
      return await this.run(def, raw, caller);
    } catch (err) {
      const e = this.toApiError(err, def?.name ?? commandName ?? '?');
      const framework = e.code === 401 || e.code === 432;
      return { status: e.code, body: envelope(e.code === 432 ? undefined : label, errorBody(e.code, e.message, framework ? undefined : e.csCode)) };
    }
  }

  private toApiError(err: unknown, command: string): ApiError {
    if (err instanceof ApiError) return err;
    if (storeUnavailable(err)) {
      this.deps.log.warn({ err: err instanceof Error ? err.message : String(err), command }, 'command failed: the store is unreachable');
      return new ApiError(530, STORE_UNAVAILABLE, 9999);
    }
    this.deps.log.error({ err, command }, 'command failed with an unexpected error');
    return new ApiError(530, INTERNAL, 9999);
  }

  /** Run an authenticated command (also used in-process by tests and the bench). */
  async run(def: CommandDef, raw: Record<string, string>, caller: Caller): Promise<ApiReply> {
    const params = new RequestParams(raw);
    validateParams(def, params);
    const name = def.name;
    if (!def.async) {
      const { result, changes } = await this.transaction(def, params, caller, {});
      this.publish(changes);
      return { status: 200, body: envelope(name, resultBody(result)) };
    }
    return this.submit(def, params, caller);
  }

  private async transaction(def: CommandDef, params: RequestParams, caller: Caller, job: { jobId?: string; instanceUuid?: string },
    onCommit?: (trx: CommandContext['db'], result: CommandResult, events: EventRow[]) => Promise<void>) {
    const now = this.nowIso();
    return this.deps.db.transaction().execute(async (trx) => {
      const events: EventRow[] = [];
      const changes: Change[] = [];
      const ctx: CommandContext = {
        command: def.name, db: trx, caller, params, access: new CallerAccess(trx, caller), now,
        jobId: job.jobId, instanceUuid: job.instanceUuid,
        event: (e: EventInput) => { events.push({ ...e, state: e.state ?? 'Completed' }); },
        changed: (...c: Change[]) => { changes.push(...c); },
      };
      const result = await def.handle(ctx);
      if (onCommit) await onCommit(trx, result, events);
      await insertEvents(trx, caller, events, now, null);
      // Last: the feed position is taken under a lock held until commit (store/queries/feed.ts).
      if (changes.length) await appendFeed(trx, JSON.stringify(changes), this.deps.serverId ?? null, now);
      return { result, changes };
    });
  }

  private publish(changes: Change[]): void {
    if (changes.length === 0) return;
    try { this.deps.sink.publish(changes); } catch (err) { this.deps.log.error({ err }, 'change sink failed'); }
  }

  private async submit(def: CommandDef, params: RequestParams, caller: Caller): Promise<ApiReply> {
    const jobId = randomUUID();
    const instanceUuid = def.reservesUuid ? randomUUID() : undefined;
    const now = this.nowIso();
    const description = def.describe?.(params) ?? `executing ${def.name}`;
    await this.deps.db.transaction().execute(async (trx) => {
      await trx.insertInto('async_jobs').values({
        uuid: jobId, command: def.name, account_id: caller.accountId, user_id: caller.userId, status: 0, result_code: 0,
        result_type: 'object', result: null, instance_type: def.instanceType ?? null, instance_uuid: instanceUuid ?? null, created: now, completed: null,
        server_id: this.deps.serverId ?? null,
      }).execute();
      if (def.eventType) await insertEvents(trx, caller, [{ type: def.eventType, description, state: 'Scheduled' }], now);
    });
    const p = this.execute(def, params, caller, jobId, instanceUuid, description).finally(() => this.inflight.delete(p));
    this.inflight.add(p);
    const body: Record<string, unknown> = instanceUuid ? { id: instanceUuid, jobid: jobId } : { jobid: jobId };
    return { status: 200, body: envelope(def.name, body) };
  }

  private async execute(def: CommandDef, params: RequestParams, caller: Caller, jobId: string, instanceUuid: string | undefined, description: string): Promise<void> {
    await new Promise((r) => setImmediate(r));
    const db = this.deps.db;
    try {
      if (def.eventType) await insertEvents(db, caller, [{ type: def.eventType, description, state: 'Started' }], this.nowIso());
      const { changes } = await this.transaction(def, params, caller, { jobId, instanceUuid }, async (trx, result, events) => {
        // The command's own event of the job's type becomes the Completed event; else a generic one.
        if (def.eventType) {
          const own = events.find((e) => e.type === def.eventType);
          if (own) own.state = 'Completed';
          else events.push({ type: def.eventType, description, state: 'Completed' });
        }
        const value = 'object' in result ? result.value : undefined;
        const resultUuid = typeof value?.id === 'string' ? value.id : undefined;
        const done = await trx.updateTable('async_jobs').set({
          status: 1, result_code: 0, result: JSON.stringify(resultBody(result)), completed: this.nowIso(),
          ...(instanceUuid || !resultUuid ? {} : { instance_uuid: resultUuid }),
        }).where('uuid', '=', jobId).where('status', '=', 0).executeTakeFirst();
        // Another server failed this job meanwhile (it took this one for dead): the job's outcome is
        // already told, so its effects must not commit.
        if (Number(done.numUpdatedRows ?? 0) !== 1) throw new ApiError(530, JOB_TAKEN, 9999);
      });
      this.publish(changes);
    } catch (err) {
      const e = this.toApiError(err, def.name);
      try {
        await db.transaction().execute(async (trx) => {
          await trx.updateTable('async_jobs').set({
            status: 2, result_code: e.code, result: JSON.stringify(errorBody(e.code, e.message, e.csCode)), completed: this.nowIso(),
          }).where('uuid', '=', jobId).where('status', '=', 0).execute();
          if (def.eventType) {
            await insertEvents(trx, caller, [{ type: def.eventType, description: `Error while ${description}: ${e.message}`, state: 'Completed', level: 'ERROR' }], this.nowIso());
          }
        });
      } catch (err2) {
        this.deps.log.error({ err: err2, jobId }, 'could not record job failure');
      }
    }
  }

  /** Wait until no async job is running (tests, bench). */
  async idle(): Promise<void> {
    while (this.inflight.size) await Promise.allSettled([...this.inflight]);
  }

  /** Wait for running async jobs (graceful shutdown). */
  async drain(): Promise<void> {
    this.closing = true;
    while (this.inflight.size) await Promise.allSettled([...this.inflight]);
  }
  get isClosing(): boolean { return this.closing; }
}

/** The `result` of a job failed because its management server stopped heartbeating (several servers). */
export function deadServerJobResult(serverName: string, lastHeartbeat: Date): string {
  return JSON.stringify(errorBody(530, `Job was cancelled because its management server ${serverName} stopped responding (last heartbeat ${lastHeartbeat.toISOString()}); nothing was changed`, 9999));
}

/** Jobs left pending by this server's previous run can never finish: mark them failed (CloudStack does the same). */
export async function failOrphanJobs(db: Db, now: string, serverId?: string): Promise<number> {
  const r = await db.updateTable('async_jobs').set({
    status: 2, result_code: 530, completed: now,
    result: JSON.stringify(errorBody(530, 'Job was cancelled because of management server restart or shutdown', 9999)),
  }).where('status', '=', 0)
    .where((eb) => serverId ? eb.or([eb('server_id', '=', serverId), eb('server_id', 'is', null)]) : eb.lit(true))
    .executeTakeFirst();
  return Number(r.numUpdatedRows ?? 0);
}
