// The server warns at start when its open-file limit is below what its own connection bounds let others
// hold open (descriptors.ts): under such a limit a flood of connections reaches EMFILE before any bound
// acts, and then no API client or agent gets in. Real server processes under `prlimit`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from '../helpers/server.js';
import { descriptorsNeeded, openFilesLimit } from '../../src/api/descriptors.js';

const WARNING = 'this process may open fewer files than its connection bounds allow';

test('pure: the soft open-files limit is read from /proc limits text', () => {
  const text = (soft: string, hard: string) => `Limit                     Soft Limit           Hard Limit           Units     \nMax cpu time              unlimited            unlimited            seconds   \nMax open files            ${soft}                 ${hard}                 files     \n`;
  assert.equal(openFilesLimit(text('1024', '524288')), 1024);
  assert.equal(openFilesLimit(text('unlimited', 'unlimited')), null);
  assert.equal(openFilesLimit('Max cpu time unlimited unlimited seconds\n'), null);
  assert.equal(descriptorsNeeded({ idleConnectionsMax: 20_000, pendingAgentsMax: 10_000, hosts: 3 }), 31_027);
});

test('a server whose open-file limit cannot hold its connection bounds says so at start; one whose bounds fit does not', async () => {
  // 4,096 descriptors against the default bounds (20,000 idle + 10,000 awaiting a hello): warned
  const short = await startServer({ wrap: ['prlimit', '--nofile=4096:4096', '--'] });
  try {
    const line = short.output().split('\n').find((l) => l.includes(WARNING));
    assert.ok(line, `warned:\n${short.output()}`);
    const fields = JSON.parse(line!);
    assert.deepEqual([fields.openFilesLimit, fields.idleConnectionsMax, fields.pendingAgentsMax], [4096, 20_000, 10_000]);
    assert.equal((await short.call('listZones')).status, 200, 'and serves all the same');
  } finally { await short.stop(); }
  // the same limit with bounds that fit in it: no warning
  const fits = await startServer({ wrap: ['prlimit', '--nofile=4096:4096', '--'], args: ['--idle-connections-max', '1000', '--pending-agents-max', '1000'] });
  try {
    assert.equal((await fits.call('listZones')).status, 200);
    assert.ok(!fits.output().includes(WARNING), fits.output());
    assert.ok(fits.output().includes('palisade server listening'));
  } finally { await fits.stop(); }
});
