// A Palisade rule replaced in place by another tool with its `pal:` comment kept (`iptables -R …`,
// `nft replace rule …`): ids and chain hashes still match, so only the rule's body tells. On each
// backend a real agent (its saved state applied at start, no server) runs its periodic drift check
// against a lab host (with nftables also its ruleset watcher, as `palisade agent` runs it, which starts
// the check at once): after the forged replacement the blocked traffic passes (shown), then the drift
// check repairs it and the traffic is blocked again. Twin: an untouched ruleset is never rewritten.
// Needs root.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { ping, type Lab, type Host, type Vm } from '../../src/lab/index.js';
import { Agent } from '../../src/agent/agent.js';
import { watchRuleset } from '../../src/agent/link-watch.js';
import { isOwnProcess } from '../../src/agent/lifelong.js';
import { saveState, tokenSha256 } from '../../src/agent/state-file.js';
import { createDataplane, type BackendName, type KernelBackend } from '../../src/dataplane/choose.js';
import { discoverPorts } from '../../src/dataplane/ports.js';
import { vmChains } from '../../src/dataplane/nftables/names.js';
import { BACKENDS, instanceOf, oneHostThreeVms, policyOf } from '../dataplane/kit.js';
import { hostState, rule } from '../dataplane/fixtures.js';
import { freePort } from '../helpers/server.js';  // nothing listens there: the agent never reaches a server

const HOSTNAME = 'forged-h1';
const TOKEN = 'forged-token';

for (const backend of BACKENDS) describe(backend, () => {
  let lab: Lab;
  let h1: Host;
  let a: Vm, b: Vm;
  let dp: KernelBackend;
  let agent: Agent;
  let dir = '';
  let sh: (script: string) => Promise<string>;

  before(async () => {
    ({ lab, h1, a, b, sh } = await oneHostThreeVms('06', 90));
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-forged-'));
    // a: ICMP in from one outside /24 only (not b); b: nothing in (default deny)
    const hashed = (p: ReturnType<typeof policyOf>) => ({ ...p, hash: '0'.repeat(64) }); // what a saved state holds
    const state = hostState([hashed(policyOf(a, { ingress: [rule('icmp', ['203.0.113.0/24'], { icmp: [-1, -1], id: 'only-doc' })] })), hashed(policyOf(b))]);
    await saveState(dir, { serverUrl: '', savedAt: new Date().toISOString(), state, host: { hostname: HOSTNAME, tokenSha256: tokenSha256(TOKEN) } });
    dp = createDataplane(backend as BackendName, { netns: h1.netns });
    const log = pino({ level: 'silent' });
    agent = new Agent({
      ...(backend === 'nftables' ? { watchRuleset: (onChange: () => void) => watchRuleset({ netns: h1.netns, log, onChange, ours: isOwnProcess }) } : {}),
      server: `http://127.0.0.1:${await freePort()}`, token: TOKEN, hostname: HOSTNAME, stateDir: dir, dataplane: dp,
      discover: (s) => discoverPorts(dp.runner, s), preflight: null, reconcileMs: 1000, log,
      backoffMinMs: 1000, backoffMaxMs: 5000,
    });
    await agent.start();
    assert.equal(agent.appliedRevision, state.revision, 'the saved state is applied at start');
  });

  after(async () => {
    await agent?.stop();
    await dp?.close?.();
    await lab?.destroy();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('an untouched ruleset is checked pass after pass and never rewritten', async () => {
    assert.equal((await ping(b, a.ipv4!, { timeoutMs: 800 })).ok, false, 'b may not ping a');
    assert.equal((await ping(a, b.ipv4!, { timeoutMs: 800 })).ok, false, 'a may not ping b');
    const applies = agent.counters.applies;
    await new Promise((r) => setTimeout(r, 3500)); // three drift checks or more
    assert.equal(agent.counters.applies, applies, 'no apply');
    assert.equal(agent.repairCount, 0);
  });

  test('a rule replaced in place with its comment kept opens traffic until the drift check rewrites it', async () => {
    const repaired = new Promise<{ what: string }>((r) => agent.once('repaired', r));
    if (backend === 'iptables') {
      // a's ICMP rule, widened to every source: `iptables -R <chain> N … --comment "pal:…"`
      const chain = instanceOf(a);
      const lines = (await sh('iptables-save -t filter')).split('\n').filter((l) => l.startsWith(`-A ${chain} `));
      const n = lines.findIndex((l) => l.includes('pal:only-doc'));
      assert.ok(n >= 0, lines.join('\n'));
      const forged = lines[n].slice(`-A ${chain} `.length).replace('-s 203.0.113.0/24', '-s 0.0.0.0/0');
      assert.notEqual(forged, lines[n].slice(`-A ${chain} `.length));
      await sh(`iptables -R ${chain} ${n + 1} ${forged}`);
    } else {
      // b's default deny turned into an accept: `nft replace rule … handle H … comment "pal:…"`
      const chain = vmChains(instanceOf(b)).to;
      const listing = await sh(`nft -a list chain inet palisade ${chain}`);
      const m = /^\s*(?:.*) drop comment "(pal:deny[^"]*)" # handle (\d+)$/m.exec(listing);
      assert.ok(m, listing);
      await sh(`nft replace rule inet palisade ${chain} handle ${m[2]} counter accept comment '"${m[1]}"'`);
    }
    const forgedAt = performance.now();
    const victim = backend === 'iptables' ? [b, a] as const : [a, b] as const;
    // the forged rule really opened it (the check may already have repaired it: then it was quick)
    const opened = await ping(victim[0], victim[1].ipv4!, { timeoutMs: 250 });
    const r = await repaired;
    const ms = performance.now() - forgedAt;
    console.log(`# ${backend}: forged rule repaired ${ms.toFixed(0)} ms after the replacement (drift check every 1 s${backend === 'nftables' ? ', ruleset watcher on' : ''}): ${r.what}`);
    assert.match(r.what, /not the rule Palisade wrote/);
    assert.ok(opened.ok, 'the forged rule let the blocked ping through before the repair');
    assert.equal((await ping(victim[0], victim[1].ipv4!, { timeoutMs: 800 })).ok, false, 'blocked again after the repair');
    const applies = agent.counters.applies;
    await new Promise((res) => setTimeout(res, 2500));
    assert.equal(agent.counters.applies, applies, 'repaired once, then left alone');
  });

  if (backend === 'iptables') {
    test('Palisade\'s jump from FORWARD replaced by an ACCEPT under its comment is repaired the same way', async () => {
      const repaired = new Promise<{ what: string }>((r) => agent.once('repaired', r));
      const lines = (await sh('iptables-save -t filter')).split('\n').filter((l) => l.startsWith('-A FORWARD ') && /--physdev-is-bridged -m comment --comment "pal:fwd\./.test(l));
      assert.equal(lines.length, 1, lines.join('\n'));
      const n = (await sh('iptables-save -t filter')).split('\n').filter((l) => l.startsWith('-A FORWARD ')).indexOf(lines[0]);
      await sh(`iptables -R FORWARD ${n + 1} ${lines[0].slice('-A FORWARD '.length).replace(/-j \S+$/, '-j ACCEPT')}`);
      const opened = await ping(a, b.ipv4!, { timeoutMs: 250 });
      const r = await repaired;
      assert.match(r.what, /FORWARD jump pal:fwd\..*not the rule Palisade wrote/);
      assert.ok(opened.ok, 'the forged jump let the blocked ping through before the repair');
      assert.equal((await ping(a, b.ipv4!, { timeoutMs: 800 })).ok, false, 'blocked again after the repair');
    });
  }
});
