// Authentication, the per-account API rate limit (rate-limit.ts), command dispatch, transactions, async
// jobs. Every command runs in one store transaction; its changes reach the ChangeSink only after that transaction commits.
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { Db } from '../store/db.js';
import type { Change, ChangeSink } from '../model/changes.js';
import type { Role } from '../model/types.js';
import { ApiError, type Caller, type CommandContext, type CommandDef, type CommandResult, type EventInput, type PasswordAttempts } from './command.js';
import { RequestParams, validateParams } from './params.js';
import { CallerAccess } from './access.js';
import { insertEvents, type EventRow } from './events.js';
import { envelope, errorBody, resultBody } from './envelope.js';
import { checkFreshness, verifySignature } from './signing.js';
import { MAX_PARAMETER_NAME_LENGTH, MAX_STORED_ERROR_TEXT, bounded } from './limits.js';
import { JobQueue } from './job-queue.js';
import { jobClass } from '../model/job-classes.js';
import type { SessionAuth, Transport } from './sessions.js';
import type { ApiObserver } from './metrics.js';
import type { ConnectionInspector } from '../model/telemetry.js';
import { appendFeed } from '../store/queries/feed.js';
import { readThrottling } from '../store/queries/settings.js';
import { ApiRateLimiter, apiLimitText } from './rate-limit.js';
import { LogWindow } from '../model/log-window.js';
import { storeOutOfSpace, storeUnavailable, uniqueViolation } from '../store/db.js';

export const AUTH_FAILED = 'unable to verify user credentials and/or request signature';
export const UNKNOWN_COMMAND = 'The given command does not exist or it is not available for user';
const INTERNAL = 'Internal error executing command, please contact your system administrator';
/** Parameter names as clients send them, map entries (`tags[0].key`) included. */
const PARAM_NAME = /^[A-Za-z0-9_.\[\]-]+$/;
/** API keys are 86 characters; anything much longer is not one (and is not worth a lookup). */
const MAX_APIKEY_LENGTH = 255;
/** The store cannot be reached from this server (several servers: another one may answer). */
export const STORE_FULL = 'The database is out of disk space; nothing was changed. Free space where the database keeps its files, then retry';
export const STORE_UNAVAILABLE = 'This management server cannot reach its database; nothing was changed. Retry the call, through another management server if there are several';
/** The job's server was declared dead by another server, which failed the job, before it finished. */
const JOB_TAKEN = 'Job was failed by another management server while this one could not reach the database; nothing was changed';
const READS = /^(list|query|explain)/;
const FENCED = 'This management server stopped answering for a while and the others took it for dead; this request, which it received before it knew, was not carried out (nothing was changed). Retry it';

export interface DispatcherDeps {
  db: Db;
  sink: ChangeSink;
  log: Logger;
  commands: CommandDef[];
  /** Clock, injectable for tests. */
  now?: () => Date;
  /** Identity of this server process, recorded on the async jobs it runs. */
  serverId?: string;
  /** Username/password sessions (login, logout, sessionkey calls); without it only signed calls work. */
  sessions?: SessionAuth;
  /** Told about every request and finished job (metrics). */
  observer?: ApiObserver;
  /** Agents' conntrack, for revoke dry runs (provided by the control plane when it can). */
  connections?: ConnectionInspector;
  /** Async jobs running at once (job-queue.ts); default 2. */
  jobConcurrency?: number;
  /**
   * Several servers (PostgreSQL): the cluster's write fence (control/cluster.ts). `token` is read when a
   * request arrives; every write transaction commits only if `holds` still says yes for it.
   */
  fence?: WriteFence;
  /**
   * Several servers: false while the cluster finds the database unreachable (its heartbeats fail). Calls
   * are then answered 530 at once instead of each waiting for a connection that will not come (15 s
   * when the database hangs rather than refuses).
   */
  storeReachable?: () => boolean;
}

/** What the API needs of the cluster to refuse writes a server buried by the others received before. */
export interface WriteFence {
  token(): string;
  holds(trx: CommandContext['db'], token: string): Promise<boolean>;
}

/** `cookies`: Set-Cookie values; `headers`: extra response headers (login/logout only). */
export interface ApiReply { status: number; body: Record<string, unknown>; cookies?: string[]; headers?: Record<string, string> }

/** Rate-limited calls logged one by one per window (Dispatcher.rateLimitedLog). */
const RATE_LIMITED_LOGGED = 10;
const RATE_LIMITED_LOG_WINDOW_MS = 60_000;

const ROLE_BY_TYPE: Record<number, Role> = { 0: 'user', 1: 'admin', 2: 'domainadmin' };

export class Dispatcher {
  readonly commands = new Map<string, CommandDef>();
  private readonly inflight = new Set<Promise<void>>();
  private readonly jobs: JobQueue;
  private closing = false;
  /** Per-account API rate limit (api.throttling.*), counted in this process. */
  readonly rateLimiter: ApiRateLimiter;
  /**
   * Calls refused by the rate limit, logged one by one up to RATE_LIMITED_LOGGED per
   * RATE_LIMITED_LOG_WINDOW_MS, then counted: a tenant calling on past its limit (each refusal costs the
   * server next to nothing) would otherwise write a log line per call, as fast as it can send them.
   */
  private readonly rateLimitedLog: LogWindow;

  /** login/logout by lower-cased name: CloudStack finds its authenticators ignoring case (APIAuthenticationManagerImpl). */
  private readonly authenticators = new Map<string, CommandDef>();

  constructor(private readonly deps: DispatcherDeps) {
    // Every other command by its exact name: ApiServer's command map is a HashMap of the annotations' names.
    for (const c of deps.commands) {
      this.commands.set(c.name, c);
      if (c.authenticator) this.authenticators.set(c.name.toLowerCase(), c);
    }
    this.jobs = new JobQueue(deps.jobConcurrency ?? 2);
    this.rateLimiter = new ApiRateLimiter(() => readThrottling(deps.db), () => (deps.now?.() ?? new Date()).getTime(),
      (err) => deps.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'could not read the api.throttling settings; keeping the previous ones'));
    this.rateLimitedLog = new LogWindow(RATE_LIMITED_LOGGED, RATE_LIMITED_LOG_WINDOW_MS, (refusals) =>
      deps.log.warn({ refusals }, `api rate limit refusals not logged one by one (more than ${RATE_LIMITED_LOGGED} in ${RATE_LIMITED_LOG_WINDOW_MS / 1000} s)`));
  }

  private nowIso(): string { return (this.deps.now?.() ?? new Date()).toISOString(); }

  /**
   * Look up the caller by apiKey and verify the request signature, or else by its login session. Throws
   * 401. `command`: the command called; a signed call whose key's role may not use it is 432 once the
   * key is known to be an enabled user's — before the signature is checked, as CloudStack does.
   */
  async authenticate(raw: Record<string, string>, transport?: Transport, command?: CommandDef): Promise<Caller> {
    // Checks that need neither the store nor a hash come first: a malformed or stale request costs nothing more.
    let apiKey: string | undefined;
    for (const [k, v] of Object.entries(raw)) if (k.toLowerCase() === 'apikey') apiKey = v;
    // A session call even when it also carries an apiKey, as long as its cookie names a live session
    // (CloudStack's ApiServlet, then verifyRequest with the session's user, ignores the key then).
    const wanted = transport && this.deps.sessions?.wants(raw, transport) ? this.deps.sessions : undefined;
    const sessions = wanted && transport && (!apiKey || await wanted.live(transport)) ? wanted : undefined;
    if (!sessions && (!apiKey || apiKey.length > MAX_APIKEY_LENGTH)) throw new ApiError(401, AUTH_FAILED);
    if (Object.keys(raw).some((k) => k.length > MAX_PARAMETER_NAME_LENGTH || !PARAM_NAME.test(k))) {
      this.deps.log.info('request rejected: malformed parameter name');
      throw new ApiError(401, AUTH_FAILED);
    }
    if (sessions && transport) return sessions.authenticate(raw, transport);
    if (!apiKey) throw new ApiError(401, AUTH_FAILED);
    const fresh = checkFreshness(raw, (this.deps.now?.() ?? new Date()).getTime());
    if (!fresh.ok) {
      this.deps.log.info({ reason: fresh.reason }, 'request signature rejected');
      throw new ApiError(401, AUTH_FAILED);
    }
    const row = await this.deps.db.selectFrom('users as u')
      .innerJoin('accounts as a', 'a.id', 'u.account_id')
      .innerJoin('domains as d', 'd.id', 'a.domain_id')
      .select(['u.id as userId', 'u.uuid as userUuid', 'u.username', 'u.secretkey', 'u.state as userState',
        'a.id as accountId', 'a.uuid as accountUuid', 'a.name as accountName', 'a.type as accountType', 'a.state as accountState',
        'd.id as domainId', 'd.uuid as domainUuid', 'd.name as domainName', 'd.path as domainPath'])
      .where('u.apikey', '=', apiKey).where('u.removed', 'is', null).where('a.removed', 'is', null)
      .executeTakeFirst();
    if (!row || row.userState !== 'enabled' || row.accountState !== 'enabled') throw new ApiError(401, AUTH_FAILED);
    const role = ROLE_BY_TYPE[row.accountType] ?? 'user';
    // CloudStack's ApiServer.verifyRequest checks the command against the key's user (commandAvailable →
    // checkCommandAvailable → the role's API checker: 432) after finding that user by apiKey and seeing it
    // and its account enabled, and BEFORE it looks at the secret key or the signature. So does Palisade.
    // What this tells someone holding only an apiKey: that the key is an enabled user's and whether its
    // role may call the command — the same as CloudStack tells (its 432 vs 401), nothing more: unknown,
    // disabled and stale-signed (missing/expired `expires`) requests are 401 before this, as there, and an
    // unknown command is 401 before any key is looked at. Palisade's roles are fixed per account type and
    // their commands are public (listApis, README), so the answer reveals at most the key's account type,
    // which CloudStack's answer reveals as well.
    if (command?.roles && !command.roles.includes(role)) throw new ApiError(432, UNKNOWN_COMMAND);
    if (!row.secretkey) throw new ApiError(401, AUTH_FAILED);
    const v = verifySignature(raw, row.secretkey, (this.deps.now?.() ?? new Date()).getTime());
    if (!v.ok) {
      this.deps.log.info({ user: row.username, reason: v.reason }, 'request signature rejected');
      throw new ApiError(401, AUTH_FAILED);
    }
    return {
      userId: row.userId, userUuid: row.userUuid, username: row.username,
      accountId: row.accountId, accountUuid: row.accountUuid, accountName: row.accountName,
      domainId: row.domainId, domainUuid: row.domainUuid, domainName: row.domainName, domainPath: row.domainPath,
      role,
    };
  }

  /** Handle one HTTP request's parameters end to end; never throws. `transport`: cookies and headers (HTTP only). */
  async handle(raw: Record<string, string>, transport?: Transport): Promise<ApiReply> {
    const t0 = performance.now();
    // The write fence's token as the request arrives (before any await: a server waking from a freeze
    // reads the requests waiting in its sockets before its heartbeat can learn it was buried).
    const fence = this.deps.fence?.token();
    const reply = await this.handleInner(raw, transport, fence);
    if (this.deps.observer) this.deps.observer.request(this.lookup(raw)?.name ?? null, reply.status, (performance.now() - t0) / 1000);
    if (this.deps.log.isLevelEnabled('debug')) {
      this.deps.log.debug({ command: commandOf(raw), status: reply.status, ms: +(performance.now() - t0).toFixed(2) }, 'api call');
    }
    return reply;
  }

  private async handleInner(raw: Record<string, string>, transport: Transport | undefined, fence: string | undefined): Promise<ApiReply> {
    const commandName = commandOf(raw);
    const def = this.lookup(raw);
    const label = def?.name ?? undefined;
    try {
      if (!def) {
        // CloudStack's verifyRequest: without a session, a command it does not know fails the request's
        // authentication (401) before any key or signature is looked at; a live session's user learns 432.
        const sessions = transport && this.deps.sessions?.wants(raw, transport) ? this.deps.sessions : undefined;
        if (!sessions || !transport || !(await sessions.live(transport))) throw new ApiError(401, AUTH_FAILED);
        const caller = await sessions.authenticate(raw, transport);
        if (commandName === undefined) throw new ApiError(400, 'no command specified');   // ApiServlet's answer to a session
        // A root admin passes the role check and meets ApiServer.handleRequest's own refusal; others the role check's.
        throw new ApiError(432, caller.role === 'admin' ? `Unknown API command: ${commandName}` : UNKNOWN_COMMAND);
      }
      if (this.deps.storeReachable && !this.deps.storeReachable()) throw new ApiError(530, STORE_UNAVAILABLE, 9999);
      if (def.authenticator) {
        if (!this.deps.sessions || !transport) throw new ApiError(405, 'This is an authentication api, cannot be used directly');
        return await this.deps.sessions.handle(def, raw, transport);
      }
      const caller = await this.authenticate(raw, transport, def);
      if (transport) caller.address = transport.address;
      // a session's caller (a signed one was checked in authenticate, before its signature)
      if (def.roles && !def.roles.includes(caller.role)) throw new ApiError(432, UNKNOWN_COMMAND);
      // CloudStack's rate limit (rate-limit.ts): root admins are not counted; over it nothing runs.
      if (caller.role !== 'admin') {
        const retryAfterMs = await this.rateLimiter.hit(caller.accountId);
        if (retryAfterMs !== undefined) {
          if (this.rateLimitedLog.admit()) this.deps.log.warn({ account: caller.accountUuid, command: def.name }, 'api rate limit reached');
          return {
            status: 429, body: envelope(undefined, errorBody(429, apiLimitText(retryAfterMs), 9999)),
            headers: { 'retry-after': String(Math.max(1, Math.ceil(retryAfterMs / 1000))) },
          };
        }
      }
      return await this.run(def, raw, caller, fence);
    } catch (err) {
      const e = this.toApiError(err, def?.name ?? commandName ?? '?');
      // CloudStack's ApiServlet answers 400/401 through getSerializedApiError(int, …): no cserrorcode. A 432
      // is a ServerApiException(UNSUPPORTED_ACTION_ERROR) (ApiServer.commandAvailable / handleRequest),
      // serialised by getSerializedApiError(ServerApiException, …), which copies its cserrorcode: 9999,
      // CSExceptionErrorCode's code for ServerApiException itself — under `errorresponse`.
      const framework = e.code === 400 || e.code === 401;
      return { status: e.code, body: envelope(e.code === 432 ? undefined : label, errorBody(e.code, e.message, framework ? undefined : e.csCode)) };
    }
  }

  /** The command a request names: `command` by that exact name, its value exactly (login/logout in any case). */
  private lookup(raw: Record<string, string>): CommandDef | undefined {
    const name = commandOf(raw);
    return name === undefined ? undefined : this.commands.get(name) ?? this.authenticators.get(name.toLowerCase());
  }

  private toApiError(err: unknown, command: string): ApiError {
    if (err instanceof ApiError) return err;
    if (storeUnavailable(err)) {
      this.deps.log.warn({ err: err instanceof Error ? err.message : String(err), command }, 'command failed: the store is unreachable');
      return new ApiError(530, STORE_UNAVAILABLE, 9999);
    }
    const unique = uniqueViolation(err);
    if (unique) {
      this.deps.log.warn({ err: err instanceof Error ? err.message : String(err), command }, 'command refused: a concurrent request took the same unique value');
      return new ApiError(431, `Unable to execute API command ${command.toLowerCase()}: the ${unique.column} given is already in use (taken by a concurrent request); nothing was changed`, 4350);
    }
    if (storeOutOfSpace(err)) {
      this.deps.log.error({ err: err instanceof Error ? err.message : String(err), command }, 'command failed: the database is out of disk space');
      return new ApiError(530, STORE_FULL, 9999);
    }
    this.deps.log.error({ err, command }, 'command failed with an unexpected error');
    return new ApiError(530, INTERNAL, 9999);
  }

  /** Run an authenticated command (also used in-process by tests and the bench). */
  async run(def: CommandDef, raw: Record<string, string>, caller: Caller, arrived = this.deps.fence?.token()): Promise<ApiReply> {
    const params = new RequestParams(raw);
    validateParams(def, params);
    const name = def.name;
    // (reads need no fence: CloudStack's read verbs)
    const fence = READS.test(name) ? undefined : arrived;
    if (!def.async) {
      const { result, changes } = await this.transaction(def, params, caller, { fence });
      this.publish(changes);
      return { status: 200, body: envelope(name, resultBody(result)) };
    }
    const target = def.validate ? await def.validate({ db: this.deps.db, caller, params, command: name, access: new CallerAccess(this.deps.db, caller) }) : undefined;
    return this.submit(def, params, caller, fence, target?.instanceUuid);
  }

  /** The write fence, inside a write transaction: 530 when this server was buried since the request arrived. */
  private async fenced(trx: CommandContext['db'], token: string | undefined): Promise<void> {
    if (this.deps.fence && token !== undefined && !(await this.deps.fence.holds(trx, token))) throw new ApiError(530, FENCED, 9999);
  }

  private async transaction(def: CommandDef, params: RequestParams, caller: Caller, job: { jobId?: string; instanceUuid?: string; fence?: string },
    onCommit?: (trx: CommandContext['db'], result: CommandResult, events: EventRow[]) => Promise<void>) {
    const prepared = def.prepare ? await def.prepare({ db: this.deps.db, caller, params, passwordAttempts: this.passwordAttempts(caller) }) : undefined;
    const now = this.nowIso();
    const handle = async (db: CommandContext['db']) => {
      const events: EventRow[] = [];
      const changes: Change[] = [];
      const ctx: CommandContext = {
        command: def.name, db, caller, params, access: new CallerAccess(db, caller), now,
        jobId: job.jobId, instanceUuid: job.instanceUuid, connections: this.deps.connections, prepared, apiLimits: this.rateLimiter,
        event: (e: EventInput) => { events.push({ ...e, state: e.state ?? 'Completed' }); },
        changed: (...c: Change[]) => { changes.push(...c); },
      };
      return { result: await def.handle(ctx), events, changes };
    };
    if (def.readOnly?.(params)) {
      // Outside any transaction: the handler may wait on agents without holding the store.
      const { result, events, changes } = await handle(this.deps.db);
      if (events.length || changes.length) throw new Error(`${def.name}: a read-only run recorded events or changes`);
      if (onCommit) await this.deps.db.transaction().execute(async (trx) => { await onCommit(trx, result, events); await this.fenced(trx, job.fence); });
      return { result, changes };
    }
    return this.deps.db.transaction().execute(async (trx) => {
      const { result, events, changes } = await handle(trx);
      if (onCommit) await onCommit(trx, result, events);
      if (!def.quiet?.(params)) await insertEvents(trx, caller, events, now, null);
      await this.fenced(trx, job.fence);
      // Last: the feed position is taken under a lock held until commit (store/queries/feed.ts).
      if (changes.length) await appendFeed(trx, JSON.stringify(changes), this.deps.serverId ?? null, now);
      return { result, changes };
    });
  }

  /** Password guesses outside login count against the login limiter, per user and the caller's address. */
  private passwordAttempts(caller: Caller): PasswordAttempts | undefined {
    const limiter = this.deps.sessions?.limiter;
    if (!limiter) return undefined;
    const address = caller.address ?? 'local';
    return {
      begin: (user) => limiter.begin(user, address, (this.deps.now?.() ?? new Date()).getTime()),
      succeeded: (user) => limiter.succeeded(user, address),
    };
  }

  private publish(changes: Change[]): void {
    if (changes.length === 0) return;
    if (changes.some((c) => c.kind === 'settings')) this.rateLimiter.invalidate();
    try { this.deps.sink.publish(changes); } catch (err) { this.deps.log.error({ err }, 'change sink failed'); }
  }

  /** `target`: the uuid of the entity the job acts on, known at submission (validate), recorded as its instance. */
  private async submit(def: CommandDef, params: RequestParams, caller: Caller, fence: string | undefined, target?: string): Promise<ApiReply> {
    const jobId = randomUUID();
    const instanceUuid = def.reservesUuid ? randomUUID() : undefined;
    const now = this.nowIso();
    const description = def.describe?.(params) ?? `executing ${def.name}`;
    await this.deps.db.transaction().execute(async (trx) => {
      await trx.insertInto('async_jobs').values({
        // `cmd` is the command's Java class, as CloudStack records it (job-classes.ts)
        uuid: jobId, command: jobClass(def.name, caller.role), account_id: caller.accountId, user_id: caller.userId, status: 0, result_code: 0,
        result_type: 'object', result: null, instance_type: def.instanceType ?? null, instance_uuid: instanceUuid ?? target ?? null, created: now, completed: null,
        server_id: this.deps.serverId ?? null,
      }).execute();
      if (def.eventType && !def.quiet?.(params)) await insertEvents(trx, caller, [{ type: def.eventType, description, state: 'Scheduled' }], now);
      await this.fenced(trx, fence);
    });
    // Queued (jobstatus 0 meanwhile): accounts take turns and requests keep being served between jobs.
    const p = this.jobs.submit(caller.accountId, () => this.execute(def, params, caller, jobId, instanceUuid, description, fence)).finally(() => this.inflight.delete(p));
    this.inflight.add(p);
    const body: Record<string, unknown> = instanceUuid ? { id: instanceUuid, jobid: jobId } : { jobid: jobId };
    return { status: 200, body: envelope(def.name, body) };
  }

  private async execute(def: CommandDef, params: RequestParams, caller: Caller, jobId: string, instanceUuid: string | undefined, description: string, fence: string | undefined): Promise<void> {
    const t0 = performance.now();
    await new Promise((r) => setImmediate(r));
    const db = this.deps.db;
    const eventType = def.quiet?.(params) ? undefined : def.eventType;
    try {
      if (eventType) await insertEvents(db, caller, [{ type: eventType, description, state: 'Started' }], this.nowIso());
      const { changes } = await this.transaction(def, params, caller, { jobId, instanceUuid, fence }, async (trx, result, events) => {
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
      this.deps.observer?.job(def.name, 0, (performance.now() - t0) / 1000);
    } catch (err) {
      const e = this.toApiError(err, def.name);
      this.deps.observer?.job(def.name, e.code, (performance.now() - t0) / 1000);
      try {
        await db.transaction().execute(async (trx) => {
          await trx.updateTable('async_jobs').set({
            status: 2, result_code: e.code, result: JSON.stringify(errorBody(e.code, bounded(e.message, MAX_STORED_ERROR_TEXT), e.csCode)), completed: this.nowIso(),
          }).where('uuid', '=', jobId).where('status', '=', 0).execute();
          if (eventType) {
            await insertEvents(trx, caller, [{ type: eventType, description: `Error while ${description}: ${e.message}`, state: 'Completed', level: 'ERROR' }], this.nowIso());
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

  /** Wait for every accepted async job, running or queued (graceful shutdown). */
  async drain(): Promise<void> {
    this.closing = true;
    while (this.inflight.size) await Promise.allSettled([...this.inflight]);
  }
  get isClosing(): boolean { return this.closing; }
}

/** The `command` parameter, by that exact name (ApiServlet: params.get("command"); `Command=` names none). */
function commandOf(raw: Record<string, string>): string | undefined {
  return Object.hasOwn(raw, 'command') ? raw.command : undefined;
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
