// A throwaway PostgreSQL cluster for tests: initdb in a temp dir, postgres on a private port and a
// unix socket in that dir, removed on stop. As root the binaries run as the `postgres` user (initdb
// refuses root) through spawn's uid/gid rather than runuser: the child is then postgres itself, so
// stop()'s SIGINT reaches it. (runuser did not pass it on; the postmaster outlived stop() and, holding
// the test's stderr pipe, kept the test process alive ~60 s until it noticed its data dir was gone.)
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { freePort } from './server.js';

export interface PgCluster { url: string; dir: string; stop(): Promise<void> }

function pgBinDir(): string {
  const root = '/usr/lib/postgresql';
  if (!fs.existsSync(root)) throw new Error('PostgreSQL server binaries not found (install the postgresql package: scripts/install-deps.sh)');
  const versions = fs.readdirSync(root).filter((v) => fs.existsSync(path.join(root, v, 'bin', 'postgres'))).sort((a, b) => Number(b) - Number(a));
  if (!versions.length) throw new Error('no PostgreSQL server version under /usr/lib/postgresql');
  return path.join(root, versions[0]!, 'bin');
}

function postgresUser(): { uid: number; gid: number } {
  const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
  return { uid: id('-u'), gid: id('-g') };
}

export async function startPostgres(): Promise<PgCluster> {
  const bin = pgBinDir();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-pg-'));
  const asRoot = process.getuid?.() === 0;
  const as: { uid?: number; gid?: number } = asRoot ? postgresUser() : {};
  if (asRoot) fs.chownSync(dir, as.uid!, as.gid!);
  const data = path.join(dir, 'data');
  const opts = { ...as, cwd: dir, env: { ...process.env, HOME: dir } };
  execFileSync(path.join(bin, 'initdb'), ['-D', data, '-U', 'palisade', '--auth=trust', '-E', 'UTF8', '--no-sync'], { ...opts, stdio: 'pipe' });
  const port = await freePort();
  const proc: ChildProcess = spawn(path.join(bin, 'postgres'), ['-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off'],
    { ...opts, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  // PALISADE_PG_LOG=<file> keeps the server's log (a deadlock's report names both statements).
  const logFile = process.env.PALISADE_PG_LOG;
  proc.stderr?.on('data', (d) => {
    if (stderr.length < 65536) stderr += String(d);
    if (logFile) fs.appendFileSync(logFile, d);
  });
  const url = `postgres://palisade@127.0.0.1:${port}/postgres`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.end(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (ok && /ready to accept connections/.test(stderr)) break;
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
      throw new Error(`postgres did not start: ${stderr.slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    dir,
    async stop() {
      if (proc.exitCode === null) {
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGINT'); // fast shutdown
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([exited, new Promise((r) => { timer = setTimeout(r, 10_000); })]);
        clearTimeout(timer); // a pending timer would keep the test process alive
        if (proc.exitCode === null) proc.kill('SIGKILL');
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
