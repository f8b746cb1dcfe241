// The desired state the agent holds, on disk: what it re-applies at start before the server answers
// (fail static). Written atomically: temp file + fsync + rename + fsync of the directory.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { HostDesiredState } from '../policy/ir.js';

const FILE = 'desired-state.json';

export interface HeldState { serverUrl: string; state: HostDesiredState; savedAt: string }

export async function saveState(dir: string, held: HeldState): Promise<void> {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const target = path.join(dir, FILE);
  const tmp = `${target}.tmp-${process.pid}`;
  const fh = await fs.open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(JSON.stringify(held));
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.rename(tmp, target);
  const d = await fs.open(dir, 'r');
  try { await d.sync(); } finally { await d.close(); }
}

/** The saved state, or null when there is none; a corrupt file is an error (never silently empty). */
export async function loadState(dir: string): Promise<HeldState | null> {
  let text: string;
  try { text = await fs.readFile(path.join(dir, FILE), 'utf8'); } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  const held = JSON.parse(text) as HeldState;
  if (!held?.state || typeof held.state.revision !== 'number' || !Array.isArray(held.state.vms) || !Array.isArray(held.state.sets)) {
    throw new Error(`${path.join(dir, FILE)}: not a saved desired state`);
  }
  return held;
}
