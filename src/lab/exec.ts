// Running tools, optionally inside a network namespace, always with a time bound.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export interface RunResult { code: number; stdout: string; stderr: string; timedOut: boolean }

export interface RunOptions {
  stdin?: string;
  /** Kill the process after this long (default 10 s). */
  timeoutMs?: number;
  /** Do not throw on a non-zero exit / timeout; return the result instead. */
  allowFail?: boolean;
}

/** A tool failed: names the command line and carries its stderr. */
export class LabError extends Error {
  constructor(public readonly command: string, public readonly result: RunResult) {
    super(`${command} failed (${result.timedOut ? 'timed out' : `exit ${result.code}`}): ${result.stderr.trim() || result.stdout.trim()}`);
    this.name = 'LabError';
  }
}

/** The system Python (the one with python3-scapy); a pyenv shim on PATH may lack it. */
export const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

/** Prefix argv so it runs inside `netns` (or as is when netns is null). */
export function inNs(netns: string | null, cmd: string, args: string[]): [string, string[]] {
  return netns ? ['ip', ['netns', 'exec', netns, cmd, ...args]] : [cmd, args];
}

export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    child.stdin.on('error', () => { /* the tool may exit before reading stdin */ });
    child.on('error', (err) => { clearTimeout(timer); reject(err); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const res: RunResult = { code: code ?? (signal ? 128 : 1), stdout, stderr, timedOut };
      if ((res.code !== 0 || timedOut) && !opts.allowFail) reject(new LabError([cmd, ...args].join(' '), res));
      else resolve(res);
    });
    child.stdin.end(opts.stdin ?? '');
  });
}

export function runIn(netns: string | null, cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const [c, a] = inNs(netns, cmd, args);
  return run(c, a, opts);
}

/** A shell script run inside a namespace (one process for many small steps). */
export function shIn(netns: string | null, script: string, opts: RunOptions = {}): Promise<RunResult> {
  return runIn(netns, 'sh', ['-ec', script], opts);
}

/** A long-running process in a namespace (listener, capture, service). */
export interface Background {
  readonly child: ChildProcess;
  /** Collected stdout so far. */
  output(): string;
  /** Resolves when a stdout/stderr line matches `re` (rejects on exit or after timeoutMs). */
  waitFor(re: RegExp, timeoutMs?: number): Promise<string>;
  /** SIGTERM, then SIGKILL after graceMs; resolves when the process is gone. */
  stop(graceMs?: number): Promise<void>;
  readonly exited: Promise<number>;
}

export function spawnIn(netns: string | null, cmd: string, args: string[]): Background {
  const [c, a] = inNs(netns, cmd, args);
  const child = spawn(c, a, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const waiters: { re: RegExp; resolve: (s: string) => void }[] = [];
  const check = () => {
    for (let i = waiters.length - 1; i >= 0; i--) {
      const w = waiters[i];
      const m = (out + '\n' + err).split('\n').find((l) => w.re.test(l));
      if (m !== undefined) { waiters.splice(i, 1); w.resolve(m); }
    }
  };
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; check(); });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; check(); });
  const exited = new Promise<number>((resolve) => {
    child.on('error', () => resolve(127));
    child.on('close', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
  let alive = true;
  void exited.then(() => { alive = false; });
  return {
    child,
    exited,
    output: () => out,
    waitFor(re, timeoutMs = 5000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${c} ${a.join(' ')}: no line matching ${re} within ${timeoutMs} ms; stderr: ${err.trim()}`)), timeoutMs);
        const w = { re, resolve: (s: string) => { clearTimeout(timer); resolve(s); } };
        waiters.push(w);
        check();
        void exited.then((code) => {
          if (waiters.includes(w)) {
            clearTimeout(timer);
            reject(new Error(`${c} ${a.join(' ')} exited (${code}) before ${re}: ${err.trim()}`));
          }
        });
      });
    },
    async stop(graceMs = 1000) {
      if (!alive) { await exited; return; }
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(t);
    },
  };
}

/** Locate a helper script shipped beside the lab sources (works from src/ via tsx and from dist/). */
export function scriptPath(name: string): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const p of [path.join(here, 'py', name), path.join(here, '..', '..', 'src', 'lab', 'py', name)]) {
    if (existsSync(p)) return p;
  }
  throw new Error(`lab helper script ${name} not found`);
}
