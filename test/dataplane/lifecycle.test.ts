// Case 11 and the apply contract, for every backend: idempotent applies, drift observed and repaired,
// removal leaves nothing, foreign rules / tables / sets survive every apply and teardown, unknown taps
// fail closed, failures name the step. What differs between backends is only how the kernel is read
// and tampered with (the `Kernel` adapters below); every verdict is checked with real packets.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createLab, ping, arping, type Lab, type Vm, type Host } from '../../src/lab/index.js';
import { DataplaneError } from '../../src/dataplane/backend.js';
import { IptablesDataplane } from '../../src/dataplane/iptables/backend.js';
import { NftablesDataplane } from '../../src/dataplane/nftables/backend.js';
import { portChain, vmChains } from '../../src/dataplane/nftables/names.js';
import type { BackendName } from '../../src/dataplane/choose.js';
import { HostFw, policyOf, instanceOf, BACKENDS, closeAll, kernelText } from './kit.js';
import { rule } from './fixtures.js';

const O4 = '198.51.100.1';

/** What a lifecycle test needs to know about one backend's kernel representation. */
interface Kernel {
  /** Palisade's state and the foreign objects, as text. */
  text(): Promise<string>;
  /** Someone else's rules, chains, tables and sets on the host. */
  installForeign(): Promise<void>;
  assertForeignIntact(k: string): void;
  firstSteps: string[];
  /** Change Palisade's state behind its back; return the drift lines observe must report. */
  tamper(b: Vm): Promise<string[]>;
  /** Slip an ACCEPT into b's ingress; return the drift lines observe must report. */
  tamperInside(b: Vm): Promise<string[]>;
  /** Make the next write fail (an object of the wrong type under a name Palisade needs); undo it. */
  breakNext(c: Vm): Promise<void>;
  unbreak(c: Vm): Promise<void>;
  failedStep: RegExp;
  /** The unknown tap is dropped. */
  tapDropped(tap: string): RegExp;
  /** Nothing of any VM is left. */
  noVmLeft: RegExp;
  notrack: RegExp;
  /** Nothing of Palisade at all. */
  nothingLeft: RegExp;
}

function iptablesKernel(h: Host, sh: (s: string) => Promise<string>): Kernel {
  return {
    text: () => sh('iptables-save; ip6tables-save; ipset list -n; ebtables-save'),
    installForeign: async () => { await sh(`
iptables -N FOREIGN
iptables -A FOREIGN -s 203.0.113.9/32 -j DROP
iptables -A FORWARD -j FOREIGN
iptables -t raw -A PREROUTING -s 203.0.113.8/32 -j ACCEPT
ip6tables -N FOREIGN6
ip6tables -A FORWARD -j FOREIGN6
ipset create foreign-set hash:ip
ipset create i-9-9-VM hash:ip
ebtables -t nat -N FOREIGN-EB
ebtables -t nat -A PREROUTING -j FOREIGN-EB
ebtables -A FORWARD -i foreign0 -j ACCEPT
`); },
    assertForeignIntact(k) {
      for (const re of [/^:FOREIGN - /m, /^-A FOREIGN -s 203\.0\.113\.9\/32 -j DROP$/m, /^-A FORWARD -j FOREIGN$/m, /^-A PREROUTING -s 203\.0\.113\.8\/32 -j ACCEPT$/m,
        /^-A FORWARD -j FOREIGN6$/m, /^foreign-set$/m, /^i-9-9-VM$/m, /^:FOREIGN-EB ACCEPT$/m, /^-A PREROUTING -j FOREIGN-EB$/m, /^-A FORWARD -i foreign0 -j ACCEPT$/m]) {
        assert.match(k, re);
      }
    },
    firstSteps: ['ipset restore', 'ebtables-restore', 'iptables-restore', 'ip6tables-restore'],
    async tamper(b) {
      const bi = instanceOf(b);
      const def = bi.replace(/-VM$/, '-def');
      await sh(`
iptables -D ${def} 1
ipset del ${bi} ${b.ipv4}
ebtables -t nat -F ${bi}-in-ips
iptables -N i-9-9-VM-eg
iptables -A i-9-9-VM-eg -m comment --comment pal:stale -j RETURN
`);
      return [`missing iptables filter rule ${def} pal:n0.dhcpc`, `missing ipset ${bi} element ${b.ipv4}`, `changed ebtables nat chain ${bi}-in-ips`, 'unexpected iptables filter chain i-9-9-VM-eg'];
    },
    async tamperInside(b) {
      const bi = instanceOf(b);
      await sh(`iptables -I ${bi} 1 -j ACCEPT`);
      return [`unexpected iptables filter chain ${bi}: 1 rule(s) without a Palisade id`];
    },
    breakNext: async (c) => { await sh(`ipset create ${instanceOf(c)} hash:net family inet`); },
    unbreak: async (c) => { await sh(`ipset destroy ${instanceOf(c)}`); },
    failedStep: /^ipset restore$/,
    tapDropped: (tap) => new RegExp(`-i ${tap} -j DROP`),
    noVmLeft: /i-2-|palisade-|pal-/,
    notrack: /--notrack/,
    nothingLeft: /pal:|BF-|PALISADE|i-2-|palisade-|pal-/,
  };
}

function nftablesKernel(h: Host, sh: (s: string) => Promise<string>): Kernel {
  return {
    text: async () => `${await kernelText(h, 'nftables')}\n${await sh('nft list tables; iptables-save; ipset list -n')}`,
    installForeign: async () => { await sh(`
nft -f - <<'EOF'
table inet foreign {
  chain forw {
    type filter hook forward priority 10; policy accept;
    ip saddr 203.0.113.9 drop
  }
}
table bridge foreign {
  chain pre {
    type filter hook prerouting priority -100; policy accept;
    iifname "foreign0" accept
  }
}
EOF
iptables -N FOREIGN
iptables -A FOREIGN -s 203.0.113.9/32 -j DROP
iptables -A FORWARD -j FOREIGN
ipset create foreign-set hash:ip
`); },
    assertForeignIntact(k) {
      for (const re of [/^table inet foreign$/m, /^table bridge foreign$/m, /^-A FOREIGN -s 203\.0\.113\.9\/32 -j DROP$/m, /^-A FORWARD -j FOREIGN$/m, /^foreign-set$/m]) assert.match(k, re);
    },
    firstSteps: ['nft'],
    async tamper(b) {
      const tap = b.nics[0].tap;
      await sh(`
nft flush chain bridge palisade ${portChain(tap)}
nft delete element bridge palisade own4 '{ "${tap}" . ${b.ipv4} }'
nft delete element bridge palisade macs-cloudbr0 '{ ${b.mac} }'
nft add chain inet palisade stale
nft add rule inet palisade stale accept comment '"pal:stale"'
`);
      return [`missing nft bridge chain ${portChain(tap)} rule pal:mark`, `missing nft bridge set own4 element ${tap} . ${b.ipv4}`,
        `missing nft bridge set macs-cloudbr0 element ${b.mac}`, 'unexpected nft inet chain stale'];
    },
    async tamperInside(b) {
      const c = vmChains(instanceOf(b)).to;
      await sh(`nft insert rule inet palisade ${c} accept`);
      return [`unexpected nft inet chain ${c}: 1 rule(s) without a Palisade id`];
    },
    // a set of the wrong family under the name of the group set the next VM needs
    breakNext: async () => { await sh('nft add set inet palisade g-sgfailv4 "{ type ipv6_addr; }"'); },
    unbreak: async () => { await sh('nft delete set inet palisade g-sgfailv4'); },
    failedStep: /^nft$/,
    tapDropped: (tap) => new RegExp(`"${tap}" : goto unknown`),
    noVmLeft: /i-2-|g-sg/,
    notrack: /notrack/,
    nothingLeft: /table (bridge|inet) palisade/,
  };
}

for (const backend of BACKENDS) describe(backend, () => {
  let lab: Lab;
  let h1: Host;
  let a: Vm, b: Vm, u: Vm;
  let fw: HostFw;
  let k: Kernel;
  const sh = async (script: string) => (await h1.exec('sh', ['-ec', script])).stdout;
  const fresh = () => { const f = new HostFw(h1, backend as BackendName); for (const p of fw.policies.values()) f.set(p); f.sets = fw.sets; return f; };

  before(async () => {
    lab = await createLab();
    h1 = await lab.addHost('h1');
    a = await lab.addVm({ host: h1, name: 'a', nics: [{ mac: '52:54:00:00:04:0a', ipv4: '198.51.100.80/24', ipv6: '2001:db8:ff::80/64' }] });
    b = await lab.addVm({ host: h1, name: 'b', nics: [{ mac: '52:54:00:00:04:0b', ipv4: '198.51.100.81/24', ipv6: '2001:db8:ff::81/64' }] });
    u = await lab.addVm({ host: h1, name: 'u', nics: [{ mac: '52:54:00:00:04:0c', ipv4: '198.51.100.82/24' }] }); // never in the desired state
    k = backend === 'iptables' ? iptablesKernel(h1, sh) : nftablesKernel(h1, sh);
    await k.installForeign();
    fw = new HostFw(h1, backend);
  });

  after(async () => {
    await closeAll();
    await lab?.destroy();
  });

  test('apply twice writes nothing the second time; observe sees no drift', async () => {
    fw.set(policyOf(a, { ingress: [rule('icmp', ['0.0.0.0/0'], { icmp: [-1, -1] })] })).set(policyOf(b));
    const first = await fw.apply();
    assert.equal(first.changed, true);
    assert.deepEqual(first.steps.map((s) => s.tool), k.firstSteps);
    const second = await fw.apply();
    assert.equal(second.changed, false);
    assert.deepEqual(second.steps, []);
    // a fresh backend (agent restart) reads the kernel and also finds nothing to do
    const f = fresh();
    assert.equal((await f.dp.apply(await f.input())).changed, false);
    assert.deepEqual((await fw.dp.observe(await fw.input())).drift, []);
    k.assertForeignIntact(await k.text());
    const [toA, toB] = await Promise.all([ping(b, a.ipv4!, { timeoutMs: 3000 }), ping(a, b.ipv4!, { timeoutMs: 800 })]);
    assert.deepEqual([toA.ok, toB.ok], [true, false]);
  });

  if (backend === 'iptables') {
    test('a rule change shadows the old chain version at once; the old rules go later; verdicts follow the new rules', async () => {
      const dp = fw.dp as IptablesDataplane;
      const chain = instanceOf(a); // the ingress chain (i-2-N-VM)
      const rulesOf = async () => (await sh('iptables-save -t filter')).split('\n').filter((l) => l.startsWith(`-A ${chain} `));
      fw.set(policyOf(a, { ingress: [rule('icmp', ['0.0.0.0/0'], { icmp: [-1, -1] })] })).set(policyOf(b));
      await fw.apply();
      const before = await rulesOf();
      // swap: ICMP from b's address no longer allowed; everything from the outside's /32 allowed instead
      fw.set(policyOf(a, { ingress: [rule('all', [`${O4}/32`], { id: 'out-all' })] }));
      const r = await fw.apply();
      assert.deepEqual(r.steps.map((s) => s.tool), ['iptables-restore']);
      const shadowed = await rulesOf();
      assert.equal(shadowed.length, 2 + before.length, shadowed.join('\n'));
      assert.match(shadowed[0], /pal:out-all\.c0 #/);
      assert.deepEqual((await fw.dp.observe(await fw.input())).drift, []);
      const [fromB, fromOut] = await Promise.all([ping(b, a.ipv4!, { timeoutMs: 800 }), ping(lab.outside.netns, a.ipv4!, { timeoutMs: 3000 })]);
      assert.deepEqual([fromB.ok, fromOut.ok], [false, true]);
      await dp.collectGarbage();
      assert.equal((await rulesOf()).length, 2);
      assert.equal((await fw.apply()).changed, false);
      // a fresh backend reads the collected chain as up to date
      const f = fresh();
      assert.equal((await f.dp.apply(await f.input())).changed, false);
      // back to the first policy for the tests below
      fw.set(policyOf(a, { ingress: [rule('icmp', ['0.0.0.0/0'], { icmp: [-1, -1] })] }));
      await fw.apply();
      await dp.collectGarbage();
    });
  } else {
    test('a rule change rewrites only that VM\'s chain, in one transaction; its rules are counted per rule id', async () => {
      const dp = fw.dp as NftablesDataplane;
      const keep = rule('icmp', ['0.0.0.0/0'], { icmp: [-1, -1], id: 'keep-icmp' });
      fw.set(policyOf(a, { ingress: [keep] })).set(policyOf(b));
      await fw.apply();
      assert.equal((await ping(b, a.ipv4!, { timeoutMs: 3000 })).ok, true);
      const count = async (id: string) => (await dp.ruleCounters()).find((c) => c.instance === instanceOf(a) && c.ruleId === id && c.direction === 'ingress' && c.family === 4)?.packets ?? -1;
      const before = await count('keep-icmp');
      assert.ok(before > 0, `counter of keep-icmp: ${before}`);
      fw.set(policyOf(a, { ingress: [keep, rule('tcp', [`${O4}/32`], { ports: [22, 22], id: 'ssh-out' })] }));
      const r = await fw.apply();
      assert.deepEqual(r.steps.map((s) => s.tool), ['nft']);
      const to = vmChains(instanceOf(a)).to;
      const touched = [...new Set(dp.lastScript.trim().split('\n').map((l) => l.split(' ').slice(0, 5).join(' ')))];
      assert.deepEqual(touched.sort(), [`add rule inet palisade ${to}`, `flush chain inet palisade ${to}`].sort(), dp.lastScript);
      assert.ok((await count('keep-icmp')) >= 0, 'the rewritten rule is counted again');
      assert.deepEqual((await fw.dp.observe(await fw.input())).drift, []);
      const [fromB, fromOut] = await Promise.all([ping(b, a.ipv4!, { timeoutMs: 3000 }), ping(lab.outside.netns, a.ipv4!, { timeoutMs: 3000 })]);
      assert.deepEqual([fromB.ok, fromOut.ok], [true, true]);
      fw.set(policyOf(a, { ingress: [rule('icmp', ['0.0.0.0/0'], { icmp: [-1, -1] })] }));
      await fw.apply();
    });
  }

  test('unknown tap-like ports on the bridge get no traffic (fail closed)', async () => {
    const [fromU, toU, fromA] = await Promise.all([
      ping(u, O4, { timeoutMs: 800 }),
      ping(lab.outside.netns, u.ipv4!, { timeoutMs: 800 }),
      ping(a, O4, { timeoutMs: 3000 }),
    ]);
    assert.deepEqual([fromU.ok, toU.ok, fromA.ok], [false, false, true]);
    assert.match(await k.text(), k.tapDropped(u.nics[0].tap));
  });

  test('a new libvirt-named port Palisade does not know yet sends and receives nothing', async () => {
    // a VM namespace plugged after the last apply (its tap is neither a known NIC nor a listed unknown tap)
    const late = await lab.addVm({ host: h1, name: 'late', nics: [{ mac: '52:54:00:00:04:0e', ipv4: '198.51.100.84/24' }] });
    const [fromLate, toLate, arp, fromA] = await Promise.all([
      ping(late, O4, { timeoutMs: 800 }),
      ping(lab.outside.netns, late.ipv4!, { timeoutMs: 800 }),
      arping(late, O4, { timeoutMs: 800 }),
      ping(a, O4, { timeoutMs: 3000 }),
    ]);
    assert.deepEqual([fromLate.ok, toLate.ok, arp.ok, fromA.ok], [false, false, false, true]);
    const tap = late.nics[0].tap;
    await late.remove();
    // the tap goes with the namespace's cleanup (asynchronous in the kernel): later applies must not see it come and go
    for (let i = 0; i < 50 && (await h1.exec('ip', ['link', 'show', tap], { allowFail: true })).code === 0; i++) await new Promise((r) => setTimeout(r, 100));
  });

  test('drift is observed and repaired by the next apply', async () => {
    const expected = await k.tamper(b);
    const drift = (await fw.dp.observe(await fw.input())).drift.map((d) => `${d.kind} ${d.what}`);
    for (const e of expected) assert.ok(drift.includes(e), `${e}\n--- drift ---\n${drift.join('\n')}`);
    const res = await fw.apply();
    assert.equal(res.changed, true);
    assert.deepEqual((await fw.dp.observe(await fw.input())).drift, []);
    k.assertForeignIntact(await k.text());
    assert.equal((await ping(a, b.ipv4!, { timeoutMs: 800 })).ok, false);
  });

  test('tampering: a rule slipped into a Palisade chain is drift, and the next apply undoes it', async () => {
    // b is default-deny: an ACCEPT at the top of its ingress would open it.
    const expected = await k.tamperInside(b);
    assert.equal((await ping(a, b.ipv4!, { timeoutMs: 3000 })).ok, true, 'the tampering really opened b');
    const drift = (await fw.dp.observe(await fw.input())).drift.map((d) => `${d.kind} ${d.what}`);
    for (const e of expected) assert.ok(drift.includes(e), `${e}\n--- drift ---\n${drift.join('\n')}`);
    assert.equal((await fw.apply()).changed, true);
    assert.deepEqual((await fw.dp.observe(await fw.input())).drift, []);
    assert.equal((await ping(a, b.ipv4!, { timeoutMs: 800 })).ok, false);
    k.assertForeignIntact(await k.text());
  });

  if (backend === 'iptables') {
    test('tampering: rules above Palisade\'s jumps in built-in chains are drift; the next apply puts its jumps back on top', async () => {
      await sh(`
iptables -I FORWARD 1 -s 203.0.113.77/32 -j ACCEPT
ebtables -t nat -I PREROUTING 1 -i foreign1 -j ACCEPT
`);
      const drift = (await fw.dp.observe(await fw.input())).drift.map((d) => `${d.kind} ${d.what}`);
      assert.ok(drift.includes("changed iptables filter FORWARD: rules above Palisade's jumps"), drift.join('\n'));
      assert.ok(drift.includes("changed ebtables nat PREROUTING: rules above Palisade's jumps"), drift.join('\n'));
      assert.equal((await fw.apply()).changed, true);
      assert.deepEqual((await fw.dp.observe(await fw.input())).drift, []);
      const text = await k.text();
      // the foreign rules stay (below Palisade's jumps now)
      const fwd = text.split('\n').filter((l) => l.startsWith('-A FORWARD'));
      assert.match(fwd[0], /pal:fwd/);
      assert.ok(fwd.some((l) => l === '-A FORWARD -s 203.0.113.77/32 -j ACCEPT'));
      assert.match(text, /^-A PREROUTING -j PALISADE-PRE\n-A PREROUTING -i foreign1 -j ACCEPT$/m);
      await sh('iptables -D FORWARD -s 203.0.113.77/32 -j ACCEPT; ebtables -t nat -D PREROUTING -i foreign1 -j ACCEPT');
    });
  }

  test('a missing NIC port is reported per VM; other VMs are programmed', async () => {
    const ghost = { ...policyOf(a), vmId: 'ghost', instanceName: 'i-2-999-VM', nics: [{ ...policyOf(a).nics[0], nicId: 'ghost-nic', mac: '52:54:00:00:04:ff' }] };
    fw.set(ghost);
    const res = await fw.dp.apply(await fw.input());
    assert.equal(res.vms.ghost.ok, false);
    assert.match(res.vms.ghost.error!, /NIC port not found on host: ghost-nic/);
    assert.equal(res.vms[a.netns].ok, true);
    assert.doesNotMatch(await k.text(), /i-2-999/);
    fw.policies.delete('ghost');
  });

  test('a failing write is an error naming the step; nothing of it is applied', async () => {
    const c = await lab.addVm({ host: h1, name: 'c', nics: [{ mac: '52:54:00:00:04:0d', ipv4: '198.51.100.83/24' }] });
    const ci = instanceOf(c);
    await k.breakNext(c);
    fw.sets = [{ id: 'sgfailv4', family: 4, members: [] }];
    fw.set(policyOf(c, { ingress: [rule('tcp', [], { ports: [5, 5], sets: ['sgfailv4'] })] }));
    await assert.rejects(fw.apply(), (e: unknown) => e instanceof DataplaneError && k.failedStep.test(e.step) && new RegExp(`${e.step} failed`).test(e.message));
    assert.doesNotMatch(await k.text(), new RegExp(`${ci.replace(/-VM$/, '-def')}|to4-${ci}`));
    await k.unbreak(c);
    assert.equal((await fw.apply()).changed, true);
    assert.match(await k.text(), new RegExp(ci));
    assert.equal((await ping(c, O4, { timeoutMs: 3000 })).ok, true);
  });

  test('11. removing a VM removes its chains, sets and port rules; the last one leaves only the drop of its tap; foreign rules survive', async () => {
    const bi = instanceOf(b);
    fw.remove(b);
    assert.equal((await fw.apply()).changed, true);
    let text = await k.text();
    assert.doesNotMatch(text, new RegExp(bi.replace(/-VM$/, '')));
    // b's tap is still on the bridge: now an unknown port, it is dropped rather than left open
    assert.match(text, k.tapDropped(b.nics[0].tap));
    assert.equal((await ping(b, O4, { timeoutMs: 800 })).ok, false);
    assert.match(text, new RegExp(instanceOf(a)));
    k.assertForeignIntact(text);
    for (const v of [...fw.policies.values()]) fw.policies.delete(v.vmId);
    fw.sets = [];
    assert.equal((await fw.apply()).changed, true);
    text = await k.text();
    // no VM's chains or sets are left; the taps still on the bridge are unknown ports now, dropped
    assert.doesNotMatch(text, k.noVmLeft);
    for (const v of [a, b]) assert.match(text, k.tapDropped(v.nics[0].tap));
    assert.equal((await ping(a, O4, { timeoutMs: 800 })).ok, false);
    k.assertForeignIntact(text);
    assert.equal((await fw.apply()).changed, false);
  });

  test('teardown removes everything Palisade owns and nothing else', async () => {
    fw.set(policyOf(a, {}, {}));
    fw.set({ ...policyOf(b, { ingress: [rule('all', ['0.0.0.0/0'])], egress: [rule('all', ['0.0.0.0/0'])], notrack: true }) });
    fw.sets = [{ id: 'sg1v4', family: 4, members: ['198.51.100.9'] }];
    fw.set(policyOf(u, { ingress: [rule('tcp', [], { ports: [1, 1], sets: ['sg1v4'] })] }));
    await fw.apply();
    assert.match(await k.text(), k.notrack);
    await fw.dp.teardown();
    const text = await k.text();
    assert.doesNotMatch(text, k.nothingLeft);
    k.assertForeignIntact(text);
  });
});
