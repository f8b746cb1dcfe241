import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import {
  signParams, verifySignature, parseExpires, formatExpires, encodeRfc3986, encodeLibcloud, canonicalString,
} from '../../src/api/signing.js';

const SECRET = 'VDaACYb0LV9eNjTetIOElcVQkvJck_J_QljX_FcHRj87ZKiy0z0ty0ZsYBkoXkY9b7eq1EhwJaw7FF3akA3KBQ';

test('matches the CloudStack documentation example', () => {
  const p = { command: 'listUsers', apiKey: 'plgWJfZK4gyS3mOMTVmjUVg-X-jlWlnfaUJ9GAbBbf9EdM-kAYMmAiLqzzq1ElZLYq_u38zCm0bewzGUdP66mg', response: 'json' };
  assert.equal(signParams(p, SECRET), 'TTpdDq/7j/J58XCRHomKoQXEQds=');
  assert.deepEqual(verifySignature({ ...p, signature: 'TTpdDq/7j/J58XCRHomKoQXEQds=' }, SECRET), { ok: true });
});

test('canonical form: sorted by case-sensitive name, Java URLEncoder escaping, lower-cased', () => {
  assert.equal(canonicalString({ b: 'x y', a: 'A/B*~', Z: '1' }), 'z=1&a=a%2fb*%7e&b=x%20y');
});

const alphabet = 'abcXYZ019 /,:=+@-._~*[]()!\'"%&?#é漢';
function randomValue(): string {
  const n = 1 + Math.floor(Math.random() * 12);
  let s = '';
  for (let i = 0; i < n; i++) s += [...alphabet][Math.floor(Math.random() * [...alphabet].length)];
  return s;
}

test('property: sign → verify round-trips; any tampering fails', () => {
  for (let i = 0; i < 300; i++) {
    const secret = randomBytes(12).toString('base64url');
    const params: Record<string, string> = { command: 'listSecurityGroups', apiKey: randomBytes(8).toString('hex') };
    const extra = Math.floor(Math.random() * 4);
    for (let j = 0; j < extra; j++) params[`p${j}${j % 2 ? 'X' : ''}`] = randomValue();
    const signature = signParams(params, secret);
    assert.deepEqual(verifySignature({ ...params, signature }, secret), { ok: true });
    // tamper with a value, add a parameter, use another secret, flip a signature byte
    assert.equal(verifySignature({ ...params, command: 'listSecurityGroupz', signature }, secret).ok, false);
    assert.equal(verifySignature({ ...params, extra: '1', signature }, secret).ok, false);
    assert.equal(verifySignature({ ...params, signature }, secret + 'x').ok, false);
    const bytes = Buffer.from(signature, 'base64'); bytes[0] ^= 1;
    assert.equal(verifySignature({ ...params, signature: bytes.toString('base64') }, secret).ok, false);
  }
});

test('the signature is compared as CloudStack\'s Base64 text: other spellings of the same bytes are refused', () => {
  const p = { command: 'listUsers', apiKey: 'plgWJfZK4gyS3mOMTVmjUVg-X-jlWlnfaUJ9GAbBbf9EdM-kAYMmAiLqzzq1ElZLYq_u38zCm0bewzGUdP66mg', response: 'json' };
  const exact = 'TTpdDq/7j/J58XCRHomKoQXEQds=';
  assert.deepEqual(verifySignature({ ...p, signature: exact }, SECRET), { ok: true });
  for (const other of ['TTpdDq/7j/J58XCRHomKoQXEQds', 'TTpdDq_7j_J58XCRHomKoQXEQds=', `${exact}!!`, `${exact} `, ` ${exact}`, 'TTpdDq/7j/J58XCRHomKoQXEQds==']) {
    assert.deepEqual(verifySignature({ ...p, signature: other }, SECRET), { ok: false, reason: 'bad-signature' }, JSON.stringify(other));
  }
});

test('missing signature is rejected', () => {
  assert.deepEqual(verifySignature({ command: 'listZones', apiKey: 'k' }, 's'), { ok: false, reason: 'missing-signature' });
});

test('signature version 3: expires mandatory, parsed, and must be in the future', () => {
  const now = Date.parse('2026-11-21T10:00:00Z');
  const base = { command: 'listZones', apiKey: 'k', signatureVersion: '3' };
  const sign = (p: Record<string, string>) => ({ ...p, signature: signParams(p, 's') });
  assert.deepEqual(verifySignature(sign(base), 's', now), { ok: false, reason: 'missing-expires' });
  assert.deepEqual(verifySignature(sign({ ...base, expires: '2026-11-21T09:59:59+0000' }), 's', now), { ok: false, reason: 'expired' });
  assert.deepEqual(verifySignature(sign({ ...base, expires: 'tomorrow' }), 's', now), { ok: false, reason: 'bad-expires' });
  assert.deepEqual(verifySignature(sign({ ...base, expires: '2026-11-21T10:05:00+0000' }), 's', now), { ok: true });
  // csclient's spelling of the parameter name
  const lower = { command: 'listZones', apiKey: 'k', signatureversion: '3' };
  assert.deepEqual(verifySignature(sign(lower), 's', now), { ok: false, reason: 'missing-expires' });
  // version 2 (no signatureVersion): expires not required
  assert.deepEqual(verifySignature(sign({ command: 'listZones', apiKey: 'k' }), 's', now), { ok: true });
});

test('parseExpires accepts CloudStack and ISO offsets', () => {
  assert.equal(parseExpires('2026-11-21T09:47:47+0000'), Date.parse('2026-11-21T09:47:47Z'));
  assert.equal(parseExpires('2026-11-21T11:47:47+0200'), Date.parse('2026-11-21T09:47:47Z'));
  assert.equal(parseExpires('2026-11-21T09:47:47Z'), Date.parse('2026-11-21T09:47:47Z'));
  assert.equal(parseExpires(formatExpires(new Date('2030-01-02T03:04:05Z'))), Date.parse('2030-01-02T03:04:05Z'));
});

test('parseExpires takes exactly what DateUtil.parseTZDateString takes (each accepted form next to a near miss)', () => {
  const at = (iso: string) => Date.parse(iso);
  const pairs: [string, number | null][] = [
    // ISO_OFFSET_DATE_TIME: seconds optional, any case, hour-only and colon offsets, 0–9 fraction digits
    ['2026-11-21T09:47Z', at('2026-11-21T09:47:00Z')], ['2026-11-21T09Z', null],
    ['2026-11-21t09:47:47z', at('2026-11-21T09:47:47Z')], ['2026-11-21 09:47:47Z', null],
    ['2026-11-21T11:47:47+02', at('2026-11-21T09:47:47Z')], ['2026-11-21T11:47:47+2', null],
    ['2026-11-21T11:17:47+01:30', at('2026-11-21T09:47:47Z')], ['2026-11-21T11:17:47+01:3', null],
    ['2026-11-21T11:17:48+01:30:01', at('2026-11-21T09:47:47Z')], ['2026-11-21T11:17:47+01:30:1', null],
    ['2026-11-21T09:47:47.123456789Z', at('2026-11-21T09:47:47.123Z')], ['2026-11-21T09:47:47.1234567891Z', null],
    ['2026-11-21T09:47:47.Z', at('2026-11-21T09:47:47Z')], ['2026-11-21T09:47.5Z', null],
    ['2026-11-21T09:47:47+18:00', at('2026-11-20T15:47:47Z')], ['2026-11-21T09:47:47+18:01', null],
    ['2026-11-21T09:47:47-00:00', at('2026-11-21T09:47:47Z')], ['2026-11-21T09:47:47+24:00', null],
    // yyyy-MM-dd'T'HH:mm:ssZ (python3-cs): +HHMM only, case-sensitive T, SMART calendar
    ['2026-11-21T11:47:47+0200', at('2026-11-21T09:47:47Z')], ['2026-11-21t11:47:47+0200', null],
    ['2026-02-30T09:47:47+0000', at('2026-02-28T09:47:47Z')], ['2026-02-30T09:47:47Z', null], ['2026-02-32T09:47:47+0000', null],
    ['2028-02-30T09:47:47+0000', at('2028-02-29T09:47:47Z')], ['2026-13-01T09:47:47+0000', null],
    ['2026-11-21T24:00:00+0000', at('2026-11-22T00:00:00Z')], ['2026-11-21T24:00:01+0000', null], ['2026-11-21T24:00:00Z', null],
    ['2026-11-21T09:47+0000', null], ['2026-11-21T09:47:47+020', null],
    // the legacy 'Z'Z form
    ['2026-11-21T09:47:47Z+0000', at('2026-11-21T09:47:47Z')], ['2026-11-21T09:47:47Z+00:00', null], ['2026-11-21T09:47:47z+0000', null],
    ['2026-11-21T11:47:47Z+0200', at('2026-11-21T09:47:47Z')],
    // .SSSSSSX: exactly six fraction digits, Z / +HH / +HHMM
    ['2026-11-21T11:47:47.500000+0200', at('2026-11-21T09:47:47.5Z')], ['2026-11-21T11:47:47.50000+0200', null],
    ['2026-02-30T09:47:47.000000Z', at('2026-02-28T09:47:47Z')], ['2026-02-30T09:47:47.00000Z', null],
    ['2026-11-21T11:47:47.000000+02', at('2026-11-21T09:47:47Z')], ['2026-11-21T09:47:47.000000z', at('2026-11-21T09:47:47Z')],
    // nothing is trimmed or guessed
    [' 2026-11-21T09:47:47Z', null], ['2026-11-21T09:47:47Z ', null], ['2026-11-21T09:47:47 0000', null], ['2026-11-21', null],
    ['1763718467', null], ['２026-11-21T09:47:47Z', null],
  ];
  for (const [text, want] of pairs) assert.equal(parseExpires(text), want, text);
});

test('expires: the very millisecond is still good (CloudStack refuses one before now)', () => {
  const now = Date.parse('2026-11-21T10:00:00Z');
  const sign = (p: Record<string, string>) => ({ ...p, signature: signParams(p, 's') });
  const base = { command: 'listZones', apiKey: 'k', signatureVersion: '3' };
  assert.deepEqual(verifySignature(sign({ ...base, expires: '2026-11-21T10:00:00Z' }), 's', now), { ok: true });
  assert.deepEqual(verifySignature(sign({ ...base, expires: '2026-11-21T10:00:00Z' }), 's', now + 1), { ok: false, reason: 'expired' });
});

function signWith(params: Record<string, string>, secret: string, enc: (s: string) => string, opts: { encKeys?: boolean; sortLower?: boolean } = {}): string {
  const names = Object.keys(params);
  names.sort(opts.sortLower ? (a, b) => (a.toLowerCase() < b.toLowerCase() ? -1 : 1) : undefined);
  const text = names.map((n) => `${opts.encKeys ? enc(n) : n}=${enc(params[n]!)}`).join('&').toLowerCase();
  return createHmac('sha1', secret).update(text).digest('base64');
}

test('client variants: RFC 3986 (go-cloudstack, csclient) and libcloud escaping verify', () => {
  const p = { command: 'createSecurityGroup', apiKey: 'k', name: "a~b*c[d](e)!f'", description: 'x y' };
  for (const sig of [
    signWith(p, 's', encodeRfc3986), signWith(p, 's', encodeRfc3986, { encKeys: true }),
    signWith(p, 's', encodeLibcloud, { sortLower: true }),
  ]) assert.deepEqual(verifySignature({ ...p, signature: sig }, 's'), { ok: true });
});

test('libcloud-style signing (lower-cased sorted keys, urlencode, + as %20) verifies', () => {
  // Python's own urlencode, as libcloud's CloudStack connection uses it
  const params = { command: 'authorizeSecurityGroupIngress', apiKey: 'AbC', securityGroupId: 'x', 'usersecuritygrouplist[0].account': 'a b', cidrList: '10.0.0.0/8', name: 'a*b~c(d)', response: 'json' };
  const py = `
import json, sys, hmac, hashlib, base64
from urllib.parse import urlencode
d = json.loads(sys.argv[1])
pairs = sorted(((k.lower(), v) for k, v in d.items()), key=lambda x: x[0])
text = urlencode(pairs).lower().replace('+', '%20')
print(base64.b64encode(hmac.new(b's3cr3t', text.encode(), hashlib.sha1).digest()).decode())`;
  const sig = execFileSync('/usr/bin/python3', ['-c', py, JSON.stringify(params)], { encoding: 'utf8' }).trim();
  assert.deepEqual(verifySignature({ ...params, signature: sig }, 's3cr3t'), { ok: true });
  assert.equal(verifySignature({ ...params, cidrList: '10.0.0.0/9', signature: sig }, 's3cr3t').ok, false);
});

test('python3-cs signs exactly what we verify (real client code)', () => {
  const params = { command: 'createSecurityGroup', apiKey: 'AbC', name: 'web~tier *1', description: 'a/b:c=d+e@f,g', signatureVersion: '3', expires: '2099-01-01T00:00:00+0000', response: 'json' };
  const py = `
import json, sys
from cs.client import CloudStack
c = CloudStack(endpoint='http://x', key='AbC', secret='s3cr3t')
d = json.loads(sys.argv[1]); c._sign(d); print(d['signature'])`;
  const sig = execFileSync('/usr/bin/python3', ['-c', py, JSON.stringify(params)], { encoding: 'utf8' }).trim();
  assert.deepEqual(verifySignature({ ...params, signature: sig }, 's3cr3t'), { ok: true });
  assert.equal(verifySignature({ ...params, name: 'web~tier *2', signature: sig }, 's3cr3t').ok, false);
});
