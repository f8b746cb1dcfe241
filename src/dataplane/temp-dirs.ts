// Private temporary directories of one process (nft's transaction files, the drop-log reader's ulogd
// configuration and socket), removed by the process when it ends. A process killed by a signal cannot
// remove its own, so each name says whose it was — `<prefix><pid namespace>-<pid>-<random>` — and a
// new one removes those of processes of its own pid namespace that no longer run. (Only its own pid
// namespace: a pid from another one, sharing /tmp, says nothing here. A pid reused by a live process
// keeps a dead one's directory until that process ends too: never the other way round.)
//
// A process killed by SIGKILL also leaves its children running (the drop-log reader, ulogd, re-parented
// to init, still holding its NFLOG group so a new reader cannot bind it): a process whose command line
// names a dead owner's directory is that owner's orphan, and is sent SIGTERM before the directory goes.
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** This process's pid namespace (the inode of /proc/self/ns/pid), or 0 when it cannot be read. */
function pidNamespace(): number {
  try { return Number(/\[(\d+)\]/.exec(readlinkSync('/proc/self/ns/pid'))?.[1] ?? 0); } catch { return 0; }
}

function processGone(pid: number): boolean {
  try { process.kill(pid, 0); return false; } catch (e) { return (e as NodeJS.ErrnoException).code === 'ESRCH'; }
}

/** SIGTERM to the processes of this pid namespace whose command line names `dir` (a dead owner's orphans). */
function stopOrphansOf(dir: string): number[] {
  const stopped: number[] = [];
  let pids: string[];
  try { pids = readdirSync('/proc').filter((e) => /^\d+$/.test(e)); } catch { return stopped; }
  for (const p of pids) {
    const pid = Number(p);
    if (pid === process.pid) continue;
    let cmdline: string;
    try { cmdline = readFileSync(`/proc/${p}/cmdline`, 'utf8'); } catch { continue; }
    if (!cmdline.split('\0').some((arg) => arg === dir || arg.startsWith(`${dir}/`))) continue;
    try { process.kill(pid, 'SIGTERM'); stopped.push(pid); } catch { /* gone meanwhile */ }
  }
  return stopped;
}

/** A new private directory (mode 0700) named after this process. */
export function privateTempDir(prefix: string, parent = tmpdir()): string {
  sweepDeadDirs(prefix, parent);
  return mkdtempSync(join(parent, `${prefix}${pidNamespace()}-${process.pid}-`));
}

/** Remove the directories (named as above) of processes of this pid namespace that are gone. */
export function sweepDeadDirs(prefix: string, parent = tmpdir()): string[] {
  const ns = pidNamespace();
  const removed: string[] = [];
  if (!ns) return removed;
  let names: string[];
  try { names = readdirSync(parent); } catch { return removed; }
  const own = new RegExp(`^${prefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(\\d+)-(\\d+)-[A-Za-z0-9]+$`);
  for (const name of names) {
    const m = own.exec(name);
    if (!m || Number(m[1]) !== ns) continue;
    const pid = Number(m[2]);
    if (pid === process.pid || !processGone(pid)) continue;
    stopOrphansOf(join(parent, name));
    try {
      rmSync(join(parent, name), { recursive: true, force: true });
      removed.push(join(parent, name));
    } catch { /* not ours to remove after all */ }
  }
  return removed;
}
