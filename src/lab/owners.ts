// Who owns a lab prefix, so labs left behind by a killed process can be found and removed
// (`palisade lab clean --stale`). One small JSON file per prefix under /run (tmpfs: gone on reboot,
// like the namespaces themselves).
import fs from 'node:fs';
import path from 'node:path';

export const OWNERS_DIR = process.env.PALISADE_LAB_RUN_DIR || '/run/palisade-lab';

export interface Owner {
  prefix: string;
  /** The creating process and its start time (pids are recycled; start times are not). */
  pid: number;
  startTime: string | null;
  /** Set for a `palisade lab up` stack: alive while its state file names this prefix. */
  stateDir?: string;
}

function startTimeOf(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch { return null; }
}

export function recordOwner(prefix: string, extra: { stateDir?: string } = {}): void {
  try {
    fs.mkdirSync(OWNERS_DIR, { recursive: true, mode: 0o700 });
    const o: Owner = { prefix, pid: process.pid, startTime: startTimeOf(process.pid), ...extra };
    fs.writeFileSync(path.join(OWNERS_DIR, `${prefix}.json`), JSON.stringify(o) + '\n');
  } catch { /* best effort: cleanup by prefix still works */ }
}

export function forgetOwner(prefix: string): void {
  try { fs.rmSync(path.join(OWNERS_DIR, `${prefix}.json`), { force: true }); } catch { /* absent */ }
}

export function listOwners(): Owner[] {
  let names: string[] = [];
  try { names = fs.readdirSync(OWNERS_DIR).filter((n) => n.endsWith('.json')); } catch { return []; }
  const out: Owner[] = [];
  for (const n of names) {
    try { out.push(JSON.parse(fs.readFileSync(path.join(OWNERS_DIR, n), 'utf8')) as Owner); } catch { /* torn file: skip */ }
  }
  return out;
}

/** A lab is stale when its stack state no longer names it, or (library labs) its creating process is gone. */
export function isStale(o: Owner): boolean {
  if (o.stateDir) {
    try {
      const s = JSON.parse(fs.readFileSync(path.join(o.stateDir, 'lab.json'), 'utf8')) as { prefix?: string };
      return s.prefix !== o.prefix;
    } catch { return true; }
  }
  const st = startTimeOf(o.pid);
  return st === null || (o.startTime !== null && st !== o.startTime);
}
