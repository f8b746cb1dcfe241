// The contract between the API framework (http, signing, dispatch, jobs) and command modules.
// A command module exports CommandDef objects; the framework validates declared parameter types and
// required-ness, runs `handle` in ONE store transaction (async commands: inside a job), records events,
// and publishes `changes` to the ChangeSink only after the transaction commits.
import type { Kysely, Transaction } from 'kysely';
import type { Database } from '../store/schema.js';
import type { Change } from '../model/changes.js';
import type { Role } from '../model/types.js';
import type { ConnectionInspector } from '../model/telemetry.js';
import type { ApiLimits } from './rate-limit.js';

/** CloudStack error: HTTP status = code. cserrorcode per CSExceptionErrorCode. */
export class ApiError extends Error {
  constructor(public readonly code: number, message: string, public readonly csCode: number = 9999) {
    super(message);
    this.name = 'ApiError';
  }
}
export const paramError = (msg: string) => new ApiError(431, msg, 4350);          // InvalidParameterValueException
export const permissionDenied = (msg: string) => new ApiError(531, msg, 4365);    // PermissionDeniedException
export const resourceInUse = (msg: string) => new ApiError(536, msg, 4375);       // ResourceInUseException
export const internalError = (msg: string) => new ApiError(530, msg, 9999);        // ServerApiException / others
export const unsupported = (msg: string) => new ApiError(432, msg, 9999);

export type ParamType = 'string' | 'uuid' | 'integer' | 'long' | 'short' | 'boolean' | 'list' | 'map' | 'date';
export interface ParamDef {
  name: string;              // lower-case, as CloudStack's listApis shows it
  type: ParamType;
  required?: boolean;
  description: string;
  /** for type 'list': the element type ('uuid' lists are validated as uuids) */
  of?: 'string' | 'uuid' | 'integer';
  /** for type 'string': the longest value accepted (characters); default 255, as CloudStack's @Parameter(length) */
  length?: number;
  /**
   * for type 'boolean': refuse (431) any value but true/false (any case). CloudStack reads every other
   * value as false; a flag whose false means "really do it" (dryrun) must not be misread that way.
   */
  strict?: boolean;
  /**
   * A project id (type 'uuid'). Palisade has no projects, so every project id names nothing: 431 with
   * ParamProcessWorker's "entity does not exist" text, as CloudStack answers an unknown one. `list`:
   * CloudStack's -1 ("every project of the caller") is accepted and lists nothing (listScope).
   */
  project?: 'list' | 'owner';
  since?: string;
}

/** Typed, already-validated access to request parameters (names in any case, as CloudStack's ParamUnpackWorker lower-cases them; login's by exact name). */
export interface Params {
  has(name: string): boolean;
  str(name: string): string | undefined;
  int(name: string): number | undefined;
  bool(name: string): boolean | undefined;
  list(name: string): string[] | undefined;
  /** map parameters: `x[0].account=A&x[0].group=G` → [{account:'A', group:'G'}] (parameter name in any case, field names as sent) */
  map(name: string): Record<string, string>[] | undefined;
  readonly raw: Readonly<Record<string, string>>;
}

export interface Caller {
  userId: number; userUuid: string; username: string;
  accountId: number; accountUuid: string; accountName: string;
  domainId: number; domainUuid: string; domainName: string; domainPath: string;
  role: Role;
  /** Set when the call came through a login session (sessions.ts), not a signed API key. */
  sessionId?: number;
  /** The peer's address, when the call came over HTTP (bounds password guessing per address). */
  address?: string;
}

/** Counts guesses of a user's password outside `login` (the login limiter's, bound to the caller's address). */
export interface PasswordAttempts {
  /** Before checking a password of `user` (`<domain id>/<username>`, as login counts it): false while locked. */
  begin(user: string): { allowed: boolean; retryAfterSeconds: number };
  /** The password was right. */
  succeeded(user: string): void;
}

/** What `prepare` may use: the store outside any transaction (read only), the caller, the request. */
export interface PrepareContext {
  readonly db: Kysely<Database>;
  readonly caller: Caller;
  readonly params: Params;
  /** Absent when the server has no login sessions (in-process callers): guesses are then not counted. */
  readonly passwordAttempts?: PasswordAttempts;
}

/** What an async command's `validate` may use at submission: the store outside any transaction (read only). */
export interface SubmitContext extends PrepareContext {
  readonly command: string;
  readonly access: Access;
}

/** Ownership and access rules (CloudStack's finalizeOwner / checkAccess / buildACLSearchParameters). */
export interface Access {
  /**
   * Owner named by `account`+`domainid` (a `domainid` alone is ignored, as CloudStack does), else the
   * caller's account. `lookup`: for finding an existing entity by name (CloudStack's finalizeAccountId
   * and its texts) rather than for creating one (finalizeOwner). 431/531 when not allowed.
   */
  resolveOwner(params: Params, lookup?: boolean): Promise<{ accountId: number; domainId: number }>;
  /** Throws 531 unless the caller may operate on an entity owned by this account. */
  checkAccess(ownerAccountId: number, ownerDomainId: number): Promise<void>;
  /** For list commands: the account ids (null = no account restriction) and domain ids (null = any) the caller may see, given account/domainid/isrecursive/listall. */
  listScope(params: Params): Promise<{ accountIds: number[] | null; domainIds: number[] | null }>;
}

export interface EventInput {
  type: string;                 // e.g. SG.CREATE
  description: string;
  state?: 'Created' | 'Scheduled' | 'Started' | 'Completed';
  level?: 'INFO' | 'WARN' | 'ERROR';
  resourceType?: string; resourceUuid?: string; resourceName?: string;
  accountId?: number; domainId?: number; // default: the owner = caller
}

export interface CommandContext {
  readonly command: string;
  /** The transaction of this command. Everything written through it commits or rolls back together. */
  readonly db: Transaction<Database> | Kysely<Database>;
  readonly caller: Caller;
  readonly params: Params;
  readonly access: Access;
  /** ISO-8601 time of the request. */
  readonly now: string;
  /** Async commands: the job's uuid; and the instance uuid reserved at submission (see CommandDef.reservesUuid). */
  readonly jobId?: string;
  readonly instanceUuid?: string;
  event(e: EventInput): void;
  changed(...changes: Change[]): void;
  /** Asks agents about tracked connections (revoke dry runs); absent until the control plane provides it. */
  readonly connections?: ConnectionInspector;
  /** What the command's `prepare` returned (undefined without one). */
  readonly prepared?: unknown;
  /** This server's per-account API rate limit (getApiLimit / resetApiLimit); absent in-process without a dispatcher. */
  readonly apiLimits?: ApiLimits;
}

export type CommandResult =
  | { object: string; value: Record<string, unknown> }                    // {"<cmd>response":{"<object>":{…}}}
  | { list: string; items: Record<string, unknown>[]; count?: number }    // {"<cmd>response":{"count":n,"<list>":[…]}}
  | { success: true; displaytext?: string }
  | { raw: Record<string, unknown> };                                      // {"<cmd>response":{…raw}}

export interface CommandDef {
  name: string;                 // camelCase as CloudStack: createSecurityGroup
  description: string;
  since?: string;
  async?: boolean;
  /** Async only: a uuid is generated at submission, returned as `id` next to `jobid`, and passed as ctx.instanceUuid. */
  reservesUuid?: boolean;
  /** Roles allowed; default: all. */
  roles?: Role[];
  params: ParamDef[];
  /** Object name of the response, for listApis. */
  responseObject?: string;
  /** Async commands: the event type recorded as Scheduled/Started/Completed by the framework. */
  eventType?: string;
  /** Async only (optional): description of the Scheduled/Started events, from the request parameters. */
  describe?(params: Params): string;
  /** Async only (optional): CloudStack's jobinstancetype (e.g. SecurityGroup, VirtualMachine). */
  instanceType?: string;
  /** `login`/`logout`: handled by the session layer (sessions.ts) before any authentication; `handle` is never called. */
  authenticator?: 'login' | 'logout';
  /** Optional: true when this request must record no events at all (dry runs change nothing). */
  quiet?(params: Params): boolean;
  /**
   * Optional: true when this request only reads (dry runs). `handle` then runs outside any store
   * transaction, so a slow step (asking agents, up to seconds) holds no connection — on SQLite the only
   * one, which every other request waits for. It must write nothing, emit no events and publish no
   * changes (the framework refuses the result if it does); an async job's own row is still written.
   */
  readOnly?(params: Params): boolean;
  /**
   * Optional: slow work done BEFORE the command's transaction and outside it — password hashing and
   * checking (scrypt: ~0.1 s of CPU each), which inside the transaction would hold the store (on SQLite,
   * every other request). It must not write; it may throw ApiErrors. `handle` gets its result as
   * `ctx.prepared` and re-checks whatever it relied on inside the transaction.
   */
  prepare?(p: PrepareContext): Promise<unknown>;
  /**
   * Async only (optional): read-only checks at submission, before a job exists. CloudStack resolves an
   * async command's entity parameters (ParamProcessWorker, and the getters its event and instance id
   * need) before queueing it, so an unknown or forbidden group or rule is an immediate 431/531 answer,
   * not a job that fails. `handle` checks again in its transaction (the entity may go meanwhile).
   * May return the uuid of the job's instance (CloudStack's getApiResourceId, recorded at submission),
   * so `jobinstanceid` is there while the job runs and after it fails.
   */
  validate?(ctx: SubmitContext): Promise<void | { instanceUuid?: string }>;
  handle(ctx: CommandContext): Promise<CommandResult>;
}
