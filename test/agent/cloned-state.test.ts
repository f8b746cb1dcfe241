// The saved desired state is applied at start only by the agent it was written for (hostname and
// token): a cloned hypervisor, started with its own hostname and token but its original's state dir,
// must not enforce its original's VMs before the server answers. With real packets on a lab host and a
// real agent that reaches no server: the clone closes the VM ports (the ping its original's state would
// allow is blocked); the twin, the original agent, applies the file (the ping passes). Needs root.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { createLab, ping, type Lab, type Host, type Vm } from '../../src/lab/index.js';
import { Agent } from '../../src/agent/agent.js';
import { type HeldState, loadState, notOurs, saveState, tokenSha256 } from '../../src/agent/state-file.js';
import { createDataplane, type BackendName } from '../../src/dataplane/choose.js';
import { discoverPorts } from '../../src/dataplane/ports.js';
import { BACKENDS, policyOf } from '../dataplane/kit.js';
import { hostState, rule } from '../dataplane/fixtures.js';
import { freePort } from '../helpers/server.js';  // nothing listens there: the agent never reaches a server

let lab: Lab;
let h1: Host;
let a: Vm, b: Vm;
let dir = '';
let held: HeldState;

/** Start an agent with this identity on the lab host (no server reachable); return it and its error log lines. */
async function startAgent(hostname: string, token: string) {
  const errors: string[] = [];
  const log = pino({ level: 'error' }, { write: (line: string) => { errors.push(JSON.parse(line).msg); } });
  const dp = createDataplane(BACKENDS[0] as BackendName, { netns: h1.netns });
  const agent = new Agent({
    server: `http://127.0.0.1:${await freePort()}`, token, hostname, stateDir: dir, dataplane: dp,
    discover: (s) => discoverPorts(dp.runner, s), preflight: null, reconcileMs: 60_000, log, backoffMinMs: 1000, backoffMaxMs: 5000,
  });
  await agent.start();
  return { agent, errors, stop: async () => { await agent.stop(); await dp.close?.(); } };
}

before(async () => {
  lab = await createLab();
  h1 = await lab.addHost('h1');
  a = await lab.addVm({ host: h1, name: 'a', nics: [{ mac: '52:54:00:00:07:0a', ipv4: '198.51.100.95/24' }] });
  b = await lab.addVm({ host: h1, name: 'b', nics: [{ mac: '52:54:00:00:07:0b', ipv4: '198.51.100.96/24' }] });
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-clone-'));
  // the original's state: b lets a ping it
  const hashed = (p: ReturnType<typeof policyOf>) => ({ ...p, hash: '0'.repeat(64) });
  const state = hostState([hashed(policyOf(a)), hashed(policyOf(b, { ingress: [rule('icmp', [`${a.ipv4}/32`], { icmp: [-1, -1] })] }))], [], 7);
  held = { serverUrl: '', savedAt: new Date().toISOString(), state, host: { hostname: 'kvm-orig', tokenSha256: tokenSha256('orig-token') } };
  await saveState(dir, held);
});

after(async () => {
  await lab?.destroy();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('the saved state names whom it was written for; another hostname or another token is not ours, a file from before names were kept is', async () => {
  const back = (await loadState(dir))!;
  assert.deepEqual(back.host, held.host);
  assert.equal(notOurs(back, 'kvm-orig', 'orig-token'), null);
  assert.match(notOurs(back, 'kvm-clone', 'clone-token') ?? '', /another token/);
  assert.match(notOurs(back, 'kvm-clone', 'orig-token') ?? '', /written for hostname kvm-orig, this agent is kvm-clone/);
  const { host: _, ...unnamed } = back;
  // an older agent's file (no name): applied, as that agent would have, so an upgrade keeps VMs enforced
  assert.equal(notOurs(unnamed, 'kvm-orig', 'orig-token'), null);
});

test('a clone (its own hostname and token, its original\'s state dir) does not apply the file: VM ports closed until the server answers', async () => {
  const clone = await startAgent('kvm-clone', 'clone-token');
  try {
    assert.equal(clone.agent.appliedRevision, null, 'nothing applied');
    assert.equal(clone.agent.state, null);
    assert.ok(clone.errors.some((m) => /saved desired state is not this host's .*another token.*not applied/.test(m)), clone.errors.join('\n'));
    assert.equal((await ping(a, b.ipv4!, { timeoutMs: 800 })).ok, false, 'the original\'s rule is not enforced here');
    assert.deepEqual((await loadState(dir))!.host, held.host, 'the file stays until a snapshot replaces it');
  } finally { await clone.stop(); }
});

test('twin: the agent it was written for applies it at start, before any server answers', async () => {
  const orig = await startAgent('kvm-orig', 'orig-token');
  try {
    assert.equal(orig.agent.appliedRevision, 7);
    assert.deepEqual(orig.errors, []);
    assert.equal((await ping(a, b.ipv4!, { timeoutMs: 3000 })).ok, true, 'the saved rule is enforced');
    assert.equal((await ping(b, a.ipv4!, { timeoutMs: 800 })).ok, false, 'and only it');
  } finally { await orig.stop(); }
});
