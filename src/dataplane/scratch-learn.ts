// What both backends' canon.ts share in learning the kernel's form of Palisade's rules: running the
// tools in a throwaway network namespace (`unshare --net`: its own empty ruleset, never the host's),
// and how much of a host's program one drift check may learn (a big host's first checks learn it over
// several passes, so a check never holds the dataplane, and the applies queued behind it, for long).
import { DataplaneError } from './backend.js';
import type { Runner } from './exec.js';

/** Rules learned at most per check (~the whole of a 200-VM host; a 2,000-VM host takes ~10 checks). */
export const LEARN_RULES = 5_000;

/** The first items whose weights sum to at most `budget` (at least one). */
export function withinBudget<T>(items: T[], weight: (t: T) => number, budget = LEARN_RULES): T[] {
  let used = 0;
  const out: T[] = [];
  for (const t of items) {
    if (out.length && used + weight(t) > budget) break;
    used += weight(t);
    out.push(t);
  }
  return out;
}

/** `command` fed `text` on stdin, as a line of the scratch script (a quoted heredoc: nothing in it is expanded). */
export const fed = (command: string, text: string) => `${command} <<'PALISADE_EOF'\n${text}\nPALISADE_EOF`;

/**
 * Run `script` (lines from `fed` and plain commands) in a throwaway network namespace, stopping at the
 * first failing command; its stdout. The script reaches sh on stdin (no argument-size limit).
 */
export async function inScratchNamespace(runner: Runner, tool: string, script: string): Promise<string> {
  const r = await runner.run('unshare', ['--net', 'sh', '-es'], script);
  if (r.code !== 0) throw new DataplaneError(`${tool} (learning rule forms in a scratch namespace)`, r.stderr || `exit ${r.code}`);
  return r.stdout;
}
