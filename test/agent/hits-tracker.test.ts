// Per-rule hits, the pure parts (issue 11): the agent's delta tracker, the counter parsers of both
// backends, and the agent's metrics helpers. The kernel side runs in hits.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HitTracker, MAX_PENDING_RULES, MAX_RULES_PER_MESSAGE } from '../../src/agent/hits.js';
import { AgentMetrics, parseListen, toolOf } from '../../src/agent/metrics.js';
import { MetricsRegistry } from '../../src/metrics/registry.js';
import { parseDropCounts as iptDrops, parseRuleCounts as iptCounts } from '../../src/dataplane/iptables/counters.js';
import { parseDropCounts as nftDrops, parseRuleCounts as nftCounts } from '../../src/dataplane/nftables/backend.js';
import { vmChains } from '../../src/dataplane/nftables/names.js';
import { agentMessageSchema } from '../../src/protocol/index.js';

const VM = '11111111-1111-4111-8111-111111111111';
const VM2 = '22222222-2222-4222-8222-222222222222';
const at = new Date('2026-01-01T00:00:00Z');
const c = (ruleId: string, slot: string, packets: number, vmId = VM) => ({ vmId, ruleId, slot, packets });
const sent = (t: HitTracker) => t.drain(at).map((m) => m.vms);

test('tracker: deltas per (VM, rule); a new or lower slot counts from 0; a baseline counts nothing; only non-zero', () => {
  const t = new HitTracker({ baseline: true });
  t.take([c('aaa', 's1', 100), c('bbb', 's2', 7)]);
  assert.deepEqual(sent(t), [], 'the baseline reading sends nothing');
  t.take([c('aaa', 's1', 130), c('bbb', 's2', 7)]);
  assert.deepEqual(sent(t), [{ [VM]: { aaa: 30 } }], 'only the non-zero delta');
  // re-created with a new slot (nft handle / iptables version): its whole counter is new
  t.take([c('aaa', 's9', 4), c('bbb', 's2', 9)]);
  assert.deepEqual(sent(t), [{ [VM]: { aaa: 4, bbb: 2 } }]);
  // the same slot lower than last seen (rewritten in place): counts from 0
  t.take([c('aaa', 's9', 3), c('bbb', 's2', 9)]);
  assert.deepEqual(sent(t), [{ [VM]: { aaa: 3 } }]);
  // one API rule as several kernel rules (peers): summed
  t.take([c('aaa', 's9', 5), c('aaa', 's10', 6), c('bbb', 's2', 9)]);
  assert.deepEqual(sent(t), [{ [VM]: { aaa: 8 } }]);
  const fresh = new HitTracker({ baseline: false });
  fresh.take([c('aaa', 's1', 5)]);
  assert.deepEqual(sent(fresh), [{ [VM]: { aaa: 5 } }], 'without a saved state every counter is new');
});

test('tracker: pending deltas add up while unsent, VMs gone are forgotten, ids the protocol refuses are skipped', () => {
  const t = new HitTracker({ baseline: false });
  t.take([c('aaa', 's1', 5), c('aaa', 's2', 1, VM2)]);
  t.take([c('aaa', 's1', 8), c('aaa', 's2', 1, VM2), c('bad.id', 's3', 9), c('ccc', 's4', 9, 'not-a-uuid'), c('ddd', 's5', -1)]);
  t.retain(new Set([VM]));
  assert.equal(t.waiting, 1);
  assert.deepEqual(sent(t), [{ [VM]: { aaa: 8 } }]);
  assert.equal(t.waiting, 0);
});

test('tracker: bounded while no server takes the deltas; messages stay within the protocol bounds and validate', () => {
  const t = new HitTracker({ baseline: false });
  const vms = Array.from({ length: 30 }, (_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`);
  const readings = vms.flatMap((vm) => Array.from({ length: 2000 }, (_, j) => c(`r${j}`, `s${j}`, 1, vm)));
  t.take(readings);
  assert.equal(t.waiting, 60_000);
  const msgs = t.drain(at);
  assert.equal(msgs.length, Math.ceil(60_000 / MAX_RULES_PER_MESSAGE));
  let total = 0;
  for (const m of msgs) {
    const entries = Object.values(m.vms).reduce((n, r) => n + Object.keys(r).length, 0);
    assert.ok(entries <= MAX_RULES_PER_MESSAGE);
    total += entries;
    assert.ok(agentMessageSchema.safeParse(JSON.parse(JSON.stringify(m))).success, 'a valid hits message');
  }
  assert.equal(total, 60_000);
  // more distinct (VM, rule) sums than kept: the rest is counted as lost, nothing grows beyond the bound
  const big = new HitTracker({ baseline: false });
  big.take(Array.from({ length: MAX_PENDING_RULES + 10 }, (_, j) => c(`r${j}`, `s${j}`, 2)));
  assert.equal(big.waiting, MAX_PENDING_RULES);
  assert.equal(big.lost, 20);
});

test('iptables counters: the VM chains\' user rules, each version of a rewritten chain its own slots', () => {
  const vms = [{ vmId: VM, instanceName: 'i-2-7-VM' }];
  const save = [
    '*raw', '[9:9] -A PALISADE-RAW -m comment --comment "pal:x" -j CT --notrack', 'COMMIT',
    '*filter', ':i-2-7-VM - [0:0]', ':i-2-7-VM-eg - [0:0]',
    // new version (hash b) above the old one (hash a, unreachable garbage)
    '[3:180] -A i-2-7-VM -s 10.0.0.0/8 -p tcp -m tcp --dport 80 -m comment --comment "pal:aaa.c0 #b" -j ACCEPT',
    '[1:60] -A i-2-7-VM -m set --match-set pal-g1 src -m comment --comment "pal:aaa.s0" -j ACCEPT',
    '[0:0] -A i-2-7-VM -m comment --comment pal:end -j RETURN',
    '[40:2400] -A i-2-7-VM -s 10.0.0.0/8 -p tcp -m tcp --dport 80 -m comment --comment "pal:aaa.c0 #a" -j ACCEPT',
    '[0:0] -A i-2-7-VM -m comment --comment pal:end -j RETURN',
    '[5:300] -A i-2-7-VM-eg -d 0.0.0.0/0 -m comment --comment "pal:eee.c0 #c" -j RETURN',
    '[8:8] -A i-2-9-VM -m comment --comment "pal:zzz.c0 #d" -j ACCEPT',
    'COMMIT',
  ].join('\n');
  assert.deepEqual(iptCounts(4, save, vms), [
    { vmId: VM, ruleId: 'aaa', slot: '4/i-2-7-VM/b/aaa.c0', packets: 3 },
    { vmId: VM, ruleId: 'aaa', slot: '4/i-2-7-VM/b/aaa.s0', packets: 1 },
    { vmId: VM, ruleId: 'aaa', slot: '4/i-2-7-VM/a/aaa.c0', packets: 40 },
    { vmId: VM, ruleId: 'eee', slot: '4/i-2-7-VM-eg/c/eee.c0', packets: 5 },
  ]);
});

test('nftables counters: the VM chains\' user rules, slot = handle', () => {
  const ch = vmChains('i-2-7-VM');
  const rule = (chain: string, handle: number, comment: string, packets: number) => ({ rule: { family: 'inet', table: 'palisade', chain, handle, comment, expr: [{ match: {} }, { counter: { packets, bytes: packets * 60 } }, { accept: null }] } });
  const json = JSON.stringify({ nftables: [
    { metainfo: {} },
    rule(ch.to, 41, 'pal:aaa.i4.c0 #abc', 12), rule(ch.to, 42, 'pal:aaa.i4.s0', 2), rule(ch.to, 43, 'pal:deny !ingress-default-deny', 99),
    rule(ch.from, 50, 'pal:eee.e6.c1', 3), rule('to-other', 60, 'pal:zzz.i4.c0', 5),
    { rule: { family: 'bridge', table: 'palisade', chain: ch.to, handle: 1, comment: 'pal:aaa.i4.c0', expr: [{ counter: { packets: 1, bytes: 1 } }] } },
  ] });
  assert.deepEqual(nftCounts(json, [{ vmId: VM, instanceName: 'i-2-7-VM' }]), [
    { vmId: VM, ruleId: 'aaa', slot: `${ch.to}/41`, packets: 12 },
    { vmId: VM, ruleId: 'aaa', slot: `${ch.to}/42`, packets: 2 },
    { vmId: VM, ruleId: 'eee', slot: `${ch.from}/50`, packets: 3 },
  ]);
});

test('agent metrics helpers: --metrics-listen values, tools of apply steps', () => {
  assert.deepEqual(parseListen('127.0.0.1:9465'), { host: '127.0.0.1', port: 9465 });
  assert.deepEqual(parseListen('[::1]:9465'), { host: '::1', port: 9465 });
  assert.deepEqual(parseListen('localhost:1'), { host: 'localhost', port: 1 });
  for (const bad of ['', '9465', '127.0.0.1', '127.0.0.1:0', '127.0.0.1:65536', '300.1.2.3:80', '[nope]:80', 'a b:80', 'http://x:80', '::1:80']) {
    assert.throws(() => parseListen(bad), /--metrics-listen must be HOST:PORT/, bad);
  }
  assert.equal(toolOf('nft'), 'nft');
  assert.equal(toolOf('nft (3/10 VMs)'), 'nft');
  assert.equal(toolOf('ipset restore'), 'ipset');
  assert.equal(toolOf('ip6tables-restore'), 'ip6tables-restore');
  assert.equal(toolOf('render'), null);
});

test('iptables garbage collection keeps the live rules\' counters: liveCounters reads the live version only', async () => {
  const { liveCounters } = await import('../../src/dataplane/iptables/kernel.js');
  const save = [
    '*raw', '[9:90] -A PALISADE-RAW -m comment --comment "pal:x #h" -j CT --notrack', 'COMMIT',
    '*filter',
    '[3:180] -A i-2-7-VM -s 10.0.0.0/8 -m comment --comment "pal:aaa.c0 #b" -j ACCEPT',
    '[0:0] -A i-2-7-VM -m comment --comment pal:end -j RETURN',
    '[40:2400] -A i-2-7-VM -s 10.0.0.0/8 -m comment --comment "pal:aaa.c0 #a" -j ACCEPT',
    '[7:70] -A i-2-7-VM -m comment --comment pal:end -j RETURN',
    '[5:50] -A FORWARD -m comment --comment "foreign" -j ACCEPT',
    'COMMIT',
  ].join('\n');
  assert.deepEqual([...liveCounters(save)], [['raw/PALISADE-RAW/x', '[9:90]'], ['filter/i-2-7-VM/aaa.c0', '[3:180]'], ['filter/i-2-7-VM/end', '[0:0]']]);
});

test('dropped packets per reason: parsers of both backends map plan reasons to API reasons; the agent counts deltas after a baseline', async () => {
  const save = ['*filter', ':PDL-t-ingress-default-deny - [0:0]',
    '[7:420] -A PDL-t-ingress-default-deny -m hashlimit --hashlimit-upto 10/sec -j NFLOG --nflog-group 4217',
    '[9:540] -A PDL-t-ingress-default-deny -j DROP',
    '[3:180] -A PDL-f-not-own-address -m comment --comment "pal:drop" -j DROP',
    '[5:300] -A PDL-f-l2-protocol -j DROP',            // no API reason: not counted
    '[4:240] -A from-vm1 -j DROP', 'COMMIT'].join('\n');
  assert.deepEqual(iptDrops('iptables-save', save), [
    { reason: 'ingress-default-deny', slot: 'iptables-save/filter/PDL-t-ingress-default-deny', packets: 9 },
    { reason: 'spoofed-ip', slot: 'iptables-save/filter/PDL-f-not-own-address', packets: 3 },
  ]);
  const nft = JSON.stringify({ nftables: [
    { rule: { family: 'bridge', table: 'palisade', chain: 'vmin-1', handle: 12, comment: 'pal:b.spoof !spoof-mac', expr: [{ counter: { packets: 4, bytes: 1 } }, { drop: null }] } },
    { rule: { family: 'inet', table: 'palisade', chain: 'to-x', handle: 3, comment: 'pal:deny !ingress-default-deny', expr: [{ counter: { packets: 2, bytes: 1 } }] } },
    { rule: { family: 'inet', table: 'palisade', chain: 'to-x', handle: 4, comment: 'pal:r1.i4.c0', expr: [{ counter: { packets: 99, bytes: 1 } }] } },
    { rule: { family: 'inet', table: 'other', chain: 'x', handle: 5, comment: 'pal:deny !ingress-default-deny', expr: [{ counter: { packets: 50, bytes: 1 } }] } },
  ] });
  assert.deepEqual(nftDrops(nft), [
    { reason: 'spoofed-mac', slot: 'bridge/vmin-1/12', packets: 4 },
    { reason: 'ingress-default-deny', slot: 'inet/to-x/3', packets: 2 },
  ]);
  const m = new AgentMetrics(() => ({ appliedRevision: null, connected: false, vms: 0 }), new MetricsRegistry());
  const value = async (reason: string) => Number(new RegExp(`palisade_agent_dropped_packets_total\\{reason="${reason}"\\} (\\d+)`).exec(await m.registry.text())?.[1] ?? 0);
  m.dropReadings([{ reason: 'ingress-default-deny', slot: 'a', packets: 100 }]);          // baseline: before this agent
  assert.equal(await value('ingress-default-deny'), 0);
  m.dropReadings([{ reason: 'ingress-default-deny', slot: 'a', packets: 104 }, { reason: 'spoofed-ip', slot: 'b', packets: 2 }]);
  assert.equal(await value('ingress-default-deny'), 4);
  assert.equal(await value('spoofed-ip'), 2, 'a new slot counts from 0');
  m.dropReadings([{ reason: 'ingress-default-deny', slot: 'a', packets: 1 }, { reason: 'bogus', slot: 'c', packets: 9 }]);
  assert.equal(await value('ingress-default-deny'), 5, 'a counter that went down was re-created: it counts from 0');
  assert.doesNotMatch(await m.registry.text(), /bogus/);
});
