// Enforcement matrix cases 5 (referenced groups across hosts), 9 (NOTRACK) and 10 (two-NIC VM).
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  createLab, tcpConnect, ping, listenTcp, framesDelivered,
  type Lab, type Vm, type Host, type Endpoint, type ProbeResult,
} from '../../src/lab/index.js';
import { HostFw, policyOf, BACKENDS, closeAll, kernelText } from './kit.js';
import { NftablesDataplane } from '../../src/dataplane/nftables/backend.js';
import { rule } from './fixtures.js';

for (const backend of BACKENDS) describe(backend, () => {
  const BLOCK = { timeoutMs: 800 };
  const PASS = { timeoutMs: 3000 };
  const O4 = '198.51.100.1';
  const O4b = '192.0.2.1';

  let lab: Lab;
  let h1: Host, h2: Host;
  let fw: HostFw;
  let db: Vm, web1: Vm, web2: Vm, other: Vm, n: Vm, o: Vm, m: Vm, t: Vm;
  const listeners: { close(): Promise<void> }[] = [];

  function spec(host: Host, name: string, x: number) {
    const hx = x.toString(16).padStart(2, '0');
    return { host, name, nics: [{ mac: `52:54:00:00:03:${hx}`, ipv4: `198.51.100.${x}/24`, ipv6: `2001:db8:ff::${hx}/64` }] };
  }
  type Row = [string, ProbeResult, boolean];
  function expectAll(results: Row[]) {
    const wrong = results.filter(([, res, want]) => res.ok !== want).map(([what, res, want]) => `${what}: expected ${want ? 'pass' : 'blocked'}, got ${res.reason}`);
    assert.deepEqual(wrong, []);
  }
  const probe = (what: string, p: Promise<ProbeResult>, want: boolean) => p.then((x): Row => [what, x, want]);

  before(async () => {
    lab = await createLab();
    h1 = await lab.addHost('h1');
    h2 = await lab.addHost('h2');
    db = await lab.addVm(spec(h1, 'db', 0x50));
    web2 = await lab.addVm(spec(h1, 'web2', 0x52));
    web1 = await lab.addVm(spec(h2, 'web1', 0x51));
    other = await lab.addVm(spec(h2, 'other', 0x53));
    n = await lab.addVm(spec(h1, 'n', 0x60));
    o = await lab.addVm(spec(h1, 'o', 0x61));
    m = await lab.addVm(spec(h1, 'm', 0x62));
    t = await lab.addVm({ host: h1, name: 't', nics: [
      { mac: '52:54:00:00:03:70', ipv4: '198.51.100.112/24', ipv6: '2001:db8:ff::70/64' },
      { bridge: 'cloudbr1', mac: '52:54:00:00:03:71', ipv4: '192.0.2.112/24', ipv6: '2001:db8:fe::71/64' },
    ] });
    for (const [v, ports] of [[db, [5432]], [n, [80]], [o, [80, 22]], [m, [80]], [t, [80, 81]]] as [Vm, number[]][]) {
      for (const p of ports) listeners.push(await listenTcp(v, p));
    }
    listeners.push(await listenTcp(lab.outside.netns, 80));

    fw = new HostFw(h1, backend);
    fw.sets = [
      { id: 'sgwebv4', family: 4, members: [web1.ipv4!, web2.ipv4!] },
      { id: 'sgwebv6', family: 6, members: [web1.ipv6!] },
    ];
    fw.set(policyOf(db, { ingress: [rule('tcp', [], { ports: [5432, 5432], sets: ['sgwebv4'] })] },
      { ingress: [rule('tcp', [], { ports: [5432, 5432], sets: ['sgwebv6'] })] }));
    fw.set(policyOf(web2));
    const all4 = [rule('all', ['0.0.0.0/0'])];
    // n: allow-all both ways (untracked); o: allow-all egress only (tracked, CloudStack #14099);
    // m: tracked, egress closed except one rule — replies to n must still find m's conntrack entries.
    const all6 = [rule('all', ['::/0'])];
    fw.set(policyOf(n, { ingress: all4, egress: all4, notrack: true }, { ingress: all6, egress: all6, notrack: true }));
    fw.set(policyOf(o, { ingress: [rule('tcp', ['0.0.0.0/0'], { ports: [22, 22] })], egress: all4 }));
    fw.set(policyOf(m, { ingress: [rule('tcp', [`${n.ipv4}/32`], { ports: [80, 80] })], egress: [rule('udp', ['192.0.2.99/32'], { ports: [1, 1] })] }));
    fw.set(policyOf(t, { ingress: [rule('tcp', ['0.0.0.0/0'], { ports: [80, 80] })] }));
    await fw.apply();
  });

  after(async () => {
    for (const l of listeners) await l.close().catch(() => {});
    await closeAll();
    await lab?.destroy();
  });

  test('5. group references: members on other and same host connect, non-members do not; membership changes only set elements', async () => {
    expectAll(await Promise.all([
      probe('web1 (member, other host)→db:5432', tcpConnect(web1, db.ipv4!, 5432, PASS), true),
      probe('web2 (member, same host)→db:5432', tcpConnect(web2, db.ipv4!, 5432, PASS), true),
      probe('other (non-member)→db:5432', tcpConnect(other, db.ipv4!, 5432, BLOCK), false),
      probe('web1 v6 (member)→db:5432', tcpConnect(web1, db.ipv6!, 5432, PASS), true),
      probe('other v6 (non-member)→db:5432', tcpConnect(other, db.ipv6!, 5432, BLOCK), false),
      probe('web1→db:5433 (other port)', tcpConnect(web1, db.ipv4!, 5433, BLOCK), false),
    ]));
    // other joins, web1 leaves: one ipset transaction, nothing else rewritten
    fw.sets = [{ id: 'sgwebv4', family: 4, members: [other.ipv4!, web2.ipv4!].sort() }, fw.sets[1]];
    const res = await fw.apply();
    if (fw.dp instanceof NftablesDataplane) {
      assert.deepEqual(res.steps.map((s) => s.tool), ['nft']);
      assert.deepEqual(fw.dp.lastScript.trim().split('\n').map((l) => l.split(' ').slice(0, 2).join(' ')), ['delete element', 'add element']);
    } else assert.deepEqual(res.steps.map((s) => s.tool), ['ipset restore']);
    expectAll(await Promise.all([
      probe('other (now a member)→db:5432', tcpConnect(other, db.ipv4!, 5432, PASS), true),
      probe('web1 (removed)→db:5432', tcpConnect(web1, db.ipv4!, 5432, BLOCK), false),
      probe('web2 (still a member)→db:5432', tcpConnect(web2, db.ipv4!, 5432, PASS), true),
    ]));
  });

  async function conntrackFor(ip: string): Promise<number> {
    const [s, d] = await Promise.all([
      h1.exec('conntrack', ['-L', '-s', ip], { allowFail: true }),
      h1.exec('conntrack', ['-L', '-d', ip], { allowFail: true }),
    ]);
    return (s.stdout + d.stdout).split('\n').filter((l) => l.trim()).length;
  }

  test('9. NOTRACK: allow-all both ways is untracked; one way stays tracked and its replies work (#14099)', async () => {
    await h1.exec('conntrack', ['-F'], { allowFail: true });
    expectAll(await Promise.all([
      probe('n→outside tcp/80', tcpConnect(n, O4, 80, PASS), true),
      probe('n→outside tcp6/80', tcpConnect(n, '2001:db8:ff::1', 80, PASS), true),
      probe('o→outside tcp6/80 (v6 tracked)', tcpConnect(o, '2001:db8:ff::1', 80, PASS), true),
      probe('outside→n tcp/80', tcpConnect(lab.outside.netns, n.ipv4!, 80, PASS), true),
      probe('o→outside tcp/80 (reply needs conntrack)', tcpConnect(o, O4, 80, PASS), true),
      probe('outside→o tcp/80 (ingress closed)', tcpConnect(lab.outside.netns, o.ipv4!, 80, BLOCK), false),
      probe('n→m tcp/80 (m tracked, egress closed: reply via state)', tcpConnect(n, m.ipv4!, 80, PASS), true),
      probe('o→m tcp/80 (not allowed by m)', tcpConnect(o, m.ipv4!, 80, BLOCK), false),
    ]));
    // n's flows with the outside are not in conntrack; o's are; n↔m is tracked (m needs it).
    const outsideOnly = async (ip: string) => {
      const r = await h1.exec('conntrack', ['-L', '-s', ip, '-d', O4], { allowFail: true });
      const r2 = await h1.exec('conntrack', ['-L', '-s', O4, '-d', ip], { allowFail: true });
      return (r.stdout + r2.stdout).split('\n').filter((l) => l.trim()).length;
    };
    assert.equal(await outsideOnly(n.ipv4!), 0, 'untracked VM has conntrack entries with the outside');
    const v6 = (await h1.exec('conntrack', ['-L', '-f', 'ipv6'], { allowFail: true })).stdout;
    assert.doesNotMatch(v6, new RegExp(`=${n.ipv6} `), 'untracked VM has IPv6 conntrack entries');
    assert.match(v6, new RegExp(`=${o.ipv6} `), 'IPv6 of a tracked VM is tracked');
    assert.ok((await outsideOnly(o.ipv4!)) > 0, 'one-way allow-all VM must stay tracked');
    assert.ok((await conntrackFor(m.ipv4!)) > 0, 'tracked VM m has its flow with n tracked');
  });

  test('10. two-NIC VM: each NIC enforced on its own bridge', async () => {
    const nic1: Endpoint = t.nic(1);
    expectAll(await Promise.all([
      probe('outside→t nic0 tcp/80', tcpConnect(lab.outside.netns, t.nic(0).ipv4!, 80, PASS), true),
      probe('outside→t nic0 tcp/81', tcpConnect(lab.outside.netns, t.nic(0).ipv4!, 81, BLOCK), false),
      probe('outside→t nic1 tcp/80', tcpConnect(lab.outside.netns, t.nic(1).ipv4!, 80, PASS), true),
      probe('outside→t nic1 tcp/81', tcpConnect(lab.outside.netns, t.nic(1).ipv4!, 81, BLOCK), false),
      probe('t nic1→outside (egress open)', ping(t, O4b, PASS), true),
    ]));
    const outB: Endpoint = { netns: lab.outside.netns, iface: lab.segment(1).gwIface, mac: lab.segment(1).gwMac };
    const cases = [
      { what: 'nic1 own address', frame: { kind: 'udp' as const, src: t.nic(1).ipv4!, dst: O4b, dstMac: outB.mac, dport: 9101 }, filter: 'udp dst port 9101', want: true },
      { what: 'nic1 spoofed address', frame: { kind: 'udp' as const, src: '192.0.2.200', dst: O4b, dstMac: outB.mac, dport: 9102 }, filter: 'udp dst port 9102', want: false },
      { what: "nic1 with nic0's MAC", frame: { kind: 'udp' as const, src: t.nic(1).ipv4!, dst: O4b, dstMac: outB.mac, srcMac: t.nic(0).mac, dport: 9103 }, filter: 'udp dst port 9103', want: false },
    ];
    const got = await framesDelivered({ from: nic1, cases: cases.map((c) => ({ frame: c.frame, to: outB, filter: c.filter })) });
    assert.deepEqual(cases.map((c, i) => `${c.what}: ${got[i].delivered}`), cases.map((c) => `${c.what}: ${c.want}`));
    // both bridges carry Palisade's framework
    const save = await kernelText(h1, backend);
    if (backend === 'iptables') {
      assert.match(save, /-A FORWARD -i cloudbr0 .*-j BF-cloudbr0/);
      assert.match(save, /-A FORWARD -i cloudbr1 .*-j BF-cloudbr1/);
    } else assert.match(save, /set bridges \{[^}]*"cloudbr0",\s+"cloudbr1"/);
  });

  test('10. two-NIC VM: anti-spoofing is per NIC (no sending from, or receiving for, the other NIC\'s addresses)', async () => {
    const out0: Endpoint = { netns: lab.outside.netns, iface: lab.segment(0).gwIface, mac: lab.segment(0).gwMac };
    const outB: Endpoint = { netns: lab.outside.netns, iface: lab.segment(1).gwIface, mac: lab.segment(1).gwMac };
    const [n0, n1] = [t.nic(0), t.nic(1)];
    const o6 = '2001:db8:ff::1';
    const udp = (src: string, dst: string, dstMac: string, dport: number) => ({ kind: 'udp' as const, src, dst, dstMac, sport: 40000, dport });
    const fromNic0 = [
      { what: 'nic0 own IPv4 out of nic0', frame: udp(n0.ipv4!, O4, out0.mac, 9201), want: true },
      { what: "nic1's IPv4 out of nic0", frame: udp(n1.ipv4!, O4, out0.mac, 9202), want: false },
      { what: 'nic0 own IPv6 out of nic0', frame: udp(n0.ipv6!, o6, out0.mac, 9203), want: true },
      { what: "nic1's IPv6 out of nic0", frame: udp(n1.ipv6!, o6, out0.mac, 9204), want: false },
      { what: 'nic0 own link-local out of nic0', frame: udp(n0.linkLocal, o6, out0.mac, 9205), want: true },
      { what: "nic1's link-local out of nic0", frame: udp(n1.linkLocal, o6, out0.mac, 9206), want: false },
    ];
    const fromNic1 = [
      { what: 'nic1 own IPv4 out of nic1', frame: udp(n1.ipv4!, O4b, outB.mac, 9211), want: true },
      { what: "nic0's IPv4 out of nic1", frame: udp(n0.ipv4!, O4b, outB.mac, 9212), want: false },
      { what: "nic0's IPv6 out of nic1", frame: udp(n0.ipv6!, '2001:db8:fe::1', outB.mac, 9213), want: false },
    ];
    // destination check per NIC: a SYN for nic1's address arriving at nic0 (ingress allows tcp/80 from anywhere)
    const syn = (dst: string, sport: number) => ({ kind: 'tcp' as const, src: O4, dst, dstMac: n0.mac, sport, dport: 80, flags: 'S' });
    const toNic0 = [
      { what: "to nic0's own address at nic0", frame: syn(n0.ipv4!, 41001), want: true },
      { what: "to nic1's address at nic0", frame: syn(n1.ipv4!, 41002), want: false },
    ];
    const filt = (f: { dport: number; sport: number }) => `udp dst port ${f.dport} or tcp src port ${f.sport}`;
    const [g0, g1, g2] = await Promise.all([
      framesDelivered({ from: n0, cases: fromNic0.map((c) => ({ frame: c.frame, to: out0, filter: filt(c.frame) })) }),
      framesDelivered({ from: n1, cases: fromNic1.map((c) => ({ frame: c.frame, to: outB, filter: filt(c.frame) })) }),
      framesDelivered({ from: out0, cases: toNic0.map((c) => ({ frame: c.frame, to: n0, filter: filt(c.frame) })) }),
    ]);
    const all = [...fromNic0, ...fromNic1, ...toNic0];
    const got = [...g0, ...g1, ...g2];
    assert.deepEqual(all.map((c, i) => `${c.what}: ${got[i].delivered}`), all.map((c) => `${c.what}: ${c.want}`));
  });
});
