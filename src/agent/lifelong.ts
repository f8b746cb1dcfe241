// The agent's long-running children (the link watcher `ip monitor link`, the drop-log reader ulogd)
// must end with the agent. A stopping agent ends them itself; one that is SIGKILLed (or crashes)
// cannot, and its children lived on: `ip monitor` forever, ulogd holding the NFLOG group so the next
// agent's reader failed to start. So they are started through util-linux's `setpriv --pdeathsig`,
// which has the kernel signal the child when the agent dies. Where setpriv is missing they are
// started directly (the temp-dir sweep still stops a dead agent's ulogd at the next start).
import { existsSync, readFileSync } from 'node:fs';

const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p)) ?? null;

/** [command, args] that run `cmd args` and end it with SIGTERM when this process dies. */
export function endsWithAgent(cmd: string, args: string[]): [string, string[]] {
  return SETPRIV ? [SETPRIV, ['--pdeathsig', 'TERM', '--', cmd, ...args]] : [cmd, args];
}

/** Whether `pid` is this process or a child of it (from /proc; a process already gone is not). */
export function isOwnProcess(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) state ppid …": comm may hold spaces and parentheses, so read after the last ')'
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return ppid === process.pid;
  } catch {
    return false;
  }
}
