// The desired state the agent holds, on disk: what it re-applies at start before the server answers
// (fail static). Written atomically: temp file + fsync + rename + fsync of the directory.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { HostDesiredState } from '../policy/ir.js';
import { hostDesiredStateSchema } from '../protocol/index.js';

const FILE = 'desired-state.json';

export interface HeldState { serverUrl: string; state: HostDesiredState; savedAt: string }

export async function saveState(dir: string, held: HeldState): Promise<void> {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const target = path.join(dir, FILE);
  const tmp = `${target}.tmp-${process.pid}`;
  try {
    const fh = await fs.open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(JSON.stringify(held));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, target);
  } catch (e) {
    await fs.rm(tmp, { force: true }).catch(() => {});   // a full disk leaves no half-written file behind
    throw e;
  }
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
  let held: HeldState;
  try { held = JSON.parse(text) as HeldState; } catch { throw new Error(`${path.join(dir, FILE)}: not JSON`); }
  const state = hostDesiredStateSchema.safeParse(held?.state);
  if (!state.success) {
    const issue = state.error.issues[0];
    throw new Error(`${path.join(dir, FILE)}: not a saved desired state (${issue?.path.join('.') || 'state'}: ${issue?.message ?? 'invalid'})`);
  }
  return { serverUrl: String(held.serverUrl ?? ''), state: state.data, savedAt: String(held.savedAt ?? '') };
}
