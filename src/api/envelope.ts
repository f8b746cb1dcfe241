// CloudStack JSON envelopes: {"<command>response": …} for results, errors and async submissions.
import type { CommandResult } from './command.js';

export const responseName = (command: string) => `${command.toLowerCase()}response`;

/** The body inside the envelope for a command's result (also what an async job stores as jobresult). */
export function resultBody(r: CommandResult): Record<string, unknown> {
  if ('object' in r) return { [r.object]: r.value };
  if ('list' in r) {
    const count = r.count ?? r.items.length;
    if (count === 0 && r.items.length === 0) return {};
    return r.items.length ? { count, [r.list]: r.items } : { count };
  }
  if ('success' in r) return r.displaytext !== undefined ? { success: true, displaytext: r.displaytext } : { success: true };
  return r.raw;
}

export function errorBody(code: number, text: string, csCode?: number): Record<string, unknown> {
  const b: Record<string, unknown> = { uuidList: [], errorcode: code };
  if (csCode !== undefined) b.cserrorcode = csCode;
  b.errortext = text;
  return b;
}

export function envelope(command: string | undefined, body: Record<string, unknown>): Record<string, unknown> {
  return { [command ? responseName(command) : 'errorresponse']: body };
}
