// Fail closed where no VM rule decides yet, and no path around the bridge filter: a tap on a host
// with no placed NIC (empty state, or a tap created after the apply), a new port marked by ebtables
// while the IP rules failed to land, DHCP-client packets, routed traffic through the host, traffic to
// the host's own addresses, IPv6 neighbour advertisements. Each blocked case has its allowed twin.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createLab, framesDelivered, tcpConnect, listenTcp, listenUdpEcho, dhcpDiscover, run, type Lab, type Host, type Vm, type Endpoint, type FrameSpec } from '../../src/lab/index.js';
import { IptablesDataplane } from '../../src/dataplane/iptables/backend.js';
import { createRunner, type Runner } from '../../src/dataplane/exec.js';
import { discoverPorts } from '../../src/dataplane/ports.js';
import { HostFw, policyOf, BACKENDS, closeAll, kernelText } from './kit.js';
import { NftablesDataplane } from '../../src/dataplane/nftables/backend.js';
import { hostState, rule } from './fixtures.js';

for (const backend of BACKENDS) describe(backend, () => {
  let lab: Lab;
  let h1: Host, h2: Host;
  let out: Endpoint;
  const O4 = '198.51.100.1';
  const HOST4 = '198.51.100.250';
  const open22 = { ingress: [rule('tcp', ['0.0.0.0/0'], { ports: [22, 22] })] };
  /** Egress only tcp/443 to a network nothing here uses: every other packet from the VM is refused. */
  const narrow = { egress: [rule('tcp', ['192.0.2.0/24'], { ports: [443, 443] })] };
  const narrow6 = { egress: [rule('tcp', ['2001:db8:fe::/64'], { ports: [443, 443] })] };

  const udp = (src: string, dst: string, dport: number, extra: Partial<FrameSpec> = {}): FrameSpec =>
    ({ kind: 'udp', src, dst, dstMac: lab.outside.mac, sport: 40000, dport, ...extra } as FrameSpec);
  const says = (ok: boolean) => (ok ? 'passes' : 'blocked');

  before(async () => {
    lab = await createLab();
    [h1, h2] = await Promise.all([lab.addHost('h1'), lab.addHost('h2')]);
    out = { netns: lab.outside.netns, iface: 'eth0', mac: lab.outside.mac };
  });

  after(async () => { await closeAll();
    await lab?.destroy(); });

  test('an empty desired state already fails closed: a VM tap is dropped both ways until its rules are written', async () => {
    const z = await lab.addVm({ host: h1, name: 'z', nics: [{ mac: '52:54:00:00:0b:0a', ipv4: '198.51.100.60/24' }] });
    const fw = new HostFw(h1, backend);
    await fw.apply();   // the agent's first apply on a fresh host: no VM here yet
    const l = await listenTcp(z, 22);
    try {
      const [own, spoofed] = await framesDelivered({ from: z, cases: [
        { frame: udp(z.ipv4!, O4, 9101), to: out, filter: 'udp dst port 9101' },
        { frame: udp('203.0.113.66', O4, 9102), to: out, filter: 'udp dst port 9102' },
      ], timeoutMs: 1000 });
      const inbound = await tcpConnect(lab.outside, z.ipv4!, 22, { timeoutMs: 1500 });
      assert.deepEqual([says(inbound.ok), says(own.delivered), says(spoofed.delivered)], ['blocked', 'blocked', 'blocked']);
      fw.set(policyOf(z, open22));
      await fw.apply();
      const [own2, spoofed2] = await framesDelivered({ from: z, cases: [
        { frame: udp(z.ipv4!, O4, 9103), to: out, filter: 'udp dst port 9103' },
        { frame: udp('203.0.113.66', O4, 9104), to: out, filter: 'udp dst port 9104' },
      ], timeoutMs: 1000 });
      const inbound2 = await tcpConnect(lab.outside, z.ipv4!, 22, { timeoutMs: 3000 });
      assert.deepEqual([says(inbound2.ok), says(own2.delivered), says(spoofed2.delivered)], ['passes', 'passes', 'blocked']);
    } finally { await l.close(); }
  });

  test('a VM known before its tap exists (libvirt order) is closed when the tap appears, open after the next apply', async () => {
    const y = await lab.addVm({ host: h2, name: 'y', nics: [{ mac: '52:54:00:00:0b:0b', ipv4: '198.51.100.61/24' }] });
    await y.unplug(0);
    const fw = new HostFw(h2, backend);
    fw.set(policyOf(y, open22));   // its rules would allow tcp/22, but they are not written yet
    const r = await fw.dp.apply(await fw.input());
    assert.match(r.vms[y.netns].error ?? '', /NIC port not found/);
    await y.plug(0);
    const l = await listenTcp(y, 22);
    try {
      assert.equal(says((await tcpConnect(lab.outside, y.ipv4!, 22, { timeoutMs: 1500 })).ok), 'blocked');
      await fw.apply();
      assert.equal(says((await tcpConnect(lab.outside, y.ipv4!, 22, { timeoutMs: 3000 })).ok), 'passes');
    } finally { await l.close(); }
  });

  test('a write that fails part-way (iptables: ebtables landed, iptables-restore failed; nftables: the transaction is refused): the new VM sends nothing; after a good apply only its own addresses', async () => {
    const fw = new HostFw(h1, backend);
    const c = await lab.addVm({ host: h1, name: 'c', nics: [{ mac: '52:54:00:00:0b:0c', ipv4: '198.51.100.62/24' }] });
    const z0 = await lab.addVm({ host: h1, name: 'z0', nics: [{ mac: '52:54:00:00:0b:0d', ipv4: '198.51.100.63/24' }] });
    fw.set(policyOf(z0));
    await fw.apply();   // the bridge is already Palisade's, with one VM
    const real = createRunner({ netns: h1.netns });
    fw.set(policyOf(c));   // default group: egress open, anti-spoofing on
    const state = hostState([...fw.policies.values()], [], 50);
    if (backend === 'iptables') {
      const failing: Runner = {
        netns: h1.netns,
        run: (tool, args, stdin) => (tool === 'iptables-restore' || tool === 'ip6tables-restore'
          ? Promise.resolve({ code: 1, stdout: '', stderr: `${tool}: simulated failure` })
          : real.run(tool, args, stdin)),
      };
      const broken = new IptablesDataplane({ runner: failing });
      await assert.rejects(broken.apply({ state, ports: await discoverPorts(real, state) }), /iptables-restore failed/);
      assert.match((await h1.exec('ebtables-save', [])).stdout, /-j i-2-\d+-VM-in/);   // ebtables did land
    } else {
      // reads work, the write's `nft` cannot run: the transaction never reaches the kernel
      const failing: Runner = { netns: `${h1.netns}-gone`, run: (tool, args, stdin) => real.run(tool, args, stdin) };
      const broken = new NftablesDataplane({ runner: failing });
      await assert.rejects(broken.apply({ state, ports: await discoverPorts(real, state) }), /nft/);
      await broken.close();
      assert.doesNotMatch(await kernelText(h1, backend), new RegExp(`"${c.nics[0].tap}" : goto vmin-`));
    }
    const probe = async (p: number) => framesDelivered({ from: c, cases: [
      { frame: udp(c.ipv4!, O4, p), to: out, filter: `udp dst port ${p}` },
      { frame: udp('203.0.113.77', O4, p + 1), to: out, filter: `udp dst port ${p + 1}` },
    ], timeoutMs: 1000 });
    const [own, spoofed] = await probe(9301);
    assert.deepEqual([says(own.delivered), says(spoofed.delivered)], ['blocked', 'blocked']);
    fw.dp.invalidate();
    await fw.apply();
    const [own2, spoofed2] = await probe(9303);
    assert.deepEqual([says(own2.delivered), says(spoofed2.delivered)], ['passes', 'blocked']);
  });

  test('DHCP client exemption: only 0.0.0.0 → broadcast before the anti-spoofing check; renewals from the own address', async () => {
    const e = await lab.addVm({ host: h2, name: 'e', nics: [{ mac: '52:54:00:00:0b:0e', ipv4: '198.51.100.64/24' }] });
    const fw = new HostFw(h2, backend);
    fw.set(policyOf(e, narrow, narrow6));
    await fw.apply();
    await lab.outside.startDhcp();
    const d = (src: string, tag: string, extra: Partial<FrameSpec> = {}) =>
      ({ frame: udp(src, O4, 67, { sport: 68, payload: tag, ...extra }), to: out, filter: `udp port 67 and src host ${src}` });
    const got = await framesDelivered({ from: e, cases: [
      d(e.ipv4!, 'renew'),
      d('203.0.113.66', 'spoofed'),
      d('198.51.100.41', 'neighbour'),
      d('0.0.0.0', 'unspecified-unicast'),
    ], timeoutMs: 1200 });
    assert.deepEqual(got.map((g) => says(g.delivered)), ['passes', 'blocked', 'blocked', 'blocked']);
    const discover = await dhcpDiscover(e.nics[0], { timeoutMs: 3000 });
    assert.equal(discover.ok, true, JSON.stringify(discover));
  });

  test('the host\'s own address on the bridge: VM egress and anti-spoofing apply (INPUT path)', async () => {
    const a = await lab.addVm({ host: h2, name: 'a', nics: [{ mac: '52:54:00:00:0b:1a', ipv4: '198.51.100.65/24' }] });
    const b = await lab.addVm({ host: h2, name: 'b', nics: [{ mac: '52:54:00:00:0b:1b', ipv4: '198.51.100.66/24' }] });
    const fw = new HostFw(h2, backend);
    fw.set(policyOf(a, narrow, narrow6)).set(policyOf(b));
    await fw.apply();
    await h2.exec('ip', ['addr', 'add', `${HOST4}/24`, 'dev', 'cloudbr0']);
    const lt = await listenTcp(h2, 8250);
    const lu = await listenUdpEcho(h2, 9555);
    try {
      const [fromA, fromB] = await Promise.all([tcpConnect(a, HOST4, 8250, { timeoutMs: 1500 }), tcpConnect(b, HOST4, 8250, { timeoutMs: 3000 })]);
      await framesDelivered({ from: b, cases: [
        { frame: udp('203.0.113.9', HOST4, 9555, { dstMac: await bridgeMac(h2) }), to: b, filter: 'udp dst port 9555' },
        { frame: udp(b.ipv4!, HOST4, 9555, { dstMac: await bridgeMac(h2), sport: 40001 }), to: b, filter: 'udp dst port 9555' },
      ], timeoutMs: 1000 });
      const peers = lu.peers().map((p) => p.split(' ')[0]);
      assert.deepEqual([says(fromA.ok), says(fromB.ok), says(peers.includes('203.0.113.9')), says(peers.includes(b.ipv4!))],
        ['blocked', 'passes', 'blocked', 'passes']);
    } finally {
      await lt.close(); await lu.close();
      await h2.exec('ip', ['addr', 'del', `${HOST4}/24`, 'dev', 'cloudbr0']);
    }
  });

  test('traffic the host routes into a VM bridge is dropped (no ingress decision possible); bridged traffic still decided', async () => {
    const r = await lab.addVm({ host: h2, name: 'r', nics: [{ mac: '52:54:00:00:0b:1c', ipv4: '198.51.100.67/24' }] });
    const fw = new HostFw(h2, backend);
    fw.set(policyOf(r, open22));
    await fw.apply();
    const X = `${lab.prefix}-x`;
    const H = h2.netns;
    await run('sh', ['-ec', `ip netns add ${X}
  ip -n ${H} addr add ${HOST4}/24 dev cloudbr0
  ip -n ${H} link add ${lab.prefix}-r type veth peer name eth0 netns ${X}
  ip -n ${H} addr add 10.99.0.1/24 dev ${lab.prefix}-r; ip -n ${H} link set ${lab.prefix}-r up
  ip -n ${X} addr add 10.99.0.2/24 dev eth0; ip -n ${X} link set eth0 up; ip -n ${X} link set lo up
  ip -n ${X} route add 198.51.100.0/24 via 10.99.0.1
  ip netns exec ${H} sysctl -qw net.ipv4.ip_forward=1
  ip -n ${r.netns} route add 10.99.0.0/24 via ${HOST4}`]);
    const l = await listenTcp(r, 22);
    try {
      const [bridged, routed] = await Promise.all([
        tcpConnect(lab.outside, r.ipv4!, 22, { timeoutMs: 3000 }),
        tcpConnect(X, r.ipv4!, 22, { timeoutMs: 1500 }),
      ]);
      assert.deepEqual([says(bridged.ok), says(routed.ok)], ['passes', 'blocked']);
    } finally {
      await l.close();
      await run('sh', ['-c', `ip netns del ${X}; ip netns exec ${H} sysctl -qw net.ipv4.ip_forward=0; ip -n ${H} addr del ${HOST4}/24 dev cloudbr0; ip -n ${H} link del ${lab.prefix}-r`], { allowFail: true });
    }
  });

  test('IPv6 neighbour advertisements only for the sender\'s own addresses', async () => {
    const a = await lab.addVm({ host: h1, name: 'na', nics: [{ mac: '52:54:00:00:0b:2a', ipv4: '198.51.100.68/24', ipv6: '2001:db8:ff::68/64' }] });
    const b = await lab.addVm({ host: h1, name: 'nb', nics: [{ mac: '52:54:00:00:0b:2b', ipv4: '198.51.100.69/24', ipv6: '2001:db8:ff::69/64' }] });
    const fw = new HostFw(h1, backend);
    const all6 = { ingress: [rule('all', ['::/0'])] };
    fw.set(policyOf(a, {}, all6)).set(policyOf(b, {}, all6));
    await fw.apply();
    const na = (tgt: string, ext = '') =>
      `Ether(dst='${b.mac}')/IPv6(src='${a.nics[0].linkLocal}',dst='${b.nics[0].linkLocal}',hlim=255)${ext}/ICMPv6ND_NA(tgt='${tgt}',R=0,S=0,O=1)/ICMPv6NDOptDstLLAddr(lladdr='${a.mac}')`;
    const cases = [
      { what: 'own global', tgt: a.ipv6! },
      { what: 'own link-local', tgt: a.nics[0].linkLocal },
      { what: 'the gateway', tgt: '2001:db8:ff::1' },
      { what: 'the neighbour', tgt: b.ipv6! },
    ];
    const hbh = `/__import__('scapy.all', fromlist=['x']).IPv6ExtHdrHopByHop()`;
    const got = await framesDelivered({ from: a, cases: [
      ...cases.map((c) => ({ frame: { kind: 'raw', expr: na(c.tgt) } as FrameSpec, to: b, filter: `icmp6 and ip6[40] == 136 and ip6[60:4] == 0x${lastWord(c.tgt)}` })),
      // behind a hop-by-hop header the target sits elsewhere: matched by the header's next-header byte
      { frame: { kind: 'raw', expr: na(a.ipv6!, hbh) } as FrameSpec, to: b, filter: 'ip6 and ip6[6] == 0' },
    ], timeoutMs: 1200 });
    assert.deepEqual([...cases.map((c) => c.what), 'own, behind a hop-by-hop header'].map((w, i) => `${w}: ${says(got[i].delivered)}`),
      ['own global: passes', 'own link-local: passes', 'the gateway: blocked', 'the neighbour: blocked', 'own, behind a hop-by-hop header: blocked']);
    const neigh = (await b.exec('ip', ['-6', 'neigh', 'show', '2001:db8:ff::1'])).stdout;
    assert.doesNotMatch(neigh, new RegExp(a.mac));
  });

  test('a port added to a managed bridge since the last discovery, whatever its name, reaches no known port (ARP and non-IP too)', async () => {
    const p = await lab.addVm({ host: h1, name: 'p', nics: [{ mac: '52:54:00:00:0b:3a', ipv4: '198.51.100.70/24' }] });
    const fw = new HostFw(h1, backend);
    fw.set(policyOf(p, { ingress: [rule('all', ['0.0.0.0/0'])] }));
    await fw.apply();
    // not vnetN, with libvirt's fe: MAC: a tap from some other tool, plugged after the apply
    const Y = `${lab.prefix}-y`;
    await run('sh', ['-ec', `ip netns add ${Y}
  ip -n ${h1.netns} link add tapx7 address fe:54:00:00:0b:99 type veth peer name eth0 address 52:54:00:00:0b:99 netns ${Y}
  ip -n ${h1.netns} link set tapx7 master cloudbr0 up
  ip -n ${Y} link set eth0 up; ip -n ${Y} addr add 198.51.100.77/24 dev eth0`]);
    try {
      const y: Endpoint = { netns: Y, iface: 'eth0', mac: '52:54:00:00:0b:99' };
      const ipHex = (ip: string) => '0x' + ip.split('.').map((x) => Number(x).toString(16).padStart(2, '0')).join('');
      const [poison, nonIp] = await framesDelivered({ from: y, cases: [
        { frame: { kind: 'arp', op: 'reply', psrc: O4, pdst: p.ipv4!, hwdst: p.mac, dstMac: p.mac }, to: p, filter: `arp and arp[14:4] = ${ipHex(O4)}` },
        { frame: { kind: 'raw', expr: `Ether(dst='${lab.outside.mac}',type=0x88b5)/Raw(b'palisade-l2')` } as FrameSpec, to: out, filter: 'ether proto 0x88b5' },
      ], timeoutMs: 1000 });
      const [own] = await framesDelivered({ from: p, cases: [
        { frame: { kind: 'arp', op: 'reply', psrc: p.ipv4!, pdst: O4, hwdst: lab.outside.mac, dstMac: lab.outside.mac }, to: out, filter: `arp and arp[14:4] = ${ipHex(p.ipv4!)}` },
      ], timeoutMs: 1000 });
      assert.deepEqual([says(poison.delivered), says(nonIp.delivered), says(own.delivered)], ['blocked', 'blocked', 'passes']);
    } finally {
      await run('ip', ['netns', 'del', Y], { allowFail: true });
    }
  });

  /** The last 32-bit word of an IPv6 address, as 8 hex digits. */
  function lastWord(addr: string): string {
    const [head, tail] = addr.split('::');
    const parse = (x: string | undefined) => (x ? x.split(':').map((g) => parseInt(g, 16)) : []);
    const h = parse(head);
    const t = parse(tail);
    const g = tail === undefined ? h : [...h, ...new Array(8 - h.length - t.length).fill(0), ...t];
    return (((g[6] << 16) | g[7]) >>> 0).toString(16).padStart(8, '0');
  }

  async function bridgeMac(h: Host): Promise<string> {
    return (JSON.parse((await h.exec('ip', ['-j', 'link', 'show', 'cloudbr0'])).stdout) as { address: string }[])[0].address;
  }
});
