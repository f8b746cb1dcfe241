// The conntrack messages of the agent channel (protocol/conntrack.ts): what each side accepts, and the
// bounds that keep an answer inside a frame. Pure.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_CONNECTIONS_PER_MESSAGE, decodeAgentMessage, decodeServerMessage } from '../../src/protocol/index.js';

const entry = (i = 0) => ({ zone: 5, protocol: 'tcp', src: '192.0.2.5', dst: '10.0.0.1', sport: 1024 + (i % 60000), dport: 22 });
const answer = (vms: unknown[], extra: Record<string, unknown> = {}) => JSON.stringify({ type: 'connections', id: 1, complete: true, vms, ...extra });

test('connections (agent → server): valid answers pass; bad entries, mixed families, too many entries and long errors do not', () => {
  assert.equal(decodeAgentMessage(answer([{ vmId: 'v', truncated: false, entries: [entry(), { zone: 0, protocol: 'icmp', src: '2001:db8::1', dst: '2001:db8::2', icmpType: 128, icmpCode: 0 }, { zone: 1, protocol: 50, src: '10.0.0.1', dst: '10.0.0.2' }] }])).ok, true);
  const bad = [
    answer([{ vmId: 'v', truncated: false, entries: [{ ...entry(), src: 'x' }] }]),
    answer([{ vmId: 'v', truncated: false, entries: [{ ...entry(), dst: '2001:db8::1' }] }]),   // v4 → v6
    answer([{ vmId: 'v', truncated: false, entries: [{ ...entry(), zone: 70000 }] }]),
    answer([{ vmId: 'v', truncated: false, entries: [{ ...entry(), protocol: 'gre' }] }]),
    answer([{ vmId: 'v', truncated: false, entries: [{ ...entry(), sport: -1 }] }]),
    answer([{ vmId: '', truncated: false, entries: [] }]),
    answer([], { id: 0 }),
    answer([], { error: 'x'.repeat(501) }),
    answer([{ vmId: 'a', truncated: false, entries: Array.from({ length: MAX_CONNECTIONS_PER_MESSAGE / 2 + 1 }, (_, i) => entry(i)) },
      { vmId: 'b', truncated: false, entries: Array.from({ length: MAX_CONNECTIONS_PER_MESSAGE / 2 }, (_, i) => entry(i)) }]),
  ];
  for (const b of bad) assert.equal(decodeAgentMessage(b).ok, false, b.slice(0, 200));
});

test('listConnections and connectionSettings (server → agent): bounded questions, a boolean setting', () => {
  const q = (extra: Record<string, unknown>) => JSON.stringify({ type: 'listConnections', id: 3, vms: ['a'], limitPerVm: 1000, timeoutMs: 2750, ...extra });
  assert.equal(decodeServerMessage(q({})).ok, true);
  for (const bad of [{ limitPerVm: 0 }, { limitPerVm: MAX_CONNECTIONS_PER_MESSAGE + 1 }, { timeoutMs: 10 }, { timeoutMs: 600_000 }, { id: -1 }, { vms: [''] }]) {
    assert.equal(decodeServerMessage(q(bad)).ok, false, JSON.stringify(bad));
  }
  assert.equal(decodeServerMessage(JSON.stringify({ type: 'connectionSettings', cutOnRevoke: true })).ok, true);
  assert.equal(decodeServerMessage(JSON.stringify({ type: 'connectionSettings', cutOnRevoke: 'true' })).ok, false);
  assert.equal(decodeServerMessage(JSON.stringify({ type: 'connectionSettings' })).ok, false);
});
