// The embedded store on a full disk: a write answers 530 saying so (not a generic internal error hidden
// behind a failed rollback), nothing is half-written, and writes work again once space is back.
// A small tmpfs is the data dir (root only, as the other namespace tests).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { startServer, type TestServer } from '../helpers/server.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-full-'));
let s: TestServer;
let mounted = false;

before(async () => {
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m,mode=0700', 'tmpfs', dir]);
  mounted = true;
  s = await startServer({ dataDir: path.join(dir, 'data') });
});

after(async () => {
  await s?.stop();
  if (mounted) execFileSync('umount', [dir]);
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Fills the filesystem: returns the filler's path. */
function fill(): string {
  const filler = path.join(dir, 'filler');
  const fd = fs.openSync(filler, 'w');
  const chunk = Buffer.alloc(64 * 1024, 1);
  try { for (;;) fs.writeSync(fd, chunk); } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
  } finally { fs.closeSync(fd); }
  return filler;
}

test('a write on a full disk answers 530 "out of disk space" and changes nothing; with space back it works', async () => {
  assert.equal((await s.call('createSecurityGroup', { name: 'before-full' })).status, 200);
  const filler = fill();
  let refused: any = null;
  // Some writes may still fit in pages SQLite already has; a few more fill them.
  for (let i = 0; i < 200 && !refused; i++) {
    const r = await s.call('createSecurityGroup', { name: `while-full-${i}`, description: 'x'.repeat(250) });
    if (r.status !== 200) refused = { ...r, i };
  }
  assert.ok(refused, 'a write was refused');
  assert.equal(refused.status, 530, JSON.stringify(refused.body));
  assert.match(refused.body.createsecuritygroupresponse.errortext, /out of disk space; nothing was changed/);
  assert.doesNotMatch(s.output(), /cannot rollback/);
  // Reads still answer, and the refused group is not there.
  const listed = await s.call('listSecurityGroups', { securitygroupname: `while-full-${refused.i}` });
  assert.equal(listed.status, 200);
  assert.equal(listed.body.listsecuritygroupsresponse.count, undefined);
  fs.rmSync(filler);
  const again = await s.call('createSecurityGroup', { name: 'after-full' });
  assert.equal(again.status, 200, JSON.stringify(again.body));
});
