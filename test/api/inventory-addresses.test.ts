// Pure inventory logic: address parsing/formatting, allocation order, network range validation, placement.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  firstFree, formatIpv4, formatIpv6, macProblem, netmaskPrefix, normaliseMac, parseCidr6, parseIpv4, parseIpv6, randomMac,
} from '../../src/api/commands/inventory/addresses.js';
import { validateRanges } from '../../src/api/commands/inventory/networks.js';
import { leastLoaded } from '../../src/api/commands/inventory/placement.js';
import type { HostRow } from '../../src/api/commands/inventory/views.js';

test('IPv4: strict dotted quads only', () => {
  assert.equal(parseIpv4('10.1.2.3'), 0x0a010203);
  assert.equal(parseIpv4('255.255.255.255'), 0xffffffff);
  assert.equal(formatIpv4(0x0a010203), '10.1.2.3');
  for (const bad of ['10.1.2', '10.1.2.3.4', '10.1.2.256', '010.1.2.3', '10.1.2.-1', ' 10.1.2.3', '10.1.2.3/24', 'a.b.c.d', '']) {
    assert.equal(parseIpv4(bad), null, bad);
  }
});

test('netmasks: contiguous only', () => {
  assert.equal(netmaskPrefix('255.255.255.0'), 24);
  assert.equal(netmaskPrefix('255.255.255.248'), 29);
  assert.equal(netmaskPrefix('0.0.0.0'), 0);
  assert.equal(netmaskPrefix('255.255.255.255'), 32);
  assert.equal(netmaskPrefix('255.0.255.0'), null);
  assert.equal(netmaskPrefix('255.255.255.1'), null);
});

test('IPv6: parse and canonical format agree with the WHATWG URL parser on random addresses', () => {
  for (let i = 0; i < 2000; i++) {
    const b = randomBytes(16);
    // bias towards zero runs, where compression rules matter
    for (let j = 0; j < 16; j++) if (b[j] < 100) b[j] = 0;
    const n = BigInt(`0x${b.toString('hex')}`);
    const text = formatIpv6(n);
    assert.equal(parseIpv6(text), n, text);
    assert.equal(`[${text}]`, new URL(`http://[${text}]/`).hostname, `canonical form of ${b.toString('hex')}`);
  }
  assert.equal(parseIpv6('::ffff:192.0.2.1'), 0xffffc0000201n);
  assert.equal(parseIpv6('2001:DB8::1'), 0x20010db8000000000000000000000001n);
  for (const bad of ['1::2::3', '12345::', '1:2:3:4:5:6:7:8:9', 'fe80::1%eth0', ':::', 'g::1', '1:2:3:4:5:6:7']) assert.equal(parseIpv6(bad), null, bad);
  const c = parseCidr6('2001:db8:1::5/64')!;
  assert.equal(formatIpv6(c.network), '2001:db8:1::');
  assert.equal(formatIpv6(c.last), '2001:db8:1:0:ffff:ffff:ffff:ffff');
  assert.equal(parseCidr6('2001:db8::/129'), null);
});

test('firstFree returns the lowest unused address, null when the range is exhausted (random cases vs brute force)', () => {
  for (let i = 0; i < 500; i++) {
    const start = Math.floor(Math.random() * 50), end = start + Math.floor(Math.random() * 10);
    const used = new Set<number>();
    for (let k = 0; k < 12; k++) if (Math.random() < 0.6) used.add(start - 2 + Math.floor(Math.random() * 14));
    let expected: number | null = null;
    for (let x = start; x <= end; x++) if (!used.has(x)) { expected = x; break; }
    assert.equal(firstFree(start, end, used), expected, JSON.stringify({ start, end, used: [...used] }));
  }
  // IPv6 ranges are huge: the cost depends on what is used, not on the range
  const big = (1n << 64n) - 1n;
  assert.equal(firstFree(1n, big, new Set([1n, 2n, 3n])), 4n);
});

test('MACs: normalised, unicast, random ones are 02: and distinct', () => {
  assert.equal(normaliseMac('02:AA:bb:CC:dd:01'), '02:aa:bb:cc:dd:01');
  assert.equal(normaliseMac('02-aa-bb-cc-dd-01'), '02:aa:bb:cc:dd:01');
  // every form CloudStack's NetUtils.isValidMac accepts: '.' too, and one-digit octets (padded)
  assert.equal(normaliseMac('02.aa.bb.cc.dd.01'), '02:aa:bb:cc:dd:01');
  assert.equal(normaliseMac('2:aa:b:cc:dd:1'), '02:aa:0b:cc:dd:01');
  assert.equal(normaliseMac('2-A-b-C-d-1'), '02:0a:0b:0c:0d:01');
  // one separator throughout: a mix of them is refused, as CloudStack does
  for (const bad of ['02:00-00:00:00:01', '02-aa-bb-cc-dd:01', '02.aa:bb.cc.dd.01', '02:aa:bb:cc:dd', '02:aa:bb:cc:dd:0g', '02:aa:bb:cc:dd:01:', '02::bb:cc:dd:01',
    '002:aa:bb:cc:dd:01', '02 aa bb cc dd 01', '0200.0000.0001', 'xx']) assert.equal(normaliseMac(bad), null, bad);
  // nor twelve bare hex digits, nor spaces around a good one: isValidMac's regex needs a separator and
  // its RegexValidator does not trim
  for (const bad of ['02aabbccdd01', '0a1b2c3d4e5f', ' 02:aa:bb:cc:dd:01', '02:aa:bb:cc:dd:01 ']) assert.equal(normaliseMac(bad), null, JSON.stringify(bad));
  assert.match(macProblem('01:00:5e:00:00:01')!, /multicast/);
  assert.match(macProblem('00:00:00:00:00:00')!, /zeros/);
  assert.match(macProblem('fe:00:00:00:00:01')!, /tap/);
  assert.equal(macProblem('52:54:00:12:34:56'), null);
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const m = randomMac();
    assert.match(m, /^02(:[0-9a-f]{2}){5}$/);
    assert.equal(macProblem(m), null);
    seen.add(m);
  }
  assert.ok(seen.size > 195);
});

test('validateRanges: accepted shapes and normalisation', () => {
  const r = validateRanges({ gateway: '10.0.0.1', netmask: '255.255.255.0', startip: '10.0.0.10', ip6gateway: '2001:DB8::1', ip6cidr: '2001:db8:0:0::/64', vlan: 'vlan://42' });
  assert.equal(r.endIp, '10.0.0.10', 'endip defaults to startip');
  assert.equal(r.ip6Gateway, '2001:db8::1');
  assert.equal(r.ip6Cidr, '2001:db8::/64');
  assert.equal(r.vlan, '42');
  const v6only = validateRanges({ ip6gateway: 'fd00::1', ip6cidr: 'fd00::/64', startipv6: 'fd00::10', endipv6: 'fd00::20' });
  assert.equal(v6only.startIp, null);
  assert.equal(v6only.startIpv6, 'fd00::10');
  assert.throws(() => validateRanges({}), /startip/);
  assert.throws(() => validateRanges({ ip6cidr: 'fd00::/64' }), /ip6gateway/);
  assert.throws(() => validateRanges({ ip6gateway: 'fd00::1', ip6cidr: 'fd00::/64', startipv6: 'fd00::20', endipv6: 'fd00::10' }), /startipv6 .* greater/);
  assert.throws(() => validateRanges({ ip6gateway: 'fd00::1', ip6cidr: 'fd00::/64', startipv6: 'fd01::20' }), /startipv6/i);
  assert.throws(() => validateRanges({ gateway: '10.0.0.1', netmask: '255.255.255.252', startip: '10.0.0.3' }), /startip 10.0.0.3: it is not a host address/);
  assert.throws(() => validateRanges({ gateway: '10.0.0.1', netmask: '255.255.255.0', startip: '10.0.0.10', vlan: '0' }), /vlan/);
});

test('leastLoaded: Up hosts first, fewest VMs, ties to the oldest, optional exclusion', () => {
  const h = (id: number, state: string) => ({ id, state } as unknown as HostRow);
  const hosts = [h(1, 'Disconnected'), h(2, 'Up'), h(3, 'Up')];
  assert.equal(leastLoaded(hosts, new Map([[2, 5], [3, 4], [1, 0]]))!.id, 3, 'an Up host beats an idle disconnected one');
  assert.equal(leastLoaded(hosts, new Map([[2, 4], [3, 4]]))!.id, 2, 'tie: the oldest');
  assert.equal(leastLoaded(hosts, new Map([[2, 0], [3, 4]]), 2)!.id, 3, 'excluded host skipped');
  assert.equal(leastLoaded([h(1, 'Disconnected'), h(4, 'Alert')], new Map([[1, 2]]))!.id, 4, 'no Up host: any host');
  assert.equal(leastLoaded([], new Map()), null);
});
