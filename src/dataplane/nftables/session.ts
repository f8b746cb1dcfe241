// Running `nft` scripts as transactions. Starting `nft` (and `ip netns exec`) costs more than a small
// change itself, so scripts go through one long-lived `nft -i` per namespace. Each transaction is
// written to a private file and the session is sent one short line, `include "<file>"`: nft runs each
// input line as one batch (all of it or nothing), included files too. Not the script itself on the
// line: nft's interactive line editor reads its input one byte per read(2), which cost a one-rule
// change of a VM (~4 KB of script) more than the kernel's whole transaction (a script of a few
// hundred bytes, a set element or two, still goes inline: cheaper than a file). Each line is followed by
// a marker command that fails with a known message, so the end of every transaction is seen on
// stderr, with the transaction's own error, if any, before it. Scripts larger than `inlineMax` run as
// one-shot `nft -f -` processes, and the session is restarted after a bounded amount of input: nft
// keeps its interactive history in memory.
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DataplaneError } from '../backend.js';
import { type Runner, must } from '../exec.js';
import { privateTempDir } from '../temp-dirs.js';

export interface NftSessionOptions {
  /** Scripts larger than this run as one-shot `nft -f -` (default 4 MiB). */
  inlineMax?: number;
  /** Send scripts inline on the session's input rather than through an included file (slow for long
   *  scripts; used when no private file can be made). */
  inline?: boolean;
  /** The session ends after this long without work (default 5 s); the next script starts a new one. */
  idleMs?: number;
  /** A transaction taking longer is an error (the session is killed; default 60 s). */
  timeoutMs?: number;
}

const MARKER_TABLE = '__palisade_sync';
/** Scripts up to this long go inline (cheaper than a file for a set element or two). */
const INLINE_BYTES = 256;
/** Restart the interactive process after this much input (bounded history). */
const MAX_SESSION_BYTES = 8 * 1024 * 1024;

/** A script's commands on one line (nft separates commands by `;`; our scripts hold no `;` in strings). */
export function oneLine(script: string): string {
  return script.split('\n').map((l) => l.trim()).filter(Boolean).join('; ');
}

// One private directory per process for the sessions' transaction files (temp-dirs.ts: named after
// the process, removed at exit, and by the next process if this one is killed).
let txDir: string | null | undefined;
let sessions = 0;

function transactionDir(): string | null {
  if (txDir !== undefined) return txDir;
  try {
    const dir = privateTempDir('palisade-nft-'); // mode 0700: only root reads it
    // nft's include takes a quoted path and expands glob characters: only plain paths
    txDir = /^[A-Za-z0-9_./-]+$/.test(dir) ? dir : null;
    if (!txDir) rmSync(dir, { recursive: true, force: true });
    else process.once('exit', () => { try { rmSync(dir, { recursive: true, force: true }); } catch { /* gone */ } });
  } catch {
    txDir = null;
  }
  return txDir;
}

export class NftSession {
  private child: ChildProcess | null = null;
  private err = '';
  private wake: (() => void) | null = null;
  private seq = 0;
  private bytes = 0;
  private idle: NodeJS.Timeout | null = null;
  private chain: Promise<unknown> = Promise.resolve();
  private readonly inlineMax: number;
  private readonly idleMs: number;
  private readonly timeoutMs: number;
  /** Prefix of this session's transaction files (one file per transaction), or null: inline. */
  private readonly file: string | null;

  constructor(private readonly runner: Runner, opts: NftSessionOptions = {}) {
    const dir = opts.inline ? null : transactionDir();
    this.file = dir ? join(dir, `s${++sessions}-`) : null;
    this.inlineMax = opts.inlineMax ?? (this.file ? 4 * 1024 * 1024 : 16 * 1024);
    this.idleMs = opts.idleMs ?? 5000;
    this.timeoutMs = opts.timeoutMs ?? 60_000;
  }

  /** Run `script` as one transaction; rejects with a DataplaneError (nothing applied) on failure. */
  run(step: string, script: string): Promise<void> {
    const job = this.chain.then(() => this.runNow(step, script));
    this.chain = job.catch(() => undefined);
    return job;
  }

  private async runNow(step: string, script: string): Promise<void> {
    if (!script.trim()) return;
    if (script.length > this.inlineMax) {
      await must(this.runner, step, 'nft', ['-f', '-'], script);
      return;
    }
    const tag = `${MARKER_TABLE}${++this.seq}`;
    // a new file per transaction: an nft that timed out may still be reading the last one
    let file = this.file && script.length > INLINE_BYTES ? `${this.file}${this.seq}.nft` : null;
    // a directory removed under us (by hand, or a sweeper that took this process for gone): inline
    if (file) try { writeFileSync(file, script, { mode: 0o600 }); } catch { file = null; }
    try {
      await this.send(step, tag, file ? `include "${file}"` : oneLine(script));
    } finally {
      if (file) rmSync(file, { force: true });
    }
  }

  private async send(step: string, tag: string, line: string): Promise<void> {
    if (this.child && this.bytes + line.length > MAX_SESSION_BYTES) this.stop();
    const child = this.child ?? this.start();
    if (this.idle) { clearTimeout(this.idle); this.idle = null; }
    this.bytes += line.length;
    child.stdin!.write(`${line}\nlist table inet ${tag}\n`);
    const deadline = Date.now() + this.timeoutMs;
    while (!this.err.includes(`${tag}\n`)) {
      if (!this.child || this.child !== child) throw new DataplaneError(step, `nft session ended: ${this.err.trim() || 'no output'}`);
      if (Date.now() > deadline) { this.stop(); throw new DataplaneError(step, `nft: no answer after ${this.timeoutMs} ms`); }
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        // a referenced timer: the process waits for the answer (the child and its pipes are unref'd)
        setTimeout(resolve, 100);
      });
    }
    // stderr: [the transaction's error…] "Error: … No such file or directory\nlist table inet <tag>\n  ^^^\n"
    const at = this.err.indexOf(`list table inet ${tag}\n`);
    // (the marker's caret line may arrive after its answer was taken: drop it from the head)
    const before = this.err.slice(0, at).replace(/^(\s*\^+\s*\n)+/, '').replace(/Error:[^\n]*\n$/, '')
      .replace(/^In file included from <cmdline>[^\n]*\n/gm, '');
    const rest = this.err.slice(at + `list table inet ${tag}\n`.length);
    this.err = rest.replace(/^[ \t]*\^+[ \t]*\n?/, '');
    this.idle = setTimeout(() => this.stop(), this.idleMs);
    this.idle.unref();
    if (before.trim()) throw new DataplaneError(step, before.trim());
  }

  private start(): ChildProcess {
    const [cmd, args] = this.runner.netns ? ['ip', ['netns', 'exec', this.runner.netns, 'nft', '-i']] : ['nft', ['-i']];
    // HOME elsewhere: nft's interactive history file must not grow in root's home.
    const child = spawn(cmd, args, { stdio: ['pipe', 'ignore', 'pipe'], env: { ...process.env, HOME: '/nonexistent' } });
    this.child = child;
    this.err = '';
    this.bytes = 0;
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => { this.err += d; this.wake?.(); });
    child.stdin!.on('error', () => { /* the process ended; noticed by the waiter */ });
    child.on('exit', () => { if (this.child === child) this.child = null; this.wake?.(); });
    child.on('error', (e) => { this.err += `nft: ${e.message}\n`; if (this.child === child) this.child = null; this.wake?.(); });
    // never keeps the agent or a test process alive
    child.unref();
    (child.stdin as unknown as { unref?: () => void }).unref?.();
    (child.stderr as unknown as { unref?: () => void }).unref?.();
    return child;
  }

  /** End the interactive process (it is started again when needed). */
  stop(): void {
    if (this.idle) { clearTimeout(this.idle); this.idle = null; }
    const c = this.child;
    this.child = null;
    if (c) { c.stdin?.end(); setTimeout(() => c.kill('SIGKILL'), 1000).unref(); }
  }
}
