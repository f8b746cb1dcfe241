// Address and CIDR parsing, canonical text, and merging.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { canonicalIp, cidrRange, formatCidr, parseCidr, rangesToCidrTexts, type Range } from '../../src/policy/cidr.js';

const ips: [string, string | null][] = [
  ['10.0.0.1', '10.0.0.1'],
  ['255.255.255.255', '255.255.255.255'],
  ['0.0.0.0', '0.0.0.0'],
  ['256.0.0.1', null],
  ['10.0.0', null],
  ['010.0.0.1', null],
  ['1.2.3.4.5', null],
  ['2001:DB8::1', '2001:db8::1'],
  ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
  ['::', '::'],
  ['::1', '::1'],
  ['1::', '1::'],
  ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
  ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
  ['::ffff:192.0.2.1', '::ffff:c000:201'],
  ['1:2:3:4:5:6:7:8:9', null],
  ['1::2::3', null],
  ['fe80::1%eth0', null],
  ['12345::', null],
  ['', null],
];
for (const [input, want] of ips) {
  test(`canonicalIp(${JSON.stringify(input)}) = ${want}`, () => assert.equal(canonicalIp(input), want));
}

const cidrs: [string, string | null][] = [
  ['10.1.2.3/8', '10.0.0.0/8'],
  ['0.0.0.0/0', '0.0.0.0/0'],
  ['203.0.113.50/32', '203.0.113.50/32'],
  ['10.0.0.0/33', null],
  ['10.0.0.0', null],
  ['10.0.0.0/', null],
  ['10.0.0.0/08', null],
  ['2001:db8::77/64', '2001:db8::/64'],
  ['::/0', '::/0'],
  ['2001:db8::1/128', '2001:db8::1/128'],
  ['2001:db8::/129', null],
];
for (const [input, want] of cidrs) {
  test(`parseCidr(${JSON.stringify(input)}) → ${want}`, () => {
    const c = parseCidr(input);
    assert.equal(c === null ? null : formatCidr(c), want);
  });
}

const merges: { name: string; family: 4 | 6; input: string[]; want: string[] }[] = [
  { name: 'adjacent halves merge', family: 4, input: ['10.0.0.0/25', '10.0.0.128/25'], want: ['10.0.0.0/24'] },
  { name: 'contained block disappears', family: 4, input: ['10.0.0.0/8', '10.1.0.0/16'], want: ['10.0.0.0/8'] },
  { name: 'adjacent but unaligned stays two blocks', family: 4, input: ['10.0.1.0/24', '10.0.2.0/24'], want: ['10.0.1.0/24', '10.0.2.0/24'] },
  { name: 'two /8 merge to a /7 when aligned', family: 4, input: ['11.0.0.0/8', '10.0.0.0/8'], want: ['10.0.0.0/7'] },
  { name: 'duplicates collapse, order is by address', family: 4, input: ['192.0.2.0/24', '10.0.0.0/8', '192.0.2.0/24'], want: ['10.0.0.0/8', '192.0.2.0/24'] },
  { name: 'halves of everything', family: 4, input: ['128.0.0.0/1', '0.0.0.0/1'], want: ['0.0.0.0/0'] },
  { name: 'three /32 in a row', family: 4, input: ['10.0.0.1/32', '10.0.0.2/32', '10.0.0.3/32'], want: ['10.0.0.1/32', '10.0.0.2/31'] },
  { name: 'IPv6 adjacent /65s', family: 6, input: ['2001:db8::/65', '2001:db8:0:0:8000::/65'], want: ['2001:db8::/64'] },
  { name: 'IPv6 contained', family: 6, input: ['::/0', '2001:db8::1/128'], want: ['::/0'] },
];
for (const m of merges) {
  test(`merge CIDRs: ${m.name}`, () => {
    const ranges: Range[] = m.input.map((s) => cidrRange(parseCidr(s)!));
    assert.deepEqual(rangesToCidrTexts(m.family, ranges), m.want);
  });
}
