// The agent wire protocol's schemas (pure): what the server sends passes the agent's validation, what
// an agent may send passes the server's, and each bound refuses just past itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  closeReason, MAX_ERROR_CHARS, MAX_FINDINGS, MAX_HOSTNAME_CHARS, MAX_JSON_CONTAINERS, MAX_VMS_PER_HOST, PROTOCOL_VERSION, agentMessageSchema, decodeAgentMessage, decodeServerMessage, fastAck,
} from '../../src/protocol/index.js';
import { emptyCloudState } from '../../src/policy/state.js';
import { Fleet } from '../../src/control/fleet.js';
import { deltaJson, snapshotJson } from '../../src/control/wire.js';

const hello = { type: 'hello', version: PROTOCOL_VERSION, token: 't'.repeat(43), hostname: 'kvm01', revision: null };
const ok = (m: unknown) => decodeAgentMessage(JSON.stringify(m)).ok;

test('agent messages: valid ones pass, each field out of bounds or of the wrong type is refused with a reason', () => {
  assert.ok(ok(hello));
  assert.ok(ok({ ...hello, revision: 42, dataplane: 'nftables' }));
  assert.ok(ok({ type: 'ping' }));
  assert.ok(ok({ type: 'ack', revision: 3, vms: { a: { ok: true }, b: { ok: false, error: 'e'.repeat(MAX_ERROR_CHARS) } } }));
  assert.ok(ok({ type: 'report', preflight: [{ check: 'c', ok: false, detail: 'd' }], repairs: [{ at: 'now', what: 'w', count: 2 }] }));
  // The twins: other control characters in stored texts (tool output has lines and tabs), any letter in a hostname.
  assert.ok(ok({ type: 'ack', revision: 3, vms: { a: { ok: false, error: 'line 1\n\tline 2\u001b' } } }));
  assert.ok(ok({ type: 'report', preflight: [{ check: 'c', ok: false, detail: 'a\nb' }], repairs: [{ at: 'now', what: 'w\tx', count: 2 }] }));
  assert.ok(ok({ ...hello, hostname: 'hyperviseur-é/ns1' }));
  for (const hostname of ['hôte-1', 'xn--hte-1-ssa.example', 'ホスト-01', 'kvm-\u00a0-nbsp']) assert.ok(ok({ ...hello, hostname }), hostname);
  const bad: unknown[] = [
    null, [], 'hello', {}, { type: 'nope' }, { ...hello, version: '1' }, { ...hello, token: '' }, { ...hello, hostname: 'h'.repeat(MAX_HOSTNAME_CHARS + 1) },
    { ...hello, revision: -1 }, { ...hello, revision: 1.5 }, { ...hello, revision: 2 ** 60 }, { ...hello, dataplane: 'ip tables' }, { ...hello, dataplane: 'x'.repeat(33) },
    { type: 'ack', revision: 1, vms: { a: { ok: 'yes' } } }, { type: 'ack', revision: 1, vms: { a: { ok: false, error: 'e'.repeat(MAX_ERROR_CHARS + 1) } } },
    { type: 'ack', revision: 1, vms: [] }, { type: 'report', preflight: [null], repairs: [] },
    { type: 'report', preflight: Array.from({ length: MAX_FINDINGS + 1 }, () => ({ check: 'c', ok: true, detail: 'd' })), repairs: [] },
    { type: 'report', preflight: [], repairs: [{ at: 'now', what: 'w', count: -1 }] },
    // U+0000 in a text the server stores (PostgreSQL cannot), a control character in a hostname.
    { ...hello, hostname: 'kvm\u000001' }, { ...hello, hostname: 'kvm\n01' }, { ...hello, hostname: 'kvm\u007f' },
    // C1 control characters (U+009B is an 8-bit CSI, U+0085 a line break) and the Unicode line and paragraph separators.
    { ...hello, hostname: 'kvm\u009b31m' }, { ...hello, hostname: 'kvm\u008501' }, { ...hello, hostname: 'kvm\u202801' }, { ...hello, hostname: 'kvm\u202901' },
    { type: 'ack', revision: 1, vms: { a: { ok: false, error: 'e\u0000' } } },
    { type: 'report', preflight: [{ check: 'c', ok: false, detail: 'd\u0000' }], repairs: [] },
    { type: 'report', preflight: [{ check: 'c\u0000', ok: false, detail: 'd' }], repairs: [] },
    { type: 'report', preflight: [], repairs: [{ at: 'now', what: 'w\u0000', count: 1 }] },
    { type: 'report', preflight: [], repairs: [{ at: 'n\u0000w', what: 'w', count: 1 }] },
  ];
  for (const m of bad) {
    const d = decodeAgentMessage(JSON.stringify(m));
    assert.equal(d.ok, false, JSON.stringify(m).slice(0, 80));
    if (!d.ok) assert.ok(d.reason.length > 0 && d.reason.length < 300);
  }
  const many: Record<string, { ok: boolean }> = {};
  for (let i = 0; i <= MAX_VMS_PER_HOST; i++) many[`vm-${i}`] = { ok: true };
  assert.equal(ok({ type: 'ack', revision: 1, vms: many }), false, 'more VMs than a host may hold');
  assert.equal(decodeAgentMessage('{"type":"ping"', false).ok, false, 'not JSON');
  assert.equal(decodeAgentMessage(Buffer.from('{"type":"ping"}'), true).ok, false, 'binary frames are refused');
  assert.equal(decodeAgentMessage(Buffer.from('{"type":"ping"}'), false).ok, true, 'text as a Buffer is fine');
  // Unknown fields are dropped (an older server ignores what a newer agent adds).
  const d = decodeAgentMessage(JSON.stringify({ ...hello, futureField: 1 }));
  assert.ok(d.ok && !('futureField' in d.message));
});

test('what the server sends (its wire text) passes the agent\'s validation', () => {
  const s = emptyCloudState();
  s.groups.set(1, { id: 1, uuid: 'g1', name: 'web', description: '', accountId: 1, domainId: 1 });
  s.rulesByGroup.set(1, [{ id: 1, uuid: 'r1', groupId: 1, direction: 'ingress', protocol: 'tcp', ports: { from: 80, to: 80 }, cidr: '0.0.0.0/0', allowedGroupId: null },
    { id: 2, uuid: 'r2', groupId: 1, direction: 'ingress', protocol: 'icmp', icmp: { type: -1, code: -1 }, cidr: null, allowedGroupId: 1 }]);
  for (const id of [1, 2]) {
    s.vms.set(id, { id, uuid: `00000000-0000-4000-8000-00000000000${id}`, instanceName: `i-1-${id}-VM`, name: `v${id}`, accountId: 1, domainId: 1, hostId: 1, state: 'Running' });
    s.nicsByVm.set(id, [{ id, uuid: `n${id}`, vmId: id, networkId: 1, mac: `02:00:00:00:00:0${id}`, ipv4: `10.0.0.${id}`, ipv6: `fd00::${id}`, secondaryIps: [], isDefault: true, deviceName: null }]);
    s.groupsByVm.set(id, [1]);
  }
  s.membersByGroup.set(1, [1, 2]);
  const f = new Fleet(s);
  f.addHost({ id: 1, uuid: 'h1', name: 'h1', tokenHash: 'x', revision: 5 });
  f.buildAll();
  const d = f.advance(1, 6)!;
  const dm = decodeServerMessage(deltaJson(d));
  assert.ok(dm.ok, dm.ok ? '' : dm.reason);
  const sm = decodeServerMessage(snapshotJson(f.snapshot(1)));
  assert.ok(sm.ok, sm.ok ? '' : sm.reason);
  if (sm.ok && sm.message.type === 'snapshot') assert.deepEqual(sm.message.state, f.snapshot(1), 'nothing lost in validation');
  assert.equal(decodeServerMessage(deltaJson({ ...d, revision: -1 })).ok, false);
});

test('telemetry messages (issue 11): hits and drops from agents, settings from the server, each bound refusing just past itself', () => {
  const vm = '11111111-1111-4111-8111-111111111111';
  const at = '2026-12-06T10:00:00.000Z';
  assert.ok(ok({ type: 'hits', at, vms: {} }));
  assert.ok(ok({ type: 'hits', at, vms: { [vm]: { abc123: 5, def: Number.MAX_SAFE_INTEGER } } }));
  assert.ok(ok({ type: 'drops', records: [null, 'anything: each record is checked on its own by the server'] }));
  for (const m of [
    { type: 'hits', vms: {} }, { type: 'hits', at: 'now', vms: {} }, { type: 'hits', at, vms: [] }, { type: 'hits', at, vms: { nope: { a: 1 } } },
    { type: 'hits', at, vms: { [vm]: { 'a.b': 1 } } }, { type: 'hits', at, vms: { [vm]: { a: -1 } } }, { type: 'hits', at, vms: { [vm]: { a: 0.5 } } },
    { type: 'hits', at, vms: { [vm]: { a: Number.MAX_SAFE_INTEGER + 2 } } }, { type: 'hits', at, vms: { [vm]: { a: '1' } } },
    { type: 'drops', records: new Array(5001).fill(null) }, { type: 'drops' },
  ]) assert.equal(decodeAgentMessage(JSON.stringify(m)).ok, false, JSON.stringify(m).slice(0, 120));
  const server = (m: unknown) => decodeServerMessage(JSON.stringify(m)).ok;
  assert.ok(server({ type: 'settings', dropLog: { rate: 10, burst: 50 } }));
  assert.ok(server({ type: 'settings', dropLog: { rate: 0, burst: 1 } }));
  assert.ok(server({ type: 'settings', dropLog: { rate: 10_000, burst: 100_000 } }));
  for (const dropLog of [{ rate: -1, burst: 50 }, { rate: 10_001, burst: 50 }, { rate: 10, burst: 0 }, { rate: 10, burst: 100_001 }, { rate: 1.5, burst: 50 }, { rate: 10 }]) {
    assert.equal(server({ type: 'settings', dropLog }), false, JSON.stringify(dropLog));
  }
});

test('acks: the hand-written fast path accepts exactly what the schema accepts and returns the same message', () => {
  const many: Record<string, { ok: boolean }> = {};
  for (let i = 0; i <= MAX_VMS_PER_HOST; i++) many[`vm-${i}`] = { ok: true };
  const atMost = Object.fromEntries(Object.entries(many).slice(1));
  const samples: unknown[] = [
    { type: 'ack', revision: 0, vms: {} },
    { type: 'ack', revision: Number.MAX_SAFE_INTEGER, vms: { a: { ok: true }, b: { ok: false, error: 'e'.repeat(MAX_ERROR_CHARS) } } },
    { type: 'ack', revision: 7, vms: { a: { ok: true, extra: 1 } }, extra: 'dropped' },
    { type: 'ack', revision: 7, vms: atMost },
    { type: 'ack', revision: 7, vms: many },
    { type: 'ack', revision: 7, vms: { [`${'x'.repeat(64)}`]: { ok: true } } },
    { type: 'ack', revision: 7, vms: { [`${'x'.repeat(65)}`]: { ok: true } } },
    { type: 'ack', revision: 7, vms: { '': { ok: true } } },
    { type: 'ack', revision: 7, vms: { a: { ok: false, error: 'e'.repeat(MAX_ERROR_CHARS + 1) } } },
    { type: 'ack', revision: 7, vms: { a: { ok: false, error: null } } },
    { type: 'ack', revision: 7, vms: { a: { ok: false, error: 'nul \u0000 inside' } } },
    { type: 'ack', revision: 7, vms: { a: { ok: false, error: 'lines\n\tand tabs \u001b[0m' } } },
    { type: 'ack', revision: 7, vms: { a: { ok: false, error: 'NIC port not found on host: n1', waiting: true }, b: { ok: false, waiting: false }, c: { ok: true } } },
    { type: 'ack', revision: 7, vms: { a: { ok: false, error: 'e', waiting: 'yes' } } },
    { type: 'ack', revision: 7, vms: { a: { ok: false, error: 'e', waiting: null } } },
    { type: 'ack', revision: 7, vms: { a: { ok: 1 } } },
    { type: 'ack', revision: 7, vms: { a: null } },
    { type: 'ack', revision: 7, vms: { a: [] } },
    { type: 'ack', revision: 7, vms: [] },
    { type: 'ack', revision: 7, vms: null },
    { type: 'ack', revision: 7 },
    { type: 'ack', revision: -1, vms: {} },
    { type: 'ack', revision: 1.5, vms: {} },
    { type: 'ack', revision: 2 ** 60, vms: {} },
    { type: 'ack', revision: '7', vms: {} },
    { type: 'ack', revision: null, vms: {} },
  ];
  for (const m of samples) {
    const text = JSON.stringify(m);
    const fast = fastAck(JSON.parse(text));
    const schema = agentMessageSchema.safeParse(JSON.parse(text));
    if (fast) assert.deepEqual(fast, schema.success ? schema.data : 'refused by the schema', text.slice(0, 80));
    else assert.equal(schema.success, false, `the schema accepts what the fast path leaves to it: ${text.slice(0, 80)}`);
    assert.equal(decodeAgentMessage(text).ok, schema.success, text.slice(0, 80));
  }
  // __proto__ as a VM id is left to the schema (never set as a prototype here).
  const proto = '{"type":"ack","revision":1,"vms":{"__proto__":{"ok":true}}}';
  assert.equal(fastAck(JSON.parse(proto)), null);
  assert.equal(decodeAgentMessage(proto).ok, agentMessageSchema.safeParse(JSON.parse(proto)).success);
});

test('a frame opening more arrays and objects than any real message is refused before it is parsed; brackets inside strings do not count', () => {
  const nested = Buffer.from(JSON.stringify({ type: 'drops', records: Array.from({ length: 5000 }, () => Array.from({ length: 200 }, () => [])) }));
  const refused = decodeAgentMessage(nested);
  assert.equal(refused.ok, false);
  assert.match((refused as { reason: string }).reason, new RegExp(`more than ${MAX_JSON_CONTAINERS}`));
  // The twin: the largest ack (16,384 VMs) whose error texts are full of brackets is a valid message.
  const vms = Object.fromEntries(Array.from({ length: 16_384 }, (_, i) => [`00000000-0000-4000-8000-${i.toString(16).padStart(12, '0')}`, { ok: false, error: 'nft: unexpected \'{\' in [set] \\"{['.repeat(12) }]));
  const ack = decodeAgentMessage(Buffer.from(JSON.stringify({ type: 'ack', revision: 1, vms })));
  assert.equal(ack.ok, true, JSON.stringify(ack).slice(0, 200));
});

test('close reasons: at most 123 bytes of UTF-8, cut at a character (ws throws past 123 bytes)', () => {
  for (const t of ['a'.repeat(200), '中'.repeat(100), '😀'.repeat(50), `${'x'.repeat(122)}é`, 'short']) {
    const r = closeReason(t);
    assert.ok(Buffer.byteLength(r) <= 123, `${t.slice(0, 10)}: ${Buffer.byteLength(r)} bytes`);
    assert.ok(t.startsWith(r), 'a prefix, no broken character');
    assert.ok(Buffer.byteLength(r) > 119 || r === t, 'as long as fits');
  }
  assert.equal(closeReason('short'), 'short');
});
