// Unit tests of the host plan and of the pure parts of the nftables backend: the program it renders,
// the transaction it writes for a change, read-back parsing, drift, counters. No root needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BASELINE, DROP_REASONS, isDrop, planHost, BRIDGE_ZONE_BASE, type BaseRule } from '../../src/dataplane/plan/index.js';
import { render, v6Hex } from '../../src/dataplane/nftables/render.js';
import { diffScript, drift, emptyState, expectedState, parseTable, ruleBody, teardownScript } from '../../src/dataplane/nftables/kernel.js';
import { parseRuleCounters } from '../../src/dataplane/nftables/backend.js';
import { elementText, parseComment } from '../../src/dataplane/nftables/program.js';
import { oneLine } from '../../src/dataplane/nftables/session.js';
import { portChain, vmChains } from '../../src/dataplane/nftables/names.js';
import type { HostPorts } from '../../src/dataplane/backend.js';
import { hostState, nic, rule, vm } from './fixtures.js';

const ports = (nics: Record<string, [string, string]>, bridges: HostPorts['bridges'] = {}): HostPorts => ({
  nics: Object.fromEntries(Object.entries(nics).map(([k, [device, bridge]]) => [k, { device, bridge }])),
  bridges: { cloudbr0: { uplinks: ['eth0'], unknownTaps: [] }, ...bridges },
});
const A = vm('vm-a', 'i-2-7-VM', [nic('nic-a', '02:00:4c:5f:00:01', ['10.1.1.55', '10.1.1.56'], ['fd00::55'])],
  { ingress: [rule('tcp', ['10.0.0.0/8', '192.168.1.5/32'], { ports: [80, 443], id: 'web' }), rule('icmp', ['0.0.0.0/0'], { icmp: [8, -1], id: 'ping' })] },
  { ingress: [rule('icmp', ['::/0'], { icmp: [128, 0], id: 'ping6' })], egress: [rule('udp', ['::/0'], { ports: [123, 123], id: 'ntp6' })] });
const B = (rules = [rule('tcp', [], { ports: [5432, 5432], sets: ['sg3v4'], id: 'db' })]) =>
  vm('vm-b', 'i-2-8-VM', [nic('nic-b', '02:00:00:00:00:08', ['10.1.1.8'])], { ingress: rules });
const SETS = [{ id: 'sg3v4', family: 4 as const, members: ['10.2.0.1'] }];
const P = ports({ 'nic-a': ['vnet3', 'cloudbr0'], 'nic-b': ['vnet0', 'cloudbr0'] }, { cloudbr0: { uplinks: ['eth0'], unknownTaps: ['vnet9'] } });

test('plan: every drop of the baseline has a reason from the fixed list; exempt/allow/accept only where they mean something', () => {
  const lists: [string, BaseRule[]][] = [
    ['l2FromNic', BASELINE.l2FromNic], ['arpFromNic', BASELINE.arpFromNic], ['l2FromVm', BASELINE.l2FromVm], ['arpToNic', BASELINE.arpToNic], ['l2ToVm', BASELINE.l2ToVm],
    ...([4, 6] as const).flatMap((f) => Object.entries(BASELINE.ip[f]).map(([k, l]): [string, BaseRule[]] => [`ip${f}.${k}`, l])),
  ];
  for (const [name, list] of lists) {
    for (const r of list) {
      if (isDrop(r.verdict)) assert.ok((DROP_REASONS as readonly string[]).includes(r.verdict.drop), `${name}.${r.id}`);
      const v = isDrop(r.verdict) ? 'drop' : r.verdict;
      const ok = name.startsWith('l2') || name.startsWith('arp') ? ['continue', 'drop'] : name.endsWith('Guard') ? ['exempt', 'drop'] : name.endsWith('Allow') ? ['allow'] : ['accept'];
      assert.ok(ok.includes(v), `${name}.${r.id}: ${v}`);
    }
  }
});

test('plan: port numbers and zones shared by both backends; unknown refs become empty sets; untracked VMs', () => {
  const N = vm('vm-n', 'i-2-9-VM', [nic('nic-n', '02:00:00:00:00:09', ['10.1.1.9'])], { ingress: [rule('all', ['0.0.0.0/0'])], egress: [rule('all', ['0.0.0.0/0'])], notrack: true });
  const plan = planHost({ state: hostState([A, B(), N]), ports: ports({ 'nic-a': ['vnet3', 'cloudbr0'], 'nic-b': ['vnet0', 'cloudbr0'], 'nic-n': ['vnet4', 'cloudbr0'] }) });
  const byDev = new Map(plan.vms.flatMap((v) => v.ports).map((p) => [p.device, p]));
  assert.equal(new Set([...byDev.values()].map((p) => p.number)).size, 3);
  assert.deepEqual(byDev.get('vnet3')!.own, { 4: ['10.1.1.55', '10.1.1.56'], 6: ['fd00::55', 'fe80::4cff:fe5f:1'] });
  assert.equal(plan.bridges[0].zone, BRIDGE_ZONE_BASE + plan.bridges[0].number - 1);
  assert.deepEqual(plan.sets, [{ id: 'sg3v4', family: 4, members: [], known: false }]);
  assert.deepEqual(plan.notrack[4], { untracked: ['10.1.1.9'], tracked: ['10.1.1.55', '10.1.1.56', '10.1.1.8'] });
});

test('nftables render: few objects (one chain per port, one or two per VM), every user rule counted with its id, every drop with its reason', () => {
  const out = render({ state: hostState([A, B()], SETS), ports: P });
  assert.deepEqual(out.vmErrors, {});
  const names = out.program.chains.map((c) => `${c.family}/${c.name}`);
  assert.ok(names.includes(`bridge/${portChain('vnet3')}`) && names.includes(`bridge/${portChain('vnet0')}`));
  const perVm = names.filter((n) => /^inet\/(from|to)-/.test(n)).sort();
  assert.deepEqual(perVm, [`inet/${vmChains('i-2-7-VM').from}`, `inet/${vmChains('i-2-7-VM').to}`, `inet/${vmChains('i-2-8-VM').to}`].sort());
  for (const c of out.program.chains) {
    for (const r of c.rules) {
      if (/\bdrop\b/.test(r.text)) { assert.ok(r.reason, `${c.name} ${r.id}: a drop without a reason`); assert.match(r.text, /counter drop$/); }
    }
  }
  const to = out.program.chains.find((c) => c.name === vmChains('i-2-7-VM').to)!;
  assert.deepEqual(to.rules.filter((r) => /^web\./.test(r.id)).map((r) => r.text), [
    'ip saddr 10.0.0.0/8 tcp dport 80-443 counter accept',
    'ip saddr 192.168.1.5 tcp dport 80-443 counter accept',
  ]);
  assert.ok(to.rules.some((r) => r.id === 'ping6.i6.c0' && r.text === 'meta nfproto ipv6 icmpv6 type 128 icmpv6 code 0 counter accept'));
  assert.equal(to.rules[to.rules.length - 1].reason, 'ingress-default-deny');
  // no anonymous interval sets and no named counters: nothing nft re-reads per change grows with rules
  assert.doesNotMatch(out.script, /\{ [0-9.]+\/\d+,|add counter/);
  // per-port facts are set elements keyed by the port
  assert.match(out.script, /add element bridge palisade own4 \{ "vnet3" \. 10\.1\.1\.55, "vnet3" \. 10\.1\.1\.56, "vnet0" \. 10\.1\.1\.8 \}/);
  assert.match(out.script, new RegExp(`add element bridge palisade nd6 \\{ "vnet3" \\. ${v6Hex('fd00::55')}`));
  assert.match(out.script, /"vnet9" : goto unknown/);
  assert.match(out.script, /add rule inet palisade to-i-2-8-VM ip saddr @g-sg3v4 tcp dport 5432 counter accept comment "pal:db\.i4\.s0"/);
});

test('nftables diff: nothing when unchanged; a rule change rewrites one chain; a member change writes elements only; removal flushes before deleting', () => {
  const base = render({ state: hostState([A, B()], SETS), ports: P }).program;
  const k = expectedState(base);
  assert.equal(diffScript(base, k), '');
  const changed = render({ state: hostState([A, B([rule('tcp', [], { ports: [23, 23], sets: ['sg3v4'], id: 'telnet' })])], SETS), ports: P }).program;
  const lines = diffScript(changed, k).trim().split('\n');
  assert.equal(lines[0], 'flush chain inet palisade to-i-2-8-VM');
  assert.ok(lines.slice(1).every((l) => l.startsWith('add rule inet palisade to-i-2-8-VM ')), lines.join('\n'));
  const member = render({ state: hostState([A, B()], [{ ...SETS[0], members: ['10.2.0.1', '10.2.0.2'] }]), ports: P }).program;
  assert.equal(diffScript(member, k), 'add element inet palisade g-sg3v4 { 10.2.0.2 }\n');
  const gone = render({ state: hostState([A], SETS), ports: P }).program;
  const g = diffScript(gone, k).trim().split('\n');
  const at = (re: RegExp) => g.findIndex((l) => re.test(l));
  assert.ok(at(/^delete element bridge palisade out_ports \{ "vnet0" \}/) >= 0 || at(/^delete element bridge palisade in_ports/) >= 0, g.join('\n'));
  assert.ok(at(/^flush chain inet palisade to-i-2-8-VM$/) < at(/^delete chain inet palisade to-i-2-8-VM$/));
  assert.ok(at(/^delete element inet palisade to /) < at(/^delete chain inet palisade to-i-2-8-VM$/), g.join('\n'));
  assert.equal(diffScript(gone, expectedState(gone)), '');
  assert.equal(teardownScript(), 'add table bridge palisade\ndelete table bridge palisade\nadd table inet palisade\ndelete table inet palisade\n');
});

test('nftables read-back: ownership by comments, foreign rules, elements of maps and concatenations; drift, whole or partial', () => {
  const json = JSON.stringify({ nftables: [
    { metainfo: {} },
    { table: { family: 'inet', name: 'palisade' } },
    { chain: { family: 'inet', table: 'palisade', name: 'to-x' } },
    { chain: { family: 'inet', table: 'palisade', name: 'forward', type: 'filter', hook: 'forward', prio: 0, policy: 'accept' } },
    { rule: { family: 'inet', table: 'palisade', chain: 'to-x', comment: 'pal:a #0123456789ab', expr: [] } },
    { rule: { family: 'inet', table: 'palisade', chain: 'to-x', expr: [{ accept: null }] } },
    { rule: { family: 'inet', table: 'palisade', chain: 'to-x', comment: 'pal:deny !ingress-default-deny', expr: [] } },
    { map: { family: 'inet', table: 'palisade', name: 'to', map: 'verdict', elem: [[5, { goto: { target: 'to-x' } }], [2045, { accept: null }]] } },
    { set: { family: 'inet', table: 'palisade', name: 'own', elem: [{ concat: ['vnet0', '10.0.0.1'] }] } },
  ] });
  const k = parseTable('inet', json);
  assert.deepEqual(k.chains.get('inet/to-x'), { family: 'inet', name: 'to-x', base: null, ids: ['a', 'deny'], hash: '0123456789ab', foreign: 1,
    bodies: [ruleBody({ comment: 'pal:a #0123456789ab', expr: [] }), ruleBody({ comment: 'pal:deny !ingress-default-deny', expr: [] })] });
  // a rule's body leaves out its handle and counter values, not its comment or statements
  assert.equal(ruleBody({ handle: 3, comment: 'pal:a', expr: [{ counter: { packets: 5, bytes: 9 } }, { drop: null }] }), ruleBody({ handle: 9, comment: 'pal:a', expr: [{ counter: { packets: 0, bytes: 0 } }, { drop: null }] }));
  assert.notEqual(ruleBody({ comment: 'pal:a', expr: [{ drop: null }] }), ruleBody({ comment: 'pal:a', expr: [{ accept: null }] }));
  assert.equal(k.chains.get('inet/forward')!.base, 'type filter hook forward priority 0; policy accept;');
  assert.deepEqual([...k.sets.get('inet/to')!.elements], ['5 : goto to-x', '2045 : accept']);
  assert.deepEqual([...k.sets.get('inet/own')!.elements], ['vnet0 . 10.0.0.1']);
  assert.deepEqual(parseComment('pal:x.i4.c0 !spoof-ip #abc'), { id: 'x.i4.c0', reason: 'spoof-ip', hash: 'abc' });
  const base = render({ state: hostState([A, B()], SETS), ports: P }).program;
  const d = drift(base, emptyState()).map((x) => `${x.kind} ${x.what}`);
  assert.ok(d.includes('missing nft table bridge palisade') && d.includes('missing nft table inet palisade'));
  const kk = expectedState(base);
  kk.sets.get('bridge/own4')!.elements.delete('vnet0 . 10.1.1.8');
  kk.chains.get('inet/to-i-2-7-VM')!.foreign = 1;
  assert.deepEqual(drift(base, kk).map((x) => `${x.kind} ${x.what}`).sort(), ['missing nft bridge set own4 element vnet0 . 10.1.1.8', 'unexpected nft inet chain to-i-2-7-VM: 1 rule(s) without a Palisade id']);
  // a partial read judges only what it read
  assert.deepEqual(drift(base, kk, new Set(['bridge/*'])).map((x) => x.what), ['nft bridge set own4 element vnet0 . 10.1.1.8']);
  kk.chains.get('inet/to-i-2-7-VM')!.foreign = 0;
});

test('nftables: rule counters per VM and rule id from the inet table; element texts; one-line transactions', () => {
  const json = JSON.stringify({ nftables: [
    { rule: { family: 'inet', table: 'palisade', chain: 'to-i-2-7-VM', comment: 'pal:web.i4.c0 #abc', expr: [{ counter: { packets: 3, bytes: 180 } }, { accept: null }] } },
    { rule: { family: 'inet', table: 'palisade', chain: 'to-i-2-7-VM', comment: 'pal:web.i4.c1', expr: [{ counter: { packets: 2, bytes: 120 } }, { accept: null }] } },
    { rule: { family: 'inet', table: 'palisade', chain: 'from-i-2-7-VM', comment: 'pal:ntp6.e6.c0', expr: [{ counter: { packets: 1, bytes: 90 } }, { goto: { target: 'deliver' } }] } },
    { rule: { family: 'inet', table: 'palisade', chain: 'to-i-2-7-VM', comment: 'pal:deny !ingress-default-deny', expr: [{ counter: { packets: 9, bytes: 9 } }, { drop: null }] } },
  ] });
  assert.deepEqual(parseRuleCounters(json), [
    { instance: 'i-2-7-VM', ruleId: 'web', direction: 'ingress', family: 4, packets: 5, bytes: 300 },
    { instance: 'i-2-7-VM', ruleId: 'ntp6', direction: 'egress', family: 6, packets: 1, bytes: 90 },
  ]);
  const s = { family: 'bridge' as const, name: 'x', decl: '', key: 'ifname . ipv4_addr', map: false, elements: [] };
  assert.equal(elementText(s, 'vnet0 . 10.0.0.1'), '"vnet0" . 10.0.0.1');
  assert.equal(elementText({ ...s, key: 'ifname', map: true }, 'vnet0 : goto o-vnet0'), '"vnet0" : goto o-vnet0');
  assert.equal(elementText({ ...s, key: 'mark' }, '5 : 5'), '5 : 5');
  assert.equal(oneLine('add table inet palisade\n\nadd chain inet palisade x\n'), 'add table inet palisade; add chain inet palisade x');
});

