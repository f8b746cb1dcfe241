// HTTP client for the CloudStack API: signed GET requests, envelope unwrapping, async job polling.
import { formatExpires, signParams } from '../api/signing.js';

/** An error reported by the server (errorcode/cserrorcode/errortext) or by the transport (code 0). */
export class CliApiError extends Error {
  constructor(public readonly errorcode: number, public readonly errortext: string, public readonly cserrorcode?: number) {
    super(errortext);
    this.name = 'CliApiError';
  }
  /** cloudmonkey's wording: `(HTTP 431, error code 4350) text` */
  describe(): string {
    if (this.errorcode === 0) return this.errortext;
    const cs = this.cserrorcode !== undefined ? `, error code ${this.cserrorcode}` : '';
    return `(HTTP ${this.errorcode}${cs}) ${this.errortext}`;
  }
}

export interface Connection {
  url: string;
  apikey: string;
  secretkey: string;
  /** seconds, for each HTTP request and for waiting on an async job */
  timeout: number;
}

export type ApiBody = Record<string, unknown>;

/** Unwrap `{"<cmd>response": {...}}`; throws CliApiError for an error body. Pure. */
export function unwrap(json: unknown, httpStatus: number): ApiBody {
  if (json === null || typeof json !== 'object') {
    throw new CliApiError(httpStatus || 0, `unexpected response from server (HTTP ${httpStatus})`);
  }
  const obj = json as Record<string, unknown>;
  const key = Object.keys(obj).find((k) => k.toLowerCase().endsWith('response')) ?? Object.keys(obj)[0];
  const inner = key === undefined ? {} : obj[key];
  if (inner === null || typeof inner !== 'object') {
    throw new CliApiError(httpStatus || 0, `unexpected response from server (HTTP ${httpStatus})`);
  }
  const body = inner as ApiBody;
  if (body.errorcode !== undefined || httpStatus >= 400) {
    throw new CliApiError(
      Number(body.errorcode ?? httpStatus),
      String(body.errortext ?? `HTTP ${httpStatus}`),
      body.cserrorcode === undefined ? undefined : Number(body.cserrorcode),
    );
  }
  return body;
}

/** Build the signed query string for `command` with `params`. */
export function signedQuery(conn: Connection, command: string, params: Record<string, string>, now = new Date()): string {
  const all: Record<string, string> = { ...params, command, response: 'json' };
  if (conn.apikey) {
    all.apiKey = conn.apikey;
    // signature version 3: the signed request is only valid for a few minutes
    all.signatureVersion = '3';
    all.expires = formatExpires(new Date(now.getTime() + 5 * 60_000));
    all.signature = signParams(all, conn.secretkey);
  }
  return new URLSearchParams(all).toString();
}

/** One API call. Returns the unwrapped response body. */
export async function callApi(conn: Connection, command: string, params: Record<string, string> = {}): Promise<ApiBody> {
  if (!conn.apikey || !conn.secretkey) {
    throw new CliApiError(0, 'no API credentials: `palisade set apikey …` and `palisade set secretkey …`, or CLOUDSTACK_KEY / CLOUDSTACK_SECRET');
  }
  const url = `${conn.url}?${signedQuery(conn, command, params)}`;
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(conn.timeout * 1000), headers: { accept: 'application/json' } });
  } catch (e) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    const why = cause?.code ?? cause?.message ?? (e as Error).message;
    throw new CliApiError(0, `cannot reach ${conn.url}: ${why}`);
  }
  const text = await res.text();
  let json: unknown = null;
  try { json = JSON.parse(text); } catch {
    throw new CliApiError(res.status >= 400 ? res.status : 0, `unexpected response from server (HTTP ${res.status}): ${text.slice(0, 200)}`);
  }
  return unwrap(json, res.status);
}

export interface WaitOptions {
  /** called between polls (spinner) */
  onPoll?: () => void;
  sleep?: (ms: number) => Promise<void>;
}

const defaultSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Poll queryAsyncJobResult until the job finishes; returns `jobresult` or throws the job's error. */
export async function waitForJob(conn: Connection, jobid: string, opts: WaitOptions = {}): Promise<ApiBody> {
  const sleep = opts.sleep ?? defaultSleep;
  const deadline = Date.now() + conn.timeout * 1000;
  let delay = 50;
  for (;;) {
    const r = await callApi(conn, 'queryAsyncJobResult', { jobid });
    const status = Number(r.jobstatus);
    if (status === 1) return (r.jobresult as ApiBody | undefined) ?? {};
    if (status === 2) {
      const jr = (r.jobresult ?? {}) as ApiBody;
      throw new CliApiError(
        Number(jr.errorcode ?? r.jobresultcode ?? 530),
        String(jr.errortext ?? `async job ${jobid} failed`),
        jr.cserrorcode === undefined ? undefined : Number(jr.cserrorcode),
      );
    }
    if (Date.now() > deadline) throw new CliApiError(0, `async job ${jobid} did not finish within ${conn.timeout}s`);
    opts.onPoll?.();
    await sleep(delay);
    delay = Math.min(delay * 2, 1000);
  }
}
