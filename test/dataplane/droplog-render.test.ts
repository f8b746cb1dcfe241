// The drop log in both renderers (pure): logging never changes a verdict nor the allowed path. With
// the log on, every rule that passes packets is the same as with it off, every logged drop keeps its
// match and counter and jumps to a chain that logs and then drops; rate 0 renders exactly what no
// config renders.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { render as renderNft } from '../../src/dataplane/nftables/render.js';
import { render as renderIpt } from '../../src/dataplane/iptables/render.js';
import { hostState, nic, rule, vm } from './fixtures.js';

const state = hostState([
  vm('v1', 'i-2-10-VM', [nic('n1', '52:54:00:00:00:01', ['10.0.0.5'], ['2001:db8::5'])], { ingress: [rule('tcp', ['0.0.0.0/0'], { ports: [22, 22] })], egressRestricted: true }),
  vm('v2', 'i-2-11-VM', [nic('n2', '52:54:00:00:00:02', ['10.0.0.6'])]),
]);
const ports = { nics: { n1: { device: 'vnet0', bridge: 'br0' }, n2: { device: 'vnet1', bridge: 'br0' } }, bridges: { br0: { uplinks: ['eth0'], unknownTaps: ['vnet9'] } } };
const on = { rate: 10, burst: 50, group: 4217 };

test('nftables: passing rules unchanged, drops jump to log-then-drop chains, rate 0 = off', () => {
  const off = renderNft({ state, ports });
  const log = renderNft({ state, ports, dropLog: on });
  assert.equal(renderNft({ state, ports, dropLog: { ...on, rate: 0 } }).script, off.script);
  assert.ok(!/ log /.test(off.script));
  const offRules = new Map(off.program.chains.flatMap((c) => c.rules.map((r) => [`${c.family}/${c.name}/${r.id}`, r] as const)));
  let jumped = 0;
  for (const c of log.program.chains) {
    if (c.name.startsWith('dl-')) {
      assert.match(c.rules[0]!.text, /log group 4217 prefix "pal:[ftn]:[a-z-]+"$/);
      assert.equal(c.rules[c.rules.length - 1]!.text, 'drop', `${c.name} ends in drop`);
      continue;
    }
    for (const r of c.rules) {
      const before = offRules.get(`${c.family}/${c.name}/${r.id}`);
      assert.ok(before, `${c.name} ${r.id} exists without the log`);
      if (r.text === before.text) continue;
      // only drops change, and only their verdict: same match, same counter
      assert.ok(before.reason && before.text.endsWith('counter drop'), `${c.name} ${r.id}: ${before.text} → ${r.text}`);
      assert.equal(r.text, `${before.text.slice(0, -'drop'.length)}goto dl-${r.text.split('goto dl-')[1]}`);
      jumped++;
    }
  }
  assert.ok(jumped > 10);
  // the VM's default denies log with the VM's port: to-VM by the out-port, from-VM by the in-port
  assert.match(log.script, /add rule inet palisade dl-t-ingress-default-deny add @dl_10_50 \{ meta mark and 0x7ff limit rate 10\/second burst 50 packets \}/);
  assert.match(log.script, /add rule inet palisade dl-f-egress-default-deny add @dl_10_50 \{ meta mark and 0x7ff0000 /);
  assert.match(log.script, /add rule bridge palisade dl-f-spoof-mac /);
});

test('iptables: passing rules unchanged, drops jump to NFLOG-then-DROP chains, rate 0 = off', () => {
  const off = renderIpt({ state, ports });
  const log = renderIpt({ state, ports, dropLog: on });
  const zero = renderIpt({ state, ports, dropLog: { ...on, rate: 0 } });
  for (const k of ['iptables', 'ip6tables', 'ebtables', 'ipset'] as const) assert.equal(zero[k], off[k]);
  assert.ok(!/NFLOG|nflog/.test(off.iptables + off.ip6tables + off.ebtables));
  for (const k of ['iptables', 'ip6tables'] as const) {
    // (a chain's first rule carries the chain's hash in its comment: not part of what the rule does)
    const noHash = (l: string) => l.replace(/ #[0-9a-f]{12}"/, '"');
    const a = off[k].split('\n').filter((l) => l.startsWith('-A ') && !/-j DROP/.test(l)).map(noHash);
    const b = new Set(log[k].split('\n').map(noHash));
    for (const l of a) assert.ok(b.has(l), `${k}: passing rule kept: ${l}`);
    assert.match(log[k], /-A PDL-t-ingress-default-deny -m hashlimit .* -j NFLOG --nflog-prefix "pal:t:ingress-default-deny" --nflog-group 4217/);
    assert.match(log[k], /-A PDL-t-ingress-default-deny -m comment --comment "pal:drop" -j DROP/);
  }
  const ebOff = off.ebtables.split('\n').filter((l) => l.startsWith('-A ') && !/-j DROP$/.test(l));
  const ebLog = new Set(log.ebtables.split('\n'));
  for (const l of ebOff) assert.ok(ebLog.has(l), `ebtables: passing rule kept: ${l}`);
  assert.match(log.ebtables, /-A PDLE-f-spoof-mac --limit 10\/sec --limit-burst 50 --nflog-prefix "pal:f:spoof-mac" --nflog-group 4217 -j CONTINUE/);
});
