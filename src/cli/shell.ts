// The interactive shell (prompt, history file, tab completion) and the non-interactive variant that runs
// commands read from stdin, one per line, stopping at the first failing one.
import { appendFileSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { createInterface } from 'node:readline';
import { splitLine } from './args.js';
import { complete } from './completion.js';
import { historyPath } from './config.js';
import { runWords, Session, VERSION } from './run.js';

const HISTORY_MAX = 1000;

/** Lines to skip: blank and `#` comments (so scripts can be annotated). */
const isSkippable = (line: string) => line.trim() === '' || line.trim().startsWith('#');

/** Run one shell line. Returns the exit status, or null for `exit`/`quit`. */
async function runLine(s: Session, line: string): Promise<number | null> {
  let words: string[];
  try {
    words = splitLine(line);
  } catch (e) {
    s.err.write(`Error: ${(e as Error).message}\n`);
    return 2;
  }
  // a line pasted with the program name in front (as documents print it) means the same command
  if (words[0] === 'palisade' && words.length > 1) words = words.slice(1);
  const w0 = words[0]?.toLowerCase();
  if (w0 === 'exit' || w0 === 'quit') return null;
  return runWords(s, words);
}

/** Commands from a stream (stdin not a terminal): one per line, stop at the first error. */
export async function runScript(input: NodeJS.ReadableStream, s = new Session()): Promise<number> {
  const rl = createInterface({ input, terminal: false, crlfDelay: Infinity });
  for await (const line of rl) {
    if (isSkippable(line)) continue;
    const code = await runLine(s, line);
    if (code === null) break;
    if (code !== 0) { rl.close(); return code; }
  }
  return 0;
}

function loadHistory(file: string): string[] {
  try {
    // readline wants newest first
    return readFileSync(file, 'utf8').split('\n').filter(Boolean).slice(-HISTORY_MAX).reverse();
  } catch {
    return [];
  }
}

export function prompt(profile: string): string {
  return `(${profile}) 🐵 > `;
}

export async function interactiveShell(s = new Session(undefined, process.stdout, process.stderr, true)): Promise<number> {
  const histFile = historyPath(s.path);
  const rl = createInterface({
    input: process.stdin,
    output: process.stdout,
    terminal: true,
    history: loadHistory(histFile),
    historySize: HISTORY_MAX,
    removeHistoryDuplicates: true,
    completer: (line: string): [string[], string] => {
      const ctx = { cat: s.cachedCatalogue(), profiles: Object.keys(s.cfg.profiles), interactive: true };
      const r = complete(ctx, line);
      return [r.candidates, r.partial];
    },
  });
  process.stdout.write(`palisade ${VERSION} — CloudStack API shell. "help" for usage, "sync" to refresh the API cache, tab to complete, "exit" to leave.\n`);
  // fill the completion cache in the background if there is none yet
  if (s.cachedCatalogue().byName.size === 0) s.catalogue().catch(() => {});
  rl.setPrompt(prompt(s.cfg.core.profile));
  rl.prompt();
  rl.on('SIGINT', () => {
    rl.write(null, { ctrl: true, name: 'u' });   // clear the line, like a shell
    process.stdout.write('^C\n');
    rl.prompt();
  });
  for await (const line of rl) {
    if (!isSkippable(line)) {
      try {
        mkdirSync(dirname(histFile), { recursive: true, mode: 0o700 });
        appendFileSync(histFile, line.replace(/\n/g, ' ') + '\n', { mode: 0o600 });
      } catch { /* history is best effort */ }
      const code = await runLine(s, line);
      if (code === null) break;
    }
    rl.setPrompt(prompt(s.cfg.core.profile));
    rl.prompt();
  }
  rl.close();
  return 0;
}
