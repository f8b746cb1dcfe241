// Preflight's check of other firewalls' forward hooks, in a namespace of the test's own with the real
// iptables (nft backend) and nft: Docker's `iptables -P FORWARD DROP` drops bridged VM traffic whatever
// the groups allow, unless a rule of that table accepts the VM bridges. And its check of foreign rules
// rewriting the packet mark Palisade carries (a CONNMARK restore in mangle PREROUTING), in a namespace
// of its own, with nft, iptables-nft, ebtables-nft and iptables-legacy. Each finding has its twin.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { run } from '../../src/lab/index.js';
import { createRunner } from '../../src/dataplane/exec.js';
import { JUMPS_READ, ebAcceptsBridges, ebForwardDrops, ebForwardFindings, forwardDropCheck, legacyEbForwardDropCheck, legacyForwardDropCheck, onPath, preflight, queueEnd, queuesListened, unfixable } from '../../src/agent/preflight.js';
import { brokenBits, ebMarkEffect, legacyEbMarkRewrites, legacyMarkRewrites, nftMarkRewrites } from '../../src/agent/mark-rewrites.js';
import { ebTablesFromHooks, ebTablesFromModules, legacyEbTables } from '../../src/agent/foreign-tables.js';
import { createLab, ping } from '../../src/lab/index.js';
import { HostFw, policyOf, BACKENDS, closeAll } from '../dataplane/kit.js';
import { hostState, rule } from '../dataplane/fixtures.js';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { Agent } from '../../src/agent/agent.js';
import { saveState, tokenSha256 } from '../../src/agent/state-file.js';
import { createDataplane } from '../../src/dataplane/choose.js';
import { discoverPorts } from '../../src/dataplane/ports.js';
import type { PreflightFinding } from '../../src/protocol/index.js';
import { freePort } from '../helpers/server.js';
import { trackChild } from '../helpers/process.js';
import { spawn } from 'node:child_process';

const ns = `pf${randomBytes(3).toString('hex')}`;
const runner = createRunner({ netns: ns });
const sh = async (...args: string[]) => { const r = await run('ip', ['netns', 'exec', ns, ...args]); assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`); };
// the mark checks' namespace (the forward-drop tests leave theirs dropping)
const mns = `pm${randomBytes(3).toString('hex')}`;
const mrunner = createRunner({ netns: mns });
const msh = async (script: string) => { const r = await run('ip', ['netns', 'exec', mns, 'sh', '-ec', script]); assert.equal(r.code, 0, `${script}: ${r.stderr}`); };

// the iptables-legacy forward-drop check's namespace
const lns = `pl${randomBytes(3).toString('hex')}`;
const lrunner = createRunner({ netns: lns });
const lsh = async (script: string) => { const r = await run('ip', ['netns', 'exec', lns, 'sh', '-ec', script]); assert.equal(r.code, 0, `${script}: ${r.stderr}`); return r.stdout; };

before(async () => { for (const n of [ns, mns, lns]) await run('ip', ['netns', 'add', n]); });
after(async () => { for (const n of [ns, mns, lns]) await run('ip', ['netns', 'del', n], { allowFail: true }); });

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
  // (appended, after the jump to DOCKER-USER: inserted first, it would drop cloudbr0's traffic before any accept)
  await sh('iptables', '-A', 'FORWARD', '-i', 'cloudbr0', '-j', 'RJ');
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

test('iptables-legacy\'s FORWARD dropping by default (invisible to nft) is the same alert, until a legacy rule accepts the VM bridges', async () => {
  assert.deepEqual(await legacyForwardDropCheck(lrunner, ['br0']), [], 'nothing to say without a legacy filter table');
  assert.equal((await lsh('cat /proc/net/ip_tables_names')).trim(), '', 'and looking did not create one');
  await lsh('iptables-legacy -P FORWARD DROP');
  assert.deepEqual(await forwardDropCheck(lrunner, ['br0']), [], 'nft does not see it');
  let found = await legacyForwardDropCheck(lrunner, ['br0']);
  assert.deepEqual(found.map((f) => [f.check, f.ok]), [['forward policy ip filter FORWARD (iptables-legacy)', false]]);
  assert.match(found[0]!.detail, /drops by default .* none of its table's rules accepts the VM bridges \(br0\)/);
  assert.ok(unfixable(await preflight(lrunner, ['nft'], ['br0'])).some((f) => f.check === 'forward policy ip filter FORWARD (iptables-legacy)'), 'part of preflight, and it alerts');
  // a negated or other bridge's accept does not pass br0; DOCKER-USER accepting br+ does
  await lsh(`iptables-legacy -N DOCKER-USER
iptables-legacy -A FORWARD -j DOCKER-USER
iptables-legacy -A DOCKER-USER ! -i br0 -j ACCEPT
iptables-legacy -A DOCKER-USER -i br1 -j ACCEPT`);
  assert.equal((await legacyForwardDropCheck(lrunner, ['br0']))[0]!.ok, false);
  await lsh('iptables-legacy -I DOCKER-USER -i br+ -o br+ -j ACCEPT');
  found = await legacyForwardDropCheck(lrunner, ['br0']);
  assert.deepEqual(found.map((f) => [f.check, f.ok]), [['forward policy ip filter FORWARD (iptables-legacy)', true]]);
  // IPv6 likewise; physdev counts
  await lsh('ip6tables-legacy -P FORWARD DROP');
  assert.deepEqual((await legacyForwardDropCheck(lrunner, ['br0'])).map((f) => [f.check, f.ok]),
    [['forward policy ip filter FORWARD (iptables-legacy)', true], ['forward policy ip6 filter FORWARD (iptables-legacy)', false]]);
  await lsh('ip6tables-legacy -A FORWARD -m physdev --physdev-is-bridged -j ACCEPT');
  assert.equal((await legacyForwardDropCheck(lrunner, ['br0']))[1]!.ok, true);
});

test('ebtables-legacy\'s tables are read only when the kernel shows them (its hooks, else its modules), never listed blind in the host\'s namespace', async () => {
  // what `nft list hooks` shows of legacy tables (module names; built in, the ebt_ hook functions)
  const hooks = `family ip {
	hook forward {
		+0000000000 chain ip filter FORWARD [nf_tables]
	}
}
family bridge {
	hook prerouting {
		-2147483648 ebt_broute [ebtable_broute]
		-0000000300 ebt_do_table [ebtable_nat]
	}
	hook forward {
		-0000000250 chain bridge palisade forward [nf_tables]
	}
}`;
  assert.deepEqual(ebTablesFromHooks(hooks), ['nat', 'broute']);
  assert.deepEqual(ebTablesFromHooks('family bridge {\n\thook forward {\n\t\t-0000000200 ebt_do_table\n\t}\n}\nfamily ip {\n\thook forward {\n\t\t-0000000200 ebt_do_table\n\t}\n}'), ['filter'], 'built in: by the hook, bridge family only');
  assert.deepEqual(ebTablesFromHooks('family bridge {\n\thook forward {\n\t\t-0000000250 chain bridge palisade forward [nf_tables]\n\t}\n}'), []);
  assert.deepEqual(ebTablesFromHooks('hook forward {\n\t-0000000200 ebt_do_table [ebtable_filter]\n}'), ['filter'], 'no family named');
  assert.deepEqual(ebTablesFromModules('ebtable_filter 12288 1 - Live 0x0\nebtables 45056 1 ebtable_filter, Live 0x0\nebt_mark 12288 0 - Live 0x0\n'), ['filter']);
  // its -L text: FORWARD's policy, and which accepts pass the bridges
  const listing = (policy: string, ...rules: string[]) => `Bridge table: filter\n\nBridge chain: INPUT, entries: 0, policy: ACCEPT\n\nBridge chain: FORWARD, entries: ${rules.length}, policy: ${policy}\n${rules.join('\n')}\n\nBridge chain: OUTPUT, entries: 0, policy: ACCEPT\n`;
  assert.equal(ebForwardDrops(listing('ACCEPT')), false);
  assert.equal(ebForwardDrops(listing('DROP')), true);
  assert.equal(ebAcceptsBridges(listing('DROP', '-i vnet0 -j ACCEPT', '--logical-in br1 -j ACCEPT', '! --logical-in br0 -j ACCEPT'), ['br0']), false);
  assert.equal(ebAcceptsBridges(listing('DROP', '--logical-in br+ -j ACCEPT'), ['br0']), true);
  assert.equal(ebAcceptsBridges(listing('DROP', '-j ACCEPT'), ['br0']), true);
  // its mark rules, as for ebtables-nft
  assert.ok(brokenBits(ebMarkEffect('-j mark --mark-set 0x5 --mark-target CONTINUE')!));
  assert.equal(brokenBits(ebMarkEffect('-j mark --mark-or 0x40000000 --mark-target CONTINUE')!), 0);

  // this host (a kernel without modules and without legacy ebtables): ebtables-legacy is run once per
  // process, in a throwaway namespace, to learn that; never in the host's
  const ens = `pe${randomBytes(3).toString('hex')}`;
  await run('ip', ['netns', 'add', ens]);
  try {
    const er = createRunner({ netns: ens });
    const tools: string[] = [];
    const recording = { netns: ens, run: (t: string, a: string[], i?: string) => { tools.push(`${t} ${a.join(' ')}`); return er.run(t, a, i); } };
    assert.deepEqual([...await legacyEbForwardDropCheck(recording, ['br0']), ...await legacyEbMarkRewrites(recording, onPath)], []);
    assert.ok(tools.filter((t) => t.includes('ebtables-legacy')).every((t) => t.startsWith('unshare --net ')), tools.join('; '));
    assert.ok(tools.filter((t) => t.includes('ebtables-legacy')).length <= 1, tools.join('; '));
    assert.deepEqual(await legacyEbTables(recording, () => false), [], 'without ebtables-legacy installed: nothing asked');
  } finally {
    await run('ip', ['netns', 'del', ens], { allowFail: true });
  }
});

test('a foreign rule rewriting the packet mark between Palisade\'s marking and matching is an alert naming the rule; masked to bits Palisade does not use, none', async () => {
  const marks = async () => [...await nftMarkRewrites(mrunner), ...await legacyMarkRewrites(mrunner)];
  assert.deepEqual(await marks(), [], 'nothing to say on a host without one');
  // the CONNMARK restore of the README, through iptables-nft: the whole mark from the connection's
  await msh('iptables -t mangle -A PREROUTING -j CONNMARK --restore-mark');
  let found = await marks();
  assert.equal(found.length, 1, JSON.stringify(found));
  assert.equal(found[0]!.check, 'foreign mark ip mangle PREROUTING');
  assert.equal(found[0]!.ok, false);
  assert.match(found[0]!.detail, /-A PREROUTING -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff/);
  assert.match(found[0]!.detail, /does not keep bits 0x3fff8fff .* Palisade drops the VMs' traffic/);
  assert.ok(unfixable(await preflight(mrunner, ['nft'], ['br0'])).some((f) => f.check === 'foreign mark ip mangle PREROUTING'), 'part of preflight, and it alerts');
  // twin: the same restore masked to bits 30–31, kube-proxy's masquerade bit (14) and a verdict bit set: nothing
  await msh(`iptables -t mangle -D PREROUTING -j CONNMARK --restore-mark
iptables -t mangle -A PREROUTING -j CONNMARK --restore-mark --mask 0xc0000000
iptables -t mangle -N KUBE-MARK-MASQ
iptables -t mangle -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
iptables -t mangle -A FORWARD -j KUBE-MARK-MASQ
iptables -t mangle -A FORWARD -j MARK --set-xmark 0x8000/0x8000
iptables -t mangle -A OUTPUT -j MARK --set-mark 0x1`);
  assert.deepEqual(await marks(), []);
  // a whole-mark set in a chain FORWARD jumps to is found there
  await msh('iptables -t mangle -A KUBE-MARK-MASQ -j MARK --set-mark 0x1');
  assert.deepEqual((await marks()).map((f) => f.check), ['foreign mark ip mangle KUBE-MARK-MASQ']);
  await msh('iptables -t mangle -D KUBE-MARK-MASQ -j MARK --set-mark 0x1');
  // nft's own: `meta mark set ct mark` at prerouting; the masked form and an output-hook restore say nothing
  await msh(`nft add table inet other
nft add chain inet other pre '{ type filter hook prerouting priority -150; policy accept; }'
nft add chain inet other out '{ type filter hook output priority -150; policy accept; }'
nft add rule inet other out meta mark set ct mark
nft add rule inet other pre meta mark set meta mark and 0x3fffffff or 0x40000000`);
  assert.deepEqual(await marks(), []);
  await msh('nft add rule inet other pre meta mark set ct mark');
  found = await marks();
  assert.deepEqual(found.map((f) => f.check), ['foreign mark inet other pre']);
  assert.match(found[0]!.detail, /meta mark set ct mark/);
  await msh('nft delete table inet other');
  // ebtables' mark --mark-set in nat PREROUTING (after Palisade's in-port mark): found; --mark-or on bit 30: not
  await msh('ebtables -t nat -A PREROUTING -j mark --mark-or 0x40000000 --mark-target CONTINUE');
  assert.deepEqual(await marks(), []);
  await msh('ebtables -t nat -A PREROUTING -j mark --mark-set 0x5 --mark-target CONTINUE');
  assert.deepEqual((await marks()).map((f) => f.check), ['foreign mark bridge nat PREROUTING']);
  // read through the tool of the tables it means (iptables-nft, ebtables-nft, iptables-legacy), never
  // through the alternatives' `ebtables` / `iptables`, which may be the legacy ones (other tables, and
  // listing one creates it)
  const tools: string[] = [];
  const recording = { netns: mns, run: (t: string, a: string[], i?: string) => { tools.push(t); return mrunner.run(t, a, i); } };
  assert.deepEqual((await nftMarkRewrites(recording)).map((f) => f.check), ['foreign mark bridge nat PREROUTING']);
  assert.ok(tools.includes('ebtables-nft'), tools.join(' '));
  assert.deepEqual(tools.filter((t) => ['ebtables', 'iptables', 'ip6tables'].includes(t)), []);
  await msh('ebtables -t nat -F PREROUTING');
  // iptables-legacy's tables, which nft cannot see
  await msh('iptables-legacy -t mangle -A PREROUTING -j CONNMARK --restore-mark --mask 0xc0000000');
  assert.deepEqual(await marks(), []);
  await msh('iptables-legacy -t mangle -A PREROUTING -j CONNMARK --restore-mark');
  found = await marks();
  assert.deepEqual(found.map((f) => f.check), ['foreign mark ip mangle PREROUTING (iptables-legacy)']);
  assert.match(found[0]!.detail, /--restore-mark --nfmask 0xffffffff/);
});

test('TPROXY\'s --tproxy-mark without a mask and HMARK write the whole mark: alerts naming the rule; TPROXY masked to bits 30–31 and HMARK at another hook do not', async () => {
  const tns = `pt${randomBytes(3).toString('hex')}`;
  await run('ip', ['netns', 'add', tns]);
  try {
    const tr = createRunner({ netns: tns });
    const tsh = async (script: string) => { const r = await run('ip', ['netns', 'exec', tns, 'sh', '-ec', script]); assert.equal(r.code, 0, `${script}: ${r.stderr}`); };
    const marks = async () => [...await nftMarkRewrites(tr), ...await legacyMarkRewrites(tr)];
    await tsh(`iptables -t mangle -A PREROUTING -p tcp -j TPROXY --on-port 3128 --tproxy-mark 0x40000000/0xc0000000
iptables -t mangle -A POSTROUTING -j HMARK --hmark-tuple src,dst --hmark-mod 16 --hmark-offset 1 --hmark-rnd 0xfeed`);
    assert.deepEqual(await marks(), []);
    await tsh('iptables -t mangle -A PREROUTING -p tcp -j TPROXY --on-port 3128 --tproxy-mark 0x1');
    let found = await marks();
    assert.deepEqual(found.map((f) => f.check), ['foreign mark ip mangle PREROUTING']);
    assert.match(found[0]!.detail, /-j TPROXY .*--tproxy-mark 0x1\/0xffffffff\)/);
    assert.match(found[0]!.detail, /does not keep bits 0x3fff8fff/);
    await tsh(`iptables -t mangle -D PREROUTING -p tcp -j TPROXY --on-port 3128 --tproxy-mark 0x1
iptables-legacy -t mangle -A FORWARD -j HMARK --hmark-tuple src,dst --hmark-mod 16 --hmark-offset 1 --hmark-rnd 0xfeed`);
    found = await marks();
    assert.deepEqual(found.map((f) => f.check), ['foreign mark ip mangle FORWARD (iptables-legacy)']);
    assert.match(found[0]!.detail, /-A FORWARD -j HMARK /);
    assert.ok(unfixable(await preflight(tr, ['nft'], ['br0'])).some((f) => f.check === 'foreign mark ip mangle FORWARD (iptables-legacy)'), 'part of preflight, and it alerts');
  } finally {
    await run('ip', ['netns', 'del', tns], { allowFail: true });
  }
});

test('a foreign bridge prerouting chain writing the mark alerts only when it runs after Palisade\'s marking there (by priority, per backend), and then VM traffic is dropped; before it, traffic passes and nothing is said. Docker\'s FORWARD DROP beside each backend', async () => {
  const lab = await createLab();
  try {
    const h1 = await lab.addHost('h1');
    const a = await lab.addVm({ host: h1, name: 'a', nics: [{ mac: '52:54:00:00:0e:0a', ipv4: '198.51.100.70/24' }] });
    const b = await lab.addVm({ host: h1, name: 'b', nics: [{ mac: '52:54:00:00:0e:0b', ipv4: '198.51.100.71/24' }] });
    const hr = createRunner({ netns: h1.netns });
    const marks = async () => (await nftMarkRewrites(hr)).map((f) => f.check);
    const pings = async () => (await ping(a, b.ipv4!, { timeoutMs: 1500 })).ok;
    const foreign = async (prio: number) => {
      await h1.exec('nft', ['add', 'table', 'bridge', 'other']);
      await h1.exec('nft', ['add', 'chain', 'bridge', 'other', 'pre', `{ type filter hook prerouting priority ${prio}; policy accept; }`]);
      await h1.exec('nft', ['add', 'rule', 'bridge', 'other', 'pre', 'meta', 'mark', 'set', '0x5']);
    };
    const noForeign = () => h1.exec('nft', ['delete', 'table', 'bridge', 'other']);
    // Palisade marks at -250 with nftables, in ebtables' nat PREROUTING (-300) with iptables
    const cases: Record<string, { before: number; after: number }> = { nftables: { before: -280, after: -200 }, iptables: { before: -350, after: -280 } };
    for (const backend of BACKENDS) {
      const fw = new HostFw(h1, backend);
      fw.set(policyOf(a, { ingress: [rule('tcp', ['0.0.0.0/0'], { ports: [80, 80] })] })).set(policyOf(b, { ingress: [rule('icmp', [`${a.ipv4}/32`], { icmp: [-1, -1] })] }));
      await fw.apply();
      const { before, after } = cases[backend]!;
      await foreign(before);
      assert.deepEqual(await marks(), [], `${backend}: priority ${before} runs before Palisade's marking`);
      assert.equal(await pings(), true, `${backend}: and a may ping b (Palisade rewrote the mark)`);
      await noForeign();
      await foreign(after);
      assert.deepEqual(await marks(), ['foreign mark bridge other pre'], `${backend}: priority ${after} runs after it`);
      assert.equal(await pings(), false, `${backend}: and the ping is dropped (the alert is right)`);
      await noForeign();
      // Docker's FORWARD DROP beside Palisade: the iptables backend's own jump for the bridge decides
      // its frames (the policy never sees them), the nftables backend's tables do not pass ip filter;
      // read without listing every table (`nft list tables` reads every rule in nft 1.0.6) or this one
      const bridges = Object.keys((await fw.input()).ports.bridges);
      await h1.exec('iptables', ['-P', 'FORWARD', 'DROP']);
      const run: string[] = [];
      const recording = { netns: h1.netns, run: (t: string, a: string[], i?: string) => { run.push(`${t} ${a.join(' ')}`); return hr.run(t, a, i); } };
      assert.deepEqual((await forwardDropCheck(recording, bridges)).map((f) => [f.check, f.ok]), [['forward policy ip filter FORWARD', backend === 'iptables']], backend);
      assert.deepEqual(run.filter((c) => / list tables?\b/.test(c)), [], run.join('; '));
      assert.equal(await pings(), backend === 'iptables', `${backend}: and the verdict is right`);
      await h1.exec('iptables', ['-P', 'FORWARD', 'ACCEPT']);
      await fw.dp.teardown();
    }
  } finally {
    await closeAll();
    await lab.destroy();
  }
});

test('with real packets, per backend: Palisade\'s own rules are no foreign mark rewrite; the CONNMARK restore it alerts on drops VM traffic, the masked one neither drops nor alerts', async () => {
  const lab = await createLab();
  try {
    const h1 = await lab.addHost('h1');
    const a = await lab.addVm({ host: h1, name: 'a', nics: [{ mac: '52:54:00:00:0d:0a', ipv4: '198.51.100.60/24' }] });
    const b = await lab.addVm({ host: h1, name: 'b', nics: [{ mac: '52:54:00:00:0d:0b', ipv4: '198.51.100.61/24' }] });
    const hr = createRunner({ netns: h1.netns });
    const marks = async () => (await nftMarkRewrites(hr)).map((f) => f.check);
    const pings = async () => (await ping(a, b.ipv4!, { timeoutMs: 1500 })).ok;
    const restore = (op: '-A' | '-D', ...mask: string[]) => h1.exec('iptables', ['-t', 'mangle', op, 'PREROUTING', '-j', 'CONNMARK', '--restore-mark', ...mask]);
    for (const backend of BACKENDS) {
      const fw = new HostFw(h1, backend);
      fw.set(policyOf(a, { ingress: [rule('tcp', ['0.0.0.0/0'], { ports: [80, 80] })] })).set(policyOf(b, { ingress: [rule('icmp', [`${a.ipv4}/32`], { icmp: [-1, -1] })] }));
      await fw.apply();
      assert.deepEqual([...await marks(), ...(await legacyMarkRewrites(hr)).map((f) => f.check)], [], backend);
      // told by where they are (its tables; its chains by table and name for the managed bridges), not read
      const bridges = Object.keys((await fw.input()).ports.bridges);
      const ran: string[] = [];
      const recording = { netns: h1.netns, run: (t: string, a: string[], i?: string) => { ran.push(`${t} ${a.join(' ')}`); return hr.run(t, a, i); } };
      assert.deepEqual([...await nftMarkRewrites(recording, undefined, bridges), ...await legacyMarkRewrites(recording, bridges)], [], backend);
      assert.deepEqual(ran.filter((c) => /\b(BF-|PALISADE-)|\bpalisade\b/.test(c)), [], `${backend}: ${ran.join('; ')}`);
      assert.equal(await pings(), true, `${backend}: a may ping b`);
      await restore('-A');
      assert.deepEqual(await marks(), ['foreign mark ip mangle PREROUTING'], backend);
      assert.equal(await pings(), false, `${backend}: the whole-mark restore drops it (the alert is right)`);
      await restore('-D');
      await restore('-A', '--mask', '0xc0000000');
      assert.deepEqual(await marks(), [], backend);
      assert.equal(await pings(), true, `${backend}: restored on bits 30–31 only, it passes`);
      await restore('-D', '--mask', '0xc0000000');
      await fw.dp.teardown();
    }
  } finally {
    await closeAll();
    await lab.destroy();
  }
});

test('typical neighbours give no mark alert: kube-proxy (iptables and nftables modes), Docker, libvirt, Flannel / Calico-style masked marks, firewalld, nftables.service; their whole-mark twins do', async () => {
  const kns = `pk${randomBytes(3).toString('hex')}`;
  await run('ip', ['netns', 'add', kns]);
  try {
    const kr = createRunner({ netns: kns });
    const ksh = async (script: string, stdin = '') => { const r = await run('ip', ['netns', 'exec', kns, 'sh', '-ec', script], { stdin }); assert.equal(r.code, 0, `${script}: ${r.stderr}`); };
    const marks = async () => [...await nftMarkRewrites(kr), ...await legacyMarkRewrites(kr)].map((f) => f.check);
    // iptables-nft and iptables-legacy both hold the same kube-proxy / Flannel / Docker / libvirt / Calico-style tables
    await ksh('iptables-nft-restore', IPT_NEIGHBOURS);
    await ksh('iptables-legacy-restore', IPT_NEIGHBOURS);
    await ksh('nft -f -', NFT_NEIGHBOURS);
    assert.deepEqual(await marks(), []);
    assert.deepEqual(unfixable(await preflight(kr, ['nft'], ['br0'])), [], 'nor any other alert (their FORWARD DROP accepts br0)');
    // twins: the same chains rewriting the whole mark
    await ksh(`iptables-nft -t nat -A KUBE-MARK-MASQ -j MARK --set-mark 0x4000
iptables-legacy -t mangle -A cali-PREROUTING -j CONNMARK --restore-mark
nft add rule ip kube-proxy mark-for-masquerade meta mark set ct mark`);
    assert.deepEqual((await marks()).sort(), ['foreign mark ip kube-proxy mark-for-masquerade', 'foreign mark ip mangle cali-PREROUTING (iptables-legacy)', 'foreign mark ip nat KUBE-MARK-MASQ']);
  } finally {
    await run('ip', ['netns', 'del', kns], { allowFail: true });
  }
});

/** kube-proxy (iptables mode), Flannel, Docker, libvirt's virbr0 and Calico-style masked marks, as iptables-save shows them. */
const IPT_NEIGHBOURS = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-X - [0:0]
:KUBE-SEP-X - [0:0]
:KUBE-NODEPORTS - [0:0]
:FLANNEL-POSTRTG - [0:0]
:DOCKER - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment "default/kubernetes:https cluster IP" -m tcp --dport 443 -j KUBE-SVC-X
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-SVC-X ! -s 10.244.0.0/16 -d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j KUBE-MARK-MASQ
-A KUBE-SVC-X -j KUBE-SEP-X
-A KUBE-SEP-X -s 192.168.1.10/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-X -p tcp -m tcp -j DNAT --to-destination 192.168.1.10:6443
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.0.0/16 -j RETURN
COMMIT
*mangle
:PREROUTING ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:cali-PREROUTING - [0:0]
-A PREROUTING -j cali-PREROUTING
-A cali-PREROUTING -j MARK --set-xmark 0x0/0x4000
-A cali-PREROUTING -m mark --mark 0x4000/0x4000 -j ACCEPT
-A cali-PREROUTING -j MARK --set-xmark 0x8000/0x8000
-A POSTROUTING -o virbr0 -p udp -m udp --dport 68 -j CHECKSUM --checksum-fill
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-FIREWALL - [0:0]
:LIBVIRT_FWI - [0:0]
:LIBVIRT_FWO - [0:0]
:LIBVIRT_FWX - [0:0]
-A INPUT -j KUBE-FIREWALL
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -j LIBVIRT_FWX
-A FORWARD -j LIBVIRT_FWI
-A FORWARD -j LIBVIRT_FWO
-A DOCKER-USER -i br0 -o br0 -j ACCEPT
-A DOCKER-USER -j RETURN
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A LIBVIRT_FWX -i virbr0 -o virbr0 -j ACCEPT
-A LIBVIRT_FWI -d 192.168.122.0/24 -o virbr0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A LIBVIRT_FWI -o virbr0 -j REJECT --reject-with icmp-port-unreachable
-A LIBVIRT_FWO -s 192.168.122.0/24 -i virbr0 -j ACCEPT
-A LIBVIRT_FWO -i virbr0 -j REJECT --reject-with icmp-port-unreachable
COMMIT
`;

/** kube-proxy (nftables mode), firewalld (br0 in its trusted zone: else its final reject drops the VMs' traffic), libvirt (nftables) and nftables.service's default table. */
const NFT_NEIGHBOURS = `table ip kube-proxy {
  chain mark-for-masquerade { meta mark set meta mark or 0x4000; }
  chain masquerading { meta mark & 0x4000 == 0 return; meta mark set meta mark xor 0x4000; masquerade fully-random; }
  chain services { ip daddr 10.96.0.1 tcp dport 443 jump mark-for-masquerade; }
  chain nat-prerouting { type nat hook prerouting priority dstnat; policy accept; jump services; }
  chain nat-postrouting { type nat hook postrouting priority srcnat; policy accept; jump masquerading; }
  chain filter-forward { type filter hook forward priority -110; policy accept; ct state new jump services; }
}
table inet firewalld {
  chain mangle_PREROUTING { type filter hook prerouting priority mangle + 10; policy accept; jump mangle_PREROUTING_POLICIES; }
  chain mangle_PREROUTING_POLICIES { return; }
  chain filter_FORWARD { type filter hook forward priority filter + 10; policy accept; ct state established,related accept; ct status dnat accept; iifname "lo" accept; ct state invalid drop; jump filter_FORWARD_ZONES; reject with icmpx admin-prohibited; }
  chain filter_FORWARD_ZONES { iifname "br0" goto filter_FWD_trusted; goto filter_FWD_public; }
  chain filter_FWD_trusted { accept; }
  chain filter_FWD_public { oifname "eth0" accept; }
}
table ip libvirt_network {
  chain forward { type filter hook forward priority filter; policy accept; counter jump guest_cross; }
  chain guest_cross { iif "lo" oif "lo" accept; }
  chain postrouting { type nat hook postrouting priority srcnat; policy accept; ip saddr 192.168.122.0/24 ip daddr != 192.168.122.0/24 masquerade; }
}
table inet filter {
  chain input { type filter hook input priority filter;; }
  chain forward { type filter hook forward priority filter;; }
  chain output { type filter hook output priority filter;; }
}
`;

test('with real packets (nftables backend beside Docker\'s FORWARD DROP): an accept the VM traffic never reaches — after DOCKER-USER\'s RETURN, in a chain only docker0 jumps to, only towards another interface — is no pass; the reachable twins are', async () => {
  const lab = await createLab();
  try {
    const h1 = await lab.addHost('h1');
    const a = await lab.addVm({ host: h1, name: 'a', nics: [{ mac: '52:54:00:00:0f:0a', ipv4: '198.51.100.80/24' }] });
    const b = await lab.addVm({ host: h1, name: 'b', nics: [{ mac: '52:54:00:00:0f:0b', ipv4: '198.51.100.81/24' }] });
    const hr = createRunner({ netns: h1.netns });
    const fw = new HostFw(h1, 'nftables');
    fw.set(policyOf(a)).set(policyOf(b, { ingress: [rule('icmp', [`${a.ipv4}/32`], { icmp: [-1, -1] })] }));
    await fw.apply();
    const [br] = Object.keys((await fw.input()).ports.bridges);
    const ipt = async (script: string) => { for (const line of script.trim().split('\n')) await h1.exec('iptables', line.trim().split(/\s+/)); };
    const verdict = async () => ({ check: (await forwardDropCheck(hr, [br!])).map((f) => f.ok), ping: (await ping(a, b.ipv4!, { timeoutMs: 1500 })).ok });
    await ipt(`-P FORWARD DROP
-A FORWARD -m physdev ! --physdev-is-bridged -j ACCEPT
-A FORWARD -i ${br} -m physdev --physdev-in vnet-none -j ACCEPT`);
    assert.deepEqual(await verdict(), { check: [false], ping: false }, 'physdev for routed traffic only, or for one other port');
    await ipt(`-F FORWARD
-N DOCKER-USER
-A FORWARD -j DOCKER-USER
-A DOCKER-USER -j RETURN
-A DOCKER-USER -i ${br} -o ${br} -j ACCEPT`);
    assert.deepEqual(await verdict(), { check: [false], ping: false }, 'appended after the RETURN: never reached');
    await ipt(`-I DOCKER-USER -i ${br} -o ${br} -j ACCEPT`);
    assert.deepEqual(await verdict(), { check: [true], ping: true }, 'inserted before it: passes');
    await ipt(`-F DOCKER-USER
-N ONLY-DOCKER
-A ONLY-DOCKER -j ACCEPT
-A FORWARD -i docker0 -j ONLY-DOCKER`);
    assert.deepEqual(await verdict(), { check: [false], ping: false }, 'an accept only docker0\'s traffic reaches');
    await ipt(`-A FORWARD -i ${br} -j ONLY-DOCKER`);
    assert.deepEqual(await verdict(), { check: [true], ping: true }, 'reached from the bridge too');
    await ipt(`-D FORWARD -i ${br} -j ONLY-DOCKER
-A FORWARD -i ${br} -o eth9 -j ACCEPT
-A FORWARD -i ${br} -m conntrack --ctstate ESTABLISHED -j ACCEPT
-A FORWARD -i ${br} -j DROP
-A FORWARD -i ${br} -j ACCEPT`);
    assert.deepEqual(await verdict(), { check: [false], ping: false }, 'accepts towards another interface or for established flows only, then a drop first');
    await ipt(`-I FORWARD -i ${br} -g ONLY-DOCKER`);
    assert.deepEqual(await verdict(), { check: [true], ping: true }, 'a goto to an accept, before the drop');
    await h1.exec('iptables', ['-P', 'FORWARD', 'ACCEPT']);
    await fw.dp.teardown();
  } finally {
    await closeAll();
    await lab.destroy();
  }
});

test('with real packets (iptables backend): another base chain added to ebtables\' nat table at a later priority does not hide a foreign mark rewrite between Palisade\'s marking (-300) and it', async () => {
  const lab = await createLab();
  try {
    const h1 = await lab.addHost('h1');
    const a = await lab.addVm({ host: h1, name: 'a', nics: [{ mac: '52:54:00:00:10:0a', ipv4: '198.51.100.90/24' }] });
    const b = await lab.addVm({ host: h1, name: 'b', nics: [{ mac: '52:54:00:00:10:0b', ipv4: '198.51.100.91/24' }] });
    const hr = createRunner({ netns: h1.netns });
    const fw = new HostFw(h1, 'iptables');
    fw.set(policyOf(a)).set(policyOf(b, { ingress: [rule('icmp', [`${a.ipv4}/32`], { icmp: [-1, -1] })] }));
    await fw.apply();
    const marks = async () => (await nftMarkRewrites(hr)).map((f) => f.check);
    const pings = async () => (await ping(a, b.ipv4!, { timeoutMs: 1500 })).ok;
    await h1.exec('nft', ['add', 'chain', 'bridge', 'nat', 'late', '{ type filter hook prerouting priority 0; policy accept; }']);
    assert.deepEqual(await marks(), [], 'an empty chain writes nothing');
    assert.equal(await pings(), true);
    await h1.exec('nft', ['add', 'table', 'bridge', 'other']);
    await h1.exec('nft', ['add', 'chain', 'bridge', 'other', 'pre', '{ type filter hook prerouting priority -200; policy accept; }']);
    await h1.exec('nft', ['add', 'rule', 'bridge', 'other', 'pre', 'meta', 'mark', 'set', '0x5']);
    assert.equal(await pings(), false, 'the rewrite at -200 drops the ping');
    assert.deepEqual(await marks(), ['foreign mark bridge other pre'], 'and is said');
    await h1.exec('nft', ['delete', 'table', 'bridge', 'other']);
    await h1.exec('nft', ['delete', 'chain', 'bridge', 'nat', 'late']);
    await fw.dp.teardown();
  } finally {
    await closeAll();
    await lab.destroy();
  }
});

test('iptables-legacy\'s FORWARD is followed like the nft view: an accept after DOCKER-USER\'s RETURN, in a chain only docker0 reaches, or for another bridge only, is no pass', async () => {
  const gns = `pg${randomBytes(3).toString('hex')}`;
  await run('ip', ['netns', 'add', gns]);
  try {
    const gr = createRunner({ netns: gns });
    const gsh = async (script: string) => { const r = await run('ip', ['netns', 'exec', gns, 'sh', '-ec', script]); assert.equal(r.code, 0, `${script}: ${r.stderr}`); };
    const ok = async (bridges: string[]) => (await legacyForwardDropCheck(gr, bridges)).filter((f) => f.check.startsWith('forward policy ip ')).map((f) => f.ok);
    await gsh(`iptables-legacy -P FORWARD DROP
iptables-legacy -N DOCKER-USER
iptables-legacy -A FORWARD -j DOCKER-USER
iptables-legacy -A DOCKER-USER -j RETURN
iptables-legacy -A DOCKER-USER -i br0 -o br0 -j ACCEPT`);
    assert.deepEqual(await ok(['br0']), [false], 'after the RETURN');
    await gsh('iptables-legacy -I DOCKER-USER -i br0 -o br0 -j ACCEPT');
    assert.deepEqual(await ok(['br0']), [true], 'before it');
    assert.deepEqual(await ok(['br0', 'cloudbr1']), [false], 'cloudbr1 not passed');
    await gsh(`iptables-legacy -F DOCKER-USER
iptables-legacy -N ONLY-DOCKER
iptables-legacy -A ONLY-DOCKER -j ACCEPT
iptables-legacy -A FORWARD -i docker0 -j ONLY-DOCKER
iptables-legacy -A FORWARD -m physdev ! --physdev-is-bridged -j ACCEPT`);
    assert.deepEqual(await ok(['br0']), [false], 'only docker0 reaches it; a negated physdev is routed traffic only');
    await gsh('iptables-legacy -A FORWARD -m physdev --physdev-is-bridged -j ACCEPT');
    assert.deepEqual(await ok(['br0', 'cloudbr1']), [true]);
  } finally {
    await run('ip', ['netns', 'del', gns], { allowFail: true });
  }
});

test('with real IPv6 packets, per backend: ip6tables -P FORWARD DROP is passed by the iptables backend\'s own ip6 jump (no alert, the ping passes) and not by the nftables backend (alert, the ping is dropped)', async () => {
  const lab = await createLab();
  try {
    const h1 = await lab.addHost('h1');
    const a = await lab.addVm({ host: h1, name: 'a', nics: [{ mac: '52:54:00:00:11:0a', ipv4: '198.51.100.100/24', ipv6: '2001:db8:ff::100/64' }] });
    const b = await lab.addVm({ host: h1, name: 'b', nics: [{ mac: '52:54:00:00:11:0b', ipv4: '198.51.100.101/24', ipv6: '2001:db8:ff::101/64' }] });
    const hr = createRunner({ netns: h1.netns });
    const all6 = { ingress: [rule('all', ['::/0'])] };
    for (const backend of BACKENDS) {
      const fw = new HostFw(h1, backend);
      fw.set(policyOf(a, {}, all6)).set(policyOf(b, {}, all6));
      await fw.apply();
      assert.equal((await ping(a, b.ipv6!, { timeoutMs: 2000 })).ok, true, `${backend}: the group lets a ping b over IPv6`);
      const bridges = Object.keys((await fw.input()).ports.bridges);
      await h1.exec('ip6tables', ['-P', 'FORWARD', 'DROP']);
      assert.deepEqual((await forwardDropCheck(hr, bridges)).map((f) => [f.check, f.ok]), [['forward policy ip6 filter FORWARD', backend === 'iptables']], backend);
      assert.equal((await ping(a, b.ipv6!, { timeoutMs: 1500 })).ok, backend === 'iptables', `${backend}: and the verdict is right`);
      await h1.exec('ip6tables', ['-P', 'FORWARD', 'ACCEPT']);
      await fw.dp.teardown();
    }
  } finally {
    await closeAll();
    await lab.destroy();
  }
});

test('every managed bridge must pass on its own: an accept for br0 leaves cloudbr1\'s VMs to the policy', async () => {
  const yns = `py${randomBytes(3).toString('hex')}`;
  await run('ip', ['netns', 'add', yns]);
  try {
    const yr = createRunner({ netns: yns });
    const ysh = async (script: string) => { const r = await run('ip', ['netns', 'exec', yns, 'sh', '-ec', script]); assert.equal(r.code, 0, `${script}: ${r.stderr}`); };
    await ysh(`iptables -P FORWARD DROP
iptables -N DOCKER-USER
iptables -A FORWARD -j DOCKER-USER
iptables -A DOCKER-USER -i br0 -o br0 -j ACCEPT`);
    const ok = async (bridges: string[]) => (await forwardDropCheck(yr, bridges)).map((f) => f.ok);
    assert.deepEqual(await ok(['br0']), [true]);
    assert.deepEqual(await ok(['br0', 'cloudbr1']), [false], 'cloudbr1 is not passed');
    await ysh('iptables -A DOCKER-USER -i cloudbr1 -o cloudbr1 -j ACCEPT');
    assert.deepEqual(await ok(['br0', 'cloudbr1']), [true]);
  } finally {
    await run('ip', ['netns', 'del', yns], { allowFail: true });
  }
});

test('nft\'s interface verdict maps count by the bridge\'s entry: accept passes it, drop or no entry does not, a jump is followed', async () => {
  const vns = `pv${randomBytes(3).toString('hex')}`;
  await run('ip', ['netns', 'add', vns]);
  try {
    const vr = createRunner({ netns: vns });
    const vsh = async (script: string) => { const r = await run('ip', ['netns', 'exec', vns, 'sh', '-ec', script]); assert.equal(r.code, 0, `${script}: ${r.stderr}`); };
    const ok = async (bridges: string[]) => (await forwardDropCheck(vr, bridges)).map((f) => f.ok);
    await vsh(`nft add table ip t
nft add chain ip t f '{ type filter hook forward priority 0; policy drop; }'
nft add chain ip t x
nft add rule ip t x accept
nft add rule ip t f iifname vmap '{ "br0" : accept, "eth*" : drop, "cloud*" : jump x, "br9" : drop }'`);
    assert.deepEqual(await ok(['br0']), [true], 'br0: accept');
    assert.deepEqual(await ok(['cloudbr1']), [true], 'cloudbr1: the jump to an accept');
    assert.deepEqual(await ok(['br9']), [false], 'br9: drop');
    assert.deepEqual(await ok(['br7']), [false], 'br7: no entry');
    assert.deepEqual(await ok(['br0', 'br9']), [false]);
  } finally {
    await run('ip', ['netns', 'del', vns], { allowFail: true });
  }
});

test('a foreign nftables table merely named palisade (ip family: Palisade\'s are bridge and inet) is read like any other', async () => {
  const xns = `px${randomBytes(3).toString('hex')}`;
  await run('ip', ['netns', 'add', xns]);
  try {
    const xr = createRunner({ netns: xns });
    const xsh = async (script: string) => { const r = await run('ip', ['netns', 'exec', xns, 'sh', '-ec', script]); assert.equal(r.code, 0, `${script}: ${r.stderr}`); };
    await xsh(`nft add table ip palisade
nft add chain ip palisade pre '{ type filter hook prerouting priority -150; policy accept; }'
nft add rule ip palisade pre meta mark set meta mark or 0x40000000
nft add chain ip palisade fchain '{ type filter hook forward priority 0; policy drop; }'
nft add rule ip palisade fchain iifname br0 accept`);
    assert.deepEqual((await nftMarkRewrites(xr)).map((f) => f.check), [], 'bit 30 only: quiet');
    assert.deepEqual((await forwardDropCheck(xr, ['br0'])).map((f) => [f.check, f.ok]), [['forward policy ip palisade fchain', true]]);
    await xsh(`nft add rule ip palisade pre meta mark set ct mark
nft flush chain ip palisade fchain`);
    assert.deepEqual((await nftMarkRewrites(xr)).map((f) => f.check), ['foreign mark ip palisade pre']);
    assert.deepEqual((await forwardDropCheck(xr, ['br0'])).map((f) => [f.check, f.ok]), [['forward policy ip palisade fchain', false]]);
  } finally {
    await run('ip', ['netns', 'del', xns], { allowFail: true });
  }
});

test('an agent starting on a host whose Docker policy accepts the VM bridge judges the forward policy for that bridge before its first report (not for no bridge: an Alert until the next pass); the ping shows it passes', async () => {
  const lab = await createLab();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-pf-'));
  let agent: Agent | null = null;
  try {
    const h1 = await lab.addHost('h1');
    const a = await lab.addVm({ host: h1, name: 'a', nics: [{ mac: '52:54:00:00:12:0a', ipv4: '198.51.100.110/24' }] });
    const b = await lab.addVm({ host: h1, name: 'b', nics: [{ mac: '52:54:00:00:12:0b', ipv4: '198.51.100.111/24' }] });
    const hashed = (p: ReturnType<typeof policyOf>) => ({ ...p, hash: '0'.repeat(64) });
    const state = hostState([hashed(policyOf(a)), hashed(policyOf(b, { ingress: [rule('icmp', [`${a.ipv4}/32`], { icmp: [-1, -1] })] }))], [], 3);
    await saveState(dir, { serverUrl: '', savedAt: new Date().toISOString(), state, host: { hostname: 'kvm-pf', tokenSha256: tokenSha256('pf-token') } });
    const hdp = createDataplane('nftables', { netns: h1.netns });
    const [br] = Object.keys((await discoverPorts(hdp.runner, state)).bridges);
    for (const args of [['-P', 'FORWARD', 'DROP'], ['-N', 'DOCKER-USER'], ['-A', 'FORWARD', '-j', 'DOCKER-USER'], ['-A', 'DOCKER-USER', '-i', br!, '-o', br!, '-j', 'ACCEPT']]) await h1.exec('iptables', args);
    const judged: PreflightFinding[][] = [];
    const hr = createRunner({ netns: h1.netns });
    agent = new Agent({
      server: `http://127.0.0.1:${await freePort()}`, token: 'pf-token', hostname: 'kvm-pf', stateDir: dir, dataplane: hdp,
      discover: (st) => discoverPorts(hdp.runner, st),
      preflight: async (bridges) => { const f = await preflight(hr, ['nft'], bridges); judged.push(f); return f; },
      reconcileMs: 600_000, log: pino({ level: 'silent' }), backoffMinMs: 1000, backoffMaxMs: 5000,
    });
    await agent.start();
    const last = judged.at(-1)!.filter((f) => f.check.startsWith('forward policy'));
    assert.deepEqual(last.map((f) => [f.check, f.ok]), [['forward policy ip filter FORWARD', true]], JSON.stringify(last));
    assert.equal((await ping(a, b.ipv4!, { timeoutMs: 1500 })).ok, true, 'and the policy does pass the VMs\' traffic');
    await agent.stop();
    agent = null;
    await hdp.teardown();
    await hdp.close?.();
  } finally {
    await agent?.stop();
    await closeAll();
    await lab.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('with real packets, per backend: a netdev ingress chain on a VM\'s tap writing the whole mark runs before Palisade\'s marking — no alert, and the ping passes; the same write in bridge prerouting after it alerts and drops', async () => {
  const lab = await createLab();
  try {
    const h1 = await lab.addHost('h1');
    const a = await lab.addVm({ host: h1, name: 'a', nics: [{ mac: '52:54:00:00:13:0a', ipv4: '198.51.100.120/24' }] });
    const b = await lab.addVm({ host: h1, name: 'b', nics: [{ mac: '52:54:00:00:13:0b', ipv4: '198.51.100.121/24' }] });
    const hr = createRunner({ netns: h1.netns });
    const marks = async () => (await nftMarkRewrites(hr)).map((f) => f.check);
    const pings = async () => (await ping(a, b.ipv4!, { timeoutMs: 1500 })).ok;
    for (const backend of BACKENDS) {
      const fw = new HostFw(h1, backend);
      fw.set(policyOf(a)).set(policyOf(b, { ingress: [rule('icmp', [`${a.ipv4}/32`], { icmp: [-1, -1] })] }));
      await fw.apply();
      const input = await fw.input();
      const tap = input.ports.nics[policyOf(a).nics[0]!.nicId]!.device;
      await h1.exec('nft', ['add', 'table', 'netdev', 'other']);
      await h1.exec('nft', ['add', 'chain', 'netdev', 'other', 'in', `{ type filter hook ingress device ${tap} priority 0; policy accept; }`]);
      await h1.exec('nft', ['add', 'rule', 'netdev', 'other', 'in', 'meta', 'mark', 'set', '0xffffffff']);
      assert.deepEqual(await marks(), [], backend);
      assert.equal(await pings(), true, `${backend}: Palisade's marking rewrites it`);
      await h1.exec('nft', ['delete', 'table', 'netdev', 'other']);
      await h1.exec('nft', ['add', 'table', 'bridge', 'other']);
      await h1.exec('nft', ['add', 'chain', 'bridge', 'other', 'pre', '{ type filter hook prerouting priority 0; policy accept; }']);
      await h1.exec('nft', ['add', 'rule', 'bridge', 'other', 'pre', 'meta', 'mark', 'set', '0xffffffff']);
      assert.deepEqual(await marks(), ['foreign mark bridge other pre'], backend);
      assert.equal(await pings(), false, `${backend}: after it, the write drops the ping`);
      await h1.exec('nft', ['delete', 'table', 'bridge', 'other']);
      await fw.dp.teardown();
    }
  } finally {
    await closeAll();
    await lab.destroy();
  }
});

test('with real packets, per backend: a foreign forward chain accepting by default whose rules reject every VM packet (firewalld\'s final reject, EL\'s iptables-services `-A FORWARD -j REJECT` in iptables-legacy) alerts and drops; the bridge accepted before it passes quietly', async () => {
  const lab = await createLab();
  try {
    const h1 = await lab.addHost('h1');
    const a = await lab.addVm({ host: h1, name: 'a', nics: [{ mac: '52:54:00:00:14:0a', ipv4: '198.51.100.140/24' }] });
    const b = await lab.addVm({ host: h1, name: 'b', nics: [{ mac: '52:54:00:00:14:0b', ipv4: '198.51.100.141/24' }] });
    const hr = createRunner({ netns: h1.netns });
    for (const backend of BACKENDS) {
      const fw = new HostFw(h1, backend);
      fw.set(policyOf(a)).set(policyOf(b, { ingress: [rule('icmp', [`${a.ipv4}/32`], { icmp: [-1, -1] })] }));
      await fw.apply();
      const bridges = Object.keys((await fw.input()).ports.bridges);
      const br = bridges[0]!;
      const verdict = async () => ({
        alerts: unfixable([...await forwardDropCheck(hr, bridges), ...await legacyForwardDropCheck(hr, bridges)]).map((f) => f.check),
        ping: (await ping(a, b.ipv4!, { timeoutMs: 1500 })).ok,
      });
      // firewalld (nftables): filter_FORWARD has no policy (accept), dispatches by zone and ends with a reject
      const firewalld = (trusted: string) => `table inet firewalld {
  chain filter_FORWARD { type filter hook forward priority filter + 10; policy accept;
    ct state { established, related } accept; ct status dnat accept; iifname "lo" accept; ct state invalid drop;
    jump filter_FORWARD_ZONES; reject with icmpx admin-prohibited; }
  chain filter_FORWARD_ZONES { iifname "${trusted}" goto filter_FWD_trusted; goto filter_FWD_public; }
  chain filter_FWD_public { jump filter_FWD_public_allow; }
  chain filter_FWD_public_allow { oifname "eth0" accept; }
  chain filter_FWD_trusted { accept; }
}
`;
      await h1.exec('nft', ['-f', '-'], { stdin: firewalld('eth7') });
      assert.deepEqual(await verdict(), { alerts: ['forward chain inet firewalld filter_FORWARD'], ping: false }, `${backend}: the bridge in no zone is rejected`);
      await h1.exec('nft', ['delete', 'table', 'inet', 'firewalld']);
      await h1.exec('nft', ['-f', '-'], { stdin: firewalld(br) });
      assert.deepEqual(await verdict(), { alerts: [], ping: true }, `${backend}: the bridge in the trusted zone passes`);
      await h1.exec('nft', ['delete', 'table', 'inet', 'firewalld']);
      // EL's iptables-services, on a host whose iptables is the legacy one
      await h1.exec('iptables-legacy', ['-A', 'FORWARD', '-j', 'REJECT', '--reject-with', 'icmp-host-prohibited']);
      assert.deepEqual(await verdict(), { alerts: ['forward chain ip filter FORWARD (iptables-legacy)'], ping: false }, `${backend}: rejected`);
      await h1.exec('iptables-legacy', ['-I', 'FORWARD', '-i', br, '-o', br, '-j', 'ACCEPT']);
      assert.deepEqual(await verdict(), { alerts: [], ping: true }, `${backend}: accepted first`);
      await h1.exec('iptables-legacy', ['-F', 'FORWARD']);
      await fw.dp.teardown();
    }
  } finally {
    await closeAll();
    await lab.destroy();
  }
});

test('with real packets: in a bridge-family forward chain iifname / oifname name the port, not the bridge — an accept on the bridge\'s name there passes nothing (alert, dropped); an unconditional accept passes', async () => {
  const lab = await createLab();
  try {
    const h1 = await lab.addHost('h1');
    const a = await lab.addVm({ host: h1, name: 'a', nics: [{ mac: '52:54:00:00:15:0a', ipv4: '198.51.100.150/24' }] });
    const b = await lab.addVm({ host: h1, name: 'b', nics: [{ mac: '52:54:00:00:15:0b', ipv4: '198.51.100.151/24' }] });
    const hr = createRunner({ netns: h1.netns });
    const fw = new HostFw(h1, 'nftables');
    fw.set(policyOf(a)).set(policyOf(b, { ingress: [rule('icmp', [`${a.ipv4}/32`], { icmp: [-1, -1] })] }));
    await fw.apply();
    const bridges = Object.keys((await fw.input()).ports.bridges);
    const verdict = async () => ({ check: (await forwardDropCheck(hr, bridges)).map((f) => [f.check, f.ok]), ping: (await ping(a, b.ipv4!, { timeoutMs: 1500 })).ok });
    await h1.exec('nft', ['-f', '-'], { stdin: `table bridge other {\n  chain forward { type filter hook forward priority 0; policy drop; iifname "${bridges[0]}" accept; }\n}\n` });
    assert.deepEqual(await verdict(), { check: [['forward policy bridge other forward', false]], ping: false });
    await h1.exec('nft', ['add', 'rule', 'bridge', 'other', 'forward', 'accept']);
    assert.deepEqual(await verdict(), { check: [['forward policy bridge other forward', true]], ping: true });
    await h1.exec('nft', ['delete', 'table', 'bridge', 'other']);
    await fw.dp.teardown();
  } finally {
    await closeAll();
    await lab.destroy();
  }
});

test('an accept on the bridge by interface index (`iif br0`, as libvirt writes its rules) passes it like iifname; on another interface\'s index it does not', async () => {
  const ins = `pi${randomBytes(3).toString('hex')}`;
  await run('ip', ['netns', 'add', ins]);
  try {
    const ir = createRunner({ netns: ins });
    const ish = async (script: string) => { const r = await run('ip', ['netns', 'exec', ins, 'sh', '-ec', script]); assert.equal(r.code, 0, `${script}: ${r.stderr}`); };
    await ish(`ip link add br0 type bridge
ip link add virbr9 type bridge
nft add table ip t
nft add chain ip t f '{ type filter hook forward priority 0; policy drop; }'
nft add rule ip t f iif virbr9 oif virbr9 accept`);
    const ok = async () => (await forwardDropCheck(ir, ['br0'])).map((f) => f.ok);
    assert.deepEqual(await ok(), [false]);
    await ish('nft add rule ip t f iif br0 oif br0 accept');
    assert.deepEqual(await ok(), [true]);
  } finally {
    await run('ip', ['netns', 'del', ins], { allowFail: true });
  }
});

test('with real packets, per backend: a foreign bridge forward chain at priority 0 writing the whole mark runs before br_netfilter\'s IP forward hook (same priority: the later hook first) — alert, and the ping is dropped; at priority 10, after it, neither', async () => {
  const lab = await createLab();
  try {
    const h1 = await lab.addHost('h1');
    const a = await lab.addVm({ host: h1, name: 'a', nics: [{ mac: '52:54:00:00:16:0a', ipv4: '198.51.100.170/24' }] });
    const b = await lab.addVm({ host: h1, name: 'b', nics: [{ mac: '52:54:00:00:16:0b', ipv4: '198.51.100.171/24' }] });
    const hr = createRunner({ netns: h1.netns });
    const verdict = async () => ({ marks: (await nftMarkRewrites(hr)).map((f) => f.check), ping: (await ping(a, b.ipv4!, { timeoutMs: 1500 })).ok });
    for (const backend of BACKENDS) {
      const fw = new HostFw(h1, backend);
      fw.set(policyOf(a)).set(policyOf(b, { ingress: [rule('icmp', [`${a.ipv4}/32`], { icmp: [-1, -1] })] }));
      await fw.apply();
      for (const [prio, alerts] of [[10, false], [0, true]] as const) {
        await h1.exec('nft', ['-f', '-'], { stdin: `table bridge other {\n  chain f { type filter hook forward priority ${prio}; policy accept; meta mark set 0x5; }\n}\n` });
        assert.deepEqual(await verdict(), { marks: alerts ? ['foreign mark bridge other f'] : [], ping: !alerts }, `${backend}: priority ${prio}`);
        await h1.exec('nft', ['delete', 'table', 'bridge', 'other']);
      }
      await fw.dp.teardown();
    }
  } finally {
    await closeAll();
    await lab.destroy();
  }
});

/** A namespace of its own for one test (per-run prefix), removed after it whatever happens. */
async function inNamespace(prefix: string, body: (r: ReturnType<typeof createRunner>, sh: (script: string) => Promise<string>, name: string) => Promise<void>): Promise<void> {
  const name = `${prefix}${randomBytes(3).toString('hex')}`;
  await run('ip', ['netns', 'add', name]);
  try {
    const nsh = async (script: string) => { const r = await run('ip', ['netns', 'exec', name, 'sh', '-ec', script]); assert.equal(r.code, 0, `${script}: ${r.stderr}`); return r.stdout; };
    await body(createRunner({ netns: name }), nsh, name);
  } finally {
    await run('ip', ['netns', 'del', name], { allowFail: true });
  }
}

test('a negated interface match that every VM packet meets (`oifname != "eth0" drop`, `! -o eth0 -j DROP`) is a drop on their path, and such an accept passes them; negated on the bridge, neither. A drop under other conditions, inline or through a jump to a chain that only drops, is that firewall\'s own choice: no alert', async () => {
  await inNamespace('pn', async (r, nsh) => {
    const checks = async () => [...await forwardDropCheck(r, ['br0']), ...await legacyForwardDropCheck(r, ['br0'])].map((f) => [f.check, f.ok]);
    const accepting = (...rules: string[]) => nsh(`nft flush ruleset
nft -f - <<'X'
table ip t {
  chain blackhole { drop; }
  chain counts { counter; }
  chain f { type filter hook forward priority 0; policy accept;
${rules.join('\n')}
  }
}
X`);
    await accepting('oifname != "eth0" drop');
    assert.deepEqual(await checks(), [['forward chain ip t f', false]], 'every packet of br0 goes out of another interface than eth0');
    await accepting('oifname != "eth0" accept', 'drop');
    assert.deepEqual(await checks(), [], 'the same match accepting first: br0 passes');
    await accepting('oifname != { "br*", "eth0" } drop');
    assert.deepEqual(await checks(), [], 'negated on the bridge: not its traffic');
    await accepting('iifname != "eth0" jump blackhole');
    assert.deepEqual(await checks(), [['forward chain ip t f', false]], 'a jump every VM packet takes, to a chain that drops');
    await accepting('iifname != "eth0" jump counts');
    assert.deepEqual(await checks(), [], 'to a chain that only counts');
    await accepting('ip saddr 10.0.0.0/8 jump blackhole', 'ip saddr 10.0.0.0/8 drop', 'tcp dport 25 goto blackhole');
    assert.deepEqual(await checks(), [], 'only some VM packets: not judged (crowdsec-style blocklists)');
    // dropping by default: a negated accept on another interface passes the bridge, one on the bridge does not
    await nsh(`nft flush ruleset
nft add table ip t
nft add chain ip t f '{ type filter hook forward priority 0; policy drop; }'
nft add rule ip t f iifname != "br0" accept`);
    assert.deepEqual(await checks(), [['forward policy ip t f', false]]);
    await nsh('nft insert rule ip t f iifname != "eth0" accept');
    assert.deepEqual(await checks(), [['forward policy ip t f', true]]);
    // iptables-legacy's FORWARD likewise
    await nsh(`nft flush ruleset
iptables-legacy -A FORWARD ! -o br0 -j DROP`);
    assert.deepEqual(await checks(), [], 'legacy, negated on the bridge');
    await nsh('iptables-legacy -A FORWARD ! -o eth0 -j DROP');
    assert.deepEqual(await checks(), [['forward chain ip filter FORWARD (iptables-legacy)', false]]);
  });
});

/** Binds NFQUEUE `queue` in namespace `name` (a real listener: nfnetlink, NFQNL_CFG_CMD_BIND) until killed; resolves once bound. */
async function queueListener(name: string, queue: number): Promise<{ stop: () => void }> {
  const script = `import socket, struct, sys, time
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
s.bind((0, 0))
attr = struct.pack('=HH', 8, 1) + struct.pack('=BBH', 1, 0, 0)
payload = struct.pack('=BBH', 0, 0, socket.htons(${queue})) + attr
s.send(struct.pack('=IHHII', 16 + len(payload), (3 << 8) | 2, 1 | 4, 1, 0) + payload)
err = struct.unpack('=i', s.recv(4096)[16:20])[0]
print('bound' if err == 0 else 'error %d' % err, flush=True)
time.sleep(3600)`;
  const c = trackChild(spawn('ip', ['netns', 'exec', name, 'python3', '-c', script], { stdio: ['ignore', 'pipe', 'inherit'] }));
  const said = await new Promise<string>((resolve) => { c.stdout!.once('data', (d) => resolve(String(d).trim())); c.once('exit', () => resolve('exited')); });
  assert.equal(said, 'bound');
  return { stop: () => { c.kill('SIGKILL'); } };
}

test('with real packets: an NFQUEUE verdict every VM packet meets with no program on the queue drops them (alert); with --queue-bypass they pass (quiet); with a program listening on each of its queues its verdict is that program\'s (quiet)', async () => {
  const lab = await createLab();
  let listener: { stop: () => void } | undefined;
  try {
    const h1 = await lab.addHost('h1');
    const a = await lab.addVm({ host: h1, name: 'a', nics: [{ mac: '52:54:00:00:17:0a', ipv4: '198.51.100.180/24' }] });
    const b = await lab.addVm({ host: h1, name: 'b', nics: [{ mac: '52:54:00:00:17:0b', ipv4: '198.51.100.181/24' }] });
    const hr = createRunner({ netns: h1.netns });
    const fw = new HostFw(h1, 'nftables');
    fw.set(policyOf(a)).set(policyOf(b, { ingress: [rule('icmp', [`${a.ipv4}/32`], { icmp: [-1, -1] })] }));
    await fw.apply();
    const bridges = Object.keys((await fw.input()).ports.bridges);
    const alerts = async () => unfixable([...await forwardDropCheck(hr, bridges), ...await legacyForwardDropCheck(hr, bridges)]).map((f) => f.check);
    const pings = async () => (await ping(a, b.ipv4!, { timeoutMs: 1500 })).ok;
    assert.equal(await pings(), true, 'a may ping b');
    // iptables-nft (nft's JSON shows NFQUEUE without its options: read as iptables text)
    await h1.exec('iptables', ['-A', 'FORWARD', '-j', 'NFQUEUE', '--queue-num', '3']);
    assert.deepEqual(await alerts(), ['forward chain ip filter FORWARD']);
    assert.equal(await pings(), false, 'no program on queue 3: dropped (the alert is right)');
    await h1.exec('iptables', ['-R', 'FORWARD', '1', '-j', 'NFQUEUE', '--queue-num', '3', '--queue-bypass']);
    assert.deepEqual(await alerts(), []);
    assert.equal(await pings(), true, 'bypass: it passes');
    await h1.exec('iptables', ['-R', 'FORWARD', '1', '-j', 'NFQUEUE', '--queue-balance', '3:4']);
    listener = await queueListener(h1.netns, 3);
    assert.deepEqual(await alerts(), ['forward chain ip filter FORWARD'], 'a program on queue 3, none on 4');
    await h1.exec('iptables', ['-R', 'FORWARD', '1', '-j', 'NFQUEUE', '--queue-num', '3']);
    assert.deepEqual(await alerts(), [], 'a program on its queue decides (not judged)');
    listener.stop();
    listener = undefined;
    await h1.exec('iptables', ['-F', 'FORWARD']);
    // iptables-legacy: the plain QUEUE target is queue 0
    await h1.exec('iptables-legacy', ['-A', 'FORWARD', '-j', 'QUEUE']);
    assert.deepEqual(await alerts(), ['forward chain ip filter FORWARD (iptables-legacy)']);
    assert.equal(await pings(), false);
    await h1.exec('iptables-legacy', ['-R', 'FORWARD', '1', '-j', 'NFQUEUE', '--queue-bypass']);
    assert.deepEqual(await alerts(), []);
    assert.equal(await pings(), true);
    await h1.exec('iptables-legacy', ['-F', 'FORWARD']);
    await fw.dp.teardown();
  } finally {
    listener?.stop();
    await closeAll();
    await lab.destroy();
  }
});

test('nft\'s own queue statement (this kernel has no nft_queue: its JSON shapes) and the listener list are read as the kernel treats them', () => {
  assert.equal(queueEnd({ num: 3 }, new Set()), 'drop');
  assert.equal(queueEnd({ num: 3 }, new Set([3])), 'accept');
  assert.equal(queueEnd({ num: { range: [1, 3] } }, new Set([1, 2])), 'drop');
  assert.equal(queueEnd({ num: { range: [1, 3] } }, new Set([1, 2, 3])), 'accept');
  assert.equal(queueEnd({ num: 3, flags: 'bypass' }, new Set()), 'accept');
  assert.equal(queueEnd({ num: { range: [1, 3] }, flags: ['bypass', 'fanout'] }, new Set()), 'accept');
  assert.equal(queueEnd({}, new Set()), 'drop', 'queue 0 by default');
  assert.deepEqual([...queuesListened('    5   4254     0 0 65531     0     0        0  1\n   12   4255     0 2 65531     0     0        0  1\n')], [5, 12]);
  assert.deepEqual([...queuesListened('')], []);
});

test('a dropping forward chain whose VM path passes more than JUMPS_READ chains alerts (not judged) without reading its whole table; its twin with fewer chains before the same accept passes', async () => {
  await inNamespace('pj', async (r, nsh, name) => {
    // (nft refuses paths deeper than 16 chains: a long path is many chains jumped to in turn, each returning)
    const table = (counting: number) => nsh(`nft flush ruleset
nft -f - <<'X'
table ip t {
  chain last { iifname "br0" accept; }
${Array.from({ length: counting }, (_, i) => `  chain c${i} { counter; }`).join('\n')}
  chain f { type filter hook forward priority 0; policy drop; ${Array.from({ length: counting }, (_, i) => `jump c${i}; `).join('')}jump last; }
}
X`);
    const ran: string[] = [];
    const recording = { netns: name, run: (t: string, a: string[], i?: string) => { ran.push(`${t} ${a.join(' ')}`); return r.run(t, a, i); } };
    await table(JUMPS_READ + 5);
    const found = await forwardDropCheck(recording, ['br0']);
    assert.deepEqual(found.map((f) => [f.check, f.ok]), [['forward policy ip t f', false]]);
    assert.match(found[0]!.detail, new RegExp(`reaches no verdict within ${JUMPS_READ} chains`));
    assert.deepEqual(ran.filter((c) => / list (table|ruleset)\b/.test(c)), [], ran.join('; '));
    assert.ok(ran.length <= JUMPS_READ + 1, `${ran.length} nft runs`);
    await table(JUMPS_READ - 5);
    assert.deepEqual((await forwardDropCheck(recording, ['br0'])).map((f) => [f.check, f.ok]), [['forward policy ip t f', true]]);
  });
});

test('a foreign rule rewriting the mark is judged wherever it carries a `pal:` comment, and a foreign chain named like Palisade\'s is followed; Palisade\'s own chains (by name, for the managed bridges) are not', async () => {
  await inNamespace('pc', async (r, nsh) => {
    const marks = async () => [...await nftMarkRewrites(r, undefined, ['br0']), ...await legacyMarkRewrites(r, ['br0'])].map((f) => f.check).sort();
    // harmless twins first: a commented jump to a chain setting bit 30 only
    await nsh(`iptables -t mangle -N BF-x
iptables -t mangle -A PREROUTING -m comment --comment "pal:fwd.br0.abc" -j BF-x
iptables -t mangle -A BF-x -j MARK --set-xmark 0x40000000/0x40000000
nft add table ip o
nft add chain ip o pre '{ type filter hook prerouting priority -150; policy accept; }'
nft add rule ip o pre meta mark set meta mark or 0x40000000 comment '"pal:x"'
iptables-legacy -t mangle -A PREROUTING -m comment --comment "pal:raw.1" -j MARK --set-xmark 0x40000000/0x40000000`);
    assert.deepEqual(await marks(), []);
    await nsh(`iptables -t mangle -A BF-x -j MARK --set-mark 0x0
nft add rule ip o pre meta mark set ct mark comment '"pal:x"'
iptables-legacy -t mangle -A PREROUTING -m comment --comment "pal:raw.2" -j CONNMARK --restore-mark`);
    assert.deepEqual(await marks(), ['foreign mark ip mangle BF-x', 'foreign mark ip mangle PREROUTING (iptables-legacy)', 'foreign mark ip o pre']);
    // the managed bridge's own chain is Palisade's where Palisade puts it (filter): not followed (its
    // rules are the groups'); of that name in another table, someone else's
    await nsh(`iptables -N BF-br0
iptables -A FORWARD -j BF-br0
iptables -A BF-br0 -j MARK --set-mark 0x0`);
    assert.deepEqual((await nftMarkRewrites(r, undefined, ['br0'])).map((f) => f.check).sort(), ['foreign mark ip mangle BF-x', 'foreign mark ip o pre']);
    await nsh(`iptables -t mangle -N BF-br0
iptables -t mangle -A PREROUTING -j BF-br0
iptables -t mangle -A BF-br0 -j MARK --set-mark 0x0`);
    assert.deepEqual((await nftMarkRewrites(r, undefined, ['br0'])).map((f) => f.check).sort(), ['foreign mark ip mangle BF-br0', 'foreign mark ip mangle BF-x', 'foreign mark ip o pre']);
    // ebtables: Palisade's roots by table and name; another chain of its prefix is someone else's
    await nsh(`ebtables-nft -t nat -N PALISADE-X
ebtables-nft -t nat -A PREROUTING -j PALISADE-X
ebtables-nft -t nat -A PALISADE-X -j mark --mark-set 0x0 --mark-target CONTINUE`);
    assert.ok((await nftMarkRewrites(r, undefined, ['br0'])).some((f) => f.check === 'foreign mark bridge nat PALISADE-X'));
  });
});

test('ebtables-legacy\'s FORWARD is followed like the others (its -L text as ebtables writes it; this kernel has no legacy ebtables): a drop on the VM path alerts, a jump to a chain that drops too; a counting chain, a conditional drop or a drop on another bridge does not', async () => {
  await inNamespace('pb', async (_r, nsh) => {
    // the text ebtables-nft writes for these rules (the same -L format as ebtables-legacy)
    const listing = async (...script: string[]) => nsh(`ebtables-nft -t filter -F; ebtables-nft -t filter -X; ebtables-nft -P FORWARD ACCEPT
${script.join('\n')}
ebtables-nft -t filter -L`);
    const judged = async (...script: string[]) => ebForwardFindings(await listing(...script), ['br0']).map((f) => [f.check, f.ok]);
    assert.deepEqual(await judged(), []);
    assert.deepEqual(await judged('ebtables-nft -A FORWARD -j DROP'), [['forward chain bridge filter FORWARD (ebtables-legacy)', false]]);
    assert.deepEqual(await judged('ebtables-nft -A FORWARD -p IPv4 --ip-src 10.0.0.0/8 -j DROP'), []);
    assert.deepEqual(await judged('ebtables-nft -N blackhole', 'ebtables-nft -A blackhole -j DROP', 'ebtables-nft -A FORWARD -j blackhole'), [['forward chain bridge filter FORWARD (ebtables-legacy)', false]]);
    assert.deepEqual(await judged('ebtables-nft -N counts', 'ebtables-nft -A counts -j CONTINUE', 'ebtables-nft -A FORWARD -j counts'), []);
    assert.deepEqual(await judged('ebtables-nft -A FORWARD -i ! eth0 -j DROP'), [], '-i names a port: not every frame of the bridge');
    // dropping by default: a mark target accepts unless told otherwise (--mark-target)
    assert.deepEqual(await judged('ebtables-nft -P FORWARD DROP', 'ebtables-nft -A FORWARD -j mark --mark-or 0x40000000'), [['forward policy bridge filter FORWARD (ebtables-legacy)', true]]);
    assert.deepEqual(await judged('ebtables-nft -P FORWARD DROP', 'ebtables-nft -A FORWARD -j mark --mark-or 0x40000000 --mark-target CONTINUE'), [['forward policy bridge filter FORWARD (ebtables-legacy)', false]]);
  });
  // --logical-in / --logical-out (this kernel's ebtables-nft cannot add them): ebtables' text for them
  const listing = (policy: string, ...rules: string[]) => `Bridge table: filter\n\nBridge chain: FORWARD, entries: ${rules.length}, policy: ${policy}\n${rules.join('\n')}\n\nBridge chain: blackhole, entries: 1, policy: RETURN\n-j DROP\n`;
  const judged = (text: string) => ebForwardFindings(text, ['br0']).map((f) => [f.check, f.ok]);
  assert.deepEqual(judged(listing('ACCEPT', '--logical-in br1 -j DROP', '--logical-in ! br0 -j blackhole')), []);
  assert.deepEqual(judged(listing('ACCEPT', '--logical-out br+ -j blackhole')), [['forward chain bridge filter FORWARD (ebtables-legacy)', false]]);
  assert.deepEqual(judged(listing('ACCEPT', '! --logical-in eth0 -j DROP')), [['forward chain bridge filter FORWARD (ebtables-legacy)', false]]);
  assert.deepEqual(judged(listing('DROP', '--logical-in br0 -j RETURN', '-j ACCEPT')), [['forward policy bridge filter FORWARD (ebtables-legacy)', false]], 'returned to the policy before the accept');
  assert.deepEqual(judged(listing('DROP', '-j PALISADE-FWD', '--logical-in br0 -j ACCEPT')), [['forward policy bridge filter FORWARD (ebtables-legacy)', true]]);
});

test('an iptables table of many chains (kube-proxy\'s nat: chains per service) is judged whole for the mark check, in a few runs and past the 200 chains once the limit: a whole-mark rewrite in its last chain alerts, its twin without it does not (iptables-nft and -legacy)', async () => {
  await inNamespace('pk', async (r, nsh, name) => {
    const services = 300;
    const sep = (i: number) => `KUBE-SEP-${String(i).padStart(12, '0')}`;
    const svc = (i: number) => `KUBE-SVC-${String(i).padStart(12, '0')}`;
    const lines = ['*nat', ':KUBE-SERVICES - [0:0]', ':KUBE-MARK-MASQ - [0:0]'];
    for (let i = 0; i < services; i++) lines.push(`:${svc(i)} - [0:0]`, `:${sep(i)} - [0:0]`);
    lines.push('-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES', '-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000');
    for (let i = 0; i < services; i++) {
      const ip = `10.96.${Math.floor(i / 250)}.${(i % 250) + 1}`;
      lines.push(`-A KUBE-SERVICES -d ${ip}/32 -p tcp -m comment --comment "ns/svc${i}:http cluster IP" -m tcp --dport 80 -j ${svc(i)}`,
        `-A ${svc(i)} ! -s 10.244.0.0/16 -d ${ip}/32 -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ`,
        `-A ${svc(i)} -m comment --comment "ns/svc${i}:http" -j ${sep(i)}`,
        `-A ${sep(i)} -s 10.244.1.${i % 250}/32 -j KUBE-MARK-MASQ`,
        `-A ${sep(i)} -p tcp -m tcp -j DNAT --to-destination 10.244.1.${i % 250}:80`);
    }
    const text = `${lines.join('\n')}\nCOMMIT\n`;
    for (const tool of ['iptables-nft-restore', 'iptables-legacy-restore']) {
      const restored = await run('ip', ['netns', 'exec', name, tool], { stdin: text });
      assert.equal(restored.code, 0, restored.stderr);
    }
    const ran: string[] = [];
    const recording = { netns: name, run: (t: string, a: string[], i?: string) => { ran.push(`${t} ${a.join(' ')}`); return r.run(t, a, i); } };
    const marks = async () => {
      ran.length = 0;
      return [...await nftMarkRewrites(recording, undefined, ['br0']), ...await legacyMarkRewrites(recording, ['br0'])].map((f) => f.check);
    };
    assert.deepEqual(await marks(), [], 'kube-proxy\'s own masked mark: quiet');
    assert.ok(ran.length <= 50, `${ran.length} runs`);
    await nsh(`iptables-nft -t nat -A ${sep(services - 1)} -j MARK --set-mark 0x0
iptables-legacy -t nat -A ${sep(services - 1)} -j MARK --set-mark 0x0`);
    assert.deepEqual(await marks(), [`foreign mark ip nat ${sep(services - 1)}`, `foreign mark ip nat ${sep(services - 1)} (iptables-legacy)`]);
    assert.ok(ran.length <= 50, `${ran.length} runs`);
  });
});
