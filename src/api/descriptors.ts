// The process's open-file limit against what the server's own bounds let others hold open. Every
// connection is a descriptor: connections without a request (--idle-connections-max), agent connections
// awaiting a hello (--pending-agents-max) and one session per registered host may all be open at once.
// Past the limit accept() fails (EMFILE) for everyone — API clients, agents and the store's pool alike —
// so the bounds protect nothing unless the limit leaves room for them. Node raises its soft limit to the
// hard one at start; what is read here is what the process really has. A shortfall is logged at start,
// never refused: a small cloud runs well under a small limit.
import fs from 'node:fs';

/** Descriptors beyond connections: the store's pool, the listening socket, log and data files, stdio. */
export const DESCRIPTOR_HEADROOM = 1024;

/** The soft "Max open files" of /proc/<pid>/limits text; null when absent or unlimited. */
export function openFilesLimit(limitsText: string): number | null {
  const line = limitsText.split('\n').find((l) => l.startsWith('Max open files'));
  const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
  return soft !== undefined && /^\d+$/.test(soft) ? Number(soft) : null;
}

export interface DescriptorNeed { idleConnectionsMax: number; pendingAgentsMax: number; hosts: number }

/** Descriptors the bounds may take at once, with the headroom. */
export const descriptorsNeeded = (n: DescriptorNeed) => n.idleConnectionsMax + n.pendingAgentsMax + n.hosts + DESCRIPTOR_HEADROOM;

/** This process's limit (null: unknown, or not Linux). */
export function ownOpenFilesLimit(): number | null {
  try { return openFilesLimit(fs.readFileSync('/proc/self/limits', 'utf8')); } catch { return null; }
}
