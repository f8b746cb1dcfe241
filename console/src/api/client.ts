// The console's only way to the server: CloudStack's public API at client/api, exactly as any script
// would call it. `login` returns a sessionkey (kept in this tab's sessionStorage) and sets an HttpOnly
// cookie; every later call is a POST carrying the sessionkey, so it never lands in a URL or a log.

export interface Session {
  sessionkey: string;
  username: string;
  userid: string;
  account: string;
  domainid: string;
  domainpath: string;
  /** CloudStack's account type: "0" user, "1" root admin, "2" domain admin */
  type: string;
  timeout: number;
}

/** An API error: HTTP status and CloudStack's errorcode/errortext. */
export class ApiError extends Error {
  constructor(readonly code: number, message: string, readonly command: string) {
    super(message);
    this.name = 'ApiError';
  }
  /** The server does not know this command (or hides it from this user). */
  get unknownCommand(): boolean { return this.code === 432; }
}

const STORAGE_KEY = 'palisade.session';
type Listener = (s: Session | null) => void;
const listeners = new Set<Listener>();
let current: Session | null = readStored();

function readStored(): Session | null {
  try {
    const raw = sessionStorage.getItem(STORAGE_KEY);
    return raw ? (JSON.parse(raw) as Session) : null;
  } catch {
    return null;
  }
}

function setSession(s: Session | null): void {
  current = s;
  try {
    if (s) sessionStorage.setItem(STORAGE_KEY, JSON.stringify(s));
    else sessionStorage.removeItem(STORAGE_KEY);
  } catch { /* storage disabled: the session lasts as long as the page */ }
  for (const l of listeners) l(s);
}

export function getSession(): Session | null { return current; }

let endedReason: string | null = null;
/** Why the last session ended without a logout (shown once on the login page). */
export function takeEndedReason(): string | null { const r = endedReason; endedReason = null; return r; }
export function onSession(l: Listener): () => void {
  listeners.add(l);
  return () => listeners.delete(l);
}

export const isAdmin = (s: Session | null) => s?.type === '1';
export const isDomainAdmin = (s: Session | null) => s?.type === '2';
export const isOperator = (s: Session | null) => s?.type === '1' || s?.type === '2';

export type Params = Record<string, string | number | boolean | undefined | null>;

// The user's last input: every call says how long ago it was, so the server's idle timeout counts from
// it, not from the console's own polling (an open tab nobody touches still ends after the timeout).
let lastInput = performance.now();
if (typeof window !== 'undefined') {
  for (const ev of ['keydown', 'pointerdown', 'wheel', 'touchstart']) window.addEventListener(ev, () => { lastInput = performance.now(); }, { passive: true, capture: true });
}

async function post(command: string, params: Params, withSession: boolean): Promise<Record<string, any>> {
  const body = new URLSearchParams({ command, response: 'json' });
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') body.set(k, String(v));
  if (withSession) {
    if (!current) throw new ApiError(401, 'Not logged in', command);
    body.set('sessionkey', current.sessionkey);
  }
  let res: Response;
  try {
    res = await fetch('client/api', {
      method: 'POST', body, credentials: 'same-origin', cache: 'no-store',
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-palisade-idle-ms': String(Math.max(0, Math.round(performance.now() - lastInput))) },
    });
  } catch {
    throw new ApiError(0, 'The server cannot be reached. Check the connection; the console retries on its own.', command);
  }
  let json: Record<string, any>;
  try {
    json = await res.json();
  } catch {
    throw new ApiError(res.status, `The server answered ${res.status} without an API response`, command);
  }
  const inner = json[`${command.toLowerCase()}response`] ?? json.errorresponse ?? json;
  if (!res.ok || inner?.errorcode) {
    const err = new ApiError(inner?.errorcode ?? res.status, inner?.errortext ?? `HTTP ${res.status}`, command);
    // The session ended (expired, logged out elsewhere, password changed): back to the login page.
    if (err.code === 401 && withSession) { endedReason = 'Your session has ended (it expired, or it was closed elsewhere). Log in again.'; setSession(null); }
    throw err;
  }
  return inner;
}

/** A synchronous API call; resolves to the inside of `<command>response`. */
export function call(command: string, params: Params = {}): Promise<Record<string, any>> {
  return post(command, params, true);
}

/** Pages through a list command (the API's largest page, 500, at a time): every item, up to `max`. */
export async function callAll(command: string, params: Params, listKey: string, max = 10_000): Promise<Record<string, any>> {
  const items: unknown[] = [];
  let count = 0;
  for (let page = 1; items.length < max; page++) {
    const r = await call(command, { ...params, page, pagesize: 500 });
    const got = (r[listKey] ?? []) as unknown[];
    count = Number(r.count ?? 0);
    items.push(...got);
    if (got.length < 500 || items.length >= count) break;
  }
  return { count, [listKey]: items.slice(0, max) };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** An asynchronous command: submit, then poll queryAsyncJobResult; resolves to the job result. */
export async function callAsync(command: string, params: Params = {}): Promise<Record<string, any>> {
  const submitted = await call(command, params);
  const jobid = submitted.jobid as string | undefined;
  if (!jobid) return submitted;
  for (let delay = 100; ; delay = Math.min(delay * 1.5, 1000)) {
    const job = await call('queryAsyncJobResult', { jobid });
    if (job.jobstatus === 1) return job.jobresult ?? {};
    if (job.jobstatus === 2) {
      const r = job.jobresult ?? {};
      throw new ApiError(r.errorcode ?? job.jobresultcode ?? 530, r.errortext ?? 'The job failed', command);
    }
    await sleep(delay);
  }
}

export async function login(username: string, password: string, domain: string): Promise<Session> {
  const r = await post('login', { username, password, domain: domain.trim() || '/' }, false);
  const s: Session = {
    sessionkey: r.sessionkey, username: r.username, userid: r.userid, account: r.account, domainid: r.domainid,
    domainpath: r.domainpath ?? '', type: String(r.type), timeout: Number(r.timeout) || 1800,
  };
  setSession(s);
  return s;
}

export async function logout(): Promise<void> {
  try {
    if (current) await post('logout', {}, true);
  } finally {
    setSession(null);
  }
}

/** Which optional commands and parameters this server has (other servers may lack them: degrade). */
export interface Capabilities { commands: Set<string>; params: Map<string, Set<string>> }

export async function capabilities(): Promise<Capabilities> {
  const r = await call('listApis');
  const commands = new Set<string>();
  const params = new Map<string, Set<string>>();
  for (const api of (r.api ?? []) as { name: string; params?: { name: string }[] }[]) {
    commands.add(api.name.toLowerCase());
    params.set(api.name.toLowerCase(), new Set((api.params ?? []).map((p) => p.name.toLowerCase())));
  }
  return { commands, params };
}
