// Private temporary directories (src/dataplane/temp-dirs.ts): those of processes of this pid namespace
// that are gone are removed by the next one; a live process's, this process's, another pid
// namespace's and anything not named so are kept.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { privateTempDir, sweepDeadDirs } from '../../src/dataplane/temp-dirs.js';

test('temp dirs: a killed process\'s directory is swept by the next; nothing else is', () => {
  const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-sweep-'));
  try {
    const ns = Number(/\[(\d+)\]/.exec(fs.readlinkSync('/proc/self/ns/pid'))![1]);
    const gone = spawnSync('true').pid!; // exited: its pid runs no process (until reused)
    const make = (name: string, file = true) => {
      const p = path.join(parent, name);
      fs.mkdirSync(p);
      if (file) fs.writeFileSync(path.join(p, 'json.sock'), '');
      return p;
    };
    const dead = make(`palisade-ulogd-${ns}-${gone}-aB3xYz`);
    const deadEmpty = make(`palisade-ulogd-${ns}-${gone}-empty1`, false);
    const keep = [
      make(`palisade-ulogd-${ns}-${process.pid}-mine01`), // this process's own
      make(`palisade-ulogd-${ns}-1-init01`), // pid 1 runs
      make(`palisade-ulogd-${ns + 1}-${gone}-other1`), // another pid namespace: its pids say nothing here
      make(`palisade-nft-${ns}-${gone}-prefix`), // another prefix
      make(`palisade-ulogd-${gone}-oldfmt`), // not named after a namespace
    ];
    assert.deepEqual(sweepDeadDirs('palisade-ulogd-', parent).sort(), [dead, deadEmpty].sort());
    assert.ok(!fs.existsSync(dead) && !fs.existsSync(deadEmpty));
    for (const p of keep) assert.ok(fs.existsSync(p), `${path.basename(p)} kept`);
    // a new directory is named after this process, private, and sweeps as it is made
    const again = make(`palisade-ulogd-${ns}-${gone}-again1`);
    const mine = privateTempDir('palisade-ulogd-', parent);
    assert.match(path.basename(mine), new RegExp(`^palisade-ulogd-${ns}-${process.pid}-[A-Za-z0-9]{6}$`));
    assert.equal(fs.statSync(mine).mode & 0o777, 0o700);
    assert.ok(!fs.existsSync(again), 'swept when the new one was made');
    assert.deepEqual(sweepDeadDirs('palisade-ulogd-', parent), [], 'a second sweep finds nothing');
  } finally {
    fs.rmSync(parent, { recursive: true, force: true });
  }
});

test('temp dirs: a dead owner\'s orphan (a reader still running with its config) is stopped when its directory is swept; a live owner\'s is not', async () => {
  const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-sweep-'));
  const children: ReturnType<typeof spawn>[] = [];
  try {
    const ns = Number(/\[(\d+)\]/.exec(fs.readlinkSync('/proc/self/ns/pid'))![1]);
    const gone = spawnSync('true').pid!;
    const deadDir = path.join(parent, `palisade-ulogd-${ns}-${gone}-orphan`);
    const liveDir = path.join(parent, `palisade-ulogd-${ns}-${process.pid}-living`);
    fs.mkdirSync(deadDir); fs.mkdirSync(liveDir);
    // stand-ins for ulogd -c <dir>/ulogd.conf
    const reader = (dir: string) => {
      const c = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 300000)', '--', '-c', path.join(dir, 'ulogd.conf')], { stdio: 'ignore' });
      children.push(c);
      return c;
    };
    const orphan = reader(deadDir);
    const kept = reader(liveDir);
    await new Promise((r) => setTimeout(r, 300));   // both running, their command lines readable
    const ended = new Promise<NodeJS.Signals | null>((r) => orphan.once('exit', (_code, signal) => r(signal)));
    assert.deepEqual(sweepDeadDirs('palisade-ulogd-', parent), [deadDir]);
    assert.equal(await ended, 'SIGTERM');
    assert.equal(kept.exitCode, null, 'a live owner\'s reader keeps running');
    assert.equal(kept.signalCode, null);
  } finally {
    for (const c of children) c.kill('SIGKILL');
    fs.rmSync(parent, { recursive: true, force: true });
  }
});
