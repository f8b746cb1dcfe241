// Agent pieces without a server or kernel: the state file, URL and duration parsing, port comparison.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadState, saveState } from '../../src/agent/state-file.js';
import { agentUrl } from '../../src/agent/agent.js';
import { parseDuration } from '../../src/agent/run.js';
import { samePorts } from '../../src/agent/merge.js';

test('the held state survives a round trip through the state dir; a corrupt file is an error, a missing one is null', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-state-'));
  try {
    assert.equal(await loadState(dir), null);
    const held = { serverUrl: 'http://x', savedAt: 'now', state: { hostId: 'h', revision: 7, vms: [], sets: [{ id: 'sg1v4', family: 4 as const, members: ['10.0.0.1'] }] } };
    await saveState(dir, held);
    assert.deepEqual(await loadState(dir), held);
    assert.deepEqual(fs.readdirSync(dir), ['desired-state.json'], 'no temp file left behind');
    assert.equal(fs.statSync(path.join(dir, 'desired-state.json')).mode & 0o777, 0o600);
    fs.writeFileSync(path.join(dir, 'desired-state.json'), '{"state":');
    await assert.rejects(loadState(dir));
    fs.writeFileSync(path.join(dir, 'desired-state.json'), '{"state":{"revision":"x"}}');
    await assert.rejects(loadState(dir), /not a saved desired state/);
  } finally { fs.rmSync(dir, { recursive: true, force: true }); }
});

test('server URLs and durations', () => {
  assert.equal(agentUrl('http://10.0.0.1:8080'), 'ws://10.0.0.1:8080/agent');
  assert.equal(agentUrl('https://mgmt.example'), 'wss://mgmt.example/agent');
  assert.equal(agentUrl('ws://mgmt:8080/custom'), 'ws://mgmt:8080/custom');
  assert.equal(parseDuration('10s'), 10_000);
  assert.equal(parseDuration('250ms'), 250);
  assert.equal(parseDuration('2m'), 120_000);
  assert.equal(parseDuration('1500'), 1500);
  assert.throws(() => parseDuration('soon'), /not a duration/);
});

test('a renamed tap is a port change; the same ports in another order are not', () => {
  const a = { nics: { n1: { device: 'vnet0', bridge: 'cloudbr0' }, n2: { device: 'vnet1', bridge: 'cloudbr0' } }, bridges: { cloudbr0: { uplinks: ['eth0'], unknownTaps: [] } } };
  const b = { nics: { n2: { device: 'vnet1', bridge: 'cloudbr0' }, n1: { device: 'vnet0', bridge: 'cloudbr0' } }, bridges: { cloudbr0: { uplinks: ['eth0'], unknownTaps: [] } } };
  assert.ok(samePorts(a, b));
  const c = { ...a, nics: { ...a.nics, n1: { device: 'vnet7', bridge: 'cloudbr0' } } };
  assert.ok(!samePorts(a, c));
});
