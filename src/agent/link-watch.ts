// Watching the host's network devices: a VM's tap appears when its hypervisor starts it, usually just
// after the orchestrator placed the VM here, so its rules wait for the port. `ip monitor link` (in the
// agent's namespace) prints a line for every link change; each burst of lines, after a short quiet
// spell, tells the agent to look at its ports again, so a VM's rules are in within milliseconds of its
// tap rather than at the next reconcile pass. If `ip` ends, it is started again after a growing pause;
// the periodic reconcile still finds new ports when no watcher runs.
import { spawn, type ChildProcess } from 'node:child_process';
import type { Logger } from 'pino';
import { endsWithAgent } from './lifelong.js';

export interface LinkWatch { stop(): void }

export interface LinkWatchOptions {
  /** The namespace to watch (null: the agent's own). */
  netns: string | null;
  log: Logger;
  /** Called after link changes settle (at most once per `settleMs`). */
  onChange: () => void;
  /** Quiet time after a change before onChange (coalesces a device's several events). Default 30 ms. */
  settleMs?: number;
  /** The command (tests); default `ip`. */
  command?: string;
}

const RESTART_MIN_MS = 1000;
const RESTART_MAX_MS = 30_000;

export function watchLinks(o: LinkWatchOptions): LinkWatch {
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
    const args = [...(o.netns ? ['-n', o.netns] : []), '-o', 'monitor', 'link'];
    const c = spawn(...endsWithAgent(o.command ?? 'ip', args), { stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    const startedAt = Date.now();
    let err = '';
    c.stdout!.on('data', () => { changed(); });
    c.stderr!.on('data', (d) => { if (err.length < 2000) err += String(d); });
    c.on('error', (e) => { err += e.message; });
    c.on('close', (code) => {
      if (child === c) child = null;
      if (stopped) return;
      // a watcher that ran for a while was fine: start again quickly; one failing at once backs off
      pause = Date.now() - startedAt > RESTART_MAX_MS ? RESTART_MIN_MS : Math.min(RESTART_MAX_MS, pause * 2);
      o.log.warn({ code, err: err.trim().slice(0, 500), retryMs: pause }, 'agent: the link watcher (ip monitor link) ended; new VM ports are found by the reconcile pass until it is back');
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
