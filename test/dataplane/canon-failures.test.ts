// The drift check's learning of how the kernel holds Palisade's rules (canon.ts) when the scratch
// namespace does not hold them as written: a load there that fails, or a chain that comes back with
// other rules, leaves those chains judged by ids and hashes only, with a warning — never every rule
// taken for forged and the host rewritten on every pass. The other chains' bodies are still judged:
// a rule replaced in place under its comment is found. A chain found not as learned is learned again
// (the tools may have been upgraded under the agent). Needs root.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createLab, type Lab, type Host, type Vm } from '../../src/lab/index.js';
import { createRunner, type Runner } from '../../src/dataplane/exec.js';
import { createDataplane, type KernelBackend } from '../../src/dataplane/choose.js';
import { discoverPorts } from '../../src/dataplane/ports.js';
import { BACKENDS, policyOf } from './kit.js';
import { hostState, rule } from './fixtures.js';

for (const backend of BACKENDS) describe(backend, () => {
  let lab: Lab;
  let h1: Host;
  let a: Vm;
  /** What the scratch script is turned into before it runs (identity: as written). */
  let edit = (s: string) => s;
  let dp: KernelBackend;
  let input: Awaited<ReturnType<typeof inputOf>>;
  const inputOf = async () => {
    const state = hostState([policyOf(a, { ingress: [rule('tcp', ['10.0.0.0/8'], { ports: [22, 22], id: 'ssh' })] })]);
    return { state, ports: await discoverPorts(dp.runner, state) };
  };
  const sh = async (script: string) => {
    const r = await h1.exec('sh', ['-ec', script], { allowFail: true });
    assert.equal(r.code, 0, `${script}: ${r.stderr}`);
    return r.stdout;
  };
  const fresh = () => {
    const real = createRunner({ netns: h1.netns });
    const runner: Runner = { netns: h1.netns, run: (t, args, stdin) => real.run(t, args, t === 'unshare' ? edit(stdin ?? '') : stdin) };
    return createDataplane(backend, { runner });
  };

  before(async () => {
    lab = await createLab();
    h1 = await lab.addHost('h1');
    a = await lab.addVm({ host: h1, name: 'a', nics: [{ mac: '52:54:00:00:08:0a', ipv4: '198.51.100.80/24' }] });
    dp = fresh();
    input = await inputOf();
    await dp.apply(input);
  });
  after(async () => { await dp?.close?.(); await lab?.destroy(); });

  test('a load that fails in the scratch namespace: a warning, no drift, nothing rewritten, pass after pass', async () => {
    edit = (s) => s.replace(/^(nft -f -|iptables-restore|ip6tables-restore) <</gm, 'false <<');
    for (let i = 0; i < 3; i++) {
      const obs = await dp.observe(input);
      assert.deepEqual(obs.drift, []);
      assert.match((obs.warnings ?? []).join(' '), /rule bodies not checked/);
      assert.equal((await dp.apply(input)).changed, false, `pass ${i}: nothing written`);
    }
  });

  test('a learned form the tools no longer print (another nft / iptables under a running agent): one rewrite, then learned anew, not a rewrite every pass', async () => {
    await dp.close?.();
    dp = fresh();
    edit = (s) => s.replace(/dport 22 /g, 'dport 23 '); // what the learning saw is not what the kernel shows
    const first = await dp.observe(input);
    assert.ok(first.drift.some((d) => /not the rule Palisade wrote/.test(d.what)), JSON.stringify(first.drift));
    assert.equal((await dp.apply(input)).changed, true);
    edit = (s) => s;
    for (let i = 0; i < 2; i++) {
      assert.deepEqual((await dp.observe(input)).drift, [], `pass ${i}`);
      assert.equal((await dp.apply(input)).changed, false, `pass ${i}: nothing written`);
    }
  });

  test('a chain that comes back with other rules stays unjudged (a warning); a rule forged in another chain is still found', async () => {
    await dp.close?.();
    dp = fresh(); // learns everything anew
    const vmChain = backend === 'nftables' ? /^add rule inet palisade to-\S+ .*\n/gm : /^-A i-2-\d+-VM .*\n/gm;
    edit = (s) => s.replace(vmChain, '');
    const obs = await dp.observe(input);
    assert.deepEqual(obs.drift, []);
    assert.match((obs.warnings ?? []).join(' '), /not checked in \d+ chain\(s\)/);
    assert.equal((await dp.apply(input)).changed, false);
    // twin: a forged rule elsewhere (the bridge's FORWARD dispatch / the entry chain) is found and rewritten
    if (backend === 'iptables') {
      const line = (await sh('iptables-save -t filter')).split('\n').find((l) => /^-A BF-\S+ .*pal:deny/.test(l))!;
      assert.ok(line);
      const chain = line.split(' ')[1];
      const n = (await sh('iptables-save -t filter')).split('\n').filter((l) => l.startsWith(`-A ${chain} `)).indexOf(line) + 1;
      await sh(`iptables -t filter -R ${chain} ${n} ${line.replace(/^-A \S+ /, '').replace(/-j DROP$/, '-j ACCEPT')}`);
    } else {
      const listing = JSON.parse(await sh('nft -j -a list chain bridge palisade prerouting')) as { nftables: Record<string, any>[] };
      const r = listing.nftables.map((x) => x.rule).find((x) => x && x.comment?.startsWith('pal:'))!;
      assert.ok(r, 'a Palisade rule in bridge prerouting');
      await sh(`nft replace rule bridge palisade prerouting handle ${r.handle} ether type ip accept comment '"${r.comment}"'`);
    }
    const forged = await dp.observe(input);
    assert.ok(forged.drift.some((d) => d.kind === 'changed' && /not the rule Palisade wrote/.test(d.what)), JSON.stringify(forged.drift));
    assert.equal((await dp.apply(input)).changed, true, 'rewritten');
    assert.deepEqual((await dp.observe(input)).drift, []);
    assert.equal((await dp.apply(input)).changed, false);
  });
});
