// Running netfilter tools with stdin input, optionally inside a network namespace (`ip netns exec`).
import { spawn } from 'node:child_process';
import { DataplaneError } from './backend.js';

export interface ToolResult { code: number; stdout: string; stderr: string }

export interface Runner {
  /** The namespace the tools run in, or null for the current one. */
  readonly netns: string | null;
  /** Run `tool args…` with `stdin`; never throws on a non-zero exit (see `must`). */
  run(tool: string, args: string[], stdin?: string): Promise<ToolResult>;
}

export interface RunnerOptions { netns?: string | null; timeoutMs?: number }

export function createRunner(opts: RunnerOptions = {}): Runner {
  const netns = opts.netns ?? null;
  const timeoutMs = opts.timeoutMs ?? 60_000;
  return {
    netns,
    run(tool, args, stdin = '') {
      const [cmd, argv] = netns ? ['ip', ['netns', 'exec', netns, tool, ...args]] : [tool, args];
      return new Promise((resolve) => {
        const child = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
        const out: Buffer[] = [];
        const err: Buffer[] = [];
        let killed = false;
        const timer = setTimeout(() => { killed = true; child.kill('SIGKILL'); }, timeoutMs);
        child.stdout.on('data', (d: Buffer) => out.push(d));
        child.stderr.on('data', (d: Buffer) => err.push(d));
        child.stdin.on('error', () => { /* the tool may exit before reading all input */ });
        child.on('error', (e) => {
          clearTimeout(timer);
          resolve({ code: 127, stdout: '', stderr: `${tool}: ${e.message}` });
        });
        child.on('close', (code, signal) => {
          clearTimeout(timer);
          const stderr = Buffer.concat(err).toString('utf8') + (killed ? `\n${tool}: killed after ${timeoutMs} ms` : '');
          resolve({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString('utf8'), stderr });
        });
        child.stdin.end(stdin);
      });
    },
  };
}

/** Run and throw a DataplaneError naming `step` when the tool fails. */
export async function must(runner: Runner, step: string, tool: string, args: string[], stdin?: string): Promise<string> {
  const r = await runner.run(tool, args, stdin);
  if (r.code !== 0) throw new DataplaneError(step, r.stderr || r.stdout || `exit ${r.code}`);
  return r.stdout;
}
