// `npm run bench`: runs every benchmark in bench/ one after another, each as its own process with a
// time limit, and prints one summary table of their key figures (the SUMMARY lines of bench/summary.ts).
// Run: npm run bench [-- <name>…]      e.g. `npm run bench -- policy fleet`
// Env: BENCH_TIMEOUT_S — per-bench time limit in seconds (default 480).
// Bench output goes to stderr prefixed by its name, so stdout holds only the final table.
// Exit status: 0 when every selected bench ran and exited 0 (skips count as reported, not failed), else 1.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import Table from 'cli-table3';
import { parseSummary, type SummaryLine } from './summary.js';

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.dirname(BENCH_DIR);
const NOT_BENCHES = new Set(['all', 'summary']);
// Benches that program netfilter in namespaces. A bench can also declare it in its header comment
// ("needs root"), so new ones need no change here.
const NEEDS_ROOT = new Set(['dataplane']);
const KILL_GRACE_MS = 15_000; // time a bench gets after SIGTERM to remove namespaces etc.

function timeoutSeconds(): number {
  const raw = process.env.BENCH_TIMEOUT_S;
  if (raw === undefined || raw === '') return 480;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) {
    console.error(`BENCH_TIMEOUT_S must be a positive number of seconds, got "${raw}"`);
    process.exit(2);
  }
  return n;
}

function listBenches(): string[] {
  return fs.readdirSync(BENCH_DIR)
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts') && !f.startsWith('_'))
    .map((f) => f.slice(0, -3))
    .filter((n) => !NOT_BENCHES.has(n))
    .sort();
}

function header(name: string): string {
  const text = fs.readFileSync(path.join(BENCH_DIR, `${name}.ts`), 'utf8');
  const lines: string[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('//')) break;
    lines.push(line);
  }
  return lines.join('\n');
}

/** The leading comment block of a bench says "needs root" (or it is a known root bench). */
function needsRoot(name: string): boolean {
  return NEEDS_ROOT.has(name) || /needs root/i.test(header(name));
}

/** A bench may ask for a longer time limit in its header ("Time limit: 3600 s"); BENCH_TIMEOUT_S still wins. */
function limitFor(name: string, fallback: number): number {
  if (process.env.BENCH_TIMEOUT_S) return fallback;
  const m = /time limit:\s*(\d+)\s*s/i.exec(header(name));
  return m ? Math.max(fallback, Number(m[1])) : fallback;
}

type Outcome =
  | { status: 'ok'; ms: number }
  | { status: 'failed'; ms: number; detail: string }
  | { status: 'timeout'; ms: number }
  | { status: 'skipped'; detail: string };

let current: { pid: number } | null = null;
let interrupted = false;

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try { process.kill(-pid, signal); } catch { /* already gone */ }
}

// The child runs in its own process group (so a timeout can end it and whatever it spawned);
// that also keeps Ctrl-C from reaching it, so forward it.
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (current) {
      console.error(`\n${sig}: stopping the running bench`);
      killGroup(current.pid, 'SIGTERM');
      setTimeout(() => { if (current) killGroup(current.pid, 'SIGKILL'); process.exit(130); }, KILL_GRACE_MS).unref();
      interrupted = true;
    } else process.exit(130);
  });
}

function runBench(name: string, limitS: number, collected: SummaryLine[]): Promise<Outcome> {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(BENCH_DIR, `${name}.ts`)], {
      cwd: REPO, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: process.env,
    });
    current = { pid: child.pid! };
    const prefix = `[${name}] `;
    const out = readline.createInterface({ input: child.stdout! });
    out.on('line', (line) => {
      const s = parseSummary(line);
      if (s) collected.push({ ...s, bench: s.bench || name });
      else process.stderr.write(prefix + line + '\n');
    });
    readline.createInterface({ input: child.stderr! }).on('line', (line) => process.stderr.write(prefix + line + '\n'));

    let timedOut = false;
    let killer: NodeJS.Timeout | undefined;
    const limit = setTimeout(() => {
      timedOut = true;
      process.stderr.write(`${prefix}time limit of ${limitS} s reached, stopping\n`);
      killGroup(child.pid!, 'SIGTERM');
      killer = setTimeout(() => killGroup(child.pid!, 'SIGKILL'), KILL_GRACE_MS);
    }, limitS * 1000);

    child.on('error', (err) => {
      clearTimeout(limit);
      current = null;
      resolve({ status: 'failed', ms: Date.now() - started, detail: `could not start: ${err.message}` });
    });
    child.on('close', (code, signal) => {
      clearTimeout(limit);
      if (killer) clearTimeout(killer);
      // Anything the bench left running in its group goes with it.
      killGroup(child.pid!, 'SIGKILL');
      current = null;
      const ms = Date.now() - started;
      if (timedOut) resolve({ status: 'timeout', ms });
      else if (code === 0) resolve({ status: 'ok', ms });
      else {
        const how = signal ? `killed by ${signal}` : `exit ${code}`;
        resolve({ status: 'failed', ms, detail: interrupted ? `interrupted, ${how}` : how });
      }
    });
  });
}

async function main(): Promise<number> {
  const all = listBenches();
  const asked = process.argv.slice(2).map((a) => a.replace(/^bench\//, '').replace(/\.ts$/, ''));
  const unknown = asked.filter((a) => !all.includes(a));
  if (unknown.length) {
    console.error(`unknown bench: ${unknown.join(', ')} (available: ${all.join(', ')})`);
    return 2;
  }
  const selected = asked.length ? [...new Set(asked)] : all;
  const limitS = timeoutSeconds();
  const isRoot = process.getuid?.() === 0;

  const collected: SummaryLine[] = [];
  const outcomes = new Map<string, Outcome>();
  const t0 = Date.now();
  for (const name of selected) {
    if (interrupted) break;
    if (needsRoot(name) && !isRoot) {
      outcomes.set(name, { status: 'skipped', detail: 'needs root' });
      process.stderr.write(`[${name}] skipped: needs root\n`);
      continue;
    }
    const limit = limitFor(name, limitS);
    process.stderr.write(`[${name}] running (limit ${limit} s)\n`);
    const o = await runBench(name, limit, collected);
    outcomes.set(name, o);
    process.stderr.write(`[${name}] ${o.status}${'ms' in o ? ` in ${(o.ms / 1000).toFixed(1)} s` : ''}\n`);
  }

  // One row per bench, its figures as lines within the cells: rules between benches only.
  const table = new Table({ head: ['bench', 'metric', 'value', 'unit', 'target'], style: { head: [], border: [] } });
  const pushBench = (name: string, lines: string[][]) => table.push([
    name,
    ...[0, 1, 2, 3].map((c) => ({ content: lines.map((l) => l[c] ?? '').join('\n'), hAlign: c === 1 ? 'right' as const : 'left' as const })),
  ]);
  const figures = (rows: SummaryLine[]) => rows.map((s) => [s.metric, s.value, s.unit, s.target]);
  for (const name of selected) {
    const o = outcomes.get(name);
    const lines = figures(collected.filter((s) => s.bench === name));
    if (!o) lines.push(['not run (interrupted)']);
    else if (o.status === 'skipped') lines.push([`skipped: ${o.detail}`]);
    else if (o.status === 'failed') lines.push([`FAILED (${o.detail})`]);
    else if (o.status === 'timeout') lines.push([`TIMED OUT after ${limitS} s`]);
    else if (lines.length === 0) lines.push(['ran, but reported no summary figures']);
    pushBench(name, lines);
  }
  // Figures reported under a name that is not a selected bench file still show.
  const strays = collected.filter((c) => !selected.includes(c.bench));
  for (const bench of new Set(strays.map((s) => s.bench))) pushBench(bench, figures(strays.filter((s) => s.bench === bench)));
  console.log(table.toString());

  let bad = 0;
  for (const [name, o] of outcomes) {
    if (o.status === 'failed') { bad++; console.log(`${name}: FAILED (${o.detail}) after ${(o.ms / 1000).toFixed(1)} s`); }
    if (o.status === 'timeout') { bad++; console.log(`${name}: TIMED OUT after ${limitS} s`); }
  }
  const notRun = selected.filter((n) => !outcomes.has(n));
  if (notRun.length) { bad++; console.log(`not run (interrupted): ${notRun.join(', ')}`); }
  const ran = [...outcomes.values()].filter((o) => o.status !== 'skipped').length;
  const skipped = outcomes.size - ran;
  console.log(`${ran} bench(es) run${skipped ? `, ${skipped} skipped` : ''}, ${bad ? `${bad} not ok` : 'all ok'}, in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return bad ? 1 : 0;
}

process.exitCode = await main();
