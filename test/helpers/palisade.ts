// How tests start the real `palisade` executable.
// With PALISADE_TEST_DIST=1 (set by `npm test`, which builds first) they run the compiled dist/main.js:
// a start costs a fraction of going through tsx. Otherwise src/main.ts runs through tsx, so a test run
// right after an edit needs no build.
import fs from 'node:fs';
import path from 'node:path';
import { REPO, runProcess, type RunOptions, type RunResult } from './process.js';

const DIST_MAIN = path.join(REPO, 'dist', 'main.js');
const SRC_MAIN = path.join(REPO, 'src', 'main.ts');

/** The command and leading arguments that run `palisade`; append its own arguments. */
export function palisadeCommand(): { cmd: string; args: string[] } {
  if (process.env.PALISADE_TEST_DIST === '1') {
    if (!fs.existsSync(DIST_MAIN)) throw new Error(`PALISADE_TEST_DIST=1 but ${DIST_MAIN} is missing: run \`npx tsc -p .\` first`);
    return { cmd: process.execPath, args: [DIST_MAIN] };
  }
  return { cmd: process.execPath, args: ['--import', import.meta.resolve('tsx'), SRC_MAIN] };
}

/** `palisade` as a bash command line (each word single-quoted). */
export function palisadeShellCommand(): string {
  const { cmd, args } = palisadeCommand();
  return [cmd, ...args].map((w) => `'${w.replace(/'/g, `'\\''`)}'`).join(' ');
}

/** Run `palisade ARGS…` (argv array, no shell). */
export function runPalisade(args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const { cmd, args: lead } = palisadeCommand();
  return runProcess(cmd, [...lead, ...args], opts);
}
