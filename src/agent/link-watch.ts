// Watching the host's kernel for what the agent must act on at once rather than at the next reconcile:
// - links: a VM's tap appears when its hypervisor starts it, usually just after the orchestrator placed
//   the VM here, so its rules wait for the port. `ip monitor link` prints a line for every link change.
// - Palisade's own nftables tables: another program's `nft flush ruleset` (what Debian's
//   nftables.service does on every reload) or an edit inside them leaves VMs unfiltered until the
//   repair. `nft monitor ruleset` prints a line for every ruleset change; lines naming a `palisade`
//   table wake the agent's drift check, so the window is milliseconds rather than up to a reconcile
//   interval. Other tables' changes (Docker, kube-proxy) are not ours and wake nothing.
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
  /** Lines that count (default: every line). */
  counts?: (line: string) => boolean;
  /** What the log calls it when it ends. */
  what: string;
}

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
      partial = lines.pop()!.slice(-4096);
      if (lines.some(o.counts)) changed();
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

/** A line of `nft monitor ruleset` about one of Palisade's tables (`… bridge palisade …`, `… inet palisade …`). */
export const namesOurTable = (line: string) => /\b(?:bridge|inet) palisade\b/.test(line);

export function watchRuleset(o: LinkWatchOptions): LinkWatch {
  const nft = o.command ?? 'nft';
  const argv: [string, string[]] = o.netns ? ['ip', ['netns', 'exec', o.netns, nft, 'monitor', 'ruleset']] : [nft, ['monitor', 'ruleset']];
  return watchLines({ ...o, settleMs: o.settleMs ?? 50, argv, counts: namesOurTable, what: 'ruleset watcher (nft monitor ruleset)' });
}
