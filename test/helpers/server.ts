// Starts the REAL server process (`palisade server`) on a free loopback port with a temp data dir,
// and calls its API signed like a CloudStack client. Used by the API, inventory, CLI and agent tests.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { signParams, formatExpires } from '../../src/api/signing.js';
import { palisadeCommand } from './palisade.js';
import { UNHANDLED_REJECTION } from '../../src/api/serve.js';
import { REPO, runProcess, trackChild, type RunResult } from './process.js';

export interface Creds { apikey: string; secretkey: string }
export interface ApiResult { status: number; body: any }

export interface TestServer {
  url: string;            // http://127.0.0.1:PORT/client/api
  port: number;
  dataDir: string;
  apikey: string;
  secretkey: string;
  /** Signed POST (form body), response=json, signature version 3. */
  call(command: string, params?: Record<string, string | number | boolean>, creds?: Creds): Promise<ApiResult>;
  /** Like call, but for async commands waits for the job and returns queryAsyncJobResult's body. */
  callAndWait(command: string, params?: Record<string, string | number | boolean>, creds?: Creds): Promise<ApiResult>;
  /** Poll queryAsyncJobResult until the job is done; returns its response object. */
  waitJob(jobid: string, creds?: Creds): Promise<any>;
  /** Stop and start the process on the same port and data dir. */
  restart(): Promise<void>;
  /** Send a signal (SIGKILL: the server dies on the spot) and wait until the process is gone. */
  kill(signal: NodeJS.Signals): Promise<void>;
  /** Start it again after `kill` (same port and data dir). */
  start(): Promise<void>;
  /**
   * Stop the process (SIGTERM) and remove the data dir if this helper created it. Throws when the
   * server logged an unhandled promise rejection (its last-resort handler kept it up, but it is a bug).
   */
  stop(): Promise<void>;
  /** Everything the process printed so far (for failure messages). */
  output(): string;
  /** The server process's pid (for /proc measurements). */
  pid(): number;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A signed CloudStack API client for `url` (…/client/api): `call` posts one command, `callAndWait`
 * also follows an async job to its end (polling every `pollMs`, for at most a minute).
 */
export function apiClient(url: string, creds: Creds, pollMs = 50) {
  async function call(command: string, params: Record<string, string | number | boolean> = {}, who: Creds = creds): Promise<ApiResult> {
    const p: Record<string, string> = { command, response: 'json', apiKey: who.apikey, signatureVersion: '3', expires: formatExpires(new Date(Date.now() + 600_000)) };
    for (const [k, v] of Object.entries(params)) p[k] = String(v);
    p.signature = signParams(p, who.secretkey);
    const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(p).toString() });
    const text = await r.text();
    let body: any;
    try { body = JSON.parse(text); } catch { body = text; }
    return { status: r.status, body };
  }

  async function waitJob(jobid: string, who: Creds = creds): Promise<any> {
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      const r = await call('queryAsyncJobResult', { jobid }, who);
      const j = r.body?.queryasyncjobresultresponse;
      if (!j) throw new Error(`queryAsyncJobResult failed: ${JSON.stringify(r.body)}`);
      if (j.jobstatus !== 0) return j;
      await sleep(pollMs);
    }
    throw new Error(`job ${jobid} did not finish`);
  }

  async function callAndWait(command: string, params: Record<string, string | number | boolean> = {}, who: Creds = creds): Promise<ApiResult> {
    const r = await call(command, params, who);
    const inner = r.body?.[`${command.toLowerCase()}response`];
    if (r.status !== 200 || !inner?.jobid) return r;
    return { status: 200, body: await waitJob(inner.jobid, who) };
  }

  return { call, waitJob, callAndWait };
}

/** `db`: a postgres:// URL to run on PostgreSQL instead of the embedded SQLite store; `args`: more server options. */
export async function startServer(opts: { dataDir?: string; db?: string; args?: string[]; /** a command the server runs under (e.g. prlimit …) */ wrap?: string[] } = {}): Promise<TestServer> {
  const ownDir = !opts.dataDir;
  const dataDir = opts.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-test-'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/client/api`;
  let child: ChildProcess | undefined;
  let out = '';

  async function launch(): Promise<void> {
    // A second process on the same port and data dir would orphan the first (a test's `start` after a
    // kill that never happened because an earlier step failed).
    if (child && child.exitCode === null && child.signalCode === null) throw new Error(`server on port ${port} is still running: kill it before starting it again`);
    out += `--- start ${new Date().toISOString()}\n`;
    const { cmd, args: lead } = palisadeCommand();
    const args = [...lead, 'server', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, ...(opts.db ? ['--db', opts.db] : []), ...(opts.args ?? [])];
    const [command, ...commandArgs] = [...(opts.wrap ?? []), cmd, ...args];
    const c = spawn(command!, commandArgs, {
      cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env },
    });
    trackChild(c);
    child = c;
    c.stdout!.on('data', (d) => { out += d; });
    c.stderr!.on('data', (d) => { out += d; });
    let exited = false;
    c.once('exit', () => { exited = true; });
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (exited) throw new Error(`palisade server exited during start-up:\n${out}`);
      try {
        const r = await fetch(`${url}?command=listZones&response=json`);
        await r.text();
        if (r.headers.get('content-type')?.startsWith('application/json')) break;
      } catch { /* not listening yet */ }
      if (Date.now() > deadline) { c.kill('SIGKILL'); throw new Error(`palisade server did not answer within 30 s:\n${out}`); }
      await sleep(100);
    }
  }

  async function kill(): Promise<void> {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const done = new Promise<void>((r) => c.once('exit', () => r()));
    c.kill('SIGTERM');
    const timer = setTimeout(() => c.kill('SIGKILL'), 10_000);
    await done;
    clearTimeout(timer);
  }

  await launch();
  const creds: Creds = JSON.parse(fs.readFileSync(path.join(dataDir, 'admin-credentials.json'), 'utf8'));

  const { call, waitJob, callAndWait } = apiClient(url, creds);

  return {
    url, port, dataDir, apikey: creds.apikey, secretkey: creds.secretkey,
    call, callAndWait, waitJob,
    async restart() { await kill(); await launch(); },
    async kill(signal: NodeJS.Signals) {
      const c = child;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      const done = new Promise<void>((r) => c.once('exit', () => r()));
      c.kill(signal);
      await done;
    },
    start: () => launch(),
    async stop() {
      await kill();
      // PALISADE_TEST_SERVER_LOG=<file>: keep every server's log for a look after the run.
      if (process.env.PALISADE_TEST_SERVER_LOG) fs.appendFileSync(process.env.PALISADE_TEST_SERVER_LOG, `=== ${url}\n${out}\n`);
      if (ownDir) fs.rmSync(dataDir, { recursive: true, force: true });
      assertNoUnhandledRejection(out);
    },
    output: () => out,
    pid: () => child?.pid ?? 0,
  };
}

/** A server's log must not show its last-resort handler at work (tests that spawn servers call this). */
export function assertNoUnhandledRejection(log: string): void {
  const line = log.split('\n').find((l) => l.includes(UNHANDLED_REJECTION));
  if (line) throw new Error(`the server logged an unhandled promise rejection:\n${line.slice(0, 2000)}`);
}

/**
 * Run the real third-party `cloudstack` client (python3-cs) against the server as its admin, with no
 * config file or region of the machine in the way; its JSON output parsed (null when it printed nothing).
 */
export async function cloudstack(s: Pick<TestServer, 'url' | 'apikey' | 'secretkey'>, ...args: string[]): Promise<RunResult & { out: any }> {
  const env: NodeJS.ProcessEnv = { ...process.env, CLOUDSTACK_ENDPOINT: s.url, CLOUDSTACK_KEY: s.apikey, CLOUDSTACK_SECRET: s.secretkey, CLOUDSTACK_TIMEOUT: '20' };
  delete env.CLOUDSTACK_CONFIG; delete env.CLOUDSTACK_REGION;
  const r = await runProcess('cloudstack', args, { env, timeoutMs: 60_000 });
  let out: any = null;
  if (r.stdout.trim()) {
    try { out = JSON.parse(r.stdout); } catch { throw new Error(`cloudstack ${args[0]} printed no JSON (exit ${r.code}):\n${r.stdout}${r.stderr}`); }
  }
  return { ...r, out };
}
