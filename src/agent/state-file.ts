// The desired state the agent holds, on disk: what it re-applies at start before the server answers
// (fail static), and which host it was written for. Written atomically: temp file + fsync + rename +
// fsync of the directory.
//
// At start the agent does not know its host id yet (the server says it in the welcome), so the file
// names the agent identity it was written under — the hostname and the SHA-256 of the token, which is
// what the server knows a host by — and is applied only by an agent with that identity: a cloned
// hypervisor (another hostname, its own token) must not enforce its original's VMs.
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { HostDesiredState } from '../policy/ir.js';
import { hostDesiredStateSchema } from '../protocol/index.js';

const FILE = 'desired-state.json';

/** Who the state was written for: the agent's hostname and its token's SHA-256 (hex). */
export interface HeldFor { hostname: string; tokenSha256: string }
export interface HeldState { serverUrl: string; state: HostDesiredState; savedAt: string; host?: HeldFor }

export const tokenSha256 = (token: string) => createHash('sha256').update(token).digest('hex');

/**
 * Why `held` may not be applied by an agent with this hostname and token (null: it may). A file
 * without the identity was written by an agent from before it was recorded: applied, as that agent
 * would have (an upgrade must not close every VM port until the server answers); the next save names it.
 */
export function notOurs(held: HeldState, hostname: string, token: string): string | null {
  if (!held.host) return null;
  if (held.host.tokenSha256 !== tokenSha256(token)) return `it was written under another token (host ${held.state.hostId || '?'}, hostname ${held.host.hostname})`;
  if (held.host.hostname !== hostname) return `it was written for hostname ${held.host.hostname}, this agent is ${hostname}`;
  return null;
}

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
  const h = held.host as Partial<HeldFor> | undefined;
  const host = h && typeof h.hostname === 'string' && typeof h.tokenSha256 === 'string' ? { hostname: h.hostname, tokenSha256: h.tokenSha256 } : undefined;
  return { serverUrl: String(held.serverUrl ?? ''), state: state.data, savedAt: String(held.savedAt ?? ''), ...(host ? { host } : {}) };
}
