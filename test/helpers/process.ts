// Runs a process to completion and collects its output: the tests' one way to run a command-line tool.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface RunResult { code: number; stdout: string; stderr: string }
export interface RunOptions { env?: NodeJS.ProcessEnv; input?: string; cwd?: string; timeoutMs?: number }

/** Run to completion (stdin: `input`, then closed). Never rejects on a non-zero exit: the caller asserts the code. */
export function runProcess(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { cwd: opts.cwd ?? REPO, env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d) => { stdout += d; });
    c.stderr.on('data', (d) => { stderr += d; });
    const timer = opts.timeoutMs ? setTimeout(() => c.kill('SIGKILL'), opts.timeoutMs) : undefined;
    c.on('error', (e) => { clearTimeout(timer); reject(e); });
    c.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr: signal ? `${stderr}\n(killed by ${signal})` : stderr });
    });
    c.stdin.end(opts.input ?? '');
  });
}


// Long-lived children (servers, agents) a test starts. A test that fails half-way can leave one
// running; its open pipes would keep the test file's process, and so the whole run, alive forever.
// Every tracked child is SIGKILLed when the test process exits, whatever happened before.
const liveChildren = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of liveChildren) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

/** Track a long-lived child: killed at the latest when this test process exits. */
export function trackChild(c: ChildProcess): ChildProcess {
  liveChildren.add(c);
  c.once('exit', () => liveChildren.delete(c));
  return c;
}
