// Watching the host's kernel for what the agent must act on at once rather than at the next reconcile:
// - links: a VM's tap appears when its hypervisor starts it, usually just after the orchestrator placed
//   the VM here, so its rules wait for the port. `ip monitor link` prints a line for every link change.
// - Palisade's own nftables tables: another program's `nft flush ruleset` (what Debian's
//   nftables.service does on every reload) or an edit inside them leaves VMs unfiltered until the
//   repair. `nft monitor` prints a line for every ruleset change, then `# new generation N by process
//   PID (…)` once per transaction; a transaction that touched a `palisade` table and was not written by
//   a process of the agent's own wakes the agent's drift check, so the window is milliseconds rather
//   than up to a reconcile interval. The agent's own writes are told by the writer's pid, not by timing
//   (a big write's events trail it by most of a second). Other tables' changes (Docker, kube-proxy)
//   wake nothing.
// Each burst of lines, after a short quiet spell, calls back once. A watcher that ends is started again
// after a growing pause; the periodic reconcile still finds everything when no watcher runs. Both run
// in the agent's namespace and end with the agent (lifelong.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import type { Logger } from 'pino';
import { endsWithAgent } from './lifelong.js';

export interface LinkWatch { stop(): void }

export interface LinkWatchOptions {
  /** The namespace to watch (null: the agent's own). */
  netns: string | null;
  log: Logger;
  /** Called after changes settle (at most once per `settleMs`). */
  onChange: () => void;
  /** Quiet time after a change before onChange (coalesces a device's several events). Default 30 ms. */
  settleMs?: number;
  /** The command (tests); default `ip` (links) or `nft` (ruleset). */
  command?: string;
}

const RESTART_MIN_MS = 1000;
const RESTART_MAX_MS = 30_000;

interface LineWatchOptions extends LinkWatchOptions {
  argv: [string, string[]];
  /** Whether the lines so far say something changed (default: any line does); called per line. */
  counts?: (line: string) => boolean;
  /** What the log calls it when it ends. */
  what: string;
}

/** The longest line kept whole; the rest of a longer one is dropped (its start names what it is about). */
const LINE_MAX = 4096;

function watchLines(o: LineWatchOptions): LinkWatch {
  const settleMs = o.settleMs ?? 30;
  let child: ChildProcess | null = null;
  let stopped = false;
  let settle: NodeJS.Timeout | null = null;
  let restart: NodeJS.Timeout | null = null;
  let pause = RESTART_MIN_MS;

  const changed = () => {
    if (settle || stopped) return;
    settle = setTimeout(() => { settle = null; if (!stopped) o.onChange(); }, settleMs);
  };

  const start = () => {
    restart = null;
    if (stopped) return;
    const c = spawn(...endsWithAgent(...o.argv), { stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    const startedAt = Date.now();
    let err = '';
    let partial = '';
    c.stdout!.on('data', (d: Buffer) => {
      if (!o.counts) { changed(); return; }
      const lines = (partial + d.toString('utf8')).split('\n');
      partial = lines.pop()!.slice(0, LINE_MAX);
      let any = false;
      for (const line of lines) if (o.counts(line.slice(0, LINE_MAX))) any = true;
      if (any) changed();
    });
    c.stderr!.on('data', (d) => { if (err.length < 2000) err += String(d); });
    c.on('error', (e) => { err += e.message; });
    c.on('close', (code) => {
      if (child === c) child = null;
      if (stopped) return;
      // a watcher that ran for a while was fine: start again quickly; one failing at once backs off
      pause = Date.now() - startedAt > RESTART_MAX_MS ? RESTART_MIN_MS : Math.min(RESTART_MAX_MS, pause * 2);
      o.log.warn({ code, err: err.trim().slice(0, 500), retryMs: pause }, `agent: the ${o.what} ended; the reconcile pass covers for it until it is back`);
      changed(); // what happened while it was down
      restart = setTimeout(start, pause);
    });
  };
  start();
  return {
    stop() {
      stopped = true;
      for (const t of [settle, restart]) if (t) clearTimeout(t);
      child?.kill();
      child = null;
    },
  };
}

export function watchLinks(o: LinkWatchOptions): LinkWatch {
  const args = [...(o.netns ? ['-n', o.netns] : []), '-o', 'monitor', 'link'];
  return watchLines({ ...o, argv: [o.command ?? 'ip', args], what: 'link watcher (ip monitor link)' });
}

/** A line of `nft monitor` about one of Palisade's tables (`… bridge palisade …`, `… inet palisade …`). */
export const namesOurTable = (line: string) => /\b(?:bridge|inet) palisade\b/.test(line);

export interface RulesetWatchOptions extends LinkWatchOptions {
  /** Whether a writer's pid is one of the agent's own processes. */
  ours: (pid: number) => boolean;
}

/**
 * Reads `nft monitor`'s lines transaction by transaction: true at the end of one (its generation line)
 * that touched Palisade's tables and was written by someone else (a writer already gone counts as
 * someone else: at worst one needless check).
 */
export function foreignTransactions(ours: (pid: number) => boolean): (line: string) => boolean {
  let touched = false;
  return (line: string) => {
    const end = /^# new generation \d+ by process (\d+)/.exec(line);
    if (end) {
      const foreign = touched && !ours(Number(end[1]));
      touched = false;
      return foreign;
    }
    if (namesOurTable(line)) touched = true;
    return false;
  };
}

export function watchRuleset(o: RulesetWatchOptions): LinkWatch {
  const nft = o.command ?? 'nft';
  const argv: [string, string[]] = o.netns ? ['ip', ['netns', 'exec', o.netns, nft, 'monitor']] : [nft, ['monitor']];
  return watchLines({ ...o, settleMs: o.settleMs ?? 50, argv, counts: foreignTransactions(o.ours), what: 'ruleset watcher (nft monitor)' });
}
