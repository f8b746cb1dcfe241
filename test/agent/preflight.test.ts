// Preflight's check of other firewalls' forward hooks, in a namespace of the test's own with the real
// iptables (nft backend) and nft: Docker's `iptables -P FORWARD DROP` drops bridged VM traffic whatever
// the groups allow, unless a rule of that table accepts the VM bridges. Each finding has its twin.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { run } from '../../src/lab/index.js';
import { createRunner } from '../../src/dataplane/exec.js';
import { forwardDropCheck, preflight, unfixable } from '../../src/agent/preflight.js';

const ns = `pf${randomBytes(3).toString('hex')}`;
const runner = createRunner({ netns: ns });
const sh = async (...args: string[]) => { const r = await run('ip', ['netns', 'exec', ns, ...args]); assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`); };

before(async () => { await run('ip', ['netns', 'add', ns]); });
after(async () => { await run('ip', ['netns', 'del', ns], { allowFail: true }); });

test('a foreign forward chain dropping by default is an unfixable finding until a rule of its table accepts the VM bridges (by name or physdev)', async () => {
  assert.deepEqual(await forwardDropCheck(runner, ['br0']), [], 'nothing to say on a host without one');
  await sh('iptables', '-P', 'FORWARD', 'DROP');
  let found = await forwardDropCheck(runner, ['br0']);
  assert.equal(found.length, 1);
  assert.equal(found[0]!.check, 'forward policy ip filter FORWARD');
  assert.equal(found[0]!.ok, false);
  assert.match(found[0]!.detail, /drops by default .* none of its table's rules accepts the VM bridges \(br0\): bridged VM traffic is dropped whatever the security groups allow/);
  // part of the host's preflight, and it alerts
  assert.ok(unfixable(await preflight(runner, ['nft'], ['br0'])).some((f) => f.check === 'forward policy ip filter FORWARD'));
  // Docker's way of letting it through: DOCKER-USER accepts the bridge. Another bridge's rule does not count.
  await sh('iptables', '-N', 'DOCKER-USER');
  await sh('iptables', '-A', 'FORWARD', '-j', 'DOCKER-USER');
  await sh('iptables', '-I', 'DOCKER-USER', '-i', 'br1', '-j', 'ACCEPT');
  assert.equal((await forwardDropCheck(runner, ['br0']))[0]!.ok, false, 'a rule for br1 does not pass br0');
  await sh('iptables', '-I', 'DOCKER-USER', '-i', 'br0', '-j', 'ACCEPT');
  found = await forwardDropCheck(runner, ['br0']);
  assert.deepEqual(found.map((f) => [f.check, f.ok]), [['forward policy ip filter FORWARD', true]]);
  // IPv6 likewise, and libvirt's advice (physdev) counts as passing the bridges
  await sh('ip6tables', '-P', 'FORWARD', 'DROP');
  assert.deepEqual((await forwardDropCheck(runner, ['br0'])).map((f) => [f.check, f.ok]), [['forward policy ip filter FORWARD', true], ['forward policy ip6 filter FORWARD', false]]);
  await sh('ip6tables', '-A', 'FORWARD', '-m', 'physdev', '--physdev-is-bridged', '-j', 'ACCEPT');
  assert.deepEqual((await forwardDropCheck(runner, ['br0'])).map((f) => [f.check, f.ok]), [['forward policy ip filter FORWARD', true], ['forward policy ip6 filter FORWARD', true]]);
});

test('wildcards count, a jump alone does not, and ebtables\' bridge-family FORWARD is checked too', async () => {
  const of = async (check: string) => (await forwardDropCheck(runner, ['cloudbr0'])).find((f) => f.check === check)?.ok;
  // (the previous test left ip filter FORWARD dropping, with accepts for br0 only)
  assert.equal(await of('forward policy ip filter FORWARD'), false, 'br0 rules do not pass cloudbr0');
  await sh('iptables', '-N', 'RJ');
  await sh('iptables', '-A', 'RJ', '-j', 'DROP');
  await sh('iptables', '-I', 'FORWARD', '-i', 'cloudbr0', '-j', 'RJ');
  assert.equal(await of('forward policy ip filter FORWARD'), false, 'a jump to a chain that drops is no accept');
  await sh('iptables', '-I', 'DOCKER-USER', '-i', 'cloudbr+', '-j', 'ACCEPT');
  assert.equal(await of('forward policy ip filter FORWARD'), true, 'cloudbr+ covers cloudbr0');
  await sh('ebtables', '-P', 'FORWARD', 'DROP');
  assert.equal(await of('forward policy bridge filter FORWARD'), false);
  await sh('ebtables', '-A', 'FORWARD', '-i', 'vnet0', '-j', 'ACCEPT');
  assert.equal(await of('forward policy bridge filter FORWARD'), false, 'one port\'s accept is not the bridges\'');
  await sh('ebtables', '-A', 'FORWARD', '-j', 'ACCEPT');
  assert.equal(await of('forward policy bridge filter FORWARD'), true);
});
